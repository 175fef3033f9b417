//! The one harness for starting the real `plinth-agent` in tests: a node directory with
//! its configuration, the agent started with a notify socket the test owns (readiness is
//! `READY=1`, as under systemd), `plinthctl` against it, and clean-up on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_plinth-agent");
/// The admin CLI under test.
pub const CTL: &str = env!("CARGO_BIN_EXE_plinthctl");

/// A node: a temporary directory with `agent.toml`, `state/`, `run/`.
pub struct Node {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Node {
    /// A node whose configuration is the test defaults plus `extra` TOML.
    pub fn new(extra: &str) -> Self {
        let node = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        node.configure(extra);
        node
    }

    /// Rewrites `agent.toml`: the test defaults plus `extra` TOML.
    pub fn configure(&self, extra: &str) {
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\nlog_target = \"stderr\"\nlog_level = \"debug\"\n{extra}",
            self.path("state").display(),
            self.path("run").display()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// A path inside the node directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.path("agent.toml")
    }

    /// The admin socket.
    pub fn socket(&self) -> PathBuf {
        self.path("run/admin.sock")
    }

    /// A command for `binary` without the test's own `PLINTH_*` and systemd variables.
    pub fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars() {
            if name.starts_with("PLINTH_") || name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" {
                command.env_remove(name);
            }
        }
        command
    }

    /// Starts `plinth-agent run` and waits (up to 60 s) for READY=1. The agent's log is
    /// appended to `agent.log` in the node (a file, never a pipe nobody drains: a full
    /// pipe would stall the agent), and its tail is shown when the agent fails.
    pub fn start(&self) -> Agent {
        self.start_with_env(&[])
    }

    /// [`Node::start`] with extra environment variables for the agent (for example
    /// `PLINTH_ATTESTATION_TPM_TCTI`).
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Agent {
        let notify_path = self.path("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stderr = Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path("agent.log"))
                .unwrap(),
        );
        let child = self
            .command(AGENT)
            .args(["run", "--config"])
            .arg(self.config())
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "2000000")
            // No metrics listener unless a test asks for one (its own address): the
            // default port would be contended by agents started in parallel.
            .env("PLINTH_METRICS_LISTEN", "")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child: Some(child),
            notify,
            messages: Vec::new(),
            log_file: self.path("agent.log"),
        };
        agent.wait_for_message("READY=1", Duration::from_secs(60));
        agent
    }

    /// Runs `plinth-agent ARGS --config <node config>` to completion.
    pub fn run_agent(&self, args: &[&str]) -> Output {
        self.command(AGENT)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }

    /// Runs `plinthctl --socket <node socket> ARGS` to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command(CTL)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// `plinthctl ARGS`, asserting success; its standard output.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        ok(self.ctl(args))
    }
}

/// A running agent; killed (SIGKILL) on drop if still running.
pub struct Agent {
    child: Option<Child>,
    notify: UnixDatagram,
    /// Every notify message received so far.
    pub messages: Vec<String>,
    log_file: PathBuf,
}

impl Agent {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for a notify message line equal to `needle`.
    pub fn wait_for_message(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if self.messages.iter().any(|m| m.lines().any(|l| l == needle)) {
                return;
            }
            if let Ok(Some(status)) = self.child().try_wait() {
                panic!(
                    "agent exited with {status} before {needle}: {}",
                    self.log_tail()
                );
            }
            if let Ok(n) = self.notify.recv(&mut buffer) {
                self.messages
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
        let tail = self.log_tail();
        panic!(
            "no {needle} within {timeout:?}; got {:?}; log: {tail}",
            self.messages
        );
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.signal(Signal::SIGKILL);
        self.child().wait().unwrap();
        self.child = None;
    }

    /// Waits (up to 30 s) for the agent to exit; its status and every notify message.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = self.notify.recv(&mut buffer) {
                    self.messages
                        .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                }
                self.child = None;
                return (status, std::mem::take(&mut self.messages));
            }
            assert!(Instant::now() < deadline, "agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command's standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that a command succeeded; its standard output.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap())
        .as_ref()
        .to_vec()
}
