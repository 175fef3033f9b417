//! Liveness endpoints of the admin API.
//!
//! - `POST /v1/liveness/probe` `{"nonce": "<hex, 16 to 64 bytes>"}` -> a signed
//!   `plinth-liveness-probe/1` answer; 400 for a bad nonce, 409 for a nonce already
//!   waiting, 429 when 64 probes already wait for the next entry.
//! - `GET /v1/liveness/export?from=MS&to=MS` -> the ledger as JSON lines
//!   (`application/x-ndjson`), the entries written between `from` and `to` (Unix ms).
//!
//! The checker-facing network API will serve the same probe under the `checker` role.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};
use crate::liveness::LivenessError;

/// Routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/liveness/probe", post(probe))
        .route("/v1/liveness/export", get(export))
}

/// The body of `POST /v1/liveness/probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The checker's nonce, lowercase hex, 16 to 64 bytes.
    pub nonce: String,
}

/// The query of `GET /v1/liveness/export`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Earliest entry time, Unix ms.
    pub from: Option<u64>,
    /// Latest entry time, Unix ms.
    pub to: Option<u64>,
}

fn disabled() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "the liveness ledger is not running on this agent (see the agent's log)",
    )
}

fn liveness_error(err: LivenessError) -> Response {
    let status = match &err {
        LivenessError::BadNonce { .. } => StatusCode::BAD_REQUEST,
        LivenessError::DuplicateNonce { .. } => StatusCode::CONFLICT,
        LivenessError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(&err))
}

async fn probe(
    State(state): State<SharedState>,
    request: Result<Json<ProbeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return error_response(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let Some(service) = state.liveness.clone() else {
        return disabled();
    };
    match tokio::task::spawn_blocking(move || service.probe(&request.nonce)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(err)) => liveness_error(err),
        Err(join) => error_response(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}

async fn export(State(state): State<SharedState>, Query(query): Query<ExportQuery>) -> Response {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || crate::liveness::export(&store, query.from, query.to))
        .await
    {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response(),
        Ok(Err(err)) => liveness_error(err),
        Err(join) => error_response(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}
