//! The network API (issue #17): HTTP/JSON over mutual TLS for the network's marketplaces
//! and checkers. This module holds its building blocks so far: the node certificate and
//! the TLS listener ([`tls`]), client pinning, roles and rate limits ([`auth`]), signed
//! quotes, lease checks and GPU-assignment checks ([`quotes`]), and the tables of quotes
//! and leases ([`store`]). The HTTP routes and their wiring into the daemon are not built
//! yet (see docs/api.md, "Status").

pub mod auth;
pub mod quotes;
pub mod store;
pub mod tls;

/// Errors setting up the network API.
#[derive(Debug, thiserror::Error)]
pub enum NetApiError {
    /// The node certificate could not be built.
    #[error("cannot build the node's TLS certificate")]
    Cert(#[source] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("cannot configure TLS for the network API")]
    Tls(#[source] rustls::Error),
}
