//! Evidence bundles from a real host: a swtpm driven by tpm2-tools, an event
//! log written with `LogBuilder` and extended into the TPM, a quote over the
//! binding, the AK enrolled by credential activation. The bundle verifies;
//! each attack is rejected with the failing check named. The recorded SNP and
//! GPU vectors go through the bundle verifier too (their report data cannot
//! carry our binding, which is what the bundle checks then name).

use plinth_attestation::bundle::model::{
    Base64Bytes, CcMode, EvidenceBundle, GpuClaim, Hex, Piece,
};
use plinth_attestation::bundle::verify::{self, BundleContext, BundleReport};
use plinth_attestation::check::CheckStatus;
use plinth_attestation::enroll::AkRecord;
use plinth_attestation::policy::{HexBytes, Policy};
use plinth_tests::swtpm::{self, Swtpm};

use crate::common::{self, AT_2026};
use crate::host::{self, Host};

const NONCE: [u8; 32] = [0x6e; 32];

fn check(report: &BundleReport, name: &str) -> CheckStatus {
    report
        .appraisals
        .iter()
        .flat_map(|appraisal| &appraisal.checks)
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {}", human(report)))
        .status
}

fn human(report: &BundleReport) -> String {
    report
        .appraisals
        .iter()
        .map(|appraisal| appraisal.to_human())
        .collect()
}

fn first_failure(report: &BundleReport) -> String {
    report
        .first_failure()
        .map(|check| check.name.clone())
        .unwrap_or_default()
}

