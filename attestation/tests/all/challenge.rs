//! The capacity challenge end to end on the CPU, and every dishonest prover of issue #12
//! caught by the named check it should fail.

use std::process::Command;

use plinth_attestation::challenge::prg::{Matrix, RowGenerator};
use plinth_attestation::challenge::prover::multiply_cpu;
use plinth_attestation::challenge::verify::freivalds_product;
use plinth_attestation::challenge::{
    self, ChallengePolicy, Challenger, Committed, CpuProver, OpenResponse, Prover, Transcript,
    commit,
};
use plinth_attestation::check::{Appraisal, CheckStatus};

fn status(appraisal: &Appraisal, name: &str) -> CheckStatus {
    appraisal
        .checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {appraisal:?}"))
        .status
}

fn failed(appraisal: &Appraisal) -> Vec<String> {
    appraisal
        .failures()
        .map(|check| check.name.clone())
        .collect()
}

/// A generous deadline so that honest debug-build runs are never late.
const DEADLINE_MS: u64 = 600_000;

/// The default policy with a slack that a loaded machine running a debug build cannot
/// exceed (honest runs measure their real time).
fn lenient() -> ChallengePolicy {
    ChallengePolicy {
        slack_ms: DEADLINE_MS,
        ..ChallengePolicy::default()
    }
}

fn challenger(n: u32, tag: u8) -> Challenger {
    Challenger::with_seeds(n, DEADLINE_MS, [tag; 32], [tag ^ 0x5a; 32]).unwrap()
}

fn honest_product(seed: &[u8; 32], n: usize) -> (Vec<i8>, Vec<i8>, Vec<i32>) {
    let a = RowGenerator::new(seed, n, Matrix::A).matrix();
    let b = RowGenerator::new(seed, n, Matrix::B).matrix();
    let c = multiply_cpu(&a, &b, n);
    (a, b, c)
}

/// Round 1 with a given (possibly wrong) C, then round 2 answered honestly for that C.
fn transcript_for(challenger: &Challenger, c: Vec<i32>, rows: &[u32]) -> Transcript {
    let n = challenger.request.n as usize;
    let honest = commit(&CpuProver, "t", &challenger.request).unwrap();
    let committed =
        Committed::from_product(challenger.request.seed.0, n, c, honest.commitment.clone());
    let mut open = challenger.open_request(0);
    open.rows = rows.to_vec();
    let response = committed.open(&open).unwrap();
    challenger.transcript(committed.commitment.clone(), 10, open, response)
}

#[test]
fn honest_transcripts_verify_for_several_sizes() {
    for n in [64u32, 128, 192, 256] {
        let transcript = challenge::run_local(&CpuProver, n, DEADLINE_MS, 16).unwrap();
        let appraisal = challenge::verify(&transcript, &lenient());
        assert!(appraisal.verified(), "n = {n}: {:?}", failed(&appraisal));
        assert_eq!(transcript.open.rows.len(), 16);
        // The saved form round-trips and still verifies.
        let text = serde_json::to_vec(&transcript).unwrap();
        let parsed = Transcript::from_json(&text).unwrap();
        assert_eq!(parsed, transcript);
    }
}

#[test]
fn the_prover_and_the_verifier_agree_on_c_times_r() {
    let n = 128;
    let challenger = challenger(n as u32, 1);
    let committed = commit(&CpuProver, "t", &challenger.request).unwrap();
    let open = challenger.open_request(4);
    let response = committed.open(&open).unwrap();
    let r = challenge::prg::r_vector(&open.r_seed.0, &committed.commitment.root.0, n);
    assert_eq!(
        freivalds_product(&challenger.request.seed.0, n, &r),
        response.cr
    );
}

