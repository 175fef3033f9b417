//! SEV-SNP reports from real Milan machines.

use plinth_attestation::CheckStatus;
use plinth_attestation::policy::{HexBytes, MinTcb, Policy, SnpPolicy};
use plinth_attestation::snp::{self, Container, SnpEvidence, SnpReport};
use plinth_attestation::x509chain;

use crate::common::{AT_2026, read, vectors};

fn evidence(dir: &std::path::Path, report: &str, vcek: &str) -> SnpEvidence {
    SnpEvidence {
        report: SnpReport::parse(&read(dir, report)).unwrap(),
        vcek_der: read(dir, vcek),
        chain: None,
    }
}

/// The go-sev-guest report was launched with the DEBUG policy bit, so its
/// appraisal needs `allow_debug`; the default policy must reject it.
fn lenient() -> SnpPolicy {
    SnpPolicy {
        allow_debug: true,
        ..SnpPolicy::default()
    }
}

const PAIRS: &[(&str, &str)] = &[
    (
        "virtee-sev/tests/certs_data/report_milan.hex",
        "virtee-sev/tests/certs_data/vcek_milan.der",
    ),
    (
        "go-sev-guest/verify/testdata/attestation.bin",
        "go-sev-guest/verify/testdata/vcek.testcer",
    ),
];

#[test]
fn positive_vectors_verify() {
    let Some(dir) = vectors() else { return };
    for (report, vcek) in PAIRS {
        let ev = evidence(&dir, report, vcek);
        let appraisal = snp::verify(&ev, &lenient(), AT_2026).unwrap();
        assert!(appraisal.verified(), "{report}:\n{}", appraisal.to_human());
        assert!(
            appraisal
                .checks
                .iter()
                .any(|c| c.name == "snp.chip_id" && c.status == CheckStatus::Pass)
        );
    }
}

#[test]
fn explicit_chain_file_verifies_and_must_end_at_pinned_ark() {
    let Some(dir) = vectors() else { return };
    let mut ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    ev.chain = Some(
        x509chain::parse_bundle(
            &read(&dir, "virtee-sev/tests/certs_data/cert_chain_milan"),
            "chain",
        )
        .unwrap(),
    );
    assert!(
        snp::verify(&ev, &SnpPolicy::default(), AT_2026)
            .unwrap()
            .verified()
    );
    // A Genoa chain does not sign a Milan VCEK.
    ev.chain = Some(
        x509chain::parse_bundle(
            &read(&dir, "go-sev-guest/verify/trust/ask_ark_genoa.pem"),
            "chain",
        )
        .unwrap(),
    );
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    assert!(!appraisal.verified());
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let Some(dir) = vectors() else { return };
    for (report, vcek) in PAIRS {
        let ev = evidence(&dir, report, vcek);
        let raw = ev.report.raw.clone();
        let vcek_der = ev.vcek_der.clone();
        for idx in 0..raw.len() {
            let mut flipped = raw.clone();
            flipped[idx] ^= 0x01;
            let accepted = match SnpReport::parse(&flipped) {
                Err(_) => false,
                Ok(report) => {
                    let ev = SnpEvidence {
                        report,
                        vcek_der: vcek_der.clone(),
                        chain: None,
                    };
                    snp::verify(&ev, &lenient(), AT_2026).unwrap().verified()
                }
            };
            assert!(!accepted, "{report}: flipping byte {idx:#x} was accepted");
        }
    }
}

#[test]
fn expired_and_wrong_vcek_are_rejected() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    // 2040: after the VCEK's notAfter.
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), 2_208_988_800).unwrap();
    assert!(!appraisal.verified());
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.cert_chain"]);
    // The other machine's VCEK.
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[1].1);
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert!(fail.contains(&"snp.signature".to_owned()), "{fail:?}");
    assert!(fail.contains(&"snp.chip_id".to_owned()), "{fail:?}");
}

#[test]
fn policy_checks() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[1].0, PAIRS[1].1);
    let tcb_ok = MinTcb {
        bootloader: 2,
        tee: 0,
        snp: 5,
        microcode: 68,
        fmc: 0,
    };
    let policy = SnpPolicy {
        min_tcb: Some(tcb_ok),
        measurements: vec![HexBytes(ev.report.measurement.to_vec())],
        report_data: Some(HexBytes(ev.report.report_data.to_vec())),
        ..lenient()
    };
    assert!(snp::verify(&ev, &policy, AT_2026).unwrap().verified());
    let debug_refused = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = debug_refused.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.policy.debug"]);
    let strict = SnpPolicy {
        min_tcb: Some(MinTcb { snp: 6, ..tcb_ok }),
        measurements: vec![HexBytes(vec![0; 48])],
        report_data: Some(HexBytes(vec![1])),
        ..lenient()
    };
    let appraisal = snp::verify(&ev, &strict, AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(
        fail,
        vec![
            "snp.policy.min_tcb",
            "snp.policy.measurement",
            "snp.policy.report_data"
        ]
    );
}