fn run(
    bundle: &EvidenceBundle,
    records: &[AkRecord],
    policy: &Policy,
    nonce: &[u8],
) -> BundleReport {
    let text = bundle.to_json_pretty().unwrap();
    let context = BundleContext {
        nonce: Some(nonce),
        policy,
        ak_records: records,
        at: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    verify::verify_bytes(&text, &context)
}

/// A booted, enrolled host and its bundle for [`NONCE`].
fn enrolled_host(seed: u8) -> Option<(Host, AkRecord)> {
    if !swtpm::available("evidence bundles") {
        return None;
    }
    let mut host = Host::new(Swtpm::start().unwrap(), "rsa", "rsa", seed);
    host.boot();
    let record = host::enroll(&host, &host::local_ca_anchors());
    Some((host, record))
}

#[test]
fn an_enrolled_host_bundle_verifies_with_every_check_named() {
    let Some((host, record)) = enrolled_host(11) else {
        return;
    };
    let bundle = host.bundle(&NONCE);
    let report = run(&bundle, &[record], &Policy::default(), &NONCE);
    assert!(report.verified(), "{}", human(&report));
    for name in [
        "bundle.nonce",
        "bundle.binding",
        "bundle.signature",
        "policy.required_evidence",
        "tpm.signature",
        "tpm.qualifying_data",
        "tpm.pcr_digest",
        "eventlog.replay.sha256",
        "tpm.ak_enrolled",
    ] {
        assert_eq!(check(&report, name), CheckStatus::Pass, "{name}");
    }
    // Absent SNP is a skip with the collector's reason; no allow-lists: skips.
    assert_eq!(check(&report, "snp.present"), CheckStatus::Skip);
    assert_eq!(check(&report, "policy.plugins"), CheckStatus::Skip);
}

#[test]
fn a_replayed_nonce_and_an_unenrolled_ak_are_rejected() {
    let Some((host, record)) = enrolled_host(12) else {
        return;
    };
    let bundle = host.bundle(&NONCE);
    // The verifier sent a new nonce; the node answered with an old bundle.
    let report = run(&bundle, &[record], &Policy::default(), &[0x99; 32]);
    assert_eq!(first_failure(&report), "bundle.nonce");
    assert_eq!(check(&report, "bundle.binding"), CheckStatus::Pass);
    // No AK record: nothing ties the quote's AK to a TPM.
    let report = run(&bundle, &[], &Policy::default(), &NONCE);
    assert_eq!(first_failure(&report), "tpm.ak_enrolled");
    assert_eq!(check(&report, "tpm.signature"), CheckStatus::Pass);
}

#[test]
fn a_pcr_extended_after_the_quote_and_a_log_that_does_not_replay_are_rejected() {
    let Some((mut host, record)) = enrolled_host(13) else {
        return;
    };
    let claims = host.claims();
    let binding = plinth_attestation::bundle::binding_digest(&NONCE, &claims).unwrap();
    let (quote, signature, quoted) = host.quote(&binding);
    // Something is measured after the quote; the PCRs read now differ from
    // what the quote signed.
    let before = host.log.extensions().len();
    host.log.measure(9, 0xD, b"/boot/evil-module.ko");
    host.extend_pending(before);
    let selection = plinth_attestation::tpm::quote::Attest::parse(&quote)
        .unwrap()
        .pcr_select;
    let now = host.read_pcrs(&selection);
    let evidence = host.tpm_evidence(quote.clone(), signature.clone(), &now);
    let report = run(
        &host.sign(&NONCE, claims.clone(), evidence),
        std::slice::from_ref(&record),
        &Policy::default(),
        &NONCE,
    );
    assert_eq!(first_failure(&report), "tpm.pcr_digest");

    // With the quoted PCRs, the log (which now holds the later event) does
    // not replay to them.
    let evidence = host.tpm_evidence(quote, signature, &quoted);
    let report = run(
        &host.sign(&NONCE, claims.clone(), evidence),
        std::slice::from_ref(&record),
        &Policy::default(),
        &NONCE,
    );
    assert_eq!(check(&report, "tpm.pcr_digest"), CheckStatus::Pass);
    assert_eq!(first_failure(&report), "eventlog.replay.sha256");

    // An extension nobody logged: a fresh quote, the log misses it.
    host.extend_unlogged(14, [0xee; 32]);
    let report = run(&host.bundle(&NONCE), &[record], &Policy::default(), &NONCE);
    assert_eq!(check(&report, "tpm.pcr_digest"), CheckStatus::Pass);
    assert_eq!(first_failure(&report), "eventlog.replay.sha256");
}

#[test]
fn edits_after_signing_are_rejected_by_name() {
    let Some((host, record)) = enrolled_host(14) else {
        return;
    };
    let bundle = host.bundle(&NONCE);
    let records = [record];
    let policy = Policy::default();

    let mut claims_edit = bundle.clone();
    claims_edit.claims.plugins[0].sha256 = Hex([0x52; 32]);
    let report = run(&claims_edit, &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "bundle.binding");
    assert_eq!(check(&report, "bundle.signature"), CheckStatus::Fail);

    let mut evidence_edit = bundle.clone();
    if let Piece::Present(tpm) = &mut evidence_edit.evidence.tpm {
        tpm.event_log = None;
    }
    let report = run(&evidence_edit, &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "bundle.signature");

    let mut signature_edit = bundle.clone();
    signature_edit.signature.value.0[63] ^= 0x80;
    let report = run(&signature_edit, &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "bundle.signature");

    // The same evidence signed by another node key: the AK was enrolled for
    // the first node.
    let intruder_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[99; 32]).unwrap();
    let mut claims = host.claims();
    claims.node_public_key = Hex(ring::signature::KeyPair::public_key(&intruder_key)
        .as_ref()
        .try_into()
        .unwrap());
    let binding = plinth_attestation::bundle::binding_digest(&NONCE, &claims).unwrap();
    let (quote, signature, values) = host.quote(&binding);
    let unsigned = plinth_attestation::bundle::UnsignedBundle::new(
        &NONCE,
        time::OffsetDateTime::now_utc(),
        claims,
        host.tpm_evidence(quote, signature, &values),
    )
    .unwrap();
    let resigned = EvidenceBundle::sign(unsigned, &intruder_key).unwrap();
    let report = run(&resigned, &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "tpm.ak_enrolled");
}

#[test]
fn a_quote_from_a_second_tpm_is_rejected() {
    let Some((host, record)) = enrolled_host(15) else {
        return;
    };
    let mut intruder = Host::new(Swtpm::start_distinct().unwrap(), "rsa", "rsa", 15);
    intruder.boot();
    // The intruder's own AK: not enrolled.
    let report = run(
        &intruder.bundle(&NONCE),
        std::slice::from_ref(&record),
        &Policy::default(),
        &NONCE,
    );
    assert_eq!(first_failure(&report), "tpm.ak_enrolled");
    // The enrolled AK's public area over the intruder's quote: the signature fails.
    let claims = host.claims();
    let binding = plinth_attestation::bundle::binding_digest(&NONCE, &claims).unwrap();
    let (quote, signature, values) = intruder.quote(&binding);
    let mut evidence = host.tpm_evidence(quote, signature, &values);
    if let Piece::Present(tpm) = &mut evidence.tpm {
        tpm.event_log = Some(Base64Bytes(intruder.log.to_bytes()));
    }
    let report = run(
        &host.sign(&NONCE, claims, evidence),
        &[record],
        &Policy::default(),
        &NONCE,
    );
    assert_eq!(first_failure(&report), "tpm.signature");
}

