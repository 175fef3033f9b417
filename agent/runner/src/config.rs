//! The runner's own configuration (`/etc/plinth/runner.toml`), strict TOML.
//!
//! Nothing in it comes from the agent: what the agent may ask for (which user
//! may connect, where job directories and images live, which host paths may
//! be mounted, whether host networking is allowed) is the sysadmin's decision
//! here, not the agent's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The packaged location of the runner's configuration.
pub const DEFAULT_CONFIG: &str = "/etc/plinth/runner.toml";

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read runner configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the schema.
    #[error("invalid runner configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong, with line and key.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid runner configuration {path}: `{key}` = {value:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// The runner's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// The Unix socket the runner listens on.
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660); unset: the runner's own group.
    pub socket_group: Option<String>,
    /// The user (name or number) whose processes may send requests.
    pub agent_user: String,
    /// Job directories must be real directories under this directory.
    pub state_dir: PathBuf,
    /// Root file systems must be `<dir>/<64 hex>/rootfs` under one of these.
    pub image_dirs: Vec<PathBuf>,
    /// The runner's own directory (validated bundles, root only).
    pub runner_dir: PathBuf,
    /// The OCI runtime: `runc`, `crun`, or an absolute path.
    pub runtime: PathBuf,
    /// The OCI runtime's state root (`--root`).
    pub runtime_root: PathBuf,
    /// CDI spec directories: the only devices, device mounts and hooks allowed.
    pub cdi_dirs: Vec<PathBuf>,
    /// cgroup parent of job containers (`/<parent>/<job id>`).
    pub cgroup_parent: String,
    /// Whether a job may share the host's network namespace.
    pub allow_host_network: bool,
    /// Host paths that may be bind-mounted read-only into jobs (besides the job's
    /// own scratch directory and CDI mounts).
    pub allowed_mounts: Vec<PathBuf>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            socket: PathBuf::from("/run/plinth-runner/runner.sock"),
            socket_group: Some("plinth".to_owned()),
            agent_user: "plinth".to_owned(),
            state_dir: PathBuf::from("/var/lib/plinth/jobs"),
            image_dirs: vec![PathBuf::from("/var/lib/plinth/images")],
            runner_dir: PathBuf::from("/var/lib/plinth-runner"),
            runtime: PathBuf::from("runc"),
            runtime_root: PathBuf::from("/run/plinth-runner/runc"),
            cdi_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            cgroup_parent: "plinth".to_owned(),
            allow_host_network: false,
            allowed_mounts: Vec::new(),
        }
    }
}

impl RunnerConfig {
    /// Loads and checks `path`; a missing file at the default location gives the
    /// defaults.
    pub fn load(path: &Path) -> Result<RunnerConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG) =>
            {
                String::new()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(path, &text)
    }

    /// Parses and checks configuration text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<RunnerConfig, ConfigError> {
        let config: RunnerConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        let invalid = |key: &'static str, value: &Path, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value: value.display().to_string(),
            reason: reason.to_owned(),
        };
        for (key, dir) in [
            ("socket", &config.socket),
            ("state_dir", &config.state_dir),
            ("runner_dir", &config.runner_dir),
            ("runtime_root", &config.runtime_root),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(key, dir, "must be an absolute path"));
            }
        }
        for dir in config.image_dirs.iter().chain(&config.allowed_mounts) {
            if !dir.is_absolute() {
                return Err(invalid(
                    "image_dirs/allowed_mounts",
                    dir,
                    "must be absolute",
                ));
            }
        }
        if config.allowed_mounts.iter().any(|m| m == Path::new("/")) {
            return Err(invalid(
                "allowed_mounts",
                Path::new("/"),
                "the host root cannot be allowed",
            ));
        }
        if config.cgroup_parent.trim_matches('/').is_empty() || config.cgroup_parent.contains("..")
        {
            return Err(invalid(
                "cgroup_parent",
                Path::new(&config.cgroup_parent),
                "must name a cgroup below the root, without `..`",
            ));
        }
        Ok(config)
    }

    /// The uid of `agent_user`.
    pub fn agent_uid(&self) -> Result<u32, String> {
        resolve_user(&self.agent_user)
    }
}

/// A user name or number as a uid.
pub fn resolve_user(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid.as_raw()),
        Ok(None) => Err(format!("no user named {user:?}")),
        Err(errno) => Err(format!("cannot look up user {user:?}: {errno}")),
    }
}

/// A group name or number as a gid.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => Err(format!("no group named {group:?}")),
        Err(errno) => Err(format!("cannot look up group {group:?}: {errno}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_file_is_the_defaults_and_errors_name_the_key() {
        let packaged = plinth_tests::repo_root().join("packaging/runner.toml");
        let text = std::fs::read_to_string(&packaged).unwrap();
        assert_eq!(
            RunnerConfig::parse(&packaged, &text).unwrap(),
            RunnerConfig::default()
        );
        let err = RunnerConfig::parse(Path::new("r.toml"), "state_dir = \"jobs\"\n").unwrap_err();
        assert!(err.to_string().contains("`state_dir`"), "{err}");
        let err = RunnerConfig::parse(Path::new("r.toml"), "privileged = true\n").unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
        let err =
            RunnerConfig::parse(Path::new("r.toml"), "allowed_mounts = [\"/\"]\n").unwrap_err();
        assert!(err.to_string().contains("host root"), "{err}");
    }
}
