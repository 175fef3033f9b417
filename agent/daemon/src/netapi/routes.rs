//! The market's routes of the network API: quotes priced by the pricing policy, leases
//! admitted by the scheduling policy, the caller's jobs and their logs (streamed),
//! receipts, and the reporting policy's reports. Admins reach every job and receipt;
//! a market client only its own (its configured name is its tenant).
//!
//! Malformed bodies get 400 (not JSON) or 422 naming the field; a quote or lease id
//! reused for a different request 409; the policies' refusals 409 with their reason.

// utoipa's `params(...)` expansion names the parameter types with a path of its own.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use plinth_plugin_host::{PluginKind, ScheduleDecision};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::NetState;
use super::auth::{Caller, Role};
use super::quotes::{
    LeaseAnswer, LeaseRequest, Priced, QuoteError, QuoteRequest, Refusal, SignedQuote,
    check_assignment, check_id, priced, pricing_policy, unsigned_quote,
};
use crate::api::error_response;
use crate::jobs::{JobInfo, QuotedTerms, SubmitRequest};

/// The market's routes.
pub fn routes() -> Router<NetState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/quotes", post(create_quote))
        .route("/v1/leases", post(create_lease))
        .route("/v1/jobs/{id}", get(show_job).delete(cancel_job))
        .route("/v1/jobs/{id}/logs", get(job_logs))
        .route("/v1/receipts", get(receipts))
        .route("/v1/reports", get(reports))
}

/// Errors of the market's handlers, each with its status.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The body is not JSON (400).
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// A field is missing, of the wrong type or unacceptable (422).
    #[error("{field}: {reason}")]
    Field {
        /// The field, dotted.
        field: String,
        /// Why.
        reason: String,
    },
    /// A quote check failed.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such job for this caller (404).
    #[error("no job {0}")]
    NoJob(String),
    /// Jobs are disabled on this agent (503).
    #[error("jobs are disabled on this agent (no OCI runtime or job engine failed to start)")]
    NoJobs,
    /// A policy refused (409), with its reason.
    #[error("{}", .0.error)]
    Refused(Refusal),
    /// The job manager failed.
    #[error(transparent)]
    Jobs(#[from] crate::jobs::JobsError),
    /// The store failed.
    #[error("the quotes and leases tables failed")]
    Store(#[from] rusqlite::Error),
    /// A blocking task failed.
    #[error("request failed: {0}")]
    Task(String),
}

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        let status = match &self {
            RouteError::NotJson(_) => StatusCode::BAD_REQUEST,
            RouteError::Field { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RouteError::Quote(QuoteError::Invalid { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            RouteError::Quote(QuoteError::Foreign { .. }) | RouteError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            RouteError::Quote(QuoteError::Conflict(_)) | RouteError::Refused(_) => {
                StatusCode::CONFLICT
            }
            RouteError::NoJob(_) => StatusCode::NOT_FOUND,
            RouteError::NoJobs => StatusCode::SERVICE_UNAVAILABLE,
            RouteError::Jobs(err) => return crate::api::jobs::jobs_error_response(err),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let RouteError::Refused(refusal) = self {
            return (status, Json(refusal)).into_response();
        }
        error_response(status, crate::error_chain(&self))
    }
}

/// Parses a JSON body: 400 when it is not JSON, 422 naming the field otherwise.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RouteError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            RouteError::NotJson(inner.to_string())
        } else {
            RouteError::Field {
                field: if path == "." { "body".to_owned() } else { path },
                reason: inner.to_string(),
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|err| RouteError::NotJson(err.to_string()))?;
    Ok(value)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RouteError> + Send + 'static,
) -> Result<T, RouteError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| RouteError::Task(err.to_string()))?
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn sha256_json<T: Serialize>(value: &T) -> Result<String, RouteError> {
    let bytes = serde_json::to_vec(value).map_err(|err| RouteError::Task(err.to_string()))?;
    Ok(super::tls::sha256_hex(&bytes))
}

/// The OpenAPI 3.1 document of the network API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    match super::openapi::document_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// Prices a job request with the pricing policy and answers the quote, signed by the
/// node key. Idempotent by `(client, quote_id)`: the same request answers the same
/// quote; a different one 409.
#[utoipa::path(post, path = "/v1/quotes", tag = "market", request_body = QuoteRequest,
    responses(
        (status = 201, description = "the signed quote", body = SignedQuote),
        (status = 200, description = "the quote issued earlier for this quote_id", body = SignedQuote),
        (status = 400, description = "not JSON", body = crate::api::ErrorBody),
        (status = 403, description = "client_id is not the caller", body = crate::api::ErrorBody),
        (status = 409, description = "quote_id reused for another request, or the policy refused", body = Refusal),
        (status = 422, description = "a field is invalid (named)", body = crate::api::ErrorBody)))]
