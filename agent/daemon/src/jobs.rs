//! The job manager: the jobs and receipts tables, the job lifecycle, crash
//! recovery and receipt issuance, on top of the `plinth-jobs` engine.
//!
//! Lifecycle: `queued -> preparing -> running -> succeeded | failed |
//! cancelled | timed_out`. Every transition is committed to SQLite before it
//! is acted on (the row says `preparing` before the image is imported,
//! `running` before the supervisor is spawned), so after a crash the row
//! tells what may have happened and recovery finishes it:
//!
//! - `preparing`: the job directory may be half-written; it is removed and
//!   the job is queued again;
//! - `running`: the engine re-adopts a live supervisor, or ends a container
//!   whose supervisor died (`supervisor_lost`), or starts a job whose
//!   supervisor was never spawned.
//!
//! Receipts: a running job gets an interim receipt every `receipt_interval`
//! and a final one when it ends. A receipt and the job's `billed_until_ms`
//! (and terminal state, for the final one) are written in the same SQLite
//! transaction, so a crash can neither lose nor repeat a billed period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plinth_attestation::receipt::{
    GENESIS_HASH, RECEIPT_FORMAT, Receipt, ReceiptKind, ReceiptPrice, ReceiptUsage,
};
use plinth_jobs::engine::{Engine, EngineConfig, EngineError, JobState};
use plinth_jobs::image::ImportProgress;
use plinth_jobs::meter::{GpuUsage, Usage};
use plinth_jobs::shim::{EndReason, JobResult, now_ms};
use plinth_jobs::spec::{JobSpec, JobSpecError};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::identity::NodeIdentity;
use crate::store::Store;

/// SQL of the schema migration that adds the jobs and receipts tables.
pub const MIGRATION_SQL: &str = "
    CREATE TABLE jobs (
        id               TEXT PRIMARY KEY NOT NULL,
        tenant           TEXT NOT NULL,
        lease_id         TEXT NOT NULL,
        spec             TEXT NOT NULL,
        gpu_devices      TEXT NOT NULL,
        state            TEXT NOT NULL,
        reason           TEXT,
        exit_code        INTEGER,
        signal           INTEGER,
        created_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL,
        started_at_ms    INTEGER,
        ended_at_ms      INTEGER,
        billed_until_ms  INTEGER,
        billed_cpu_ns    INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        usage            TEXT
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE receipts (
        seq    INTEGER PRIMARY KEY NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        kind   TEXT NOT NULL,
        hash   TEXT NOT NULL,
        body   TEXT NOT NULL
    );
";

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
        state: String,
    },
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

/// The built-in pricing policy (until a pricing plugin prices jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// Millionths per CPU-second.
    pub cpu_micros_per_second: u64,
    /// Millionths per GPU-second (wall time x assigned GPUs).
    pub gpu_micros_per_second: u64,
    /// Currency or token symbol.
    pub currency: String,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            cpu_micros_per_second: 10,
            gpu_micros_per_second: 1000,
            currency: "ATH".to_string(),
        }
    }
}

impl Pricing {
    /// SHA-256 (hex) of the policy: of its canonical JSON with a name prefix.
    pub fn sha256(&self) -> String {
        let text = format!(
            "plinth-builtin-pricing/1 cpu_micros_per_second={} gpu_micros_per_second={} currency={}",
            self.cpu_micros_per_second, self.gpu_micros_per_second, self.currency
        );
        hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
    }

    /// Price of a period.
    pub fn price(&self, cpu_ns: u64, wall_ms: u64, n_gpus: u64) -> u64 {
        let cpu = (cpu_ns as u128 * self.cpu_micros_per_second as u128) / 1_000_000_000;
        let gpu = (wall_ms as u128 * n_gpus as u128 * self.gpu_micros_per_second as u128) / 1000;
        u64::try_from(cpu + gpu).unwrap_or(u64::MAX)
    }
}

