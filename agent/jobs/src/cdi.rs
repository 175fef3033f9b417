//! Container Device Interface (CDI): the host's device specs (as generated
//! by `nvidia-ctk cdi generate`) and their application to a runtime spec.
//!
//! Spec files (`*.json`, `*.yaml`, `*.yml`) are read from the configured
//! directories in order; a device defined in a later directory replaces the
//! same fully-qualified device from an earlier one (the default order,
//! `/etc/cdi` then `/var/run/cdi`, gives the dynamic directory priority, as
//! the CDI reference implementation does). A file that does not parse is
//! skipped and reported, so one broken vendor file does not hide the others.
//!
//! Only the devices assigned to the job are applied: their own
//! `containerEdits` and, once per spec file involved, the spec-wide ones.
//! Edits are applied to the typed runtime spec ([`oci_spec::runtime::Spec`]).
//!
//! **Versions.** A spec file's `cdiVersion` must be one this module
//! implements: [`MIN_CDI_VERSION`] to [`MAX_CDI_VERSION`] (0.3.0 to 0.8.0).
//! Those versions add, in order: mount `type` (0.4.0), device node `hostPath`
//! (0.5.0), `annotations` (0.6.0), `additionalGids` and `intelRdt` (0.7.0),
//! nothing to the format (0.8.0). All of them are applied except `intelRdt`,
//! which a file may not use (it is refused, naming the file); a file of
//! another version, older or newer, is refused with its version named, rather
//! than silently applied in part.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Hook, HookBuilder, Hooks, LinuxBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, MountBuilder, ProcessBuilder, Spec,
};
use serde::{Deserialize, Serialize};

/// Default CDI spec directories, lowest priority first.
pub const DEFAULT_CDI_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// Oldest `cdiVersion` accepted.
pub const MIN_CDI_VERSION: (u64, u64, u64) = (0, 3, 0);
/// Newest `cdiVersion` accepted.
pub const MAX_CDI_VERSION: (u64, u64, u64) = (0, 8, 0);

/// Largest CDI spec file read.
const MAX_CDI_FILE: u64 = 4 * 1024 * 1024;

