//! The `plinth-verify` binary: exit codes, JSON output and EAR tokens.

use std::process::Command;

use crate::common::vectors;

fn run(args: &[&str], cwd: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SNP_REPORT: &str = "virtee-sev/tests/certs_data/report_milan.hex";
const SNP_VCEK: &str = "virtee-sev/tests/certs_data/vcek_milan.der";
const GPU_DIR: &str =
    "nv-attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/sample_attestation_data/gpu";

#[test]
fn exit_codes_for_each_subcommand() {
    let Some(dir) = vectors() else { return };
    let (code, out, _) = run(
        &[
            "snp",
            "--report",
            SNP_REPORT,
            "--vcek",
            SNP_VCEK,
            "--at",
            "2026-01-01T00:00:00Z",
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("snp: VERIFIED"));
    // Evidence rejected: the wrong VCEK.
    let (code, out, _) = run(
        &[
            "snp",
            "--report",
            SNP_REPORT,
            "--vcek",
            "go-sev-guest/verify/testdata/vcek.testcer",
        ],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] snp.signature"));
    // Unreadable input names the file.
    let (code, _, err) = run(
        &["snp", "--report", "missing.bin", "--vcek", SNP_VCEK],
        &dir,
    );
    assert_eq!(code, 2);
    assert!(err.contains("missing.bin"), "{err}");
    // Unparseable evidence is a verdict: a report naming the check and the
    // file, exit 1.
    let (code, out, _) = run(
        &["snp", "--report", "MANIFEST.txt", "--vcek", SNP_VCEK],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("snp: REJECTED")
            && out.contains("[FAIL] snp.parse: MANIFEST.txt")
            && out.contains("snp report"),
        "{out}"
    );
    // Bad usage.
    let (code, _, _) = run(&["snp"], &dir);
    assert_eq!(code, 2);
    let (code, _, err) = run(
        &[
            "snp",
            "--report",
            SNP_REPORT,
            "--vcek",
            SNP_VCEK,
            "--at",
            "yesterday",
        ],
        &dir,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--at"), "{err}");

    let report = format!("{GPU_DIR}/hopperAttestationReport.txt");
    let certs = format!("{GPU_DIR}/hopperCertChain.txt");
    let nonce = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66";
    let (code, out, _) = run(
        &[
            "gpu", "--report", &report, "--certs", &certs, "--nonce", nonce,
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(
        &[
            "gpu", "--report", &report, "--certs", &certs, "--nonce", "00",
        ],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    let bad = format!("{GPU_DIR}/hopperAttestationReportInvalidSignature.txt");
    let (code, out, _) = run(&["gpu", "--report", &bad, "--certs", &certs], &dir);
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = run(&["gpu", "--report", &report, "--certs", SNP_REPORT], &dir);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] gpu.parse") && out.contains(SNP_REPORT),
        "{out}"
    );
    // A missing file stays a usage error.
    let (code, _, err) = run(&["gpu", "--report", &report, "--certs", "nope.pem"], &dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.pem"), "{err}");

    let (code, out, _) = run(
        &[
            "eventlog",
            "tpm2-tools/test/integration/fixtures/event-uefi-sha1-log.bin",
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sha1:"), "{out}");
    let (code, out, _) = run(&["eventlog", "MANIFEST.txt"], &dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] eventlog.parse: MANIFEST.txt"), "{out}");
}

/// Parses `--json` output and returns (verified, the failing check names).
fn json_failures(out: &str) -> (bool, Vec<String>) {
    let value: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|err| panic!("not JSON ({err}): {out}"));
    let failures = value["appraisals"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["checks"].as_array().unwrap().iter())
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    (value["verified"].as_bool().unwrap(), failures)
}

/// Truncated evidence of each kind (and a quote with a trailing byte) gives
/// a JSON report with the failing parse check named and exit 1, never a bare
/// error line.
#[test]
fn truncated_evidence_gives_a_json_report() {
    let Some(dir) = vectors() else { return };
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let snp_hex = std::fs::read_to_string(dir.join(SNP_REPORT)).unwrap();
    let snp_raw = plinth_attestation::bytes::decode_hex_text(&snp_hex).unwrap();
    std::fs::write(path("snp.bin"), &snp_raw[..snp_raw.len() - 1]).unwrap();
    let gpu_hex =
        std::fs::read_to_string(dir.join(format!("{GPU_DIR}/hopperAttestationReport.txt")))
            .unwrap();
    let gpu_raw = plinth_attestation::bytes::decode_hex_text(&gpu_hex).unwrap();
    std::fs::write(path("gpu.bin"), &gpu_raw[..gpu_raw.len() - 10]).unwrap();
    let log =
        std::fs::read(dir.join("tpm2-tools/test/integration/fixtures/event-uefi-sha1-log.bin"))
            .unwrap();
    std::fs::write(path("log.bin"), &log[..log.len() - 3]).unwrap();
    let g = crate::tpm::gcp(&dir);
    std::fs::write(path("ak.pub"), &g.ak).unwrap();
    std::fs::write(path("quote.sig"), &g.sig).unwrap();
    let mut quote = g.quote.clone();
    quote.push(0);
    std::fs::write(path("quote.msg"), &quote).unwrap();
    let certs = format!("{GPU_DIR}/hopperCertChain.txt");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                "tpm-quote".into(),
                "--ak".into(),
                path("ak.pub"),
                "--quote".into(),
                path("quote.msg"),
                "--sig".into(),
                path("quote.sig"),
            ],
            "tpm.parse",
            "TPMS_ATTEST: 1 trailing bytes",
        ),
        (
            vec![
                "snp".into(),
                "--report".into(),
                path("snp.bin"),
                "--vcek".into(),
                SNP_VCEK.into(),
            ],
            "snp.parse",
            "1183 bytes",
        ),
        (
            vec![
                "gpu".into(),
                "--report".into(),
                path("gpu.bin"),
                "--certs".into(),
                certs,
            ],
            "gpu.parse",
            "response.signature",
        ),
        (
            vec!["eventlog".into(), path("log.bin")],
            "eventlog.parse",
            "truncated",
        ),
    ];
    for (mut args, check, detail) in cases {
        args.push("--json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&args, &dir);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.is_empty(),
            "{args:?}: no bare error line expected: {err}"
        );
        let (verified, failures) = json_failures(&out);
        assert!(!verified);
        assert_eq!(failures, vec![check.to_owned()], "{out}");
        assert!(out.contains(detail), "{args:?}: {out}");
    }
}

/// CoCo records the H100 report with one 0x00 after the signature: it
/// verifies and the note is shown; a non-zero trailing byte, or any with
/// `gpu.strict_length = true`, is rejected with `gpu.trailing_data` named.
#[test]
fn spdm_trailing_padding_through_the_binary() {
    let Some(dir) = vectors() else { return };
    let work = tempfile::tempdir().unwrap();
    let report = format!("{GPU_DIR}/hopperAttestationReport.txt");
    let certs = format!("{GPU_DIR}/hopperCertChain.txt");
    let hex_text = std::fs::read_to_string(dir.join(&report)).unwrap();
    let padded = work.path().join("padded.hex");
    std::fs::write(&padded, format!("{}00\n", hex_text.trim())).unwrap();
    let junk = work.path().join("junk.hex");
    std::fs::write(&junk, format!("{}01\n", hex_text.trim())).unwrap();
    let padded = padded.to_str().unwrap();
    let (code, out, err) = run(&["gpu", "--report", padded, "--certs", &certs], &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("[pass] gpu.trailing_data: note: 1 byte(s) of zero padding"),
        "{out}"
    );
    let (code, out, _) = run(
        &[
            "gpu",
            "--report",
            junk.to_str().unwrap(),
            "--certs",
            &certs,
            "--json",
        ],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(json_failures(&out).1, vec!["gpu.trailing_data"]);
    let policy = work.path().join("strict.toml");
    std::fs::write(&policy, "[gpu]\nstrict_length = true\n").unwrap();
    let (code, out, _) = run(
        &[
            "gpu",
            "--report",
            padded,
            "--certs",
            &certs,
            "--policy",
            policy.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] gpu.trailing_data") && out.contains("strict_length"),
        "{out}"
    );
}

#[test]
fn json_output_and_policy_file() {
    let Some(dir) = vectors() else { return };
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.toml");
    std::fs::write(&policy, "[snp]\nmin_tcb = { bootloader = 3, snp = 9 }\n").unwrap();
    let policy_arg = policy.to_str().unwrap();
    let (code, out, _) = run(
        &[
            "snp", "--report", SNP_REPORT, "--vcek", SNP_VCEK, "--policy", policy_arg, "--json",
        ],
        &dir,
    );
    assert_eq!(code, 1, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["verified"], false);
    let checks = value["appraisals"][0]["checks"].as_array().unwrap();
    let min_tcb = checks
        .iter()
        .find(|c| c["name"] == "snp.policy.min_tcb")
        .unwrap();
    assert_eq!(min_tcb["status"], "fail");
    assert!(min_tcb["detail"].as_str().unwrap().contains("snp 8 < 9"));
    // A typo in the policy is bad usage, naming the file.
    std::fs::write(&policy, "[snp]\nmin_tbc = {}\n").unwrap();
    let (code, _, err) = run(
        &[
            "snp", "--report", SNP_REPORT, "--vcek", SNP_VCEK, "--policy", policy_arg,
        ],
        &dir,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("policy.toml") && err.contains("min_tbc"),
        "{err}"
    );
}

#[test]
fn ear_token_is_signed_and_describes_the_result() {
    let Some(dir) = vectors() else { return };
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("ear.pem");
    let ear = work.path().join("ear.jwt");
    let (code, out, _) = run(&["keygen", "--out", key.to_str().unwrap()], &dir);
    assert_eq!(code, 0, "{out}");
    use base64::Engine as _;
    let public_b64 = out.trim().rsplit(' ').next().unwrap();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(public_b64)
        .unwrap();
    // keygen refuses to overwrite.
    let (code, _, _) = run(&["keygen", "--out", key.to_str().unwrap()], &dir);
    assert_eq!(code, 2);
    let (code, out, _) = run(
        &[
            "snp",
            "--report",
            SNP_REPORT,
            "--vcek",
            SNP_VCEK,
            "--ear",
            ear.to_str().unwrap(),
            "--ear-key",
            key.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    let token = std::fs::read_to_string(&ear).unwrap();
    let claims = plinth_attestation::ear::verify_token(&token, &public).unwrap();
    assert_eq!(claims["eat_profile"], "tag:github.com,2023:veraison/ear");
    assert_eq!(claims["submods"]["snp"]["ear.status"], "affirming");
    assert_eq!(
        claims["submods"]["snp"]["ear.trustworthiness-vector"]["hardware"],
        2
    );
    assert!(claims["iat"].as_i64().unwrap() > 1_700_000_000);
    assert!(claims["eat_nonce"].is_string());
    assert!(
        claims["ear.verifier-id"]["build"]
            .as_str()
            .unwrap()
            .starts_with("plinth-verify")
    );
    // --ear without a key is bad usage.
    let (code, _, err) = run(
        &[
            "snp",
            "--report",
            SNP_REPORT,
            "--vcek",
            SNP_VCEK,
            "--ear",
            ear.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--ear-key"), "{err}");
}
