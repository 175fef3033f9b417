//! Checks of the shipped files: the vendor configuration loads cleanly, and the systemd
//! unit passes `systemd-analyze verify` where that tool exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use plinth_agent::config::{self, ConfigSources};
use plinth_tests::repo_root;

#[test]
fn vendor_config_is_valid_and_matches_defaults() {
    let sources = ConfigSources {
        files: vec![repo_root().join("packaging/agent.toml")],
        dropin_dir: None,
        env: Vec::new(),
    };
    let loaded = config::load(&sources).unwrap();
    assert_eq!(loaded.files_read.len(), 1);
    let defaults = config::AgentConfig::default();
    assert_eq!(loaded.config.agent, defaults.agent);
    assert_eq!(loaded.config.jobs, defaults.jobs);
    assert_eq!(loaded.config.api.socket_group.as_deref(), Some("plinth"));
}

#[test]
fn unit_file_verifies() {
    let unit = repo_root().join("systemd/plinth-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify"));
    assert!(text.contains("RestartPreventExitStatus=65 77 78"));
    let Ok(output) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
    else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Outside a booted systemd the binary path and users may be missing; only syntax
    // problems in our own file count.
    let own_problems: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("plinth-agent.service:"))
        .filter(|line| !line.contains("is not executable"))
        .collect();
    assert!(own_problems.is_empty(), "{stderr}");
}
