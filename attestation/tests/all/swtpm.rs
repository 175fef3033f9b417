//! Quotes produced by tpm2-tools against a real swtpm, verified by the
//! library and by the `plinth-verify` binary. Skipped (with a reason) when
//! swtpm or tpm2-tools are not installed.

use std::path::Path;
use std::process::Command;

use plinth_attestation::policy::TpmPolicy;
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::pcrs;
use plinth_attestation::tpm::public;
use plinth_attestation::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};
use plinth_tests::swtpm::{self, Swtpm};

fn tpm2(swtpm: &Swtpm, dir: &Path, args: &[&str]) {
    swtpm.tpm2(dir, args).unwrap();
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap(), text)
}

fn verify_lib(dir: &Path, ak: &str, nonce: &[u8]) -> bool {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let attest = Attest::parse(&read("msg")).unwrap();
    let pcr_values = pcrs::parse_pcr_file(&read("pcrs"), &attest.pcr_select).unwrap();
    let evidence = QuoteEvidence {
        ak: public::load_ak(&read(ak), ak).unwrap(),
        signature: TpmSignature::parse(&read("sig")).unwrap(),
        attest,
        pcrs: Some(pcr_values),
    };
    let appraisal = quote::verify(&evidence, Some(nonce), &TpmPolicy::default());
    appraisal.verified()
}

