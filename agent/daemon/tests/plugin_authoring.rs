//! The plugin author's loop through the real `plinthctl`: `plugin new` for Rust and
//! TypeScript, each project built as its README says and passing `plugin test`
//! unmodified; a failing fixture shows its diff and the plugin's log; `plugin wit`
//! prints the frozen interface; a TypeScript plugin (12 MB of wasm) is signed and
//! installed into a running agent like a Rust one. The Rust projects need the
//! wasm32-wasip2 target, the TypeScript ones Node.js and npm; each is skipped with the
//! reason printed when its toolchain is absent (`make test` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Node;

const KINDS: [&str; 3] = ["pricing", "scheduling", "reporting"];

/// `plinthctl plugin new KIND --lang LANG NAME --dir DIR` (with the repository's SDK
/// for Rust), returning the project directory.
fn new_project(node: &Node, kind: &str, lang: &str) -> PathBuf {
    let name = format!("my-{kind}-{lang}");
    let dir = node.path(&name);
    let sdk = plinth_tests::repo_root().join("plugins/sdk");
    let written = node.ctl_ok(&[
        "plugin",
        "new",
        kind,
        &name,
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ]);
    assert!(
        written.contains("plugin.toml") && written.contains("README.md"),
        "{written}"
    );
    dir
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cargo build --release --target wasm32-wasip2`, as the README says (offline, with
/// the example plugins' target directory so the SDK's dependencies are built once).
fn build_rust(dir: &Path, name: &str) -> PathBuf {
    let target = plinth_tests::repo_root().join("target/wasm-examples");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(
        Command::new(cargo)
            .current_dir(dir)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--offline",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_MAKEFLAGS"),
        "cargo build of the Rust scaffold",
    );
    target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ))
}

/// `npm install && npm run build`, as the README says; `npm install` is replaced by a
/// link to the JS examples' `node_modules`, installed by `npm ci` from the same pinned
/// versions (the scaffold's package.json asks for exactly those), so no test downloads.
fn build_js(dir: &Path, name: &str) -> PathBuf {
    let examples = plinth_tests::repo_root().join("plugins/examples/js");
    plinth_tests::npm_ci(&examples).unwrap();
    std::os::unix::fs::symlink(examples.join("node_modules"), dir.join("node_modules")).unwrap();
    run(
        Command::new("npm").current_dir(dir).args(["run", "build"]),
        "npm run build of the TypeScript scaffold",
    );
    dir.join(format!("dist/{name}.wasm"))
}

/// `plinthctl plugin test WASM --fixtures DIR --json`: every case passed.
fn passes_its_fixtures(node: &Node, wasm: &Path, dir: &Path) {
    let report = node.ctl_ok(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--fixtures",
        dir.join("fixtures").to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{report:#}");
    for case in cases {
        assert_eq!(case["passed"], true, "{}: {case:#}", dir.display());
    }
}

fn wasm32_wasip2_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let installed = Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .exists();
    if !installed {
        eprintln!("SKIP Rust scaffolds: rust target wasm32-wasip2 is not installed");
    }
    installed
}

#[test]
fn rust_scaffolds_build_and_pass_their_fixtures() {
    if !wasm32_wasip2_installed() {
        return;
    }
    // The example plugins' build fetches and compiles the SDK's dependencies once, so
    // that the scaffolds build offline in the same target directory.
    plinth_tests::example_plugins().unwrap();
    let node = Node::new("");
    for kind in KINDS {
        let dir = new_project(&node, kind, "rust");
        let wasm = build_rust(&dir, &format!("my-{kind}-rust"));
        passes_its_fixtures(&node, &wasm, &dir);
    }
    // A fixture that no longer matches fails with every difference, a unified diff and
    // the plugin's own log lines.
    let dir = node.path("my-pricing-rust");
    let wasm = build_rust(&dir, "my-pricing-rust");
    let expected = dir.join("fixtures/one-hour-on-two-gpus.expected.json");
    let text = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(&expected, text.replace("4000000", "4000001")).unwrap();
    let output = node.ctl(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--fixtures",
        dir.join("fixtures").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok    not-enough-free-gpus"), "{stdout}");
    assert!(stdout.contains("FAIL  one-hour-on-two-gpus"), "{stdout}");
    assert!(
        stdout.contains("/Ok/Offer/price_micros: expected 4000001, got 4000000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-      \"price_micros\": 4000001")
            && stdout.contains("+      \"price_micros\": 4000000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plugin log:") && stdout.contains("quoting 4000000 for req-1"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 of 2 fixtures passed"));
}

#[test]
fn typescript_scaffolds_build_pass_their_fixtures_and_install() {
    if !plinth_tests::node_available("TypeScript scaffolds") {
        return;
    }
    let node = Node::new("");
    let mut pricing = None;
    for kind in KINDS {
        let dir = new_project(&node, kind, "js");
        let wasm = build_js(&dir, &format!("my-{kind}-js"));
        passes_its_fixtures(&node, &wasm, &dir);
        if kind == "pricing" {
            pricing = Some((dir, wasm));
        }
    }
    // Sign, inspect and install the TypeScript pricing plugin into a running agent, as a
    // Rust one (the package flow does not depend on the language).
    let (dir, wasm) = pricing.unwrap();
    let key = node.path("author.key");
    let public_key = node
        .ctl_ok(&["plugin", "keygen", key.to_str().unwrap()])
        .trim()
        .to_string();
    let package = node.path("my-pricing-js.plinthpkg");
    node.ctl_ok(&[
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
    ]);
    let inspected = node.ctl_ok(&["plugin", "inspect", package.to_str().unwrap()]);
    assert!(
        inspected.contains("signature valid") && inspected.contains("plinth:policy@0.1.2"),
        "{inspected}"
    );
    node.configure(&format!("\n[plugins]\ntrusted_keys = [\"{public_key}\"]\n"));
    let _agent = node.start();
    let installed = node.ctl_ok(&["plugin", "install", package.to_str().unwrap()]);
    assert!(
        installed.contains("installed my-pricing-js 0.1.0"),
        "{installed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["plugin", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["info"]["name"], "my-pricing-js");
    assert!(
        listed[0]["stats"]["ok"].as_u64().unwrap() >= 1,
        "self-test answered"
    );
}

#[test]
fn plugin_wit_prints_the_frozen_interface() {
    let node = Node::new("");
    let root = plinth_tests::repo_root();
    let current = node.ctl_ok(&["plugin", "wit"]);
    assert_eq!(
        current,
        std::fs::read_to_string(root.join("plugins/wit/policy.wit")).unwrap()
    );
    let old = node.ctl_ok(&["plugin", "wit", "--version", "0.1.0"]);
    assert_eq!(
        old,
        std::fs::read_to_string(root.join("plugins/wit/frozen/0.1.0/policy.wit")).unwrap()
    );
    let listed = node.ctl_ok(&["plugin", "wit", "--list"]);
    assert_eq!(
        listed,
        "plinth:policy@0.1.0\nplinth:policy@0.1.1\nplinth:policy@0.1.2\n"
    );
    let unknown = node.ctl(&["plugin", "wit", "--version", "0.9.0"]);
    assert!(!unknown.status.success());
    let message = common::stderr(&unknown);
    assert!(
        message.contains("\"0.9.0\"") && message.contains("0.1.0, 0.1.1, 0.1.2"),
        "{message}"
    );
}
