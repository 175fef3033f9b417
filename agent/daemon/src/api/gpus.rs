//! `/v1/gpus` and `/v1/challenges`: GPU inventory, health and drain, and the capacity
//! challenge's two rounds.
//!
//! - `GET /v1/gpus`: [`crate::gpu::GpusReport`] (inventory, health, drain state,
//!   counters, CDI names; `cpu_only` says why a host has none);
//! - `POST /v1/gpus/{index}/drain` and `/undrain` `{"reason": TEXT}` (recorded);
//! - `POST /v1/gpus/{index}/burn-in`: a capacity challenge on that GPU's prover; a
//!   drained GPU whose burn-in passes returns to service (answers the transcript);
//! - `POST /v1/challenges` ([`StartChallenge`]): round 1, answers the
//!   `Commitment` once C is computed and committed;
//! - `POST /v1/challenges/{id}/open` (`OpenRequest`): round 2, answers `C·r` and the
//!   opened rows.
//!
//! Malformed requests get 400 naming the field; an unknown GPU or challenge 404; a
//! device that cannot prove 422; too many pending challenges 429. The work runs on
//! blocking threads.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_attestation::challenge::transcript::parse_json;
use plinth_attestation::challenge::{CpuProver, OpenRequest, Prover};
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};
use crate::gpu::GpuError;
use crate::gpu::challenge::{ChallengeApiError, Device, StartChallenge, parse_device};

/// Body of the drain and undrain routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Why (recorded in the drain log).
    pub reason: String,
}

/// Answer of the drain and undrain routes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainAnswer {
    /// The GPU.
    pub index: u32,
    /// Whether the state changed (false: it already was drained, or was not).
    pub changed: bool,
    /// Drained after the request.
    pub drained: bool,
}

/// The routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/gpus", get(list))
        .route("/v1/gpus/{index}/drain", post(drain))
        .route("/v1/gpus/{index}/undrain", post(undrain))
        .route("/v1/gpus/{index}/burn-in", post(burn_in))
        .route("/v1/challenges", post(start_challenge))
        .route("/v1/challenges/{id}/open", post(open_challenge))
}