pub async fn create_quote(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, RouteError> {
    let request: QuoteRequest = parse_body(&body)?;
    if request.client_id != caller.name {
        return Err(RouteError::Forbidden(format!(
            "client_id: {:?} is not the authenticated client {:?}",
            request.client_id, caller.name
        )));
    }
    check_id("quote_id", &request.quote_id)?;
    request.request.validate("request")?;
    blocking(move || quote(&net, &request)).await
}

fn quote(net: &NetState, request: &QuoteRequest) -> Result<Response, RouteError> {
    let agent = &net.agent;
    let request_sha256 = sha256_json(&request.request)?;
    if let Some(stored) = stored_quote(net, &request.client_id, &request.quote_id)? {
        if stored.0 != request_sha256 {
            return Err(QuoteError::Conflict(format!(
                "quote_id: {:?} was already used for a different request",
                request.quote_id
            ))
            .into());
        }
        return Ok(json_text(StatusCode::OK, stored.1));
    }
    let host_state = agent.gpus.host_state();
    let pricing_state = plinth_plugin_host::summarize(&host_state);
    let job_request = request
        .request
        .to_policy(&request.quote_id, &request.client_id);
    let fallback = &agent.config.config.plugins.fallback;
    let built_in = plinth_plugin_host::fallback::pricing_sha256(fallback);
    let (decided, plugin_sha256) = match &agent.plugins {
        Some(plugins) => {
            let active = plugins.policies().active(PluginKind::Pricing);
            let decided = plugins.policies().price(&job_request, &pricing_state);
            (
                decided,
                active.map(|plugin| plugin.info().wasm_sha256.clone()),
            )
        }
        None => (
            plinth_plugin_host::Decided {
                value: plinth_plugin_host::fallback::price(fallback, &job_request, &pricing_state),
                source: plinth_plugin_host::DecisionSource::BuiltIn { plugin_error: None },
            },
            None,
        ),
    };
    let policy = pricing_policy(&decided.source, plugin_sha256, built_in);
    let (offer, policy) = match priced(decided.value, policy) {
        Priced::Offer(offer, policy) => (offer, policy),
        Priced::Refused(reason, policy) => {
            return Err(RouteError::Refused(Refusal {
                error: format!(
                    "the pricing policy ({}) refused the request",
                    policy.name.as_deref().unwrap_or("built-in")
                ),
                reason,
                retry_after_s: None,
            }));
        }
    };
    let mut signed = unsigned_quote(
        request,
        net.node_key.clone(),
        &pricing_state,
        offer,
        policy,
        now_ms(),
        net.quote_ttl_ms,
    )?;
    signed.sign(&agent.identity)?;
    let body = serde_json::to_string(&signed).map_err(QuoteError::Json)?;
    let conn = agent.store.connection();
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO api_quotes (client, quote_id, request_sha256, body, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            request.client_id,
            request.quote_id,
            request_sha256,
            body,
            signed.expires_at_ms as i64
        ],
    )?;
    drop(conn);
    if inserted == 0 {
        // A concurrent request with the same id won: answer what it stored.
        return quote(net, request);
    }
    Ok(json_text(StatusCode::CREATED, body))
}

