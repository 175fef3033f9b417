//! The job directory protocol: the files through which the engine (in the
//! agent) and the per-job supervisor (`plinth-job-shim`) talk, their types,
//! and the one way each is read and written.
//!
//! Both [`crate::engine`] and [`crate::shim`] use this module and neither
//! uses the other: the supervisor is a separate process, and the job
//! directory is the whole interface between the two.
//!
//! | file | writer | meaning |
//! | --- | --- | --- |
//! | `job.json` | agent | [`JobRecord`]: spec, devices, image |
//! | `shim.json` | agent | [`ShimConfig`]: what the supervisor runs |
//! | `shim.log` | agent | supervisor's stderr; its existence means "spawned" |
//! | `shim.lock` | shim | OFD write lock held for the supervisor's whole life |
//! | `shim.pid` | shim | [`ShimIdentity`]: pid and start time |
//! | `container.pid` | runtime | host pid of the container's init |
//! | `state.json` | shim | [`ShimState`]: phase, times, usage (every second) |
//! | `cancel` | agent | presence asks the supervisor to stop the job |
//! | `stdout.log`, `stderr.log` | shim | capped logs |
//! | `result.json` | shim, or agent recovery | [`JobResult`], written once |
//!
//! **Durability.** Every file recovery or billing reads (`job.json`,
//! `shim.json`, `shim.pid`, `state.json`, `cancel`, `result.json`) is written
//! with [`plinth_toolbox::durable`]: temporary file, fsync, rename, fsync of
//! the directory. `result.json` is installed with `create_new`, so the first
//! result written wins, atomically, whoever writes it ([`write_result`]).
//!
//! **Liveness.** The supervisor holds an open-file-description lock
//! (`F_OFD_SETLK`, write, whole file) on `shim.lock` from a close-on-exec
//! descriptor. The agent only *tests* that lock (`F_OFD_GETLK`,
//! [`supervisor_holds_lock`]) and never takes it, so no descriptor of the
//! agent can ever hold the lock, and a child the agent forks while probing
//! cannot make a dead supervisor look alive.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use plinth_toolbox::durable::{self, DurableError, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::meter::{JobCgroup, Usage};
use crate::runtime::RuncRuntime;
use crate::spec::JobSpec;

/// The engine's record of a job.
pub const JOB_RECORD: &str = "job.json";
/// Supervisor configuration file name.
pub const SHIM_CONFIG: &str = "shim.json";
/// The supervisor's standard error, created by the agent when it spawns it.
pub const SHIM_LOG: &str = "shim.log";
/// Supervisor identity file name.
pub const SHIM_PID: &str = "shim.pid";
/// Lock file the live supervisor holds (OFD write lock) for its whole life.
pub const SHIM_LOCK: &str = "shim.lock";
/// Container init pid file name (written by the runtime).
pub const CONTAINER_PID: &str = "container.pid";
/// Live state file name.
pub const STATE: &str = "state.json";
/// Final result file name.
pub const RESULT: &str = "result.json";
/// Cancellation request file name.
pub const CANCEL: &str = "cancel";
/// Captured standard output.
pub const STDOUT_LOG: &str = "stdout.log";
/// Captured standard error.
pub const STDERR_LOG: &str = "stderr.log";
/// The runtime bundle directory.
pub const BUNDLE_DIR: &str = "bundle";

/// Mode of the job directory files (the directory itself is 0700).
const FILE_MODE: u32 = 0o600;

/// Errors of reading or writing job directory files.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A job directory file could not be read, opened or locked.
    #[error("cannot {op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A job directory file is not valid JSON for its type.
    #[error("cannot parse {path}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be serialised for its file.
    #[error("cannot serialise {path}")]
    Serialize {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The durable write of a file failed.
    #[error("cannot write job file")]
    Write(#[from] DurableError),
    /// A file that must exist is missing.
    #[error("{path} does not exist")]
    Missing {
        /// Path.
        path: PathBuf,
    },
}

/// What the engine records about a job at prepare time (`job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub job_id: String,
    /// Container id.
    pub container_id: String,
    /// The spec.
    pub spec: JobSpec,
    /// CDI devices assigned.
    pub gpu_devices: Vec<String>,
    /// Image id.
    pub image_id: String,
    /// The verified signer of a registry image pulled under a signature policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_signer: Option<crate::signature::VerifiedSigner>,
}

/// What the agent tells the supervisor (`shim.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// Container id given to the runtime.
    pub container_id: String,
    /// Bundle directory (with `config.json`).
    pub bundle: PathBuf,
    /// The runtime the supervisor drives (binary and state root).
    pub runtime: RuncRuntime,
    /// Maximum run time in milliseconds from `start`.
    pub max_duration_ms: u64,
    /// Time between SIGTERM and SIGKILL, milliseconds.
    pub kill_grace_ms: u64,
    /// Cap of each log file, bytes.
    pub log_cap_bytes: u64,
    /// The job's cgroup.
    pub cgroup: JobCgroup,
}

