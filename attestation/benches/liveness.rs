//! `plinth-verify liveness` on 30 days of 1-minute entries (43,200) plus 1,000 probe
//! answers, and the ledger's cost per entry (canonical form, signature, hash) and per
//! day (bytes). Numbers are recorded in docs/liveness.md.
// criterion's macros generate undocumented pub fns.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plinth_attestation::liveness::verify::{VerifyOptions, verify};
use plinth_attestation::liveness::{
    Anchor, Entry, EntryKind, GpuSummary, Health, LIVENESS_FORMAT, PROBE_FORMAT, PluginHash,
    ProbeAnswer,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

const N_ENTRIES: u64 = 43_200;
const N_PROBES: u64 = 1_000;
const T0: u64 = 1_780_000_000_000;

fn template(key_hex: &str) -> Entry {
    Entry {
        format: LIVENESS_FORMAT.to_owned(),
        seq: 0,
        prev_hash: String::new(),
        kind: EntryKind::Tick,
        wall_ms: T0,
        boot_ms: 1_000,
        boot_id: "0b0b0b0b-1111-2222-3333-444444444444".to_owned(),
        run_id: 1,
        interval_s: 60,
        health: Health {
            store: "ok".to_owned(),
            gpus: GpuSummary {
                total: 8,
                healthy: 8,
                drained: 0,
            },
            running_jobs: 3,
            plugins: vec![PluginHash {
                kind: "pricing".to_owned(),
                name: "spot-pricing".to_owned(),
                sha256: "ab".repeat(32),
            }],
        },
        anchors: Vec::new(),
        gap: None,
        net: Vec::new(),
        node_key: key_hex.to_owned(),
        signature: String::new(),
    }
}

/// The ledger (JSON lines) and the probe answers, written as the agent writes them.
fn month(key: &Ed25519KeyPair) -> (Vec<u8>, Vec<(usize, ProbeAnswer)>) {
    let key_hex = hex::encode(key.public_key().as_ref());
    let sign = |bytes: &[u8]| -> [u8; 64] { key.sign(bytes).as_ref().try_into().unwrap() };
    let probe_every = N_ENTRIES / N_PROBES;
    let mut text = Vec::new();
    let mut probes = Vec::new();
    let mut head: Option<(u64, String)> = None;
    let mut pending: Option<Anchor> = None;
    for idx in 0..N_ENTRIES {
        let mut entry = template(&key_hex);
        entry.kind = if idx == 0 {
            EntryKind::Start
        } else {
            EntryKind::Tick
        };
        entry.wall_ms = T0 + idx * 60_000;
        entry.boot_ms = 1_000 + idx * 60_000;
        entry.anchors.extend(pending.take());
        let hash = entry
            .seal(head.as_ref().map(|(s, h)| (*s, h.as_str())), sign)
            .unwrap();
        text.extend_from_slice(&serde_json::to_vec(&entry).unwrap());
        text.push(b'\n');
        head = Some((entry.seq, hash.clone()));
        if idx % probe_every == probe_every / 2 && (probes.len() as u64) < N_PROBES {
            let mut answer = ProbeAnswer {
                format: PROBE_FORMAT.to_owned(),
                nonce: format!("{:064x}", idx),
                head_seq: entry.seq,
                head_hash: hash,
                wall_ms: entry.wall_ms + 20_000,
                node_key: key_hex.clone(),
                signature: String::new(),
            };
            answer.sign_with(sign).unwrap();
            pending = Some(Anchor {
                nonce: answer.nonce.clone(),
                head_seq: answer.head_seq,
                wall_ms: answer.wall_ms,
            });
            probes.push((probes.len() + 1, answer));
        }
    }
    (text, probes)
}

/// CPU time of every thread of this process so far, in seconds (the sum of the threads'
/// run time in /proc/self/task/*/schedstat; rayon's workers live on between calls).
fn process_cpu_s() -> f64 {
    let mut total_ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
        total_ns += stat
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    total_ns as f64 / 1e9
}

fn bench(c: &mut Criterion) {
    let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let (text, probes) = month(&key);
    assert_eq!(probes.len() as u64, N_PROBES);
    let options = VerifyOptions {
        node_key: Some(hex::encode(key.public_key().as_ref())),
        ..VerifyOptions::default()
    };
    let report = verify(&text, &probes, &options).unwrap();
    assert_eq!(report.n_entries as u64, N_ENTRIES);
    let bytes_per_entry = text.len() as u64 / N_ENTRIES;
    eprintln!(
        "liveness ledger: {} bytes for {N_ENTRIES} entries ({bytes_per_entry} bytes per entry, {} KiB per day at 1-minute entries)",
        text.len(),
        bytes_per_entry * 1440 / 1024
    );

    // The CPU time of one verification, all threads together: unlike the wall clock, it
    // does not count the time the threads waited for a core on a busy host.
    const CPU_RUNS: u32 = 3;
    let cpu_before = process_cpu_s();
    for _ in 0..CPU_RUNS {
        verify(&text, &probes, &options).unwrap();
    }
    eprintln!(
        "liveness verify: {:.2} CPU-seconds per verification of {N_ENTRIES} entries and {N_PROBES} probe answers ({} threads)",
        (process_cpu_s() - cpu_before) / f64::from(CPU_RUNS),
        rayon::current_num_threads()
    );

    let mut group = c.benchmark_group("liveness");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(N_ENTRIES));
    group.bench_function("verify_30_days_1000_probes", |b| {
        b.iter(|| verify(&text, &probes, &options).unwrap())
    });
    group.finish();

    let key_hex = hex::encode(key.public_key().as_ref());
    let sign = |bytes: &[u8]| -> [u8; 64] { key.sign(bytes).as_ref().try_into().unwrap() };
    let previous = "cd".repeat(32);
    let mut group = c.benchmark_group("liveness_entry");
    group.bench_function("seal_and_serialise", |b| {
        b.iter(|| {
            let mut entry = template(&key_hex);
            let hash = entry.seal(Some((41, previous.as_str())), sign).unwrap();
            (hash, serde_json::to_vec(&entry).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
