//! The TPM collector (feature `collect-tpm`) against a real swtpm manufactured with EK
//! certificates: EK templates match the certificates, the AK is created once and
//! persisted, quotes carry the binding digest and verify with the pure-Rust verifier,
//! ActivateCredential answers a credential made by tpm2-tools, and no transient object
//! or session is left behind (swtpm has no resource manager and three object slots).

use std::path::PathBuf;

use plinth_attestation::collect::tpm::{self, TpmSession, TpmSettings};
use plinth_attestation::collect::{EkAlgorithm, PcrSpec};
use plinth_attestation::policy::TpmPolicy;
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::public::{self, TpmPublic};
use plinth_attestation::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};
use plinth_attestation::x509chain;
use plinth_tests::swtpm::{self, Swtpm};

fn settings(swtpm: &Swtpm, ek_algorithm: EkAlgorithm) -> TpmSettings {
    TpmSettings {
        tcti: swtpm.tcti(),
        ak_handle: 0x8101_0002,
        ek_algorithm,
        pcrs: "sha256:0-9,14+sha1:0,7".parse().unwrap(),
        event_log: PathBuf::from("/nonexistent/binary_bios_measurements"),
    }
}

fn verify_quote(ak_public: &[u8], quoted: &tpm::TpmQuote, nonce: &[u8]) -> bool {
    let evidence = QuoteEvidence {
        ak: public::load_ak(ak_public, "ak").unwrap(),
        signature: TpmSignature::parse(&quoted.signature).unwrap(),
        attest: Attest::parse(&quoted.attest).unwrap(),
        pcrs: Some(quoted.pcrs.clone()),
    };
    let appraisal = quote::verify(&evidence, Some(nonce), &TpmPolicy::default());
    if !appraisal.verified() {
        eprintln!("{appraisal:?}");
    }
    appraisal.verified()
}

fn no_leftovers(session: &mut TpmSession, after: &str) {
    let loaded = session.loaded_handles().unwrap();
    assert_eq!(
        loaded.transient_objects, 0,
        "transient object left after {after}"
    );
    assert_eq!(loaded.sessions, 0, "session left after {after}");
}

#[test]
fn ek_templates_match_the_manufacturers_certificates_and_quotes_verify() {
    if !swtpm::available("TPM collector") {
        return;
    }
    let swtpm = Swtpm::start().unwrap();
    // swtpm_setup certifies an RSA 2048 EK (0x01c00002) and an ECC P-384 EK (0x01c00016).
    for (algorithm, certified) in [
        (EkAlgorithm::Rsa2048, true),
        (EkAlgorithm::EccP384, true),
        (EkAlgorithm::EccP256, false),
    ] {
        let mut settings = settings(&swtpm, algorithm);
        settings.ak_handle = match algorithm {
            EkAlgorithm::Rsa2048 => 0x8101_0002,
            EkAlgorithm::EccP384 => 0x8101_0003,
            EkAlgorithm::EccP256 => 0x8101_0004,
        };
        let mut session = TpmSession::open(&settings).unwrap();
        let ek = session.endorsement_key().unwrap();
        no_leftovers(&mut session, "creating the EK");
        let certificate = session.ek_certificate().unwrap();
        no_leftovers(&mut session, "reading the EK certificate");
        assert_eq!(certificate.is_some(), certified, "{algorithm}");
        if let Some(certificate) = certificate {
            // The template is the profile's: the TPM derives the certified key from it.
            let parsed = x509chain::parse_cert(&certificate, "ek cert", 0).unwrap();
            let certified_key = x509chain::raw_public_key(parsed.public_key(), "ek").unwrap();
            let ek_key = TpmPublic::parse(&ek.public).unwrap().key;
            assert_eq!(
                ek_key, certified_key,
                "{algorithm}: EK differs from its certificate"
            );
        }

        let first = session.attestation_key().unwrap();
        assert!(first.created, "{algorithm}");
        no_leftovers(&mut session, "creating the AK");
        let again = session.attestation_key().unwrap();
        assert!(
            !again.created,
            "{algorithm}: the persisted AK was not found"
        );
        assert_eq!(again.public, first.public);
        let ak = TpmPublic::parse(&first.public).unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([first.public[0], first.public[1]])),
            first.public.len() - 2,
            "the AK public is a TPM2B_PUBLIC"
        );
        let expected_hash = if algorithm == EkAlgorithm::EccP384 {
            HashAlg::Sha384
        } else {
            HashAlg::Sha256
        };
        assert_eq!(ak.scheme_hash, Some(expected_hash), "{algorithm}");

        let binding = [0x5a_u8; 32];
        let quoted = session.quote(&binding).unwrap();
        no_leftovers(&mut session, "quoting");
        assert_eq!(quoted.attempts, 1);
        assert_eq!(quoted.pcrs[&HashAlg::Sha256].len(), 11);
        assert_eq!(quoted.pcrs[&HashAlg::Sha1].len(), 2);
        let attest = Attest::parse(&quoted.attest).unwrap();
        assert_eq!(attest.extra_data, binding);
        assert!(
            verify_quote(&first.public, &quoted, &binding),
            "{algorithm}"
        );
        assert!(
            !verify_quote(&first.public, &quoted, &[0x5b; 32]),
            "{algorithm}"
        );
    }
}

