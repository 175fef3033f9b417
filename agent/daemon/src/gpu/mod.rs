//! GPUs: inventory, health, drain, burn-in and the capacity challenge's prover side.
//!
//! The driver sits behind [`nvml::NvmlBackend`]; the daemon only ever asks for the real
//! one ([`GpuService::detect`]: NVML loaded at run time). No driver, or a driver with
//! no GPU, makes the host CPU-only, said once in the log and in `GET /v1/gpus` and
//! `plinthctl status`; nothing here panics for a missing library.
//!
//! [`GpuService`] holds the inventory (read once at start), the latest health reading
//! of each GPU and the event counters. Two threads feed it: a poller reading health
//! every [`GpuSettings::poll_interval`], and a blocking thread waiting on NVML's event
//! set for XIDs and ECC errors. [`policy`] decides what drains a GPU; drains are
//! committed to SQLite ([`drain`], migration 4) before they take effect, so they survive
//! restarts. A drained GPU is withdrawn from scheduling (submissions naming it are
//! refused) and from the plugins' `host-state` (so from quotes); a job holding it is
//! told through `gpu.log` in its job directory and a row of `gpu_job_notices`. It
//! returns after a burn-in (the capacity challenge, [`GpuService::burn_in`]) passes,
//! or by an operator's undrain with a reason (both recorded in the drain log). The
//! poller retries GPUs drained by the policy with a burn-in after a back-off
//! ([`retry`], [`GpuService::retry_drained`]); operator drains and lost GPUs are never
//! retried.
//!
//! CDI names are mapped to GPUs from the CDI specs `nvidia-ctk cdi generate` writes
//! ([`cdi`]). The other subsystems read a summary ([`GpuSummary`]).

pub mod cdi;
pub mod challenge;
pub mod cuda;
#[cfg(any(test, feature = "test-doubles"))]
pub mod double;
pub mod drain;
pub mod host_state;
pub mod meter;
pub mod nvml;
pub mod policy;
pub mod retry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::Store;
use drain::{Drain, DrainError, DrainSource};
use nvml::{GpuEvent, GpuHealth, GpuInventory, NvmlBackend, NvmlError};
use policy::Verdict;

/// Errors of the GPU module's operations.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No GPU has this index.
    #[error("no GPU with index {index} (this host has {count})")]
    NoSuchGpu {
        /// The index asked for.
        index: u32,
        /// How many GPUs there are.
        count: usize,
    },
    /// The host runs CPU-only.
    #[error("this host has no usable GPU: {reason}")]
    CpuOnly {
        /// Why.
        reason: String,
    },
    /// The drain store failed.
    #[error(transparent)]
    Drain(#[from] DrainError),
    /// The driver failed.
    #[error(transparent)]
    Nvml(#[from] NvmlError),
    /// A burn-in did not pass.
    #[error("burn-in of GPU {index} did not pass: {detail}")]
    BurnIn {
        /// The GPU.
        index: u32,
        /// The failed checks or the prover's error.
        detail: String,
    },
}

/// How long one NVML event wait blocks: the event thread wakes this often when nothing
/// happens (and notices a shutdown this late).
pub const EVENT_WAIT_MS: u32 = 5000;

/// Settings of the GPU module.
#[derive(Debug, Clone)]
pub struct GpuSettings {
    /// How often health is read.
    pub poll_interval: Duration,
    /// CDI spec directories (`[jobs] cdi_dirs`).
    pub cdi_dirs: Vec<PathBuf>,
    /// The jobs directory, to tell a job that its GPU was drained.
    pub jobs_dir: Option<PathBuf>,
    /// The size of a burn-in challenge.
    pub burn_in_n: u32,
    /// When a GPU drained by the policy is retried by an automatic burn-in.
    pub burn_in_backoff: retry::Backoff,
}

impl GpuSettings {
    /// The settings for this configuration: the CDI directories and jobs directory of
    /// `[jobs]`, the built-in poll interval and burn-in size.
    pub fn from_config(config: &crate::config::AgentConfig) -> Self {
        let jobs = crate::jobs::JobsConfig::from_config(config);
        Self {
            cdi_dirs: jobs.engine.cdi_dirs.clone(),
            jobs_dir: Some(jobs.engine.jobs_dir.clone()),
            ..Self::default()
        }
    }
}

impl Default for GpuSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            cdi_dirs: plinth_jobs::cdi::DEFAULT_CDI_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            jobs_dir: None,
            burn_in_n: 4096,
            burn_in_backoff: retry::Backoff::default(),
        }
    }
}