/// `(request_sha256, body)` of a stored quote.
fn stored_quote(
    net: &NetState,
    client: &str,
    quote_id: &str,
) -> Result<Option<(String, String)>, RouteError> {
    use rusqlite::OptionalExtension;
    Ok(net
        .agent
        .store
        .connection()
        .query_row(
            "SELECT request_sha256, body FROM api_quotes WHERE client = ?1 AND quote_id = ?2",
            rusqlite::params![client, quote_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Leases a quote: checks it (signature, node, client, expiry, unused), lets the
/// scheduling policy admit the job and assign GPUs (checked against the host: a GPU
/// that does not exist, is drained or taken is refused), and starts the job, priced by
/// the quote's terms. Idempotent by `(client, lease_id)`.
#[utoipa::path(post, path = "/v1/leases", tag = "market", request_body = LeaseRequest,
    responses(
        (status = 201, description = "the job started", body = LeaseAnswer),
        (status = 200, description = "the lease made earlier with this lease_id", body = LeaseAnswer),
        (status = 400, description = "not JSON, or the job spec is invalid", body = crate::api::ErrorBody),
        (status = 403, description = "the quote was issued to another client", body = crate::api::ErrorBody),
        (status = 409, description = "lease_id reused, quote already used, or the scheduling policy refused or deferred", body = Refusal),
        (status = 422, description = "a field is invalid: the quote's signature, expiry, node", body = crate::api::ErrorBody),
        (status = 503, description = "jobs are disabled on this host", body = crate::api::ErrorBody)))]
pub async fn create_lease(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, RouteError> {
    let request: LeaseRequest = parse_body(&body)?;
    check_id("lease_id", &request.lease_id)?;
    let request_sha256 = sha256_json(&(&request.quote, &request.spec))?;
    let lock = net.clone();
    let _one_at_a_time = lock.lease_lock.lock().await;
    blocking(move || lease(&net, &caller, &request, &request_sha256)).await
}

fn lease(
    net: &NetState,
    caller: &Caller,
    request: &LeaseRequest,
    request_sha256: &str,
) -> Result<Response, RouteError> {
    use rusqlite::OptionalExtension;
    let agent = &net.agent;
    let stored: Option<(String, String)> = agent
        .store
        .connection()
        .query_row(
            "SELECT request_sha256, answer FROM api_leases WHERE client = ?1 AND lease_id = ?2",
            rusqlite::params![caller.name, request.lease_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((sha256, answer)) = stored {
        if sha256 != request_sha256 {
            return Err(QuoteError::Conflict(format!(
                "lease_id: {:?} was already used for a different lease",
                request.lease_id
            ))
            .into());
        }
        return Ok(json_text(StatusCode::OK, answer));
    }
    let quote = &request.quote;
    quote.check(&net.node_key, &caller.name, now_ms())?;
    let used: Option<Option<String>> = agent
        .store
        .connection()
        .query_row(
            "SELECT lease_id FROM api_quotes WHERE client = ?1 AND quote_id = ?2",
            rusqlite::params![caller.name, quote.quote_id],
            |row| row.get(0),
        )
        .optional()?;
    match used {
        None => {
            return Err(QuoteError::Invalid {
                field: "quote.quote_id".to_owned(),
                reason: format!("quote {:?} was not issued by this agent", quote.quote_id),
            }
            .into());
        }
        Some(Some(lease_id)) => {
            return Err(QuoteError::Conflict(format!(
                "quote.quote_id: quote {:?} was already used by lease {lease_id:?}",
                quote.quote_id
            ))
            .into());
        }
        Some(None) => {}
    }
    let manager = agent.jobs.clone().ok_or(RouteError::NoJobs)?;
    let count = request
        .spec
        .pointer("/gpus/count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if count != u64::from(quote.request.gpu_count) {
        return Err(RouteError::Field {
            field: "spec.gpus.count".to_owned(),
            reason: format!(
                "{count} is not the quote's request.gpu_count {}",
                quote.request.gpu_count
            ),
        });
    }
    let (gpu_devices, scheduled_by) = schedule(net, caller, quote)?;
    let submit = SubmitRequest {
        spec: request.spec.clone(),
        tenant: caller.name.clone(),
        lease_id: request.lease_id.clone(),
        gpu_devices: gpu_devices.clone(),
    };
    let terms = QuotedTerms {
        quote_id: quote.quote_id.clone(),
        gpu_hour_micros: quote.offer.gpu_hour_micros,
        currency: quote.offer.currency.clone(),
        pricing_sha256: quote.pricing.sha256.clone(),
    };
    let job_id = manager.submit_quoted(&submit, Some(&terms))?;
    let answer = LeaseAnswer {
        lease_id: request.lease_id.clone(),
        quote_id: quote.quote_id.clone(),
        job_id: job_id.clone(),
        gpu_devices,
        scheduled_by,
    };
    let text = serde_json::to_string(&answer).map_err(QuoteError::Json)?;
    let mut conn = agent.store.connection();
    let transaction = conn.transaction()?;
    transaction.execute(
        "INSERT INTO api_leases (client, lease_id, quote_id, request_sha256, job_id, answer)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            caller.name,
            request.lease_id,
            quote.quote_id,
            request_sha256,
            job_id,
            text
        ],
    )?;
    transaction.execute(
        "UPDATE api_quotes SET lease_id = ?3 WHERE client = ?1 AND quote_id = ?2",
        rusqlite::params![caller.name, quote.quote_id, request.lease_id],
    )?;
    transaction.commit()?;
    tracing::info!(client = %caller.name, lease = %request.lease_id, quote = %quote.quote_id, job = %job_id, "lease started a job");
    Ok(json_text(StatusCode::CREATED, text))
}

/// Asks the scheduling policy, then checks its answer against the host. Returns the
/// CDI names of the assigned GPUs and who decided.
fn schedule(
    net: &NetState,
    caller: &Caller,
    quote: &SignedQuote,
) -> Result<(Vec<String>, serde_json::Value), RouteError> {
    let agent = &net.agent;
    let host_state = agent.gpus.host_state();
    let job_request = quote.request.to_policy(&quote.quote_id, &caller.name);
    let decided = match &agent.plugins {
        Some(plugins) => plugins.policies().schedule(&job_request, &host_state),
        None => plinth_plugin_host::Decided {
            value: plinth_plugin_host::fallback::schedule(
                &agent.config.config.plugins.fallback,
                &job_request,
                &host_state,
            ),
            source: plinth_plugin_host::DecisionSource::BuiltIn { plugin_error: None },
        },
    };
    let scheduled_by =
        serde_json::to_value(&decided.source).map_err(|err| RouteError::Task(err.to_string()))?;
    let who = match &decided.source {
        plinth_plugin_host::DecisionSource::Plugin { name, .. } => format!("plugin {name}"),
        plinth_plugin_host::DecisionSource::BuiltIn {
            plugin_error: Some(error),
        } => format!("the built-in policy, as the plugin failed: {error}"),
        plinth_plugin_host::DecisionSource::BuiltIn { plugin_error: None } => {
            "the built-in policy".to_owned()
        }
    };
    let indices = match decided.value {
        ScheduleDecision::Admit(indices) => indices,
        ScheduleDecision::Reject(reason) => {
            return Err(RouteError::Refused(Refusal {
                error: format!("the scheduling policy ({who}) rejected the lease"),
                reason,
                retry_after_s: None,
            }));
        }
        ScheduleDecision::Defer(seconds) => {
            return Err(RouteError::Refused(Refusal {
                error: format!("the scheduling policy ({who}) deferred the lease"),
                reason: format!("ask again in {seconds} s"),
                retry_after_s: Some(seconds),
            }));
        }
    };
    let uuids =
        check_assignment(&indices, quote.request.gpu_count, &host_state).map_err(|reason| {
            tracing::warn!(policy = %who, %reason, "refused a scheduling policy's GPU assignment");
            RouteError::Refused(Refusal {
                error: format!("the host refused the assignment of the scheduling policy ({who})"),
                reason,
                retry_after_s: None,
            })
        })?;
    let report = agent.gpus.report();
    let mut devices = Vec::with_capacity(uuids.len());
    for uuid in &uuids {
        let name = report
            .gpus
            .iter()
            .find(|gpu| &gpu.inventory.uuid == uuid)
            .and_then(|gpu| gpu.cdi_names.first().cloned());
        match name {
            Some(name) => devices.push(name),
            None => {
                return Err(RouteError::Refused(Refusal {
                    error: "the assigned GPU has no CDI device".to_owned(),
                    reason: format!(
                        "gpu {uuid} is not named by any CDI spec (run `nvidia-ctk cdi generate`)"
                    ),
                    retry_after_s: None,
                }));
            }
        }
    }
    Ok((devices, scheduled_by))
}

/// The job `id` if the caller may see it: an admin any, a market client its own.
fn own_job(net: &NetState, caller: &Caller, id: &str) -> Result<JobInfo, RouteError> {
    let manager = net.agent.jobs.clone().ok_or(RouteError::NoJobs)?;
    match manager.get(id) {
        Ok(job) if caller.role == Role::Admin || job.tenant == caller.name => Ok(job),
        Ok(_) | Err(crate::jobs::JobsError::NotFound { .. }) => {
            Err(RouteError::NoJob(id.to_owned()))
        }
        Err(err) => Err(err.into()),
    }
}

/// A job: its state, usage, spec and devices.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "market",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 200, description = "the job", content_type = "application/json"),
        (status = 404, description = "no such job of the caller", body = crate::api::ErrorBody)))]
pub async fn show_job(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RouteError> {
    let job = blocking(move || own_job(&net, &caller, &id)).await?;
    Ok(Json(job).into_response())
}

/// Cancels a job (it is stopped, its final receipt written).
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "market",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 202, description = "cancellation started", body = crate::jobs::SubmitAnswer),
        (status = 404, description = "no such job of the caller", body = crate::api::ErrorBody),
        (status = 409, description = "the job has ended", body = crate::api::ErrorBody)))]
