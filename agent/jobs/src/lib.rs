//! plinth-jobs: the sandboxed job engine of the plinth agent.
//!
//! It turns a tenant's [`spec::JobSpec`] into a running OCI container:
//! images are imported from local OCI layouts or archives and unpacked safely
//! into a content-addressed cache ([`image`], [`unpack`]), an OCI runtime
//! bundle is written ([`bundle`]) with the GPUs assigned to the job injected
//! through CDI ([`cdi`]), and the container is started by a small per-job
//! supervisor ([`shim`]) that drives the OCI runtime ([`runtime`]), captures
//! logs with a size cap ([`caplog`]), enforces the deadline and meters the
//! job's cgroup ([`meter`]). [`engine`] ties these together for the agent.
//!
//! This crate knows nothing about the network, SQLite or the daemon; see
//! `docs/jobs.md` for the design.

pub mod bundle;
pub mod caplog;
pub mod cdi;
pub mod engine;
pub mod image;
pub mod meter;
pub mod runtime;
pub mod shim;
pub mod spec;
pub mod unpack;
