//! `plinth-verify batch` on a generated fleet: N bundles the size of an
//! eight-GPU host (TPM quote + 43 KB event log, SNP report + VCEK, eight H100
//! SPDM reports with their 5-certificate chains, signed claims), each with its
//! own node key and nonce, built from the recorded vectors
//! ($PLINTH_VECTORS or ../shared/vectors) into a temporary directory, then
//! verified by the release `plinth-verify` binary on all cores.
//!
//! `cargo bench -p plinth-attestation --bench batch` (N = 10,000; set
//! PLINTH_BATCH_BUNDLES to change it). Recorded evidence cannot carry the
//! bundles' bindings, so every bundle is rejected at `tpm.qualifying_data`
//! after every check of every piece has run; the work is that of a real
//! fleet. Numbers are in docs/attestation.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use ring::signature::Ed25519KeyPair;

#[path = "../tests/all/vectors.rs"]
#[allow(dead_code)]
mod vectors;

fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PLINTH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    dir.join("MANIFEST.txt").is_file().then_some(dir)
}

fn main() {
    // cargo bench passes --bench; `cargo test --benches` passes nothing and
    // must not spend minutes here.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let Some(dir) = vectors_dir() else {
        eprintln!("skipping: evidence vectors not found (set PLINTH_VECTORS)");
        return;
    };
    let count: usize = std::env::var("PLINTH_BATCH_BUNDLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let fleet = tempfile::tempdir().unwrap();
    let bundles = fleet.path().join("bundles");
    std::fs::create_dir(&bundles).unwrap();
    let started = Instant::now();
    let nonces: Vec<String> = (0..count)
        .into_par_iter()
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(index as u64).to_be_bytes());
            let key = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
            let mut nonce = [0x4eu8; 32];
            nonce[..8].copy_from_slice(&(index as u64).to_le_bytes());
            let name = format!("host-{index:05}.json");
            let bundle = vectors::eight_gpu_bundle(&dir, &key, &nonce, &name);
            std::fs::write(bundles.join(&name), bundle.to_json_pretty().unwrap()).unwrap();
            format!("{name} {}\n", hex::encode(nonce))
        })
        .collect();
    let mut nonce_file = std::fs::File::create(fleet.path().join("nonces.txt")).unwrap();
    for line in &nonces {
        nonce_file.write_all(line.as_bytes()).unwrap();
    }
    let size: u64 = std::fs::read_dir(&bundles)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "generated {count} eight-GPU bundles ({:.1} MB, {:.0} KB each) in {:.1} s",
        size as f64 / 1e6,
        size as f64 / 1e3 / count as f64,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
        .args(["--at", "2026-01-01T00:00:00Z", "batch"])
        .arg(&bundles)
        .arg("--nonces")
        .arg(fleet.path().join("nonces.txt"))
        .arg("--json")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let cpu = children_cpu_seconds();
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary = &summary["summary"];
    assert_eq!(summary["bundles"], count);
    assert_eq!(
        summary["rejected_by_first_failing_check"]["tpm.qualifying_data"], count,
        "every bundle runs every check and fails only where recorded evidence must: {summary}"
    );
    println!(
        "plinth-verify batch: {count} bundles in {:.2} s wall ({:.2} s inside the verifier), {:.2} ms per bundle, on {} cores",
        elapsed.as_secs_f64(),
        summary["seconds"].as_f64().unwrap_or_default(),
        elapsed.as_secs_f64() * 1e3 / count as f64,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    if let Some(cpu) = cpu {
        println!(
            "CPU time of plinth-verify (user + system): {cpu:.2} s, {:.2} ms per bundle; \
             on two otherwise idle cores that is {:.1} s for the batch",
            cpu * 1e3 / count as f64,
            cpu / 2.0
        );
    }
}

/// User + system CPU seconds of the waited-for children (/proc/self/stat
/// cutime and cstime, in clock ticks of 1/100 s as on every Linux we run), so
/// that a loaded machine's wall time can be told from the verifier's cost.
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, cutime 16 and cstime 17.
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) / 100.0)
}
