//! The kill -9 loop: the real `plinth-agent` runs real jobs (runc, a busybox
//! image built here) and is killed with SIGKILL at random moments, then
//! restarted, many times. In the end every submitted job must have ended in
//! the right state, every job that ran must have exactly one final receipt,
//! and the exported ledger must verify (signatures, chain, no gaps, no
//! double billing). Skips with a printed reason without root, runc or busybox.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plinth_attestation::receipt::{LedgerOptions, Receipt, ReceiptKind, verify_ledger};

const AGENT: &str = env!("CARGO_BIN_EXE_plinth-agent");
const CTL: &str = env!("CARGO_BIN_EXE_plinthctl");

fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: the kill -9 loop needs root (runc)");
        return false;
    }
    for tool in ["runc", "tar"] {
        if which(tool).is_none() {
            eprintln!("skipping: {tool} is not installed");
            return false;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox (busybox-static) is not installed");
        return false;
    }
    true
}

/// Writes an OCI layout holding a busybox rootfs (layer made by `tar`).
fn busybox_layout(work: &Path, layout: &Path) {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "true", "cat"] {
        std::os::unix::fs::symlink("/bin/busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let layer_path = work.join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let layer = std::fs::read(&layer_path).unwrap();
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_digest = sha256(&layer);
    std::fs::write(blobs.join(&layer_digest), &layer).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}
    }))
    .unwrap();
    let config_digest = sha256(&config);
    std::fs::write(blobs.join(&config_digest), &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
    }))
    .unwrap();
    let manifest_digest = sha256(&manifest);
    std::fs::write(blobs.join(&manifest_digest), &manifest).unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len()}]
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars() {
            if name.starts_with("PLINTH_") || name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" {
                command.env_remove(name);
            }
        }
        command
    }

    /// Starts the agent; retries once when the previous (killed) agent's
    /// socket still answered for a moment (see the report to the lead).
    fn start(&self) -> Child {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start_once())) {
            Ok(child) => child,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(500));
                self.start_once()
            }
        }
    }

    fn start_once(&self) -> Child {
        let notify_path = self.path("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let child = self
            .command(AGENT)
            .args(["run", "--config"])
            .arg(self.path("agent.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path("agent.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buffer = [0u8; 4096];
        let mut child = child;
        loop {
            if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let log = std::fs::read_to_string(self.path("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                let ss = Command::new("ss")
                    .args(["-xlpn"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for line in ss.lines().filter(|l| l.contains("admin.sock")) {
                    eprintln!("ss: {line}");
                }
                let ps = Command::new("ps")
                    .args(["-eo", "pid,ppid,stat,args"])
                    .output()
                    .unwrap();
                for line in String::from_utf8_lossy(&ps.stdout)
                    .lines()
                    .filter(|l| l.contains("plinth-agent"))
                {
                    eprintln!("ps: {line}");
                }
                panic!(
                    "agent never became ready ({:?}); log tail:\n{}",
                    child.try_wait(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Ok(n) = notify.recv(&mut buffer)
                && String::from_utf8_lossy(&buffer[..n]).contains("READY=1")
            {
                return child;
            }
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.command(CTL)
            .arg("--socket")
            .arg(self.path("run/admin.sock"))
            .args(args)
            .output()
            .unwrap()
    }

    fn submit(&self, spec: &serde_json::Value) -> String {
        let file = self.path("spec.json");
        std::fs::write(&file, serde_json::to_vec(spec).unwrap()).unwrap();
        let output = self.ctl(&[
            "jobs",
            "submit",
            file.to_str().unwrap(),
            "--tenant",
            "t1",
            "--lease",
            "l1",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        let output = self.ctl(&["jobs", "list", "--json"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
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

fn kill9(child: &mut Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_9_loop_loses_no_job_and_bills_none_twice() {
    if !available() {
        return;
    }
    let node = Node {
        dir: tempfile::tempdir().unwrap(),
    };
    let state = node.path("state");
    let layout = state.join("import/busybox");
    std::fs::create_dir_all(&layout).unwrap();
    busybox_layout(node.dir.path(), &layout);
    std::fs::write(
        node.path("agent.toml"),
        format!(
            "[agent]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\nlog_target = \"stderr\"\nlog_level = \"debug\"\n",
            state.display(),
            node.path("run").display()
        ),
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
            let id = node.submit(&spec(&command));
            expected.insert(id, outcome);
        }
        std::thread::sleep(Duration::from_millis(random.next(900)));
        kill9(&mut agent);
        eprintln!("round {round}: agent killed");
        agent = node.start();
    }
    // Let everything finish under the last agent.
    let deadline = Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        let jobs = node.jobs();
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
    kill9(&mut agent);

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