#[test]
fn a_quote_covers_the_pcr_values_it_reports() {
    if !swtpm::available("TPM collector PCRs") {
        return;
    }
    let swtpm = Swtpm::start().unwrap();
    let settings = settings(&swtpm, EkAlgorithm::Rsa2048);
    let before = tpm::collect(&settings, &[1; 32]).unwrap();
    swtpm.extend_sha256(7, &"cd".repeat(32)).unwrap();
    let after = tpm::collect(&settings, &[1; 32]).unwrap();
    let pcr7 =
        |collection: &tpm::TpmCollection| collection.quote.pcrs[&HashAlg::Sha256][&7].clone();
    assert_ne!(pcr7(&before), pcr7(&after));
    let expected = HashAlg::Sha256
        .extend(&pcr7(&before), &hex::decode("cd".repeat(32)).unwrap())
        .unwrap();
    assert_eq!(pcr7(&after), expected);
    assert!(verify_quote(&after.ak.public, &after.quote, &[1; 32]));
    // The old PCR values do not match the new quote's digest.
    let mut stale = after.quote.clone();
    stale.pcrs = before.quote.pcrs.clone();
    assert!(!verify_quote(&after.ak.public, &stale, &[1; 32]));
    // No event log at the configured path: the piece says why, naming the path.
    let reason = after.event_log.reason().unwrap();
    assert!(
        reason.contains("/nonexistent/binary_bios_measurements"),
        "{reason}"
    );
}

#[test]
fn many_collections_leave_no_transient_objects_behind() {
    if !swtpm::available("TPM collector flushing") {
        return;
    }
    let swtpm = Swtpm::start().unwrap();
    let settings = settings(&swtpm, EkAlgorithm::Rsa2048);
    // One context, many operations: swtpm has 3 object slots, so a single EK or AK
    // left loaded per round would fail the fourth round with TPM_RC_OBJECT_MEMORY.
    let mut session = TpmSession::open(&settings).unwrap();
    for round in 0..8 {
        session.endorsement_key().unwrap();
        session.attestation_key().unwrap();
        session.ek_certificate().unwrap();
        session.quote(&[round; 32]).unwrap();
        no_leftovers(&mut session, &format!("round {round}"));
    }
    drop(session);
    // And many whole collections, each its own context.
    for round in 0..25u8 {
        let collection = tpm::collect(&settings, &[round; 32]).unwrap();
        assert!(collection.ek_certificate.is_some());
    }
    let mut session = TpmSession::open(&settings).unwrap();
    no_leftovers(&mut session, "25 collections");
}