#[test]
fn turin_vcek_chains_to_pinned_turin_roots_and_carries_fmc() {
    let Some(dir) = vectors() else { return };
    let vcek = read(&dir, "virtee-sev/tests/certs_data/vcek_turin.der");
    let (ask, ark) = snp::pinned_chain(snp::Product::Turin, false).unwrap();
    let summary = x509chain::verify_chain(&[vcek.clone(), ask], &[ark], AT_2026).unwrap();
    assert_eq!(summary.subjects, vec!["SEV-VCEK", "SEV-Turin", "ARK-Turin"]);
    // The Milan roots do not sign it.
    let (milan_ask, milan_ark) = snp::pinned_chain(snp::Product::Milan, false).unwrap();
    assert!(x509chain::verify_chain(&[vcek.clone(), milan_ask], &[milan_ark], AT_2026).is_err());
    // Turin VCEKs carry the FMC SPL and an 8-byte hwID.
    let cert = x509chain::parse_cert(&vcek, "vcek", 0).unwrap();
    let fmc = x509chain::extension_value(&cert, "1.3.6.1.4.1.3704.1.3.9")
        .and_then(x509chain::der_integer_u64);
    assert!(fmc.is_some());
    let hwid = x509chain::extension_value(&cert, "1.3.6.1.4.1.3704.1.4").unwrap();
    assert_eq!(x509chain::der_octet_string(hwid).unwrap_or(hwid).len(), 8);
}