/// Phase of a supervised job (`state.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimPhase {
    /// The runtime is creating the container. Current supervisors write no
    /// state before the container runs; recovery treats this phase, like a
    /// missing state, as "never ran".
    Creating,
    /// The container's process runs.
    Running,
    /// SIGTERM (or SIGKILL) was sent; waiting for the end.
    Stopping,
    /// The container ended; the result is being written.
    Finishing,
}

/// Live state written by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// Phase.
    pub phase: ShimPhase,
    /// Host pid of the container's init.
    pub container_pid: Option<i32>,
    /// When the container's process was started (unix ms).
    pub started_at_ms: Option<u64>,
    /// When the deadline falls (unix ms).
    pub deadline_ms: Option<u64>,
    /// Usage up to `updated_at_ms`.
    pub usage: Usage,
    /// When this state was written (unix ms).
    pub updated_at_ms: u64,
}

/// Why a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The process exited (or died of a signal) by itself.
    Exited,
    /// The deadline passed and the supervisor stopped it.
    TimedOut,
    /// It was cancelled.
    Cancelled,
    /// The kernel's OOM killer ended it.
    OomKilled,
    /// It never started (bad bundle, runtime failure).
    StartFailed,
    /// Its supervisor died; the agent ended it during recovery.
    SupervisorLost,
}

/// The end of a job (`result.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// Why it ended.
    pub reason: EndReason,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// When it started (unix ms), if it did.
    pub started_at_ms: Option<u64>,
    /// When it ended (unix ms).
    pub ended_at_ms: u64,
    /// Metered usage.
    pub usage: Usage,
    /// Bytes dropped from stdout by the cap.
    pub stdout_dropped_bytes: u64,
    /// Bytes dropped from stderr by the cap.
    pub stderr_dropped_bytes: u64,
    /// Error detail for `start_failed` and `supervisor_lost`.
    pub error: Option<String>,
}

impl JobResult {
    /// True when the job ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.reason == EndReason::Exited && self.exit_code == Some(0)
    }

    /// A job that ended before it ran, for `reason` (nothing to bill).
    pub fn never_ran(reason: EndReason, error: Option<String>) -> JobResult {
        JobResult {
            reason,
            exit_code: None,
            signal: None,
            started_at_ms: None,
            ended_at_ms: now_ms(),
            usage: Usage::default(),
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            error,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Start time of a process (field 22 of `/proc/PID/stat`), to tell a live
/// supervisor from a recycled pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Identity of the supervisor (`shim.pid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimIdentity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ShimIdentity {
    /// The identity of the calling process.
    pub fn own() -> ShimIdentity {
        let pid = std::process::id() as i32;
        ShimIdentity {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// True when that process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        if process_start_time(self.pid) != Some(self.start_time) {
            return false;
        }
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state_char = state
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
        !matches!(state_char.as_deref(), Some("Z") | Some("X") | None)
    }
}

/// Writes `value` as JSON to `path` durably (temporary file, fsync, rename,
/// fsync of the directory), replacing the previous contents.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ProtocolError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    durable::write_with(
        path,
        &bytes,
        WriteOptions {
            mode: FILE_MODE,
            create_new: false,
        },
    )?;
    Ok(())
}

/// Reads a JSON file of the job directory; `None` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ProtocolError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ProtocolError::Parse {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProtocolError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads the supervisor configuration of `job_dir`.
pub fn read_shim_config(job_dir: &Path) -> Result<ShimConfig, ProtocolError> {
    let path = job_dir.join(SHIM_CONFIG);
    read_json(&path)?.ok_or(ProtocolError::Missing { path })
}

/// Reads the result of the job in `job_dir`, if it has one.
pub fn read_result(job_dir: &Path) -> Result<Option<JobResult>, ProtocolError> {
    read_json(&job_dir.join(RESULT))
}

/// Records the result of the job in `job_dir`, durably and exactly once.
///
/// The file is installed with `create_new` (a hard link of a synced
/// temporary file), so of two writers racing (the supervisor and an agent
/// recovery) exactly one wins; the result on disk is returned either way.
pub fn write_result(job_dir: &Path, result: &JobResult) -> Result<JobResult, ProtocolError> {
    let path = job_dir.join(RESULT);
    let bytes = serde_json::to_vec_pretty(result).map_err(|source| ProtocolError::Serialize {
        path: path.clone(),
        source,
    })?;
    match durable::write_with(
        &path,
        &bytes,
        WriteOptions {
            mode: FILE_MODE,
            create_new: true,
        },
    ) {
        Ok(()) => Ok(result.clone()),
        Err(DurableError::Exists { .. }) => {
            read_json(&path)?.ok_or(ProtocolError::Missing { path })
        }
        Err(other) => Err(other.into()),
    }
}

