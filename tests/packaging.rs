//! Checks of the shipped files: the vendor configuration loads cleanly, and both systemd
//! units carry their directives and pass `systemd-analyze verify` where that tool exists.

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
    // The package runs the agent unprivileged: containers go through plinth-runner.
    let mut packaged_jobs = defaults.jobs.clone();
    packaged_jobs.runner_socket = Some("/run/plinth-runner/runner.sock".into());
    assert_eq!(loaded.config.jobs, packaged_jobs);
    let runner = plinth_runner::config::RunnerConfig::default();
    assert_eq!(
        loaded.config.jobs.runner_socket.as_ref(),
        Some(&runner.socket)
    );
    assert_eq!(loaded.config.api.socket_group.as_deref(), Some("plinth"));
}

#[test]
fn unit_file_verifies() {
    verify_unit("plinth-agent.service", "RestartPreventExitStatus=65 77 78");
}

#[test]
fn runner_unit_file_verifies() {
    verify_unit("plinth-runner.service", "RestartPreventExitStatus=78");
}

/// Both units: the directives the issue asks for, then `systemd-analyze verify`.
fn verify_unit(name: &str, restart_prevent: &str) {
    let unit = repo_root().join("systemd").join(name);
    let text = std::fs::read_to_string(&unit).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        restart_prevent,
        "StateDirectory=",
        "RuntimeDirectory=",
        "ConfigurationDirectory=",
        "LogsDirectory=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
        "RestrictNamespaces=",
        "SystemCallFilter=",
    ] {
        assert!(text.contains(directive), "{name} lacks {directive}");
    }
    if name == "plinth-agent.service" {
        // Job supervisors belong to the runner now.
        let directives: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(
            !directives
                .iter()
                .any(|l| l.starts_with("KillMode=") || l.starts_with("Delegate="))
        );
        assert!(directives.contains(&"User=plinth"));
    }
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
        .filter(|line| line.contains(&format!("{name}:")))
        .filter(|line| !line.contains("is not executable"))
        .collect();
    assert!(own_problems.is_empty(), "{stderr}");
}

/// The .rpm's `%pre` creates the user from a copy of sysusers.d/plinth.conf (the file is
/// not on disk yet when `%pre` runs): the copy must say what the file says.
#[test]
fn rpm_pre_scriptlet_repeats_the_sysusers_entries() {
    let conf = std::fs::read_to_string(repo_root().join("systemd/sysusers.d/plinth.conf")).unwrap();
    let expected: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let spec = std::fs::read_to_string(repo_root().join("packaging/rpm/plinth.spec")).unwrap();
    let start = spec
        .find("printf '%s\\n'")
        .expect("%pre has no printf of the entries");
    let end = start
        + spec[start..]
            .find("systemd-sysusers --replace=/usr/lib/sysusers.d/plinth.conf -")
            .expect("%pre does not pipe the entries into systemd-sysusers");
    let quoted: Vec<&str> = spec[start + "printf '%s\\n'".len()..end]
        .split('\'')
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(quoted, expected, "packaging/rpm/plinth.spec %pre");
}
