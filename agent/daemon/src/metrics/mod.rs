//! The agent's Prometheus metrics: one registry, rendered on each scrape.
//!
//! [`AgentMetrics`] holds the registry (prometheus-client, the official Rust client).
//! Two kinds of series live on it:
//!
//! - instruments the subsystems update as they work, registered here as clones of the
//!   handles they own: the jobs engine's start latency and receipts appended
//!   ([`crate::jobs::JobMetrics`]), the attestation service's requests and failures
//!   ([`crate::attestation::AttestationMetrics`]), and the API middleware's requests and
//!   durations ([`HttpMetrics`], [`instrument`]);
//! - values read from their source at scrape time ([`collector`]): jobs by state (one
//!   SQL `GROUP BY`), per-plugin counters and latency histograms (the plugin host's
//!   stats), GPU health and drain state, the liveness ledger's head and the
//!   network-quality samples.
//!
//! The registry renders OpenMetrics 1.0; [`render`](AgentMetrics::render) gives it to a
//! scraper that asks for it (`Accept: application/openmetrics-text`) and the Prometheus
//! text format 0.0.4 to everyone else ([`to_prometheus_text`]: counters' `# HELP` and
//! `# TYPE` carry the `_total` name, no `# UNIT`, no `# EOF`), which is what `promtool
//! check metrics` and older scrapers read.
//!
//! **The network API attaches the same middleware**: `metrics::instrument(router,
//! state.metrics.http(), "network")` labels its requests `api="network"`.
//!
//! Served by [`router`] (`GET /metrics` on `[metrics] listen`, plain HTTP) and by the
//! admin socket's `GET /v1/metrics` (`api::net`). See docs/metrics.md.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

pub mod collector;
pub mod http;

pub use self::http::{HttpMetrics, instrument};

/// Errors of the metrics module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Encoding the registry failed (a formatter error; a bug, not bad input).
    #[error("cannot encode the metrics registry")]
    Encode(#[from] std::fmt::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr} (metrics.listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The scrape's blocking task did not finish.
    #[error("the scrape task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics 1.0 text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// Prometheus text 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl ExpositionFormat {
    /// OpenMetrics when the `Accept` header names it, else Prometheus text.
    pub fn negotiate(headers: &HeaderMap) -> ExpositionFormat {
        let accepts_openmetrics = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("application/openmetrics-text"));
        if accepts_openmetrics {
            ExpositionFormat::OpenMetrics
        } else {
            ExpositionFormat::Prometheus
        }
    }

    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::Prometheus => PROMETHEUS_TEXT,
            ExpositionFormat::OpenMetrics => OPENMETRICS_TEXT,
        }
    }
}

/// Where the scrape-time values come from; `None` for a subsystem this agent does not
/// run (its families are still described, with no samples or zeros).
#[derive(Debug, Default, Clone)]
pub struct MetricsSources {
    /// The job manager (jobs by state; its start latency and receipts instruments).
    pub jobs: Option<Arc<crate::jobs::JobManager>>,
    /// The policy plugins.
    pub plugins: Option<Arc<crate::plugins::PluginService>>,
    /// The attestation service (its requests and failures).
    pub attestation: Option<Arc<crate::attestation::AttestationService>>,
    /// The GPUs.
    pub gpus: Option<Arc<crate::gpu::GpuService>>,
    /// The liveness ledger.
    pub liveness: Option<Arc<crate::liveness::LivenessService>>,
    /// Network-quality measurements.
    pub net: Option<Arc<crate::liveness::net::NetService>>,
}

/// The agent's registry and the API middleware's instruments.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    http: HttpMetrics,
}

impl AgentMetrics {
    /// The registry over `sources`.
    pub fn new(sources: MetricsSources) -> AgentMetrics {
        let mut registry = Registry::default();
        let job_metrics = sources
            .jobs
            .as_ref()
            .map(|jobs| jobs.metrics().clone())
            .unwrap_or_default();
        registry.register(
            "plinth_job_start_latency_seconds",
            "Time from a job's submission to its supervisor being started",
            job_metrics.start_latency,
        );
        registry.register(
            "plinth_receipts_appended",
            "Usage receipts (interim and final) appended to the ledger by this run",
            job_metrics.receipts_appended,
        );
        let http = HttpMetrics::default();
        http.register(&mut registry);
        registry.register_collector(Box::new(collector::ScrapeCollector::new(sources)));
        AgentMetrics { registry, http }
    }

    /// The API middleware's instruments, for [`instrument`].
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The whole exposition in `format`. Reads the store (jobs, drains, the ledger's
    /// head): call it on a blocking thread.
    pub fn render(&self, format: ExpositionFormat) -> Result<String, MetricsError> {
        let mut openmetrics = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut openmetrics, &self.registry)?;
        Ok(match format {
            ExpositionFormat::OpenMetrics => openmetrics,
            ExpositionFormat::Prometheus => to_prometheus_text(&openmetrics),
        })
    }
}

/// OpenMetrics text as Prometheus text 0.0.4: a counter family's `# HELP` and `# TYPE`
/// take its samples' `_total` name, `# UNIT` and `# EOF` lines are dropped; samples are
/// the same in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    let mut pending_help: Option<&str> = None;
    let flush = |out: &mut String, help: Option<&str>| {
        if let Some(help) = help {
            out.push_str(help);
            out.push('\n');
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            flush(&mut out, pending_help.take());
            pending_help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            if let Some(help) = pending_help.take() {
                let text = help
                    .strip_prefix("# HELP ")
                    .and_then(|help| help.strip_prefix(name))
                    .unwrap_or("");
                out.push_str(&format!("# HELP {name}_total{text}\n"));
            }
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        flush(&mut out, pending_help.take());
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut out, pending_help.take());
    out
}

/// Renders on a blocking thread and answers in the format `headers` ask for.
pub async fn scrape(metrics: Arc<AgentMetrics>, headers: &HeaderMap) -> Response {
    let format = ExpositionFormat::negotiate(headers);
    let rendered = tokio::task::spawn_blocking(move || metrics.render(format))
        .await
        .map_err(MetricsError::from)
        .and_then(|result| result);
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(err) => {
            tracing::error!(error = %crate::error_chain(&err), "metrics scrape failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", crate::error_chain(&err)),
            )
                .into_response()
        }
    }
}

async fn metrics_endpoint(
    State(metrics): State<Arc<AgentMetrics>>,
    headers: HeaderMap,
) -> Response {
    scrape(metrics, &headers).await
}

/// The metrics listener's router: `GET /metrics` (its own requests labelled
/// `api="metrics"`).
pub fn router(metrics: Arc<AgentMetrics>) -> Router {
    let http = metrics.http().clone();
    instrument(
        Router::new()
            .route("/metrics", get(metrics_endpoint))
            .with_state(metrics),
        &http,
        "metrics",
    )
}

/// Binds `[metrics] listen`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

#[cfg(test)]
mod tests;
