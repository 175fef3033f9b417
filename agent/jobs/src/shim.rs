//! The per-job supervisor (`plinth-job-shim JOB_DIR`).
//!
//! One small process per job owns everything that must outlive the agent:
//! it becomes a child subreaper, runs the OCI runtime's `run --detach` with
//! the container's stdout/stderr connected to pipes it reads into capped
//! logs, reaps the container's init (reparented to it) to learn the exit
//! status, enforces the deadline and cancellation (SIGTERM, grace period,
//! SIGKILL to every process), samples the job's cgroup, and finally records
//! `result.json` (durably, once) before `delete`. Its state is the job
//! directory files of [`crate::protocol`], so the agent can crash, restart and
//! re-adopt the job by reading them.
//!
//! The runtime is passed in ([`run_with`]); [`run`] is the production wiring
//! with the runtime named in `shim.json`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::caplog::{CapLogError, CappedLog};
use crate::meter::Usage;
use crate::protocol::{
    self, CONTAINER_PID, ProtocolError, SHIM_LOCK, STATE, STDERR_LOG, STDOUT_LOG, ShimConfig,
    ShimIdentity, ShimPhase, ShimState, SupervisorLock,
};
use crate::runtime::{DetachedRun, KillSignal, OciRuntime, RuncRuntime, RuntimeError};

