//! The capacity challenge on the CPU: the prover (A and B generated, C = A·B on all
//! cores, the Merkle tree, the opening) against the verifier (A and B regenerated,
//! Freivalds, proofs) for n = 1024, 2048, 4096. The verifier must stay under 1% of the
//! prover. Numbers are in docs/gpus.md.
//!
//! `cargo bench -p plinth-attestation --bench challenge` (set PLINTH_CHALLENGE_SIZES,
//! e.g. `1024,2048`, to change the sizes). The prover takes seconds per run, so each
//! size is timed over a few runs with `Instant` rather than criterion's sampling.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use plinth_attestation::challenge::{self, ChallengePolicy, CpuProver};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo test --benches` passes no --bench and must not spend minutes here.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let sizes: Vec<u32> = std::env::var("PLINTH_CHALLENGE_SIZES")
        .unwrap_or_else(|_| "1024,2048,4096".to_owned())
        .split(',')
        .map(|size| {
            size.trim()
                .parse()
                .expect("PLINTH_CHALLENGE_SIZES: comma-separated sizes")
        })
        .collect();
    let policy = ChallengePolicy {
        slack_ms: u64::MAX / 4,
        ..ChallengePolicy::default()
    };
    println!(
        "{:>6} {:>12} {:>12} {:>9} {:>10}",
        "n", "prover", "verifier", "ratio", "cpu GOPS"
    );
    for n in sizes {
        let runs = if n >= 4096 { 3 } else { 5 };
        let mut prover_times = Vec::new();
        let mut verifier_times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let transcript =
                challenge::run_local(&CpuProver, n, u64::MAX / 4, challenge::DEFAULT_ROWS).unwrap();
            prover_times.push(started.elapsed());
            let started = Instant::now();
            let appraisal = challenge::verify(&transcript, &policy);
            verifier_times.push(started.elapsed());
            assert!(appraisal.verified(), "{appraisal:?}");
        }
        let prover = median(prover_times);
        let verifier = median(verifier_times);
        let gops = 2.0 * f64::from(n).powi(3) / prover.as_secs_f64() / 1e9;
        println!(
            "{n:>6} {:>10.1}ms {:>10.2}ms {:>8.3}% {gops:>10.1}",
            prover.as_secs_f64() * 1e3,
            verifier.as_secs_f64() * 1e3,
            100.0 * verifier.as_secs_f64() / prover.as_secs_f64()
        );
    }
}
