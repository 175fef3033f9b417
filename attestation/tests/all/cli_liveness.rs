//! `plinth-verify liveness`: exit codes (0 verified, 1 rejected or SLA missed, 2 usage),
//! the first bad entry named, the human report and `--json`.

use std::process::Command;

use plinth_attestation::liveness::{
    Entry, EntryKind, GapCause, GapInfo, Health, LIVENESS_FORMAT, PROBE_FORMAT, ProbeAnswer,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

const T0: u64 = 1_780_000_000_000;
const MIN: u64 = 60_000;

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

/// Ten ticks, 40 minutes of an unclean outage, ten ticks; one probe answer.
fn ledger(key: &Ed25519KeyPair) -> (Vec<Entry>, ProbeAnswer) {
    let key_hex = hex::encode(key.public_key().as_ref());
    let sign = |bytes: &[u8]| -> [u8; 64] { key.sign(bytes).as_ref().try_into().unwrap() };
    let mut entries: Vec<Entry> = Vec::new();
    let mut head: Option<(u64, String)> = None;
    let mut answer = None;
    for idx in 0..20u64 {
        let restarted = idx >= 10;
        let wall_ms = T0 + idx * MIN + if restarted { 40 * MIN } else { 0 };
        let previous = entries.last();
        let mut entry = Entry {
            format: LIVENESS_FORMAT.to_owned(),
            seq: 0,
            prev_hash: String::new(),
            kind: match idx {
                0 => EntryKind::Start,
                10 => EntryKind::Gap,
                _ => EntryKind::Tick,
            },
            wall_ms,
            boot_ms: wall_ms - T0,
            boot_id: "boot".to_owned(),
            run_id: if restarted { 2 } else { 1 },
            interval_s: 60,
            health: Health::default(),
            anchors: Vec::new(),
            gap: (idx == 10).then(|| GapInfo {
                cause: GapCause::Unclean,
                previous_seq: previous.map_or(0, |p| p.seq),
                previous_wall_ms: previous.map_or(0, |p| p.wall_ms),
                length_ms: wall_ms - previous.map_or(0, |p| p.wall_ms),
            }),
            net: Vec::new(),
            node_key: key_hex.clone(),
            signature: String::new(),
        };
        if idx == 15 {
            let pending: &ProbeAnswer = answer.as_ref().unwrap();
            entry.anchors.push(plinth_attestation::liveness::Anchor {
                nonce: pending.nonce.clone(),
                head_seq: pending.head_seq,
                wall_ms: pending.wall_ms,
            });
        }
        let hash = entry
            .seal(head.as_ref().map(|(s, h)| (*s, h.as_str())), sign)
            .unwrap();
        head = Some((entry.seq, hash.clone()));
        if idx == 14 {
            let mut probe = ProbeAnswer {
                format: PROBE_FORMAT.to_owned(),
                nonce: "42".repeat(16),
                head_seq: entry.seq,
                head_hash: hash,
                wall_ms: entry.wall_ms + 1_000,
                node_key: key_hex.clone(),
                signature: String::new(),
            };
            probe.sign_with(sign).unwrap();
            answer = Some(probe);
        }
        entries.push(entry);
    }
    (entries, answer.unwrap())
}

fn lines<T: serde::Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| format!("{}\n", serde_json::to_string(item).unwrap()))
        .collect()
}

#[test]
fn plinth_verify_liveness_exit_codes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let key = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    let key_hex = hex::encode(key.public_key().as_ref());
    let (entries, answer) = ledger(&key);
    std::fs::write(dir.path().join("ledger.jsonl"), lines(&entries)).unwrap();
    std::fs::write(dir.path().join("probes.jsonl"), lines(&[answer])).unwrap();
    std::fs::write(
        dir.path().join("sla.toml"),
        "min_availability_percent = 25.0\nmax_outage_minutes = 30\n",
    )
    .unwrap();

    let (code, out, err) = run(
        &[
            "liveness",
            "ledger.jsonl",
            "--node-key",
            &key_hex,
            "--probes",
            "probes.jsonl",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("liveness: VERIFIED"), "{out}");
    assert!(out.contains("outages: 1"), "{out}");
    assert!(out.contains("for 2460 s: unclean (before seq 11)"), "{out}");
    assert!(
        out.contains("[pass] liveness.probes: 1 probe answers"),
        "{out}"
    );

    // The SLA: availability (30%) is met, the 41-minute outage is too long.
    let (code, out, _) = run(
        &["liveness", "ledger.jsonl", "--sla", "sla.toml", "--json"],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verified"], false);
    let checks = report["appraisals"][0]["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status("sla.availability").as_deref(), Some("pass"));
    assert_eq!(status("sla.max_outage").as_deref(), Some("fail"));
    assert_eq!(
        report["appraisals"][0]["claims"]["outages"][0]["cause"],
        "unclean"
    );

    // An edited entry: rejected, the entry named.
    let mut edited = entries.clone();
    edited[12].health.running_jobs = 5;
    std::fs::write(dir.path().join("edited.jsonl"), lines(&edited)).unwrap();
    let (code, out, _) = run(&["liveness", "edited.jsonl", "--json"], dir.path());
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["appraisals"][0]["claims"]["first_bad_seq"], 13);

    // Usage errors: exit 2 with the file or value named.
    let (code, _, err) = run(&["liveness", "missing.jsonl"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("missing.jsonl"), "{err}");
    let (code, _, err) = run(
        &["liveness", "ledger.jsonl", "--from", "yesterday"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("--from 'yesterday'"), "{err}");
    std::fs::write(dir.path().join("typo.toml"), "max_outage_minuts = 3\n").unwrap();
    let (code, _, err) = run(
        &["liveness", "ledger.jsonl", "--sla", "typo.toml"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("max_outage_minuts"), "{err}");
    std::fs::write(dir.path().join("bad-probes.jsonl"), "{}\n").unwrap();
    let (code, _, err) = run(
        &["liveness", "ledger.jsonl", "--probes", "bad-probes.jsonl"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("bad-probes.jsonl:1"), "{err}");
}