#[test]
fn remembered_chain_signatures_do_not_mask_a_changed_certificate() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    assert!(snp::verify(&ev, &lenient(), AT_2026).unwrap().verified());
    // Same report, VCEK with one byte of its signature changed: the chain
    // check must run again and fail, although the good VCEK was seen before.
    let mut vcek = ev.vcek_der.clone();
    let last = vcek.len() - 5;
    vcek[last] ^= 0x01;
    let tampered = SnpEvidence {
        vcek_der: vcek,
        ..ev.clone()
    };
    let appraisal = snp::verify(&tampered, &lenient(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.cert_chain"]);
}

/// No real version-3 report is in the vectors: a v2 report relabelled as v3
/// with CPUID bytes checks the v3 parsing and product cross-check (its
/// signature then fails, as it must).
#[test]
fn version3_cpuid_is_parsed_and_cross_checked() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    let mut raw = ev.report.raw.clone();
    raw[0] = 3;
    raw[0x188] = 0x19; // family: Zen 3/4
    raw[0x189] = 0x01; // model: Milan
    raw[0x18A] = 0x01; // stepping
    let report = SnpReport::parse(&raw).unwrap();
    assert_eq!(report.cpuid, Some((0x19, 0x01, 0x01)));
    let appraisal = snp::verify(
        &SnpEvidence {
            report,
            ..ev.clone()
        },
        &lenient(),
        AT_2026,
    )
    .unwrap();
    let product = appraisal
        .checks
        .iter()
        .find(|c| c.name == "snp.product")
        .unwrap();
    assert_eq!(product.status, CheckStatus::Pass, "{}", product.detail);
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.signature"]);
    // A Turin CPUID under a Milan VCEK is a product mismatch.
    raw[0x188] = 0x1A;
    raw[0x189] = 0x02;
    let report = SnpReport::parse(&raw).unwrap();
    let appraisal = snp::verify(&SnpEvidence { report, ..ev }, &lenient(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert!(fail.contains(&"snp.product".to_owned()), "{fail:?}");
}

fn signing_key(appraisal: &plinth_attestation::Appraisal) -> plinth_attestation::Check {
    appraisal
        .checks
        .iter()
        .find(|c| c.name == "snp.signing_key")
        .cloned()
        .unwrap()
}

/// No real VLEK-signed report or VLEK certificate is in the vectors, and a
/// VLEK cannot be crafted under the pinned AMD roots. So this takes a real
/// report relabelled as VLEK-signed (SIGNING_KEY = 1) and a crafted
/// certificate issued by `SEV-VLEK-Milan`: it checks that `snp::verify` and
/// the binary judge `snp.signing_key` by the policy defaults (VLEK allowed
/// with no policy, a policy without `[snp]`, an empty `[snp]`; refused with
/// `allow_vlek = false`). The signature and chain checks fail, as they must
/// for a crafted certificate; a real VLEK chain is not exercised.
#[test]
fn vlek_is_allowed_unless_the_policy_forbids_it() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    let mut raw = ev.report.raw.clone();
    raw[0x48] = (raw[0x48] & !0x1c) | (1 << 2);
    let report = SnpReport::parse(&raw).unwrap();
    assert_eq!(report.signing_key, snp::SigningKey::Vlek);
    let key = crate::certgen::Key::new();
    let vlek = crate::certgen::cert(
        &crate::certgen::Spec::leaf("SEV-VLEK", "SEV-VLEK-Milan"),
        &key,
        &key,
    );
    let vlek_ev = SnpEvidence {
        report,
        vcek_der: vlek.clone(),
        chain: None,
    };
    for (label, policy) in [
        ("built-in", Policy::default()),
        ("no [snp]", Policy::from_toml("[tpm]\n").unwrap()),
        ("empty [snp]", Policy::from_toml("[snp]\n").unwrap()),
    ] {
        let appraisal = snp::verify(&vlek_ev, &policy.snp, AT_2026).unwrap();
        let check = signing_key(&appraisal);
        assert_eq!(check.status, CheckStatus::Pass, "{label}: {}", check.detail);
        assert!(check.detail.contains("SEV-VLEK-Milan"), "{}", check.detail);
        let chip = appraisal
            .checks
            .iter()
            .find(|c| c.name == "snp.chip_id")
            .unwrap();
        assert_eq!(chip.status, CheckStatus::Skip, "VLEKs carry no hwID");
    }
    let refusing = Policy::from_toml("[snp]\nallow_vlek = false\n").unwrap();
    let check = signing_key(&snp::verify(&vlek_ev, &refusing.snp, AT_2026).unwrap());
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(
        check.detail.contains("policy forbids VLEK"),
        "{}",
        check.detail
    );

    // Through the binary: no --policy, a policy without [snp], an empty
    // [snp], and allow_vlek = false.
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("vlek-report.bin");
    std::fs::write(&report_path, &raw).unwrap();
    let vlek_path = work.path().join("vlek.der");
    std::fs::write(&vlek_path, &vlek).unwrap();
    for (label, policy_text, expect) in [
        ("no policy", None, "[pass] snp.signing_key"),
        ("no [snp]", Some("[gpu]\n"), "[pass] snp.signing_key"),
        ("empty [snp]", Some("[snp]\n"), "[pass] snp.signing_key"),
        (
            "allow_vlek = false",
            Some("[snp]\nallow_vlek = false\n"),
            "[FAIL] snp.signing_key",
        ),
    ] {
        let mut args = vec![
            "snp".to_owned(),
            "--report".to_owned(),
            report_path.display().to_string(),
            "--vcek".to_owned(),
            vlek_path.display().to_string(),
            "--at".to_owned(),
            "2026-01-01T00:00:00Z".to_owned(),
        ];
        if let Some(text) = policy_text {
            let policy_path = work.path().join("policy.toml");
            std::fs::write(&policy_path, text).unwrap();
            args.push("--policy".to_owned());
            args.push(policy_path.display().to_string());
        }
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
            .args(&args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{label}: crafted chain fails: {out}"
        );
        assert!(out.contains(expect), "{label}: {out}");
    }
}

const VCEK_GUID: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const ASK_GUID: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const ARK_GUID: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";

/// A GHCB certificate table: entries, the all-zero terminator, the
/// certificates, then `pad` zero bytes (the hypervisor hands out pages).
fn cert_table(certs: &[(&str, &[u8])], pad: usize) -> Vec<u8> {
    let header = 24 * (certs.len() + 1);
    let mut table = Vec::new();
    let mut body = Vec::new();
    for (guid, der) in certs {
        table.extend(snp::guid_bytes(guid).unwrap());
        table.extend(((header + body.len()) as u32).to_le_bytes());
        table.extend((der.len() as u32).to_le_bytes());
        body.extend_from_slice(der);
    }
    table.extend([0u8; 24]);
    table.extend(body);
    table.extend(std::iter::repeat_n(0u8, pad));
    table
}

/// The hypervisor's extended report (`SNP_GET_EXT_REPORT`, go-sev-guest's
/// `attest -extended`): the real report followed by a certificate table with
/// the real VCEK, ASK and ARK. It verifies without --vcek (the table's VCEK
/// and chain are used) and the container is noted; a table with stray
/// bytes, or a bare report followed by anything else, is refused.
#[test]
fn extended_report_with_certificate_table_verifies() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    let chain = x509chain::parse_bundle(
        &read(&dir, "virtee-sev/tests/certs_data/cert_chain_milan"),
        "chain",
    )
    .unwrap();
    let entries: [(&str, &[u8]); 3] = [
        (VCEK_GUID, &ev.vcek_der),
        (ASK_GUID, &chain[0]),
        (ARK_GUID, &chain[1]),
    ];
    // Zero-padded up to whole 4 KiB pages, as the hypervisor returns it.
    let unpadded = cert_table(&entries, 0).len();
    let table = cert_table(&entries, unpadded.next_multiple_of(4096) - unpadded);
    assert_eq!(table.len() % 4096, 0);
    let mut extended = ev.report.raw.clone();
    extended.extend(&table);
    let report = SnpReport::parse(&extended).unwrap();
    assert_eq!(report.raw, ev.report.raw);
    let Container::Extended { certs } = &report.container else {
        panic!("not read as an extended report: {:?}", report.container);
    };
    let kinds: Vec<&str> = certs.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!["vcek", "ask", "ark"]);
    assert_eq!(report.table_vek().unwrap().der, ev.vcek_der);

    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("extended.bin");
    std::fs::write(&path, &extended).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
        .args([
            "snp",
            "--report",
            path.to_str().unwrap(),
            "--at",
            "2026-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("[pass] snp.container: note: extended report"),
        "{out}"
    );
    assert!(
        out.contains("chain file; ARK matches the pinned AMD root"),
        "{out}"
    );

    // A non-zero byte outside every certificate.
    let mut stray = extended.clone();
    *stray.last_mut().unwrap() = 1;
    let err = SnpReport::parse(&stray).unwrap_err();
    assert!(
        err.to_string().contains("belong to no certificate"),
        "{err}"
    );
    // An entry running past the table.
    let mut bad = ev.report.raw.clone();
    let mut short = cert_table(&[(VCEK_GUID, &ev.vcek_der)], 0);
    short.truncate(short.len() - 10);
    bad.extend(short);
    assert!(SnpReport::parse(&bad).is_err());
    // A bare report followed by padding or one stray byte: no producer
    // writes that.
    for tail in [&[0u8][..], &[1u8][..], &[0u8; 64][..]] {
        let mut padded = ev.report.raw.clone();
        padded.extend_from_slice(tail);
        assert!(SnpReport::parse(&padded).is_err(), "{tail:?} accepted");
    }
}

