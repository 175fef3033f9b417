//! The network API end to end over real mutual TLS against a real agent: the node
//! certificate carries the node key; unauthenticated clients get 401, clients outside
//! their role 403, malformed bodies 400/422 naming the field, oversized ones 413, a
//! client over its rate 429; quotes priced by a real pricing plugin and signed;
//! leases checked (foreign, forged, foreign-node, expired, replayed quotes refused) and
//! admitted by a real scheduling plugin whose refusals, traps and made-up GPUs the host
//! refuses or contains; the leased busybox job runs under runc, its logs stream, its
//! receipts carry the quote id and the plugin's hash and verify; the reporting plugin
//! reports; the checker attests (swtpm) and probes the liveness ledger; the served
//! OpenAPI document is the repository's. Skips with a printed reason without root/runc
//! or the wasm32-wasip2 target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Node;
use hyper::{Method, StatusCode};
use plinth_agent::client::{AdminClient, ClientError};
use plinth_agent::identity::NodeIdentity;
use plinth_agent::netapi::quotes::SignedQuote;
use plinth_agent::remote::{ClientIdentity, RemoteTarget};

struct Remote {
    runtime: tokio::runtime::Runtime,
    client: AdminClient,
}

impl Remote {
    fn new(url: &str, identity: Option<&ClientIdentity>, node_key: Option<&str>) -> Remote {
        Remote {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: AdminClient::remote(RemoteTarget::new(url, identity, node_key).unwrap()),
        }
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, (StatusCode, String)> {
        self.runtime
            .block_on(
                self.client
                    .request(method, path, body.map(|b| b.as_bytes().to_vec())),
            )
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|err| match err {
                ClientError::Api {
                    status, message, ..
                } => (status, message),
                other => (
                    StatusCode::from_u16(599).unwrap(),
                    plinth_agent::error_chain(&other),
                ),
            })
    }

    fn ok(&self, method: Method, path: &str, body: Option<&str>) -> serde_json::Value {
        let text = self
            .call(method.clone(), path, body)
            .unwrap_or_else(|(status, message)| panic!("{method} {path}: {status}: {message}"));
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }

    fn refused(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, String) {
        match self.call(method.clone(), path, body) {
            Ok(text) => panic!("{method} {path} was accepted: {text}"),
            Err(refusal) => refusal,
        }
    }
}