/// Errors from loading CDI specs or applying them.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// A CDI file could not be read.
    #[error("cannot read CDI spec {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A CDI file is not valid JSON.
    #[error("cannot parse CDI spec {path} as JSON")]
    ParseJson {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A CDI file is not valid YAML.
    #[error("cannot parse CDI spec {path} as YAML")]
    ParseYaml {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A CDI file parses but has invalid content.
    #[error("CDI spec {path} is invalid: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A device name is not `vendor.com/class=name`.
    #[error("{name:?} is not a fully-qualified CDI device name (vendor.com/class=device)")]
    BadDeviceName {
        /// The name.
        name: String,
    },
    /// No loaded spec defines the device.
    #[error("CDI device {name:?} is not defined in any spec under {dirs}")]
    UnknownDevice {
        /// The device.
        name: String,
        /// Directories searched.
        dirs: String,
    },
    /// A device node's host path cannot be inspected.
    #[error("cannot stat CDI device node {path}")]
    DeviceNode {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A CDI file's `cdiVersion` is not one this module implements.
    #[error("CDI spec {path} has cdiVersion {version:?}; supported are 0.3.0 to 0.8.0")]
    UnsupportedVersion {
        /// File.
        path: PathBuf,
        /// The version it declares.
        version: String,
    },
    /// A part of the edited runtime spec could not be built.
    #[error("cannot build the runtime spec's CDI edits")]
    Spec(#[from] OciSpecError),
}

/// One device node edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host (default: `path`).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `b` or `p`; default: from the host node.
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    /// Major number; default: from the host node.
    #[serde(default)]
    pub major: Option<i64>,
    /// Minor number; default: from the host node.
    #[serde(default)]
    pub minor: Option<i64>,
    /// File mode of the node in the container.
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// cgroup permissions (`rwm` subset); default `rwm`.
    #[serde(default)]
    pub permissions: Option<String>,
    /// Owner uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Owner gid.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// One mount edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    /// Host path.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// Mount options.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    /// File system type (default `bind`).
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
}

/// One OCI hook edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiHook {
    /// OCI hook point (`createContainer`, `startContainer`, ...).
    pub hook_name: String,
    /// Executable on the host.
    pub path: String,
    /// Arguments (including argv\[0\]).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Timeout in seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// Edits CDI applies to a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=value` environment entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Hooks.
    #[serde(default)]
    pub hooks: Vec<CdiHook>,
    /// Mounts.
    #[serde(default)]
    pub mounts: Vec<CdiMount>,
    /// Supplementary groups (CDI 0.7.0).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Intel RDT (CDI 0.7.0): not applied; a file using it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
    /// Network devices (newer than 0.8.0): not applied; refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_devices: Option<serde_json::Value>,
}

/// One device of a CDI spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    /// Device name (the part after `=`).
    pub name: String,
    /// Annotations added to the container when this device is used (CDI 0.6.0).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Its edits.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// A CDI spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiSpec {
    /// CDI version (`0.3.0` ... `0.8.0` accepted).
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    /// Annotations added to the container when any device of this spec is
    /// used (CDI 0.6.0).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<CdiDevice>,
    /// Edits applied whenever any device of this spec is used.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

fn valid_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    !vendor.is_empty()
        && !class.is_empty()
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

impl CdiSpec {
    /// Parses a CDI spec (JSON or YAML, by file name) and checks it.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<CdiSpec, CdiError> {
        let is_json = path.extension().is_some_and(|e| e == "json");
        let spec: CdiSpec = if is_json {
            serde_json::from_slice(bytes).map_err(|source| CdiError::ParseJson {
                path: path.to_path_buf(),
                source,
            })?
        } else {
            serde_yaml_ng::from_slice(bytes).map_err(|source| CdiError::ParseYaml {
                path: path.to_path_buf(),
                source,
            })?
        };
        spec.check(path)?;
        Ok(spec)
    }

    fn check(&self, path: &Path) -> Result<(), CdiError> {
        let invalid = |reason: String| CdiError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        match parse_version(&self.cdi_version) {
            Some(version) if (MIN_CDI_VERSION..=MAX_CDI_VERSION).contains(&version) => {}
            _ => {
                return Err(CdiError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    version: self.cdi_version.clone(),
                });
            }
        }
        if !valid_kind(&self.kind) {
            return Err(invalid(format!(
                "kind {:?} is not vendor.com/class",
                self.kind
            )));
        }
        let mut edits = vec![("(spec)", &self.container_edits)];
        for device in &self.devices {
            if !valid_device_name(&device.name) {
                return Err(invalid(format!("device name {:?} is invalid", device.name)));
            }
            edits.push((device.name.as_str(), &device.container_edits));
        }
        for (owner, edit) in edits {
            for node in &edit.device_nodes {
                if !node.path.starts_with('/') {
                    return Err(invalid(format!(
                        "{owner}: device node path {:?} is not absolute",
                        node.path
                    )));
                }
            }
            for mount in &edit.mounts {
                if !mount.container_path.starts_with('/') || !mount.host_path.starts_with('/') {
                    return Err(invalid(format!(
                        "{owner}: mount {:?} -> {:?} is not absolute",
                        mount.host_path, mount.container_path
                    )));
                }
            }
            for hook in &edit.hooks {
                if hook_key(&hook.hook_name).is_none() {
                    return Err(invalid(format!(
                        "{owner}: unknown hook name {:?}",
                        hook.hook_name
                    )));
                }
                if !hook.path.starts_with('/') {
                    return Err(invalid(format!(
                        "{owner}: hook path {:?} is not absolute",
                        hook.path
                    )));
                }
            }
            for env in &edit.env {
                if !env.contains('=') {
                    return Err(invalid(format!("{owner}: env entry {env:?} has no `=`")));
                }
            }
            if edit.intel_rdt.is_some() {
                return Err(invalid(format!(
                    "{owner}: intelRdt edits are not supported"
                )));
            }
            if edit.net_devices.is_some() {
                return Err(invalid(format!(
                    "{owner}: netDevices edits are not supported"
                )));
            }
        }
        Ok(())
    }
}

/// Parses `MAJOR.MINOR.PATCH` (no pre-release or build suffix).
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('.');
    let mut number = || -> Option<u64> {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let version = (number()?, number()?, number()?);
    parts.next().is_none().then_some(version)
}

fn hook_key(name: &str) -> Option<&'static str> {
    Some(match name {
        "prestart" => "prestart",
        "createRuntime" => "createRuntime",
        "createContainer" => "createContainer",
        "startContainer" => "startContainer",
        "poststart" => "poststart",
        "poststop" => "poststop",
        _ => return None,
    })
}

