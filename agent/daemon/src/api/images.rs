//! `/v1/images`: the image cache and registry pulls.
//!
//! - `GET /v1/images`: cached images, most recently used first, with their size,
//!   provenance and whether a job that has not ended uses them;
//! - `POST /v1/images/pull` `{"reference": "...", "digest": "sha256:…"?, "tenant": "…"?}`:
//!   pull (or find) an image, with the tenant's signature policy if one is named; answers
//!   when the image is in the cache;
//! - `GET /v1/images/pulls`: the latest progress line of each pull in flight (what
//!   `plinthctl images pull --progress` polls);
//! - `DELETE /v1/images/{image_id}`: remove one image (409 while a job uses it);
//! - `POST /v1/images/prune`: remove every image no job uses.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use plinth_jobs::cache::CachedImage;
use plinth_jobs::image::ImageError;
use plinth_jobs::registry::Pulled;
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};
use crate::jobs::JobManager;

/// Body of `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
    pub reference: String,
    /// A digest the image must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Apply this tenant's signature policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Answer of `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PullAnswer {
    /// The image's id (manifest digest).
    pub image_id: String,
    /// Whether the cache already had it.
    pub cached: bool,
    /// Where it came from.
    pub origin: plinth_jobs::image::ImageOrigin,
    /// Who signed it, when a signature was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<plinth_jobs::signature::VerifiedSigner>,
}

/// Answer of `DELETE /v1/images/{id}` and `POST /v1/images/prune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemovedAnswer {
    /// Ids of the images removed.
    pub removed: Vec<String>,
}

/// The image routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/images", get(list))
        .route("/v1/images/pull", post(pull))
        .route("/v1/images/pulls", get(pulls))
        .route("/v1/images/prune", post(prune))
        .route("/v1/images/{image_id}", delete(remove))
}

/// Progress of the pulls in flight, by reference (one agent per process).
fn in_flight() -> &'static Mutex<BTreeMap<String, String>> {
    static PULLS: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    PULLS.get_or_init(Default::default)
}

fn disabled() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "jobs are disabled on this agent, so it keeps no image cache",
    )
}

fn in_use(jobs: &JobManager) -> HashSet<String> {
    jobs.engine().images_in_use()
}

fn image_error(error: &ImageError) -> Response {
    let status = match error {
        ImageError::InUse { .. } => StatusCode::CONFLICT,
        ImageError::BadDigest { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, crate::error_chain(error))
}

async fn list(State(state): State<SharedState>) -> Response {
    let Some(jobs) = state.jobs.clone() else {
        return disabled();
    };
    let listed: Result<Vec<CachedImage>, ImageError> = jobs.engine().images().list(&in_use(&jobs));
    match listed {
        Ok(images) => Json(images).into_response(),
        Err(error) => image_error(&error),
    }
}

async fn pull(State(state): State<SharedState>, Json(request): Json<PullRequest>) -> Response {
    let Some(jobs) = state.jobs.clone() else {
        return disabled();
    };
    let key = request.reference.clone();
    // The pull blocks (its own small runtime, the unpacker): keep it off the API's workers.
    let pulled = tokio::task::spawn_blocking(move || {
        let result = jobs.engine().pull_image(
            &request.reference,
            request.digest.as_deref(),
            request.tenant.as_deref(),
            &mut |progress| {
                if let Ok(mut pulls) = in_flight().lock() {
                    pulls.insert(request.reference.clone(), progress.to_string());
                }
            },
        );
        if let Ok(mut pulls) = in_flight().lock() {
            pulls.remove(&request.reference);
        }
        result
    })
    .await;
    match pulled {
        Ok(Ok(Pulled {
            image,
            origin,
            signer,
        })) => Json(PullAnswer {
            image_id: image.record.image_id,
            cached: image.cached,
            origin,
            signer,
        })
        .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(reference = %key, error = %crate::error_chain(&error), "image pull refused");
            error_response(StatusCode::UNPROCESSABLE_ENTITY, crate::error_chain(&error))
        }
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pull task failed: {error}"),
        ),
    }
}

async fn pulls() -> Response {
    let pulls = in_flight()
        .lock()
        .map(|pulls| pulls.clone())
        .unwrap_or_default();
    Json(pulls).into_response()
}

async fn remove(State(state): State<SharedState>, Path(image_id): Path<String>) -> Response {
    let Some(jobs) = state.jobs.clone() else {
        return disabled();
    };
    match jobs.engine().images().remove(&image_id, &in_use(&jobs)) {
        Ok(true) => Json(RemovedAnswer {
            removed: vec![image_id],
        })
        .into_response(),
        Ok(false) => error_response(
            StatusCode::NOT_FOUND,
            format!("no image {image_id} in the cache"),
        ),
        Err(error) => image_error(&error),
    }
}

async fn prune(State(state): State<SharedState>) -> Response {
    let Some(jobs) = state.jobs.clone() else {
        return disabled();
    };
    match jobs.engine().images().prune(&in_use(&jobs)) {
        Ok(removed) => Json(RemovedAnswer { removed }).into_response(),
        Err(error) => image_error(&error),
    }
}
