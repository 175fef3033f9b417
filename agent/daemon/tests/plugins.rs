//! End-to-end: the real agent loads, installs, lists, reloads (SIGHUP) and removes a
//! signed policy plugin driven by the real `plinthctl plugin ...` commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Node;
use nix::sys::signal::Signal;

#[test]
fn install_list_reload_remove() {
    let Some(wasm) = plinth_tests::example_plugin("plinth_example_pricing").unwrap() else {
        return;
    };
    let node = Node::new("");
    let dir = node.dir.path();
    let ctl = |_: &std::path::Path, args: &[&str]| node.ctl(args);
    let ok = common::ok;
    let key = dir.join("author.key");
    let public_key = ok(ctl(dir, &["plugin", "keygen", key.to_str().unwrap()]))
        .trim()
        .to_string();
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"example-pricing\"\nversion = \"1.0.0\"\nkind = \"pricing\"\nwit = \"plinth:policy@0.1.2\"\nwasm_sha256 = \"\"\n",
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
        inspected.contains("signature valid") && inspected.contains("plinth:policy@0.1.2"),
        "{inspected}"
    );
    let tested = ok(ctl(
        dir,
        &[
            "plugin",
            "test",
            package.to_str().unwrap(),
            "--fixtures",
            plinth_tests::repo_root()
                .join("plugins/examples/pricing/fixtures")
                .to_str()
                .unwrap(),
        ],
    ));
    assert!(
        tested.lines().all(|line| line.starts_with("ok ")),
        "{tested}"
    );

    node.configure(&format!("\n[plugins]\ntrusted_keys = [\"{public_key}\"]\n"));
    let agent = node.start();

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
    agent.signal(Signal::SIGHUP);
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
