//! OCI runtime bundle generation (`config.json`) for a job.
//!
//! The sandbox: read-only rootfs (the shared image cache), a writable
//! `/scratch` bind-mounted from the job directory, a size-limited tmpfs
//! `/tmp`; new pid, mount, ipc, uts and cgroup namespaces, and a new network
//! namespace (loopback only) unless the spec asks for the host network;
//! memory, pids and CPU limits on the job's cgroup; a seccomp deny-list in the
//! spirit of Docker's default profile; no new privileges; no capabilities;
//! a non-root user (the image's `User` when it is not root, else 65534);
//! Docker's masked and read-only `/proc` and `/sys` paths.
//!
//! The spec is built with `oci-spec`'s typed builders, and CDI edits
//! ([`crate::cdi`]) are applied to the same typed [`Spec`].

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use plinth_toolbox::durable::{self, DurableError};

use crate::image::ImportedImage;
use crate::spec::{JobSpec, Network};

/// The uid and gid jobs run as when the image does not name a non-root user.
pub const NOBODY: u32 = 65534;

/// Errors from building a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Neither the spec nor the image gives a command.
    #[error(
        "job has no command: the spec's command is empty and the image has no entrypoint or cmd"
    )]
    NoCommand,
    /// The image's `User` cannot be resolved.
    #[error("image user {user:?} cannot be resolved: {reason}")]
    BadUser {
        /// The configured user.
        user: String,
        /// Why.
        reason: String,
    },
    /// A part of the runtime spec could not be built.
    #[error("cannot build the runtime spec")]
    Spec(#[from] oci_spec::OciSpecError),
    /// Writing the bundle failed.
    #[error("cannot write bundle file {path}")]
    Write {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Serialising the spec failed.
    #[error("cannot serialise runtime spec for {path}")]
    Serialize {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The durable write of `config.json` failed.
    #[error("cannot write the bundle's config.json")]
    Durable(#[from] DurableError),
}

/// Inputs of [`build_spec`].
#[derive(Debug, Clone)]
pub struct BundleInputs<'a> {
    /// Container id (also the hostname suffix).
    pub container_id: &'a str,
    /// The validated job spec.
    pub spec: &'a JobSpec,
    /// The imported image.
    pub image: &'a ImportedImage,
    /// Host directory mounted read-write at `/scratch`.
    pub scratch_dir: &'a Path,
    /// cgroup path for the runtime (e.g. `/plinth/<id>`).
    pub cgroups_path: &'a str,
    /// Whether swap can be limited (cgroup v1 `memory.memsw.*` present, or v2).
    pub limit_swap: bool,
}

/// The uid/gid the job will run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Reads `etc/<file>` below the rootfs, refusing symlinks on the way.
fn read_rootfs_etc(rootfs: &Path, file: &str) -> Option<String> {
    let etc = rootfs.join("etc");
    if fs::symlink_metadata(&etc).ok()?.file_type().is_symlink() {
        return None;
    }
    let path = etc.join(file);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_file() || meta.size() > 4 * 1024 * 1024 {
        return None;
    }
    fs::read_to_string(path).ok()
}

fn lookup_name(db: Option<&str>, name: &str) -> Option<(u32, u32)> {
    db?.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Resolves the image's `User` to a non-root uid/gid.
///
/// Names are looked up in the image's `/etc/passwd` and `/etc/group`. Root
/// (or no user at all) becomes 65534:65534.
pub fn resolve_user(image: &ImportedImage) -> Result<JobUser, BundleError> {
    let configured = image
        .record
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let nobody = JobUser {
        uid: NOBODY,
        gid: NOBODY,
    };
    if configured.is_empty() {
        return Ok(nobody);
    }
    let bad = |reason: &str| BundleError::BadUser {
        user: configured.clone(),
        reason: reason.to_string(),
    };
    let (user_part, group_part) = match configured.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (configured.as_str(), None),
    };
    let passwd = read_rootfs_etc(&image.rootfs, "passwd");
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .as_deref()
                .and_then(|db| {
                    db.lines().find_map(|line| {
                        let fields: Vec<&str> = line.split(':').collect();
                        (fields.len() >= 4 && fields[2] == user_part)
                            .then(|| fields[3].parse().ok())?
                    })
                })
                .unwrap_or(uid),
        ),
        Err(_) => lookup_name(passwd.as_deref(), user_part)
            .ok_or_else(|| bad("not in the image's /etc/passwd"))?,
    };
    let gid = match group_part {
        None => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_rootfs_etc(&image.rootfs, "group");
                groups
                    .as_deref()
                    .and_then(|db| {
                        db.lines().find_map(|line| {
                            let fields: Vec<&str> = line.split(':').collect();
                            (fields.len() >= 3 && fields[0] == group)
                                .then(|| fields[2].parse().ok())?
                        })
                    })
                    .ok_or_else(|| bad("group not in the image's /etc/group"))?
            }
        },
    };
    if uid == 0 {
        return Ok(nobody);
    }
    Ok(JobUser {
        uid,
        gid: if gid == 0 { NOBODY } else { gid },
    })
}