#[test]
fn fleet_policy_names_plugins_binaries_and_missing_evidence() {
    let Some((host, record)) = enrolled_host(16) else {
        return;
    };
    let records = [record];
    let mut policy = Policy::default();
    policy.fleet.plugins = vec![HexBytes(vec![0x50; 32])];
    let report = run(&host.bundle(&NONCE), &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "policy.plugins");
    let plugins = report.appraisals[0]
        .checks
        .iter()
        .find(|check| check.name == "policy.plugins")
        .unwrap();
    assert!(plugins.detail.contains("flat-rate"), "{}", plugins.detail);

    policy.fleet.plugins = vec![HexBytes(vec![0x51; 32])];
    policy.fleet.agent_binaries = vec![HexBytes(vec![0xa1; 32])];
    let report = run(&host.bundle(&NONCE), &records, &policy, &NONCE);
    assert!(report.verified(), "{}", human(&report));
    policy.fleet.agent_binaries = vec![HexBytes(vec![0xa2; 32])];
    let report = run(&host.bundle(&NONCE), &records, &policy, &NONCE);
    assert_eq!(first_failure(&report), "policy.agent_binary");

    // A host claiming a GPU without evidence for it, under the default
    // policy (gpu required where claimed).
    let mut claims = host.claims();
    claims.gpus.push(GpuClaim {
        index: 0,
        uuid: "GPU-1".to_owned(),
        model: "NVIDIA H100".to_owned(),
        driver_version: "550.54.15".to_owned(),
        vbios_version: "96.00.74.00.1C".to_owned(),
        cc_mode: CcMode::Off,
    });
    let binding = plinth_attestation::bundle::binding_digest(&NONCE, &claims).unwrap();
    let (quote, signature, values) = host.quote(&binding);
    let mut evidence = host.tpm_evidence(quote, signature, &values);
    evidence.gpus.push(Piece::absent("CC mode off"));
    let bundle = host.sign(&NONCE, claims, evidence);
    let report = run(&bundle, &records, &Policy::default(), &NONCE);
    assert_eq!(first_failure(&report), "policy.required_evidence");
    assert_eq!(check(&report, "gpu[0].present"), CheckStatus::Skip);
    let mut lenient = Policy::default();
    lenient.fleet.require = vec![plinth_attestation::policy::EvidenceKind::Tpm];
    assert!(run(&bundle, &records, &lenient, &NONCE).verified());
}

/// The recorded SNP report and GPU report go through the bundle verifier:
/// signatures and chains verify, and the report data is not our binding.
#[test]
fn recorded_snp_and_gpu_reports_are_checked_against_the_binding() {
    let Some(dir) = common::vectors() else {
        return;
    };
    let (snp, gpu) = crate::vectors::snp_and_gpu(&dir);
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[17; 32]).unwrap();
    let bundle = crate::vectors::bundle_with(&key, &NONCE, Some(snp), vec![gpu]);
    let text = bundle.to_json_pretty().unwrap();
    let mut policy = Policy::default();
    policy.fleet.require.clear();
    let context = BundleContext {
        nonce: Some(&NONCE),
        policy: &policy,
        ak_records: &[],
        at: AT_2026,
    };
    let report = verify::verify_bytes(&text, &context);
    assert_eq!(check(&report, "bundle.signature"), CheckStatus::Pass);
    assert_eq!(check(&report, "snp.signature"), CheckStatus::Pass);
    assert_eq!(check(&report, "snp.cert_chain"), CheckStatus::Pass);
    assert_eq!(check(&report, "snp.report_data"), CheckStatus::Fail);
    assert_eq!(check(&report, "gpu[0].signature"), CheckStatus::Pass);
    assert_eq!(check(&report, "gpu[0].cert_chain"), CheckStatus::Pass);
    assert_eq!(check(&report, "gpu[0].nonce"), CheckStatus::Fail);
    assert_eq!(check(&report, "gpu[0].identity"), CheckStatus::Pass);
    assert!(!report.verified());

    // The GPU entry names another GPU than the claim.
    let mut swapped = bundle.clone();
    if let Piece::Present(gpu) = &mut swapped.evidence.gpus[0] {
        gpu.uuid = "GPU-other".to_owned();
    }
    let swapped = EvidenceBundle::sign(crate::vectors::unsign(swapped), &key).unwrap();
    let report = verify::verify_bytes(&swapped.to_json_pretty().unwrap(), &context);
    assert_eq!(check(&report, "gpu[0].identity"), CheckStatus::Fail);
}