/// Configuration of the job manager.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Interval between interim receipts of a running job.
    pub receipt_interval: Duration,
    /// Pricing.
    pub pricing: Pricing,
    /// Whether a job may ask for the host's network namespace.
    pub allow_host_network: bool,
}

impl JobsConfig {
    /// The agent configuration's `[jobs]` section applied over [`JobsConfig::from_dirs`].
    pub fn from_config(config: &crate::config::AgentConfig) -> JobsConfig {
        let section = &config.jobs;
        let mut jobs = JobsConfig::from_dirs(&config.agent.state_dir, &config.agent.runtime_dir);
        jobs.engine.runtime_binary = section.runtime.clone();
        if !section.image_roots.is_empty() {
            jobs.engine.image_roots = section.image_roots.clone();
        }
        jobs.engine.cdi_dirs = section.cdi_dirs.clone();
        jobs.engine.cgroup_parent = section.cgroup_parent.clone();
        jobs.engine.log_cap_bytes = section.log_cap_bytes;
        jobs.engine.kill_grace = Duration::from_secs(section.kill_grace_seconds);
        jobs.receipt_interval = Duration::from_secs(section.receipt_interval_seconds);
        jobs.allow_host_network = section.allow_host_network;
        jobs
    }

    /// Defaults derived from the agent's directories: jobs and images under
    /// `state_dir`, runc state under `runtime_dir`, the supervisor being this
    /// executable's `job-shim` subcommand.
    pub fn from_dirs(state_dir: &Path, runtime_dir: &Path) -> JobsConfig {
        let shim_binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("plinth-agent"));
        JobsConfig {
            engine: EngineConfig {
                jobs_dir: state_dir.join("jobs"),
                image_store: state_dir.join("images"),
                image_roots: vec![state_dir.join("import")],
                runtime_binary: PathBuf::from("runc"),
                runtime_root: runtime_dir.join("runc"),
                shim_binary,
                shim_args: vec!["job-shim".to_string()],
                cdi_dirs: plinth_jobs::cdi::DEFAULT_CDI_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
                cgroup_parent: "plinth".to_string(),
                log_cap_bytes: 8 * 1024 * 1024,
                kill_grace: Duration::from_secs(10),
                unpack_limits: plinth_jobs::unpack::UnpackLimits::default(),
            },
            receipt_interval: Duration::from_secs(300),
            pricing: Pricing::default(),
            allow_host_network: false,
        }
    }
}

/// A job submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The job spec (`plinth-job/1`).
    pub spec: serde_json::Value,
    /// Tenant.
    pub tenant: String,
    /// Lease id.
    pub lease_id: String,
    /// CDI devices assigned by the scheduler (fully-qualified names).
    #[serde(default)]
    pub gpu_devices: Vec<String>,
}

/// Answer to a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubmitAnswer {
    /// The new job's id.
    pub id: String,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Lease id.
    pub lease_id: String,
    /// Lifecycle state.
    pub state: String,
    /// End reason or error.
    pub reason: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
    /// Created (unix ms).
    pub created_at_ms: u64,
    /// Started (unix ms).
    pub started_at_ms: Option<u64>,
    /// Ended (unix ms).
    pub ended_at_ms: Option<u64>,
    /// End of the last receipted period (unix ms).
    pub billed_until_ms: Option<u64>,
    /// Final usage (when ended).
    pub usage: Option<Usage>,
    /// The spec.
    pub spec: JobSpec,
    /// Assigned devices.
    pub gpu_devices: Vec<String>,
}

/// A jobs row as read.
struct RawJob {
    id: String,
    tenant: String,
    lease_id: String,
    spec: String,
    gpu_devices: String,
    state: String,
    reason: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
    billed_until_ms: Option<i64>,
    usage: Option<String>,
}

/// Terminal lifecycle states.
pub const TERMINAL_STATES: &[&str] = &["succeeded", "failed", "cancelled", "timed_out"];

fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

fn state_of(result: &JobResult) -> &'static str {
    match result.reason {
        EndReason::Exited if result.exit_code == Some(0) => "succeeded",
        EndReason::TimedOut => "timed_out",
        EndReason::Cancelled => "cancelled",
        _ => "failed",
    }
}

