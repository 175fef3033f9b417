//! plinth-jobs: the sandboxed job engine of the plinth agent.
//!
//! It turns a tenant's [`spec::JobSpec`] into a running OCI container:
//! images are pulled from registries ([`registry`], with cosign signature
//! checks in [`signature`]) or imported from local OCI layouts or archives, and
//! unpacked safely into a bounded, content-addressed cache ([`image`],
//! [`unpack`], [`cache`]), an OCI runtime
//! bundle is written ([`bundle`]) with the GPUs assigned to the job injected
//! through CDI ([`cdi`]), and the container is started by a small per-job
//! supervisor ([`shim`]) that drives the OCI runtime (the [`runtime`] seam), captures
//! logs with a size cap ([`caplog`]), enforces the deadline and meters the
//! job's cgroup ([`meter`]). [`engine`] ties these together for the agent;
//! the engine and the supervisor share nothing but the job directory files of
//! [`protocol`].
//!
//! This crate knows nothing about the network, SQLite or the daemon; see
//! `docs/jobs.md` for the design.

pub mod bundle;
pub mod cache;
pub mod caplog;
pub mod cdi;
pub mod engine;
pub mod image;
pub mod meter;
pub mod protocol;
pub mod registry;
pub mod runner_client;
pub mod runtime;
pub mod shim;
pub mod signature;
pub mod spec;
pub mod unpack;

/// Serialises this crate's unit tests that spawn child processes against the
/// one that runs a supervisor in-process: a subreaper's `waitpid(-1)` would
/// otherwise reap another test's child.
#[cfg(test)]
pub(crate) static CHILD_PROCESSES: std::sync::Mutex<()> = std::sync::Mutex::new(());
