//! Re-validation of a job's runtime bundle (`config.json`) before the runner
//! starts it as root.
//!
//! The agent built the bundle (`plinth_jobs::bundle`, CDI edits from
//! `plinth_jobs::cdi`), but the agent faces the network, so the runner checks
//! the result against its own rules instead of trusting it:
//!
//! - the root file system is an image of the cache (`<64 hex>/rootfs` under an image dir
//!   with its `image.json`), mounted read-only, reached without symlinks;
//! - the process gets no capabilities beyond the configured set (none by
//!   default), `noNewPrivileges`, no terminal, no negative OOM score, no
//!   real-time scheduler;
//! - new pid, ipc, uts, mount, cgroup and (unless the runner allows host
//!   networking) network namespaces, none joined by path, and no user or time
//!   namespace;
//! - mounts: the kernel file systems of the sandbox (proc at `/proc`, sysfs and
//!   cgroup read-only, tmpfs, devpts, mqueue), the job's own scratch
//!   directory, the CDI mounts of the job's devices, and read-only binds of the
//!   configured `allowed_mounts`; nothing else;
//! - devices, device cgroup rules and hooks: only those the runner's own CDI
//!   specs produce for the devices the job names, after a deny-all rule;
//! - Docker's masked and read-only paths kept, a seccomp profile present, no
//!   sysctls, no network devices, the cgroup the runner expects.
//!
//! Every refusal names the field and the value ([`Refusal`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, Hook, Hooks, LinuxDevice, LinuxDeviceCgroup, LinuxNamespaceType,
    Mount, Spec,
};
use plinth_jobs::bundle::{MASKED_PATHS, READONLY_PATHS};
use plinth_jobs::cdi::CdiRegistry;

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The root file system is not an image of the cache.
    #[error("root.path {path}: {reason}")]
    Rootfs {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A capability beyond the allowed set.
    #[error("process.capabilities.{set}: {capability} is not allowed (allowed: {allowed})")]
    Capability {
        /// The set (`bounding`, ...).
        set: &'static str,
        /// The capability.
        capability: String,
        /// What the runner allows.
        allowed: String,
    },
    /// A field that makes the container privileged or escapes the sandbox.
    #[error("{field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A namespace missing, shared with the host or not allowed.
    #[error("linux.namespaces: {reason}")]
    Namespace {
        /// Why.
        reason: String,
    },
    /// A mount not on the allow-list.
    #[error("mounts: {destination} from {host_path} (type {typ}) is not allowed: {reason}")]
    Mount {
        /// Destination in the container.
        destination: String,
        /// Source on the host.
        host_path: String,
        /// File system type.
        typ: String,
        /// Why.
        reason: String,
    },
    /// A device not produced by the runner's CDI specs.
    #[error(
        "linux.devices: {path} ({major}:{minor}) is not a device of the runner's CDI specs for this job"
    )]
    Device {
        /// Path in the container.
        path: String,
        /// Major number.
        major: i64,
        /// Minor number.
        minor: i64,
    },
    /// A device cgroup rule not produced by the runner's CDI specs.
    #[error("linux.resources.devices: {rule}")]
    DeviceRule {
        /// The rule and why.
        rule: String,
    },
    /// A hook not produced by the runner's CDI specs.
    #[error("hooks.{phase}: {path} is not a hook of the runner's CDI specs for this job")]
    Hook {
        /// Hook phase.
        phase: &'static str,
        /// The executable.
        path: String,
    },
    /// The job's CDI devices do not resolve in the runner's specs.
    #[error("the job's CDI devices {devices:?}: {reason}")]
    Cdi {
        /// The names.
        devices: Vec<String>,
        /// Why.
        reason: String,
    },
}

