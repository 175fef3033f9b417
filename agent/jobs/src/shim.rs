//! The per-job supervisor (`plinth-job-shim JOB_DIR`).
//!
//! One small process per job owns everything that must outlive the agent:
//! it becomes a child subreaper, runs `runtime create` with the container's
//! stdout/stderr connected to pipes it reads into capped logs, `start`s the
//! container, reaps the container's init (reparented to it) to learn the exit
//! status, enforces the deadline and cancellation (SIGTERM, grace period,
//! SIGKILL to every process), samples the job's cgroup, and finally writes
//! `result.json` (atomically) before `delete`. Its state is files in the job
//! directory, so the agent can crash, restart and re-adopt the job by reading
//! them (see [`crate::engine::Engine::recover`]).
//!
//! Job directory files:
//!
//! | file | writer | meaning |
//! | --- | --- | --- |
//! | `shim.json` | agent | [`ShimConfig`] |
//! | `shim.pid` | shim | pid and start time of the supervisor |
//! | `container.pid` | runtime | host pid of the container's init |
//! | `state.json` | shim | [`ShimState`]: phase, times, latest usage (every second) |
//! | `cancel` | agent | presence asks the shim to stop the job |
//! | `stdout.log`, `stderr.log` | shim | capped logs |
//! | `result.json` | shim (or agent recovery) | [`JobResult`], written once |

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::caplog::{CapLogError, CappedLog};
use crate::meter::{JobCgroup, Usage};
use crate::runtime::{OciRuntime, RuntimeError};

/// Supervisor configuration file name.
pub const SHIM_CONFIG: &str = "shim.json";
/// Supervisor pid file name.
pub const SHIM_PID: &str = "shim.pid";
/// Lock file held (flock) by the live supervisor for its whole life.
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

/// How often the main loop polls (reaping, deadline, cancellation).
const POLL: Duration = Duration::from_millis(5);
/// How often the cgroup is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often `state.json` is rewritten.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// How long to wait for log pipes to drain after the container ended.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A job directory file could not be read or written.
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
    /// A job directory file is not valid JSON.
    #[error("cannot parse {path}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The OCI runtime failed.
    #[error("OCI runtime failed")]
    Runtime(#[from] RuntimeError),
    /// A log could not be opened.
    #[error("cannot open job log")]
    Log(#[from] CapLogError),
    /// Becoming a subreaper failed.
    #[error("cannot become a child subreaper")]
    Subreaper(#[source] Errno),
}

/// What the agent tells the supervisor (`shim.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// Container id given to the runtime.
    pub container_id: String,
    /// Bundle directory (with `config.json`).
    pub bundle: PathBuf,
    /// The runtime.
    pub runtime: OciRuntime,
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
    /// `runtime create` is running.
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `value` as JSON to `path` atomically (temporary file, fsync, rename).
///
/// Used for what must survive a power loss (results).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ShimError> {
    write_json(path, value, true)
}

/// Like [`write_json_atomic`] without the fsync: readers never see a partial
/// file, but a power loss may lose the update. For state that a crash of
/// the host makes moot anyway (pid files, live state, configs of jobs that
/// cannot survive a reboot).
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<(), ShimError> {
    write_json(path, value, false)
}

fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), ShimError> {
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ShimError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let io_err = |op| {
        let path = path.to_path_buf();
        move |source| ShimError::Io { op, path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io_err("create"))?;
    file.write_all(&bytes).map_err(io_err("write"))?;
    if durable {
        file.sync_all().map_err(io_err("sync"))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename"))?;
    Ok(())
}

/// Reads a JSON file of the job directory; `None` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ShimError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ShimError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
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

/// Takes the supervisor lock of `job_dir` without waiting; `None` when
/// another process (a live supervisor) holds it.
pub fn try_lock(job_dir: &Path) -> Result<Option<nix::fcntl::Flock<fs::File>>, ShimError> {
    let path = job_dir.join(SHIM_LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ShimError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ShimError::Io {
            op: "lock",
            path,
            source: io::Error::from(errno),
        }),
    }
}

/// Whether a live supervisor holds the lock of `job_dir`.
pub fn is_locked(job_dir: &Path) -> bool {
    matches!(try_lock(job_dir), Ok(None))
}

struct LogPump {
    handle: thread::JoinHandle<u64>,
}

impl LogPump {
    fn spawn(mut log: CappedLog, mut reader: impl io::Read + Send + 'static) -> LogPump {
        LogPump {
            handle: thread::spawn(move || {
                if let Err(err) = log.copy_from(&mut reader) {
                    tracing::warn!(error = %err, "job log capture stopped");
                }
                log.dropped()
            }),
        }
    }

    fn finish(self, deadline: Instant) -> u64 {
        while !self.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            self.handle.join().unwrap_or(0)
        } else {
            0
        }
    }
}

