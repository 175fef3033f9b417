//! Unit tests of the bundle model: representation, binding layout, signing,
//! and the parser's errors.

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::model::*;

pub(super) fn key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap()
}

fn claims(key: &Ed25519KeyPair) -> NodeClaims {
    let mut node_public_key = [0u8; 32];
    node_public_key.copy_from_slice(key.public_key().as_ref());
    NodeClaims {
        node_public_key: Hex(node_public_key),
        hostname: "gpu-host-1".to_owned(),
        boot_id: "3f1c0b1e-0000-4000-8000-000000000001".to_owned(),
        agent: AgentClaims {
            version: "0.1.0".to_owned(),
            binary_sha256: Hex([1; 32]),
        },
        config_sha256: Hex([2; 32]),
        plugins: vec![PluginClaim {
            kind: "pricing".to_owned(),
            name: "flat".to_owned(),
            version: "1.0.0".to_owned(),
            sha256: Hex([3; 32]),
        }],
        gpus: vec![GpuClaim {
            index: 0,
            uuid: "GPU-0".to_owned(),
            model: "NVIDIA H100".to_owned(),
            driver_version: "550.144.03".to_owned(),
            vbios_version: "96.00.74.00.1C".to_owned(),
            cc_mode: CcMode::On,
        }],
    }
}

fn evidence() -> Evidence {
    let mut pcrs = PcrBanks::new();
    pcrs.entry("sha256".to_owned())
        .or_default()
        .insert(10, HexVec(vec![0xaa; 32]));
    Evidence {
        tpm: Piece::Present(TpmEvidence {
            ak_public: Base64Bytes(vec![0, 1, 2]),
            ak_handle: 0x8101_0002,
            quote: Base64Bytes(vec![0xff, 0x54]),
            signature: Base64Bytes(vec![0, 0x14]),
            pcrs,
            event_log: Some(Base64Bytes(vec![9; 10])),
            ek_certificate: None,
            ek_chain: Vec::new(),
            ek_public: None,
        }),
        snp: Piece::absent("no /dev/sev-guest: not an SEV-SNP guest"),
        gpus: vec![Piece::absent("CC mode off")],
        capacity: None,
    }
}

pub(super) fn unsigned(key: &Ed25519KeyPair) -> UnsignedBundle {
    UnsignedBundle::new(
        &[0x42; 32],
        time::OffsetDateTime::UNIX_EPOCH,
        claims(key),
        evidence(),
    )
    .unwrap()
}

fn signed() -> EvidenceBundle {
    let key = key();
    let unsigned = UnsignedBundle::new(
        &[0x42; 32],
        time::macros::datetime!(2026-08-01 12:00:00 UTC),
        claims(&key),
        evidence(),
    )
    .unwrap();
    EvidenceBundle::sign(unsigned, &key).unwrap()
}

fn to_value(bundle: &EvidenceBundle) -> Value {
    serde_json::to_value(bundle).unwrap()
}

fn parse_value(value: &Value) -> Result<EvidenceBundle, BundleError> {
    EvidenceBundle::parse(&serde_json::to_vec(value).unwrap())
}

#[test]
fn pieces_are_status_tagged_objects() {
    let value = to_value(&signed());
    assert_eq!(
        value["evidence"]["snp"],
        json!({"status": "absent", "reason": "no /dev/sev-guest: not an SEV-SNP guest"})
    );
    assert_eq!(value["evidence"]["tpm"]["status"], "present");
    assert_eq!(value["evidence"]["tpm"]["quote"], "/1Q=");
    assert_eq!(value["evidence"]["tpm"]["ak_handle"], 0x8101_0002u32);
    assert_eq!(
        value["evidence"]["tpm"]["pcrs"]["sha256"]["10"],
        "aa".repeat(32)
    );
    assert!(
        value["evidence"]["tpm"].get("ek_certificate").is_none(),
        "None is omitted"
    );
    assert!(value["evidence"].get("capacity").is_none());
    assert_eq!(value["signature"]["algorithm"], "ed25519");
    assert_eq!(value["format"], FORMAT);
    assert_eq!(value["collected_at"], "2026-08-01T12:00:00Z");
}

#[test]
fn a_signed_bundle_round_trips_and_verifies() {
    let bundle = signed();
    let text = bundle.to_json_pretty().unwrap();
    let parsed = EvidenceBundle::parse(&text).unwrap();
    assert_eq!(parsed, bundle);
    parsed.verify_node_signature().unwrap();
    assert_eq!(parsed.expected_binding().unwrap(), parsed.binding.0);
    // Canonical bytes do not depend on the layout the file was written in.
    let compact = serde_json::to_vec(&bundle).unwrap();
    assert_eq!(
        EvidenceBundle::parse(&compact)
            .unwrap()
            .signing_bytes()
            .unwrap(),
        parsed.signing_bytes().unwrap()
    );
    let tpm = parsed.evidence.tpm.present().unwrap();
    assert_eq!(
        tpm.pcr_values().unwrap()[&crate::tpm::HashAlg::Sha256][&10],
        vec![0xaa; 32]
    );
}