/// Counts of events that did not drain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounters {
    /// Application XIDs by code.
    pub application_xids: BTreeMap<u64, u64>,
    /// Other non-fatal XIDs by code.
    pub other_xids: BTreeMap<u64, u64>,
    /// Fatal events seen (the first one drains).
    pub fatal_events: u64,
    /// Corrected ECC error events.
    pub corrected_ecc_events: u64,
}

/// One GPU as `GET /v1/gpus` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEntry {
    /// What it is.
    pub inventory: GpuInventory,
    /// The latest health reading (None before the first poll, or when it is lost).
    pub health: Option<GpuHealth>,
    /// Why the last reading failed, when it did.
    pub health_error: Option<String>,
    /// Whether the driver reported it lost.
    pub lost: bool,
    /// The drain, when drained.
    pub drain: Option<Drain>,
    /// Event counters since the agent started.
    pub counters: EventCounters,
    /// The CDI device names that reach it (`nvidia.com/gpu=0`).
    pub cdi_names: Vec<String>,
}

/// Totals for status and liveness: how many GPUs, how many serve, how many are drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    /// GPUs in the inventory.
    pub total: usize,
    /// GPUs neither drained nor lost.
    pub healthy: usize,
    /// GPUs drained (lost ones included).
    pub drained: usize,
}

/// The answer of `GET /v1/gpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpusReport {
    /// Why the host runs CPU-only; None when it has GPUs.
    pub cpu_only: Option<String>,
    /// The driver (`libnvidia-ml, driver 550.54.15`), when loaded.
    pub driver: Option<String>,
    /// Totals.
    pub summary: GpuSummary,
    /// Every GPU.
    pub gpus: Vec<GpuEntry>,
    /// How to create CDI specs, when none name a GPU.
    pub cdi_hint: Option<String>,
}

#[derive(Debug, Default)]
struct GpuState {
    health: Option<GpuHealth>,
    health_error: Option<String>,
    lost: bool,
    counters: EventCounters,
    /// Recent readings for metering, oldest first, at most [`meter::MAX_SAMPLES`].
    samples: std::collections::VecDeque<meter::Sample>,
}

/// The GPU module's state and threads.
pub struct GpuService {
    backend: Option<Arc<dyn NvmlBackend>>,
    cpu_only: Option<String>,
    driver: Option<String>,
    inventory: Vec<GpuInventory>,
    cdi: cdi::CdiMap,
    store: Arc<Store>,
    settings: GpuSettings,
    states: Mutex<Vec<GpuState>>,
    stop: Arc<AtomicBool>,
    /// Wakes the poller early (shutdown): a flag under a mutex and its condition variable.
    wake: (Mutex<bool>, std::sync::Condvar),
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Challenges answered in round 1, waiting for round 2.
    pub challenges: challenge::Challenges,
    /// When each policy-drained GPU is next burnt in automatically.
    retry: retry::Schedule,
    /// The transcript of the latest passed burn-in (the evidence bundle's capacity claim).
    latest_transcript: Mutex<Option<plinth_attestation::challenge::Transcript>>,
}

impl std::fmt::Debug for GpuService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GpuService")
            .field("cpu_only", &self.cpu_only)
            .field("gpus", &self.inventory.len())
            .finish_non_exhaustive()
    }
}

impl GpuService {
    /// The real driver, or CPU-only with the reason: NVML loaded at run time (feature
    /// `nvidia`). This is the only backend the daemon selects.
    pub fn detect() -> Result<Arc<dyn NvmlBackend>, String> {
        #[cfg(feature = "nvidia")]
        {
            nvml::NvmlLibrary::init()
                .map(|library| Arc::new(library) as Arc<dyn NvmlBackend>)
                .map_err(|err| err.to_string())
        }
        #[cfg(not(feature = "nvidia"))]
        {
            Err("built without NVIDIA support (feature `nvidia`)".to_owned())
        }
    }

