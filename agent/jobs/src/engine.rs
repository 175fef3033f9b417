//! The job engine: prepare (image, bundle, CDI), start (spawn the per-job
//! supervisor), observe, cancel, and recover jobs after an agent restart.
//!
//! The engine keeps no state of its own beyond the job directories: every
//! answer comes from the files the supervisor writes (see [`crate::protocol`];
//! the engine never uses the supervisor's code, only its files), so a fresh
//! engine on a restarted agent sees exactly what the old one saw. The OCI
//! runtime is passed in ([`Engine::with_runtime`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_toolbox::durable;

use crate::bundle::{self, BundleError, BundleInputs};
use crate::cdi::{CdiError, CdiRegistry};
use crate::image::{ImageError, ImageStore, ImportProgress};
use crate::meter::{CgroupVersion, GpuMeter, JobCgroup, NoGpuMeter, detect_cgroup_version};
use crate::protocol::{
    self, BUNDLE_DIR, EndReason, JobResult, ProtocolError, SHIM_CONFIG, SHIM_LOG, SHIM_PID, STATE,
    STDERR_LOG, STDOUT_LOG, ShimConfig, ShimIdentity, ShimPhase, ShimState,
};
use crate::registry::{Puller, RegistryError, RegistrySettings};
use crate::runner_client::{RunnerClient, RunnerClientError};
use crate::runtime::{KillSignal, OciRuntime, RuncRuntime, RuntimeError};
use crate::spec::{JobSpec, JobSpecError};
use crate::unpack::UnpackLimits;

pub use crate::protocol::{JOB_RECORD, JobRecord};

