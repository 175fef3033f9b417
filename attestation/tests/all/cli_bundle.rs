//! `plinth-verify enroll challenge|finish`, `bundle` and `batch` through the
//! binary, with a real swtpm host: exit code 0 verified, 1 rejected, 2 usage.

use std::path::Path;
use std::process::Command;

use plinth_attestation::bundle::model::HexVec;
use plinth_attestation::enroll::{EnrollmentChallenge, EnrollmentResponse, RESPONSE_FORMAT};
use plinth_tests::swtpm::{self, Swtpm};

use crate::host::Host;

fn verify_cli(dir: &Path, args: &[&str]) -> (i32, String) {
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

fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

#[test]
fn enroll_then_bundle_and_batch_through_the_binary() {
    if !swtpm::available("plinth-verify enroll/bundle/batch") {
        return;
    }
    let mut host = Host::new(Swtpm::start().unwrap(), "rsa", "rsa", 21);
    host.boot();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(
        dir.join("ek-ca.pem"),
        Swtpm::ca().unwrap().bundle().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[tpm]\nek_ca_files = [\"ek-ca.pem\"]\n",
    )
    .unwrap();
    write_json(&dir.join("request.json"), &host.enrollment_request());

    // Without the EK CA the request is refused (exit 1) and nothing is written.
    let (code, text) = verify_cli(
        dir,
        &[
            "enroll",
            "challenge",
            "--request",
            "request.json",
            "-o",
            "challenge.json",
            "--state",
            "state.json",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[FAIL] enroll.ek_trust"), "{text}");
    assert!(!dir.join("challenge.json").exists());

    let (code, text) = verify_cli(
        dir,
        &[
            "--policy",
            "policy.toml",
            "enroll",
            "challenge",
            "--request",
            "request.json",
            "-o",
            "challenge.json",
            "--state",
            "state.json",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let challenge =
        EnrollmentChallenge::parse(&std::fs::read(dir.join("challenge.json")).unwrap()).unwrap();
    let secret = host.activate(&challenge).expect("ActivateCredential");
    let response = EnrollmentResponse {
        format: RESPONSE_FORMAT.to_owned(),
        ak_name: challenge.ak_name.clone(),
        secret: HexVec(secret),
    };
    write_json(&dir.join("response.json"), &response);
    let (code, text) = verify_cli(
        dir,
        &[
            "enroll",
            "finish",
            "--state",
            "state.json",
            "--response",
            "response.json",
            "-o",
            "ak.json",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("[pass] enroll.credential"), "{text}");

    // A bundle: verified with the AK record, rejected without it or with another nonce.
    let nonce = [0x3c; 32];
    let nonce_hex = hex::encode(nonce);
    std::fs::create_dir(dir.join("fleet")).unwrap();
    let bundle = host.bundle(&nonce);
    std::fs::write(dir.join("fleet/a.json"), bundle.to_json_pretty().unwrap()).unwrap();
    let (code, text) = verify_cli(
        dir,
        &[
            "bundle",
            "fleet/a.json",
            "--nonce",
            &nonce_hex,
            "--ak-record",
            "ak.json",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("[pass] tpm.ak_enrolled"), "{text}");
    let (code, text) = verify_cli(
        dir,
        &["bundle", "fleet/a.json", "--nonce", &nonce_hex, "--json"],
    );
    assert_eq!(code, 1, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["verified"], false);
    let (code, text) = verify_cli(
        dir,
        &[
            "bundle",
            "fleet/a.json",
            "--nonce",
            &"00".repeat(32),
            "--ak-record",
            "ak.json",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[FAIL] bundle.nonce"), "{text}");
    let (code, text) = verify_cli(dir, &["bundle", "fleet/a.json", "--nonce", "xyz"]);
    assert_eq!(code, 2, "{text}");
    // An EAR token for the bundle: one submodule per appraised subject.
    let (code, text) = verify_cli(dir, &["keygen", "--out", "ear.key"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify_cli(
        dir,
        &[
            "--ear",
            "ear.jwt",
            "--ear-key",
            "ear.key",
            "bundle",
            "fleet/a.json",
            "--nonce",
            &nonce_hex,
            "--ak-record",
            "ak.json",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let token = std::fs::read_to_string(dir.join("ear.jwt")).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let submods = claims["submods"].as_object().unwrap();
    assert!(
        submods.contains_key("bundle") && submods.contains_key("tpm-quote"),
        "{claims}"
    );

    // The AK record also closes tpm-quote's AK<->EK gap.
    std::fs::copy(dir.join("ak.json"), host.path("ak.json")).unwrap();
    let (code, text) = verify_cli(
        host.dir.path(),
        &[
            "tpm-quote",
            "--ak",
            "ak.pub",
            "--quote",
            "quote.msg",
            "--sig",
            "quote.sig",
            "--pcrs",
            "quote.pcrs",
            "--ak-record",
            "ak.json",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("[pass] tpm.ak_binding"), "{text}");

    // A batch: one good, one with a broken signature, one that is not JSON.
    let mut tampered = host.bundle(&nonce);
    tampered.signature.value.0[0] ^= 1;
    std::fs::write(dir.join("fleet/b.json"), tampered.to_json_pretty().unwrap()).unwrap();
    std::fs::write(dir.join("fleet/c.json"), b"{not json").unwrap();
    let (code, text) = verify_cli(
        dir,
        &[
            "batch",
            "fleet",
            "--nonce",
            &nonce_hex,
            "--ak-record",
            "ak.json",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("a.json: VERIFIED"), "{text}");
    assert!(text.contains("b.json: REJECTED bundle.signature"), "{text}");
    assert!(text.contains("c.json: REJECTED bundle.parse"), "{text}");
    assert!(text.contains("3 bundles, 1 verified, 2 rejected"), "{text}");
    assert!(text.contains("rejected by bundle.signature: 1"), "{text}");
    // Per-bundle nonces; a bundle missing from the list fails bundle.nonce.
    std::fs::write(
        dir.join("nonces.txt"),
        format!("# round 1\na.json {nonce_hex}\n"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("fleet/b.json")).unwrap();
    std::fs::remove_file(dir.join("fleet/c.json")).unwrap();
    std::fs::write(
        dir.join("fleet/d.json"),
        host.bundle(&nonce).to_json_pretty().unwrap(),
    )
    .unwrap();
    let (code, text) = verify_cli(
        dir,
        &[
            "batch",
            "fleet",
            "--nonces",
            "nonces.txt",
            "--ak-record",
            "ak.json",
            "--json",
        ],
    );
    assert_eq!(code, 1, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["summary"]["verified"], 1);
    assert_eq!(
        value["summary"]["rejected_by_first_failing_check"]["bundle.nonce"],
        1
    );
}