    /// Starts the module on `backend` (or CPU-only for `Err(reason)`): reads the
    /// inventory and the CDI specs, then starts the poller and the event thread.
    pub fn start(
        backend: Result<Arc<dyn NvmlBackend>, String>,
        store: Arc<Store>,
        settings: GpuSettings,
    ) -> Arc<Self> {
        let service = Arc::new(Self::new(backend, store, settings));
        match &service.cpu_only {
            Some(reason) => tracing::info!(%reason, "no GPU: this host runs CPU-only"),
            None => {
                for gpu in &service.inventory {
                    tracing::info!(
                        index = gpu.index,
                        uuid = %gpu.uuid,
                        model = %gpu.name,
                        memory_bytes = gpu.memory_bytes,
                        pci = %gpu.pci_bus_id,
                        cdi = ?service.cdi.names_of(gpu),
                        "GPU"
                    );
                }
                if let Some(hint) = service.cdi.hint() {
                    tracing::warn!("{hint}");
                }
                service.spawn_threads();
            }
        }
        service
    }

    fn new(
        backend: Result<Arc<dyn NvmlBackend>, String>,
        store: Arc<Store>,
        settings: GpuSettings,
    ) -> Self {
        let (backend, inventory, cpu_only) = match backend {
            Err(reason) => (None, Vec::new(), Some(reason)),
            Ok(backend) => match backend.inventory() {
                Ok(inventory) if inventory.is_empty() => (
                    None,
                    Vec::new(),
                    Some(format!("{} reports no GPU", backend.describe())),
                ),
                Ok(inventory) => (Some(backend), inventory, None),
                Err(err) => (None, Vec::new(), Some(err.to_string())),
            },
        };
        let driver = backend.as_ref().map(|backend| backend.describe());
        let cdi = cdi::CdiMap::load(&settings.cdi_dirs, &inventory);
        let states = inventory.iter().map(|_| GpuState::default()).collect();
        let schedule = retry::Schedule::new(settings.burn_in_backoff);
        Self {
            backend,
            cpu_only,
            driver,
            inventory,
            cdi,
            store,
            settings,
            states: Mutex::new(states),
            stop: Arc::new(AtomicBool::new(false)),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
            threads: Mutex::new(Vec::new()),
            retry: schedule,
            latest_transcript: Mutex::new(None),
            challenges: challenge::Challenges::default(),
        }
    }

    fn lock_states(&self) -> MutexGuard<'_, Vec<GpuState>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn spawn_threads(self: &Arc<Self>) {
        let mut threads = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let poller = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-health".to_owned())
            .spawn(move || {
                // One wake-up per poll interval, none in between (idle cost).
                while !poller.stop.load(Ordering::Relaxed) {
                    poller.poll_once();
                    poller.retry_drained(std::time::Instant::now(), &|gpu| {
                        retry::gpu_prover(gpu.index, &gpu.name)
                    });
                    let (flag, condvar) = &poller.wake;
                    let guard = flag
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let _ = condvar
                        .wait_timeout_while(guard, poller.settings.poll_interval, |woken| !*woken)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(err) => tracing::error!(error = %err, "cannot start the GPU health poller"),
        }
        let watcher = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-events".to_owned())
            .spawn(move || {
                let Some(backend) = watcher.backend.clone() else {
                    return;
                };
                let result = backend.watch_events(&watcher.stop, EVENT_WAIT_MS, &mut |event| {
                    watcher.process_event(&event);
                });
                if let Err(err) = result {
                    tracing::error!(error = %err, "GPU event watch ended; XIDs are no longer seen (health polling continues)");
                }
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(err) => tracing::error!(error = %err, "cannot start the GPU event thread"),
        }
    }

    /// Stops the threads: wakes and joins the poller; the event thread ends at its next
    /// wake-up (at most [`EVENT_WAIT_MS`] later, inside NVML's wait) and is not waited
    /// for.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            let (flag, condvar) = &self.wake;
            *flag
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            condvar.notify_all();
        }
        let handles: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in handles {
            if handle.thread().name() == Some("gpu-health") {
                let _ = handle.join();
            }
        }
    }

    /// Why the host runs CPU-only, if it does.
    pub fn cpu_only(&self) -> Option<&str> {
        self.cpu_only.as_deref()
    }