/// Syscalls refused with EPERM (kernel attack surface or privileged operations).
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "_sysctl",
];

/// Namespace flags refused in `clone(2)` (new namespaces are not for jobs).
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0000_0080, // CLONE_NEWTIME
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// Seccomp architectures of this host (the native one and its compat ABIs).
fn seccomp_architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
    }
}

/// The default seccomp profile: allow by default, deny the listed syscalls,
/// refuse namespace-creating `clone` flags, and make `clone3` return ENOSYS
/// so that libc falls back to the filtered `clone`.
pub fn default_seccomp() -> Result<LinuxSeccomp, BundleError> {
    let mut syscalls = vec![
        LinuxSyscallBuilder::default()
            .names(
                DENIED_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(1u32)
            .build()?,
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(38u32)
            .build()?,
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(1u32)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(*flag)
                        .value_two(*flag)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()?,
                ])
                .build()?,
        );
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(seccomp_architectures())
        .syscalls(syscalls)
        .build()?)
}

/// A mount of the sandbox.
fn mount(
    destination: &str,
    typ: &str,
    source: &Path,
    options: &[&str],
) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// `/proc` paths masked in the container (as Docker does).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// `/proc` paths mounted read-only in the container (as Docker does).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Builds the OCI runtime spec of a job (before CDI edits).
///
/// Every field that matters to the sandbox is set explicitly: the builders
/// of `oci-spec` fall back to its `Default`s (which grant capabilities, for
/// instance) for anything left unset.
pub fn build_spec(inputs: &BundleInputs<'_>) -> Result<Spec, BundleError> {
    let spec = inputs.spec;
    let image_config = inputs
        .image
        .record
        .config
        .config()
        .clone()
        .unwrap_or_default();
    let args: Vec<String> = if spec.command.is_empty() {
        let mut args = image_config.entrypoint().clone().unwrap_or_default();
        args.extend(image_config.cmd().clone().unwrap_or_default());
        args
    } else {
        spec.command.clone()
    };
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let mut env: Vec<String> = image_config.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    }
    for (name, value) in &spec.env {
        let prefix = format!("{name}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{name}={value}"));
    }
    let cwd = spec
        .workdir
        .as_ref()
        .map(|w| w.display().to_string())
        .or_else(|| {
            image_config
                .working_dir()
                .clone()
                .filter(|w| w.starts_with('/'))
        })
        .unwrap_or_else(|| "/".to_string());
    let user = resolve_user(inputs.image)?;
    let memory = spec.resources.memory_bytes;
    let tmp_size = (memory / 2).clamp(16 * 1024 * 1024, 1024 * 1024 * 1024);
    let mut namespace_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if spec.network == Network::None {
        namespace_types.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespace_types
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    let memory_limit = i64::try_from(memory).unwrap_or(i64::MAX);
    let mut memory_limits = LinuxMemoryBuilder::default().limit(memory_limit);
    if inputs.limit_swap {
        memory_limits = memory_limits.swap(memory_limit);
    }
    let mut resources = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()?,
        ])
        .memory(memory_limits.build()?)
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::from(spec.resources.pids))
                .build()?,
        );
    if let Some(cpu) = spec.resources.cpu {
        let period: u64 = 100_000;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota((cpu * period as f64).round() as i64)
                .period(period)
                .build()?,
        );
    }
    let no_capabilities = || -> Capabilities { Capabilities::new() };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(user.uid).gid(user.gid).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(no_capabilities())
                .effective(no_capabilities())
                .inheritable(no_capabilities())
                .permitted(no_capabilities())
                .ambient(no_capabilities())
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(4096u64)
                .soft(4096u64)
                .build()?,
        ])
        .no_new_privileges(true)
        .oom_score_adj(500)
        .build()?;
    let tmp_size_option = format!("size={tmp_size}");
    let mounts = vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "mode=1777", &tmp_size_option],
        )?,
        mount(
            "/scratch",
            "bind",
            inputs.scratch_dir,
            &["rbind", "rw", "nosuid", "nodev"],
        )?,
    ];
    let to_strings = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(inputs.cgroups_path)
        .resources(resources.build()?)
        .seccomp(default_seccomp()?)
        .masked_paths(to_strings(MASKED_PATHS))
        .readonly_paths(to_strings(READONLY_PATHS))
        .build()?;
    let hostname = format!(
        "plinth-{}",
        &inputs.container_id[..inputs.container_id.len().min(12)]
    );
    let mut runtime_spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(inputs.image.rootfs.clone())
                .readonly(true)
                .build()?,
        )
        .hostname(hostname)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    // The builder's default is an empty map; the spec carries none.
    runtime_spec.set_annotations(None);
    Ok(runtime_spec)
}

