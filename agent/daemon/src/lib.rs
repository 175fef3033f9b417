//! plinth-agent: the provider agent's daemon and admin CLI, as a library.
//!
//! The binaries (`plinth-agent`, `plinthctl`) only parse arguments, wire concrete
//! backends and map errors to exit codes; everything else lives here. See
//! `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod hardware;
pub mod identity;
pub mod jobs;
pub mod plugins;
pub mod store;
pub mod systemd;

/// Renders an error and its chain of causes on one line: `outer: inner: root`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
