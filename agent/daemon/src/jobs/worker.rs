//! The job manager's worker thread, and how the agent starts (or declines to start) jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plinth_toolbox::error_chain;

use super::{JobManager, JobsConfig};
use crate::config::AgentConfig;
use crate::identity::NodeIdentity;
use crate::store::Store;

/// Runs the lifecycle loop on a dedicated thread until `stop` is set.
pub fn spawn_worker(
    manager: Arc<JobManager>,
    stop: Arc<AtomicBool>,
    period: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(err) = manager.recover() {
            tracing::error!(error = %error_chain(&err), "job recovery failed");
        }
        while !stop.load(Ordering::Relaxed) {
            if let Err(err) = manager.tick() {
                tracing::error!(error = %error_chain(&err), "job manager pass failed");
            }
            std::thread::sleep(period);
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
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the job manager for the agent, or explains (in the log) why jobs
/// are disabled: no OCI runtime on `PATH`, or an engine that cannot start.
pub fn start(
    config: &AgentConfig,
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
) -> Option<JobsService> {
    if !config.jobs.enabled {
        tracing::info!("jobs are disabled by configuration (jobs.enabled = false)");
        return None;
    }
    let jobs_config = JobsConfig::from_config(config);
    let runtime = &jobs_config.engine.runtime_binary;
    let found = runtime.is_absolute() && runtime.exists()
        || std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(runtime).is_file())
        });
    if !found {
        tracing::warn!(runtime = %runtime.display(), "no OCI runtime found; jobs are disabled");
        return None;
    }
    let manager = match JobManager::new(store, identity, jobs_config) {
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