    /// The inventory.
    pub fn inventory(&self) -> &[GpuInventory] {
        &self.inventory
    }

    fn position_of_uuid(&self, uuid: &str) -> Option<usize> {
        self.inventory.iter().position(|gpu| gpu.uuid == uuid)
    }

    fn position_of_index(&self, index: u32) -> Result<usize, GpuError> {
        self.inventory
            .iter()
            .position(|gpu| gpu.index == index)
            .ok_or(GpuError::NoSuchGpu {
                index,
                count: self.inventory.len(),
            })
    }

    /// Reads every GPU's health once and applies the policy (the poller's body).
    pub fn poll_once(&self) {
        let Some(backend) = &self.backend else {
            return;
        };
        for (position, gpu) in self.inventory.iter().enumerate() {
            let reading = backend.health(gpu.index);
            let verdict = {
                let mut states = self.lock_states();
                let Some(state) = states.get_mut(position) else {
                    continue;
                };
                match reading {
                    Ok(health) => {
                        let verdict = policy::judge_health(state.health.as_ref(), &health);
                        if state.samples.len() >= meter::MAX_SAMPLES {
                            state.samples.pop_front();
                        }
                        state.samples.push_back(meter::Sample {
                            at_ms: meter::now_ms(),
                            energy_mj: health.energy_mj,
                            sm_pct: health.sm_utilisation_pct,
                        });
                        state.health = Some(health);
                        state.health_error = None;
                        verdict
                    }
                    Err(NvmlError::Lost { detail, .. }) => {
                        state.lost = true;
                        state.health = None;
                        state.health_error = Some(detail);
                        Some("the GPU stopped answering (lost)".to_owned())
                    }
                    Err(err) => {
                        state.health_error = Some(err.to_string());
                        None
                    }
                }
            };
            if let Some(reason) = verdict {
                self.drain_by_policy(position, &reason);
            }
        }
    }

    /// Applies the policy to one driver event (the event thread's body).
    pub fn process_event(&self, event: &GpuEvent) {
        let positions: Vec<usize> = if event.uuid.is_empty() {
            // NVML reports "a GPU is lost" without saying which: poll to find out.
            self.poll_once();
            return;
        } else {
            self.position_of_uuid(&event.uuid).into_iter().collect()
        };
        for position in positions {
            let verdict = policy::classify(&event.kind);
            {
                let mut states = self.lock_states();
                let Some(state) = states.get_mut(position) else {
                    continue;
                };
                match (&verdict, &event.kind) {
                    (Verdict::Application(code), _) => {
                        *state.counters.application_xids.entry(*code).or_default() += 1;
                    }
                    (Verdict::Note(_), nvml::GpuEventKind::Xid { code }) => {
                        *state.counters.other_xids.entry(*code).or_default() += 1;
                    }
                    (Verdict::Note(_), _) => state.counters.corrected_ecc_events += 1,
                    (Verdict::Drain(_), kind) => {
                        state.counters.fatal_events += 1;
                        if *kind == nvml::GpuEventKind::Lost {
                            state.lost = true;
                        }
                    }
                }
            }
            match verdict {
                Verdict::Drain(reason) => self.drain_by_policy(position, &reason),
                Verdict::Application(code) => {
                    tracing::info!(uuid = %event.uuid, xid = code, "application XID (counted, not drained)");
                }
                Verdict::Note(what) => tracing::info!(uuid = %event.uuid, "{what}"),
            }
        }
    }

    fn drain_by_policy(&self, position: usize, reason: &str) {
        let Some(gpu) = self.inventory.get(position) else {
            return;
        };
        match drain::drain(
            &self.store,
            &gpu.uuid,
            gpu.index,
            reason,
            DrainSource::Policy,
        ) {
            Ok(true) => {
                tracing::warn!(index = gpu.index, uuid = %gpu.uuid, %reason, "GPU drained");
                self.tell_jobs(gpu, reason);
            }
            Ok(false) => {}
            Err(err) => {
                tracing::error!(index = gpu.index, error = %crate::error_chain(&err), "cannot record a GPU drain")
            }
        }
    }