pub async fn cancel_job(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, RouteError> {
    blocking(move || {
        own_job(&net, &caller, &id)?;
        let manager = net.agent.jobs.clone().ok_or(RouteError::NoJobs)?;
        manager.cancel(&id)?;
        Ok((StatusCode::ACCEPTED, Json(crate::jobs::SubmitAnswer { id })).into_response())
    })
    .await
}

/// A job's output: the whole log, or with `follow=true` streamed (chunked) until the
/// job ends.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "market",
    params(("id" = String, Path, description = "the job id"), crate::api::jobs::LogsQuery),
    responses(
        (status = 200, description = "the log", content_type = "text/plain"),
        (status = 400, description = "bad query", body = crate::api::ErrorBody),
        (status = 404, description = "no such job of the caller", body = crate::api::ErrorBody)))]
pub async fn job_logs(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<crate::api::jobs::LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RouteError> {
    let Query(query) = query.map_err(|err| RouteError::NotJson(err.body_text()))?;
    let stderr = query.stderr();
    let job_net = net.clone();
    let job_id = id.clone();
    blocking(move || own_job(&job_net, &caller, &job_id)).await?;
    let manager = net.agent.jobs.clone().ok_or(RouteError::NoJobs)?;
    let path = manager.log_file(&id, stderr)?;
    Ok(crate::api::jobs::log_answer(
        manager,
        id,
        path,
        query.follow.unwrap_or(false),
    ))
}

/// The query of `GET /v1/receipts`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReceiptsQuery {
    /// Only receipts with a larger sequence number.
    #[serde(default)]
    pub after: Option<u64>,
}

