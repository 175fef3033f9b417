//! The kill -9 loop: the real `plinth-agent` runs real jobs (runc, a busybox
//! image built here) and is killed with SIGKILL at random moments, then
//! restarted, many times. In the end every submitted job must have ended in
//! the right state, every job that ran must have exactly one final receipt,
//! and the exported ledger must verify (signatures, chain, no gaps, no
//! double billing). Skips with a printed reason without root, runc or busybox.
//! The agent is restarted without any retry: a dying agent's socket must never
//! be mistaken for a live one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Node;
use plinth_attestation::receipt::{LedgerOptions, Receipt, ReceiptKind, verify_ledger};

fn submit(node: &Node, spec: &serde_json::Value) -> String {
    let file = node.path("spec.json");
    std::fs::write(&file, serde_json::to_vec(spec).unwrap()).unwrap();
    node.ctl_ok(&[
        "jobs",
        "submit",
        file.to_str().unwrap(),
        "--tenant",
        "t1",
        "--lease",
        "l1",
    ])
    .trim()
    .to_owned()
}

fn jobs(node: &Node) -> Vec<serde_json::Value> {
    serde_json::from_str(&node.ctl_ok(&["jobs", "list", "--json"])).unwrap()
}

/// A small deterministic generator (seed printed for reproduction).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn kill_9_loop_loses_no_job_and_bills_none_twice() {
    if !plinth_tests::jobs_available("the kill -9 loop") {
        return;
    }
    let node = Node::new("");
    let state = node.path("state");
    let layout = state.join("import/busybox");
    std::fs::create_dir_all(&layout).unwrap();
    plinth_tests::busybox_layout(
        node.dir.path(),
        &layout,
        &["sh", "echo", "sleep", "true", "cat"],
    )
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill -9 loop seed {seed}");
    let mut random = Lcg(seed);
    let spec = |command: &[&str]| {
        serde_json::json!({
            "format": "plinth-job/1",
            "image": {"source": "oci-layout", "path": layout},
            "command": command,
            "resources": {"memory_bytes": 67108864u64, "pids": 32, "max_duration_s": 30}
        })
    };
    let mut expected: HashMap<String, &str> = HashMap::new();
    let mut agent = node.start();
    let rounds = 8;
    for round in 0..rounds {
        for _ in 0..3 {
            let (command, outcome): (Vec<&str>, &str) = match random.next(4) {
                0 => (vec!["/bin/echo", "hello"], "succeeded"),
                1 => (vec!["/bin/sh", "-c", "sleep 0.4; echo slept"], "succeeded"),
                2 => (vec!["/bin/sh", "-c", "sleep 1.2; exit 3"], "failed"),
                _ => (vec!["/bin/sh", "-c", "exit 0"], "succeeded"),
            };
            let id = submit(&node, &spec(&command));
            expected.insert(id, outcome);
        }
        std::thread::sleep(Duration::from_millis(random.next(900)));
        agent.kill9();
        eprintln!("round {round}: agent killed");
        agent = node.start();
    }
    // Let everything finish under the last agent.
    let deadline = Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        let jobs = jobs(&node);
        let done = jobs.iter().all(|job| {
            ["succeeded", "failed", "cancelled", "timed_out"]
                .contains(&job["state"].as_str().unwrap())
        });
        if done && jobs.len() == expected.len() {
            break jobs;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(node.path("agent.log")).unwrap_or_default();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .collect();
            for job in &jobs {
                if job["state"] == "running" {
                    let dir = state.join("jobs").join(job["id"].as_str().unwrap());
                    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                        let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
                        eprintln!(
                            "{}: {}",
                            entry.path().display(),
                            content
                                .replace('\n', " ")
                                .chars()
                                .take(900)
                                .collect::<String>()
                        );
                    }
                    let ps = Command::new("ps")
                        .args(["-eo", "pid,ppid,stat,wchan:32,args"])
                        .output()
                        .unwrap();
                    for line in String::from_utf8_lossy(&ps.stdout).lines() {
                        if line.contains(job["id"].as_str().unwrap())
                            || line.contains("runc")
                            || line.contains("sh -c")
                        {
                            eprintln!("ps: {line}");
                        }
                    }
                }
            }
            panic!(
                "jobs did not finish: {jobs:#?}\nagent errors:\n{}",
                errors.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status: serde_json::Value =
        serde_json::from_slice(&node.ctl(&["status", "--json"]).stdout).unwrap();
    let node_key = status["node"]["public_key"].as_str().unwrap().to_string();
    let ledger_path = node.path("ledger.jsonl");
    let export = node.ctl(&["receipts", "export", "--out", ledger_path.to_str().unwrap()]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    agent.kill9();

    let ledger = std::fs::read(&ledger_path).unwrap();
    let summary = verify_ledger(
        &ledger,
        &LedgerOptions {
            node_key: Some(node_key),
            ..LedgerOptions::default()
        },
    )
    .unwrap_or_else(|err| panic!("ledger does not verify: {err}"));
    let mut finals: HashMap<String, usize> = HashMap::new();
    for line in ledger.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let receipt = Receipt::from_json(line).unwrap();
        if receipt.kind == ReceiptKind::Final {
            *finals.entry(receipt.job_id).or_default() += 1;
        }
    }
    for job in &jobs {
        let id = job["id"].as_str().unwrap();
        let state = job["state"].as_str().unwrap();
        let reason = job["reason"].as_str().unwrap_or("");
        let wanted = expected
            .get(id)
            .unwrap_or_else(|| panic!("unexpected job {id}"));
        // A job whose supervisor died with the agent's process group would
        // end as supervisor_lost; supervisors are detached, so every job must
        // reach its own outcome.
        assert_eq!(state, *wanted, "job {id}: {state} ({reason})");
        let started = !job["started_at_ms"].is_null();
        assert!(started, "job {id} never started: {job}");
        assert_eq!(
            finals.get(id).copied().unwrap_or(0),
            1,
            "job {id} must have exactly one final receipt"
        );
    }
    assert_eq!(summary.n_final, expected.len());
    eprintln!(
        "kill -9 loop: {} jobs over {rounds} agent kills, {} receipts verified",
        expected.len(),
        summary.n_receipts
    );
}