/// The MSG_REPORT_RSP the `SNP_GET_REPORT` ioctl fills (status, report
/// size, 24 reserved bytes, the report, zeros to the 4000-byte buffer):
/// unwrapped and verified; a failed status, a wrong size or non-zero
/// padding is refused.
#[test]
fn guest_ioctl_response_is_unwrapped() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    let response = |status: u32, size: u32, tail: &[u8]| {
        let mut out = status.to_le_bytes().to_vec();
        out.extend(size.to_le_bytes());
        out.extend([0u8; 24]);
        out.extend(&ev.report.raw);
        out.extend_from_slice(tail);
        out
    };
    let padding = vec![0u8; 4000 - 0x20 - 0x4A0];
    for tail in [&padding[..], &[][..]] {
        let bytes = response(0, 0x4A0, tail);
        let report = SnpReport::parse(&bytes).unwrap();
        assert_eq!(
            report.container,
            Container::GuestResponse {
                padding: tail.len()
            }
        );
        let appraisal = snp::verify(
            &SnpEvidence {
                report,
                ..ev.clone()
            },
            &lenient(),
            AT_2026,
        )
        .unwrap();
        assert!(appraisal.verified(), "{}", appraisal.to_human());
    }
    let err = SnpReport::parse(&response(0x16, 0x4A0, &padding)).unwrap_err();
    assert!(err.to_string().contains("status is 0x16"), "{err}");
    assert!(SnpReport::parse(&response(0, 0x4A1, &padding)).is_err());
    let mut dirty = padding.clone();
    dirty[100] = 1;
    let err = SnpReport::parse(&response(0, 0x4A0, &dirty)).unwrap_err();
    assert!(err.to_string().contains("not zero padding"), "{err}");
}