/// Signed receipts as JSON lines, after `after`: a market client gets its own, each
/// signed by the node key and naming its predecessor's hash; an admin gets the whole
/// ledger, which `plinth-verify receipts` checks as a chain (`--start-seq` for a part).
#[utoipa::path(get, path = "/v1/receipts", tag = "market", params(ReceiptsQuery),
    responses(
        (status = 200, description = "receipts, one JSON object a line", content_type = "application/x-ndjson"),
        (status = 400, description = "bad query", body = crate::api::ErrorBody)))]
pub async fn receipts(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ReceiptsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RouteError> {
    let Query(query) = query.map_err(|err| RouteError::NotJson(err.body_text()))?;
    let after = query.after.unwrap_or(0);
    let bytes = blocking(move || {
        let receipts = caller_receipts(&net, &caller, after)?;
        let mut out = Vec::new();
        for (_, line) in receipts {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response())
}

/// The caller's receipts after `after`, parsed and as stored.
fn caller_receipts(
    net: &NetState,
    caller: &Caller,
    after: u64,
) -> Result<Vec<(plinth_attestation::receipt::Receipt, String)>, RouteError> {
    let conn = net.agent.store.connection();
    let mut statement = conn.prepare("SELECT body FROM receipts WHERE seq > ?1 ORDER BY seq")?;
    let rows = statement.query_map([after.min(i64::MAX as u64) as i64], |row| {
        row.get::<_, String>(0)
    })?;
    let mut out = Vec::new();
    for row in rows {
        let line = row?;
        let receipt: plinth_attestation::receipt::Receipt = serde_json::from_str(&line)
            .map_err(|err| RouteError::Task(format!("stored receipt does not parse: {err}")))?;
        if caller.role == Role::Admin || receipt.tenant == caller.name {
            out.push((receipt, line));
        }
    }
    Ok(out)
}

/// The query of `GET /v1/reports`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportsQuery {
    /// Period start, Unix seconds (default: 24 hours before `to`).
    #[serde(default)]
    pub from: Option<u64>,
    /// Period end, Unix seconds, exclusive (default: now).
    #[serde(default)]
    pub to: Option<u64>,
}

/// One record of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportEntry {
    /// Grouping key chosen by the policy, e.g. the tenant.
    pub key: String,
    /// Period start, Unix seconds.
    pub period_start_s: u64,
    /// Period end, Unix seconds (exclusive).
    pub period_end_s: u64,
    /// Named values, e.g. `gpu-seconds`.
    pub values: BTreeMap<String, u64>,
}

/// The answer of `GET /v1/reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportAnswer {
    /// Period start, Unix seconds.
    pub from: u64,
    /// Period end, Unix seconds (exclusive).
    pub to: u64,
    /// Usage records the policy was given (one per receipt in the period).
    pub usage_records: usize,
    /// Who made the report: `plugin` with name and version, or `built-in`.
    #[schema(value_type = Object)]
    pub reported_by: serde_json::Value,
    /// SHA-256 of the reporting plugin's wasm, when a plugin reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_sha256: Option<String>,
    /// The report.
    pub records: Vec<ReportEntry>,
}

