//! The job specification a tenant submits (`"format": "plinth-job/1"`).
//!
//! A job spec is untrusted JSON. It is parsed strictly (unknown fields are
//! refused) and then validated; every error names the field that was wrong.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The only job spec format this version understands.
pub const JOB_SPEC_FORMAT: &str = "plinth-job/1";

/// Largest job spec document accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// Errors from parsing or validating a job spec.
#[derive(Debug, thiserror::Error)]
pub enum JobSpecError {
    /// The document is larger than [`MAX_SPEC_BYTES`].
    #[error("job spec is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Size of the document.
        size: usize,
        /// Largest size accepted.
        max: usize,
    },
    /// The document is not valid JSON for the schema.
    #[error("job spec is not valid plinth-job/1 JSON")]
    Parse(#[source] serde_json::Error),
    /// A field has a value the schema refuses.
    #[error("job spec field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Dotted path of the field, e.g. `resources.memory_bytes`.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Where the job's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// How the image is stored on the host, or `registry`.
    pub source: ImageSource,
    /// Absolute path of the layout directory or archive file on the host
    /// (local sources only; absent for `registry`).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub path: PathBuf,
    /// Local sources: the tag (`org.opencontainers.image.ref.name`) to select
    /// in the index. `registry`: the image reference,
    /// `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Manifest digest (`sha256:<hex>`) the image must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

fn path_is_empty(path: &Path) -> bool {
    path.as_os_str().is_empty()
}

/// Where the image is: a local store on the host, or a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSource {
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A tar archive of an OCI image layout.
    OciArchive,
    /// A `docker save` tar archive.
    DockerArchive,
    /// An OCI distribution registry (`reference` names the image).
    Registry,
}

/// Longest image reference accepted, in bytes.
const MAX_REFERENCE_BYTES: usize = 512;

/// Checks a registry image reference: the usual grammar
/// (`HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, parsed by `oci-client`), with an
/// explicit registry host and only `sha256` digests.
pub fn check_registry_reference(reference: &str) -> Result<oci_client::Reference, String> {
    if reference.len() > MAX_REFERENCE_BYTES {
        return Err(format!("is longer than {MAX_REFERENCE_BYTES} bytes"));
    }
    let parsed = oci_client::Reference::try_from(reference)
        .map_err(|err| format!("{reference:?} is not an image reference: {err}"))?;
    let first = reference.split('/').next().unwrap_or("");
    let names_host = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if !names_host {
        return Err(format!(
            "{reference:?} does not name a registry host (write HOST[:PORT]/REPO[:TAG])"
        ));
    }
    if let Some(digest) = parsed.digest() {
        let hex_part = digest.strip_prefix("sha256:").unwrap_or("");
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!(
                "digest {digest:?} is not sha256:<64 lowercase hex digits>"
            ));
        }
    }
    Ok(parsed)
}

/// GPUs the job asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// Number of whole GPUs.
    #[serde(default)]
    pub count: u32,
    /// Required GPU model (substring match on the product name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Resource limits enforced through the job's cgroup and the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores (a CFS quota), e.g. `1.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit in bytes (hard; exceeding it triggers the OOM killer).
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    #[serde(default = "default_pids")]
    pub pids: u32,
    /// Maximum wall-clock duration in seconds; then SIGTERM, grace, SIGKILL.
    pub max_duration_s: u64,
}

fn default_pids() -> u32 {
    512
}

/// Network access of the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// A new network namespace with only loopback (the default).
    #[default]
    None,
    /// The host's network namespace (only where the operator allows it).
    Host,
}

/// Where the job leaves its results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Directory inside the container, under `/scratch`, kept after the job.
    pub path: PathBuf,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            path: PathBuf::from("/scratch/out"),
        }
    }
}