    /// Tells every running job holding `gpu` that it was drained: a line in `gpu.log`
    /// in its job directory and a row in `gpu_job_notices`.
    fn tell_jobs(&self, gpu: &GpuInventory, reason: &str) {
        let names = self.cdi.names_of(gpu);
        let jobs = match notices::jobs_holding(&self.store, &names) {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::error!(error = %crate::error_chain(&err), "cannot find the jobs holding a drained GPU");
                return;
            }
        };
        for job_id in jobs {
            let line = format!(
                "{} plinth: GPU {} ({}) was drained: {reason}\n",
                crate::store::now_rfc3339(),
                gpu.index,
                gpu.uuid
            );
            if let Some(jobs_dir) = &self.settings.jobs_dir {
                let path = jobs_dir.join(&job_id).join("gpu.log");
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
                if let Err(err) = written {
                    tracing::warn!(job = %job_id, path = %path.display(), error = %err, "cannot write the job's GPU log");
                }
            }
            if let Err(err) = notices::record(&self.store, &job_id, &gpu.uuid, reason) {
                tracing::error!(job = %job_id, error = %crate::error_chain(&err), "cannot record a GPU notice");
            }
            tracing::warn!(job = %job_id, uuid = %gpu.uuid, "job told that its GPU was drained");
        }
    }

    /// Drains GPU `index` for an operator. Returns false when it already was drained.
    pub fn drain(&self, index: u32, reason: &str) -> Result<bool, GpuError> {
        let position = self.position_of_index(index)?;
        let gpu = &self.inventory[position];
        let drained = drain::drain(&self.store, &gpu.uuid, index, reason, DrainSource::Operator)?;
        if drained {
            tracing::warn!(index, uuid = %gpu.uuid, %reason, "GPU drained by the operator");
            self.tell_jobs(gpu, reason);
        }
        Ok(drained)
    }

    /// Returns GPU `index` to service for an operator. Returns false when it was not
    /// drained.
    pub fn undrain(&self, index: u32, reason: &str) -> Result<bool, GpuError> {
        let position = self.position_of_index(index)?;
        let gpu = &self.inventory[position];
        let undrained =
            drain::undrain(&self.store, &gpu.uuid, index, reason, DrainSource::Operator)?;
        if undrained {
            tracing::info!(index, uuid = %gpu.uuid, %reason, "GPU undrained by the operator");
        }
        Ok(undrained)
    }

    /// Runs a burn-in on GPU `index` with `prover`: a capacity challenge of
    /// [`GpuSettings::burn_in_n`], verified with the default policy. A drained GPU whose
    /// burn-in passes returns to service (recorded with source `burn-in`); a failing one
    /// stays drained. Returns the transcript.
    pub fn burn_in(
        &self,
        index: u32,
        prover: &dyn plinth_attestation::challenge::Prover,
    ) -> Result<plinth_attestation::challenge::Transcript, GpuError> {
        let position = self.position_of_index(index)?;
        let gpu = &self.inventory[position];
        if self
            .lock_states()
            .get(position)
            .is_some_and(|state| state.lost)
        {
            return Err(GpuError::BurnIn {
                index,
                detail: "the GPU is lost; it needs a reset or a reboot first".to_owned(),
            });
        }
        let n = self.settings.burn_in_n;
        let transcript = plinth_attestation::challenge::run_local(
            prover,
            n,
            u64::MAX / 4,
            plinth_attestation::challenge::DEFAULT_ROWS,
        )
        .map_err(|err| GpuError::BurnIn {
            index,
            detail: crate::error_chain(&err),
        })?;
        // Correctness only: a burn-in is not a capacity claim, so the time budget is not
        // applied here.
        let lenient = plinth_attestation::challenge::ChallengePolicy {
            slack_ms: u64::MAX / 4,
            ..Default::default()
        };
        let appraisal = plinth_attestation::challenge::verify(&transcript, &lenient);
        if !appraisal.verified() {
            let failed: Vec<String> = appraisal
                .failures()
                .map(|check| format!("{}: {}", check.name, check.detail))
                .collect();
            return Err(GpuError::BurnIn {
                index,
                detail: failed.join("; "),
            });
        }
        let reason = format!(
            "burn-in passed: n = {n}, {} ms on {}",
            transcript.commitment.compute_ms, transcript.commitment.prover.device
        );
        if drain::undrain(&self.store, &gpu.uuid, index, &reason, DrainSource::BurnIn)? {
            tracing::info!(index, uuid = %gpu.uuid, %reason, "GPU returned to service");
        }
        *self
            .latest_transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(transcript.clone());
        Ok(transcript)
    }

    /// Retries GPUs drained by the policy: each one due at `now` (see [`retry`]) gets a
    /// burn-in with the prover `prover_for` makes for it; a pass returns it to service,
    /// a failure doubles its wait. Operator drains and lost GPUs are skipped. Returns
    /// the attempts made: the GPU's index and the burn-in's outcome.
    pub fn retry_drained(
        &self,
        now: std::time::Instant,
        prover_for: &retry::ProverFor<'_>,
    ) -> Vec<(u32, Result<(), String>)> {
        let mut attempts = Vec::new();
        for (position, gpu) in self.inventory.iter().enumerate() {
            let policy_drained = matches!(
                drain::get(&self.store, &gpu.uuid),
                Ok(Some(Drain {
                    source: DrainSource::Policy,
                    ..
                }))
            );
            let lost = self
                .lock_states()
                .get(position)
                .is_some_and(|state| state.lost);
            if !policy_drained || lost {
                self.retry.forget(&gpu.uuid);
                continue;
            }
            if !self.retry.due(&gpu.uuid, now) {
                continue;
            }
            let outcome = prover_for(gpu).and_then(|prover| {
                self.burn_in(gpu.index, prover.as_ref())
                    .map(|_| ())
                    .map_err(|err| crate::error_chain(&err))
            });
            match &outcome {
                Ok(()) => self.retry.forget(&gpu.uuid),
                Err(detail) => {
                    let wait = self.retry.failed(&gpu.uuid, now);
                    tracing::warn!(
                        index = gpu.index,
                        uuid = %gpu.uuid,
                        %detail,
                        retry_in_s = wait.as_secs(),
                        "automatic burn-in did not pass; the GPU stays drained"
                    );
                }
            }
            attempts.push((gpu.index, outcome));
        }
        attempts
    }

    /// The transcript of the latest burn-in that passed, if any (what the evidence
    /// bundle carries as its capacity claim).
    pub fn latest_transcript(&self) -> Option<plinth_attestation::challenge::Transcript> {
        self.latest_transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the GPU with `uuid` is drained.
    pub fn is_drained(&self, uuid: &str) -> bool {
        matches!(drain::get(&self.store, uuid), Ok(Some(_)))
    }

    /// Refuses CDI device names that reach a drained or lost GPU (job submissions).
    pub fn check_devices(&self, devices: &[String]) -> Result<(), String> {
        for name in devices {
            for uuid in self.cdi.uuids_of(name) {
                let Some(gpu) = self.inventory.iter().find(|gpu| gpu.uuid == uuid) else {
                    continue;
                };
                if let Ok(Some(drain)) = drain::get(&self.store, &gpu.uuid) {
                    return Err(format!(
                        "{name} is GPU {} ({}), drained: {}",
                        gpu.index, gpu.uuid, drain.reason
                    ));
                }
            }
        }
        Ok(())
    }

    /// The GPUs that serve: neither drained nor lost (the plugins' host state, quotes).
    pub fn serving(&self) -> Vec<GpuInventory> {
        self.report()
            .gpus
            .into_iter()
            .filter(|entry| entry.drain.is_none() && !entry.lost)
            .map(|entry| entry.inventory)
            .collect()
    }

    /// The GPU meter of the jobs engine: per-GPU usage from this service's readings.
    pub fn meter(self: &Arc<Self>) -> Arc<dyn plinth_jobs::meter::GpuMeter> {
        Arc::new(meter::NvmlMeter::new(self.clone()))
    }

    /// The readings of the GPU with `uuid` between `start_ms` and `end_ms`.
    fn samples_between(
        &self,
        uuid: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> Option<Vec<meter::Sample>> {
        let position = self.position_of_uuid(uuid)?;
        let states = self.lock_states();
        let state = states.get(position)?;
        Some(
            state
                .samples
                .iter()
                .filter(|sample| sample.at_ms >= start_ms && sample.at_ms <= end_ms)
                .cloned()
                .collect(),
        )
    }

    /// Totals (for status and liveness).
    pub fn summary(&self) -> GpuSummary {
        self.report().summary
    }

    /// Everything `GET /v1/gpus` shows.
    pub fn report(&self) -> GpusReport {
        let states = self.lock_states();
        let mut gpus = Vec::new();
        for (position, gpu) in self.inventory.iter().enumerate() {
            let state = states.get(position);
            let drain = drain::get(&self.store, &gpu.uuid).unwrap_or_else(|err| {
                Some(Drain {
                    reason: format!("drain state unreadable: {err}"),
                    source: DrainSource::Policy,
                    drained_at: String::new(),
                })
            });
            gpus.push(GpuEntry {
                inventory: gpu.clone(),
                health: state.and_then(|state| state.health.clone()),
                health_error: state.and_then(|state| state.health_error.clone()),
                lost: state.is_some_and(|state| state.lost),
                drain,
                counters: state
                    .map(|state| state.counters.clone())
                    .unwrap_or_default(),
                cdi_names: self.cdi.names_of(gpu),
            });
        }
        let drained = gpus
            .iter()
            .filter(|entry| entry.drain.is_some() || entry.lost)
            .count();
        GpusReport {
            cpu_only: self.cpu_only.clone(),
            driver: self.driver.clone(),
            summary: GpuSummary {
                total: gpus.len(),
                healthy: gpus.len() - drained,
                drained,
            },
            cdi_hint: self.cdi.hint(),
            gpus,
        }
    }
}

impl Drop for GpuService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub mod notices {
    //! `gpu_job_notices`: the record that a job's GPU was drained while it ran (created
    //! by migration 4, [`super::drain::MIGRATION`]).

    use rusqlite::params;

    use super::drain::DrainError;
    use crate::store::Store;

    fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> DrainError {
        move |source| DrainError::Database { action, source }
    }

    /// The CDI devices of every running or preparing job.
    pub fn running_job_devices(store: &Store) -> Result<Vec<Vec<String>>, DrainError> {
        Ok(running_jobs(store)?
            .into_iter()
            .map(|(_, devices)| devices)
            .collect())
    }

    /// Ids of running or preparing jobs whose devices include one of `names`.
    pub fn jobs_holding(store: &Store, names: &[String]) -> Result<Vec<String>, DrainError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        Ok(running_jobs(store)?
            .into_iter()
            .filter(|(_, devices)| devices.iter().any(|device| names.contains(device)))
            .map(|(id, _)| id)
            .collect())
    }

    fn running_jobs(store: &Store) -> Result<Vec<(String, Vec<String>)>, DrainError> {
        let connection = store.connection();
        let mut statement = connection
            .prepare("SELECT id, gpu_devices FROM jobs WHERE state IN ('preparing', 'running')")
            .map_err(db("find the jobs holding"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(db("find the jobs holding"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, devices) = row.map_err(db("find the jobs holding"))?;
            let devices: Vec<String> = serde_json::from_str(&devices).unwrap_or_default();
            out.push((id, devices));
        }
        Ok(out)
    }

    /// Records that `job_id`'s GPU `uuid` was drained.
    pub fn record(store: &Store, job_id: &str, uuid: &str, reason: &str) -> Result<(), DrainError> {
        store
            .connection()
            .execute(
                "INSERT INTO gpu_job_notices (job_id, uuid, reason, at) VALUES (?1, ?2, ?3, ?4)",
                params![job_id, uuid, reason, crate::store::now_rfc3339()],
            )
            .map_err(db("record a notice in"))?;
        Ok(())
    }

    /// The notices of one job, oldest first: (uuid, reason, at).
    pub fn of_job(
        store: &Store,
        job_id: &str,
    ) -> Result<Vec<(String, String, String)>, DrainError> {
        let connection = store.connection();
        let mut statement = connection
            .prepare("SELECT uuid, reason, at FROM gpu_job_notices WHERE job_id = ?1 ORDER BY id")
            .map_err(db("read the notices of"))?;
        let rows = statement
            .query_map(params![job_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(db("read the notices of"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("read the notices of"))
    }
}

#[cfg(test)]
mod tests;
