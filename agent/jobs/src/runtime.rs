//! The OCI runtime seam: the [`OciRuntime`] trait, its real implementation
//! [`RuncRuntime`] (the runc or crun binary) and, for tests only, the
//! recording double [`testing::RecordingRuntime`].
//!
//! This is the only module that runs the runtime, and [`RuncRuntime`] does no
//! more than build its command lines and read its answers, so that it can move
//! into a separate privileged helper (`plinth-runner`, see DESIGN.md
//! "Privileges") unchanged: the engine and the supervisor only ever see
//! `&dyn OciRuntime`, passed in through their constructors. Container ids are
//! checked before they reach a command line.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
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

/// A signal the supervisor or the engine sends to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    /// `SIGTERM`: ask the job to stop.
    Term,
    /// `SIGKILL`: stop it now.
    Kill,
}

impl KillSignal {
    /// The name the runtime's `kill` subcommand takes.
    pub fn name(self) -> &'static str {
        match self {
            KillSignal::Term => "TERM",
            KillSignal::Kill => "KILL",
        }
    }
}

/// What [`OciRuntime::run_detached`] needs: the container, its bundle, where
/// the runtime writes the init's host pid, and the container's stdout and
/// stderr (the runtime's own diagnostics go to the same stderr).
#[derive(Debug)]
pub struct DetachedRun<'a> {
    /// Container id.
    pub id: &'a str,
    /// Bundle directory (with `config.json`).
    pub bundle: &'a Path,
    /// File the runtime writes the container init's host pid to.
    pub pid_file: &'a Path,
    /// Working directory of the runtime process.
    pub cwd: &'a Path,
    /// The container's standard output (write end).
    pub stdout: OwnedFd,
    /// The container's standard error (write end).
    pub stderr: OwnedFd,
}

/// The operations plinth needs from an OCI runtime.
///
/// The engine and the supervisor take an implementation through their
/// constructors ([`crate::engine::Engine::with_runtime`],
/// [`crate::shim::run_with`]); production code passes [`RuncRuntime`].
pub trait OciRuntime: Send + Sync + fmt::Debug {
    /// `run --detach`: creates and starts the container in one invocation and
    /// returns once the runtime has exited (the container keeps running, its
    /// init reparented to the caller when that is a child subreaper). A
    /// runtime that exits non-zero gives [`RuntimeError::Failed`] with an
    /// empty `stderr`: its diagnostics went to `request.stderr`.
    fn run_detached(&self, request: DetachedRun<'_>) -> Result<(), RuntimeError>;

    /// `state ID`; `None` when the runtime does not know the container.
    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError>;

    /// `kill [--all] ID SIGNAL`.
    fn kill(&self, id: &str, signal: KillSignal, all: bool) -> Result<(), RuntimeError>;

    /// `delete --force ID`; a container the runtime does not know is fine.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;
}

/// The real runtime: the runc or crun binary, run as a child process.
///
/// It is also the runtime part of the supervisor's configuration
/// (`shim.json`), which is why it serialises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuncRuntime {
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

/// The runtime's stderr, trimmed and capped for an error message.
fn stderr_tail(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .trim()
        .chars()
        .take(1000)
        .collect()
}

impl RuncRuntime {
    /// A runtime from its binary; the kind is guessed from the file name.
    pub fn new(binary: &Path, root: &Path) -> RuncRuntime {
        let kind = if binary
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("crun"))
        {
            RuntimeKind::Crun
        } else {
            RuntimeKind::Runc
        };
        RuncRuntime {
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

    /// Runs `COMMAND [before...] ID [after...]` to completion; a non-zero
    /// exit is [`RuntimeError::Failed`] with the runtime's stderr.
    fn run_checked(
        &self,
        command: &'static str,
        before_id: &[&str],
        id: &str,
        after_id: &[&str],
    ) -> Result<Output, RuntimeError> {
        check_container_id(id)?;
        let output = self
            .base()
            .arg(command)
            .args(before_id)
            .arg(id)
            .args(after_id)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command,
                source,
            })?;
        if !output.status.success() {
            return Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command,
                id: id.to_string(),
                status: output.status.to_string(),
                stderr: stderr_tail(&output.stderr),
            });
        }
        Ok(output)
    }
}