/// Asks the supervisor of `job_dir` to stop the job (durably: a cancel the
/// agent acknowledged survives a power cut).
pub fn request_cancel(job_dir: &Path) -> Result<(), ProtocolError> {
    durable::write_with(
        &job_dir.join(CANCEL),
        b"",
        WriteOptions {
            mode: FILE_MODE,
            create_new: false,
        },
    )?;
    Ok(())
}

/// Whether the job in `job_dir` was asked to stop.
pub fn cancel_requested(job_dir: &Path) -> bool {
    job_dir.join(CANCEL).exists()
}

/// A write lock on the whole of `shim.lock`, whose `l_pid` must be 0 for
/// open-file-description locks.
fn whole_file_lock(lock_type: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// The supervisor's liveness lock on `shim.lock`: an open-file-description
/// write lock, released when the supervisor exits (its descriptor is
/// close-on-exec, so no runtime or container process inherits it past
/// `exec`).
#[derive(Debug)]
pub struct SupervisorLock {
    _file: fs::File,
}

impl SupervisorLock {
    /// Takes the lock of `job_dir` without waiting; `None` when another
    /// supervisor holds it.
    pub fn acquire(job_dir: &Path) -> Result<Option<SupervisorLock>, ProtocolError> {
        let path = job_dir.join(SHIM_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ProtocolError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        let lock = whole_file_lock(libc::F_WRLCK);
        match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(Some(SupervisorLock { _file: file })),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(None),
            Err(errno) => Err(ProtocolError::Io {
                op: "lock",
                path,
                source: io::Error::from(errno),
            }),
        }
    }
}

/// Whether a live supervisor holds the lock of `job_dir`.
///
/// This only tests the lock (`F_OFD_GETLK`) from a read-only descriptor and
/// never acquires anything, so neither this probe nor a child forked while
/// it runs can keep a lock alive.
pub fn supervisor_holds_lock(job_dir: &Path) -> Result<bool, ProtocolError> {
    let path = job_dir.join(SHIM_LOCK);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(ProtocolError::Io {
                op: "open",
                path,
                source,
            });
        }
    };
    let mut probe = whole_file_lock(libc::F_WRLCK);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe)).map_err(|errno| ProtocolError::Io {
        op: "test the lock of",
        path,
        source: io::Error::from(errno),
    })?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(reason: EndReason) -> JobResult {
        JobResult {
            reason,
            exit_code: None,
            signal: Some(9),
            started_at_ms: Some(1),
            ended_at_ms: 2,
            usage: Usage::default(),
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            error: None,
        }
    }

    #[test]
    fn own_process_is_alive_and_a_bogus_one_is_not() {
        let me = ShimIdentity::own();
        assert!(me.is_alive());
        let recycled = ShimIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.is_alive());
    }

    #[test]
    fn json_files_round_trip_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE);
        assert!(read_json::<JobResult>(&path).unwrap().is_none());
        let value = result(EndReason::TimedOut);
        write_json(&path, &value).unwrap();
        write_json(&path, &value).unwrap();
        assert_eq!(read_json::<JobResult>(&path).unwrap(), Some(value));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE]);
    }

    #[test]
    fn the_first_result_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_result(dir.path()).unwrap().is_none());
        let first = result(EndReason::Exited);
        assert_eq!(write_result(dir.path(), &first).unwrap(), first);
        let second = result(EndReason::SupervisorLost);
        assert_eq!(write_result(dir.path(), &second).unwrap(), first);
        assert_eq!(read_result(dir.path()).unwrap(), Some(first));
    }

    #[test]
    fn a_broken_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SHIM_CONFIG), b"{").unwrap();
        let err = read_shim_config(dir.path()).unwrap_err();
        assert!(err.to_string().contains("shim.json"), "{err}");
        let missing = read_shim_config(&dir.path().join("none")).unwrap_err();
        assert!(
            matches!(missing, ProtocolError::Missing { .. }),
            "{missing}"
        );
    }

    #[test]
    fn the_lock_is_seen_while_held_and_probing_never_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!supervisor_holds_lock(dir.path()).unwrap());
        let lock = SupervisorLock::acquire(dir.path()).unwrap().unwrap();
        // OFD locks conflict between descriptions even within one process.
        assert!(supervisor_holds_lock(dir.path()).unwrap());
        assert!(SupervisorLock::acquire(dir.path()).unwrap().is_none());
        drop(lock);
        // Probing many times leaves nothing held: the lock is free at once.
        for _ in 0..10 {
            assert!(!supervisor_holds_lock(dir.path()).unwrap());
        }
        assert!(SupervisorLock::acquire(dir.path()).unwrap().is_some());
    }

    #[test]
    fn cancel_requests_are_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!cancel_requested(dir.path()));
        request_cancel(dir.path()).unwrap();
        assert!(cancel_requested(dir.path()));
    }
}
