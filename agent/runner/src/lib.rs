//! plinth-runner: the small privileged helper of the plinth agent (DESIGN.md,
//! "Privileges"; docs/packaging.md).
//!
//! The agent runs unprivileged as user `plinth`; what needs root — creating a
//! job's cgroup, starting, signalling and deleting its container, cleaning up
//! after it — is asked of this process over a Unix socket that only the
//! agent's group can reach ([`server`]). The runner trusts nothing the agent
//! wrote: it checks the peer's credentials (`SO_PEERCRED`), the job directory
//! (a real directory under the state directory, owned by the agent), and
//! re-validates the bundle's `config.json` ([`validate`]: no capabilities, no
//! host namespaces, only CDI devices from its own spec directories, mounts
//! only from an allow-list, rootfs from the image cache), and refuses with a
//! logged reason. The validated spec is re-serialised into a bundle directory
//! the agent cannot write, and the job's supervisor ([`supervise`], the
//! `plinth_jobs::shim` code) runs as a child of the runner, writing the job
//! directory's files with the agent's file-system identity.

pub mod cli;
pub mod config;
pub mod server;
pub mod supervise;
pub mod validate;
