//! The runner's socket: peer credentials, the checks of each request, and
//! the privileged work (cgroup-creating container starts through a supervisor,
//! signals, deletes, clean-up).
//!
//! Requests are the `plinth_jobs::runner_client` types, one per connection.
//! A peer whose uid is not the configured agent user is refused before its
//! request is read. Every refusal is logged with its reason and sent back.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{OFlag, openat};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use plinth_jobs::cdi::CdiRegistry;
use plinth_jobs::engine::{Engine, JobRecord, check_job_id};
use plinth_jobs::meter::{JobCgroup, detect_cgroup_version};
use plinth_jobs::protocol::{BUNDLE_DIR, JOB_RECORD, SHIM_CONFIG, SHIM_LOG, ShimConfig};
use plinth_jobs::runner_client::{
    MAX_MESSAGE_BYTES, RunnerAnswer, RunnerContainerState, RunnerRequest,
};
use plinth_jobs::runtime::{OciRuntime, RuncRuntime, SYSTEMD_ENV};
use serde::{Deserialize, Serialize};

use crate::config::RunnerConfig;
use crate::validate::{self, Policy, Refusal};

/// How long a refused peer's request is read (and discarded) before the runner closes.
const REFUSED_DRAIN: Duration = Duration::from_millis(200);

/// The largest `config.json`, `job.json` or `shim.json` the runner reads.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The longest a job may run, as the runner bounds `shim.json` (30 days).
const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;
/// The file of a validated bundle directory that tells the supervisor what to run.
pub const ORDER: &str = "order.json";