#[test]
fn swtpm_quotes_verify_for_rsa_and_ecc_aks_and_both_banks() {
    if !swtpm::available("swtpm quotes") {
        return;
    }
    let swtpm = Swtpm::start_blank().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // Make PCR 7 non-trivial in both banks.
    tpm2(
        &swtpm,
        dir,
        &[
            "tpm2_pcrextend",
            &format!("7:sha1={},sha256={}", "ab".repeat(20), "cd".repeat(32)),
        ],
    );
    let nonce = "00112233445566778899aabbccddeeff";
    let cases: &[(&str, &str, &str, &str)] = &[
        // (ek/ak key type, signature scheme, hash, pcr selection)
        ("rsa", "rsassa", "sha256", "sha256:0,1,7+sha1:0,7"),
        ("rsa", "rsassa", "sha1", "sha1:0,1,2,3,4,5,6,7"),
        ("rsa", "rsapss", "sha256", "sha256:0,7"),
        ("ecc", "ecdsa", "sha256", "sha256:0,7+sha1:7"),
        ("ecc", "ecdsa", "sha384", "sha1:0,7"),
    ];
    for (key, scheme, hash, selection) in cases {
        let label = format!("{key}/{scheme}/{hash}/{selection}");
        for f in [
            "ek.ctx", "ak.ctx", "ak.pub", "ak.pem", "ak.name", "msg", "sig", "pcrs",
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        tpm2(&swtpm, dir, &["tpm2_createek", "-c", "ek.ctx", "-G", key]);
        tpm2(
            &swtpm,
            dir,
            &[
                "tpm2_createak",
                "-C",
                "ek.ctx",
                "-c",
                "ak.ctx",
                "-G",
                key,
                "-g",
                hash,
                "-s",
                scheme,
                "-u",
                "ak.pub",
                "-n",
                "ak.name",
            ],
        );
        tpm2(
            &swtpm,
            dir,
            &[
                "tpm2_readpublic",
                "-c",
                "ak.ctx",
                "-f",
                "pem",
                "-o",
                "ak.pem",
            ],
        );
        tpm2(
            &swtpm,
            dir,
            &[
                "tpm2_quote",
                "-c",
                "ak.ctx",
                "-l",
                selection,
                "-q",
                nonce,
                "-g",
                hash,
                "--scheme",
                scheme,
                "-m",
                "msg",
                "-s",
                "sig",
                "-o",
                "pcrs",
            ],
        );
        let nonce_bytes = hex::decode(nonce).unwrap();
        assert!(
            verify_lib(dir, "ak.pub", &nonce_bytes),
            "{label}: TPM2B_PUBLIC AK"
        );
        assert!(verify_lib(dir, "ak.pem", &nonce_bytes), "{label}: PEM AK");
        assert!(
            !verify_lib(dir, "ak.pub", b"other nonce"),
            "{label}: wrong nonce accepted"
        );
        let (code, text) = cli(
            dir,
            &[
                "tpm-quote",
                "--ak",
                "ak.pub",
                "--quote",
                "msg",
                "--sig",
                "sig",
                "--pcrs",
                "pcrs",
                "--nonce",
                nonce,
            ],
        );
        assert_eq!(code, 0, "{label}: {text}");
        let (code, text) = cli(
            dir,
            &[
                "tpm-quote",
                "--ak",
                "ak.pem",
                "--quote",
                "msg",
                "--sig",
                "sig",
                "--pcrs",
                "pcrs",
                "--nonce",
                "ff",
            ],
        );
        assert_eq!(code, 1, "{label}: {text}");
        assert!(text.contains("[FAIL] tpm.nonce"), "{label}: {text}");
        // The PCR digest covers the quoted banks.
        let attest = Attest::parse(&std::fs::read(dir.join("msg")).unwrap()).unwrap();
        let values = pcrs::parse_pcr_file(
            &std::fs::read(dir.join("pcrs")).unwrap(),
            &attest.pcr_select,
        )
        .unwrap();
        let n_values: usize = values.values().map(|bank| bank.len()).sum();
        let n_selected: usize = attest.pcr_select.iter().map(|s| s.pcrs.len()).sum();
        assert_eq!(n_values, n_selected, "{label}");
        if selection.contains("sha1") {
            assert!(values.contains_key(&HashAlg::Sha1), "{label}");
        }
    }
    // The `values` PCR format (-F values) is read too.
    tpm2(
        &swtpm,
        dir,
        &[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,7",
            "-q",
            nonce,
            "-g",
            "sha384",
            "-m",
            "msg",
            "-s",
            "sig",
            "-o",
            "pcrs",
            "-F",
            "values",
        ],
    );
    assert_eq!(std::fs::metadata(dir.join("pcrs")).unwrap().len(), 64);
    let (code, text) = cli(
        dir,
        &[
            "tpm-quote",
            "--ak",
            "ak.pub",
            "--quote",
            "msg",
            "--sig",
            "sig",
            "--pcrs",
            "pcrs",
            "--nonce",
            nonce,
        ],
    );
    assert_eq!(code, 0, "values format: {text}");
}

/// swtpm_setup manufactures a TPM whose EK certificate is signed by a local
/// CA (swtpm_localca: root -> intermediate -> EK); the verifier must accept
/// that chain with the CA bundle, and reject it without the intermediate or
/// with another CA.
#[test]
fn swtpm_ek_certificate_chain() {
    if !swtpm::available("swtpm EK certificate chain") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let swtpm = Swtpm::start().unwrap();
    let ca = Swtpm::ca().unwrap();
    tpm2(&swtpm, dir, &["tpm2_nvread", "0x1c00002", "-o", "ek.der"]);
    tpm2(&swtpm, dir, &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa"]);
    tpm2(
        &swtpm,
        dir,
        &[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "rsa",
            "-u",
            "ak.pub",
        ],
    );
    tpm2(
        &swtpm,
        dir,
        &[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0",
            "-q",
            "abcd",
            "-m",
            "msg",
            "-s",
            "sig",
            "-o",
            "pcrs",
        ],
    );
    std::fs::write(dir.join("bundle.pem"), ca.bundle().unwrap()).unwrap();
    let base = [
        "tpm-quote",
        "--ak",
        "ak.pub",
        "--quote",
        "msg",
        "--sig",
        "sig",
        "--pcrs",
        "pcrs",
        "--nonce",
        "abcd",
        "--ek-cert",
        "ek.der",
        "--ek-ca",
    ];
    let with = |ca_file: &str| {
        let mut args = base.to_vec();
        args.push(ca_file);
        cli(dir, &args)
    };
    let (code, text) = with("bundle.pem");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("[pass] tpm.ek_chain"), "{text}");
    assert!(text.contains("[skip] tpm.ak_binding"), "{text}");
    // Without the intermediate the chain does not reach the root.
    let (code, text) = with(ca.root().to_str().unwrap());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[FAIL] tpm.ek_chain"), "{text}");
    // Another CA entirely.
    let other = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/amd/ask_ark_milan.pem");
    let (code, text) = with(other);
    assert_eq!(code, 1, "{text}");
}