#[test]
fn one_wrong_entry_fails_freivalds() {
    let n = 128usize;
    let challenger = challenger(n as u32, 2);
    let (_, _, mut c) = honest_product(&challenger.request.seed.0, n);
    c[77 * n + 3] += 1;
    // The prover answers C·r for the C it committed to; the wrong row is not opened.
    let transcript = transcript_for(&challenger, c, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    assert_eq!(failed(&appraisal), ["challenge.freivalds"]);
    let detail = &appraisal
        .checks
        .iter()
        .find(|c| c.name == "challenge.freivalds")
        .unwrap()
        .detail;
    assert!(detail.contains("response.cr[77]"), "{detail}");
}

#[test]
fn one_wrong_row_with_the_honest_c_times_r_fails_the_row_check() {
    let n = 128usize;
    let challenger = challenger(n as u32, 3);
    let (_, _, mut c) = honest_product(&challenger.request.seed.0, n);
    for entry in &mut c[40 * n..41 * n] {
        *entry = 7;
    }
    let mut transcript = transcript_for(&challenger, c, &[1, 40, 90, 3, 4, 5, 6, 7]);
    // The prover computes the honest C·r in O(n²) from A and B instead of from its C.
    let r = challenge::prg::r_vector(&transcript.open.r_seed.0, &transcript.commitment.root.0, n);
    transcript.response.cr = freivalds_product(&challenger.request.seed.0, n, &r);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    assert_eq!(failed(&appraisal), ["challenge.rows"]);
    // Answered for its own C instead, the same row fails Freivalds.
    let (_, _, mut c) = honest_product(&challenger.request.seed.0, n);
    c[40 * n] ^= 0x100;
    let transcript = transcript_for(&challenger, c, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    assert_eq!(failed(&appraisal), ["challenge.freivalds"]);
}

#[test]
fn a_commitment_changed_after_r_is_seen_fails() {
    let n = 128usize;
    let challenger = challenger(n as u32, 4);
    let honest = commit(&CpuProver, "t", &challenger.request).unwrap();
    let committed_root = honest.commitment.clone();
    // After round 2 reveals r, the prover answers from a different C (a new tree).
    let (_, _, mut c) = honest_product(&challenger.request.seed.0, n);
    c[5] += 1;
    let changed =
        Committed::from_product(challenger.request.seed.0, n, c, honest.commitment.clone());
    let open = challenger.open_request(8);
    let response = changed.open(&open).unwrap();
    let transcript = challenger.transcript(committed_root, 10, open, response);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    let failures = failed(&appraisal);
    assert!(
        failures.contains(&"challenge.merkle".to_owned()),
        "{failures:?}"
    );
    assert!(
        failures.contains(&"challenge.freivalds".to_owned()),
        "{failures:?}"
    );
}

#[test]
fn a_commitment_reused_for_another_seed_fails() {
    let n = 128u32;
    let first = challenger(n, 5);
    let old = commit(&CpuProver, "old", &first.request).unwrap();
    // The second challenge is answered with the first one's C, root and proofs.
    let second = challenger(n, 6);
    let open = second.open_request(8);
    let response: OpenResponse = old.open(&open).unwrap();
    let transcript = second.transcript(old.commitment.clone(), 10, open, response);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    let failures = failed(&appraisal);
    assert!(
        failures.contains(&"challenge.merkle".to_owned()),
        "{failures:?}"
    );
    assert!(
        failures.contains(&"challenge.freivalds".to_owned()),
        "{failures:?}"
    );
}

#[test]
fn a_low_rank_shortcut_fails() {
    let n = 128usize;
    let challenger = challenger(n as u32, 7);
    let (a, b, _) = honest_product(&challenger.request.seed.0, n);
    // Only the first 16 of the inner dimension: a rank-16 approximation of A·B, 8× less
    // work.
    let rank = 16;
    let mut c = vec![0i32; n * n];
    for i in 0..n {
        for k in 0..rank {
            for j in 0..n {
                c[i * n + j] += i32::from(a[i * n + k]) * i32::from(b[k * n + j]);
            }
        }
    }
    let transcript = transcript_for(&challenger, c, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    assert_eq!(failed(&appraisal), ["challenge.freivalds"]);
}

#[test]
fn a_late_answer_fails_the_deadline_and_the_capacity_budget() {
    let challenger = Challenger::with_seeds(64, 1000, [8; 32], [9; 32]).unwrap();
    let committed = commit(&CpuProver, "t", &challenger.request).unwrap();
    let open = challenger.open_request(8);
    let response = committed.open(&open).unwrap();
    let on_time = challenger.transcript(
        committed.commitment.clone(),
        900,
        open.clone(),
        response.clone(),
    );
    assert!(challenge::verify(&on_time, &ChallengePolicy::default()).verified());
    let late = challenger.transcript(
        committed.commitment.clone(),
        1001,
        open.clone(),
        response.clone(),
    );
    let appraisal = challenge::verify(&late, &ChallengePolicy::default());
    assert_eq!(failed(&appraisal), ["challenge.deadline"]);
    // A policy that credits the CPU with 2·64³ ops in under a millisecond and no slack
    // finds 900 ms far too slow.
    let strict = ChallengePolicy::from_toml(
        "slack_ms = 0\nhost_mib_per_s = 1000000\ncpu = { int8_gops = 1000 }\n",
    )
    .unwrap();
    let appraisal = challenge::verify(&on_time, &strict);
    assert_eq!(failed(&appraisal), ["challenge.capacity"]);
}

#[test]
fn a_size_beyond_the_claimed_memory_and_an_unknown_model_fail_capacity() {
    let challenger = challenger(64, 10);
    let mut committed = commit(&CpuProver, "t", &challenger.request).unwrap();
    committed.commitment.prover.model = "Tiny GPU".to_owned();
    committed.commitment.prover.device = "gpu:0".to_owned();
    let open = challenger.open_request(8);
    let response = committed.open(&open).unwrap();
    let transcript = challenger.transcript(committed.commitment.clone(), 5, open, response);
    let unknown = challenge::verify(&transcript, &ChallengePolicy::default());
    assert_eq!(failed(&unknown), ["challenge.capacity"]);
    let tiny =
        ChallengePolicy::from_toml("[models.\"Tiny GPU\"]\nint8_tops = 1000\nmemory_gb = 0\n")
            .unwrap();
    let appraisal = challenge::verify(&transcript, &tiny);
    assert_eq!(failed(&appraisal), ["challenge.capacity"]);
    let detail = &appraisal
        .checks
        .iter()
        .find(|c| c.name == "challenge.capacity")
        .unwrap()
        .detail;
    assert!(detail.contains("needs 24576 bytes"), "{detail}");
}

#[test]
fn a_revealed_r_seed_that_was_not_committed_fails() {
    let transcript = challenge::run_local(&CpuProver, 64, DEADLINE_MS, 8).unwrap();
    let mut tampered = transcript.clone();
    tampered.challenge.r_commitment.0[0] ^= 1;
    let appraisal = challenge::verify(&tampered, &lenient());
    assert_eq!(
        status(&appraisal, "challenge.r_commitment"),
        CheckStatus::Fail
    );
    // Too few rows opened for the policy.
    let mut few = transcript;
    few.open.rows.truncate(2);
    few.response.rows.truncate(2);
    let appraisal = challenge::verify(&few, &lenient());
    assert_eq!(failed(&appraisal), ["challenge.openings"]);
}

/// A change to a transcript's JSON.
type Mutation = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn malformed_transcripts_name_the_field() {
    let transcript = challenge::run_local(&CpuProver, 64, DEADLINE_MS, 8).unwrap();
    let value = serde_json::to_value(&transcript).unwrap();
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| v["format"] = "plinth-challenge/2".into()),
            "format",
        ),
        (
            Box::new(|v| v["challenge"]["n"] = 100.into()),
            "challenge.n",
        ),
        (
            Box::new(|v| v["challenge"]["deadline_ms"] = 0.into()),
            "challenge.deadline_ms",
        ),
        (
            Box::new(|v| v["response"]["cr"].as_array_mut().unwrap().truncate(3)),
            "response.cr",
        ),
        (
            Box::new(|v| v["response"]["cr"][0] = u64::MAX.into()),
            "response.cr[0]",
        ),
        (
            Box::new(|v| v["response"]["rows"][1]["values"] = "AAAA".into()),
            "response.rows[1].values",
        ),
        (
            Box::new(|v| v["response"]["rows"][0]["index"] = 63.into()),
            "response.rows[0].index",
        ),
        (
            Box::new(|v| v["open"]["rows"][1] = v["open"]["rows"][0].clone()),
            "open.rows[1]",
        ),
        (
            Box::new(|v| v["open"]["rows"][2] = 64.into()),
            "open.rows[2]",
        ),
    ];
    for (mutate, field) in cases {
        let mut bad = value.clone();
        mutate(&mut bad);
        let parsed: Transcript = serde_json::from_value(bad).unwrap();
        let err = parsed.validate().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        let appraisal = challenge::verify(&parsed, &lenient());
        assert_eq!(failed(&appraisal), ["challenge.structure"]);
    }
    let parse_cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| v["challenge"]["seed"] = "zz".into()),
            "challenge.seed",
        ),
        (
            Box::new(|v| v["response"]["rows"][2]["proof"][0] = 5.into()),
            "response.rows[2].proof[0]",
        ),
        (Box::new(|v| v["extra"] = 1.into()), "extra"),
    ];
    for (mutate, field) in parse_cases {
        let mut bad = value.clone();
        mutate(&mut bad);
        let err = Transcript::from_json(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn plinth_verify_challenge_follows_the_exit_code_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut transcript = challenge::run_local(&CpuProver, 64, DEADLINE_MS, 8).unwrap();
    // The challenger's clock as a fast host would read it (the debug build is slower).
    transcript.elapsed_ms = 5;
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec_pretty(&transcript).unwrap()).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["challenge", good.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("challenge.freivalds"));

    let mut tampered = transcript.clone();
    tampered.response.cr[3] = (tampered.response.cr[3] + 1) % challenge::prg::MODULUS;
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let output = run(&["challenge", bad.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verified"], false);

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"format\": 3}").unwrap();
    let output = run(&["challenge", garbage.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("format"),
        "{output:?}"
    );

    // A policy whose CPU class is far faster than this run: rejected for capacity.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[challenge]\nslack_ms = 0\nmin_rows = 8\n[challenge.cpu]\nint8_gops = 100000000\n",
    )
    .unwrap();
    let mut slow = transcript;
    slow.elapsed_ms = 50;
    std::fs::write(&good, serde_json::to_vec(&slow).unwrap()).unwrap();
    let output = run(&[
        "challenge",
        good.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("challenge.capacity"));
    let missing = run(&["challenge", "/nonexistent/t.json"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_cpu_prover_describes_itself() {
    assert_eq!(CpuProver.info().device, "cpu");
}
