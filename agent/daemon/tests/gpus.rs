//! GPUs through the real agent on this host: the daemon selects the real NVML backend
//! (never the test double), so on a host without the NVIDIA driver it runs CPU-only and
//! says so in `plinthctl gpus`, `plinthctl status` and its log; the capacity challenge
//! runs end to end on the CPU prover (`plinthctl challenge run`, both rounds over the
//! admin API) and its transcript verifies offline; malformed challenge and drain
//! requests get 4xx answers naming the field. On a host with GPUs the same test checks
//! the inventory instead of the CPU-only line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Node;
use hyper::Method;
use hyper::StatusCode;
use plinth_agent::client::{AdminClient, ClientError};
use plinth_attestation::challenge::{self, ChallengePolicy, Transcript};

fn post(client: &AdminClient, path: &str, body: &str) -> Result<String, (StatusCode, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(client.request(Method::POST, path, Some(body.as_bytes().to_vec())))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|err| match err {
            ClientError::Api {
                status, message, ..
            } => (status, message),
            other => panic!("{path}: {other}"),
        })
}

#[test]
fn gpus_status_challenge_and_malformed_requests_through_the_agent() {
    let node = Node::new("");
    let agent = node.start();
    let report: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["gpus", "--json"])).unwrap();
    let status = node.ctl_ok(&["status"]);
    let cpu_only = report["cpu_only"].as_str().map(str::to_owned);
    match &cpu_only {
        Some(reason) => {
            println!("this host has no usable GPU: {reason}");
            assert_eq!(report["summary"]["total"], 0);
            assert!(status.contains("CPU-only"), "{status}");
            let log = agent.log_tail();
            assert!(log.contains("CPU-only"), "{log}");
            let text = node.ctl_ok(&["gpus"]);
            assert!(text.contains("CPU-only"), "{text}");
        }
        None => {
            println!("GPUs: {report}");
            assert!(report["summary"]["total"].as_u64().unwrap() > 0);
            assert!(
                report["gpus"][0]["inventory"]["uuid"]
                    .as_str()
                    .unwrap()
                    .starts_with("GPU-")
            );
        }
    }

    // The challenge end to end on the CPU prover; the transcript verifies offline.
    let out = node.path("transcript.json");
    let printed = node.ctl_ok(&[
        "challenge",
        "run",
        "--n",
        "128",
        "--device",
        "cpu",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(printed.contains("challenge.freivalds"), "{printed}");
    let transcript = Transcript::from_json(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(transcript.commitment.prover.device, "cpu");
    let lenient = ChallengePolicy {
        slack_ms: 600_000,
        ..ChallengePolicy::default()
    };
    let appraisal = challenge::verify(&transcript, &lenient);
    assert!(appraisal.verified(), "{appraisal:?}");

    // Malformed requests: 4xx, the field named.
    let client = AdminClient::new(&node.socket());
    let seed = "00".repeat(32);
    let cases: Vec<(String, &str)> = vec![
        (
            format!(r#"{{"seed":"{seed}","n":100,"deadline_ms":1000,"r_commitment":"{seed}"}}"#),
            "n",
        ),
        (
            format!(r#"{{"seed":"{seed}","n":64,"deadline_ms":0,"r_commitment":"{seed}"}}"#),
            "deadline_ms",
        ),
        (
            format!(r#"{{"seed":"xyz","n":64,"deadline_ms":10,"r_commitment":"{seed}"}}"#),
            "seed",
        ),
        (
            format!(r#"{{"seed":"{seed}","n":64,"deadline_ms":10}}"#),
            "r_commitment",
        ),
        (
            format!(
                r#"{{"seed":"{seed}","n":64,"deadline_ms":10,"r_commitment":"{seed}","device":"tpu:0"}}"#
            ),
            "device",
        ),
        (
            format!(
                r#"{{"seed":"{seed}","n":64,"deadline_ms":10,"r_commitment":"{seed}","extra":1}}"#
            ),
            "extra",
        ),
        (
            format!(r#"{{"seed":"{seed}","n":1048576,"deadline_ms":10,"r_commitment":"{seed}"}}"#),
            "n",
        ),
    ];
    for (body, field) in cases {
        let (status, message) = post(&client, "/v1/challenges", &body).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {message}");
        assert!(
            message.contains(field),
            "{body}: {message} should name {field}"
        );
    }
    if cpu_only.is_some() {
        let body = format!(
            r#"{{"seed":"{seed}","n":64,"deadline_ms":10,"r_commitment":"{seed}","device":"gpu:0"}}"#
        );
        let (status, message) = post(&client, "/v1/challenges", &body).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(
            message.contains("device") && message.contains("CPU-only"),
            "{message}"
        );
    }
    // Round 2: an unknown id is 404; a malformed opening names the field and keeps the
    // challenge open.
    let (status, _) = post(
        &client,
        "/v1/challenges/ch-nope/open",
        &format!(r#"{{"r_seed":"{seed}","rows":[1]}}"#),
    )
    .unwrap_err();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = format!(r#"{{"seed":"{seed}","n":64,"deadline_ms":60000,"r_commitment":"{seed}"}}"#);
    let commitment: serde_json::Value =
        serde_json::from_str(&post(&client, "/v1/challenges", &body).unwrap()).unwrap();
    let id = commitment["id"].as_str().unwrap();
    let open = format!("/v1/challenges/{id}/open");
    for (body, field) in [
        (format!(r#"{{"r_seed":"{seed}","rows":[64]}}"#), "rows[0]"),
        (format!(r#"{{"r_seed":"{seed}","rows":[]}}"#), "rows"),
        (r#"{"rows":[1]}"#.to_owned(), "r_seed"),
    ] {
        let (status, message) = post(&client, &open, &body).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {message}");
        assert!(
            message.contains(field),
            "{body}: {message} should name {field}"
        );
    }
    let answer: serde_json::Value = serde_json::from_str(
        &post(
            &client,
            &open,
            &format!(r#"{{"r_seed":"{seed}","rows":[1,2]}}"#),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(answer["cr"].as_array().unwrap().len(), 64);

    // Drain requests: a missing reason is 400, an unknown GPU 404.
    let (status, message) = post(&client, "/v1/gpus/0/drain", "{}").unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    assert!(message.contains("reason"), "{message}");
    let (status, message) = post(&client, "/v1/gpus/x/drain", r#"{"reason":"r"}"#).unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    if cpu_only.is_some() {
        let output = node.ctl(&["gpus", "drain", "0", "--reason", "test"]);
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("no GPU with index 0"));
        let (status, message) = post(&client, "/v1/gpus/0/burn-in", "{}").unwrap_err();
        assert_eq!(status, StatusCode::NOT_FOUND, "{message}");
    }
}
