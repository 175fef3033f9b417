//! Job start latency with the real runtime: from submit (prepare + start of
//! a job whose image is cached) until the container's first instruction
//! runs, against a bare `runc run` of the same bundle; p50/p99 in one run.
//!
//! The container's first (and only) instruction is busybox `adjtimex`, which
//! prints the kernel's wall clock in microseconds; latency is that stamp minus
//! the host's clock when the submit (or the bare `runc run`) began.
//! Needs root, runc and busybox-static; otherwise it says so and exits.
//! A custom harness (not criterion) because the target is a percentile.
//! Run: `cargo bench -p plinth-jobs --bench job_start` (ITERATIONS env: default 40).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/jobs/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plinth_jobs::engine::Engine;
use plinth_jobs::runtime::RuncRuntime;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Parses `time.tv_sec:` and `time.tv_usec:` from busybox adjtimex output.
fn stamp_us(output: &str) -> u64 {
    let field = |name: &str| -> u64 {
        output
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in {output:?}"))
    };
    field("time.tv_sec:") * 1_000_000 + field("time.tv_usec:")
}

fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let rank = ((pct / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
    println!(
        "{name:<34} n={:<3} p50={p50:>7.2} ms  p99={p99:>7.2} ms  min={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        samples[0],
        samples[samples.len() - 1]
    );
    (p50, p99)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !common::runtime_available() {
        return;
    }
    let iterations: usize = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let env = common::TestEnv::new(None);
    let spec = env.spec(&["/bin/adjtimex"]);
    // Warm the image cache (and the page cache) once.
    env.engine.prepare("warm", &spec, &[], &mut |_| {}).unwrap();
    env.engine.start("warm").unwrap();
    env.engine.wait("warm", Duration::from_secs(30)).unwrap();
    let bundle = env.engine.job_dir("warm").unwrap().join("bundle");
    let runtime = RuncRuntime::new(&env.config.runtime_binary, &env.config.runtime_root);

    let mut plinth = Vec::new();
    let mut plinth_prepare = Vec::new();
    let mut bare = Vec::new();
    for iteration in 0..iterations {
        // plinth: prepare (cached image) + start via the supervisor.
        let job_id = format!("b{iteration}");
        let t0 = now_us();
        env.engine
            .prepare(&job_id, &spec, &[], &mut |_| {})
            .unwrap();
        let prepared = now_us();
        env.engine.start(&job_id).unwrap();
        let result = env.engine.wait(&job_id, Duration::from_secs(30)).unwrap();
        // adjtimex exits 1 while the clock is unsynchronised; it still printed.
        assert_eq!(
            result.reason,
            plinth_jobs::protocol::EndReason::Exited,
            "{result:?}"
        );
        let out = std::fs::read_to_string(env.engine.log_path(&job_id, false).unwrap()).unwrap();
        plinth.push((stamp_us(&out) as f64 - t0 as f64) / 1000.0);
        plinth_prepare.push((prepared - t0) as f64 / 1000.0);
        env.engine.remove(&job_id).unwrap();

        // Bare `runc run` of the same bundle.
        let container_id = format!("bare-{}-{iteration}", std::process::id());
        let mut command = runtime.run_command(&container_id, &bundle).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = now_us();
        let output = command.output().unwrap();
        assert!(
            output.status.code().is_some(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        bare.push((stamp_us(&String::from_utf8_lossy(&output.stdout)) as f64 - t0 as f64) / 1000.0);
        let _ = Engine::container_id(&container_id);
    }
    println!(
        "job start latency (submit -> first instruction), image cached, {iterations} iterations each:"
    );
    let (plinth_p50, plinth_p99) = summary("plinth prepare+start (supervisor)", &mut plinth);
    summary("  of which prepare (bundle, CDI)", &mut plinth_prepare);
    let (bare_p50, bare_p99) = summary("bare runc run, same bundle", &mut bare);
    println!(
        "overhead over bare runc: p50 {:.2} ms, p99 {:.2} ms (target p50 <= 20 ms)",
        plinth_p50 - bare_p50,
        plinth_p99 - bare_p99
    );
}
