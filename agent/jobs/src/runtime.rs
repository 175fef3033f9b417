//! Invocation of the OCI runtime binary (runc or crun).
//!
//! This is the only module that runs the runtime, and it does no more than
//! build its command lines and read its answers, so that it can move into a
//! separate privileged helper (`plinth-runner`, see DESIGN.md "Privileges")
//! unchanged. Container ids are checked before they reach a command line.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};

/// Errors from running the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A container id with characters or a length the agent refuses.
    #[error(
        "container id {id:?} is invalid (1-64 of [A-Za-z0-9_.-], not starting with `.` or `-`)"
    )]
    BadContainerId {
        /// The id.
        id: String,
    },
    /// The runtime binary could not be started.
    #[error("cannot run {binary} {command}")]
    Spawn {
        /// Runtime binary.
        binary: PathBuf,
        /// Subcommand.
        command: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The runtime ran and failed.
    #[error("{binary} {command} {id} failed with {status}: {stderr}")]
    Failed {
        /// Runtime binary.
        binary: PathBuf,
        /// Subcommand.
        command: &'static str,
        /// Container id.
        id: String,
        /// Exit status.
        status: String,
        /// The runtime's standard error (trimmed, capped).
        stderr: String,
    },
    /// `state` printed something that is not the expected JSON.
    #[error("cannot parse {binary} state output for {id}")]
    ParseState {
        /// Runtime binary.
        binary: PathBuf,
        /// Container id.
        id: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// systemd service variables that must not reach the runtime or the job.
pub const SYSTEMD_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Which OCI runtime implementation the binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// runc.
    Runc,
    /// crun.
    Crun,
}

/// How to run the OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRuntime {
    /// Runtime binary (`runc`, `/usr/bin/crun`, ...).
    pub binary: PathBuf,
    /// Implementation (both take the same arguments for what plinth uses).
    pub kind: RuntimeKind,
    /// State directory passed as `--root`.
    pub root: PathBuf,
}

/// What `state` reports about a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Host pid of the container's init (0 when stopped).
    #[serde(default)]
    pub pid: i32,
}

/// Checks a container id before it is put on a command line.
pub fn check_container_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadContainerId { id: id.to_string() })
    }
}

impl OciRuntime {
    /// A runtime from its binary; the kind is guessed from the file name.
    pub fn new(binary: &Path, root: &Path) -> OciRuntime {
        let kind = if binary
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("crun"))
        {
            RuntimeKind::Crun
        } else {
            RuntimeKind::Runc
        };
        OciRuntime {
            binary: binary.to_path_buf(),
            kind,
            root: root.to_path_buf(),
        }
    }

    fn base(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        // With NOTIFY_SOCKET set (the agent runs as a systemd notify service),
        // runc proxies sd_notify into the container and `start`/`run --detach`
        // wait for the container's READY=1, which jobs never send.
        for name in SYSTEMD_ENV {
            command.env_remove(name);
        }
        command
    }

    /// `create --bundle B --pid-file P ID`; the caller sets stdio (it is
    /// inherited by the container's process).
    pub fn create_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
    ) -> Result<Command, RuntimeError> {
        check_container_id(id)?;
        let mut command = self.base();
        command
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        Ok(command)
    }

    /// `run --detach --bundle B --pid-file P ID`: create and start in one
    /// invocation; the caller sets stdio (inherited by the container's process).
    pub fn run_detached_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
    ) -> Result<Command, RuntimeError> {
        check_container_id(id)?;
        let mut command = self.base();
        command
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        Ok(command)
    }

    /// `run --bundle B ID` in the foreground (used to measure the bare runtime).
    pub fn run_command(&self, id: &str, bundle: &Path) -> Result<Command, RuntimeError> {
        check_container_id(id)?;
        let mut command = self.base();
        command.arg("run").arg("--bundle").arg(bundle).arg(id);
        Ok(command)
    }

    fn run_checked(
        &self,
        command: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<Output, RuntimeError> {
        check_container_id(id)?;
        let output = self
            .base()
            .arg(command)
            .args(args)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command,
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let trimmed: String = stderr.trim().chars().take(1000).collect();
            return Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command,
                id: id.to_string(),
                status: output.status.to_string(),
                stderr: trimmed,
            });
        }
        Ok(output)
    }

    /// `start ID`: runs the container's process.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run_checked("start", id, &[]).map(drop)
    }

    /// `state ID`; `None` when the runtime does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.run_checked("state", id, &[]) {
            Ok(output) => serde_json::from_slice(&output.stdout)
                .map(Some)
                .map_err(|source| RuntimeError::ParseState {
                    binary: self.binary.clone(),
                    id: id.to_string(),
                    source,
                }),
            Err(RuntimeError::Failed { stderr, .. })
                if stderr.contains("does not exist")
                    || stderr.contains("not found")
                    || stderr.contains("No such file") =>
            {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// `kill [--all] ID SIGNAL`.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        check_container_id(id)?;
        let mut command = self.base();
        command.arg("kill");
        if all {
            command.arg("--all");
        }
        let output = command
            .arg(id)
            .arg(signal)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command: "kill",
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command: "kill",
                id: id.to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .chars()
                    .take(1000)
                    .collect(),
            })
        }
    }

    /// `delete --force ID`; a container the runtime does not know is fine.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        match self.run_checked("delete", id, &["--force"]) {
            Ok(_) => Ok(()),
            Err(RuntimeError::Failed { stderr, .. })
                if stderr.contains("does not exist") || stderr.contains("not found") =>
            {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        assert!(check_container_id("plinth-job_1.a").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", "a;b", &"x".repeat(65)] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn systemd_notify_variables_do_not_reach_the_runtime() {
        let runtime = OciRuntime::new(Path::new("runc"), Path::new("/r"));
        let command = runtime
            .run_detached_command("c1", Path::new("/b"), Path::new("/p"))
            .unwrap();
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.contains(&"NOTIFY_SOCKET".to_string()),
            "{removed:?}"
        );
    }

    #[test]
    fn kind_follows_the_binary_name() {
        assert_eq!(
            OciRuntime::new(Path::new("/usr/bin/crun"), Path::new("/r")).kind,
            RuntimeKind::Crun
        );
        assert_eq!(
            OciRuntime::new(Path::new("runc"), Path::new("/r")).kind,
            RuntimeKind::Runc
        );
        let command = OciRuntime::new(Path::new("runc"), Path::new("/run/plinth/runc"))
            .create_command("c1", Path::new("/b"), Path::new("/b/pid"))
            .unwrap();
        let args: Vec<_> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/plinth/runc",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/b/pid",
                "c1"
            ]
        );
    }
}