/// How long a spawned supervisor may take to take its lock before a job
/// without one counts as orphaned.
const SPAWN_GRACE: Duration = Duration::from_secs(10);

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A job id the engine refuses.
    #[error("job id {id:?} is invalid (1-64 of [A-Za-z0-9_-])")]
    BadJobId {
        /// The id.
        id: String,
    },
    /// The image path is outside the configured image roots.
    #[error("image path {path} is not under an allowed image directory ({allowed})")]
    ImageNotAllowed {
        /// Requested path.
        path: PathBuf,
        /// Allowed roots.
        allowed: String,
    },
    /// The job already exists.
    #[error("job {id} already exists")]
    Exists {
        /// Job id.
        id: String,
    },
    /// The job does not exist.
    #[error("job {id} does not exist")]
    NotFound {
        /// Job id.
        id: String,
    },
    /// The job has GPUs assigned that do not match the request.
    #[error("job asks for {wanted} GPUs but {assigned} CDI devices were assigned")]
    GpuMismatch {
        /// GPUs in the spec.
        wanted: u32,
        /// Devices assigned.
        assigned: usize,
    },
    /// A file operation failed.
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
    /// The job spec is invalid.
    #[error("invalid job spec")]
    Spec(#[from] JobSpecError),
    /// Image import failed.
    #[error("cannot import the job's image")]
    Image(#[from] ImageError),
    /// Pulling the job's image from its registry failed.
    #[error("cannot pull the job's image")]
    Registry(#[from] RegistryError),
    /// Bundle generation failed.
    #[error("cannot build the job's runtime bundle")]
    Bundle(#[from] BundleError),
    /// CDI resolution failed.
    #[error("cannot inject the job's devices")]
    Cdi(#[from] CdiError),
    /// The runtime failed.
    #[error("OCI runtime failed")]
    Runtime(#[from] RuntimeError),
    /// The privileged runner refused or could not be reached.
    #[error("the privileged runner did not carry out the request")]
    Runner(#[from] RunnerClientError),
    /// A job directory file could not be read or written.
    #[error("job directory file is unusable")]
    Protocol(#[from] ProtocolError),
    /// Waiting for a job timed out.
    #[error("job {id} did not finish within {timeout:?}")]
    WaitTimeout {
        /// Job id.
        id: String,
        /// How long we waited.
        timeout: Duration,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where job directories live (e.g. `/var/lib/plinth/jobs`).
    pub jobs_dir: PathBuf,
    /// The image cache (e.g. `/var/lib/plinth/images`).
    pub image_store: PathBuf,
    /// Directories tenants' image paths must be under; empty allows any path.
    pub image_roots: Vec<PathBuf>,
    /// OCI runtime binary (`runc` or `crun`).
    pub runtime_binary: PathBuf,
    /// OCI runtime state root (`--root`).
    pub runtime_root: PathBuf,
    /// The supervisor program: `plinth-job-shim`, or a binary that runs
    /// `plinth_jobs::shim::run` when given `shim_args` (e.g. `plinth-agent job-shim`).
    pub shim_binary: PathBuf,
    /// Arguments put before the job directory on the supervisor's command line.
    pub shim_args: Vec<String>,
    /// CDI spec directories, lowest priority first.
    pub cdi_dirs: Vec<PathBuf>,
    /// Parent cgroup of jobs (e.g. `plinth`).
    pub cgroup_parent: String,
    /// Cap of each job log.
    pub log_cap_bytes: u64,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Unpacking limits.
    pub unpack_limits: UnpackLimits,
    /// Registries, signature policy and pull limits (`[images]`).
    pub registry: RegistrySettings,
    /// Bytes the image cache may hold before least-recently-used images that no
    /// job uses are evicted; 0 means unbounded.
    pub cache_max_bytes: u64,
    /// The privileged runner's socket (`plinth-runner`): when set, supervisors
    /// are started, and containers signalled and deleted, by the runner, so the
    /// agent needs no privilege; when `None` the engine spawns supervisors itself
    /// (tests and development only: the packaged unit uses the runner).
    pub runner_socket: Option<PathBuf>,
}

/// Where a job is, as seen from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Prepared, not started.
    Prepared,
    /// The supervisor was spawned but has not reported yet.
    Starting,
    /// Running (supervisor alive), with its latest state.
    Running(Option<ShimState>),
    /// Ended.
    Finished(JobResult),
    /// The supervisor is gone without a result: call [`Engine::recover`].
    Orphaned,
}

/// The job engine.
pub struct Engine {
    config: EngineConfig,
    images: ImageStore,
    puller: Puller,
    /// Runtime settings written into each job's `shim.json`.
    shim_runtime: RuncRuntime,
    /// The runtime the engine itself drives (recovery).
    runtime: Arc<dyn OciRuntime>,
    cgroup_version: CgroupVersion,
    gpu_meter: Arc<dyn GpuMeter>,
    children: Mutex<HashMap<String, Child>>,
    /// The privileged runner, when configured.
    runner: Option<RunnerClient>,
}

/// Checks a job id (used in paths and container ids).
pub fn check_job_id(id: &str) -> Result<(), EngineError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadJobId { id: id.to_string() })
    }
}

/// Finds a live supervisor for `job_dir` by its command line (program name
/// and last argument).
fn find_shim_process(shim_binary: &Path, job_dir: &Path) -> Option<i32> {
    let wanted = job_dir.as_os_str().as_encoded_bytes();
    let program = shim_binary.file_name()?.as_encoded_bytes();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let is_shim = args.first().is_some_and(|argv0| argv0.ends_with(program));
        if is_shim && args.len() >= 2 && args.last() == Some(&wanted) {
            let identity = ShimIdentity {
                pid,
                start_time: protocol::process_start_time(pid).unwrap_or(0),
            };
            if identity.is_alive() {
                return Some(pid);
            }
        }
    }
    None
}

impl Engine {
    /// Creates the engine (and its directories) with no GPU metering and the
    /// configured runc or crun binary.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        Self::with_gpu_meter(config, Arc::new(NoGpuMeter))
    }

    /// Creates the engine with a GPU meter and the configured runc or crun
    /// binary.
    pub fn with_gpu_meter(
        config: EngineConfig,
        gpu_meter: Arc<dyn GpuMeter>,
    ) -> Result<Engine, EngineError> {
        let runtime: Arc<dyn OciRuntime> = match &config.runner_socket {
            Some(socket) => Arc::new(RunnerClient::new(socket)),
            None => Arc::new(RuncRuntime::new(
                &config.runtime_binary,
                &config.runtime_root,
            )),
        };
        Self::with_runtime(config, gpu_meter, runtime)
    }

    /// Creates the engine with a GPU meter and the OCI runtime it drives for
    /// recovery. Supervisors run the runtime named in `shim.json` (the
    /// configured binary; see `plinth_jobs::shim::run_with`).
    pub fn with_runtime(
        config: EngineConfig,
        gpu_meter: Arc<dyn GpuMeter>,
        runtime: Arc<dyn OciRuntime>,
    ) -> Result<Engine, EngineError> {
        let own_dirs: &[&PathBuf] = if config.runner_socket.is_some() {
            // The runtime's state root belongs to the runner.
            &[&config.jobs_dir]
        } else {
            &[&config.jobs_dir, &config.runtime_root]
        };
        for dir in own_dirs {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create", dir))?;
        }
        let images = ImageStore::new(&config.image_store, config.unpack_limits)?;
        let shim_runtime = RuncRuntime::new(&config.runtime_binary, &config.runtime_root);
        Ok(Engine {
            images,
            puller: Puller::new(config.registry.clone()),
            shim_runtime,
            runtime,
            cgroup_version: detect_cgroup_version(),
            gpu_meter,
            children: Mutex::new(HashMap::new()),
            runner: config.runner_socket.as_deref().map(RunnerClient::new),
            config,
        })
    }

    /// The runtime the engine drives.
    pub fn runtime(&self) -> &dyn OciRuntime {
        self.runtime.as_ref()
    }

    /// The image cache.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The registry client.
    pub fn puller(&self) -> &Puller {
        &self.puller
    }

    /// Ids of the images used by jobs that have not ended (a job directory
    /// with a job record and no result), which eviction and removal spare.
    pub fn images_in_use(&self) -> std::collections::HashSet<String> {
        let mut in_use = std::collections::HashSet::new();
        let Ok(entries) = fs::read_dir(&self.config.jobs_dir) else {
            return in_use;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if protocol::read_result(&dir).ok().flatten().is_some() {
                continue;
            }
            if let Ok(Some(record)) = protocol::read_json::<JobRecord>(&dir.join(JOB_RECORD)) {
                in_use.insert(record.image_id);
            }
        }
        in_use
    }

    /// Pulls a registry image into the cache (or finds it there) and then
    /// evicts least-recently-used images beyond `cache_max_bytes`.
    pub fn pull_image(
        &self,
        reference: &str,
        pin: Option<&str>,
        tenant: Option<&str>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<crate::registry::Pulled, EngineError> {
        let pulled = self
            .puller
            .pull(&self.images, reference, pin, tenant, progress)?;
        self.evict_except(&pulled.image.record.image_id);
        Ok(pulled)
    }

    fn evict_except(&self, keep: &str) {
        if let Err(err) =
            self.images
                .evict(self.config.cache_max_bytes, &self.images_in_use(), keep)
        {
            tracing::warn!(error = %plinth_toolbox::error_chain(&err), "image cache eviction failed");
        }
    }

    /// Directory of a job.
    pub fn job_dir(&self, job_id: &str) -> Result<PathBuf, EngineError> {
        check_job_id(job_id)?;
        Ok(self.config.jobs_dir.join(job_id))
    }

    /// Container id of a job.
    pub fn container_id(job_id: &str) -> String {
        format!("plinth-{job_id}")
    }

    /// The job's cgroup.
    pub fn cgroup(&self, job_id: &str) -> JobCgroup {
        JobCgroup::new(
            self.cgroup_version,
            &format!(
                "/{}/{}",
                self.config.cgroup_parent.trim_matches('/'),
                job_id
            ),
        )
    }

    /// Path of a job's log (`stdout` or `stderr`).
    pub fn log_path(&self, job_id: &str, stderr: bool) -> Result<PathBuf, EngineError> {
        Ok(self
            .job_dir(job_id)?
            .join(if stderr { STDERR_LOG } else { STDOUT_LOG }))
    }

    /// Imports the image, writes the bundle (with the assigned CDI devices)
    /// and the supervisor config. The job can then be [`Engine::start`]ed.
    pub fn prepare(
        &self,
        job_id: &str,
        spec: &JobSpec,
        gpu_devices: &[String],
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<JobRecord, EngineError> {
        self.prepare_for(job_id, spec, gpu_devices, None, progress)
    }

    /// [`Engine::prepare`] for a job of `tenant`, whose signature policy
    /// (`[images.tenants]`) then applies to registry images.
    pub fn prepare_for(
        &self,
        job_id: &str,
        spec: &JobSpec,
        gpu_devices: &[String],
        tenant: Option<&str>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<JobRecord, EngineError> {
        spec.validate()?;
        if gpu_devices.len() != spec.gpus.count as usize
            && !(spec.gpus.count > 0 && gpu_devices.len() == 1 && gpu_devices[0].ends_with("=all"))
        {
            return Err(EngineError::GpuMismatch {
                wanted: spec.gpus.count,
                assigned: gpu_devices.len(),
            });
        }
        let job_dir = self.job_dir(job_id)?;
        let is_registry = spec.image.source == crate::spec::ImageSource::Registry;
        if !is_registry && !self.config.image_roots.is_empty() {
            let canonical =
                fs::canonicalize(&spec.image.path).map_err(io_err("resolve", &spec.image.path))?;
            if !self
                .config
                .image_roots
                .iter()
                .any(|root| canonical.starts_with(root))
            {
                return Err(EngineError::ImageNotAllowed {
                    path: spec.image.path.clone(),
                    allowed: self
                        .config
                        .image_roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        match fs::DirBuilder::new().mode(0o700).create(&job_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(EngineError::Exists {
                    id: job_id.to_string(),
                });
            }
            Err(source) => {
                return Err(EngineError::Io {
                    op: "create",
                    path: job_dir,
                    source,
                });
            }
        }
        let (image, image_signer) = if is_registry {
            let reference = spec.image.reference.as_deref().unwrap_or_default();
            let pulled =
                self.pull_image(reference, spec.image.digest.as_deref(), tenant, progress)?;
            (pulled.image, pulled.signer)
        } else {
            let image = self.images.import(&spec.image, progress)?;
            if !image.cached {
                self.evict_except(&image.record.image_id);
            }
            (image, None)
        };
        let user = bundle::resolve_user(&image)?;
        let scratch = job_dir.join("scratch");
        let outputs = scratch.join(
            spec.outputs
                .path
                .strip_prefix("/scratch")
                .unwrap_or(Path::new("")),
        );
        fs::create_dir_all(&outputs).map_err(io_err("create", &outputs))?;
        for dir in [&scratch, &outputs] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", dir))?;
            if nix::unistd::geteuid().is_root() {
                nix::unistd::chown(
                    dir,
                    Some(nix::unistd::Uid::from_raw(user.uid)),
                    Some(nix::unistd::Gid::from_raw(user.gid)),
                )
                .map_err(|errno| EngineError::Io {
                    op: "chown",
                    path: dir.clone(),
                    source: io::Error::from(errno),
                })?;
            }
        }
        let container_id = Self::container_id(job_id);
        let cgroup = self.cgroup(job_id);
        let inputs = BundleInputs {
            container_id: &container_id,
            spec,
            image: &image,
            scratch_dir: &scratch,
            cgroups_path: &cgroup.path,
            limit_swap: cgroup.can_limit_swap(),
        };
        let mut runtime_spec = bundle::build_spec(&inputs)?;
        if !gpu_devices.is_empty() {
            let registry = CdiRegistry::load(&self.config.cdi_dirs);
            runtime_spec = registry.apply(&runtime_spec, gpu_devices)?;
        }
        let bundle_dir = job_dir.join(BUNDLE_DIR);
        let shim_config = ShimConfig {
            container_id: container_id.clone(),
            bundle: bundle_dir.clone(),
            runtime: self.shim_runtime.clone(),
            max_duration_ms: spec.resources.max_duration_s.saturating_mul(1000),
            kill_grace_ms: self.config.kill_grace.as_millis() as u64,
            log_cap_bytes: self.config.log_cap_bytes,
            cgroup,
        };
        let record = JobRecord {
            job_id: job_id.to_string(),
            container_id,
            spec: spec.clone(),
            gpu_devices: gpu_devices.to_vec(),
            image_id: image.record.image_id.clone(),
            image_signer,
        };
        // The three files are written durably at the same time, so that their
        // fsyncs share journal commits instead of queueing one after another
        // on the job's start path; prepare returns once all three are on disk.
        // (An agent that dies in between leaves at worst a job whose bundle is
        // missing: it then ends as `start_failed`, never billed.)
        let record_path = job_dir.join(JOB_RECORD);
        let shim_config_path = job_dir.join(SHIM_CONFIG);
        let panicked = |path: &Path| ProtocolError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: io::Error::other("the writer thread panicked"),
        };
        let (bundle_written, record_written, shim_config_written) = std::thread::scope(|scope| {
            let record_writer = scope.spawn(|| protocol::write_json(&record_path, &record));
            let shim_config_writer =
                scope.spawn(|| protocol::write_json(&shim_config_path, &shim_config));
            let bundle_written = bundle::write_bundle(&bundle_dir, &runtime_spec);
            (
                bundle_written,
                record_writer
                    .join()
                    .unwrap_or_else(|_| Err(panicked(&record_path))),
                shim_config_writer
                    .join()
                    .unwrap_or_else(|_| Err(panicked(&shim_config_path))),
            )
        });
        bundle_written?;
        record_written?;
        shim_config_written?;
        // The new directories' own entries (the bundle in the job directory,
        // the job directory in the jobs directory) must survive too.
        durable::sync_dir(&job_dir).map_err(ProtocolError::from)?;
        durable::sync_dir(&self.config.jobs_dir).map_err(ProtocolError::from)?;
        Ok(record)
    }

    /// Spawns the job's supervisor, detached into its own process group.
    pub fn start(&self, job_id: &str) -> Result<(), EngineError> {
        let job_dir = self.job_dir(job_id)?;
        if !job_dir.join(SHIM_CONFIG).exists() {
            return Err(EngineError::NotFound {
                id: job_id.to_string(),
            });
        }
        let shim_log_path = job_dir.join(SHIM_LOG);
        let shim_log =
            fs::File::create(&shim_log_path).map_err(io_err("create", &shim_log_path))?;
        if let Some(runner) = &self.runner {
            drop(shim_log);
            return runner.start(&job_dir).map_err(EngineError::from);
        }
        let mut command = Command::new(&self.config.shim_binary);
        for name in crate::runtime::SYSTEMD_ENV {
            command.env_remove(name);
        }
        let child = command
            .args(&self.config.shim_args)
            .arg(&job_dir)
            .current_dir(&job_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(shim_log))
            .process_group(0)
            .spawn()
            .map_err(io_err("spawn supervisor", &self.config.shim_binary))?;
        if let Ok(mut children) = self.children.lock() {
            children.insert(job_id.to_string(), child);
        }
        Ok(())
    }

    /// Reaps our own supervisor child if it exited (avoids zombies).
    fn reap(&self, job_id: &str) -> bool {
        let Ok(mut children) = self.children.lock() else {
            return false;
        };
        let exited = match children.get_mut(job_id) {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => return false,
        };
        if exited {
            children.remove(job_id);
        }
        exited
    }

    fn shim_alive(&self, job_dir: &Path) -> bool {
        if protocol::supervisor_holds_lock(job_dir).unwrap_or(false) {
            return true;
        }
        match protocol::read_json::<ShimIdentity>(&job_dir.join(SHIM_PID)) {
            Ok(Some(identity)) if identity.is_alive() => true,
            _ => find_shim_process(&self.config.shim_binary, job_dir).is_some(),
        }
    }

    /// A supervisor spawned moments ago may not hold its lock yet.
    fn recently_spawned(job_dir: &Path) -> bool {
        !job_dir.join(SHIM_PID).exists()
            && fs::metadata(job_dir.join(SHIM_LOG))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < SPAWN_GRACE)
    }

    fn finish_result(&self, job_dir: &Path, mut result: JobResult) -> JobResult {
        if let Ok(Some(record)) = protocol::read_json::<JobRecord>(&job_dir.join(JOB_RECORD)) {
            let start = result.started_at_ms.unwrap_or(result.ended_at_ms);
            result.usage.gpu = self
                .gpu_meter
                .usage(&record.gpu_devices, start, result.ended_at_ms);
        }
        result
    }

    /// Where a job is now.
    pub fn state(&self, job_id: &str) -> Result<JobState, EngineError> {
        let job_dir = self.job_dir(job_id)?;
        if !job_dir.join(SHIM_CONFIG).exists() {
            return Err(EngineError::NotFound {
                id: job_id.to_string(),
            });
        }
        let shim_exited = self.reap(job_id);
        if let Some(result) = protocol::read_result(&job_dir)? {
            return Ok(JobState::Finished(self.finish_result(&job_dir, result)));
        }
        if !shim_exited && self.shim_alive(&job_dir) {
            return Ok(JobState::Running(
                protocol::read_json(&job_dir.join(STATE)).ok().flatten(),
            ));
        }
        let spawned = job_dir.join(SHIM_LOG).exists();
        if !spawned {
            return Ok(JobState::Prepared);
        }
        let in_children = self
            .children
            .lock()
            .map(|c| c.contains_key(job_id))
            .unwrap_or(false);
        if (in_children && !shim_exited) || (!in_children && Self::recently_spawned(&job_dir)) {
            return Ok(JobState::Starting);
        }
        // Re-check: the supervisor may have written its result just now.
        if let Some(result) = protocol::read_result(&job_dir)? {
            return Ok(JobState::Finished(self.finish_result(&job_dir, result)));
        }
        Ok(JobState::Orphaned)
    }

    /// Asks the job's supervisor to stop the job (SIGTERM, grace, SIGKILL).
    pub fn cancel(&self, job_id: &str) -> Result<(), EngineError> {
        let job_dir = self.job_dir(job_id)?;
        if !job_dir.exists() {
            return Err(EngineError::NotFound {
                id: job_id.to_string(),
            });
        }
        Ok(protocol::request_cancel(&job_dir)?)
    }

    /// Accounts for a job after an agent restart.
    ///
    /// A live supervisor is re-adopted (nothing to do: it keeps writing its
    /// files). A supervisor that died without a result leaves a container
    /// whose stdio is gone, so the container is killed, metered and deleted,
    /// and a `supervisor_lost` result is written with the usage of the last
    /// state snapshot and the final cgroup reading. The result is written
    /// once; calling this again returns the same result (no double billing).
    pub fn recover(&self, job_id: &str) -> Result<JobState, EngineError> {
        let job_dir = self.job_dir(job_id)?;
        let state = self.state(job_id)?;
        let container_id = Self::container_id(job_id);
        match state {
            JobState::Finished(result) => {
                // The supervisor may have died between result and delete.
                self.runtime.delete(&container_id)?;
                Ok(JobState::Finished(result))
            }
            JobState::Orphaned => {
                let snapshot: Option<ShimState> =
                    protocol::read_json(&job_dir.join(STATE)).ok().flatten();
                let cgroup = self.cgroup(job_id);
                let container = self.runtime.state(&container_id)?;
                let was_running = container.as_ref().is_some_and(|c| c.status != "stopped");
                if container.is_some() {
                    let _ = self.runtime.kill(&container_id, KillSignal::Kill, true);
                    let give_up = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < give_up {
                        match self.runtime.state(&container_id) {
                            Ok(Some(c)) if c.status != "stopped" => {
                                std::thread::sleep(Duration::from_millis(20))
                            }
                            _ => break,
                        }
                    }
                }
                let mut usage = snapshot
                    .as_ref()
                    .map(|s| s.usage.clone())
                    .unwrap_or_default();
                if let Ok(sample) = cgroup.sample() {
                    usage.absorb(&sample);
                }
                let started_at_ms = snapshot.as_ref().and_then(|s| s.started_at_ms);
                let now = protocol::now_ms();
                // A container that was already gone ended at most at the last
                // snapshot; do not bill the time the agent was down.
                let ended_at_ms = if was_running {
                    now
                } else {
                    snapshot.as_ref().map(|s| s.updated_at_ms).unwrap_or(now)
                };
                if let Some(start) = started_at_ms {
                    usage.wall_ms = ended_at_ms.saturating_sub(start);
                }
                let never_ran = snapshot
                    .as_ref()
                    .is_none_or(|s| s.phase == ShimPhase::Creating);
                let result = JobResult {
                    reason: if never_ran {
                        EndReason::StartFailed
                    } else {
                        EndReason::SupervisorLost
                    },
                    exit_code: None,
                    signal: None,
                    started_at_ms,
                    ended_at_ms,
                    usage,
                    stdout_dropped_bytes: 0,
                    stderr_dropped_bytes: 0,
                    error: Some(format!(
                        "supervisor exited without a result; container was {} and was ended during recovery",
                        if was_running {
                            "running"
                        } else {
                            "not running"
                        }
                    )),
                };
                // Another recovery (or a late supervisor) may have raced us:
                // the first result recorded wins, and is what we report.
                let recorded = protocol::write_result(&job_dir, &result)?;
                self.runtime.delete(&container_id)?;
                Ok(JobState::Finished(self.finish_result(&job_dir, recorded)))
            }
            other => Ok(other),
        }
    }

    /// Ids of all jobs with a directory.
    pub fn job_ids(&self) -> Result<Vec<String>, EngineError> {
        let mut ids = Vec::new();
        let entries =
            fs::read_dir(&self.config.jobs_dir).map_err(io_err("list", &self.config.jobs_dir))?;
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && check_job_id(name).is_ok()
            {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Polls until the job ends or `timeout` passes.
    pub fn wait(&self, job_id: &str, timeout: Duration) -> Result<JobResult, EngineError> {
        let give_up = Instant::now() + timeout;
        loop {
            match self.state(job_id)? {
                JobState::Finished(result) => {
                    // Let the supervisor delete the container and exit.
                    let job_dir = self.job_dir(job_id)?;
                    while Instant::now() < give_up
                        && !self.reap(job_id)
                        && self.shim_alive(&job_dir)
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    return Ok(result);
                }
                JobState::Orphaned => {
                    if let JobState::Finished(result) = self.recover(job_id)? {
                        return Ok(result);
                    }
                }
                _ => {}
            }
            if Instant::now() >= give_up {
                return Err(EngineError::WaitTimeout {
                    id: job_id.to_string(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes a finished job's directory (outputs included).
    pub fn remove(&self, job_id: &str) -> Result<(), EngineError> {
        let job_dir = self.job_dir(job_id)?;
        if let JobState::Running(_) | JobState::Starting = self.state(job_id)? {
            return Err(EngineError::Exists {
                id: job_id.to_string(),
            });
        }
        if let Some(runner) = &self.runner {
            // The outputs may belong to the job's user: the runner removes them.
            return runner.remove(&job_dir).map_err(EngineError::from);
        }
        fs::remove_dir_all(&job_dir).map_err(io_err("remove", &job_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::Usage;
    use crate::runtime::testing::{RecordingRuntime, RuntimeCall};

    fn config(root: &Path) -> EngineConfig {
        EngineConfig {
            jobs_dir: root.join("jobs"),
            image_store: root.join("images"),
            image_roots: Vec::new(),
            runtime_binary: PathBuf::from("/nonexistent/runc"),
            runtime_root: root.join("runc"),
            shim_binary: PathBuf::from("/nonexistent/plinth-job-shim-engine-test"),
            shim_args: Vec::new(),
            cdi_dirs: Vec::new(),
            cgroup_parent: "plinth-engine-test-none".to_string(),
            log_cap_bytes: 4096,
            kill_grace: Duration::from_millis(100),
            unpack_limits: UnpackLimits::default(),
            registry: RegistrySettings::default(),
            cache_max_bytes: 0,
            runner_socket: None,
        }
    }

    /// A job directory as a supervisor that was SIGKILLed while the job ran
    /// leaves it: config, log, a dead identity, a running state.
    fn orphan(engine: &Engine, job_id: &str) {
        let job_dir = engine.job_dir(job_id).unwrap();
        fs::create_dir_all(&job_dir).unwrap();
        let shim_config = ShimConfig {
            container_id: Engine::container_id(job_id),
            bundle: job_dir.join(BUNDLE_DIR),
            runtime: engine.shim_runtime.clone(),
            max_duration_ms: 60_000,
            kill_grace_ms: 100,
            log_cap_bytes: 4096,
            cgroup: engine.cgroup(job_id),
        };
        protocol::write_json(&job_dir.join(SHIM_CONFIG), &shim_config).unwrap();
        fs::write(job_dir.join(SHIM_LOG), b"").unwrap();
        let dead = ShimIdentity {
            start_time: ShimIdentity::own().start_time + 1,
            ..ShimIdentity::own()
        };
        protocol::write_json(&job_dir.join(SHIM_PID), &dead).unwrap();
        let now = protocol::now_ms();
        let state = ShimState {
            phase: ShimPhase::Running,
            container_pid: Some(1),
            started_at_ms: Some(now - 3000),
            deadline_ms: None,
            usage: Usage::default(),
            updated_at_ms: now - 1000,
        };
        protocol::write_json(&job_dir.join(STATE), &state).unwrap();
    }

    #[test]
    fn recovery_of_an_orphan_kills_waits_and_deletes_once() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(RecordingRuntime::new().with_container("plinth-j1", "running"));
        let engine =
            Engine::with_runtime(config(dir.path()), Arc::new(NoGpuMeter), runtime.clone())
                .unwrap();
        orphan(&engine, "j1");
        assert_eq!(engine.state("j1").unwrap(), JobState::Orphaned);
        let JobState::Finished(first) = engine.recover("j1").unwrap() else {
            panic!("recovery did not finish the job");
        };
        assert_eq!(first.reason, EndReason::SupervisorLost);
        assert!(first.usage.wall_ms >= 3000, "{first:?}");
        let id = "plinth-j1".to_string();
        assert_eq!(
            runtime.calls(),
            [
                RuntimeCall::State { id: id.clone() },
                RuntimeCall::Kill {
                    id: id.clone(),
                    signal: KillSignal::Kill,
                    all: true
                },
                RuntimeCall::State { id: id.clone() },
                RuntimeCall::Delete { id: id.clone() },
            ]
        );
        // A second recovery reads the recorded result and only deletes again.
        let JobState::Finished(again) = engine.recover("j1").unwrap() else {
            panic!("second recovery changed the state");
        };
        assert_eq!(again, first);
        assert_eq!(
            runtime.calls()[4..],
            [RuntimeCall::Delete { id: id.clone() }]
        );
    }

    #[test]
    fn recovery_of_a_gone_container_bills_up_to_the_last_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(RecordingRuntime::new());
        let engine =
            Engine::with_runtime(config(dir.path()), Arc::new(NoGpuMeter), runtime.clone())
                .unwrap();
        orphan(&engine, "j2");
        let JobState::Finished(result) = engine.recover("j2").unwrap() else {
            panic!("recovery did not finish the job");
        };
        // Started 3 s before "now", last snapshot 1 s before: 2 s billed.
        assert!((1900..=2100).contains(&result.usage.wall_ms), "{result:?}");
        let id = "plinth-j2".to_string();
        assert_eq!(
            runtime.calls(),
            [
                RuntimeCall::State { id: id.clone() },
                RuntimeCall::Delete { id }
            ]
        );
    }

    #[test]
    fn cancel_is_a_durable_request_and_touches_no_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(RecordingRuntime::new());
        let engine =
            Engine::with_runtime(config(dir.path()), Arc::new(NoGpuMeter), runtime.clone())
                .unwrap();
        orphan(&engine, "j3");
        engine.cancel("j3").unwrap();
        assert!(protocol::cancel_requested(&engine.job_dir("j3").unwrap()));
        assert_eq!(runtime.calls(), []);
        assert!(matches!(
            engine.cancel("nope"),
            Err(EngineError::NotFound { .. })
        ));
    }
}
