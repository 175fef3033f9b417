//! Shared helpers of plinth's tests across crates: where the repository and the evidence
//! vectors are, the example plugins built once from source, and a busybox OCI image for
//! job tests. Test support only: nothing here is used by a shipped binary.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (the workspace root).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The evidence vectors directory: `$PLINTH_VECTORS`, else `../shared/vectors` beside the
/// repository.
pub fn vectors_dir() -> PathBuf {
    std::env::var_os("PLINTH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/vectors"))
}

/// Whether `name` is an executable file on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// Whether real OCI jobs can run here (root, runc, tar and busybox-static); prints the
/// reason to skip when not, naming `what` is skipped.
pub fn jobs_available(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("needs root (runc)".to_owned())
    } else if let Some(tool) = ["runc", "tar"].into_iter().find(|tool| !on_path(tool)) {
        Some(format!("{tool} is not installed"))
    } else if !Path::new("/bin/busybox").exists() {
        Some("/bin/busybox (busybox-static) is not installed".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => {
            eprintln!("SKIP {what}: {reason}");
            false
        }
        None => true,
    }
}

/// The directory of the example plugins (`plugins/examples`) built for wasm32-wasip2 in
/// release mode, built once per test process into `target/wasm-examples`; `None`, with
/// the reason printed, when the wasm32-wasip2 target is not installed. Every test and
/// benchmark that needs an example plugin comes through here.
pub fn example_plugins() -> Result<Option<PathBuf>, String> {
    static BUILT: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    BUILT.get_or_init(build_example_plugins).clone()
}

/// The built example plugin `name` (e.g. `plinth_example_pricing`), as its wasm path.
pub fn example_plugin(name: &str) -> Result<Option<PathBuf>, String> {
    Ok(example_plugins()?.map(|dir| dir.join(format!("{name}.wasm"))))
}

fn build_example_plugins() -> Result<Option<PathBuf>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|err| format!("cannot run {rustc}: {err}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let target_lib = Path::new(&sysroot).join("lib/rustlib/wasm32-wasip2");
    if !target_lib.exists() {
        eprintln!(
            "SKIP: rust target wasm32-wasip2 is not installed ({} missing); \
             run `rustup target add wasm32-wasip2` to run the plugin tests",
            target_lib.display()
        );
        return Ok(None);
    }
    let target_dir = repo_root().join("target/wasm-examples");
    let status = Command::new(&cargo)
        .current_dir(repo_root().join("plugins/examples"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .map_err(|err| format!("cannot run {cargo}: {err}"))?;
    if !status.success() {
        return Err(format!("building plugins/examples failed: {status}"));
    }
    Ok(Some(target_dir.join("wasm32-wasip2/release")))
}

/// The JavaScript (TypeScript) example plugins (`plugins/examples/js`), built from source
/// into `target/js-examples` once per test process: `npm ci` when its `node_modules` is
/// missing (`make test` installs it beforehand: `make js-deps`), then `node build.mjs`.
/// `None`, with the reason printed, only when Node.js >= 18 or npm is not installed.
pub fn js_example_plugins() -> Result<Option<PathBuf>, String> {
    static BUILT: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    BUILT.get_or_init(build_js_example_plugins).clone()
}

/// The built JavaScript example `name` (e.g. `plinth_js_pricing`), as its wasm path.
pub fn js_example_plugin(name: &str) -> Result<Option<PathBuf>, String> {
    Ok(js_example_plugins()?.map(|dir| dir.join(format!("{name}.wasm"))))
}

/// Whether Node.js >= 18 and npm are installed; prints why not, naming `what` is skipped.
pub fn node_available(what: &str) -> bool {
    let node_major = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|major| major.parse::<u32>().ok())
        });
    let reason = match node_major {
        None => Some("node (Node.js) is not installed".to_owned()),
        Some(major) if major < 18 => Some(format!("Node.js {major} is older than 18")),
        Some(_) if !on_path("npm") => Some("npm is not installed".to_owned()),
        Some(_) => None,
    };
    match reason {
        Some(reason) => {
            eprintln!("SKIP {what}: {reason} (`make js-deps` installs it)");
            false
        }
        None => true,
    }
}

/// Runs `npm ci` in `project` when its `node_modules` is missing or older than its
/// `package-lock.json`, so that the pinned packages are what builds.
pub fn npm_ci(project: &Path) -> Result<(), String> {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    let installed = modified(&project.join("node_modules/.package-lock.json"));
    let locked = modified(&project.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    let status = Command::new("npm")
        .current_dir(project)
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
        .status()
        .map_err(|err| format!("cannot run npm: {err}"))?;
    if !status.success() {
        return Err(format!("npm ci in {} failed: {status}", project.display()));
    }
    Ok(())
}

fn build_js_example_plugins() -> Result<Option<PathBuf>, String> {
    if !node_available("JavaScript plugins") {
        return Ok(None);
    }
    let project = repo_root().join("plugins/examples/js");
    npm_ci(&project)?;
    let out = repo_root().join("target/js-examples");
    let status = Command::new("node")
        .current_dir(&project)
        .arg("build.mjs")
        .arg("--out")
        .arg(&out)
        .status()
        .map_err(|err| format!("cannot run node: {err}"))?;
    if !status.success() {
        return Err(format!("building plugins/examples/js failed: {status}"));
    }
    Ok(Some(out))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn other(what: &str) -> impl FnOnce(serde_json::Error) -> io::Error + '_ {
    move |err| io::Error::other(format!("{what}: {err}"))
}

/// Writes an OCI image layout at `layout` whose one layer (made by `tar` from a rootfs
/// under `work`) holds `/bin/busybox`, the given applets as links to it and an
/// `/etc/passwd` with root: the image every job test runs.
pub fn busybox_layout(work: &Path, layout: &Path, applets: &[&str]) -> io::Result<()> {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("etc"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for applet in applets {
        std::os::unix::fs::symlink("/bin/busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")?;
    let layer_path = work.join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_path)
        .arg(".")
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("tar failed: {status}")));
    }
    let layer = std::fs::read(&layer_path)?;
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> io::Result<String> {
        let digest = sha256_hex(bytes);
        std::fs::write(blobs.join(&digest), bytes)?;
        Ok(digest)
    };
    let layer_digest = put(&layer)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}
    }))
    .map_err(other("image config"))?;
    let config_digest = put(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
    }))
    .map_err(other("image manifest"))?;
    let manifest_digest = put(&manifest)?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len()}]
    }))
    .map_err(other("image index"))?;
    std::fs::write(layout.join("index.json"), index)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}
