//! End-to-end attestation against a real swtpm (manufactured with EK certificates from a
//! local CA): the real agent, configured through `PLINTH_ATTESTATION_TPM_TCTI`, enrolls
//! its AK with the verifier's `enroll challenge` / `enroll finish` (the plinth-verify
//! CLI, run in-process), attests, and its bundle verifies; then each attack the agent
//! can be part of is rejected with the failing check named: a replayed nonce, an event
//! log that does not replay to the quote, a PCR extended after the golden values were
//! taken, a quote from another TPM, an unenrolled AK, a plugin not in the policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use clap::Parser as _;
use common::{Agent, Node};
use plinth_attestation::bundle::EvidenceBundle;
use plinth_attestation::bundle::model::Piece;
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::eventlog::LogBuilder;
use plinth_tests::swtpm::{self, Swtpm};

/// `plinth-verify ARGS` through the CLI library (what the binary's main runs): whether
/// everything verified, and the report text.
fn verify(args: &[&str]) -> (bool, String) {
    let cli = plinth_attestation::cli::Cli::try_parse_from(
        std::iter::once("plinth-verify").chain(args.iter().copied()),
    )
    .unwrap();
    let outcome = plinth_attestation::cli::run(&cli).unwrap_or_else(|err| {
        panic!(
            "plinth-verify {args:?}: {}",
            plinth_toolbox::error_chain(&err)
        )
    });
    (outcome.verified(), outcome.output)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A node whose agent reads the event log at `<node>/eventlog.bin`, without jobs,
/// SNP or NVIDIA.
fn node() -> Node {
    let node = Node::new("");
    node.configure(&format!(
        "[jobs]\nenabled = false\n[attestation]\nevent_log = \"{}\"\nsev_device = \"\"\nnvidia = false\n",
        node.path("eventlog.bin").display()
    ));
    node
}

fn start(node: &Node, tpm: &Swtpm, extra_env: &[(&str, &str)]) -> Agent {
    let tcti = tpm.tcti();
    let mut env = vec![("PLINTH_ATTESTATION_TPM_TCTI", tcti.as_str())];
    env.extend_from_slice(extra_env);
    node.start_with_env(&env)
}

/// Writes a TCG log of `events` (PCR, data) and, when `extend`, extends them into `tpm`.
fn event_log(node: &Node, tpm: &Swtpm, events: &[(u32, &[u8])], extend: bool) {
    let mut builder = LogBuilder::new(&[HashAlg::Sha256]).unwrap();
    for (pcr, data) in events {
        builder.measure(*pcr, 0x0d, data);
    }
    std::fs::write(node.path("eventlog.bin"), builder.to_bytes()).unwrap();
    if extend {
        for extension in builder.extensions() {
            tpm.tpm2(
                node.dir.path(),
                &[
                    "tpm2_pcrextend",
                    &format!(
                        "{}:sha256={}",
                        extension.pcr,
                        hex::encode(&extension.digest)
                    ),
                ],
            )
            .unwrap();
        }
    }
}

/// `plinthctl attest --nonce NONCE -o FILE`; the parsed bundle.
fn attest(node: &Node, nonce: &str, file: &str) -> EvidenceBundle {
    node.ctl_ok(&["attest", "--nonce", nonce, "-o", p(&node.path(file))]);
    EvidenceBundle::parse(&std::fs::read(node.path(file)).unwrap()).unwrap()
}

/// Enrolls the running agent's AK; the AK record's path.
fn enroll(node: &Node, name: &str) -> std::path::PathBuf {
    let dir = node.dir.path();
    let ca = dir.join("ek-ca.pem");
    std::fs::write(&ca, Swtpm::ca().unwrap().bundle().unwrap()).unwrap();
    let request = dir.join(format!("{name}-request.json"));
    let challenge = dir.join(format!("{name}-challenge.json"));
    let state = dir.join(format!("{name}-state.json"));
    let response = dir.join(format!("{name}-response.json"));
    let record = dir.join(format!("{name}-ak.json"));
    node.ctl_ok(&["attest", "enroll", "-o", p(&request)]);
    let (ok, text) = verify(&[
        "enroll",
        "challenge",
        "--request",
        p(&request),
        "-o",
        p(&challenge),
        "--state",
        p(&state),
        "--ek-ca",
        p(&ca),
    ]);
    assert!(ok, "enroll challenge: {text}");
    node.ctl_ok(&[
        "attest",
        "activate",
        "--challenge",
        p(&challenge),
        "-o",
        p(&response),
    ]);
    let (ok, text) = verify(&[
        "enroll",
        "finish",
        "--state",
        p(&state),
        "--response",
        p(&response),
        "-o",
        p(&record),
    ]);
    assert!(ok, "enroll finish: {text}");
    record
}

fn verify_bundle(
    node: &Node,
    file: &str,
    nonce: &str,
    record: &Path,
    policy: Option<&Path>,
) -> (bool, String) {
    let bundle = node.path(file);
    let mut args = vec![
        "bundle",
        p(&bundle),
        "--nonce",
        nonce,
        "--ak-record",
        p(record),
    ];
    if let Some(policy) = policy {
        args.extend(["--policy", p(policy)]);
    }
    verify(&args)
}

fn assert_rejected(result: &(bool, String), check: &str) {
    let (ok, text) = result;
    assert!(!ok, "accepted, expected [FAIL] {check}: {text}");
    assert!(
        text.contains(&format!("[FAIL] {check}")),
        "expected [FAIL] {check}: {text}"
    );
}

const NONCE: &str = "00112233445566778899aabbccddeeff";
const OTHER_NONCE: &str = "ffeeddccbbaa99887766554433221100";

#[test]
fn enroll_attest_verify_and_every_rejection() {
    if !swtpm::available("agent attestation") {
        return;
    }
    let tpm = Swtpm::start().unwrap();
    let node = node();
    let good_events: &[(u32, &[u8])] = &[(0, b"firmware"), (4, b"boot loader"), (9, b"kernel")];
    event_log(&node, &tpm, good_events, true);
    let agent = start(&node, &tpm, &[]);
    let record = enroll(&node, "first");

    // Attest, verify: affirming.
    let bundle = attest(&node, NONCE, "good.json");
    let tpm_piece = bundle.evidence.tpm.present().expect("tpm evidence");
    assert!(tpm_piece.event_log.is_some() && tpm_piece.ek_certificate.is_some());
    assert!(tpm_piece.ek_public.is_some());
    let result = verify_bundle(&node, "good.json", NONCE, &record, None);
    assert!(result.0, "the agent's bundle does not verify: {}", result.1);
    assert!(result.1.contains("[pass] tpm.ak_enrolled"), "{}", result.1);
    assert!(result.1.contains("[pass] eventlog.replay"), "{}", result.1);

    // A replayed bundle: the verifier sent another nonce.
    assert_rejected(
        &verify_bundle(&node, "good.json", OTHER_NONCE, &record, None),
        "bundle.nonce",
    );

    // An event log that does not replay to the quoted PCRs (an event the TPM never saw).
    let hidden: &[(u32, &[u8])] = &[(7, b"hidden")];
    event_log(&node, &tpm, &[good_events, hidden].concat(), false);
    attest(&node, NONCE, "bad-log.json");
    assert_rejected(
        &verify_bundle(&node, "bad-log.json", NONCE, &record, None),
        "eventlog.replay",
    );
    event_log(&node, &tpm, good_events, false);

    // Golden PCRs taken from the good bundle; then PCR 14 is extended (as a booted
    // component would): the next quote no longer matches the golden values.
    let pcr14 = hex::encode(&tpm_piece.pcrs["sha256"][&14].0);
    let policy = node.path("policy.toml");
    std::fs::write(
        &policy,
        format!("[tpm.pcrs.sha256]\n\"14\" = \"{pcr14}\"\n"),
    )
    .unwrap();
    let result = verify_bundle(&node, "good.json", NONCE, &record, Some(&policy));
    assert!(result.0, "golden PCRs from the good bundle: {}", result.1);
    tpm.extend_sha256(14, &"ab".repeat(32)).unwrap();
    attest(&node, NONCE, "extended.json");
    assert_rejected(
        &verify_bundle(&node, "extended.json", NONCE, &record, Some(&policy)),
        "tpm.policy.pcrs",
    );
    drop(agent);

    // The same node key, an AK at another handle of the same TPM: not enrolled.
    let agent = start(
        &node,
        &tpm,
        &[("PLINTH_ATTESTATION_AK_HANDLE", "0x81010003")],
    );
    let unenrolled = attest(&node, NONCE, "unenrolled.json");
    assert_eq!(
        unenrolled.evidence.tpm.present().unwrap().ak_handle,
        0x8101_0003
    );
    assert_rejected(
        &verify_bundle(&node, "unenrolled.json", NONCE, &record, None),
        "tpm.ak_enrolled",
    );
    drop(agent);

    // The same node key moved to a host with another TPM (same CA): its quote is
    // signed by an AK nobody enrolled.
    let second = Swtpm::start_distinct().unwrap();
    let agent = start(&node, &second, &[]);
    let foreign = attest(&node, NONCE, "second-tpm.json");
    assert_ne!(
        foreign.evidence.tpm.present().unwrap().ak_public,
        tpm_piece.ak_public,
        "the second TPM has its own AK"
    );
    assert_rejected(
        &verify_bundle(&node, "second-tpm.json", NONCE, &record, None),
        "tpm.ak_enrolled",
    );
    drop(agent);
}

#[test]
fn bad_nonces_and_a_missing_tpm_are_answered_not_fatal() {
    let node = node();
    let agent =
        node.start_with_env(&[("PLINTH_ATTESTATION_TPM_TCTI", "device:/nonexistent/tpmrm0")]);
    for (nonce, expected) in [
        ("zz", "is not hex"),
        ("0011", "is 2 bytes"),
        (&"00".repeat(65)[..], "is 65 bytes"),
    ] {
        let output = node.ctl(&["attest", "--nonce", nonce]);
        assert!(!output.status.success());
        let text = common::stderr(&output);
        assert!(
            text.contains("400") && text.contains("nonce"),
            "{nonce}: {text}"
        );
        assert!(text.contains(expected), "{nonce}: {text}");
    }
    let output = node.ctl(&["attest"]);
    assert!(
        common::stderr(&output).contains("--nonce"),
        "{}",
        common::stderr(&output)
    );
    // No TPM: the piece says why, and the agent keeps answering.
    let bundle = attest(&node, NONCE, "no-tpm.json");
    let Piece::Absent { reason } = &bundle.evidence.tpm else {
        panic!("a TPM where there is none");
    };
    assert!(reason.contains("/nonexistent/tpmrm0"), "{reason}");
    assert!(
        matches!(&bundle.evidence.snp, Piece::Absent { reason } if reason.contains("sev_device"))
    );
    bundle.verify_node_signature().unwrap();
    let output = node.ctl(&["attest", "enroll"]);
    assert!(
        common::stderr(&output).contains("/nonexistent/tpmrm0"),
        "{}",
        common::stderr(&output)
    );
    node.ctl_ok(&["status"]);
    drop(agent);
}

#[test]
fn a_plugin_not_in_the_policy_is_rejected() {
    if !swtpm::available("agent attestation with plugins") {
        return;
    }
    let Some(wasm) = plinth_tests::example_plugin("plinth_example_pricing").unwrap() else {
        return;
    };
    let tpm = Swtpm::start().unwrap();
    let node = node();
    event_log(&node, &tpm, &[(0, b"firmware")], true);
    let dir = node.dir.path();
    let key = dir.join("author.key");
    let public_key = node
        .ctl_ok(&["plugin", "keygen", p(&key)])
        .trim()
        .to_owned();
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"example-pricing\"\nversion = \"1.0.0\"\nkind = \"pricing\"\nwit = \"plinth:policy@0.1.2\"\nwasm_sha256 = \"\"\n",
    )
    .unwrap();
    let package = dir.join("pricing.plinthpkg");
    node.ctl_ok(&[
        "plugin",
        "sign",
        "--manifest",
        p(&dir.join("plugin.toml")),
        "--wasm",
        p(&wasm),
        "--key",
        p(&key),
        "-o",
        p(&package),
    ]);
    node.configure(&format!(
        "[jobs]\nenabled = false\n[plugins]\ntrusted_keys = [\"{public_key}\"]\n[attestation]\nevent_log = \"{}\"\nsev_device = \"\"\nnvidia = false\n",
        node.path("eventlog.bin").display()
    ));
    let agent = start(&node, &tpm, &[]);
    node.ctl_ok(&["plugin", "install", p(&package)]);
    let record = enroll(&node, "plugin");
    let bundle = attest(&node, NONCE, "plugin.json");
    let wasm_sha256 = hex::encode(common::sha256_file(&wasm));
    assert_eq!(bundle.claims.plugins.len(), 1);
    assert_eq!(bundle.claims.plugins[0].kind, "pricing");
    assert_eq!(bundle.claims.plugins[0].sha256.to_string(), wasm_sha256);

    let policy = dir.join("fleet.toml");
    std::fs::write(
        &policy,
        format!("[fleet]\nplugins = [\"{}\"]\n", "00".repeat(32)),
    )
    .unwrap();
    assert_rejected(
        &verify_bundle(&node, "plugin.json", NONCE, &record, Some(&policy)),
        "policy.plugins",
    );
    std::fs::write(&policy, format!("[fleet]\nplugins = [\"{wasm_sha256}\"]\n")).unwrap();
    let result = verify_bundle(&node, "plugin.json", NONCE, &record, Some(&policy));
    assert!(result.0, "{}", result.1);
    drop(agent);
}
