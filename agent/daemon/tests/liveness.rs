//! The liveness ledger of a real agent: SIGKILL and restart show one `unclean` outage of
//! the right length, a clean stop shows `stopped`, and a checker's probe answers pin the
//! ledger (checked with the verifier behind `plinth-verify liveness`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Node;
use nix::sys::signal::Signal;
use plinth_attestation::liveness::verify::{
    LivenessReport, OutageCause, VerifyOptions, parse_probes, verify,
};
use plinth_attestation::liveness::{Entry, EntryKind, GapCause};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn node() -> Node {
    // One entry a second, so the test sees several within seconds.
    Node::new("[liveness]\ninterval_s = 1\n")
}

fn entries(ledger: &str) -> Vec<Entry> {
    ledger
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Verifies with the node key the agent wrote beside its key (`state/node.pub`); a
/// tolerance of 2 s for entries written late by a loaded machine.
fn verified(node: &Node, ledger: &str, probes: &str) -> LivenessReport {
    let node_key = std::fs::read_to_string(node.path("state/node.pub")).unwrap();
    let probes: Vec<_> = parse_probes(probes.as_bytes())
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(idx, answer)| (idx + 1, answer))
        .collect();
    let options = VerifyOptions {
        node_key: Some(node_key.trim().to_owned()),
        tolerance_ms: Some(2_000),
        ..VerifyOptions::default()
    };
    verify(ledger.as_bytes(), &probes, &options).unwrap_or_else(|err| panic!("{err}\n{ledger}"))
}