impl OciRuntime for RuncRuntime {
    fn run_detached(&self, request: DetachedRun<'_>) -> Result<(), RuntimeError> {
        let mut command =
            self.run_detached_command(request.id, request.bundle, request.pid_file)?;
        command
            .current_dir(request.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(request.stdout))
            .stderr(Stdio::from(request.stderr));
        let status = command.status().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "run",
            source,
        })?;
        // Dropping the command closes our copies of the pipes' write ends, so
        // the readers see the end once the container has exited.
        drop(command);
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command: "run",
                id: request.id.to_string(),
                status: status.to_string(),
                stderr: String::new(),
            })
        }
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.run_checked("state", &[], id, &[]) {
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

    fn kill(&self, id: &str, signal: KillSignal, all: bool) -> Result<(), RuntimeError> {
        let before_id: &[&str] = if all { &["--all"] } else { &[] };
        self.run_checked("kill", before_id, id, &[signal.name()])
            .map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        match self.run_checked("delete", &["--force"], id, &[]) {
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

/// Test doubles of the runtime seam. **Never selected at run time**: nothing in
/// the crate constructs them, and they are compiled only for this crate's unit
/// tests or with the `test-doubles` feature (for other crates' tests).
#[cfg(any(test, feature = "test-doubles"))]
pub mod testing {
    use std::collections::BTreeMap;
    use std::fs;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    use super::{ContainerState, DetachedRun, KillSignal, OciRuntime, RuntimeError};

    /// One call made to a [`RecordingRuntime`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RuntimeCall {
        /// `run --detach`.
        RunDetached {
            /// Container id.
            id: String,
        },
        /// `state`.
        State {
            /// Container id.
            id: String,
        },
        /// `kill`.
        Kill {
            /// Container id.
            id: String,
            /// Signal.
            signal: KillSignal,
            /// `--all`.
            all: bool,
        },
        /// `delete --force`.
        Delete {
            /// Container id.
            id: String,
        },
    }

    #[derive(Debug, Default)]
    struct Inner {
        calls: Vec<RuntimeCall>,
        /// Containers the double pretends exist: id -> (status, host pid).
        containers: BTreeMap<String, (String, i32)>,
    }

    /// TEST DOUBLE: an [`OciRuntime`] that records every call and keeps a
    /// pretend table of containers instead of running anything.
    ///
    /// With [`RecordingRuntime::spawning`], `run_detached` starts a real
    /// child process (the "container init", its stdio connected as a runtime
    /// would) and `kill` signals it, so the supervisor's reaping, deadline and
    /// cancellation paths can be driven without runc.
    #[derive(Debug, Default)]
    pub struct RecordingRuntime {
        inner: Mutex<Inner>,
        program: Option<Vec<String>>,
    }

    impl RecordingRuntime {
        /// A double that knows no containers and runs nothing.
        pub fn new() -> RecordingRuntime {
            RecordingRuntime::default()
        }

        /// A double whose `run_detached` spawns `argv` as the container's init.
        pub fn spawning(argv: &[&str]) -> RecordingRuntime {
            RecordingRuntime {
                inner: Mutex::default(),
                program: Some(argv.iter().map(|a| a.to_string()).collect()),
            }
        }

        /// Pretends the runtime knows container `id` with `status`.
        pub fn with_container(self, id: &str, status: &str) -> RecordingRuntime {
            if let Ok(mut inner) = self.inner.lock() {
                inner
                    .containers
                    .insert(id.to_string(), (status.to_string(), 0));
            }
            self
        }

        /// The calls made so far, oldest first.
        pub fn calls(&self) -> Vec<RuntimeCall> {
            self.inner
                .lock()
                .map(|inner| inner.calls.clone())
                .unwrap_or_default()
        }

        fn record(&self, call: RuntimeCall) {
            if let Ok(mut inner) = self.inner.lock() {
                inner.calls.push(call);
            }
        }

        fn failed(id: &str, command: &'static str, why: &str) -> RuntimeError {
            RuntimeError::Failed {
                binary: "recording-runtime".into(),
                command,
                id: id.to_string(),
                status: "exit status: 1".to_string(),
                stderr: why.to_string(),
            }
        }
    }

    impl OciRuntime for RecordingRuntime {
        fn run_detached(&self, request: DetachedRun<'_>) -> Result<(), RuntimeError> {
            self.record(RuntimeCall::RunDetached {
                id: request.id.to_string(),
            });
            let Some(argv) = &self.program else {
                return Err(Self::failed(request.id, "run", "the double runs nothing"));
            };
            let Some((program, args)) = argv.split_first() else {
                return Err(Self::failed(request.id, "run", "empty program"));
            };
            let child = Command::new(program)
                .args(args)
                .current_dir(request.cwd)
                .stdin(Stdio::null())
                .stdout(Stdio::from(request.stdout))
                .stderr(Stdio::from(request.stderr))
                .spawn()
                .map_err(|source| RuntimeError::Spawn {
                    binary: program.into(),
                    command: "run",
                    source,
                })?;
            let pid = child.id() as i32;
            // The supervisor reaps the "init" itself (waitpid), as it would a
            // reparented container init; the handle is not needed.
            drop(child);
            fs::write(request.pid_file, pid.to_string()).map_err(|source| RuntimeError::Spawn {
                binary: request.pid_file.to_path_buf(),
                command: "run",
                source,
            })?;
            if let Ok(mut inner) = self.inner.lock() {
                inner
                    .containers
                    .insert(request.id.to_string(), ("running".to_string(), pid));
            }
            Ok(())
        }

        fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
            self.record(RuntimeCall::State { id: id.to_string() });
            Ok(self.inner.lock().ok().and_then(|inner| {
                inner
                    .containers
                    .get(id)
                    .map(|(status, pid)| ContainerState {
                        status: status.clone(),
                        pid: *pid,
                    })
            }))
        }

        fn kill(&self, id: &str, signal: KillSignal, all: bool) -> Result<(), RuntimeError> {
            self.record(RuntimeCall::Kill {
                id: id.to_string(),
                signal,
                all,
            });
            let Ok(mut inner) = self.inner.lock() else {
                return Err(Self::failed(id, "kill", "poisoned"));
            };
            let Some((status, pid)) = inner.containers.get_mut(id) else {
                return Err(Self::failed(id, "kill", "container does not exist"));
            };
            if *pid > 0 {
                let signal = match signal {
                    KillSignal::Term => nix::sys::signal::Signal::SIGTERM,
                    KillSignal::Kill => nix::sys::signal::Signal::SIGKILL,
                };
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
            }
            if signal == KillSignal::Kill {
                *status = "stopped".to_string();
            }
            Ok(())
        }

        fn delete(&self, id: &str) -> Result<(), RuntimeError> {
            self.record(RuntimeCall::Delete { id: id.to_string() });
            if let Ok(mut inner) = self.inner.lock() {
                inner.containers.remove(id);
            }
            Ok(())
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
        let runtime = RuncRuntime::new(Path::new("runc"), Path::new("/r"));
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
    fn kill_goes_through_the_checked_run_with_its_arguments_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let _children = crate::CHILD_PROCESSES.lock();
        let dir = tempfile::tempdir().unwrap();
        let argv_file = dir.path().join("argv");
        let fake = dir.path().join("fake-runc");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" > {}\necho 'container does not exist' >&2\nexit 1\n",
                argv_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtime = RuncRuntime::new(&fake, Path::new("/r"));
        let err = runtime.kill("c1", KillSignal::Kill, true).unwrap_err();
        assert_eq!(
            std::fs::read_to_string(&argv_file).unwrap(),
            "--root /r kill --all c1 KILL\n"
        );
        match err {
            RuntimeError::Failed {
                command, stderr, ..
            } => {
                assert_eq!(command, "kill");
                assert_eq!(stderr, "container does not exist");
            }
            other => panic!("unexpected {other:?}"),
        }
        runtime.kill("c1", KillSignal::Term, false).unwrap_err();
        assert_eq!(
            std::fs::read_to_string(&argv_file).unwrap(),
            "--root /r kill c1 TERM\n"
        );
        assert!(matches!(
            runtime.kill("../x", KillSignal::Term, false),
            Err(RuntimeError::BadContainerId { .. })
        ));
    }

    #[test]
    fn kind_follows_the_binary_name() {
        assert_eq!(
            RuncRuntime::new(Path::new("/usr/bin/crun"), Path::new("/r")).kind,
            RuntimeKind::Crun
        );
        assert_eq!(
            RuncRuntime::new(Path::new("runc"), Path::new("/r")).kind,
            RuntimeKind::Runc
        );
        let command = RuncRuntime::new(Path::new("runc"), Path::new("/run/plinth/runc"))
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
