//! The network API (issue #17): HTTP/JSON over mutual TLS on `[api] listen`, for the
//! network's marketplaces (role `market`), checkers (`checker`) and remote operators
//! (`admin`).
//!
//! - [`tls`]: the node certificate (its key IS the node key) and the TLS listener;
//! - [`auth`]: pinned clients, roles, the route table of each role, rate limits, and the
//!   gate every request passes (401, 429, 403 before any handler runs);
//! - [`quotes`]: signed quotes, the lease's checks of its quote and of the GPUs the
//!   scheduling policy assigns;
//! - [`routes`]: the market's handlers (quotes, leases, its jobs, receipts, reports);
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' types;
//! - [`store`]: the quotes and leases tables (idempotency by client-supplied id).
//!
//! The router is the market's routes, falling back to every admin route (the same
//! handlers the Unix socket serves), each behind the gate; see docs/api.md.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::Response;
use tokio::sync::watch;

use crate::api::SharedState;

pub mod auth;
pub mod openapi;
pub mod quotes;
pub mod routes;
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
    /// `api.listen` could not be bound.
    #[error("cannot listen on {address} (api.listen)")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What the network API's handlers share: the agent, the pinned clients, the rate limiter.
#[derive(Debug)]
pub struct NetApi {
    /// The agent's state (what the admin routes serve).
    pub agent: SharedState,
    /// The pinned clients of `[[api.clients]]`.
    pub clients: auth::Clients,
    /// The per-client token buckets.
    pub limiter: auth::RateLimiter,
    /// The node key, hex (what quotes are signed by).
    pub node_key: String,
    /// How long a quote is valid, in milliseconds.
    pub quote_ttl_ms: u64,
    /// Largest request body read, in bytes.
    pub max_body_bytes: usize,
    /// Leases are decided one at a time, so a quote cannot be used twice by two
    /// concurrent leases and GPUs cannot be assigned twice.
    pub lease_lock: tokio::sync::Mutex<()>,
}

/// Shared state of the network API's handlers.
pub type NetState = Arc<NetApi>;

impl NetApi {
    /// The network API of `agent`, configured by its `[api]` section.
    pub fn new(agent: SharedState) -> NetState {
        let section = &agent.config.config.api;
        Arc::new(NetApi {
            clients: auth::Clients::from_config(section),
            limiter: auth::RateLimiter::new(section.rate_per_second, section.rate_burst),
            node_key: agent.identity.public_key_hex(),
            quote_ttl_ms: section.quote_ttl_seconds.saturating_mul(1000),
            max_body_bytes: section.max_body_bytes,
            lease_lock: tokio::sync::Mutex::new(()),
            agent,
        })
    }
}

/// The network API's router: the market's routes, then every admin route, each behind
/// the gate, counted under `api="network"`, bodies limited to `api.max_body_bytes`.
pub fn router(net: NetState) -> Router {
    let http = net.agent.metrics.http().clone();
    let gate = axum::middleware::from_fn_with_state(net.clone(), auth::gate);
    let admin = crate::api::routes()
        .fallback(crate::api::not_found)
        .with_state(net.agent.clone())
        .layer(gate.clone());
    let admin = crate::metrics::instrument(admin, &http, "network");
    let market = routes::routes().with_state(net.clone()).layer(gate);
    let market = crate::metrics::instrument(market, &http, "network");
    let limit = net.max_body_bytes;
    market
        .fallback_service(admin)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(json_errors))
}

/// Every error answer in JSON (`{"error": ...}`), also those that axum itself makes
/// (405, a query that does not parse, a body past the limit), so that clients and the
/// OpenAPI document can rely on one error shape.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    let mut answer = crate::api::error_response(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Facts about the running network API, for `plinthctl status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct NetApiStatus {
    /// The bound address.
    pub listen: String,
    /// SHA-256 of the node certificate (DER).
    pub certificate_sha256: String,
    /// Pinned clients.
    pub clients: usize,
}

/// Binds `address` and serves the network API until `shutdown` turns true. Returns what
/// `plinthctl status` shows; the server runs in its own task.
pub async fn serve(
    net: NetState,
    address: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<NetApiStatus, NetApiError> {
    let identity = net.agent.identity.clone();
    let mut names = vec!["localhost".to_owned()];
    if !address.ip().is_unspecified() {
        names.push(address.ip().to_string());
    }
    let certificate = tls::node_certificate(&identity, &names)?;
    let certificate_sha256 = tls::sha256_hex(&certificate);
    let config = tls::server_config(&identity, certificate)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| NetApiError::Bind { address, source })?;
    let listener = tls::TlsListener::new(listener, config)
        .map_err(|source| NetApiError::Bind { address, source })?;
    let local = axum::serve::Listener::local_addr(&listener)
        .map(|peer| peer.address)
        .unwrap_or(address);
    let status = NetApiStatus {
        listen: local.to_string(),
        certificate_sha256,
        clients: net.agent.config.config.api.clients.len(),
    };
    let app = router(net).into_make_service_with_connect_info::<tls::PeerInfo>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    });
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "the network API server failed");
        }
    });
    tracing::info!(address = %local, certificate_sha256 = %status.certificate_sha256, clients = status.clients, "network API serving (mutual TLS)");
    Ok(status)
}
