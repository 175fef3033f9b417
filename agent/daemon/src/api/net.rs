//! Network-quality endpoints of the admin API.
//!
//! - `POST /v1/net/probe` `{"peers": ["name", ...]}` (empty: every configured peer) ->
//!   `{"results": [{"sample": NetSample} | {"error": "..."}]}`; 400 for a peer that
//!   `[liveness.net.peers]` does not list, 503 when no peers are configured.
//! - `GET /v1/metrics` -> the agent's metrics (the same text as the `[metrics] listen`
//!   listener's `GET /metrics`; see `crate::metrics`), network quality included.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use plinth_attestation::liveness::NetSample;
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};
use crate::liveness::net::NetError;

/// Routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/net/probe", post(probe))
        .route("/v1/metrics", get(metrics))
}

/// The body of `POST /v1/net/probe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetProbeRequest {
    /// Peer names from `[liveness.net.peers]`; empty: all of them.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// One peer's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetProbeResult {
    /// The measurement.
    Sample(NetSample),
    /// Why the peer could not be measured.
    Error(String),
}

/// The answer of `POST /v1/net/probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetProbeAnswer {
    /// One result per peer, in the order asked.
    pub results: Vec<NetProbeResult>,
}

async fn probe(State(state): State<SharedState>, Json(request): Json<NetProbeRequest>) -> Response {
    let Some(service) = state.net.clone() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no network-quality peers are configured ([liveness.net.peers])",
        );
    };
    match service.probe(&request.peers).await {
        Ok(results) => {
            if let Some(liveness) = &state.liveness {
                liveness.set_net(service.latest());
            }
            let results = results
                .into_iter()
                .map(|result| match result {
                    Ok(sample) => NetProbeResult::Sample(sample),
                    Err(message) => NetProbeResult::Error(message),
                })
                .collect();
            Json(NetProbeAnswer { results }).into_response()
        }
        Err(err @ NetError::UnknownPeer { .. }) => {
            error_response(StatusCode::BAD_REQUEST, crate::error_chain(&err))
        }
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&err)),
    }
}

async fn metrics(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    crate::metrics::scrape(state.metrics.clone(), &headers).await
}