/// What the runner allows for one job.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// The job directory (validated; its `scratch` may be mounted).
    pub job_dir: &'a Path,
    /// Image cache directories.
    pub image_dirs: &'a [PathBuf],
    /// Host paths that may be bind-mounted read-only.
    pub allowed_mounts: &'a [PathBuf],
    /// Capabilities a job may have (none by default).
    pub allowed_capabilities: &'a HashSet<Capability>,
    /// Whether the host network namespace may be shared.
    pub allow_host_network: bool,
    /// The `cgroupsPath` the runner expects.
    pub cgroups_path: &'a str,
    /// The runner's CDI specs.
    pub cdi: &'a CdiRegistry,
    /// The CDI device names the job was assigned (from its `job.json`).
    pub cdi_devices: &'a [String],
}

/// What the runner's CDI specs produce for the job's devices.
#[derive(Debug, Default)]
struct CdiAllowance {
    devices: Vec<LinuxDevice>,
    rules: Vec<LinuxDeviceCgroup>,
    mounts: Vec<Mount>,
    hooks: Vec<(&'static str, Hook)>,
}

fn hook_phases(hooks: &Hooks) -> Vec<(&'static str, Hook)> {
    let mut all = Vec::new();
    #[allow(deprecated)]
    let prestart = hooks.prestart();
    for (phase, list) in [
        ("prestart", prestart),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ] {
        for hook in list.iter().flatten() {
            all.push((phase, hook.clone()));
        }
    }
    all
}

fn cdi_allowance(policy: &Policy<'_>) -> Result<CdiAllowance, Refusal> {
    if policy.cdi_devices.is_empty() {
        return Ok(CdiAllowance::default());
    }
    let cdi_refusal = |reason: String| Refusal::Cdi {
        devices: policy.cdi_devices.to_vec(),
        reason,
    };
    // Apply the runner's specs to an empty spec: what appears is exactly what
    // CDI adds for these devices.
    let mut base = Spec::default();
    base.set_mounts(Some(Vec::new()));
    base.set_hooks(None);
    let mut linux = base.linux().clone().unwrap_or_default();
    linux.set_devices(None);
    linux.set_resources(None);
    base.set_linux(Some(linux));
    let applied = policy
        .cdi
        .apply(&base, policy.cdi_devices)
        .map_err(|err| cdi_refusal(plinth_toolbox::error_chain(&err)))?;
    let linux = applied.linux().clone().unwrap_or_default();
    Ok(CdiAllowance {
        devices: linux.devices().clone().unwrap_or_default(),
        rules: linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .unwrap_or_default(),
        mounts: applied.mounts().clone().unwrap_or_default(),
        hooks: applied
            .hooks()
            .as_ref()
            .map(hook_phases)
            .unwrap_or_default(),
    })
}

/// `CAP_NAME`, as runc and capabilities(7) spell it.
fn capability_name(capability: &Capability) -> String {
    let name = capability.to_string();
    if name.starts_with("CAP_") {
        name
    } else {
        format!("CAP_{name}")
    }
}

fn capability_names(set: &HashSet<Capability>) -> String {
    if set.is_empty() {
        return "none".to_owned();
    }
    let mut names: Vec<String> = set.iter().map(capability_name).collect();
    names.sort();
    names.join(", ")
}

/// Checks the root file system: `<image dir>/<64 hex>/rootfs` of a complete
/// cache entry, no symlinks on the way, mounted read-only.
fn check_rootfs(spec: &Spec, policy: &Policy<'_>) -> Result<(), Refusal> {
    let Some(root) = spec.root() else {
        return Err(Refusal::Field {
            field: "root",
            reason: "missing".to_owned(),
        });
    };
    let path = root.path();
    let refuse = |reason: &str| Refusal::Rootfs {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    if !path.is_absolute() {
        return Err(refuse("must be absolute"));
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|err| refuse(&format!("cannot resolve: {err}")))?;
    if &canonical != path {
        return Err(refuse(&format!(
            "reaches {} through a symlink",
            canonical.display()
        )));
    }
    // Any depth below an image directory: the agent owns the cache, so a stricter
    // placement rule would add nothing; what counts is that it is not host files.
    let in_cache = policy
        .image_dirs
        .iter()
        .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| canonical.starts_with(dir)));
    if !in_cache {
        return Err(refuse("is not an image of the runner's image_dirs"));
    }
    let entry = canonical.parent().unwrap_or(Path::new("/"));
    let hex_ok = entry.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.len() == 64
            && n.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if canonical.file_name() != Some(std::ffi::OsStr::new("rootfs")) || !hex_ok {
        return Err(refuse("is not <image dir>/<64 hex>/rootfs"));
    }
    if !entry.join("image.json").is_file() {
        return Err(refuse(
            "belongs to an incomplete cache entry (no image.json)",
        ));
    }
    if root.readonly() != Some(true) {
        return Err(Refusal::Field {
            field: "root.readonly",
            reason: "must be true (the image cache is shared)".to_owned(),
        });
    }
    Ok(())
}

