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

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Default CDI spec directories, lowest priority first.
pub const DEFAULT_CDI_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

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
    /// The edited runtime spec is invalid.
    #[error("runtime spec is invalid after CDI edits")]
    Spec(#[source] serde_json::Error),
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
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// One device of a CDI spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    /// Device name (the part after `=`).
    pub name: String,
    /// Its edits.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// A CDI spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiSpec {
    /// CDI version (`0.3.0` ... `1.0.0`).
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
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
        }
        Ok(())
    }
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
                    Err(err) => registry.skipped.push((file, error_chain(&err))),
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
        let mut value = serde_json::to_value(spec).map_err(CdiError::Spec)?;
        let mut specs_applied: Vec<usize> = Vec::new();
        for (spec_idx, device_idx) in resolved {
            let cdi_spec = &self.specs[spec_idx];
            if !specs_applied.contains(&spec_idx) {
                specs_applied.push(spec_idx);
                apply_edits(&mut value, &cdi_spec.container_edits)?;
            }
            apply_edits(&mut value, &cdi_spec.devices[device_idx].container_edits)?;
        }
        serde_json::from_value(value).map_err(CdiError::Spec)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Returns the array at `path`, creating objects and the array on the way.
fn array_at<'v>(value: &'v mut Value, path: &[&str]) -> Option<&'v mut Vec<Value>> {
    let mut current = value;
    for key in path {
        if !current.is_object() {
            *current = json!({});
        }
        let Value::Object(map) = current else {
            return None;
        };
        current = map.entry(key.to_string()).or_insert(Value::Null);
    }
    if !current.is_array() {
        *current = json!([]);
    }
    current.as_array_mut()
}

/// Like [`array_at`], for edits: the spec is a JSON object so this succeeds.
fn edit_array<'v>(value: &'v mut Value, path: &[&str]) -> Result<&'v mut Vec<Value>, CdiError> {
    let joined = path.join(".");
    array_at(value, path).ok_or_else(|| CdiError::Invalid {
        path: PathBuf::from(joined),
        reason: "runtime spec field is not an object".to_string(),
    })
}

fn apply_edits(value: &mut Value, edits: &ContainerEdits) -> Result<(), CdiError> {
    for entry in &edits.env {
        let name = entry.split('=').next().unwrap_or_default();
        let env = edit_array(value, &["process", "env"])?;
        env.retain(|e| e.as_str().is_none_or(|s| s.split('=').next() != Some(name)));
        env.push(json!(entry));
    }
    for node in &edits.device_nodes {
        let host_path = node.host_path.clone().unwrap_or_else(|| node.path.clone());
        let (mut typ, mut major, mut minor) = (node.typ.clone(), node.major, node.minor);
        if typ.is_none() || major.is_none() || minor.is_none() {
            let meta = fs::metadata(&host_path).map_err(|source| CdiError::DeviceNode {
                path: PathBuf::from(&host_path),
                source,
            })?;
            let file_type = meta.file_type();
            let host_type = if file_type.is_char_device() {
                "c"
            } else if file_type.is_block_device() {
                "b"
            } else if file_type.is_fifo() {
                "p"
            } else {
                return Err(CdiError::DeviceNode {
                    path: PathBuf::from(&host_path),
                    source: io::Error::other("not a device node"),
                });
            };
            let rdev = meta.rdev();
            typ.get_or_insert_with(|| host_type.to_string());
            major.get_or_insert(libc::major(rdev) as i64);
            minor.get_or_insert(libc::minor(rdev) as i64);
        }
        let mut device = json!({
            "path": node.path,
            "type": typ,
            "major": major,
            "minor": minor,
        });
        if let Some(mode) = node.file_mode {
            device["fileMode"] = json!(mode);
        }
        if let Some(uid) = node.uid {
            device["uid"] = json!(uid);
        }
        if let Some(gid) = node.gid {
            device["gid"] = json!(gid);
        }
        let devices = edit_array(value, &["linux", "devices"])?;
        devices.retain(|d| d["path"] != json!(node.path));
        devices.push(device);
        if typ.as_deref() != Some("p") {
            let rules = edit_array(value, &["linux", "resources", "devices"])?;
            rules.push(json!({
                "allow": true,
                "type": typ,
                "major": major,
                "minor": minor,
                "access": node.permissions.clone().unwrap_or_else(|| "rwm".to_string()),
            }));
        }
    }
    for mount in &edits.mounts {
        let typ = mount.typ.clone().unwrap_or_else(|| "bind".to_string());
        let mut options = mount.options.clone().unwrap_or_default();
        if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("bind".to_string());
        }
        let mounts = edit_array(value, &["mounts"])?;
        mounts.push(json!({
            "destination": mount.container_path,
            "source": mount.host_path,
            "type": typ,
            "options": options,
        }));
    }
    for hook in &edits.hooks {
        let Some(key) = hook_key(&hook.hook_name) else {
            continue;
        };
        let mut entry = json!({"path": hook.path});
        if let Some(args) = &hook.args {
            entry["args"] = json!(args);
        }
        if let Some(env) = &hook.env {
            entry["env"] = json!(env);
        }
        if let Some(timeout) = hook.timeout {
            entry["timeout"] = json!(timeout);
        }
        edit_array(value, &["hooks", key])?.push(entry);
    }
    for gid in &edits.additional_gids {
        let gids = edit_array(value, &["process", "user", "additionalGids"])?;
        if !gids.contains(&json!(gid)) {
            gids.push(json!(gid));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