/// The documented byte layout, computed by hand.
#[test]
fn binding_layout_is_the_documented_one() {
    let key = key();
    let claims = claims(&key);
    let nonce = [0x42u8; 20];
    let mut input = b"plinth-evidence/1 binding\n".to_vec();
    input.extend([0x00, 20]);
    input.extend(nonce);
    input.extend(crate::canonical::to_canonical_json(&claims).unwrap());
    let expected = ring::digest::digest(&ring::digest::SHA256, &input);
    assert_eq!(binding_digest(&nonce, &claims).unwrap(), expected.as_ref());
    // Any change to the claims changes the binding.
    let mut other = claims.clone();
    other.plugins[0].sha256 = Hex([4; 32]);
    assert_ne!(
        binding_digest(&nonce, &other).unwrap(),
        binding_digest(&nonce, &claims).unwrap()
    );
    let report_data = snp_report_data(&[5; 32]);
    assert_eq!(&report_data[..32], &[5; 32]);
    assert_eq!(&report_data[32..], &[0; 32]);
}

#[test]
fn signing_bytes_exclude_the_signature_and_match_the_unsigned_form() {
    let key = key();
    let unsigned = unsigned(&key);
    let unsigned_bytes = unsigned.signing_bytes().unwrap();
    let bundle = EvidenceBundle::sign(unsigned, &key).unwrap();
    assert_eq!(bundle.signing_bytes().unwrap(), unsigned_bytes);
    assert!(unsigned_bytes.starts_with(SIGNING_DOMAIN));
    assert!(!String::from_utf8_lossy(&unsigned_bytes).contains("\"signature\":{"));
}

#[test]
fn edits_after_signing_break_the_signature() {
    let bundle = signed();
    let mut claims_edit = bundle.clone();
    claims_edit.claims.hostname = "other".to_owned();
    let mut evidence_edit = bundle.clone();
    evidence_edit.evidence.gpus[0] = Piece::absent("different reason");
    let mut signature_edit = bundle.clone();
    signature_edit.signature.value.0[0] ^= 1;
    for edited in [claims_edit, evidence_edit, signature_edit] {
        assert!(matches!(
            edited.verify_node_signature(),
            Err(BundleError::BadSignature { .. })
        ));
    }
}

#[test]
fn sign_refuses_a_foreign_key_and_a_stale_binding() {
    let key = key();
    let other = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).unwrap();
    let unsigned = unsigned(&key);
    assert!(matches!(
        EvidenceBundle::sign(unsigned.clone(), &other),
        Err(BundleError::KeyMismatch { .. })
    ));
    let mut stale = unsigned;
    stale.claims.boot_id = "changed after the binding".to_owned();
    assert!(matches!(
        EvidenceBundle::sign(stale, &key),
        Err(BundleError::BindingMismatch { .. })
    ));
}

/// An edit of a bundle's JSON.
type Edit = Box<dyn FnOnce(&mut Value)>;

fn parse_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut value = to_value(&signed());
    edit(&mut value);
    parse_value(&value).unwrap_err().to_string()
}

#[test]
fn parse_errors_name_the_member() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["format"] = json!("plinth-evidence/2")),
            "`format`",
        ),
        (Box::new(|v| v["nonce"] = json!("abcd")), "`nonce`"),
        (
            Box::new(|v| v["nonce"] = json!("AB".repeat(32))),
            "lowercase",
        ),
        (
            Box::new(|v| v["collected_at"] = json!("yesterday")),
            "`collected_at`",
        ),
        (Box::new(|v| v["binding"] = json!("00")), "`binding`"),
        (
            Box::new(|v| v["claims"]["agent"]["binary_sha256"] = json!(1)),
            "claims.agent.binary_sha256",
        ),
        (
            Box::new(|v| v["claims"]["extra"] = json!(1)),
            "unknown field `extra`",
        ),
        (
            Box::new(|v| v["evidence"]["tpm"]["quote"] = json!("not base64!")),
            "evidence.tpm`: quote: not standard padded base64",
        ),
        (
            Box::new(|v| v["evidence"]["tpm"]["status"] = json!("maybe")),
            "evidence.tpm",
        ),
        (
            Box::new(|v| v["evidence"]["snp"]["extra"] = json!("x")),
            "unknown member `extra`",
        ),
        (
            Box::new(|v| v["evidence"]["gpus"] = json!([])),
            "`evidence.gpus`",
        ),
        (
            Box::new(|v| v["signature"]["algorithm"] = json!("rsa")),
            "signature.algorithm",
        ),
    ];
    for (edit, needle) in cases {
        let message = parse_error(edit);
        assert!(
            message.contains(needle),
            "{message:?} should contain {needle:?}"
        );
    }
}

/// Some edits parse (the shape is fine) but are refused later, where their
/// meaning is known: PCR digest sizes by `pcr_values`, floats by the
/// canonical form.
#[test]
fn shape_passes_but_meaning_is_refused() {
    let mut value = to_value(&signed());
    value["evidence"]["tpm"]["pcrs"]["sha256"]["10"] = json!("aa");
    let bundle = parse_value(&value).unwrap();
    let err = bundle
        .evidence
        .tpm
        .present()
        .unwrap()
        .pcr_values()
        .unwrap_err();
    assert!(
        err.to_string().contains("evidence.tpm.pcrs.sha256.10"),
        "{err}"
    );

    let mut value = to_value(&signed());
    value["evidence"]["capacity"] = json!({"tflops": 1.5});
    let bundle = parse_value(&value).unwrap();
    assert!(matches!(
        bundle.verify_node_signature(),
        Err(BundleError::Canonical(_))
    ));
}

#[test]
fn size_limit_and_trailing_data() {
    let big = vec![b' '; MAX_BUNDLE_BYTES + 1];
    assert!(matches!(
        EvidenceBundle::parse(&big),
        Err(BundleError::TooLarge { .. })
    ));
    let mut text = serde_json::to_vec(&signed()).unwrap();
    text.extend(b" {}");
    assert!(EvidenceBundle::parse(&text).is_err());
}