/// The reporting policy's report over the caller's receipts of a period: every receipt
/// whose period starts in `[from, to)` becomes a usage record the policy aggregates.
#[utoipa::path(get, path = "/v1/reports", tag = "market", params(ReportsQuery),
    responses(
        (status = 200, description = "the report", body = ReportAnswer),
        (status = 400, description = "bad query", body = crate::api::ErrorBody),
        (status = 422, description = "from is not before to", body = crate::api::ErrorBody)))]
pub async fn reports(
    State(net): State<NetState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ReportsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RouteError> {
    let Query(query) = query.map_err(|err| RouteError::NotJson(err.body_text()))?;
    let to = query.to.unwrap_or(now_ms() / 1000);
    let from = query.from.unwrap_or(to.saturating_sub(86_400));
    if from >= to {
        return Err(RouteError::Field {
            field: "from".to_owned(),
            reason: format!("{from} is not before to ({to})"),
        });
    }
    let answer = blocking(move || report(&net, &caller, from, to)).await?;
    Ok(Json(answer).into_response())
}

fn report(net: &NetState, caller: &Caller, from: u64, to: u64) -> Result<ReportAnswer, RouteError> {
    let records: Vec<plinth_plugin_host::UsageRecord> = caller_receipts(net, caller, 0)?
        .into_iter()
        .map(|(receipt, _)| receipt)
        .filter(|receipt| {
            let start = receipt.period_start_ms / 1000;
            start >= from && start < to
        })
        .map(|receipt| usage_record(&receipt))
        .collect();
    let (decided, plugin_sha256) = match &net.agent.plugins {
        Some(plugins) => {
            let active = plugins.policies().active(PluginKind::Reporting);
            let decided = plugins.policies().report(&records);
            let sha = match &decided.source {
                plinth_plugin_host::DecisionSource::Plugin { .. } => {
                    active.map(|plugin| plugin.info().wasm_sha256.clone())
                }
                plinth_plugin_host::DecisionSource::BuiltIn { .. } => None,
            };
            (decided, sha)
        }
        None => (
            plinth_plugin_host::Decided {
                value: plinth_plugin_host::fallback::report(&records),
                source: plinth_plugin_host::DecisionSource::BuiltIn { plugin_error: None },
            },
            None,
        ),
    };
    Ok(ReportAnswer {
        from,
        to,
        usage_records: records.len(),
        reported_by: serde_json::to_value(&decided.source)
            .map_err(|err| RouteError::Task(err.to_string()))?,
        plugin_sha256,
        records: decided
            .value
            .into_iter()
            .map(|record| ReportEntry {
                key: record.key,
                period_start_s: record.period_start_s,
                period_end_s: record.period_end_s,
                values: record.values.into_iter().collect(),
            })
            .collect(),
    })
}

/// The reporting policy's usage record of one receipt.
pub fn usage_record(
    receipt: &plinth_attestation::receipt::Receipt,
) -> plinth_plugin_host::UsageRecord {
    let gpu_count = receipt.usage.gpus.as_ref().map_or(0, Vec::len) as u32;
    let wall_ms = receipt.usage.wall_ms.max(1);
    let utilisation_pct = match (receipt.usage.gpu_ms, gpu_count) {
        (Some(gpu_ms), count) if count > 0 => {
            (gpu_ms.saturating_mul(100) / wall_ms.saturating_mul(u64::from(count))).min(100) as u8
        }
        _ => 0,
    };
    plinth_plugin_host::UsageRecord {
        job_id: receipt.job_id.clone(),
        tenant: receipt.tenant.clone(),
        start_s: receipt.period_start_ms / 1000,
        end_s: receipt.period_end_ms.div_ceil(1000),
        gpu_count,
        utilisation_pct,
        charged_micros: receipt.price.amount_micros,
    }
}