fn check_process(spec: &Spec, policy: &Policy<'_>) -> Result<(), Refusal> {
    let Some(process) = spec.process() else {
        return Err(Refusal::Field {
            field: "process",
            reason: "missing".to_owned(),
        });
    };
    let Some(capabilities) = process.capabilities() else {
        return Err(Refusal::Field {
            field: "process.capabilities",
            reason: "missing: the runtime would keep every capability of root".to_owned(),
        });
    };
    let sets: [(&'static str, &Option<Capabilities>); 5] = [
        ("bounding", capabilities.bounding()),
        ("effective", capabilities.effective()),
        ("permitted", capabilities.permitted()),
        ("inheritable", capabilities.inheritable()),
        ("ambient", capabilities.ambient()),
    ];
    for (set, caps) in sets {
        let mut refused: Vec<String> = caps
            .iter()
            .flatten()
            .filter(|capability| !policy.allowed_capabilities.contains(*capability))
            .map(capability_name)
            .collect();
        refused.sort();
        if let Some(capability) = refused.into_iter().next() {
            return Err(Refusal::Capability {
                set,
                capability,
                allowed: capability_names(policy.allowed_capabilities),
            });
        }
    }
    if capabilities.bounding().is_none() {
        return Err(Refusal::Field {
            field: "process.capabilities.bounding",
            reason: "missing: the bounding set would not be reduced".to_owned(),
        });
    }
    if process.no_new_privileges() != Some(true) {
        return Err(Refusal::Field {
            field: "process.noNewPrivileges",
            reason: "must be true".to_owned(),
        });
    }
    if process.terminal() == Some(true) {
        return Err(Refusal::Field {
            field: "process.terminal",
            reason: "jobs have no terminal".to_owned(),
        });
    }
    if let Some(adj) = process.oom_score_adj()
        && adj < 0
    {
        return Err(Refusal::Field {
            field: "process.oomScoreAdj",
            reason: format!("{adj} would protect the job from the OOM killer"),
        });
    }
    if process.scheduler().is_some() {
        return Err(Refusal::Field {
            field: "process.scheduler",
            reason: "jobs get the default scheduler".to_owned(),
        });
    }
    Ok(())
}

fn check_namespaces(spec: &Spec, policy: &Policy<'_>) -> Result<(), Refusal> {
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for namespace in &namespaces {
        if let Some(path) = namespace.path() {
            return Err(Refusal::Namespace {
                reason: format!(
                    "{:?} joins the existing namespace {} (host namespaces are not allowed)",
                    namespace.typ(),
                    path.display()
                ),
            });
        }
        if matches!(
            namespace.typ(),
            LinuxNamespaceType::User | LinuxNamespaceType::Time
        ) {
            return Err(Refusal::Namespace {
                reason: format!(
                    "a {:?} namespace is not part of the sandbox",
                    namespace.typ()
                ),
            });
        }
    }
    let has = |typ: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == typ);
    for (typ, name) in [
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Mount, "mount"),
        (LinuxNamespaceType::Cgroup, "cgroup"),
    ] {
        if !has(typ) {
            return Err(Refusal::Namespace {
                reason: format!("no new {name} namespace: the job would share the host's"),
            });
        }
    }
    if !has(LinuxNamespaceType::Network) && !policy.allow_host_network {
        return Err(Refusal::Namespace {
            reason: "no new network namespace: the job would share the host's network, which \
                     this runner does not allow (allow_host_network = false)"
                .to_owned(),
        });
    }
    Ok(())
}