/// Runs the supervisor for the job in `job_dir` and records its result.
///
/// Any error before the container ran is itself recorded as a
/// `start_failed` result, so the agent always finds a `result.json` once the
/// supervisor has exited normally.
pub fn run(job_dir: &Path) -> Result<JobResult, ShimError> {
    let config: ShimConfig =
        read_json(&job_dir.join(SHIM_CONFIG))?.ok_or_else(|| ShimError::Io {
            op: "read",
            path: job_dir.join(SHIM_CONFIG),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
    match supervise(job_dir, &config) {
        Ok(result) => Ok(result),
        Err(err) => {
            let result = JobResult {
                reason: EndReason::StartFailed,
                exit_code: None,
                signal: None,
                started_at_ms: None,
                ended_at_ms: now_ms(),
                usage: Usage::default(),
                stdout_dropped_bytes: 0,
                stderr_dropped_bytes: 0,
                error: Some(crate::engine::error_chain(&err)),
            };
            let _ = config.runtime.delete(&config.container_id);
            write_json_atomic(&job_dir.join(RESULT), &result)?;
            Ok(result)
        }
    }
}

enum Exit {
    Code(i32),
    Signal(i32),
    Unknown,
}

fn supervise(job_dir: &Path, config: &ShimConfig) -> Result<JobResult, ShimError> {
    // Held until this process exits: the agent tells a live supervisor by it.
    // The agent probes the lock briefly; retry for a moment before giving up.
    let mut lock = try_lock(job_dir)?;
    for _ in 0..200 {
        if lock.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
        lock = try_lock(job_dir)?;
    }
    let Some(_lock) = lock else {
        return Err(ShimError::Io {
            op: "lock",
            path: job_dir.join(SHIM_LOCK),
            source: io::Error::other("another supervisor runs this job"),
        });
    };
    if let Some(result) = read_json::<JobResult>(&job_dir.join(RESULT))? {
        // Recovery already ended this job (we started too late): do not run it.
        return Ok(result);
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(ShimError::Subreaper)?;
    let own_pid = std::process::id() as i32;
    let identity = ShimIdentity {
        pid: own_pid,
        start_time: process_start_time(own_pid).unwrap_or(0),
    };
    write_json_replace(&job_dir.join(SHIM_PID), &identity)?;
    let mut state = ShimState {
        phase: ShimPhase::Creating,
        container_pid: None,
        started_at_ms: None,
        deadline_ms: None,
        usage: Usage::default(),
        updated_at_ms: now_ms(),
    };
    write_json_replace(&job_dir.join(STATE), &state)?;
    let stdout_log = CappedLog::create(&job_dir.join(STDOUT_LOG), config.log_cap_bytes)?;
    let stderr_log = CappedLog::create(&job_dir.join(STDERR_LOG), config.log_cap_bytes)?;
    let pid_file = job_dir.join(CONTAINER_PID);
    let _ = fs::remove_file(&pid_file);
    if job_dir.join(CANCEL).exists() {
        // Cancelled before it ever ran: nothing to bill.
        let result = JobResult {
            reason: EndReason::Cancelled,
            exit_code: None,
            signal: None,
            started_at_ms: None,
            ended_at_ms: now_ms(),
            usage: Usage::default(),
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            error: None,
        };
        write_json_atomic(&job_dir.join(RESULT), &result)?;
        return Ok(result);
    }
    // `run --detach` creates and starts in one runtime invocation (one exec
    // of the runtime fewer than create + start); the container inherits the
    // pipes, and its init is reparented to us when the runtime exits.
    let mut run =
        config
            .runtime
            .run_detached_command(&config.container_id, &config.bundle, &pid_file)?;
    run.current_dir(job_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The job's time starts when the runtime is asked to start it: creation
    // is part of the job (and bounded by its deadline).
    let started = Instant::now();
    let started_at_ms = now_ms();
    let mut child = run.spawn().map_err(|source| ShimError::Io {
        op: "spawn the runtime for",
        path: config.bundle.clone(),
        source,
    })?;
    let stdout_pump = child
        .stdout
        .take()
        .map(|pipe| LogPump::spawn(stdout_log, pipe));
    let stderr_pump = child
        .stderr
        .take()
        .map(|pipe| LogPump::spawn(stderr_log, pipe));
    let run_status = child.wait().map_err(|source| ShimError::Io {
        op: "wait for the runtime of",
        path: config.bundle.clone(),
        source,
    })?;
    if !run_status.success() {
        let drain = Instant::now() + LOG_DRAIN;
        stdout_pump.map(|p| p.finish(drain));
        stderr_pump.map(|p| p.finish(drain));
        let stderr = fs::read_to_string(job_dir.join(STDERR_LOG)).unwrap_or_default();
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(1000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(ShimError::Runtime(RuntimeError::Failed {
            binary: config.runtime.binary.clone(),
            command: "run",
            id: config.container_id.clone(),
            status: run_status.to_string(),
            stderr: tail,
        }));
    }
    let pid_text = fs::read_to_string(&pid_file).map_err(|source| ShimError::Io {
        op: "read",
        path: pid_file.clone(),
        source,
    })?;
    let container_pid: i32 = pid_text.trim().parse().map_err(|_| ShimError::Io {
        op: "parse",
        path: pid_file.clone(),
        source: io::Error::other(format!("{:?} is not a pid", pid_text.trim())),
    })?;
    state.container_pid = Some(container_pid);
    let mut stop_reason: Option<EndReason> = None;
    let deadline = started + Duration::from_millis(config.max_duration_ms);
    state.phase = ShimPhase::Running;
    state.started_at_ms = Some(started_at_ms);
    state.deadline_ms = Some(started_at_ms + config.max_duration_ms);
    state.updated_at_ms = now_ms();
    write_json_replace(&job_dir.join(STATE), &state)?;
    let mut term_sent_at: Option<Instant> = None;
    let mut kill_sent = false;
    let mut last_sample = Instant::now() - SAMPLE_EVERY;
    let mut last_state = Instant::now();
    let exit = loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == container_pid => {
                break Exit::Code(code);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid.as_raw() == container_pid => {
                break Exit::Signal(signal as i32);
            }
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => continue,
            Err(Errno::ECHILD) => {
                // The init was not reparented to us (should not happen); fall
                // back to the runtime's view.
                match config.runtime.state(&config.container_id) {
                    Ok(Some(container)) if container.status != "stopped" => {}
                    _ => break Exit::Unknown,
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => {}
        }
        let now = Instant::now();
        if now.duration_since(last_sample) >= SAMPLE_EVERY {
            last_sample = now;
            if let Ok(sample) = config.cgroup.sample() {
                state.usage.absorb(&sample);
            }
        }
        if stop_reason.is_none() {
            if now >= deadline {
                stop_reason = Some(EndReason::TimedOut);
            } else if job_dir.join(CANCEL).exists() {
                stop_reason = Some(EndReason::Cancelled);
            }
            if stop_reason.is_some() {
                let _ = config.runtime.kill(&config.container_id, "TERM", false);
                term_sent_at = Some(now);
                state.phase = ShimPhase::Stopping;
                last_state = now - STATE_EVERY;
            }
        } else if !kill_sent
            && term_sent_at.is_some_and(|sent| {
                now.duration_since(sent) >= Duration::from_millis(config.kill_grace_ms)
            })
        {
            let _ = config.runtime.kill(&config.container_id, "KILL", true);
            kill_sent = true;
        }
        if now.duration_since(last_state) >= STATE_EVERY {
            last_state = now;
            state.usage.wall_ms = now.duration_since(started).as_millis() as u64;
            state.updated_at_ms = now_ms();
            let _ = write_json_replace(&job_dir.join(STATE), &state);
        }
        thread::sleep(POLL);
    };
    let ended_at_ms = now_ms();
    let wall_ms = started.elapsed().as_millis() as u64;
    if let Ok(sample) = config.cgroup.sample() {
        state.usage.absorb(&sample);
    }
    state.usage.wall_ms = wall_ms;
    // The init process itself ran, even if it ended between samples.
    state.usage.peak_pids = state.usage.peak_pids.max(1);
    state.phase = ShimPhase::Finishing;
    state.updated_at_ms = ended_at_ms;
    let _ = write_json_replace(&job_dir.join(STATE), &state);
    let drain = Instant::now() + LOG_DRAIN;
    let stdout_dropped_bytes = stdout_pump.map(|p| p.finish(drain)).unwrap_or(0);
    let stderr_dropped_bytes = stderr_pump.map(|p| p.finish(drain)).unwrap_or(0);
    let (exit_code, signal) = match exit {
        Exit::Code(code) => (Some(code), None),
        Exit::Signal(signal) => (None, Some(signal)),
        Exit::Unknown => (None, None),
    };
    let reason = match stop_reason {
        Some(reason) => reason,
        None if state.usage.oom_kills > 0 && exit_code != Some(0) => EndReason::OomKilled,
        None => EndReason::Exited,
    };
    let result = JobResult {
        reason,
        exit_code,
        signal,
        started_at_ms: Some(started_at_ms),
        ended_at_ms,
        usage: state.usage.clone(),
        stdout_dropped_bytes,
        stderr_dropped_bytes,
        error: None,
    };
    write_json_atomic(&job_dir.join(RESULT), &result)?;
    if let Err(err) = config.runtime.delete(&config.container_id) {
        tracing::warn!(error = %err, "cannot delete container");
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_bogus_one_is_not() {
        let pid = std::process::id() as i32;
        let me = ShimIdentity {
            pid,
            start_time: process_start_time(pid).unwrap(),
        };
        assert!(me.is_alive());
        let recycled = ShimIdentity {
            pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.is_alive());
    }

    #[test]
    fn json_files_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULT);
        assert!(read_json::<JobResult>(&path).unwrap().is_none());
        let result = JobResult {
            reason: EndReason::TimedOut,
            exit_code: None,
            signal: Some(9),
            started_at_ms: Some(1),
            ended_at_ms: 2,
            usage: Usage::default(),
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            error: None,
        };
        write_json_atomic(&path, &result).unwrap();
        assert_eq!(read_json::<JobResult>(&path).unwrap(), Some(result));
        assert!(!dir.path().join("result.json.tmp").exists());
    }
}