/// Errors of the runner.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A request was refused; the reason names the field and value.
    #[error("{0}")]
    Refused(String),
    /// The bundle failed re-validation.
    #[error("bundle config.json")]
    Bundle(#[from] Refusal),
    /// A file or socket operation failed.
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
    /// The OCI runtime failed.
    #[error("OCI runtime failed")]
    Runtime(#[from] plinth_jobs::runtime::RuntimeError),
    /// The configuration names something that does not exist.
    #[error("runner configuration: {0}")]
    Config(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn refused(reason: impl Into<String>) -> ServerError {
    ServerError::Refused(reason.into())
}

/// What the runner writes for a supervisor (root-owned, in its own directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorOrder {
    /// The job directory, where the supervisor writes its files.
    pub job_dir: PathBuf,
    /// The owner of the job directory: the supervisor's file-system uid.
    pub owner_uid: u32,
    /// Its group: the supervisor's file-system gid.
    pub owner_gid: u32,
    /// The supervisor's configuration, built by the runner (runtime, bundle,
    /// cgroup and container id are the runner's, never the agent's).
    pub shim: ShimConfig,
}

/// The runner: its configuration and what it resolved at start.
#[derive(Debug)]
pub struct Runner {
    config: RunnerConfig,
    agent_uid: u32,
    state_dir: PathBuf,
    runtime: RuncRuntime,
    allowed_capabilities: HashSet<oci_spec::runtime::Capability>,
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ServerError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(refused(format!("{} is not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(refused(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ServerError> {
    let bytes = read_capped(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|err| refused(format!("{} does not parse: {err}", path.display())))
}

impl Runner {
    /// Resolves the configuration (the agent user, the state directory, the
    /// runtime) and creates the runner's own directories.
    pub fn new(config: RunnerConfig) -> Result<Runner, ServerError> {
        let agent_uid = config.agent_uid().map_err(ServerError::Config)?;
        for dir in [&config.runner_dir, &config.runtime_root] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create", dir))?;
        }
        let state_dir = fs::canonicalize(&config.state_dir).map_err(|err| {
            ServerError::Config(format!(
                "state_dir {} cannot be resolved: {err}",
                config.state_dir.display()
            ))
        })?;
        let runtime = RuncRuntime::new(&resolve_binary(&config.runtime), &config.runtime_root);
        Ok(Runner {
            agent_uid,
            state_dir,
            runtime,
            allowed_capabilities: HashSet::new(),
            config,
        })
    }

    /// The runner's configuration.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Binds the socket: mode 0660, group `socket_group`.
    pub fn bind(&self) -> Result<UnixListener, ServerError> {
        let socket = &self.config.socket;
        if let Some(parent) = socket.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err("create", parent))?;
        }
        match fs::remove_file(socket) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ServerError::Io {
                    op: "remove the stale socket",
                    path: socket.clone(),
                    source,
                });
            }
        }
        let listener = UnixListener::bind(socket).map_err(io_err("bind", socket))?;
        if let Some(group) = &self.config.socket_group {
            let gid = crate::config::resolve_group(group).map_err(ServerError::Config)?;
            nix::unistd::chown(socket, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(
                |errno| ServerError::Io {
                    op: "chgrp",
                    path: socket.clone(),
                    source: io::Error::from(errno),
                },
            )?;
        }
        fs::set_permissions(socket, fs::Permissions::from_mode(0o660))
            .map_err(io_err("chmod", socket))?;
        Ok(listener)
    }

    /// Serves connections one at a time until the listener fails.
    pub fn serve(&self, listener: &UnixListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => self.handle(stream),
                Err(err) => tracing::warn!(error = %err, "accept failed"),
            }
        }
    }

    fn handle(&self, mut stream: UnixStream) {
        let peer = match getsockopt(&stream.as_fd(), PeerCredentials) {
            Ok(creds) => creds,
            Err(errno) => {
                tracing::warn!(error = %errno, "cannot read the peer's credentials; closing");
                return;
            }
        };
        if peer.uid() != self.agent_uid {
            let reason = format!(
                "peer uid {} (pid {}) is not the agent user {} (uid {})",
                peer.uid(),
                peer.pid(),
                self.config.agent_user,
                self.agent_uid
            );
            tracing::warn!(
                peer_uid = peer.uid(),
                peer_pid = peer.pid(),
                "refused connection: {reason}"
            );
            let _ = write_answer(&mut stream, &RunnerAnswer::refused(reason));
            // Discard (never parse) what the peer sends, briefly and bounded, before
            // closing: a close while its request is still being written would make its
            // write fail with EPIPE before it reads the refusal, hiding the reason.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(REFUSED_DRAIN));
            let _ = io::copy(&mut (&stream).take(MAX_MESSAGE_BYTES), &mut io::sink());
            return;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_MESSAGE_BYTES)).read_line(&mut line);
        let answer = match read {
            Err(err) => RunnerAnswer::refused(format!("cannot read the request: {err}")),
            Ok(_) => match serde_json::from_str::<RunnerRequest>(&line) {
                Err(err) => {
                    let reason = format!("the request does not parse: {err}");
                    tracing::warn!(peer_pid = peer.pid(), "refused: {reason}");
                    RunnerAnswer::refused(reason)
                }
                Ok(request) => {
                    let op = request.op();
                    match self.execute(&request, peer.uid()) {
                        Ok(answer) => {
                            tracing::info!(op, peer_pid = peer.pid(), "done");
                            answer
                        }
                        Err(err) => {
                            let reason = plinth_toolbox::error_chain(&err);
                            tracing::warn!(
                                op,
                                peer_pid = peer.pid(),
                                ?request,
                                "refused: {reason}"
                            );
                            RunnerAnswer::refused(reason)
                        }
                    }
                }
            },
        };
        if let Err(err) = write_answer(&mut stream, &answer) {
            tracing::warn!(error = %err, "cannot send the answer");
        }
    }

    /// Carries out one request from a peer with uid `peer_uid` (already checked).
    pub fn execute(
        &self,
        request: &RunnerRequest,
        peer_uid: u32,
    ) -> Result<RunnerAnswer, ServerError> {
        match request {
            RunnerRequest::Start { job_dir } => {
                self.start(job_dir, peer_uid)?;
                Ok(RunnerAnswer::done())
            }
            RunnerRequest::State { container_id } => {
                check_container_id(container_id)?;
                let state = self.runtime.state(container_id)?;
                Ok(RunnerAnswer {
                    ok: true,
                    error: None,
                    state: state.map(|s| RunnerContainerState {
                        status: s.status,
                        pid: s.pid,
                    }),
                })
            }
            RunnerRequest::Kill {
                container_id,
                signal,
                all,
            } => {
                check_container_id(container_id)?;
                self.runtime.kill(container_id, (*signal).into(), *all)?;
                Ok(RunnerAnswer::done())
            }
            RunnerRequest::Delete { container_id } => {
                check_container_id(container_id)?;
                self.runtime.delete(container_id)?;
                Ok(RunnerAnswer::done())
            }
            RunnerRequest::Remove { job_dir } => {
                let (job_id, _, _) = self.check_job_dir(job_dir, peer_uid)?;
                let container_id = Engine::container_id(&job_id);
                if let Some(state) = self.runtime.state(&container_id)?
                    && state.status != "stopped"
                {
                    return Err(refused(format!(
                        "job {job_id}'s container is {}; cancel it first",
                        state.status
                    )));
                }
                // std's remove_dir_all does not follow symlinks inside the tree.
                fs::remove_dir_all(job_dir).map_err(io_err("remove", job_dir))?;
                let bundle = self.bundle_dir(&container_id);
                if bundle.exists() {
                    fs::remove_dir_all(&bundle).map_err(io_err("remove", &bundle))?;
                }
                Ok(RunnerAnswer::done())
            }
        }
    }

    /// The runner's validated bundle directory of a container.
    pub fn bundle_dir(&self, container_id: &str) -> PathBuf {
        self.config.runner_dir.join("bundles").join(container_id)
    }

    /// Checks a job directory: absolute, no symlinks, directly... under the
    /// state directory, named by a valid job id, a real directory owned by the
    /// peer. Returns the job id and the owner's uid and gid.
    fn check_job_dir(
        &self,
        job_dir: &Path,
        peer_uid: u32,
    ) -> Result<(String, u32, u32), ServerError> {
        let shown = job_dir.display();
        if !job_dir.is_absolute() {
            return Err(refused(format!("job directory {shown} is not absolute")));
        }
        let canonical = fs::canonicalize(job_dir)
            .map_err(|err| refused(format!("job directory {shown} cannot be resolved: {err}")))?;
        if canonical != job_dir {
            return Err(refused(format!(
                "job directory {shown} reaches {} through a symlink",
                canonical.display()
            )));
        }
        if !canonical.starts_with(&self.state_dir) || canonical == self.state_dir {
            return Err(refused(format!(
                "job directory {shown} is outside the state directory {}",
                self.state_dir.display()
            )));
        }
        let job_id = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        check_job_id(&job_id).map_err(|err| refused(format!("job directory {shown}: {err}")))?;
        let meta = fs::symlink_metadata(&canonical).map_err(io_err("stat", &canonical))?;
        if !meta.is_dir() {
            return Err(refused(format!("job directory {shown} is not a directory")));
        }
        if meta.uid() != peer_uid {
            return Err(refused(format!(
                "job directory {shown} belongs to uid {}, not to the agent (uid {peer_uid})",
                meta.uid()
            )));
        }
        Ok((job_id, meta.uid(), meta.gid()))
    }

    /// Validates the prepared job in `job_dir` and starts its supervisor.
    fn start(&self, job_dir: &Path, peer_uid: u32) -> Result<(), ServerError> {
        let (job_id, owner_uid, owner_gid) = self.check_job_dir(job_dir, peer_uid)?;
        let container_id = Engine::container_id(&job_id);
        if self.runtime.state(&container_id)?.is_some() {
            return Err(refused(format!("container {container_id} already exists")));
        }
        let record: JobRecord = parse_json(&job_dir.join(JOB_RECORD))?;
        let agent_shim: ShimConfig = parse_json(&job_dir.join(SHIM_CONFIG))?;
        let config_path = job_dir.join(BUNDLE_DIR).join("config.json");
        let spec_bytes = read_capped(&config_path)?;
        let spec: Spec = serde_json::from_slice(&spec_bytes)
            .map_err(|err| refused(format!("{} does not parse: {err}", config_path.display())))?;
        let cgroup = JobCgroup::new(
            detect_cgroup_version(),
            &format!(
                "/{}/{}",
                self.config.cgroup_parent.trim_matches('/'),
                job_id
            ),
        );
        let cdi = CdiRegistry::load(&self.config.cdi_dirs);
        let policy = Policy {
            job_dir,
            image_dirs: &self.config.image_dirs,
            allowed_mounts: &self.config.allowed_mounts,
            allowed_capabilities: &self.allowed_capabilities,
            allow_host_network: self.config.allow_host_network,
            cgroups_path: &cgroup.path,
            cdi: &cdi,
            cdi_devices: &record.gpu_devices,
        };
        validate::check_spec(&spec, &policy)?;
        if agent_shim.max_duration_ms == 0 || agent_shim.max_duration_ms > MAX_DURATION_MS {
            return Err(refused(format!(
                "shim.json max_duration_ms {} is outside 1..={MAX_DURATION_MS}",
                agent_shim.max_duration_ms
            )));
        }
        let (uid, gid) = spec
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()))
            .unwrap_or((plinth_jobs::bundle::NOBODY, plinth_jobs::bundle::NOBODY));
        give_scratch_to(job_dir, &record.spec.outputs.path, uid, gid)?;
        // The validated spec, re-serialised (fields the runner does not model are
        // dropped), in a directory the agent cannot write.
        let bundle = self.bundle_dir(&container_id);
        if bundle.exists() {
            fs::remove_dir_all(&bundle).map_err(io_err("remove", &bundle))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bundle)
            .map_err(io_err("create", &bundle))?;
        plinth_jobs::bundle::write_bundle(&bundle, &spec).map_err(|err| {
            refused(format!(
                "cannot write the validated bundle: {}",
                plinth_toolbox::error_chain(&err)
            ))
        })?;
        let order = SupervisorOrder {
            job_dir: job_dir.to_path_buf(),
            owner_uid,
            owner_gid,
            shim: ShimConfig {
                container_id: container_id.clone(),
                bundle: bundle.clone(),
                runtime: self.runtime.clone(),
                max_duration_ms: agent_shim.max_duration_ms,
                kill_grace_ms: agent_shim.kill_grace_ms.min(10 * 60 * 1000),
                log_cap_bytes: agent_shim.log_cap_bytes.min(1 << 30),
                cgroup,
            },
        };
        plinth_jobs::protocol::write_json(&bundle.join(ORDER), &order)
            .map_err(|err| refused(plinth_toolbox::error_chain(&err)))?;
        self.spawn_supervisor(job_dir, &bundle)?;
        tracing::info!(job = %job_id, container = %container_id, "started the job's supervisor");
        Ok(())
    }

    fn spawn_supervisor(&self, job_dir: &Path, bundle: &Path) -> Result<(), ServerError> {
        // The agent created shim.log; it becomes the supervisor's stderr, opened
        // without following a symlink the agent may have put there.
        let log_path = job_dir.join(SHIM_LOG);
        let log = fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        if !log.metadata().map_err(io_err("stat", &log_path))?.is_file() {
            return Err(refused(format!(
                "{} is not a regular file",
                log_path.display()
            )));
        }
        let exe = std::env::current_exe().map_err(io_err("find", Path::new("/proc/self/exe")))?;
        let mut command = Command::new(&exe);
        for name in SYSTEMD_ENV {
            command.env_remove(name);
        }
        let mut child = command
            .arg("supervise")
            .arg(bundle)
            .current_dir(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(OwnedFd::from(log)))
            .process_group(0)
            .spawn()
            .map_err(io_err("spawn the supervisor", &exe))?;
        // The supervisor outlives requests (and, with KillMode=process, the
        // runner); while the runner lives it reaps it.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }
}

