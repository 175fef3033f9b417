//! Test helpers: layer tars written with the `tar` crate (including hostile
//! ones built from raw headers), OCI image layouts and archives, a busybox
//! rootfs, and an engine configured in a temporary directory.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth_jobs::engine::{Engine, EngineConfig};
use plinth_jobs::spec::{GpuRequest, ImageRef, ImageSource, JobSpec, Network, Outputs, Resources};
use plinth_jobs::unpack::UnpackLimits;

/// Hex SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A tar entry to put in a layer.
pub enum Entry<'a> {
    /// Directory.
    Dir(&'a str),
    /// Regular file with mode.
    File(&'a str, &'a [u8], u32),
    /// Symlink (name, target).
    Symlink(&'a str, &'a str),
    /// Hard link (name, target).
    HardLink(&'a str, &'a str),
    /// Character device.
    CharDevice(&'a str),
    /// FIFO.
    Fifo(&'a str),
}

/// Builds a raw header, bypassing the tar crate's path checks, so tests can
/// write the hostile entries real attackers would.
fn raw_header(
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    size: u64,
    mode: u32,
) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    {
        let old = header.as_ustar_mut().unwrap();
        let bytes = name.as_bytes();
        assert!(bytes.len() < old.name.len(), "test path too long");
        old.name[..bytes.len()].copy_from_slice(bytes);
        if let Some(link) = link {
            let bytes = link.as_bytes();
            old.linkname[..bytes.len()].copy_from_slice(bytes);
        }
    }
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    if matches!(kind, tar::EntryType::Char) {
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
    }
    header.set_cksum();
    header
}

/// Writes a layer tar from entries.
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            Entry::Dir(name) => {
                let header = raw_header(name, tar::EntryType::Directory, None, 0, 0o755);
                builder.append(&header, &[][..]).unwrap();
            }
            Entry::File(name, data, mode) => {
                let header = raw_header(
                    name,
                    tar::EntryType::Regular,
                    None,
                    data.len() as u64,
                    *mode,
                );
                builder.append(&header, *data).unwrap();
            }
            Entry::Symlink(name, target) => {
                let header = raw_header(name, tar::EntryType::Symlink, Some(target), 0, 0o777);
                builder.append(&header, &[][..]).unwrap();
            }
            Entry::HardLink(name, target) => {
                let header = raw_header(name, tar::EntryType::Link, Some(target), 0, 0o644);
                builder.append(&header, &[][..]).unwrap();
            }
            Entry::CharDevice(name) => {
                let header = raw_header(name, tar::EntryType::Char, None, 0, 0o666);
                builder.append(&header, &[][..]).unwrap();
            }
            Entry::Fifo(name) => {
                let header = raw_header(name, tar::EntryType::Fifo, None, 0, 0o644);
                builder.append(&header, &[][..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Gzip-compresses a layer.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Busybox applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "touch", "dd", "ls", "id", "head", "true", "false", "wc",
    "mkdir", "rm", "grep", "adjtimex", "seq", "stat", "env", "test",
];

/// A layer with a static busybox and its applets.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static is installed at /bin/busybox");
    let mut entries = vec![
        Entry::Dir("bin/"),
        Entry::Dir("etc/"),
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
            0o644,
        ),
        Entry::File("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644),
    ];
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    for link in &links {
        entries.push(Entry::Symlink(link, "/bin/busybox"));
    }
    layer(&entries)
}

/// Writes an OCI image layout with `layers` (each optionally gzipped) and
/// returns the manifest digest.
pub fn write_layout(dir: &Path, layers: &[(Vec<u8>, bool)], user: Option<&str>) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar_bytes, compress) in layers {
        diff_ids.push(format!("sha256:{}", sha256(tar_bytes)));
        let (blob, media_type) = if *compress {
            (
                gzip(tar_bytes),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (tar_bytes.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = sha256(&blob);
        fs::write(blobs.join(&digest), &blob).unwrap();
        descriptors.push(serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": blob.len()}));
    }
    let mut config = serde_json::json!({
        "architecture": match std::env::consts::ARCH { "aarch64" => "arm64", _ => "amd64" },
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    if let Some(user) = user {
        config["config"]["User"] = user.into();
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config_bytes);
    fs::write(blobs.join(&config_digest), &config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config_bytes.len()},
        "layers": descriptors
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest_bytes);
    fs::write(blobs.join(&manifest_digest), &manifest_bytes).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("sha256:{manifest_digest}")
}

/// Tars a directory (regular files and directories) into an archive.
pub fn tar_dir(dir: &Path, archive: &Path) {
    let mut builder = tar::Builder::new(fs::File::create(archive).unwrap());
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
}

/// The privileged runner the suite uses instead of running the OCI runtime itself
/// (`PLINTH_TEST_RUNNER_SOCKET`, set by `plinth-runner`'s unprivileged-agent test,
/// which runs this suite as an unprivileged user against a root runner).
pub fn runner_socket() -> Option<PathBuf> {
    std::env::var_os("PLINTH_TEST_RUNNER_SOCKET").map(PathBuf::from)
}

/// Whether the real-runtime tests can run here; prints why not.
pub fn runtime_available() -> bool {
    if runner_socket().is_some() {
        return Path::new("/bin/busybox").exists();
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: the OCI runtime tests need root (or PLINTH_TEST_RUNNER_SOCKET)");
        return false;
    }
    if which("runc").is_none() {
        eprintln!("skipping: runc is not installed");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox (busybox-static) is not installed");
        return false;
    }
    true
}

/// Finds a binary on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// A test environment: an engine in a temporary directory, a busybox image.
pub struct TestEnv {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The engine.
    pub engine: Engine,
    /// The image layout directory.
    pub layout: PathBuf,
    /// Engine configuration.
    pub config: EngineConfig,
}

/// Parent cgroup used by tests (removed by [`TestEnv`]'s drop).
pub fn test_cgroup_parent() -> String {
    // Against a runner, the runner's configured parent (it refuses any other).
    if let Some(parent) = std::env::var_os("PLINTH_TEST_CGROUP_PARENT") {
        return parent.to_string_lossy().into_owned();
    }
    format!("plinth-test-{}", std::process::id())
}

impl TestEnv {
    /// Creates the environment; `cdi_dir` adds a CDI spec directory.
    pub fn new(cdi_dir: Option<PathBuf>) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("images/busybox");
        fs::create_dir_all(&layout).unwrap();
        write_layout(&layout, &[(busybox_layer(), true)], None);
        let config = EngineConfig {
            jobs_dir: dir.path().join("jobs"),
            image_store: dir.path().join("cache"),
            image_roots: vec![dir.path().join("images")],
            runtime_binary: which("runc").unwrap_or_else(|| PathBuf::from("runc")),
            runtime_root: dir.path().join("runc-root"),
            shim_binary: PathBuf::from(env!("CARGO_BIN_EXE_plinth-job-shim")),
            shim_args: Vec::new(),
            cdi_dirs: cdi_dir.into_iter().collect(),
            cgroup_parent: test_cgroup_parent(),
            log_cap_bytes: 64 * 1024,
            kill_grace: Duration::from_millis(300),
            unpack_limits: UnpackLimits::default(),
            registry: Default::default(),
            cache_max_bytes: 0,
            runner_socket: runner_socket(),
        };
        let engine = Engine::new(config.clone()).unwrap();
        TestEnv {
            dir,
            engine,
            layout,
            config,
        }
    }

    /// A job spec running `command` in the busybox image.
    pub fn spec(&self, command: &[&str]) -> JobSpec {
        JobSpec {
            format: "plinth-job/1".into(),
            image: ImageRef {
                source: ImageSource::OciLayout,
                path: self.layout.clone(),
                reference: Some("latest".into()),
                digest: None,
            },
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            workdir: None,
            gpus: GpuRequest::default(),
            resources: Resources {
                cpu: Some(1.0),
                memory_bytes: 64 * 1024 * 1024,
                pids: 64,
                max_duration_s: 60,
            },
            network: Network::None,
            outputs: Outputs::default(),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for controller in [
            "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd",
            "",
        ] {
            let _ = fs::remove_dir(
                Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(test_cgroup_parent()),
            );
        }
    }
}
