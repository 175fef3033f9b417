//! The job manager's worker thread, and how the agent starts (or declines to start) jobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use plinth_toolbox::error_chain;

use super::{JobManager, JobsConfig};
use crate::config::AgentConfig;
use crate::identity::NodeIdentity;
use crate::store::Store;

/// How long the worker sleeps between passes while no job is queued or running. A
/// submission or a cancellation rings the manager's [`Doorbell`], so this is only a
/// safety net; an idle agent wakes once a minute for it instead of five times a second.
pub const IDLE_POLL: Duration = Duration::from_secs(60);

/// Wakes the worker as soon as there is something to do (a job submitted or cancelled,
/// the agent stopping) instead of at its next poll.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    bell: Condvar,
}

impl Doorbell {
    /// Wake the worker (or make its next wait return at once).
    pub fn ring(&self) {
        let mut rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        *rung = true;
        self.bell.notify_one();
    }

    /// Wait until rung or `timeout` passed; says whether it was rung, and clears it.
    pub fn wait(&self, timeout: Duration) -> bool {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut rung, _) = self
            .bell
            .wait_timeout_while(rung, timeout, |rung| !*rung)
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *rung)
    }
}

/// Runs the lifecycle loop on a dedicated thread until `stop` is set: a pass every
/// `period` while jobs are queued or running, otherwise asleep until the doorbell
/// rings (or [`IDLE_POLL`] passes).
pub fn spawn_worker(
    manager: Arc<JobManager>,
    stop: Arc<AtomicBool>,
    period: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(err) = manager.recover() {
            tracing::error!(error = %error_chain(&err), "job recovery failed");
        }
        while !stop.load(Ordering::SeqCst) {
            let busy = manager.tick().unwrap_or_else(|err| {
                tracing::error!(error = %error_chain(&err), "job manager pass failed");
                true
            });
            manager
                .doorbell()
                .wait(if busy { period } else { IDLE_POLL });
        }
    })
}

/// A running job manager and its worker thread.
#[derive(Debug)]
pub struct JobsService {
    /// The manager (shared with the API).
    pub manager: Arc<JobManager>,
    stop: Arc<AtomicBool>,
}

impl JobsService {
    /// Asks the worker to stop after its current pass. Running jobs keep
    /// running under their supervisors and are re-adopted by the next start.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.manager.doorbell().ring();
    }
}

/// Starts the job manager for the agent, or explains (in the log) why jobs
/// are disabled: no OCI runtime on `PATH`, or an engine that cannot start.
pub fn start(
    config: &AgentConfig,
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
) -> Option<JobsService> {
    start_with_gpu_meter(
        config,
        store,
        identity,
        Arc::new(plinth_jobs::meter::NoGpuMeter),
    )
}

/// [`start`] with the GPU module's meter for the receipts' per-GPU facts.
pub fn start_with_gpu_meter(
    config: &AgentConfig,
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
    gpu_meter: Arc<dyn plinth_jobs::meter::GpuMeter>,
) -> Option<JobsService> {
    if !config.jobs.enabled {
        tracing::info!("jobs are disabled by configuration (jobs.enabled = false)");
        return None;
    }
    let jobs_config = JobsConfig::from_config(config);
    let runtime = &jobs_config.engine.runtime_binary;
    // With the privileged runner configured, the runner runs the OCI runtime.
    let found = jobs_config.engine.runner_socket.is_some()
        || runtime.is_absolute() && runtime.exists()
        || std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(runtime).is_file())
        });
    if !found {
        tracing::warn!(runtime = %runtime.display(), "no OCI runtime found; jobs are disabled");
        return None;
    }
    let manager = match JobManager::with_gpu_meter(store, identity, jobs_config, gpu_meter) {
        Ok(manager) => Arc::new(manager),
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "cannot start the job engine; jobs are disabled");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    spawn_worker(manager.clone(), stop.clone(), Duration::from_millis(200));
    Some(JobsService { manager, stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn doorbell_wakes_a_waiting_worker_and_is_cleared_by_the_wait() {
        let bell = Arc::new(Doorbell::default());
        // A ring before the wait is not lost.
        bell.ring();
        assert!(bell.wait(Duration::from_secs(10)));
        // ...and is consumed: the next wait times out.
        let started = Instant::now();
        assert!(!bell.wait(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        // A ring from another thread ends a long wait early.
        let ringer = Arc::clone(&bell);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ringer.ring();
        });
        let started = Instant::now();
        assert!(bell.wait(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        thread.join().unwrap();
    }
}