async fn list(State(state): State<SharedState>) -> Response {
    let gpus = state.gpus.clone();
    match tokio::task::spawn_blocking(move || gpus.report()).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

fn gpu_failure(err: &GpuError) -> Response {
    let status = match err {
        GpuError::NoSuchGpu { .. } => StatusCode::NOT_FOUND,
        GpuError::CpuOnly { .. } | GpuError::BurnIn { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(err))
}

/// The index in the path, or the 400 message.
fn parse_index(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("index: '{text}' is not a GPU index"))
}

/// The non-empty reason of a drain or undrain body, or the 400 message.
fn parse_reason(body: &[u8]) -> Result<String, String> {
    let request: DrainRequest = parse_json(body).map_err(|err| err.to_string())?;
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() {
        return Err("reason: must not be empty (it is recorded)".to_owned());
    }
    Ok(reason)
}

async fn drain(
    State(state): State<SharedState>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    set_drain(state, &index, &body, true).await
}

async fn undrain(
    State(state): State<SharedState>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    set_drain(state, &index, &body, false).await
}

async fn set_drain(state: SharedState, index: &str, body: &[u8], drained: bool) -> Response {
    let (index, reason) =
        match parse_index(index).and_then(|index| Ok((index, parse_reason(body)?))) {
            Ok(parsed) => parsed,
            Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
        };
    let gpus = state.gpus.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        if drained {
            gpus.drain(index, &reason)
        } else {
            gpus.undrain(index, &reason)
        }
    })
    .await;
    match outcome {
        Ok(Ok(changed)) => Json(DrainAnswer {
            index,
            changed,
            drained,
        })
        .into_response(),
        Ok(Err(err)) => gpu_failure(&err),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn burn_in(State(state): State<SharedState>, Path(index): Path<String>) -> Response {
    let index = match parse_index(&index) {
        Ok(index) => index,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let Some(gpu) = state
        .gpus
        .inventory()
        .iter()
        .find(|gpu| gpu.index == index)
        .cloned()
    else {
        return gpu_failure(&GpuError::NoSuchGpu {
            index,
            count: state.gpus.inventory().len(),
        });
    };
    // A burn-in runs on the drained GPU itself, so the drain check of challenges does
    // not apply.
    let prover = match gpu_prover(index, &gpu.name) {
        Ok(prover) => prover,
        Err(err) => return challenge_failure(&err),
    };
    let gpus = state.gpus.clone();
    match tokio::task::spawn_blocking(move || gpus.burn_in(index, prover.as_ref())).await {
        Ok(Ok(transcript)) => Json(transcript).into_response(),
        Ok(Err(err)) => gpu_failure(&err),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

fn challenge_failure(err: &ChallengeApiError) -> Response {
    let status = match err {
        ChallengeApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ChallengeApiError::UnknownId { .. } => StatusCode::NOT_FOUND,
        ChallengeApiError::Busy => StatusCode::TOO_MANY_REQUESTS,
        ChallengeApiError::Prover { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error_response(status, err.to_string())
}

/// The prover a request names, or why it cannot have one.
fn prover_for(state: &SharedState, device: Device) -> Result<Box<dyn Prover>, ChallengeApiError> {
    match device {
        Device::Cpu => Ok(Box::new(CpuProver)),
        Device::Gpu(index) => {
            let gpu = state
                .gpus
                .inventory()
                .iter()
                .find(|gpu| gpu.index == index)
                .cloned()
                .ok_or_else(|| ChallengeApiError::Invalid {
                    field: "device".to_owned(),
                    reason: match state.gpus.cpu_only() {
                        Some(reason) => format!("gpu:{index}: this host runs CPU-only ({reason})"),
                        None => format!("gpu:{index}: no such GPU"),
                    },
                })?;
            if state.gpus.is_drained(&gpu.uuid) {
                return Err(ChallengeApiError::Prover {
                    detail: format!("gpu:{index} is drained; undrain it or run a burn-in"),
                });
            }
            gpu_prover(index, &gpu.name)
        }
    }
}

#[cfg(feature = "nvidia")]
fn gpu_prover(index: u32, model: &str) -> Result<Box<dyn Prover>, ChallengeApiError> {
    crate::gpu::cuda::CudaProver::new(index, model)
        .map(|prover| Box::new(prover) as Box<dyn Prover>)
        .map_err(|err| ChallengeApiError::Prover {
            detail: crate::error_chain(&err),
        })
}

#[cfg(not(feature = "nvidia"))]
fn gpu_prover(index: u32, _model: &str) -> Result<Box<dyn Prover>, ChallengeApiError> {
    Err(ChallengeApiError::Prover {
        detail: format!("gpu:{index}: built without the `nvidia` feature"),
    })
}

async fn start_challenge(State(state): State<SharedState>, body: Bytes) -> Response {
    let start: StartChallenge = match parse_json(&body) {
        Ok(start) => start,
        Err(err) => return challenge_failure(&err.into()),
    };
    let request = start.request();
    if let Err(err) = crate::gpu::challenge::Challenges::validate(&request) {
        return challenge_failure(&err);
    }
    let device = match parse_device(start.device.as_deref().unwrap_or("cpu")) {
        Ok(device) => device,
        Err(err) => return challenge_failure(&err),
    };
    let prover = match prover_for(&state, device) {
        Ok(prover) => prover,
        Err(err) => return challenge_failure(&err),
    };
    let gpus = state.gpus.clone();
    match tokio::task::spawn_blocking(move || gpus.challenges.round1(prover.as_ref(), &request))
        .await
    {
        Ok(Ok(commitment)) => (StatusCode::CREATED, Json(commitment)).into_response(),
        Ok(Err(err)) => challenge_failure(&err),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn open_challenge(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let open: OpenRequest = match parse_json(&body) {
        Ok(open) => open,
        Err(err) => return challenge_failure(&err.into()),
    };
    let gpus = state.gpus.clone();
    match tokio::task::spawn_blocking(move || gpus.challenges.round2(&id, &open)).await {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(err)) => challenge_failure(&err),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}