#[test]
fn sigkill_and_restart_show_one_unclean_outage_of_the_right_length() {
    let node = node();
    let agent = node.start();
    std::thread::sleep(Duration::from_millis(3_500));
    // A checker probes before the crash.
    let before = node.ctl_ok(&["liveness", "probe"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let killed_at = now_ms();
    agent.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let restarting_at = now_ms();
    let agent = node.start();
    let ready_at = now_ms();
    std::thread::sleep(Duration::from_millis(2_500));
    let after = node.ctl_ok(&["liveness", "probe"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let ledger = node.ctl_ok(&["liveness", "export"]);
    let tail = node.ctl_ok(&["liveness", "export", "--from", &ready_at.to_string()]);
    drop(agent);

    let report = verified(&node, &ledger, &format!("{before}{after}"));
    assert_eq!(report.n_probes, 2);
    assert_eq!(report.n_runs, 2, "{ledger}");
    assert_eq!(report.outages.len(), 1, "{:?}\n{ledger}", report.outages);
    let outage = &report.outages[0];
    assert_eq!(outage.cause, OutageCause::Unclean);
    // From the last entry before the kill (at most an interval and the tolerance
    // before it) to the gap entry (written before READY=1).
    assert!(
        outage.length_ms >= restarting_at - killed_at,
        "{outage:?}: killed {killed_at}, restarted {restarting_at}"
    );
    assert!(
        outage.length_ms <= ready_at - killed_at + 3_000,
        "{outage:?}: killed {killed_at}, ready {ready_at}"
    );
    let all = entries(&ledger);
    let gap = all.iter().find(|e| e.kind == EntryKind::Gap).unwrap();
    let info = gap.gap.as_ref().unwrap();
    assert_eq!(info.cause, GapCause::Unclean);
    assert_eq!(info.length_ms, outage.length_ms);
    assert_eq!(all[0].kind, EntryKind::Start);
    assert!(
        all.iter().all(|e| e.kind != EntryKind::Stop),
        "SIGKILL leaves no stop entry"
    );

    // The export is a time range.
    let tail = entries(&tail);
    assert!(!tail.is_empty() && tail.iter().all(|e| e.wall_ms >= ready_at));
    assert!(tail.len() < all.len());
}

#[test]
fn a_clean_stop_shows_stopped() {
    let node = node();
    let agent = node.start();
    std::thread::sleep(Duration::from_millis(2_500));
    agent.signal(Signal::SIGTERM);
    let (status, _) = agent.wait();
    assert!(status.success(), "{status}");
    let stopped_at = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    let agent = node.start();
    std::thread::sleep(Duration::from_millis(2_500));
    let ledger = node.ctl_ok(&["liveness", "export"]);
    drop(agent);

    let report = verified(&node, &ledger, "");
    assert_eq!(report.outages.len(), 1, "{:?}\n{ledger}", report.outages);
    assert_eq!(report.outages[0].cause, OutageCause::Stopped);
    assert!(report.outages[0].length_ms >= 3_000);
    let entries = entries(&ledger);
    let stop = entries
        .iter()
        .position(|e| e.kind == EntryKind::Stop)
        .unwrap();
    assert!(entries[stop].wall_ms <= stopped_at);
    assert_eq!(entries[stop + 1].kind, EntryKind::Gap);
    assert_eq!(
        entries[stop + 1].gap.as_ref().unwrap().cause,
        GapCause::Stopped
    );
}

#[test]
fn probes_are_checked_and_bad_ones_refused() {
    let node = node();
    let _agent = node.start();
    let bad = node.ctl(&["liveness", "probe", "--nonce", "abcd"]);
    assert!(!bad.status.success());
    assert!(
        common::stderr(&bad).contains("16 to 64 bytes"),
        "{}",
        common::stderr(&bad)
    );
    let nonce = "5a".repeat(20);
    let answer = node.ctl_ok(&["liveness", "probe", "--nonce", &nonce]);
    assert!(answer.contains(&nonce));
    let again = node.ctl(&["liveness", "probe", "--nonce", &nonce]);
    assert!(
        common::stderr(&again).contains("already answered"),
        "{}",
        common::stderr(&again)
    );
    std::thread::sleep(Duration::from_millis(2_500));
    let ledger = node.ctl_ok(&["liveness", "export"]);
    let report = verified(&node, &ledger, &answer);
    assert_eq!(report.n_probes, 1);
    assert!(
        entries(&ledger)
            .iter()
            .any(|e| e.anchors.iter().any(|a| a.nonce == nonce))
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a node once so that it creates its node key; returns the key.
fn node_key(node: &Node) -> String {
    let agent = node.start();
    let status: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["status", "--json"])).unwrap();
    drop(agent);
    status["node"]["public_key"].as_str().unwrap().to_owned()
}

fn net_config(port: u16, peers: &[(&str, u16, &str)], transfer_bytes: u64) -> String {
    let mut text = format!(
        "[liveness]\ninterval_s = 1\n[liveness.net]\nlisten = \"127.0.0.1:{port}\"\ninterval_s = 0\nsamples = 5\ntransfer_bytes = {transfer_bytes}\nrequests_per_minute = 20\n"
    );
    for (name, peer_port, key) in peers {
        text.push_str(&format!(
            "[[liveness.net.peers]]\nname = \"{name}\"\naddress = \"127.0.0.1:{peer_port}\"\nnode_key = \"{key}\"\n"
        ));
    }
    text
}

/// Two agents on loopback, each pinning the other's node key, measure each other; the
/// results reach the ledger and the metrics. A third agent whose key neither pins is
/// refused at the TLS handshake, a peer that is not configured is refused before any
/// connection, and the per-peer rate limit answers BUSY.
#[test]
fn two_agents_on_loopback_probe_each_other() {
    let a = Node::new("");
    let b = Node::new("");
    let c = Node::new("");
    let (key_a, key_b, _key_c) = (node_key(&a), node_key(&b), node_key(&c));
    let (port_a, port_b) = (free_port(), free_port());
    a.configure(&net_config(
        port_a,
        &[("b", port_b, &key_b)],
        4 * 1024 * 1024,
    ));
    b.configure(&net_config(port_b, &[("a", port_a, &key_a)], 1024 * 1024));
    // C pins A's key, but A does not pin C's.
    c.configure(&net_config(free_port(), &[("a", port_a, &key_a)], 0));
    let _agent_a = a.start();
    let _agent_b = b.start();
    let _agent_c = c.start();

    let answer: serde_json::Value =
        serde_json::from_str(&a.ctl_ok(&["net", "probe", "b", "--json"])).unwrap();
    let sample = &answer["results"][0]["sample"];
    assert_eq!(sample["peer"], "b", "{answer}");
    assert_eq!(sample["samples"], 5);
    let min = sample["rtt_min_us"].as_u64().unwrap();
    let median = sample["rtt_median_us"].as_u64().unwrap();
    let p99 = sample["rtt_p99_us"].as_u64().unwrap();
    assert!(0 < min && min <= median && median <= p99, "{sample}");
    assert!(
        sample["throughput_bytes_per_s"].as_u64().unwrap() > 0,
        "{sample}"
    );
    let text = b.ctl_ok(&["net", "probe", "a"]);
    assert!(text.starts_with("a: rtt min"), "{text}");

    let metrics = a.ctl_ok(&["metrics"]);
    assert!(
        metrics.contains("plinth_net_rtt_seconds{peer=\"b\",quantile=\"0.5\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("plinth_net_throughput_bytes_per_second{peer=\"b\"}"));
    assert!(metrics.contains("plinth_liveness_head_seq "));

    let refused = c.ctl(&["net", "probe", "a"]);
    assert!(!refused.status.success());
    assert!(
        common::stderr(&refused).contains("a: "),
        "{}",
        common::stderr(&refused)
    );
    let unknown = a.ctl(&["net", "probe", "nosuch"]);
    assert!(
        common::stderr(&unknown).contains("not in [liveness.net.peers]"),
        "{}",
        common::stderr(&unknown)
    );

    // 5 pings + 1 transfer per probe; 20 requests a minute: the fourth probe is refused.
    let mut busy = false;
    for _ in 0..3 {
        let out = a.ctl(&["net", "probe", "b"]);
        busy |= common::stderr(&out).contains("BUSY");
    }
    assert!(busy, "the rate limit never answered BUSY");

    std::thread::sleep(Duration::from_millis(2_500));
    let ledger = a.ctl_ok(&["liveness", "export"]);
    let last = entries(&ledger).pop().unwrap();
    assert!(last.net.iter().any(|s| s.peer == "b"), "{last:?}");
}