/// A validated job specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Always [`JOB_SPEC_FORMAT`].
    pub format: String,
    /// The image to run.
    pub image: ImageRef,
    /// Command and arguments; empty means the image's entrypoint + cmd.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment variables (override the image's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container; default: the image's, else `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// GPUs requested.
    #[serde(default)]
    pub gpus: GpuRequest,
    /// Limits.
    pub resources: Resources,
    /// Network access; `none` by default.
    #[serde(default)]
    pub network: Network,
    /// Where outputs go.
    #[serde(default)]
    pub outputs: Outputs,
}

/// Upper bounds used by validation.
const MAX_ARGS: usize = 4096;
const MAX_ARG_BYTES: usize = 64 * 1024;
const MAX_ENV: usize = 1024;
const MAX_GPUS: u32 = 64;
const MAX_CPU: f64 = 1024.0;
const MIN_MEMORY: u64 = 4 * 1024 * 1024;
const MAX_DURATION_S: u64 = 30 * 24 * 3600;
const MAX_PIDS: u32 = 1 << 22;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> JobSpecError {
    JobSpecError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks that `path` is absolute and has no `..`, `.` or empty components.
fn check_clean_absolute(field: &str, path: &Path) -> Result<(), JobSpecError> {
    if !path.is_absolute() {
        return Err(invalid(
            field,
            format!("{} is not absolute", path.display()),
        ));
    }
    if path.as_os_str().len() > 4096 {
        return Err(invalid(field, "path is longer than 4096 bytes"));
    }
    for component in path.components() {
        match component {
            Component::RootDir | Component::Normal(_) => {}
            _ => {
                return Err(invalid(
                    field,
                    format!("{} has a `.` or `..` component", path.display()),
                ));
            }
        }
    }
    Ok(())
}

impl JobSpec {
    /// Parses and validates a job spec from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<JobSpec, JobSpecError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(JobSpecError::TooLarge {
                size: bytes.len(),
                max: MAX_SPEC_BYTES,
            });
        }
        let spec: JobSpec = serde_json::from_slice(bytes).map_err(JobSpecError::Parse)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), JobSpecError> {
        if self.format != JOB_SPEC_FORMAT {
            return Err(invalid(
                "format",
                format!("{:?} is not {JOB_SPEC_FORMAT:?}", self.format),
            ));
        }
        if self.image.source == ImageSource::Registry {
            if !path_is_empty(&self.image.path) {
                return Err(invalid(
                    "image.path",
                    "is for local images; a registry image is named by image.reference",
                ));
            }
            let Some(reference) = &self.image.reference else {
                return Err(invalid(
                    "image.reference",
                    "is required for a registry image (HOST[:PORT]/REPO[:TAG][@sha256:HEX])",
                ));
            };
            let parsed =
                check_registry_reference(reference).map_err(|r| invalid("image.reference", r))?;
            if let (Some(pinned), Some(wanted)) = (parsed.digest(), &self.image.digest)
                && pinned != wanted
            {
                return Err(invalid(
                    "image.digest",
                    format!("{wanted} differs from the digest in image.reference ({pinned})"),
                ));
            }
        } else {
            check_clean_absolute("image.path", &self.image.path)?;
        }
        if let Some(reference) = &self.image.reference
            && self.image.source != ImageSource::Registry
        {
            let ok = !reference.is_empty()
                && reference.len() <= 255
                && reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
            if !ok {
                return Err(invalid(
                    "image.reference",
                    format!("{reference:?} is not a valid tag"),
                ));
            }
        }
        if let Some(digest) = &self.image.digest {
            let hex_part = digest.strip_prefix("sha256:").unwrap_or("");
            if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "image.digest",
                    format!("{digest:?} is not sha256:<64 hex digits>"),
                ));
            }
        }
        if self.command.len() > MAX_ARGS {
            return Err(invalid(
                "command",
                format!("more than {MAX_ARGS} arguments"),
            ));
        }
        let mut arg_bytes = 0usize;
        for (arg_idx, arg) in self.command.iter().enumerate() {
            if arg.contains('\0') {
                return Err(invalid(
                    format!("command[{arg_idx}]"),
                    "contains a NUL byte",
                ));
            }
            arg_bytes += arg.len();
        }
        if arg_bytes > MAX_ARG_BYTES {
            return Err(invalid(
                "command",
                format!("longer than {MAX_ARG_BYTES} bytes"),
            ));
        }
        if self
            .command
            .first()
            .is_some_and(|program| program.is_empty())
        {
            return Err(invalid("command[0]", "is empty"));
        }
        if self.env.len() > MAX_ENV {
            return Err(invalid("env", format!("more than {MAX_ENV} variables")));
        }
        for (name, value) in &self.env {
            let name_ok = !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !name_ok {
                return Err(invalid(
                    format!("env.{name}"),
                    "name must be [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
            if value.contains('\0') {
                return Err(invalid(format!("env.{name}"), "value contains a NUL byte"));
            }
        }
        if let Some(workdir) = &self.workdir {
            check_clean_absolute("workdir", workdir)?;
        }
        if self.gpus.count > MAX_GPUS {
            return Err(invalid(
                "gpus.count",
                format!("{} is more than {MAX_GPUS}", self.gpus.count),
            ));
        }
        if let Some(model) = &self.gpus.model {
            if model.is_empty() || model.len() > 128 {
                return Err(invalid("gpus.model", "must be 1 to 128 bytes"));
            }
            if self.gpus.count == 0 {
                return Err(invalid("gpus.model", "given but gpus.count is 0"));
            }
        }
        if let Some(cpu) = self.resources.cpu
            && !(cpu.is_finite() && (0.01..=MAX_CPU).contains(&cpu))
        {
            return Err(invalid(
                "resources.cpu",
                format!("{cpu} is not between 0.01 and {MAX_CPU} cores"),
            ));
        }
        if self.resources.memory_bytes < MIN_MEMORY {
            return Err(invalid(
                "resources.memory_bytes",
                format!(
                    "{} is less than the minimum {MIN_MEMORY}",
                    self.resources.memory_bytes
                ),
            ));
        }
        if self.resources.memory_bytes > i64::MAX as u64 {
            return Err(invalid("resources.memory_bytes", "is too large"));
        }
        if self.resources.pids == 0 || self.resources.pids > MAX_PIDS {
            return Err(invalid(
                "resources.pids",
                format!("{} is not between 1 and {MAX_PIDS}", self.resources.pids),
            ));
        }
        if self.resources.max_duration_s == 0 || self.resources.max_duration_s > MAX_DURATION_S {
            return Err(invalid(
                "resources.max_duration_s",
                format!(
                    "{} is not between 1 and {MAX_DURATION_S}",
                    self.resources.max_duration_s
                ),
            ));
        }
        check_clean_absolute("outputs.path", &self.outputs.path)?;
        if !self.outputs.path.starts_with("/scratch") {
            return Err(invalid(
                "outputs.path",
                format!("{} is not under /scratch", self.outputs.path.display()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "format": "plinth-job/1",
            "image": {"source": "oci-layout", "path": "/var/lib/images/busybox"},
            "command": ["/bin/sh", "-c", "echo hi"],
            "env": {"FOO": "bar"},
            "gpus": {"count": 1, "model": "H100"},
            "resources": {"cpu": 1.5, "memory_bytes": 268435456u64, "pids": 64, "max_duration_s": 60}
        })
    }

    fn check(mutate: impl FnOnce(&mut serde_json::Value), expect_field: Option<&str>) {
        let mut value = base();
        mutate(&mut value);
        let bytes = serde_json::to_vec(&value).unwrap();
        match (JobSpec::from_json(&bytes), expect_field) {
            (Ok(_), None) => {}
            (Err(JobSpecError::InvalidField { field, .. }), Some(expected)) => {
                assert_eq!(field, expected)
            }
            (other, expected) => panic!("expected {expected:?}, got {other:?}"),
        }
    }

    #[test]
    fn valid_spec_parses_with_defaults() {
        let spec = JobSpec::from_json(&serde_json::to_vec(&base()).unwrap()).unwrap();
        assert_eq!(spec.network, Network::None);
        assert_eq!(spec.outputs.path, PathBuf::from("/scratch/out"));
        assert_eq!(spec.resources.pids, 64);
    }

    #[test]
    fn bad_fields_are_named() {
        check(|v| v["format"] = "plinth-job/2".into(), Some("format"));
        check(
            |v| v["image"]["path"] = "relative".into(),
            Some("image.path"),
        );
        check(
            |v| v["image"]["path"] = "/a/../b".into(),
            Some("image.path"),
        );
        check(
            |v| v["image"]["digest"] = "sha256:zz".into(),
            Some("image.digest"),
        );
        check(|v| v["command"][0] = "".into(), Some("command[0]"));
        check(|v| v["command"][1] = "a\u{0}b".into(), Some("command[1]"));
        check(
            |v| v["env"] = serde_json::json!({"1X": "a"}),
            Some("env.1X"),
        );
        check(|v| v["workdir"] = "tmp".into(), Some("workdir"));
        check(|v| v["gpus"]["count"] = 65.into(), Some("gpus.count"));
        check(|v| v["gpus"]["count"] = 0.into(), Some("gpus.model"));
        check(
            |v| v["resources"]["cpu"] = 0.0.into(),
            Some("resources.cpu"),
        );
        check(
            |v| v["resources"]["memory_bytes"] = 1024.into(),
            Some("resources.memory_bytes"),
        );
        check(
            |v| v["resources"]["pids"] = 0.into(),
            Some("resources.pids"),
        );
        check(
            |v| v["resources"]["max_duration_s"] = 0.into(),
            Some("resources.max_duration_s"),
        );
        check(
            |v| v["outputs"] = serde_json::json!({"path": "/etc"}),
            Some("outputs.path"),
        );
        check(|v| v["network"] = "host".into(), None);
    }

    #[test]
    fn registry_images_are_named_by_reference() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let registry =
            |image: serde_json::Value| move |v: &mut serde_json::Value| v["image"] = image;
        check(
            registry(
                serde_json::json!({"source": "registry", "reference": "127.0.0.1:5000/busybox:v1"}),
            ),
            None,
        );
        check(
            registry(serde_json::json!({"source": "registry",
                "reference": format!("registry.example/org/trainer:v3@{digest}")})),
            None,
        );
        check(
            registry(serde_json::json!({"source": "registry"})),
            Some("image.reference"),
        );
        // No registry host: Docker Hub shorthand is refused, a host must be explicit.
        check(
            registry(serde_json::json!({"source": "registry", "reference": "busybox:latest"})),
            Some("image.reference"),
        );
        check(
            registry(
                serde_json::json!({"source": "registry", "reference": "localhost:5000/Upper"}),
            ),
            Some("image.reference"),
        );
        check(
            registry(
                serde_json::json!({"source": "registry", "reference": "r.example/a",
                "path": "/var/lib/images/a"}),
            ),
            Some("image.path"),
        );
        check(
            registry(serde_json::json!({"source": "registry",
                "reference": format!("r.example/a@{digest}"),
                "digest": format!("sha256:{}", "b".repeat(64))})),
            Some("image.digest"),
        );
    }

    #[test]
    fn unknown_fields_and_oversize_are_refused() {
        let mut value = base();
        value["privileged"] = true.into();
        let err = JobSpec::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(matches!(err, JobSpecError::Parse(_)), "{err}");
        let big = vec![b' '; MAX_SPEC_BYTES + 1];
        assert!(matches!(
            JobSpec::from_json(&big),
            Err(JobSpecError::TooLarge { .. })
        ));
    }
}
