//! plinth-agent: the provider agent's daemon and admin CLI, as a library.
//!
//! The binaries (`plinth-agent`, `plinthctl`) only parse arguments, wire concrete
//! backends and map errors to exit codes; everything else lives here. See
//! `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod attestation;
pub mod cli;
pub mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod gpu;
pub mod hardware;
pub mod identity;
pub mod jobs;
pub mod liveness;
pub mod metrics;
pub mod migrations;
pub mod netapi;
pub mod plugins;
pub mod remote;
pub mod store;
pub mod systemd;

pub use plinth_toolbox::error_chain;
