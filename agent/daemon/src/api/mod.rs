//! The local admin API: HTTP/JSON over a Unix socket.
//!
//! Access control is the socket's file mode and group (`api.socket_mode`,
//! `api.socket_group`): whoever can connect is an administrator. Every route answers
//! JSON; errors are `{"error": "..."}` with a 4xx status for anything the caller did
//! wrong. Each area of the API lives in its own submodule that contributes a `routes()`
//! router merged here.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::net::UnixListener;

use crate::config::LoadedConfig;
use crate::hardware::Hardware;
use crate::identity::NodeIdentity;
use crate::store::{PreviousRun, Store};

pub mod attestation;
pub mod gpus;
pub mod images;
pub mod jobs;
pub mod liveness;
pub mod net;
pub mod plugins;
pub mod status;

/// Errors setting up the admin socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket's directory could not be created.
    #[error("cannot create socket directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Another agent already serves this socket.
    #[error("another agent is already listening on {path}")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits where the socket should be.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding or configuring the socket failed.
    #[error("cannot {action} admin socket {path}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configured socket group does not exist.
    #[error("socket group {group:?} (api.socket_group) does not exist")]
    NoSuchGroup {
        /// The group name.
        group: String,
    },
}

/// Everything request handlers may read, shared by all routes.
#[derive(Debug)]
pub struct AgentState {
    /// The configuration the agent runs with.
    pub config: LoadedConfig,
    /// The durable store.
    pub store: Arc<Store>,
    /// The node identity.
    pub identity: Arc<NodeIdentity>,
    /// What hardware was detected at start.
    pub hardware: Hardware,
    /// When the agent started (monotonic, for uptime).
    pub started: std::time::Instant,
    /// When the agent started (wall clock, RFC 3339).
    pub started_at: String,
    /// How the previous run ended.
    pub previous_run: PreviousRun,
    /// The job manager; `None` when jobs are disabled on this host.
    pub jobs: Option<Arc<crate::jobs::JobManager>>,
    /// Policy plugins; `None` when the plugin host could not start.
    pub plugins: Option<Arc<crate::plugins::PluginService>>,
    /// Attestation: claims, collectors, bundles, enrollment.
    pub attestation: Arc<crate::attestation::AttestationService>,
    /// GPUs: inventory, health, drain, the capacity challenge.
    pub gpus: Arc<crate::gpu::GpuService>,
    /// The liveness ledger; `None` when it could not be started.
    pub liveness: Option<Arc<crate::liveness::LivenessService>>,
    /// Network-quality measurements; `None` when `[liveness.net]` sets neither an
    /// endpoint nor peers.
    pub net: Option<Arc<crate::liveness::net::NetService>>,
    /// The agent's Prometheus registry (and the API middleware's instruments).
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// The network API, once it serves (`api.listen`).
    pub network_api: std::sync::OnceLock<crate::netapi::NetApiStatus>,
}

/// Shared handler state.
pub type SharedState = Arc<AgentState>;

/// Builds the admin API router, its requests counted by the metrics middleware
/// (`api="admin"`).
pub fn router(state: SharedState) -> Router {
    let http = state.metrics.http().clone();
    let router = routes().fallback(not_found).with_state(state);
    crate::metrics::instrument(router, &http, "admin")
}

/// Every admin route, without fallback or state: what the Unix socket serves, and what the
/// network API serves to clients of the `admin` role.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .merge(status::routes())
        .merge(jobs::routes())
        .merge(images::routes())
        .merge(plugins::routes())
        .merge(attestation::routes())
        .merge(gpus::routes())
        .merge(liveness::routes())
        .merge(net::routes())
}

/// The answer to a path no route serves.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field or value.
    pub error: String,
}

/// Builds a JSON error answer.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Creates the admin socket with restrictive permissions.
///
/// An exclusive lock on `<socket>.lock` makes one agent the owner of the socket: when
/// the lock is held by another process the socket is in use; otherwise a socket left by
/// a crashed agent is stale and replaced. A non-socket file at the path is an error.
pub fn bind_admin_socket(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<AdminSocket, ApiError> {
    let socket_error = |action| {
        move |source| ApiError::Socket {
            action,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // The lock, not a connection probe, decides whether another agent owns the socket:
    // a probe can reach a dying agent whose listener is not closed yet.
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| ApiError::Socket {
            action: "open the lock file of",
            path: path.to_owned(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ApiError::InUse {
                path: path.to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(ApiError::Socket {
                action: "lock",
                path: lock_path,
                source,
            });
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(socket_error("remove stale"))?;
        }
        Ok(_) => {
            return Err(ApiError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(socket_error("inspect")(source)),
    }
    let listener = UnixListener::bind(path).map_err(socket_error("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(socket_error("set the mode of"))?;
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| ApiError::NoSuchGroup {
                group: group.to_owned(),
            })?
            .gid;
        // A socket made by a process whose group is already `group` (the packaged unit's
        // Group=plinth) needs no chown, which the unit's system-call filter denies.
        let current = std::fs::symlink_metadata(path)
            .map_err(socket_error("inspect"))?
            .gid();
        if current != gid.as_raw() {
            nix::unistd::chown(path, None, Some(gid))
                .map_err(|errno| socket_error("set the group of")(io::Error::from(errno)))?;
        }
    }
    Ok(AdminSocket {
        listener,
        _lock: lock,
    })
}

/// The bound admin socket and the lock that makes this agent its only owner; the lock
/// is released when the process ends, however it ends.
#[derive(Debug)]
pub struct AdminSocket {
    /// The listening socket.
    pub listener: UnixListener,
    _lock: std::fs::File,
}