/// Writes `config.json` into the bundle directory.
pub fn write_bundle(bundle_dir: &Path, spec: &Spec) -> Result<PathBuf, BundleError> {
    fs::create_dir_all(bundle_dir).map_err(|source| BundleError::Write {
        path: bundle_dir.to_path_buf(),
        source,
    })?;
    let path = bundle_dir.join("config.json");
    let bytes = serde_json::to_vec(spec).map_err(|source| BundleError::Serialize {
        path: path.clone(),
        source,
    })?;
    durable::write(&path, &bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use oci_spec::image::ImageConfiguration;
    use serde_json::json;

    use super::*;
    use crate::image::ImageRecord;
    use crate::spec::{GpuRequest, ImageRef, ImageSource, Outputs, Resources};

    fn image(user: Option<&str>, rootfs: &Path) -> ImportedImage {
        let mut config_json = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/bin", "A=1"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        if let Some(user) = user {
            config_json["config"]["User"] = user.into();
        }
        let config: ImageConfiguration = serde_json::from_value(config_json).unwrap();
        ImportedImage {
            record: ImageRecord {
                image_id: format!("sha256:{}", "0".repeat(64)),
                config_digest: format!("sha256:{}", "1".repeat(64)),
                config,
                origin: None,
                size_bytes: 0,
            },
            rootfs: rootfs.to_path_buf(),
            cached: true,
        }
    }

    fn job() -> JobSpec {
        JobSpec {
            format: "plinth-job/1".into(),
            image: ImageRef {
                source: ImageSource::OciLayout,
                path: "/img".into(),
                reference: None,
                digest: None,
            },
            command: vec![],
            env: BTreeMap::from([("A".to_string(), "2".to_string())]),
            workdir: None,
            gpus: GpuRequest::default(),
            resources: Resources {
                cpu: Some(0.5),
                memory_bytes: 64 << 20,
                pids: 32,
                max_duration_s: 10,
            },
            network: Network::None,
            outputs: Outputs::default(),
        }
    }

    #[test]
    fn spec_has_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(None, dir.path());
        let job = job();
        let inputs = BundleInputs {
            container_id: "job-1",
            spec: &job,
            image: &image,
            scratch_dir: Path::new("/var/lib/plinth/jobs/job-1/scratch"),
            cgroups_path: "/plinth/job-1",
            limit_swap: false,
        };
        let spec = build_spec(&inputs).unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["process"]["args"], json!(["/bin/sh", "-c", "true"]));
        assert_eq!(value["process"]["user"]["uid"], json!(NOBODY));
        assert_eq!(value["process"]["noNewPrivileges"], json!(true));
        assert_eq!(value["process"]["capabilities"]["bounding"], json!([]));
        let env = value["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=2")) && !env.contains(&json!("A=1")));
        assert_eq!(value["root"]["readonly"], json!(true));
        let namespaces: Vec<&str> = value["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(namespaces.contains(&"network") && namespaces.contains(&"pid"));
        assert_eq!(
            value["linux"]["resources"]["memory"]["limit"],
            json!(64 << 20)
        );
        assert_eq!(value["linux"]["resources"]["pids"]["limit"], json!(32));
        assert_eq!(value["linux"]["resources"]["cpu"]["quota"], json!(50_000));
        assert_eq!(
            value["linux"]["seccomp"]["defaultAction"],
            json!("SCMP_ACT_ALLOW")
        );
    }

    #[test]
    fn users_resolve_to_non_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let check = |user: Option<&str>| resolve_user(&image(user, dir.path()));
        assert_eq!(
            check(None).unwrap(),
            JobUser {
                uid: NOBODY,
                gid: NOBODY
            }
        );
        assert_eq!(
            check(Some("root")).unwrap(),
            JobUser {
                uid: NOBODY,
                gid: NOBODY
            }
        );
        assert_eq!(
            check(Some("0:0")).unwrap(),
            JobUser {
                uid: NOBODY,
                gid: NOBODY
            }
        );
        assert_eq!(
            check(Some("app")).unwrap(),
            JobUser {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            check(Some("1000")).unwrap(),
            JobUser {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            check(Some("app:staff")).unwrap(),
            JobUser { uid: 1000, gid: 50 }
        );
        assert_eq!(check(Some("42:43")).unwrap(), JobUser { uid: 42, gid: 43 });
        assert!(matches!(
            check(Some("ghost")),
            Err(BundleError::BadUser { .. })
        ));
    }
}