fn reason_text(result: &JobResult) -> String {
    let reason = serde_json::to_value(result.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match &result.error {
        Some(error) => format!("{reason}: {error}"),
        None => reason,
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
            reason: "must be 1-128 of [A-Za-z0-9_.:@-]".to_string(),
        })
    }
}

/// The job manager.
pub struct JobManager {
    store: Arc<Store>,
    engine: Engine,
    identity: Arc<NodeIdentity>,
    config: JobsConfig,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("config", &self.config)
            .finish()
    }
}

impl JobManager {
    /// Creates the manager (the store must have the jobs migration).
    pub fn new(
        store: Arc<Store>,
        identity: Arc<NodeIdentity>,
        config: JobsConfig,
    ) -> Result<JobManager, JobsError> {
        let engine = Engine::new(config.engine.clone())?;
        Ok(JobManager {
            store,
            engine,
            identity,
            config,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Accepts a job: validates it and stores it as `queued`.
    pub fn submit(&self, request: &SubmitRequest) -> Result<String, JobsError> {
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
            "INSERT INTO jobs (id, tenant, lease_id, spec, gpu_devices, state, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6)",
            params![
                id,
                request.tenant,
                request.lease_id,
                serde_json::to_string(&spec)?,
                serde_json::to_string(&request.gpu_devices)?,
                now
            ],
        )?;
        Ok(id)
    }

    fn set_state(&self, id: &str, state: &str) -> Result<(), JobsError> {
        self.store.connection().execute(
            "UPDATE jobs SET state = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![id, state, now_ms() as i64],
        )?;
        Ok(())
    }

    fn fail(&self, id: &str, reason: &str) -> Result<(), JobsError> {
        self.store.connection().execute(
            "UPDATE jobs SET state = 'failed', reason = ?2, ended_at_ms = ?3, updated_at_ms = ?3 WHERE id = ?1",
            params![id, reason, now_ms() as i64],
        )?;
        Ok(())
    }

    /// Requests cancellation.
    pub fn cancel(&self, id: &str) -> Result<(), JobsError> {
        let job = self.get(id)?;
        if is_terminal(&job.state) {
            return Err(JobsError::Ended {
                id: id.to_string(),
                state: job.state,
            });
        }
        self.store.connection().execute(
            "UPDATE jobs SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
            params![id, now_ms() as i64],
        )?;
        if job.state == "running" {
            self.engine.cancel(id)?;
        }
        Ok(())
    }

    fn row_to_raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
        Ok(RawJob {
            id: row.get(0)?,
            tenant: row.get(1)?,
            lease_id: row.get(2)?,
            spec: row.get(3)?,
            gpu_devices: row.get(4)?,
            state: row.get(5)?,
            reason: row.get(6)?,
            exit_code: row.get(7)?,
            signal: row.get(8)?,
            created_at_ms: row.get(9)?,
            started_at_ms: row.get(10)?,
            ended_at_ms: row.get(11)?,
            billed_until_ms: row.get(12)?,
            usage: row.get(13)?,
        })
    }

    const SELECT: &'static str =
        "SELECT id, tenant, lease_id, spec, gpu_devices, state, reason, exit_code, signal,
        created_at_ms, started_at_ms, ended_at_ms, billed_until_ms, usage FROM jobs";

    fn finish_info(raw: RawJob) -> Result<JobInfo, JobsError> {
        let to_u64 = |v: Option<i64>| v.map(|v| v as u64);
        Ok(JobInfo {
            id: raw.id,
            tenant: raw.tenant,
            lease_id: raw.lease_id,
            state: raw.state,
            reason: raw.reason,
            exit_code: raw.exit_code,
            signal: raw.signal,
            created_at_ms: raw.created_at_ms as u64,
            started_at_ms: to_u64(raw.started_at_ms),
            ended_at_ms: to_u64(raw.ended_at_ms),
            billed_until_ms: to_u64(raw.billed_until_ms),
            usage: raw.usage.map(|u| serde_json::from_str(&u)).transpose()?,
            spec: serde_json::from_str(&raw.spec)?,
            gpu_devices: serde_json::from_str(&raw.gpu_devices)?,
        })
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<JobInfo, JobsError> {
        let raw = self
            .store
            .connection()
            .query_row(
                &format!("{} WHERE id = ?1", Self::SELECT),
                [id],
                Self::row_to_raw,
            )
            .optional()?
            .ok_or_else(|| JobsError::NotFound { id: id.to_string() })?;
        Self::finish_info(raw)
    }

    /// All jobs, newest first.
    pub fn list(&self) -> Result<Vec<JobInfo>, JobsError> {
        let raws: Vec<_> = {
            let conn = self.store.connection();
            let mut statement =
                conn.prepare(&format!("{} ORDER BY created_at_ms DESC, id", Self::SELECT))?;
            let rows = statement.query_map([], Self::row_to_raw)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        raws.into_iter().map(Self::finish_info).collect()
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

    /// The receipt ledger as JSON lines.
    pub fn export_receipts(&self) -> Result<Vec<u8>, JobsError> {
        let conn = self.store.connection();
        let mut statement = conn.prepare("SELECT body FROM receipts ORDER BY seq")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(row?.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Makes the state consistent after a start: half-prepared jobs are queued again.
    pub fn recover(&self) -> Result<(), JobsError> {
        let preparing: Vec<String> = {
            let conn = self.store.connection();
            let mut statement = conn.prepare("SELECT id FROM jobs WHERE state = 'preparing'")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        for id in preparing {
            if let Ok(dir) = self.engine.job_dir(&id)
                && dir.exists()
            {
                let _ = std::fs::remove_dir_all(&dir);
            }
            tracing::info!(job = %id, "re-queueing a job that was being prepared when the agent stopped");
            self.set_state(&id, "queued")?;
        }
        Ok(())
    }

    /// One pass of the lifecycle: start queued jobs, watch running ones,
    /// issue due receipts. Called periodically by the worker.
    pub fn tick(&self) -> Result<(), JobsError> {
        let jobs: Vec<(String, String, bool)> = {
            let conn = self.store.connection();
            let mut statement = conn.prepare(
                "SELECT id, state, cancel_requested FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at_ms, id",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? != 0))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        for (id, state, cancel_requested) in jobs {
            let outcome = match state.as_str() {
                "queued" => self.start_job(&id, cancel_requested),
                _ => self.watch_job(&id, cancel_requested),
            };
            if let Err(err) = outcome {
                tracing::error!(job = %id, error = %crate::error_chain(&err), "job step failed");
            }
        }
        Ok(())
    }

    fn start_job(&self, id: &str, cancel_requested: bool) -> Result<(), JobsError> {
        if cancel_requested {
            self.store.connection().execute(
                "UPDATE jobs SET state = 'cancelled', reason = 'cancelled before start', ended_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms() as i64],
            )?;
            return Ok(());
        }
        let job = self.get(id)?;
        self.set_state(id, "preparing")?;
        if let Err(err) = self
            .engine
            .prepare(id, &job.spec, &job.gpu_devices, &mut |progress| {
                tracing::debug!(job = %id, ?progress, "image import");
                // Shown by `plinthctl jobs show` / `submit --wait` while preparing.
                let text = match &progress {
                    ImportProgress::Resolved { image_id, n_layers } => {
                        format!("importing image {image_id} ({n_layers} layers)")
                    }
                    ImportProgress::CacheHit => "image cached".to_string(),
                    ImportProgress::Layer {
                        layer_idx,
                        n_layers,
                        digest,
                    } => format!("unpacking layer {}/{n_layers} {digest}", layer_idx + 1),
                    ImportProgress::Done => "image imported".to_string(),
                };
                let _ = self.store.connection().execute(
                    "UPDATE jobs SET reason = ?2 WHERE id = ?1 AND state = 'preparing'",
                    params![id, text],
                );
            })
        {
            self.fail(
                id,
                &format!("preparation failed: {}", crate::error_chain(&err)),
            )?;
            return Ok(());
        }
        self.store.connection().execute(
            "UPDATE jobs SET state = 'running', reason = NULL, updated_at_ms = ?2 WHERE id = ?1",
            params![id, now_ms() as i64],
        )?;
        self.engine.start(id)?;
        Ok(())
    }

    fn watch_job(&self, id: &str, cancel_requested: bool) -> Result<(), JobsError> {
        let state = match self.engine.state(id) {
            Ok(state) => state,
            Err(EngineError::NotFound { .. }) => {
                // Marked running but never prepared (cannot happen by the
                // ordering above, but a lost job directory must not hang it).
                self.fail(id, "job directory is missing")?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        match state {
            JobState::Prepared => {
                // The agent stopped between storing `running` and spawning.
                self.engine.start(id)?;
            }
            JobState::Starting => {}
            JobState::Running(live) => {
                if cancel_requested {
                    self.engine.cancel(id)?;
                }
                if let Some(live) = live
                    && let Some(started) = live.started_at_ms
                {
                    self.maybe_interim_receipt(id, started, &live.usage)?;
                }
            }
            JobState::Finished(result) => self.finalize(id, &result)?,
            JobState::Orphaned => {
                if let JobState::Finished(result) = self.engine.recover(id)? {
                    self.finalize(id, &result)?;
                }
            }
        }
        Ok(())
    }

    fn maybe_interim_receipt(
        &self,
        id: &str,
        started_at_ms: u64,
        usage: &Usage,
    ) -> Result<(), JobsError> {
        let now = now_ms();
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let (billed_until, billed_cpu): (Option<i64>, i64) = tx.query_row(
            "SELECT billed_until_ms, billed_cpu_ns FROM jobs WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let start = billed_until.map(|b| b as u64).unwrap_or(started_at_ms);
        if now < start + self.config.receipt_interval.as_millis() as u64 {
            return Ok(());
        }
        let cpu_ns = usage.cpu_ns.saturating_sub(billed_cpu as u64);
        let job = self.get_in(&tx, id)?;
        let receipt =
            self.append_receipt(&tx, &job, ReceiptKind::Interim, start, now, cpu_ns, usage)?;
        tx.execute(
            "UPDATE jobs SET billed_until_ms = ?2, billed_cpu_ns = ?3, started_at_ms = COALESCE(started_at_ms, ?4), updated_at_ms = ?2 WHERE id = ?1",
            params![id, now as i64, usage.cpu_ns as i64, started_at_ms as i64],
        )?;
        tx.commit()?;
        tracing::info!(job = %id, seq = receipt.seq, "interim receipt");
        Ok(())
    }

    fn get_in(&self, tx: &rusqlite::Transaction<'_>, id: &str) -> Result<JobInfo, JobsError> {
        let raw = tx.query_row(
            &format!("{} WHERE id = ?1", Self::SELECT),
            [id],
            Self::row_to_raw,
        )?;
        Self::finish_info(raw)
    }

    /// Records the end of a job and its final receipt in one transaction.
    fn finalize(&self, id: &str, result: &JobResult) -> Result<(), JobsError> {
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let job = self.get_in(&tx, id)?;
        if is_terminal(&job.state) {
            return Ok(());
        }
        let (billed_cpu,): (i64,) = tx.query_row(
            "SELECT billed_cpu_ns FROM jobs WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?,)),
        )?;
        if let Some(started) = result.started_at_ms {
            let start = job.billed_until_ms.unwrap_or(started).max(started);
            let end = result.ended_at_ms.max(start);
            let cpu_ns = result.usage.cpu_ns.saturating_sub(billed_cpu as u64);
            self.append_receipt(
                &tx,
                &job,
                ReceiptKind::Final,
                start,
                end,
                cpu_ns,
                &result.usage,
            )?;
        }
        tx.execute(
            "UPDATE jobs SET state = ?2, reason = ?3, exit_code = ?4, signal = ?5, started_at_ms = ?6,
                 ended_at_ms = ?7, billed_until_ms = ?7, usage = ?8, updated_at_ms = ?9 WHERE id = ?1",
            params![
                id,
                state_of(result),
                reason_text(result),
                result.exit_code,
                result.signal,
                result.started_at_ms.map(|v| v as i64),
                result.ended_at_ms as i64,
                serde_json::to_string(&result.usage)?,
                now_ms() as i64
            ],
        )?;
        tx.commit()?;
        tracing::info!(job = %id, state = state_of(result), "job ended");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn append_receipt(
        &self,
        tx: &rusqlite::Transaction<'_>,
        job: &JobInfo,
        kind: ReceiptKind,
        start_ms: u64,
        end_ms: u64,
        cpu_ns: u64,
        usage: &Usage,
    ) -> Result<Receipt, JobsError> {
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (seq, prev_hash) = match last {
            Some((seq, hash)) => (seq as u64 + 1, hash),
            None => (1, GENESIS_HASH.to_string()),
        };
        let wall_ms = end_ms.saturating_sub(start_ms);
        let n_gpus = job.gpu_devices.len() as u64;
        let (gpu_ms, gpu_energy_mj, gpu_absent_reason) = match &usage.gpu {
            GpuUsage::Measured { gpus } => (
                Some(gpus.iter().map(|g| g.gpu_ms).sum()),
                Some(gpus.iter().map(|g| g.energy_mj).sum()),
                None,
            ),
            GpuUsage::Absent { reason } => (None, None, Some(reason.clone())),
        };
        let mut receipt = Receipt {
            format: RECEIPT_FORMAT.to_string(),
            seq,
            prev_hash,
            job_id: job.id.clone(),
            lease_id: job.lease_id.clone(),
            tenant: job.tenant.clone(),
            kind,
            period_start_ms: start_ms,
            period_end_ms: end_ms,
            usage: ReceiptUsage {
                wall_ms,
                cpu_ns,
                peak_memory_bytes: usage.peak_memory_bytes,
                peak_pids: usage.peak_pids,
                gpu_ms,
                gpu_energy_mj,
                gpu_absent_reason,
            },
            price: ReceiptPrice {
                amount_micros: self.config.pricing.price(cpu_ns, wall_ms, n_gpus),
                currency: self.config.pricing.currency.clone(),
            },
            pricing_policy_sha256: self.config.pricing.sha256(),
            node_key: self.identity.public_key_hex(),
            signature: String::new(),
        };
        receipt.sign_with(|bytes| self.identity.sign(bytes))?;
        let hash = receipt.hash()?;
        tx.execute(
            "INSERT INTO receipts (seq, job_id, kind, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                seq as i64,
                job.id,
                if kind == ReceiptKind::Final {
                    "final"
                } else {
                    "interim"
                },
                hash,
                serde_json::to_string(&receipt)?
            ],
        )?;
        Ok(receipt)
    }
}

/// Runs the lifecycle loop on a dedicated thread until `stop` is set.
pub fn spawn_worker(
    manager: Arc<JobManager>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    period: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(err) = manager.recover() {
            tracing::error!(error = %crate::error_chain(&err), "job recovery failed");
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(err) = manager.tick() {
                tracing::error!(error = %crate::error_chain(&err), "job manager pass failed");
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
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl JobsService {
    /// Asks the worker to stop after its current pass. Running jobs keep
    /// running under their supervisors and are re-adopted by the next start.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts the job manager for the agent, or explains (in the log) why jobs
/// are disabled: no OCI runtime on `PATH`, or an engine that cannot start.
pub fn start(
    config: &crate::config::AgentConfig,
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
            tracing::error!(error = %crate::error_chain(&err), "cannot start the job engine; jobs are disabled");
            return None;
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    spawn_worker(manager.clone(), stop.clone(), Duration::from_millis(200));
    Some(JobsService { manager, stop })
}
