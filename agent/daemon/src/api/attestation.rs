//! `/v1/attestation`: evidence bundles and the agent's half of AK enrollment.
//!
//! - `POST /v1/attestation` `{"nonce": HEX}` (16 to 64 bytes): a signed
//!   `plinth-evidence/1` bundle bound to the nonce;
//! - `POST /v1/attestation/enrollment`: the enrollment request (EK, EK certificate,
//!   AK, node key), creating the AK at `attestation.ak_handle` when missing;
//! - `POST /v1/attestation/activation` (body: a `plinth-enroll-challenge/1`): runs
//!   TPM2_ActivateCredential and answers the `plinth-enroll-response/1`.
//!
//! The TPM and devices are used on a blocking thread, one collection at a time.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use plinth_attestation::enroll::EnrollmentChallenge;
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};
use crate::attestation::{AttestationError, AttestationService};

/// Body of `POST /v1/attestation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The verifier's nonce, 16 to 64 bytes as hex.
    pub nonce: String,
}

/// The attestation routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/attestation", post(attest))
        .route("/v1/attestation/enrollment", post(enrollment))
        .route("/v1/attestation/activation", post(activation))
}

fn failure(error: &AttestationError) -> Response {
    let status = match error {
        AttestationError::Nonce { .. } => StatusCode::BAD_REQUEST,
        AttestationError::WrongAk { .. } => StatusCode::CONFLICT,
        AttestationError::TpmOff => StatusCode::SERVICE_UNAVAILABLE,
        AttestationError::Tpm(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(error))
}

/// Runs `work` on a blocking thread with the service.
async fn blocking<T: Serialize + Send + 'static>(
    state: SharedState,
    work: impl FnOnce(&AttestationService) -> Result<T, AttestationError> + Send + 'static,
) -> Response {
    let service = state.attestation.clone();
    match tokio::task::spawn_blocking(move || work(&service)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(error)) => failure(&error),
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("attestation task failed: {error}"),
        ),
    }
}

async fn attest(
    State(state): State<SharedState>,
    request: Result<Json<AttestRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => {
            return error_response(StatusCode::BAD_REQUEST, rejection.body_text());
        }
    };
    let nonce = match hex::decode(request.nonce.trim()) {
        Ok(nonce) => nonce,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("nonce: {:?} is not hex ({error})", request.nonce),
            );
        }
    };
    blocking(state, move |service| service.collect(&nonce)).await
}

async fn enrollment(State(state): State<SharedState>) -> Response {
    blocking(state, AttestationService::enrollment_request).await
}

async fn activation(State(state): State<SharedState>, body: Bytes) -> Response {
    let challenge = match EnrollmentChallenge::parse(&body) {
        Ok(challenge) => challenge,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, crate::error_chain(&error)),
    };
    blocking(state, move |service| service.activate(&challenge)).await
}