/// All CDI devices known on this host.
#[derive(Debug, Clone, Default)]
pub struct CdiRegistry {
    /// Specs by kind; a later directory's spec for a kind is merged over an earlier one.
    specs: Vec<CdiSpec>,
    /// Fully-qualified device name -> (spec index, device index).
    devices: BTreeMap<String, (usize, usize)>,
    /// Directories read.
    dirs: Vec<PathBuf>,
    /// Files that were skipped, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Splits `vendor.com/class=name` into kind and device name.
pub fn parse_device_name(qualified: &str) -> Result<(&str, &str), CdiError> {
    match qualified.split_once('=') {
        Some((kind, name)) if valid_kind(kind) && valid_device_name(name) => Ok((kind, name)),
        _ => Err(CdiError::BadDeviceName {
            name: qualified.to_string(),
        }),
    }
}

impl CdiRegistry {
    /// Loads every spec file from `dirs` (missing directories are fine).
    pub fn load(dirs: &[PathBuf]) -> CdiRegistry {
        let mut registry = CdiRegistry {
            dirs: dirs.to_vec(),
            ..CdiRegistry::default()
        };
        for dir in dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                })
                .collect();
            files.sort();
            for file in files {
                match Self::read_file(&file) {
                    Ok(spec) => registry.add(spec),
                    Err(err) => registry
                        .skipped
                        .push((file, plinth_toolbox::error_chain(&err))),
                }
            }
        }
        registry
    }

    fn read_file(path: &Path) -> Result<CdiSpec, CdiError> {
        let read_err = |source| CdiError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_CDI_FILE {
            return Err(CdiError::Invalid {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_CDI_FILE} bytes"),
            });
        }
        let bytes = fs::read(path).map_err(|source| CdiError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        CdiSpec::parse(path, &bytes)
    }

    /// Adds a parsed spec (later additions win for the same device).
    pub fn add(&mut self, spec: CdiSpec) {
        let spec_idx = self.specs.len();
        for (device_idx, device) in spec.devices.iter().enumerate() {
            self.devices.insert(
                format!("{}={}", spec.kind, device.name),
                (spec_idx, device_idx),
            );
        }
        self.specs.push(spec);
    }

    /// Fully-qualified names of every known device.
    pub fn device_names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// Resolves device names (`=all` expands to every device of the kind
    /// when no device is literally named `all`).
    fn resolve(&self, names: &[String]) -> Result<Vec<(usize, usize)>, CdiError> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for qualified in names {
            let (kind, name) = parse_device_name(qualified)?;
            let found: Vec<(usize, usize)> = match self.devices.get(qualified.as_str()) {
                Some(found) => vec![*found],
                None if name == "all" => self
                    .devices
                    .iter()
                    .filter(|(key, _)| key.split_once('=').is_some_and(|(k, _)| k == kind))
                    .map(|(_, found)| *found)
                    .collect(),
                None => Vec::new(),
            };
            if found.is_empty() {
                return Err(CdiError::UnknownDevice {
                    name: qualified.clone(),
                    dirs: self
                        .dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            for item in found {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    /// Applies the edits of exactly `names` (and their specs' global edits) to `spec`.
    pub fn apply(&self, spec: &Spec, names: &[String]) -> Result<Spec, CdiError> {
        if names.is_empty() {
            return Ok(spec.clone());
        }
        let resolved = self.resolve(names)?;
        let mut edited = spec.clone();
        let mut specs_applied: Vec<usize> = Vec::new();
        for (spec_idx, device_idx) in resolved {
            let cdi_spec = &self.specs[spec_idx];
            if !specs_applied.contains(&spec_idx) {
                specs_applied.push(spec_idx);
                apply_annotations(&mut edited, &cdi_spec.annotations);
                apply_edits(&mut edited, &cdi_spec.container_edits)?;
            }
            let device = &cdi_spec.devices[device_idx];
            apply_annotations(&mut edited, &device.annotations);
            apply_edits(&mut edited, &device.container_edits)?;
        }
        Ok(edited)
    }
}

fn apply_annotations(spec: &mut Spec, annotations: &BTreeMap<String, String>) {
    if annotations.is_empty() {
        return;
    }
    let mut merged = spec.annotations().clone().unwrap_or_default();
    for (key, value) in annotations {
        merged.insert(key.clone(), value.clone());
    }
    spec.set_annotations(Some(merged));
}

fn device_type(typ: &str, path: &str) -> Result<LinuxDeviceType, CdiError> {
    Ok(match typ {
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        "b" => LinuxDeviceType::B,
        "p" => LinuxDeviceType::P,
        other => {
            return Err(CdiError::DeviceNode {
                path: PathBuf::from(path),
                source: io::Error::other(format!("device type {other:?} is not c, u, b or p")),
            });
        }
    })
}

/// The host's type, major and minor of the device node at `host_path`.
fn host_device(host_path: &str) -> Result<(LinuxDeviceType, i64, i64), CdiError> {
    let meta = fs::metadata(host_path).map_err(|source| CdiError::DeviceNode {
        path: PathBuf::from(host_path),
        source,
    })?;
    let file_type = meta.file_type();
    let host_type = if file_type.is_char_device() {
        LinuxDeviceType::C
    } else if file_type.is_block_device() {
        LinuxDeviceType::B
    } else if file_type.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Err(CdiError::DeviceNode {
            path: PathBuf::from(host_path),
            source: io::Error::other("not a device node"),
        });
    };
    let rdev = meta.rdev();
    Ok((
        host_type,
        libc::major(rdev) as i64,
        libc::minor(rdev) as i64,
    ))
}

fn apply_edits(spec: &mut Spec, edits: &ContainerEdits) -> Result<(), CdiError> {
    let mut process = match spec.process() {
        Some(process) => process.clone(),
        None => ProcessBuilder::default().build()?,
    };
    let mut env = process.env().clone().unwrap_or_default();
    for entry in &edits.env {
        let name = entry.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(entry.clone());
    }
    process.set_env(Some(env));
    let user = process.user_mut();
    let mut gids = user.additional_gids().clone().unwrap_or_default();
    for gid in &edits.additional_gids {
        if !gids.contains(gid) {
            gids.push(*gid);
        }
    }
    if !gids.is_empty() {
        user.set_additional_gids(Some(gids));
    }
    spec.set_process(Some(process));

    let mut linux = match spec.linux() {
        Some(linux) => linux.clone(),
        None => LinuxBuilder::default().build()?,
    };
    let mut devices: Vec<LinuxDevice> = linux.devices().clone().unwrap_or_default();
    let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    for node in &edits.device_nodes {
        let host_path = node.host_path.clone().unwrap_or_else(|| node.path.clone());
        let (typ, major, minor) = match (&node.typ, node.major, node.minor) {
            (Some(typ), Some(major), Some(minor)) => (device_type(typ, &node.path)?, major, minor),
            _ => {
                let (host_type, host_major, host_minor) = host_device(&host_path)?;
                let typ = match &node.typ {
                    Some(typ) => device_type(typ, &node.path)?,
                    None => host_type,
                };
                (
                    typ,
                    node.major.unwrap_or(host_major),
                    node.minor.unwrap_or(host_minor),
                )
            }
        };
        let mut device = LinuxDeviceBuilder::default()
            .path(node.path.clone())
            .typ(typ)
            .major(major)
            .minor(minor);
        if let Some(mode) = node.file_mode {
            device = device.file_mode(mode);
        }
        if let Some(uid) = node.uid {
            device = device.uid(uid);
        }
        if let Some(gid) = node.gid {
            device = device.gid(gid);
        }
        devices.retain(|d| d.path() != Path::new(&node.path));
        devices.push(device.build()?);
        if typ != LinuxDeviceType::P {
            rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(typ)
                    .major(major)
                    .minor(minor)
                    .access(
                        node.permissions
                            .clone()
                            .unwrap_or_else(|| "rwm".to_string()),
                    )
                    .build()?,
            );
        }
    }
    if !edits.device_nodes.is_empty() {
        linux.set_devices(Some(devices));
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    spec.set_linux(Some(linux));

    if !edits.mounts.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for mount in &edits.mounts {
            let typ = mount.typ.clone().unwrap_or_else(|| "bind".to_string());
            let mut options = mount.options.clone().unwrap_or_default();
            if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.push("bind".to_string());
            }
            mounts.push(
                MountBuilder::default()
                    .destination(mount.container_path.clone())
                    .source(mount.host_path.clone())
                    .typ(typ)
                    .options(options)
                    .build()?,
            );
        }
        spec.set_mounts(Some(mounts));
    }

    if !edits.hooks.is_empty() {
        let mut hooks: Hooks = spec.hooks().clone().unwrap_or_default();
        for hook in &edits.hooks {
            let mut entry = HookBuilder::default().path(hook.path.clone());
            if let Some(args) = &hook.args {
                entry = entry.args(args.clone());
            }
            if let Some(env) = &hook.env {
                entry = entry.env(env.clone());
            }
            if let Some(timeout) = hook.timeout {
                entry = entry.timeout(timeout);
            }
            let entry = entry.build()?;
            push_hook(&mut hooks, &hook.hook_name, entry);
        }
        spec.set_hooks(Some(hooks));
    }
    Ok(())
}

/// Appends `hook` to the hook point `name` (checked by [`CdiSpec::parse`]).
fn push_hook(hooks: &mut Hooks, name: &str, hook: Hook) {
    let push = |list: Option<Vec<Hook>>| {
        let mut list = list.unwrap_or_default();
        list.push(hook);
        Some(list)
    };
    match hook_key(name) {
        Some("prestart") => {
            // Deprecated by the OCI runtime spec, still honoured by runc.
            #[allow(deprecated)]
            {
                let list = push(hooks.prestart().clone());
                hooks.set_prestart(list);
            }
        }
        Some("createRuntime") => {
            let list = push(hooks.create_runtime().clone());
            hooks.set_create_runtime(list);
        }
        Some("createContainer") => {
            let list = push(hooks.create_container().clone());
            hooks.set_create_container(list);
        }
        Some("startContainer") => {
            let list = push(hooks.start_container().clone());
            hooks.set_start_container(list);
        }
        Some("poststart") => {
            let list = push(hooks.poststart().clone());
            hooks.set_poststart(list);
        }
        Some("poststop") => {
            let list = push(hooks.poststop().clone());
            hooks.set_poststop(list);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// TEST FIXTURE: a fake "GPU" vendor whose device nodes are /dev/null.
    const FIXTURE_YAML: &str = r#"
cdiVersion: "0.6.0"
kind: "test.plinth.invalid/gpu"
containerEdits:
  env: ["FIXTURE_GLOBAL=1"]
  hooks:
    - hookName: createContainer
      path: /usr/bin/true
      args: ["true", "fixture"]
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/fixture-gpu0
          hostPath: /dev/null
      env: ["FIXTURE_GPU=0"]
  - name: "1"
    containerEdits:
      deviceNodes:
        - path: /dev/fixture-gpu1
          hostPath: /dev/null
      mounts:
        - hostPath: /etc/hostname
          containerPath: /etc/fixture-gpu1
          options: ["ro", "nosuid", "nodev"]
"#;

    fn base_spec() -> Spec {
        serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 1, "gid": 1}, "args": ["/bin/true"], "env": ["FIXTURE_GPU=x"], "cwd": "/"},
            "root": {"path": "/rootfs"},
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap()
    }

    fn registry() -> CdiRegistry {
        let mut registry = CdiRegistry::default();
        registry.add(CdiSpec::parse(Path::new("fixture.yaml"), FIXTURE_YAML.as_bytes()).unwrap());
        registry
    }

    #[test]
    fn only_assigned_devices_are_applied() {
        let spec = registry()
            .apply(&base_spec(), &["test.plinth.invalid/gpu=0".to_string()])
            .unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        let devices = value["linux"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0]["path"], json!("/dev/fixture-gpu0"));
        assert_eq!(devices[0]["major"], json!(1));
        assert_eq!(devices[0]["minor"], json!(3));
        let env = value["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("FIXTURE_GPU=0")) && !env.contains(&json!("FIXTURE_GPU=x")));
        assert!(env.contains(&json!("FIXTURE_GLOBAL=1")));
        assert_eq!(
            value["hooks"]["createContainer"][0]["path"],
            json!("/usr/bin/true")
        );
        assert!(
            value
                .get("mounts")
                .is_none_or(|m| m.as_array().unwrap().is_empty())
        );
        let rules = value["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1]["allow"], json!(true));
    }

    #[test]
    fn all_expands_and_global_edits_apply_once() {
        let spec = registry()
            .apply(&base_spec(), &["test.plinth.invalid/gpu=all".to_string()])
            .unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["linux"]["devices"].as_array().unwrap().len(), 2);
        assert_eq!(
            value["hooks"]["createContainer"].as_array().unwrap().len(),
            1
        );
        assert_eq!(
            value["mounts"][0]["destination"],
            json!("/etc/fixture-gpu1")
        );
    }

    #[test]
    fn bad_names_and_unknown_devices_fail() {
        let registry = registry();
        assert!(matches!(
            registry.apply(&base_spec(), &["gpu0".to_string()]),
            Err(CdiError::BadDeviceName { .. })
        ));
        assert!(matches!(
            registry.apply(&base_spec(), &["test.plinth.invalid/gpu=7".to_string()]),
            Err(CdiError::UnknownDevice { .. })
        ));
    }

    #[test]
    fn cdi_versions_outside_0_3_to_0_8_are_refused_naming_file_and_version() {
        let spec_with = |version: &str| {
            format!(
                r#"{{"cdiVersion":"{version}","kind":"test.plinth.invalid/v","devices":[{{"name":"x"}}]}}"#
            )
        };
        for accepted in ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"] {
            CdiSpec::parse(Path::new("v.json"), spec_with(accepted).as_bytes())
                .unwrap_or_else(|err| panic!("{accepted}: {err}"));
        }
        for refused in [
            "0.2.0",
            "0.8.1",
            "0.9.0",
            "1.0.0",
            "0.6",
            "0.6.0-rc1",
            "v0.6.0",
            "",
        ] {
            let err = CdiSpec::parse(Path::new("/etc/cdi/v.json"), spec_with(refused).as_bytes())
                .unwrap_err();
            assert!(
                matches!(err, CdiError::UnsupportedVersion { .. }),
                "{refused}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("/etc/cdi/v.json") && message.contains(&format!("{refused:?}")),
                "{message}"
            );
        }
        // A refused file is reported and skipped, like any broken file.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("new.json"), spec_with("1.0.0")).unwrap();
        let registry = CdiRegistry::load(&[dir.path().to_path_buf()]);
        assert!(registry.device_names().is_empty());
        assert!(
            registry.skipped[0].1.contains("1.0.0"),
            "{:?}",
            registry.skipped
        );
    }

    #[test]
    fn intel_rdt_edits_are_refused() {
        let yaml = r#"
cdiVersion: "0.7.0"
kind: "test.plinth.invalid/rdt"
devices:
  - name: "0"
    containerEdits:
      intelRdt:
        closID: "x"
"#;
        let err = CdiSpec::parse(Path::new("rdt.yaml"), yaml.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("intelRdt"), "{err}");
    }

    #[test]
    fn annotations_and_additional_gids_are_applied() {
        let yaml = r#"
cdiVersion: "0.7.0"
kind: "test.plinth.invalid/gid"
annotations:
  spec.example/a: "1"
containerEdits:
  additionalGids: [44, 45]
devices:
  - name: "0"
    annotations:
      device.example/b: "2"
    containerEdits:
      additionalGids: [45, 46]
"#;
        let mut registry = CdiRegistry::default();
        registry.add(CdiSpec::parse(Path::new("gid.yaml"), yaml.as_bytes()).unwrap());
        let spec = registry
            .apply(&base_spec(), &["test.plinth.invalid/gid=0".to_string()])
            .unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            value["process"]["user"]["additionalGids"],
            json!([44, 45, 46])
        );
        assert_eq!(value["annotations"]["spec.example/a"], json!("1"));
        assert_eq!(value["annotations"]["device.example/b"], json!("2"));
    }

    #[test]
    fn directories_load_json_and_yaml_and_report_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), FIXTURE_YAML).unwrap();
        fs::write(
            dir.path().join("b.json"),
            r#"{"cdiVersion":"0.5.0","kind":"test.plinth.invalid/other","devices":[{"name":"x","containerEdits":{"env":["X=1"]}}]}"#,
        )
        .unwrap();
        fs::write(dir.path().join("c.json"), "{not json").unwrap();
        let registry =
            CdiRegistry::load(&[dir.path().to_path_buf(), PathBuf::from("/nonexistent/cdi")]);
        assert_eq!(registry.device_names().len(), 3);
        assert_eq!(registry.skipped.len(), 1);
        assert!(registry.skipped[0].0.ends_with("c.json"));
    }
}