fn write_answer(stream: &mut UnixStream, answer: &RunnerAnswer) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(answer).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn check_container_id(id: &str) -> Result<(), ServerError> {
    match id.strip_prefix("plinth-") {
        Some(job_id) if check_job_id(job_id).is_ok() => Ok(()),
        _ => Err(refused(format!(
            "container id {id:?} is not a job's (plinth-<job id>)"
        ))),
    }
}

/// Gives the job's scratch directory and its outputs directory to the job's
/// user, walking from the job directory without following symlinks.
fn give_scratch_to(job_dir: &Path, outputs: &Path, uid: u32, gid: u32) -> Result<(), ServerError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let errno_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |errno: nix::errno::Errno| ServerError::Io {
            op,
            path,
            source: io::Error::from(errno),
        }
    };
    let open = |path: &Path| -> Result<OwnedFd, ServerError> {
        nix::fcntl::open(path, flags, Mode::empty()).map_err(errno_err("open", path))
    };
    let chown = |fd: &OwnedFd, path: &Path| -> Result<(), ServerError> {
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(errno_err("chown", path))
    };
    let root = open(job_dir)?;
    let scratch_path = job_dir.join("scratch");
    let mut dir =
        openat(&root, "scratch", flags, Mode::empty()).map_err(errno_err("open", &scratch_path))?;
    chown(&dir, &scratch_path)?;
    let relative = outputs.strip_prefix("/scratch").unwrap_or(Path::new(""));
    let mut path = scratch_path;
    for component in relative.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(refused(format!(
                "outputs path {} is not plain",
                outputs.display()
            )));
        };
        path.push(name);
        dir = openat(&dir, name, flags, Mode::empty()).map_err(errno_err("open", &path))?;
        chown(&dir, &path)?;
    }
    Ok(())
}

/// The runtime binary: absolute as configured, else found on `PATH`.
fn resolve_binary(binary: &Path) -> PathBuf {
    if binary.is_absolute() {
        return binary.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(binary))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| binary.to_path_buf())
}
