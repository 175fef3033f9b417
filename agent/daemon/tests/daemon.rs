//! End-to-end tests of the real `plinth-agent` and `plinthctl` binaries: readiness over a
//! notify socket the test owns, the admin API, signals, exit codes, crash detection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{AGENT, Node, sha256_file as sha256, stderr};
use nix::sys::signal::Signal;

fn status_json(node: &Node) -> serde_json::Value {
    let output = node.ctl(&["status", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn ready_status_and_clean_sigterm() {
    let node = Node::new("");
    let mut agent = node.start();

    let status = status_json(&node);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], agent.pid());
    assert_eq!(status["previous_run"], "none");
    assert_eq!(status["store"]["integrity"], "ok");
    assert_eq!(status["store"]["responsive"], true);
    let public_key = status["node"]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public_key.len(), 64);
    let on_disk = std::fs::read_to_string(node.path("state/node.pub")).unwrap();
    assert_eq!(on_disk.trim(), public_key);

    let human = node.ctl(&["status"]);
    assert!(human.status.success(), "{}", stderr(&human));
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains(&public_key), "{text}");
    assert!(text.contains("integrity ok"), "{text}");

    let mode = std::fs::metadata(node.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);

    // The watchdog (WATCHDOG_USEC=2 s) is petted while the agent runs.
    agent.wait_for_message("WATCHDOG=1", Duration::from_secs(10));

    agent.signal(Signal::SIGTERM);
    let (exit, messages) = agent.wait();
    assert_eq!(exit.code(), Some(0), "clean exit after SIGTERM");
    assert!(
        messages.iter().any(|m| m.contains("STOPPING=1")),
        "{messages:?}"
    );
    assert!(!node.socket().exists(), "socket removed on shutdown");

    // The next start knows the previous run ended cleanly and keeps the key.
    let agent = node.start();
    let status = status_json(&node);
    assert_eq!(status["previous_run"], "clean");
    assert_eq!(status["node"]["public_key"], public_key.as_str());
    agent.signal(Signal::SIGINT);
    assert_eq!(agent.wait().0.code(), Some(0));
}

#[test]
fn sigkill_is_reported_as_unclean_and_stale_socket_replaced() {
    let node = Node::new("");
    let agent = node.start();
    agent.signal(Signal::SIGKILL);
    agent.wait();
    assert!(node.socket().exists(), "a killed agent leaves its socket");
    let output = node.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("stale socket"),
        "{}",
        stderr(&output)
    );

    let agent = node.start();
    let status = status_json(&node);
    assert!(
        status["previous_run"]
            .as_str()
            .unwrap()
            .starts_with("unclean"),
        "{status}"
    );
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait().0.code(), Some(0));
}

#[test]
fn second_agent_on_same_socket_is_refused() {
    let node = Node::new("");
    let agent = node.start();
    // Same socket, different state directory: the socket check must refuse it.
    let other = node.path("other.toml");
    std::fs::write(
        &other,
        format!(
            "[agent]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\nlog_target = \"stderr\"\n",
            node.path("state2").display(),
            node.path("run").display()
        ),
    )
    .unwrap();
    let output = node
        .command(AGENT)
        .args(["run", "--config"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(stderr(&output).contains("already listening"));
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait().0.code(), Some(0));
}

#[test]
fn plinthctl_without_agent_says_so() {
    let node = Node::new("");
    let output = node.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(69));
    let message = stderr(&output);
    assert!(message.contains("not running"), "{message}");
    assert!(
        message.contains(&node.socket().display().to_string()),
        "{message}"
    );
}

#[test]
fn unknown_endpoint_is_a_json_404() {
    let node = Node::new("");
    let agent = node.start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = plinth_agent::client::AdminClient::new(&node.socket());
    let err = runtime
        .block_on(client.get::<serde_json::Value>("/v1/nope"))
        .unwrap_err();
    match err {
        plinth_agent::client::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(status.as_u16(), 404);
            assert!(message.contains("/v1/nope"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait().0.code(), Some(0));
}

#[test]
fn config_error_exits_78_naming_the_file() {
    let node = Node::new("");
    std::fs::write(node.config(), "[agent]\nstate_dri = \"/x\"\n").unwrap();
    for args in [["run"], ["check-config"]] {
        let output = node.run_agent(&args);
        assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains("agent.toml:2:"), "{message}");
        assert!(message.contains("state_dri"), "{message}");
    }
}

#[test]
fn check_config_prints_merged_config() {
    let node = Node::new("");
    let dropin = node.path("agent.toml.d");
    std::fs::create_dir(&dropin).unwrap();
    std::fs::write(
        dropin.join("10-api.toml"),
        "[api]\nsocket_mode = \"0600\"\n",
    )
    .unwrap();
    let output = node.run_agent(&["check-config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("10-api.toml"), "{text}");
    assert!(text.contains("socket_mode = \"0600\""), "{text}");
}

#[test]
fn corrupt_database_exits_65_and_is_kept() {
    let node = Node::new("");
    std::fs::create_dir_all(node.path("state")).unwrap();
    let database = node.path("state/plinth.db");
    std::fs::write(&database, b"SQLite format 3\0 but then garbage".repeat(300)).unwrap();
    let before = sha256(&database);
    let output = node.run_agent(&["run"]);
    assert_eq!(output.status.code(), Some(65), "{}", stderr(&output));
    assert!(stderr(&output).contains("corrupt"), "{}", stderr(&output));
    assert_eq!(sha256(&database), before);
}

#[test]
fn exposed_node_key_exits_77() {
    let node = Node::new("");
    let agent = node.start();
    agent.signal(Signal::SIGTERM);
    agent.wait();
    let key = node.path("state/node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = node.run_agent(&["run"]);
    assert_eq!(output.status.code(), Some(77), "{}", stderr(&output));
    assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
}

#[test]
fn completions_and_man_pages() {
    let node = Node::new("");
    let output = node.ctl(&["completions", "bash"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("plinthctl"));
    let out_dir = node.path("man");
    let output = node.ctl(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    for page in [
        "plinthctl.1",
        "plinthctl-status.1",
        "plinth-agent.1",
        "plinth-agent-run.1",
    ] {
        let text = std::fs::read_to_string(out_dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}