/// Kernel file systems of the sandbox: (type, allowed destinations, must be read-only).
const KERNEL_MOUNTS: &[(&str, &[&str], bool)] = &[
    ("proc", &["/proc"], false),
    ("sysfs", &["/sys"], true),
    ("cgroup", &["/sys/fs/cgroup"], true),
    ("cgroup2", &["/sys/fs/cgroup"], true),
    ("devpts", &["/dev/pts"], false),
    ("mqueue", &["/dev/mqueue"], false),
];

fn check_mount(
    mount: &Mount,
    policy: &Policy<'_>,
    allowance: &CdiAllowance,
) -> Result<(), Refusal> {
    let typ = mount.typ().clone().unwrap_or_else(|| "bind".to_owned());
    let options = mount.options().clone().unwrap_or_default();
    let source = mount.source().clone().unwrap_or_default();
    let destination = mount.destination().display().to_string();
    let refuse = |reason: String| Refusal::Mount {
        destination: destination.clone(),
        host_path: source.display().to_string(),
        typ: typ.clone(),
        reason,
    };
    let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        if source.is_absolute() {
            return Err(refuse(
                "a non-bind mount may not name a host path".to_owned(),
            ));
        }
        if typ == "tmpfs" {
            return Ok(());
        }
        let Some((_, destinations, read_only)) = KERNEL_MOUNTS.iter().find(|(t, _, _)| *t == typ)
        else {
            return Err(refuse("not a file system of the sandbox".to_owned()));
        };
        if !destinations.contains(&destination.as_str()) {
            return Err(refuse(format!(
                "{typ} belongs at {}",
                destinations.join(" or ")
            )));
        }
        if *read_only && !options.iter().any(|o| o == "ro") {
            return Err(refuse("must be read-only".to_owned()));
        }
        return Ok(());
    }
    if allowance.mounts.iter().any(|m| m == mount) {
        return Ok(());
    }
    let canonical = std::fs::canonicalize(&source)
        .map_err(|err| refuse(format!("cannot resolve the source: {err}")))?;
    if canonical != source {
        return Err(refuse(format!(
            "the source reaches {} through a symlink",
            canonical.display()
        )));
    }
    if canonical == policy.job_dir.join("scratch") {
        if destination != "/scratch" {
            return Err(refuse(
                "the job's scratch directory belongs at /scratch".to_owned(),
            ));
        }
        return Ok(());
    }
    if policy
        .allowed_mounts
        .iter()
        .any(|allowed| canonical.starts_with(allowed))
    {
        if !options.iter().any(|o| o == "ro") {
            return Err(refuse(
                "allowed_mounts are mounted read-only only".to_owned(),
            ));
        }
        return Ok(());
    }
    Err(refuse(
        "a host path outside the job's scratch directory, its CDI mounts and allowed_mounts"
            .to_owned(),
    ))
}

