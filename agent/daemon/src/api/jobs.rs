//! Jobs and receipts endpoints of the admin API.
//!
//! - `POST /v1/jobs` (`SubmitRequest`) -> 201 `{"id": ...}`
//! - `GET /v1/jobs` -> `[JobInfo]`; `GET /v1/jobs/{id}` -> `JobInfo`
//! - `GET /v1/jobs/{id}/logs?stream=stdout|stderr&follow=BOOL` -> text; with `follow`
//!   streamed (chunked) until the job ends
//! - `POST /v1/jobs/{id}/cancel` or `DELETE /v1/jobs/{id}` -> 202
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

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Most log bytes one chunk of a log answer carries.
const LOG_CHUNK: usize = 64 * 1024;

/// Routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show).delete(cancel))
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

/// The answer to a job manager's error: 400 for a bad request, 404 for an unknown job,
/// 409 for one that ended, 500 otherwise.
pub fn jobs_error_response(err: &JobsError) -> Response {
    jobs_error_status(err)
}

fn jobs_error(err: JobsError) -> Response {
    jobs_error_status(&err)
}

fn jobs_error_status(err: &JobsError) -> Response {
    let status = match &err {
        JobsError::Spec(_) | JobsError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
        JobsError::NotFound { .. } => StatusCode::NOT_FOUND,
        JobsError::Ended { .. } | JobsError::State(crate::jobs::JobStateError::Stale { .. }) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(err))
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

/// Which of a job's logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output (the default).
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

/// Query of the logs endpoint.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub stream: Option<LogStream>,
    /// Keep the answer open and send new output until the job ends.
    #[serde(default)]
    pub follow: Option<bool>,
}

impl LogsQuery {
    /// Whether standard error is asked for.
    pub fn stderr(&self) -> bool {
        self.stream == Some(LogStream::Stderr)
    }
}

async fn logs(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(manager) = state.jobs.clone() else {
        return disabled();
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let stderr = query.stderr();
    let job_id = id.clone();
    let lookup = manager.clone();
    if let Err(response) = blocking(move || lookup.get(&job_id)).await {
        return *response;
    }
    match manager.log_file(&id, stderr) {
        Ok(path) => log_answer(manager, id, path, query.follow.unwrap_or(false)),
        Err(err) => jobs_error(err),
    }
}

/// A job's log as a streamed text answer, from its start; with `follow`, new output is
/// sent as it is written until the job ends (and the log is read to its end).
pub fn log_answer(
    manager: std::sync::Arc<crate::jobs::JobManager>,
    id: String,
    path: std::path::PathBuf,
    follow: bool,
) -> Response {
    let stream = futures_util::stream::unfold((0u64, false), move |(offset, failed)| {
        let manager = manager.clone();
        let path = path.clone();
        let id = id.clone();
        async move {
            if failed {
                return None;
            }
            loop {
                // Read the job's state before the file: output written before it ended
                // is then always read before the answer ends.
                let ended = !follow || manager.get(&id).is_ok_and(|job| job.state.is_terminal());
                match read_from(&path, offset).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        let next = offset + chunk.len() as u64;
                        return Some((Ok(axum::body::Bytes::from(chunk)), (next, false)));
                    }
                    Ok(_) if ended => return None,
                    Ok(_) => tokio::time::sleep(FOLLOW_POLL).await,
                    Err(err) => return Some((Err::<axum::body::Bytes, _>(err), (offset, true))),
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Up to [`LOG_CHUNK`] bytes of `path` from `offset` (nothing when it does not exist yet).
async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buffer = vec![0; LOG_CHUNK];
    let read = file.read(&mut buffer).await?;
    buffer.truncate(read);
    Ok(buffer)
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
