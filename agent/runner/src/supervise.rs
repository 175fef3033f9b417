//! `plinth-runner supervise BUNDLE_DIR`: a job's supervisor, started by the
//! runner (never by the agent) from the order the runner wrote into its own
//! validated bundle directory.
//!
//! It is the `plinth_jobs::shim` supervisor with the runner's runtime, bundle
//! and cgroup. It stays root for what needs root (the OCI runtime, signals,
//! reaping), but its file-system identity (`setfsuid`/`setfsgid`, inherited
//! by its threads, reset to root by `execve` of the runtime) is the job
//! directory's owner, so every file it writes there belongs to the agent and
//! a symlink the agent planted can only reach what the agent could.

use std::path::{Path, PathBuf};

use plinth_jobs::protocol::JobResult;
use plinth_jobs::shim::{self, ShimError};

use crate::server::{ORDER, SupervisorOrder};

/// Errors of the supervisor wrapper.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The order could not be read.
    #[error("cannot read the supervisor order {path}")]
    Order {
        /// The order file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: plinth_jobs::protocol::ProtocolError,
    },
    /// The order file is missing.
    #[error("no supervisor order at {path}")]
    Missing {
        /// The order file.
        path: PathBuf,
    },
    /// The supervisor failed.
    #[error("the supervisor failed")]
    Shim(#[from] ShimError),
}

/// Runs the supervisor of the bundle directory's order and then removes the
/// validated bundle.
pub fn run(bundle_dir: &Path) -> Result<JobResult, SuperviseError> {
    let path = bundle_dir.join(ORDER);
    let order: SupervisorOrder = plinth_jobs::protocol::read_json(&path)
        .map_err(|source| SuperviseError::Order {
            path: path.clone(),
            source,
        })?
        .ok_or(SuperviseError::Missing { path })?;
    // The runner's unit runs with UMask=0077; the OCI runtime (root, after execve)
    // writes the container's pid file into the job directory, which the agent and
    // this supervisor (as the agent) must read. 022 makes it root-owned 0644 in a
    // directory only the agent can enter.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Before any thread exists, so every thread of the supervisor inherits it.
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(order.owner_gid));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(order.owner_uid));
    let result = shim::run_with(&order.job_dir, &order.shim, &order.shim.runtime);
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
    if let Err(err) = std::fs::remove_dir_all(bundle_dir) {
        tracing::warn!(bundle = %bundle_dir.display(), error = %err, "cannot remove the validated bundle");
    }
    Ok(result?)
}