fn check_devices(spec: &Spec, allowance: &CdiAllowance) -> Result<(), Refusal> {
    let linux = spec.linux().clone().unwrap_or_default();
    for device in linux.devices().iter().flatten() {
        if !allowance.devices.contains(device) {
            return Err(Refusal::Device {
                path: device.path().display().to_string(),
                major: device.major(),
                minor: device.minor(),
            });
        }
    }
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let deny_all = rules.first().is_some_and(|rule| {
        !rule.allow()
            && rule.major().is_none()
            && rule.minor().is_none()
            && rule
                .typ()
                .is_none_or(|t| t == oci_spec::runtime::LinuxDeviceType::A)
            && rule.access().as_deref().is_none_or(|a| a == "rwm")
    });
    if !deny_all {
        return Err(Refusal::DeviceRule {
            rule: "the first rule must deny every device (allow: false, access rwm)".to_owned(),
        });
    }
    for rule in rules.iter().skip(1) {
        if rule.allow() && !allowance.rules.contains(rule) {
            return Err(Refusal::DeviceRule {
                rule: format!(
                    "allows {:?} {}:{} which is not a device of the runner's CDI specs for this job",
                    rule.typ(),
                    rule.major().map_or("*".to_owned(), |m| m.to_string()),
                    rule.minor().map_or("*".to_owned(), |m| m.to_string()),
                ),
            });
        }
    }
    Ok(())
}

fn check_linux(spec: &Spec, policy: &Policy<'_>) -> Result<(), Refusal> {
    let Some(linux) = spec.linux() else {
        return Err(Refusal::Field {
            field: "linux",
            reason: "missing".to_owned(),
        });
    };
    let field = |field: &'static str, reason: &str| Refusal::Field {
        field,
        reason: reason.to_owned(),
    };
    if linux.cgroups_path().as_deref() != Some(Path::new(policy.cgroups_path)) {
        return Err(Refusal::Field {
            field: "linux.cgroupsPath",
            reason: format!(
                "{:?} is not the job's cgroup {}",
                linux.cgroups_path(),
                policy.cgroups_path
            ),
        });
    }
    if linux.seccomp().is_none() {
        return Err(field(
            "linux.seccomp",
            "missing: jobs run under a seccomp profile",
        ));
    }
    let masked = linux.masked_paths().clone().unwrap_or_default();
    if let Some(missing) = MASKED_PATHS
        .iter()
        .find(|p| !masked.iter().any(|m| m == *p))
    {
        return Err(Refusal::Field {
            field: "linux.maskedPaths",
            reason: format!("{missing} must stay masked"),
        });
    }
    let readonly = linux.readonly_paths().clone().unwrap_or_default();
    if let Some(missing) = READONLY_PATHS
        .iter()
        .find(|p| !readonly.iter().any(|m| m == *p))
    {
        return Err(Refusal::Field {
            field: "linux.readonlyPaths",
            reason: format!("{missing} must stay read-only"),
        });
    }
    if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(field("linux.sysctl", "jobs set no sysctls"));
    }
    if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
        return Err(field("linux.uidMappings", "jobs have no user namespace"));
    }
    if linux.net_devices().is_some() {
        return Err(field(
            "linux.netDevices",
            "host network devices stay on the host",
        ));
    }
    if linux.intel_rdt().is_some() {
        return Err(field("linux.intelRdt", "not used by jobs"));
    }
    if let Some(propagation) = linux.rootfs_propagation()
        && !matches!(
            propagation.as_str(),
            "private" | "rprivate" | "slave" | "rslave"
        )
    {
        return Err(Refusal::Field {
            field: "linux.rootfsPropagation",
            reason: format!("{propagation:?} would propagate mounts to the host"),
        });
    }
    Ok(())
}

/// Checks a job's runtime spec against the runner's policy.
pub fn check_spec(spec: &Spec, policy: &Policy<'_>) -> Result<(), Refusal> {
    let allowance = cdi_allowance(policy)?;
    check_rootfs(spec, policy)?;
    check_process(spec, policy)?;
    check_namespaces(spec, policy)?;
    check_linux(spec, policy)?;
    for mount in spec.mounts().iter().flatten() {
        check_mount(mount, policy, &allowance)?;
    }
    check_devices(spec, &allowance)?;
    for (phase, hook) in spec.hooks().as_ref().map(hook_phases).unwrap_or_default() {
        if !allowance
            .hooks
            .iter()
            .any(|(p, h)| *p == phase && *h == hook)
        {
            return Err(Refusal::Hook {
                phase,
                path: hook.path().display().to_string(),
            });
        }
    }
    Ok(())
}