// Re-exported for the agent daemon, which imports them from here; they live
// in [`crate::protocol`].
pub use crate::protocol::{EndReason, JobResult, now_ms};

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
    #[error("cannot use the job directory")]
    Protocol(#[from] ProtocolError),
    /// A file the runtime writes could not be used.
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
    /// Another supervisor holds the job's lock.
    #[error("another supervisor holds {path}")]
    Locked {
        /// The lock file.
        path: PathBuf,
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

/// Runs the supervisor for the job in `job_dir` with the runtime its
/// `shim.json` names (runc or crun): the production wiring of [`run_with`].
pub fn run(job_dir: &Path) -> Result<JobResult, ShimError> {
    let config = protocol::read_shim_config(job_dir)?;
    let runtime: RuncRuntime = config.runtime.clone();
    run_with(job_dir, &config, &runtime)
}

/// Runs the supervisor for the job in `job_dir` with `runtime` and records
/// its result.
///
/// Any error before the container ran is itself recorded as a
/// `start_failed` result, so the agent always finds a `result.json` once the
/// supervisor has exited normally. The result returned is the one on disk
/// (an agent recovery may have recorded one first).
pub fn run_with(
    job_dir: &Path,
    config: &ShimConfig,
    runtime: &dyn OciRuntime,
) -> Result<JobResult, ShimError> {
    match supervise(job_dir, config, runtime) {
        Ok(result) => Ok(result),
        Err(ShimError::Locked { path }) => Err(ShimError::Locked { path }),
        Err(err) => {
            let result = JobResult::never_ran(
                EndReason::StartFailed,
                Some(plinth_toolbox::error_chain(&err)),
            );
            let _ = runtime.delete(&config.container_id);
            Ok(protocol::write_result(job_dir, &result)?)
        }
    }
}

enum Exit {
    Code(i32),
    Signal(i32),
    Unknown,
}

/// The last `max_chars` characters of a log, trimmed.
fn log_tail(path: &Path, max_chars: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let trimmed = text.trim();
    let n_chars = trimmed.chars().count();
    trimmed
        .chars()
        .skip(n_chars.saturating_sub(max_chars))
        .collect()
}

fn supervise(
    job_dir: &Path,
    config: &ShimConfig,
    runtime: &dyn OciRuntime,
) -> Result<JobResult, ShimError> {
    // Held until this process exits: the agent tells a live supervisor by it,
    // testing it without ever taking it (see `protocol`).
    let Some(_lock) = SupervisorLock::acquire(job_dir)? else {
        return Err(ShimError::Locked {
            path: job_dir.join(SHIM_LOCK),
        });
    };
    if let Some(result) = protocol::read_result(job_dir)? {
        // Recovery already ended this job (we started too late): do not run it.
        return Ok(result);
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(ShimError::Subreaper)?;
    let mut state = ShimState {
        phase: ShimPhase::Creating,
        container_pid: None,
        started_at_ms: None,
        deadline_ms: None,
        usage: Usage::default(),
        updated_at_ms: now_ms(),
    };
    let stdout_log = CappedLog::create(&job_dir.join(STDOUT_LOG), config.log_cap_bytes)?;
    let stderr_log = CappedLog::create(&job_dir.join(STDERR_LOG), config.log_cap_bytes)?;
    let pid_file = job_dir.join(CONTAINER_PID);
    let _ = fs::remove_file(&pid_file);
    if protocol::cancel_requested(job_dir) {
        // Cancelled before it ever ran: nothing to bill.
        let result = JobResult::never_ran(EndReason::Cancelled, None);
        return Ok(protocol::write_result(job_dir, &result)?);
    }
    let pipe_err = |source| ShimError::Io {
        op: "create a log pipe for",
        path: job_dir.to_path_buf(),
        source,
    };
    let (stdout_reader, stdout_writer) = io::pipe().map_err(pipe_err)?;
    let (stderr_reader, stderr_writer) = io::pipe().map_err(pipe_err)?;
    let stdout_pump = LogPump::spawn(stdout_log, stdout_reader);
    let stderr_pump = LogPump::spawn(stderr_log, stderr_reader);
    // The job's time starts when the runtime is asked to start it: creation
    // is part of the job (and bounded by its deadline).
    let started = Instant::now();
    let started_at_ms = now_ms();
    // `run --detach` creates and starts in one runtime invocation (one exec
    // of the runtime fewer than create + start); the container inherits the
    // pipes, and its init is reparented to us when the runtime exits.
    let run = runtime.run_detached(DetachedRun {
        id: &config.container_id,
        bundle: &config.bundle,
        pid_file: &pid_file,
        cwd: job_dir,
        stdout: stdout_writer.into(),
        stderr: stderr_writer.into(),
    });
    if let Err(err) = run {
        let drain = Instant::now() + LOG_DRAIN;
        stdout_pump.finish(drain);
        stderr_pump.finish(drain);
        return Err(ShimError::Runtime(match err {
            RuntimeError::Failed {
                binary,
                command,
                id,
                status,
                stderr,
            } if stderr.is_empty() => RuntimeError::Failed {
                binary,
                command,
                id,
                status,
                stderr: log_tail(&job_dir.join(STDERR_LOG), 1000),
            },
            other => other,
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
    // The identity and the first state are written (durably) once the
    // container runs, not before: their fsyncs would otherwise delay the job's
    // start, and nothing needs them earlier (the lock says "alive"; a job
    // without a state never ran, which is what recovery then records).
    protocol::write_json(&job_dir.join(protocol::SHIM_PID), &ShimIdentity::own())?;
    protocol::write_json(&job_dir.join(STATE), &state)?;
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
                match runtime.state(&config.container_id) {
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
            } else if protocol::cancel_requested(job_dir) {
                stop_reason = Some(EndReason::Cancelled);
            }
            if stop_reason.is_some() {
                let _ = runtime.kill(&config.container_id, KillSignal::Term, false);
                term_sent_at = Some(now);
                state.phase = ShimPhase::Stopping;
                last_state = now - STATE_EVERY;
            }
        } else if !kill_sent
            && term_sent_at.is_some_and(|sent| {
                now.duration_since(sent) >= Duration::from_millis(config.kill_grace_ms)
            })
        {
            let _ = runtime.kill(&config.container_id, KillSignal::Kill, true);
            kill_sent = true;
        }
        if now.duration_since(last_state) >= STATE_EVERY {
            last_state = now;
            state.usage.wall_ms = now.duration_since(started).as_millis() as u64;
            state.updated_at_ms = now_ms();
            if let Err(err) = protocol::write_json(&job_dir.join(STATE), &state) {
                tracing::warn!(error = %plinth_toolbox::error_chain(&err), "cannot record job state");
            }
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
    if let Err(err) = protocol::write_json(&job_dir.join(STATE), &state) {
        tracing::warn!(error = %plinth_toolbox::error_chain(&err), "cannot record job state");
    }
    let drain = Instant::now() + LOG_DRAIN;
    let stdout_dropped_bytes = stdout_pump.finish(drain);
    let stderr_dropped_bytes = stderr_pump.finish(drain);
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
    let recorded = protocol::write_result(job_dir, &result)?;
    if let Err(err) = runtime.delete(&config.container_id) {
        tracing::warn!(error = %plinth_toolbox::error_chain(&err), "cannot delete container");
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::{CgroupVersion, JobCgroup};
    use crate::runtime::testing::{RecordingRuntime, RuntimeCall};

    fn config(dir: &Path, max_duration_ms: u64) -> ShimConfig {
        ShimConfig {
            container_id: "plinth-t1".to_string(),
            bundle: dir.join("bundle"),
            runtime: RuncRuntime::new(Path::new("/nonexistent/runc"), Path::new("/r")),
            max_duration_ms,
            kill_grace_ms: 200,
            log_cap_bytes: 4096,
            cgroup: JobCgroup::new(CgroupVersion::V2, "/plinth-shim-test-none/t1"),
        }
    }

    #[test]
    fn cancel_sends_term_then_kill_then_deletes() {
        let _children = crate::CHILD_PROCESSES.lock();
        let dir = tempfile::tempdir().unwrap();
        // An init that ignores SIGTERM, so the grace period runs out.
        let runtime =
            RecordingRuntime::spawning(&["/bin/sh", "-c", "trap '' TERM; echo up; sleep 30"]);
        let canceller = {
            let job_dir = dir.path().to_path_buf();
            thread::spawn(move || {
                let began = Instant::now();
                while !job_dir.join(CONTAINER_PID).exists() && began.elapsed().as_secs() < 10 {
                    thread::sleep(Duration::from_millis(5));
                }
                protocol::request_cancel(&job_dir).unwrap();
            })
        };
        let result = run_with(dir.path(), &config(dir.path(), 60_000), &runtime).unwrap();
        canceller.join().unwrap();
        assert_eq!(result.reason, EndReason::Cancelled, "{result:?}");
        assert_eq!(result.signal, Some(9), "{result:?}");
        let id = "plinth-t1".to_string();
        assert_eq!(
            runtime.calls(),
            [
                RuntimeCall::RunDetached { id: id.clone() },
                RuntimeCall::Kill {
                    id: id.clone(),
                    signal: KillSignal::Term,
                    all: false
                },
                RuntimeCall::Kill {
                    id: id.clone(),
                    signal: KillSignal::Kill,
                    all: true
                },
                RuntimeCall::Delete { id },
            ]
        );
        assert_eq!(protocol::read_result(dir.path()).unwrap(), Some(result));
        assert_eq!(
            fs::read_to_string(dir.path().join(STDOUT_LOG)).unwrap(),
            "up\n"
        );
    }

    #[test]
    fn a_runtime_failure_is_a_start_failed_result_and_the_container_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = RecordingRuntime::new();
        let result = run_with(dir.path(), &config(dir.path(), 1000), &runtime).unwrap();
        assert_eq!(result.reason, EndReason::StartFailed);
        assert!(
            result.error.as_deref().unwrap_or("").contains("run"),
            "{result:?}"
        );
        assert_eq!(
            runtime.calls(),
            [
                RuntimeCall::RunDetached {
                    id: "plinth-t1".into()
                },
                RuntimeCall::Delete {
                    id: "plinth-t1".into()
                },
            ]
        );
    }

    #[test]
    fn a_job_cancelled_before_it_ran_never_reaches_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        protocol::request_cancel(dir.path()).unwrap();
        let runtime = RecordingRuntime::new();
        let result = run_with(dir.path(), &config(dir.path(), 1000), &runtime).unwrap();
        assert_eq!(result.reason, EndReason::Cancelled);
        assert_eq!(result.started_at_ms, None);
        assert_eq!(runtime.calls(), []);
    }

    #[test]
    fn a_second_supervisor_is_refused_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SupervisorLock::acquire(dir.path()).unwrap().unwrap();
        let runtime = RecordingRuntime::new();
        let err = run_with(dir.path(), &config(dir.path(), 1000), &runtime).unwrap_err();
        assert!(matches!(err, ShimError::Locked { .. }), "{err}");
        assert!(protocol::read_result(dir.path()).unwrap().is_none());
        assert_eq!(runtime.calls(), []);
    }
}
