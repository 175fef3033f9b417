//! Jobs and receipts endpoints of the admin API.
//!
//! - `POST /v1/jobs` (`SubmitRequest`) -> 201 `{"id": ...}`
//! - `GET /v1/jobs` -> `[JobInfo]`; `GET /v1/jobs/{id}` -> `JobInfo`
//! - `GET /v1/jobs/{id}/logs?stream=stdout|stderr` -> text (last 1 MiB)
//! - `POST /v1/jobs/{id}/cancel` -> 202
//! - `GET /v1/receipts` -> the ledger as JSON lines (`application/x-ndjson`)
//!
//! When the agent runs without a job engine (no OCI runtime), every route
//! answers 503 saying so.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{SharedState, error_response};
use crate::jobs::{JobsError, SubmitAnswer, SubmitRequest};

/// Most log bytes returned by one request.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// Routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/receipts", get(receipts))
}

fn disabled() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "jobs are disabled on this agent (no OCI runtime or job engine failed to start)",
    )
}

fn jobs_error(err: JobsError) -> Response {
    let status = match &err {
        JobsError::Spec(_) | JobsError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
        JobsError::NotFound { .. } => StatusCode::NOT_FOUND,
        JobsError::Ended { .. } | JobsError::State(crate::jobs::JobStateError::Stale { .. }) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(&err))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JobsError> + Send + 'static,
) -> Result<T, Box<Response>> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|err| Box::new(jobs_error(err))),
        Err(join) => Err(Box::new(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("job request failed: {join}"),
        ))),
    }
}

async fn submit(State(state): State<SharedState>, body: axum::body::Bytes) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    let request: SubmitRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("invalid job request: {err}"),
            );
        }
    };
    // A drained GPU is withdrawn from scheduling.
    if let Err(reason) = state.gpus.check_devices(&request.gpu_devices) {
        return error_response(StatusCode::CONFLICT, format!("gpu_devices: {reason}"));
    }
    match blocking(move || manager.submit(&request)).await {
        Ok(id) => (StatusCode::CREATED, Json(SubmitAnswer { id })).into_response(),
        Err(response) => *response,
    }
}

async fn list(State(state): State<SharedState>) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    match blocking(move || manager.list()).await {
        Ok(jobs) => Json(jobs).into_response(),
        Err(response) => *response,
    }
}

async fn show(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    match blocking(move || manager.get(&id)).await {
        Ok(job) => Json(job).into_response(),
        Err(response) => *response,
    }
}

/// Query of the logs endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub stream: Option<String>,
}

async fn logs(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    let stderr = match query.stream.as_deref() {
        None | Some("stdout") => false,
        Some("stderr") => true,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("stream {other:?} is not stdout or stderr"),
            );
        }
    };
    match blocking(move || manager.logs(&id, stderr, MAX_LOG_BYTES)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(response) => *response,
    }
}

async fn cancel(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    let answer_id = id.clone();
    match blocking(move || manager.cancel(&id)).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(SubmitAnswer { id: answer_id })).into_response(),
        Err(response) => *response,
    }
}

async fn receipts(State(state): State<SharedState>) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    match blocking(move || manager.export_receipts()).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response(),
        Err(response) => *response,
    }
}
