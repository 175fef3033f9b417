//! End-to-end: a real agent's metrics listener scraped before and after an attestation
//! and admin API calls, the values asserted to move, the text checked by `promtool
//! check metrics`, and every metric the shipped Grafana dashboard queries found in the
//! scrape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Agent, Node};

const NONCE: &str = "00112233445566778899aabbccddeeff";

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start() -> (Node, Agent, String) {
    let node = Node::new("");
    let agent = node.start_with_env(&[
        // No TPM: collection still answers, with the piece absent and its reason.
        ("PLINTH_ATTESTATION_TPM_TCTI", "device:/nonexistent/tpmrm0"),
        ("PLINTH_METRICS_LISTEN", "127.0.0.1:0"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = strip_ansi(&std::fs::read_to_string(node.path("agent.log")).unwrap_or_default());
        let address = log
            .lines()
            .filter(|line| line.contains("metrics listener serving"))
            .find_map(|line| line.split("address=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned());
        if let Some(address) = address {
            return (node, agent, address);
        }
        assert!(Instant::now() < deadline, "no metrics listener: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` over plain HTTP/1.0; the status line and the body.
fn get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(address: &str) -> String {
    let (status, body) = get(address, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    body
}

/// The value of the sample line `series` (name and labels exactly), or 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

fn promtool_check(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        println!(
            "skipping promtool check metrics: promtool is not installed (Debian package prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_scrape_moves_with_the_agent_and_passes_promtool() {
    let (node, agent, address) = start();
    let before = scrape(&address);
    let evidence = "plinth_attestation_requests_total{operation=\"evidence\"}";
    let failed = "plinth_attestation_failures_total{operation=\"evidence\"}";
    assert_eq!(value(&before, evidence), 0.0, "{before}");
    assert_eq!(value(&before, "plinth_agent_info{version=\"0.1.0\"}"), 1.0);

    node.ctl_ok(&[
        "attest",
        "--nonce",
        NONCE,
        "-o",
        node.path("bundle.json").to_str().unwrap(),
    ]);
    let refused = node.ctl(&["attest", "--nonce", "0011"]);
    assert!(!refused.status.success());
    node.ctl_ok(&["status"]);

    let after = scrape(&address);
    assert_eq!(value(&after, evidence), 2.0, "{after}");
    assert_eq!(value(&after, failed), 1.0, "{after}");
    let route = |status: u16| {
        format!(
            "plinth_api_requests_total{{api=\"admin\",method=\"POST\",route=\"/v1/attestation\",status=\"{status}\"}}"
        )
    };
    assert_eq!(value(&after, &route(200)), 1.0, "{after}");
    assert_eq!(value(&after, &route(400)), 1.0, "{after}");
    // The first scrape was counted on the listener itself.
    assert_eq!(
        value(
            &after,
            "plinth_api_requests_total{api=\"metrics\",method=\"GET\",route=\"/metrics\",status=\"200\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(value(&after, "plinth_liveness_head_seq") >= 1.0, "{after}");
    // A path no route matches is one `unmatched` series, never the raw path.
    let (status, _) = get(&address, "/metrics/../secret/123");
    assert!(status.contains(" 404 "), "{status}");
    let later = scrape(&address);
    assert!(!later.contains("secret"), "{later}");
    promtool_check(&later);

    // The admin socket serves the same families.
    let admin = node.ctl_ok(&["metrics"]);
    for line in later.lines().filter(|line| line.starts_with("# TYPE ")) {
        assert!(admin.contains(line), "{line} missing from GET /v1/metrics");
    }
    drop(agent);
}

/// Every `plinth_*` metric named in `expr` (a panel's query or a variable's definition), with a histogram's `_bucket`, `_sum` and
/// `_count` suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("plinth_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(expr)) => {
                        out.push(expr.clone())
                    }
                    _ => exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_scraped() {
    let path = plinth_tests::repo_root().join("packaging/grafana/plinth-fleet.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 7,
        "{} queries in {}",
        queries.len(),
        path.display()
    );
    let (_node, agent, address) = start();
    scrape(&address);
    let text = scrape(&address);
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} queries no plinth_ metric");
        for name in names {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "the dashboard queries {name} ({expr}), which a real scrape does not have"
            );
        }
    }
    drop(agent);
}