/// The benchmark's eight-GPU bundle runs every check of every piece: each
/// signature and chain verifies, the GCP log replays to its quote's PCRs, and
/// only what a recording cannot have fails (our binding, an enrolled AK).
#[test]
fn an_eight_gpu_recorded_bundle_runs_every_check() {
    let Some(dir) = common::vectors() else {
        return;
    };
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[18; 32]).unwrap();
    let bundle = crate::vectors::eight_gpu_bundle(&dir, &key, &NONCE, "host-0001");
    let text = bundle.to_json_pretty().unwrap();
    assert!(
        text.len() > 100_000,
        "an eight-GPU bundle is {} bytes",
        text.len()
    );
    let policy = Policy::default();
    let context = BundleContext {
        nonce: Some(&NONCE),
        policy: &policy,
        ak_records: &[],
        at: AT_2026,
    };
    let report = verify::verify_bytes(&text, &context);
    assert_eq!(
        report.appraisals.len(),
        1 + 1 + 1 + 8,
        "bundle, tpm, snp, 8 GPUs"
    );
    for name in [
        "bundle.signature",
        "tpm.signature",
        "tpm.pcr_digest",
        "eventlog.replay.sha1",
        "snp.signature",
        "policy.required_evidence",
    ] {
        assert_eq!(check(&report, name), CheckStatus::Pass, "{name}");
    }
    for index in 0..8 {
        assert_eq!(
            check(&report, &format!("gpu[{index}].signature")),
            CheckStatus::Pass
        );
        assert_eq!(
            check(&report, &format!("gpu[{index}].nonce")),
            CheckStatus::Fail
        );
    }
    assert_eq!(check(&report, "tpm.qualifying_data"), CheckStatus::Fail);
    assert_eq!(check(&report, "tpm.ak_enrolled"), CheckStatus::Fail);
    assert_eq!(first_failure(&report), "tpm.qualifying_data");
}

#[test]
fn a_capacity_transcript_in_the_bundle_is_checked_with_the_challenge_verifier() {
    use plinth_attestation::bundle::capacity;
    use plinth_attestation::challenge::{CpuProver, DEFAULT_ROWS, run_local};

    let Some((host, record)) = enrolled_host(17) else {
        return;
    };
    let records = [record];
    let policy = Policy::default();
    let transcript = run_local(&CpuProver, 128, 60_000, DEFAULT_ROWS).unwrap();
    let with_capacity = |transcript: &plinth_attestation::challenge::Transcript| {
        let claims = host.claims();
        let binding = plinth_attestation::bundle::binding_digest(&NONCE, &claims).unwrap();
        let (quote, signature, values) = host.quote(&binding);
        let mut evidence = host.tpm_evidence(quote, signature, &values);
        capacity::include(&mut evidence, transcript).unwrap();
        host.sign(&NONCE, claims, evidence)
    };

    // An honest transcript: the whole bundle verifies, capacity checks included.
    let bundle = with_capacity(&transcript);
    let report = run(&bundle, &records, &policy, &NONCE);
    assert!(report.verified(), "{}", human(&report));
    assert_eq!(check(&report, "challenge.freivalds"), CheckStatus::Pass);
    assert_eq!(check(&report, "challenge.merkle"), CheckStatus::Pass);

    // A transcript swapped in after signing: the node signature covers it.
    let mut swapped = bundle.clone();
    let mut other = transcript.clone();
    other.elapsed_ms += 1;
    capacity::include(&mut swapped.evidence, &other).unwrap();
    assert_eq!(
        first_failure(&run(&swapped, &records, &policy, &NONCE)),
        "bundle.signature"
    );

    // A signed transcript with a wrong opened row fails the bundle by name.
    let mut forged = transcript.clone();
    let mut row = forged.response.rows[0].entries(128, "row").unwrap();
    row[5] = row[5].wrapping_add(1);
    forged.response.rows[0].values = plinth_attestation::challenge::OpenedRow::encode(&row);
    let report = run(&with_capacity(&forged), &records, &policy, &NONCE);
    assert!(!report.verified());
    assert!(
        first_failure(&report).starts_with("challenge."),
        "{}",
        human(&report)
    );
}
