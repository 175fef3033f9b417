//! `/v1/plugins`: list, install, remove and reload policy plugins.
//!
//! - `GET /v1/plugins`: active plugins with counters;
//! - `POST /v1/plugins` `{"package_base64": "..."}`: verify, self-test, activate and
//!   persist a package (the previous plugin of that kind keeps serving on failure);
//! - `DELETE /v1/plugins/{kind}`: deactivate and delete (built-in policy takes over);
//! - `POST /v1/plugins/reload`: reload the plugin directory (as SIGHUP does).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use plinth_plugin_host::{PluginInfo, PluginKind};
use serde::{Deserialize, Serialize};

use super::{SharedState, error_response};

/// Body of `POST /v1/plugins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallRequest {
    /// The `.plinthpkg` file, base64 (standard alphabet).
    pub package_base64: String,
}

/// Answer of `DELETE /v1/plugins/{kind}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoveResponse {
    /// The plugin that was active, if any.
    pub removed: Option<PluginInfo>,
}

/// Largest install request: a package of the largest wasm the package format allows
/// (64 MiB), base64-encoded (4/3) inside the JSON body, plus the manifest and the
/// signature. A JavaScript plugin is about 12 MB of wasm (the engine); axum's default
/// limit of 2 MiB would refuse it.
pub const MAX_INSTALL_BODY_BYTES: usize = ((plinth_plugin_host::package::MAX_WASM_BYTES as usize
    + plinth_plugin_host::package::MAX_MANIFEST_BYTES
    + 1024)
    / 3
    + 1)
    * 4
    + 1024;

/// The plugin routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/v1/plugins",
            get(list)
                .post(install)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_INSTALL_BODY_BYTES)),
        )
        .route("/v1/plugins/reload", post(reload))
        .route("/v1/plugins/{kind}", delete(remove))
}

fn unavailable() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "plugin support is not running on this agent",
    )
}

fn internal(message: String) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, message)
}

async fn list(State(state): State<SharedState>) -> Response {
    match &state.plugins {
        Some(service) => Json(service.list()).into_response(),
        None => unavailable(),
    }
}

async fn install(
    State(state): State<SharedState>,
    Json(request): Json<InstallRequest>,
) -> Response {
    let Some(service) = state.plugins.clone() else {
        return unavailable();
    };
    let bytes =
        match base64::engine::general_purpose::STANDARD.decode(request.package_base64.trim()) {
            Ok(bytes) => bytes,
            Err(error) => {
                return error_response(StatusCode::BAD_REQUEST, format!("package_base64: {error}"));
            }
        };
    // Compiling and self-testing is CPU work: keep it off the async workers.
    match tokio::task::spawn_blocking(move || service.install(&bytes)).await {
        Ok(Ok(info)) => Json(info).into_response(),
        Ok(Err(error)) => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, crate::error_chain(&error))
        }
        Err(error) => internal(format!("install task failed: {error}")),
    }
}

async fn remove(State(state): State<SharedState>, Path(kind): Path<String>) -> Response {
    let Some(service) = state.plugins.clone() else {
        return unavailable();
    };
    let kind: PluginKind = match kind.parse() {
        Ok(kind) => kind,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error.to_string()),
    };
    match service.remove(kind) {
        Ok(removed) => Json(RemoveResponse { removed }).into_response(),
        Err(error) => internal(crate::error_chain(&error)),
    }
}

async fn reload(State(state): State<SharedState>) -> Response {
    let Some(service) = state.plugins.clone() else {
        return unavailable();
    };
    match tokio::task::spawn_blocking(move || service.load_dir()).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(error)) => internal(crate::error_chain(&error)),
        Err(error) => internal(format!("reload task failed: {error}")),
    }
}
