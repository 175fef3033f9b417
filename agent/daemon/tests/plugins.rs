//! End-to-end: the real agent loads, installs, lists, reloads (SIGHUP) and removes a
//! signed policy plugin driven by the real `plinthctl plugin ...` commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const AGENT: &str = env!("CARGO_BIN_EXE_plinth-agent");
const CTL: &str = env!("CARGO_BIN_EXE_plinthctl");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The example pricing plugin built from source, or `None` when wasm32-wasip2 is absent.
fn pricing_wasm() -> Option<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let sysroot = String::from_utf8(sysroot.stdout).unwrap();
    if !Path::new(sysroot.trim())
        .join("lib/rustlib/wasm32-wasip2")
        .exists()
    {
        eprintln!("SKIP: rust target wasm32-wasip2 is not installed; no plugin end-to-end test");
        return None;
    }
    let target_dir = workspace_root().join("target/wasm-examples");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .current_dir(workspace_root().join("plugins/examples"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "plinth-example-pricing",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success());
    Some(target_dir.join("wasm32-wasip2/release/plinth_example_pricing.wasm"))
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(CTL);
    for (name, _) in std::env::vars() {
        if name.starts_with("PLINTH_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--socket")
        .arg(dir.join("run/admin.sock"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "plinthctl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn install_list_reload_remove() {
    let Some(wasm) = pricing_wasm() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let key = dir.join("author.pk8");
    let public_key = ok(ctl(dir, &["plugin", "keygen", key.to_str().unwrap()]))
        .trim()
        .to_string();
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"example-pricing\"\nversion = \"1.0.0\"\nkind = \"pricing\"\nwit = \"plinth:policy@0.1.1\"\nwasm_sha256 = \"\"\n",
    )
    .unwrap();
    let package = dir.join("pricing.plinthpkg");
    ok(ctl(
        dir,
        &[
            "plugin",
            "sign",
            "--manifest",
            dir.join("plugin.toml").to_str().unwrap(),
            "--wasm",
            wasm.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-o",
            package.to_str().unwrap(),
        ],
    ));
    let inspected = ok(ctl(dir, &["plugin", "inspect", package.to_str().unwrap()]));
    assert!(
        inspected.contains("signature valid") && inspected.contains("plinth:policy@0.1.1"),
        "{inspected}"
    );
    let tested = ok(ctl(
        dir,
        &[
            "plugin",
            "test",
            package.to_str().unwrap(),
            "--fixtures",
            workspace_root()
                .join("plugins/examples/pricing/fixtures")
                .to_str()
                .unwrap(),
        ],
    ));
    assert!(
        tested.lines().all(|line| line.starts_with("ok ")),
        "{tested}"
    );

    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "[agent]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\nlog_target = \"stderr\"\n\n[plugins]\ntrusted_keys = [\"{public_key}\"]\n",
            dir.join("state").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(AGENT);
    for (name, _) in std::env::vars() {
        if name.starts_with("PLINTH_") || name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["run", "--config"])
        .arg(dir.join("agent.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    let started = Instant::now();
    while !dir.join("run/admin.sock").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));

    assert!(ok(ctl(dir, &["plugin", "list"])).contains("no plugins installed"));
    let installed = ok(ctl(dir, &["plugin", "install", package.to_str().unwrap()]));
    assert!(
        installed.contains("installed example-pricing 1.0.0"),
        "{installed}"
    );
    assert!(dir.join("state/plugins/pricing.plinthpkg").exists());
    let listed = ok(ctl(dir, &["plugin", "list", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["info"]["name"], "example-pricing");
    assert!(
        listed[0]["stats"]["calls"].as_u64().unwrap() >= 1,
        "self-test call counted"
    );

    // A tampered package is refused by the agent; the installed one keeps serving.
    let mut tampered = std::fs::read(&package).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let bad = dir.join("bad.plinthpkg");
    std::fs::write(&bad, tampered).unwrap();
    let refused = ctl(dir, &["plugin", "install", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match"),
        "{refused:?}"
    );

    // SIGHUP reloads the directory; the plugin is still there afterwards.
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = ok(ctl(dir, &["plugin", "reload"]));
    assert!(
        reloaded.contains("loaded  example-pricing 1.0.0"),
        "{reloaded}"
    );
    assert!(ok(ctl(dir, &["plugin", "list"])).contains("example-pricing"));

    let removed = ok(ctl(dir, &["plugin", "remove", "pricing"]));
    assert!(removed.contains("removed example-pricing"), "{removed}");
    assert!(!dir.join("state/plugins/pricing.plinthpkg").exists());
    assert!(ok(ctl(dir, &["plugin", "list"])).contains("no plugins installed"));
}