/// The enrollment credential as tpm2-tools' `tpm2_makecredential` writes it: a header
/// (magic 0xBADCC0DE, version 1), TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET; returned as
/// the two buffers TPM2_ActivateCredential takes.
fn make_credential(
    swtpm: &Swtpm,
    dir: &std::path::Path,
    ek: &[u8],
    name: &[u8],
    secret: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("ek.pub"), ek).unwrap();
    std::fs::write(dir.join("secret"), secret).unwrap();
    swtpm
        .tpm2(
            dir,
            &[
                "tpm2_makecredential",
                "-T",
                "none",
                "-u",
                "ek.pub",
                "-s",
                "secret",
                "-n",
                &hex::encode(name),
                "-o",
                "cred.out",
            ],
        )
        .unwrap();
    let out = std::fs::read(dir.join("cred.out")).unwrap();
    assert_eq!(out[..4], [0xba, 0xdc, 0xc0, 0xde]);
    let id_len = usize::from(u16::from_be_bytes([out[8], out[9]]));
    // The buffers, without their TPM2B sizes.
    let id_object = out[10..10 + id_len].to_vec();
    let secret_blob = out[12 + id_len..].to_vec();
    (id_object, secret_blob)
}

#[test]
fn activate_credential_answers_only_for_its_own_ak() {
    if !swtpm::available("ActivateCredential") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    for algorithm in [EkAlgorithm::Rsa2048, EkAlgorithm::EccP384] {
        let mut settings = settings(&swtpm, algorithm);
        settings.ak_handle = if algorithm == EkAlgorithm::Rsa2048 {
            0x8101_0010
        } else {
            0x8101_0011
        };
        let mut session = TpmSession::open(&settings).unwrap();
        let ek = session.endorsement_key().unwrap();
        let ak = session.attestation_key().unwrap();
        let secret = b"the verifier's 32-byte secret!!!";
        let (id_object, encrypted) =
            make_credential(&swtpm, work.path(), &ek.public, &ak.name, secret);
        let answer = session.activate_credential(&id_object, &encrypted).unwrap();
        assert_eq!(answer, secret, "{algorithm}");
        no_leftovers(&mut session, "ActivateCredential");

        // A credential bound to another key's name is refused by the TPM, and the error
        // names the operation and decodes the response code.
        let mut other_name = ak.name.clone();
        let last = other_name.len() - 1;
        other_name[last] ^= 1;
        let (id_object, encrypted) =
            make_credential(&swtpm, work.path(), &ek.public, &other_name, secret);
        let err = session
            .activate_credential(&id_object, &encrypted)
            .unwrap_err();
        let text = plinth_toolbox::error_chain(&err);
        assert!(text.contains("TPM2_ActivateCredential"), "{text}");
        assert!(text.contains("TPM: "), "{text}");
        assert!(text.contains("response code 0x"), "{text}");
        no_leftovers(&mut session, "a refused ActivateCredential");
        // Garbage is refused before the TPM sees it.
        let err = session
            .activate_credential(&[0u8; 1000], &encrypted)
            .unwrap_err();
        assert!(err.to_string().contains("id_object"), "{err}");
    }
}

#[test]
fn an_unreachable_tpm_is_an_error_naming_the_tcti_and_the_layer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let settings = TpmSettings {
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        pcrs: PcrSpec::default(),
        ..TpmSettings::default()
    };
    let err = tpm::collect(&settings, &[0; 32]).unwrap_err();
    let text = plinth_toolbox::error_chain(&err);
    assert!(text.contains(&format!("port={port}")), "{text}");
    assert!(
        text.contains("TCTI: ") || text.contains("ESAPI: "),
        "{text}"
    );
}

#[test]
fn an_object_that_is_not_an_ak_is_refused_at_the_ak_handle() {
    if !swtpm::available("AK handle check") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    // swtpm_setup persisted the RSA EK (a decryption key) at 0x81010001.
    let mut settings = settings(&swtpm, EkAlgorithm::Rsa2048);
    settings.ak_handle = 0x8101_0001;
    let err = TpmSession::open(&settings)
        .unwrap()
        .attestation_key()
        .unwrap_err();
    assert!(err.to_string().contains("0x81010001"), "{err}");
    assert!(err.to_string().contains("not an attestation key"), "{err}");
    drop(work);
}
