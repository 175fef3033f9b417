//! The job manager: the jobs and receipts tables, the job lifecycle, crash
//! recovery and receipt issuance, on top of the `plinth-jobs` engine.
//!
//! The lifecycle is [`JobState`] (`queued -> preparing -> running -> succeeded |
//! failed | cancelled | timed_out`), with its moves decided in one place
//! ([`state`]). Every transition is committed to SQLite before it is acted on
//! (the row says `preparing` before the image is imported, `running` before the
//! supervisor is spawned), so after a crash the row tells what may have happened
//! and recovery finishes it:
//!
//! - `preparing`: the job directory may be half-written; it is removed and
//!   the job is queued again;
//! - `running`: the engine re-adopts a live supervisor, or ends a container
//!   whose supervisor died (`supervisor_lost`), or starts a job whose
//!   supervisor was never spawned.
//!
//! Receipts ([`receipts`]): a running job gets an interim receipt every
//! `receipt_interval` and a final one when it ends. A receipt and the job's
//! `billed_until_ms` (and terminal state, for the final one) are written in the
//! same SQLite transaction, so a crash can neither lose nor repeat a billed period.
//!
//! Modules by concern: [`schema`] (tables and rows), [`state`] (lifecycle),
//! [`settings`] (configuration), [`types`] (API types), [`lifecycle`] (the worker's
//! steps and recovery), [`receipts`] (pricing and the ledger), [`worker`] (the thread).

pub mod lifecycle;
pub mod receipts;
pub mod schema;
pub mod settings;
pub mod state;
pub mod types;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use plinth_jobs::engine::{Engine, EngineError};
use plinth_jobs::protocol::now_ms;
use plinth_jobs::spec::{JobSpec, JobSpecError};
use rusqlite::params;

pub use self::settings::JobsConfig;
pub use self::state::{JobState, JobStateError};
pub use self::types::{JobInfo, QuotedTerms, SubmitAnswer, SubmitRequest};
pub use self::worker::{
    Doorbell, IDLE_POLL, JobsService, spawn_worker, start, start_with_gpu_meter,
};
use crate::identity::NodeIdentity;
use crate::store::Store;