/// No answer of the network API, counted by the metrics middleware, was a 5xx.
fn assert_no_server_error(metrics: &str) {
    for line in metrics
        .lines()
        .filter(|line| line.starts_with("plinth_api_requests_total{api=\"network\""))
    {
        assert!(!line.contains("status=\"5"), "{line}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sign_plugin(node: &Node, wasm: &Path, name: &str, kind: &str, key: &Path) -> PathBuf {
    let manifest = node.path(&format!("{name}.toml"));
    std::fs::write(
        &manifest,
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\nwit = \"plinth:policy@0.1.2\"\nwasm_sha256 = \"\"\n"),
    )
    .unwrap();
    let package = node.path(&format!("{name}.plinthpkg"));
    node.ctl_ok(&[
        "plugin",
        "sign",
        "--manifest",
        manifest.to_str().unwrap(),
        "--wasm",
        wasm.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-o",
        package.to_str().unwrap(),
    ]);
    package
}

fn quote_body(client: &str, quote_id: &str, gpus: u32) -> String {
    serde_json::json!({
        "client_id": client,
        "quote_id": quote_id,
        "request": {"gpu_count": gpus, "duration_s": 60}
    })
    .to_string()
}

fn job_spec(layout: &Path, gpus: u32) -> serde_json::Value {
    serde_json::json!({
        "format": "plinth-job/1",
        "image": {"source": "oci-layout", "path": layout},
        "command": ["/bin/sh", "-c", "echo hello from the lease; sleep 1; echo done"],
        "resources": {"memory_bytes": 67108864u64, "max_duration_s": 60},
        "gpus": {"count": gpus}
    })
}

fn lease_body(lease_id: &str, quote: &serde_json::Value, spec: &serde_json::Value) -> String {
    serde_json::json!({"lease_id": lease_id, "quote": quote, "spec": spec}).to_string()
}

#[test]
fn network_api_end_to_end_over_mutual_tls() {
    if !plinth_tests::jobs_available("the network API test") {
        return;
    }
    let Some(plugins) = plinth_tests::example_plugins().unwrap() else {
        return;
    };
    let identities: Vec<(&str, &str, ClientIdentity)> = [
        ("market-a", "market"),
        ("market-b", "market"),
        ("checker-1", "checker"),
        ("ops", "admin"),
        ("flood", "market"),
    ]
    .into_iter()
    .map(|(name, role)| (name, role, ClientIdentity::generate(name).unwrap()))
    .collect();
    let stranger = ClientIdentity::generate("stranger").unwrap();
    let port = free_port();
    let mut clients = String::new();
    for (name, role, identity) in &identities {
        clients.push_str(&format!(
            "[[api.clients]]\nname = \"{name}\"\nrole = \"{role}\"\ncert_sha256 = \"{}\"\n",
            identity.spki_sha256()
        ));
    }
    let node = Node::new("");
    let key = node.path("author.key");
    let author = node
        .ctl_ok(&["plugin", "keygen", key.to_str().unwrap()])
        .trim()
        .to_owned();
    node.configure(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 8192\nrate_per_second = 20\nrate_burst = 40\nquote_ttl_seconds = 4\n{clients}\
         [plugins]\ntrusted_keys = [\"{author}\"]\n[jobs]\nreceipt_interval_seconds = 1\n"
    ));
    let plugin_dir = node.path("state/plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    for (wasm, name, kind) in [
        ("plinth_hostile_misbehave", "fixed-pricing", "pricing"),
        (
            "plinth_hostile_bad_scheduler",
            "bad-scheduler",
            "scheduling",
        ),
        ("plinth_example_reporting", "example-reporting", "reporting"),
    ] {
        let package = sign_plugin(
            &node,
            &plugins.join(format!("{wasm}.wasm")),
            name,
            kind,
            &key,
        );
        std::fs::copy(&package, plugin_dir.join(format!("{kind}.plinthpkg"))).unwrap();
    }
    let tpm = plinth_tests::swtpm::available("network API attestation")
        .then(|| plinth_tests::swtpm::Swtpm::start().unwrap());
    let tcti = tpm.as_ref().map(|tpm| tpm.tcti());
    let env: Vec<(&str, &str)> = tcti
        .iter()
        .map(|tcti| ("PLINTH_ATTESTATION_TPM_TCTI", tcti.as_str()))
        .collect();
    let layout = node.path("state/import/busybox");
    std::fs::create_dir_all(&layout).unwrap();
    plinth_tests::busybox_layout(node.dir.path(), &layout, &["sh", "sleep", "echo"]).unwrap();
    let _agent = node.start_with_env(&env);
    let status: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["status", "--json"])).unwrap();
    let node_key = status["node"]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        status["network_api"]["listen"],
        format!("127.0.0.1:{port}"),
        "{status}"
    );
    let url = format!("https://127.0.0.1:{port}");
    let who = |name: &str| {
        let identity = &identities.iter().find(|(n, _, _)| *n == name).unwrap().2;
        Remote::new(&url, Some(identity), Some(&node_key))
    };
    let (market_a, market_b, checker, ops) = (
        who("market-a"),
        who("market-b"),
        who("checker-1"),
        who("ops"),
    );

    // The certificate carries the node key: pinning another key fails the handshake.
    let wrong = Remote::new(&url, Some(&identities[0].2), Some(&"ab".repeat(32)));
    let (status_code, message) = wrong.refused(Method::GET, "/v1/openapi.json", None);
    assert_eq!(status_code.as_u16(), 599, "{message}");
    assert!(message.contains("node key"), "{message}");
    let unpinned = Remote::new(&url, Some(&identities[0].2), None);
    unpinned.ok(Method::GET, "/v1/openapi.json", None);
    assert_eq!(
        unpinned
            .client
            .remote_target()
            .unwrap()
            .node_key()
            .as_deref(),
        Some(node_key.as_str())
    );

    // The served document is the repository's.
    let served = market_a
        .call(Method::GET, "/v1/openapi.json", None)
        .unwrap();
    let stored =
        std::fs::read_to_string(plinth_tests::repo_root().join("docs/openapi.json")).unwrap();
    assert_eq!(served, stored);

    // 401: no certificate, or one that is not pinned; 403: outside the role.
    for remote in [
        Remote::new(&url, None, Some(&node_key)),
        Remote::new(&url, Some(&stranger), Some(&node_key)),
    ] {
        let (code, message) = remote.refused(Method::GET, "/v1/openapi.json", None);
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{message}");
    }
    for (remote, method, path) in [
        (&market_a, Method::GET, "/v1/status"),
        (&market_a, Method::POST, "/v1/attestation"),
        (&market_a, Method::GET, "/v1/jobs"),
        (&checker, Method::POST, "/v1/quotes"),
        (&checker, Method::GET, "/v1/receipts"),
    ] {
        let (code, message) = remote.refused(method.clone(), path, Some("{}"));
        assert_eq!(code, StatusCode::FORBIDDEN, "{method} {path}: {message}");
        assert!(message.contains("may not call"), "{message}");
    }
    assert_eq!(
        ops.ok(Method::GET, "/v1/status", None)["node"]["public_key"],
        node_key.as_str()
    );

    // Malformed bodies: 400 not JSON, 422 naming the field, 413 too large.
    for (body, code, needle) in [
        ("{not json", StatusCode::BAD_REQUEST, "not JSON"),
        (
            r#"{"client_id":"market-a","quote_id":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request",
        ),
        (
            r#"{"client_id":"market-a","quote_id":"x","request":{"gpu_count":"one","duration_s":1}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.gpu_count",
        ),
        (
            r#"{"client_id":"market-a","quote_id":"x","request":{"gpu_count":1,"duration_s":0}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.duration_s",
        ),
        (
            r#"{"client_id":"market-a","quote_id":"a b","request":{"gpu_count":1,"duration_s":5}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "quote_id",
        ),
        (
            r#"{"client_id":"market-a","quote_id":"x","extra":1,"request":{"gpu_count":1,"duration_s":5}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "extra",
        ),
        (
            r#"{"client_id":"market-b","quote_id":"x","request":{"gpu_count":1,"duration_s":5}}"#,
            StatusCode::FORBIDDEN,
            "client_id",
        ),
    ] {
        let (status_code, message) = market_a.refused(Method::POST, "/v1/quotes", Some(body));
        assert_eq!(status_code, code, "{body}: {message}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let huge = format!(
        r#"{{"client_id":"market-a","quote_id":"x","pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_eq!(
        market_a.refused(Method::POST, "/v1/quotes", Some(&huge)).0,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // A quote, priced by the plugin and signed; the same request answers the same quote.
    let quote = market_a.ok(
        Method::POST,
        "/v1/quotes",
        Some(&quote_body("market-a", "ok.1", 0)),
    );
    let signed: SignedQuote = serde_json::from_value(quote.clone()).unwrap();
    signed
        .check(&node_key, "market-a", signed.issued_at_ms)
        .unwrap();
    assert_eq!(signed.pricing.source, "plugin", "{quote}");
    assert_eq!(signed.pricing.name.as_deref(), Some("fixed-pricing"));
    let wasm_sha256 = hex::encode(common::sha256_file(
        &plugins.join("plinth_hostile_misbehave.wasm"),
    ));
    assert_eq!(signed.pricing.sha256, wasm_sha256);
    assert_eq!(
        market_a.ok(
            Method::POST,
            "/v1/quotes",
            Some(&quote_body("market-a", "ok.1", 0))
        ),
        quote
    );
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/quotes",
        Some(&quote_body("market-a", "ok.1", 2)),
    );
    assert_eq!(code, StatusCode::CONFLICT, "{message}");

    // Leases: refused for another client's, a forged, a foreign node's quote.
    let dir = tempfile::tempdir().unwrap();
    let spec = job_spec(&layout, 0);
    let (code, message) = market_b.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("l0", &quote, &spec)),
    );
    assert_eq!(code, StatusCode::FORBIDDEN, "{message}");
    let mut forged = quote.clone();
    forged["offer"]["gpu_hour_micros"] = serde_json::json!(1);
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("l0", &forged, &spec)),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(message.contains("quote.signature"), "{message}");
    let other = NodeIdentity::create(&dir.path().join("other.key")).unwrap();
    let mut foreign: SignedQuote = signed.clone();
    foreign.node_key = other.public_key_hex();
    foreign.sign(&other).unwrap();
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body(
            "l0",
            &serde_json::to_value(&foreign).unwrap(),
            &spec,
        )),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(message.contains("quote.node_key"), "{message}");
    let mut wrong_count = spec.clone();
    wrong_count["gpus"]["count"] = serde_json::json!(1);
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("l0", &quote, &wrong_count)),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(message.contains("spec.gpus.count"), "{message}");

    // The lease that works; replaying it answers the same; reusing its quote is 409.
    let lease = market_a.ok(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("lease-1", &quote, &spec)),
    );
    assert_eq!(lease["scheduled_by"]["source"], "plugin", "{lease}");
    assert_eq!(lease["scheduled_by"]["name"], "bad-scheduler", "{lease}");
    let job_id = lease["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        market_a.ok(
            Method::POST,
            "/v1/leases",
            Some(&lease_body("lease-1", &quote, &spec))
        ),
        lease
    );
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("lease-2", &quote, &spec)),
    );
    assert_eq!(code, StatusCode::CONFLICT, "{message}");
    assert!(message.contains("already used"), "{message}");

    // The scheduling plugin refuses, traps, or makes up GPUs: the host says so, contains
    // the trap (the built-in policy answers) and never trusts the made-up assignment.
    let lease_with = |quote_id: &str, gpus: u32| {
        let quote = market_a.ok(
            Method::POST,
            "/v1/quotes",
            Some(&quote_body("market-a", quote_id, gpus)),
        );
        market_a.call(
            Method::POST,
            "/v1/leases",
            Some(&lease_body(
                &format!("lease-{quote_id}"),
                &quote,
                &job_spec(&layout, gpus),
            )),
        )
    };
    let (code, message) = lease_with("reject.1", 0).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT, "{message}");
    assert!(message.contains("rejected"), "{message}");
    let (code, message) = lease_with("ghost.1", 1).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT, "{message}");
    assert!(message.contains("does not exist"), "{message}");
    let (code, message) = lease_with("twice.1", 2).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT, "{message}");
    let trapped: serde_json::Value =
        serde_json::from_str(&lease_with("trap.1", 0).unwrap()).unwrap();
    assert_eq!(trapped["scheduled_by"]["source"], "built-in", "{trapped}");
    assert!(
        trapped["scheduled_by"]["plugin_error"].is_string(),
        "{trapped}"
    );

    // An expired quote.
    let late = market_a.ok(
        Method::POST,
        "/v1/quotes",
        Some(&quote_body("market-a", "late.1", 0)),
    );
    std::thread::sleep(Duration::from_millis(4_100));
    let (code, message) = market_a.refused(
        Method::POST,
        "/v1/leases",
        Some(&lease_body("lease-late", &late, &spec)),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(message.contains("quote.expires_at_ms"), "{message}");

    // The job: its owner sees it, another market client does not; its log streams.
    let path = format!("/v1/jobs/{job_id}");
    assert_eq!(
        market_b.refused(Method::GET, &path, None).0,
        StatusCode::NOT_FOUND
    );
    let followed = market_a
        .call(Method::GET, &format!("{path}/logs?follow=true"), None)
        .unwrap();
    assert!(
        followed.contains("hello from the lease") && followed.contains("done"),
        "{followed:?}: {}",
        market_a.ok(Method::GET, &path, None)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = market_a.ok(Method::GET, &path, None);
        if job["state"] == "succeeded" && job["billed_until_ms"].is_u64() {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(job["tenant"], "market-a");
    assert_eq!(
        market_a.refused(Method::DELETE, &path, None).0,
        StatusCode::CONFLICT
    );

    // Receipts: the lease's carry its quote id and the pricing plugin's hash.
    let deadline = Instant::now() + Duration::from_secs(30);
    let receipts = loop {
        let text = market_a.call(Method::GET, "/v1/receipts", None).unwrap();
        let receipts: Vec<plinth_attestation::receipt::Receipt> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if receipts.iter().any(|r| {
            r.job_id == job_id && r.kind == plinth_attestation::receipt::ReceiptKind::Final
        }) {
            break receipts;
        }
        assert!(Instant::now() < deadline, "no final receipt: {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    for receipt in receipts.iter().filter(|r| r.job_id == job_id) {
        assert_eq!(receipt.quote_id.as_deref(), Some("ok.1"));
        assert_eq!(receipt.pricing_policy_sha256, wasm_sha256);
        assert_eq!(receipt.tenant, "market-a");
        assert_eq!(receipt.node_key, node_key);
        receipt.verify_signature().unwrap();
    }
    let first = receipts[0].seq;
    let after = market_a
        .call(Method::GET, &format!("/v1/receipts?after={first}"), None)
        .unwrap();
    assert_eq!(after.lines().count(), receipts.len() - 1);
    assert!(
        market_b
            .call(Method::GET, "/v1/receipts", None)
            .unwrap()
            .is_empty()
    );
    let all = ops.call(Method::GET, "/v1/receipts", None).unwrap();
    assert!(all.lines().count() >= receipts.len());

    // The reporting plugin's report of the period.
    let report = market_a.ok(Method::GET, "/v1/reports", None);
    assert_eq!(report["reported_by"]["source"], "plugin", "{report}");
    assert!(report["usage_records"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"].as_str().unwrap_or("").contains("market-a")),
        "{report}"
    );
    let (code, _) = market_a.refused(Method::GET, "/v1/reports?from=10&to=5", None);
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    // The checker: liveness probe, attestation (with a TPM), the capacity challenge.
    let probe = checker.ok(
        Method::POST,
        "/v1/liveness/probe",
        Some(&format!(r#"{{"nonce":"{}"}}"#, "5a".repeat(16))),
    );
    assert!(
        probe.to_string().contains("plinth-liveness-probe/1"),
        "{probe}"
    );
    assert_eq!(
        checker
            .refused(
                Method::POST,
                "/v1/liveness/probe",
                Some(r#"{"nonce":"zz"}"#)
            )
            .0,
        StatusCode::BAD_REQUEST
    );
    if tpm.is_some() {
        let bundle = checker.ok(
            Method::POST,
            "/v1/attestation",
            Some(&format!(r#"{{"nonce":"{}"}}"#, "77".repeat(32))),
        );
        assert_eq!(bundle["claims"]["node_public_key"], node_key.as_str());
        assert_eq!(bundle["nonce"], "77".repeat(32));
    }

    // 429 past the client's rate, with Retry-After.
    let flood = who("flood");
    let refused = (0..120)
        .filter_map(|_| flood.call(Method::GET, "/v1/openapi.json", None).err())
        .collect::<Vec<_>>();
    assert!(
        !refused.is_empty(),
        "120 requests at once stayed under a burst of 40"
    );
    assert!(
        refused
            .iter()
            .all(|(code, _)| *code == StatusCode::TOO_MANY_REQUESTS),
        "{refused:?}"
    );
    market_a.ok(Method::GET, "/v1/openapi.json", None);

    // Every answer was counted by route template under api="network"; none was a 5xx.
    let metrics = node.ctl_ok(&["metrics"]);
    assert!(
        metrics.contains(r#"api="network",method="POST",route="/v1/leases",status="201""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"api="network",method="GET",route="/v1/openapi.json",status="429""#),
        "{metrics}"
    );
    // The plugins and the job moved their series too (the dashboard's panels).
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value("plinth_plugin_calls_total{kind=\"scheduling\",plugin=\"bad-scheduler\"}") >= 5.0,
        "{metrics}"
    );
    assert!(
        value("plinth_plugin_traps_total{kind=\"scheduling\",plugin=\"bad-scheduler\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("plinth_plugin_calls_total{kind=\"reporting\",plugin=\"example-reporting\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("plinth_job_start_latency_seconds_count") >= 2.0,
        "{metrics}"
    );
    assert!(value("plinth_receipts_appended_total") >= 1.0, "{metrics}");
    assert_no_server_error(&metrics);
}

/// schemathesis (PyPI, installed by `make test` into `target/py`) against the OpenAPI
/// document and the live server, as an admin client (who reaches every documented
/// route): zero 5xx, zero answers outside the documented statuses, content types and
/// schemas. The capacity challenge is left out: a valid request makes the CPU prover
/// multiply matrices up to n = 16384, which is its own tests' business.
#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let st = std::env::var_os("PLINTH_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| plinth_tests::repo_root().join("target/py/bin/st"));
    if !st.exists() {
        eprintln!(
            "SKIP: schemathesis is not installed at {} (make py-deps installs it)",
            st.display()
        );
        return;
    }
    if !plinth_tests::jobs_available("the schemathesis run") {
        return;
    }
    let tpm = if plinth_tests::swtpm::available("schemathesis attestation") {
        Some(plinth_tests::swtpm::Swtpm::start().unwrap())
    } else {
        None
    };
    let admin = ClientIdentity::generate("fuzzer").unwrap();
    let port = free_port();
    let node = Node::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nrate_per_second = 100000\nrate_burst = 100000\n\
         [[api.clients]]\nname = \"fuzzer\"\nrole = \"admin\"\ncert_sha256 = \"{}\"\n",
        admin.spki_sha256()
    ));
    let pem = node.path("fuzzer.pem");
    std::fs::write(&pem, admin.to_pem()).unwrap();
    let tcti = tpm.as_ref().map(|tpm| tpm.tcti());
    let env: Vec<(&str, &str)> = tcti
        .iter()
        .map(|tcti| ("PLINTH_ATTESTATION_TPM_TCTI", tcti.as_str()))
        .collect();
    let _agent = node.start_with_env(&env);
    let url = format!("https://127.0.0.1:{port}");
    let schema = plinth_tests::repo_root().join("docs/openapi.json");
    let mut command = std::process::Command::new(&st);
    command
        .arg("run")
        .arg(&schema)
        .args(["--url", &url, "--tls-verify", "false"])
        .arg("--request-cert")
        .arg(&pem)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--workers",
            "2",
            "--exclude-path-regex",
            "^/v1/challenges",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
            // Under a loaded 2-core CI machine an answer (a TPM quote on swtpm above
            // all) can take longer than schemathesis' 10 s default.
            "--request-timeout",
            "60",
            // No example database left in the working tree between runs.
            "--generation-database",
            "none",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1");
    if tpm.is_none() {
        command.args(["--exclude-path", "/v1/attestation"]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        let log = std::fs::read_to_string(node.path("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!(
            "agent log (last 80 lines, newest first):\n{}",
            tail.join("\n")
        );
        for pid in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(pid.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(node.config().to_str().unwrap()) {
                let fds = std::fs::read_dir(pid.path().join("fd")).map_or(0, |dir| dir.count());
                let threads =
                    std::fs::read_dir(pid.path().join("task")).map_or(0, |dir| dir.count());
                eprintln!("agent {:?}: {fds} fds, {threads} threads", pid.file_name());
            }
        }
    }
    assert!(
        output.status.success(),
        "schemathesis found failures (above)"
    );
    let metrics = node.ctl_ok(&["metrics"]);
    assert_no_server_error(&metrics);
}

/// A bounded loopback load test: 400 quotes offered at 200 a second over 4 keep-alive
/// TLS connections, priced by a real wasm plugin, every one answered and signed. The
/// percentiles are printed, not asserted (timing belongs to `make bench-quotes`, whose
/// release-build numbers are in docs/api.md).
#[test]
fn bounded_load_of_concurrent_quotes_all_answered() {
    let Some(plugins) = plinth_tests::example_plugins().unwrap() else {
        return;
    };
    let identity = ClientIdentity::generate("load").unwrap();
    let port = free_port();
    let node = Node::new("");
    let key = node.path("author.key");
    let author = node
        .ctl_ok(&["plugin", "keygen", key.to_str().unwrap()])
        .trim()
        .to_owned();
    node.configure(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nrate_per_second = 100000\nrate_burst = 100000\n\
         [[api.clients]]\nname = \"load\"\nrole = \"market\"\ncert_sha256 = \"{}\"\n\
         [plugins]\ntrusted_keys = [\"{author}\"]\n",
        identity.spki_sha256()
    ));
    std::fs::create_dir_all(node.path("state/plugins")).unwrap();
    let package = sign_plugin(
        &node,
        &plugins.join("plinth_hostile_misbehave.wasm"),
        "fixed-pricing",
        "pricing",
        &key,
    );
    std::fs::copy(&package, node.path("state/plugins/pricing.plinthpkg")).unwrap();
    let pem = node.path("load.pem");
    std::fs::write(&pem, identity.to_pem()).unwrap();
    let _agent = node.start();
    let url = format!("https://127.0.0.1:{port}");
    let output = node
        .command(common::CTL)
        .args(["--remote", &url, "--identity"])
        .arg(&pem)
        .args([
            "bench-quotes",
            "--client",
            "load",
            "--count",
            "400",
            "--rate",
            "200",
            "--connections",
            "4",
            "--max-seconds",
            "60",
            "--json",
        ])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", common::stderr(&output)));
    eprintln!("bounded load (debug build): {result}");
    assert_eq!(result["ok"], 400, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert!(result["p50_us"].as_u64().unwrap() <= result["p99_us"].as_u64().unwrap());
    let stored: i64 = rusqlite::Connection::open(node.path("state/plinth.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM api_quotes WHERE client = 'load'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(stored, 400, "every quote was stored for its lease");
    let priced_by_plugin: i64 = rusqlite::Connection::open(node.path("state/plinth.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM api_quotes WHERE client = 'load' AND body LIKE '%\"source\":\"plugin\"%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        priced_by_plugin, 400,
        "every quote was priced by the wasm plugin"
    );
}