/// Errors of the job manager.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The submitted spec is invalid.
    #[error("invalid job spec")]
    Spec(#[from] JobSpecError),
    /// A submit field other than the spec is invalid.
    #[error("invalid job request field `{field}`: {reason}")]
    InvalidRequest {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The job does not exist.
    #[error("no job {id}")]
    NotFound {
        /// Job id.
        id: String,
    },
    /// The job already ended.
    #[error("job {id} already ended ({state})")]
    Ended {
        /// Job id.
        id: String,
        /// Its state.
        state: JobState,
    },
    /// A state change was refused or could not be stored.
    #[error("job lifecycle")]
    State(#[from] JobStateError),
    /// The database failed.
    #[error("job store failed")]
    Db(#[from] rusqlite::Error),
    /// The engine failed.
    #[error("job engine failed")]
    Engine(#[from] EngineError),
    /// A receipt could not be built.
    #[error("cannot build a receipt")]
    Receipt(#[from] plinth_attestation::receipt::ReceiptError),
    /// Stored JSON is unreadable.
    #[error("stored job data is unreadable")]
    Json(#[from] serde_json::Error),
    /// A log could not be read.
    #[error("cannot read log {path}")]
    Log {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The buckets of the job start latency histogram, in seconds: a cached image starts in
/// well under a second, a registry pull of a large image takes minutes.
pub const START_LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// What the job manager counts as it works, for the agent's metrics (the `metrics`
/// module registers these handles; they are cheap clones of shared atomics).
#[derive(Debug, Clone)]
pub struct JobMetrics {
    /// Seconds from a job's submission to its supervisor being started.
    pub start_latency: prometheus_client::metrics::histogram::Histogram,
    /// Receipts appended to the ledger (interim and final) by this run of the agent.
    pub receipts_appended: prometheus_client::metrics::counter::Counter,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            start_latency: prometheus_client::metrics::histogram::Histogram::new(
                START_LATENCY_BUCKETS,
            ),
            receipts_appended: Default::default(),
        }
    }
}

/// The job manager.
pub struct JobManager {
    store: Arc<Store>,
    engine: Engine,
    identity: Arc<NodeIdentity>,
    config: JobsConfig,
    doorbell: Doorbell,
    metrics: JobMetrics,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("config", &self.config)
            .finish()
    }
}

fn new_job_id() -> String {
    let mut bytes = [0u8; 8];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        bytes = now_ms().to_be_bytes();
    }
    format!("j{}", hex::encode(bytes))
}

fn check_label(field: &'static str, value: &str) -> Result<(), JobsError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(JobsError::InvalidRequest {
            field,
            reason: "must be 1-128 of [A-Za-z0-9_.:@-]".to_owned(),
        })
    }
}

impl JobManager {
    /// Creates the manager (the store must have the jobs migration, [`schema::MIGRATION`]).
    pub fn new(
        store: Arc<Store>,
        identity: Arc<NodeIdentity>,
        config: JobsConfig,
    ) -> Result<JobManager, JobsError> {
        Self::with_gpu_meter(
            store,
            identity,
            config,
            Arc::new(plinth_jobs::meter::NoGpuMeter),
        )
    }

    /// A manager whose engine meters GPUs with `gpu_meter` (the GPU module's NVML meter).
    pub fn with_gpu_meter(
        store: Arc<Store>,
        identity: Arc<NodeIdentity>,
        config: JobsConfig,
        gpu_meter: Arc<dyn plinth_jobs::meter::GpuMeter>,
    ) -> Result<JobManager, JobsError> {
        let engine = Engine::with_gpu_meter(config.engine.clone(), gpu_meter)?;
        Ok(JobManager {
            store,
            engine,
            identity,
            config,
            doorbell: Doorbell::default(),
            metrics: JobMetrics::default(),
        })
    }

    /// What the manager counts (start latency, receipts appended).
    pub fn metrics(&self) -> &JobMetrics {
        &self.metrics
    }

    /// How many jobs are in each state.
    pub fn count_by_state(&self) -> Result<Vec<(JobState, u64)>, JobsError> {
        schema::count_by_state(&self.store.connection())
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The manager's settings.
    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// What wakes the worker when a job is submitted or cancelled.
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// Accepts a job: validates it and stores it as `queued`.
    pub fn submit(&self, request: &SubmitRequest) -> Result<String, JobsError> {
        self.submit_quoted(request, None)
    }

    /// Accepts a job leased under a signed quote: its receipts carry the quote's id and
    /// are priced by the quoted `terms` (see [`receipts`]).
    pub fn submit_quoted(
        &self,
        request: &SubmitRequest,
        terms: Option<&QuotedTerms>,
    ) -> Result<String, JobsError> {
        let spec_bytes = serde_json::to_vec(&request.spec)?;
        let spec = JobSpec::from_json(&spec_bytes)?;
        check_label("tenant", &request.tenant)?;
        check_label("lease_id", &request.lease_id)?;
        if spec.network == plinth_jobs::spec::Network::Host && !self.config.allow_host_network {
            return Err(JobsError::InvalidRequest {
                field: "spec.network",
                reason: "\"host\" is not allowed on this node (jobs.allow_host_network = false)"
                    .to_owned(),
            });
        }
        if request.gpu_devices.len() != spec.gpus.count as usize {
            return Err(JobsError::InvalidRequest {
                field: "gpu_devices",
                reason: format!(
                    "{} devices assigned for gpus.count {}",
                    request.gpu_devices.len(),
                    spec.gpus.count
                ),
            });
        }
        for device in &request.gpu_devices {
            plinth_jobs::cdi::parse_device_name(device).map_err(|err| {
                JobsError::InvalidRequest {
                    field: "gpu_devices",
                    reason: err.to_string(),
                }
            })?;
        }
        let id = new_job_id();
        let now = now_ms() as i64;
        self.store.connection().execute(
            "INSERT INTO jobs (id, tenant, lease_id, spec, gpu_devices, state, created_at_ms, updated_at_ms, quote_id, terms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            params![
                id,
                request.tenant,
                request.lease_id,
                serde_json::to_string(&spec)?,
                serde_json::to_string(&request.gpu_devices)?,
                JobState::Queued,
                now,
                terms.map(|terms| terms.quote_id.clone()),
                terms.map(serde_json::to_string).transpose()?,
            ],
        )?;
        self.doorbell.ring();
        Ok(id)
    }

    /// Requests cancellation: a queued job is cancelled before it starts, a running one
    /// is stopped by its supervisor (SIGTERM, then SIGKILL after the grace period).
    pub fn cancel(&self, id: &str) -> Result<(), JobsError> {
        let job = self.get(id)?;
        if !job.state.can_cancel() {
            return Err(JobsError::Ended {
                id: id.to_owned(),
                state: job.state,
            });
        }
        self.store.connection().execute(
            "UPDATE jobs SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
            params![id, now_ms() as i64],
        )?;
        if job.state == JobState::Running {
            self.engine.cancel(id)?;
        }
        self.doorbell.ring();
        Ok(())
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<JobInfo, JobsError> {
        schema::get(&self.store.connection(), id)
    }

    /// All jobs, newest first.
    pub fn list(&self) -> Result<Vec<JobInfo>, JobsError> {
        schema::list(&self.store.connection())
    }

    /// The path of job `id`'s standard output (or error) log; it may not exist yet.
    pub fn log_file(&self, id: &str, stderr: bool) -> Result<PathBuf, JobsError> {
        Ok(self.engine.log_path(id, stderr)?)
    }

    /// The tail (at most `max_bytes`) of a job's stdout or stderr.
    pub fn logs(&self, id: &str, stderr: bool, max_bytes: u64) -> Result<Vec<u8>, JobsError> {
        self.get(id)?;
        let path = self.engine.log_path(id, stderr)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(JobsError::Log { path, source }),
        };
        let skip = bytes.len().saturating_sub(max_bytes as usize);
        Ok(bytes[skip..].to_vec())
    }
}
