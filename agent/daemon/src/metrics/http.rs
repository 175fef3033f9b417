//! API request metrics as a middleware layer any axum router can use.
//!
//! [`instrument`] wraps every route of a router (and its fallback): each request counts
//! once in `plinth_api_requests_total{api, method, route, status}` and is timed in
//! `plinth_api_request_duration_seconds{api, method, route}` (until the answer's head is
//! ready; a streamed body's time is not included). `route` is the route TEMPLATE axum
//! matched (`/v1/jobs/{id}`), never the raw path; requests no route matched are
//! `route="unmatched"`, and methods outside the standard ones are `method="other"`, so
//! the label sets stay bounded whatever clients send.

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The duration histogram's buckets, in seconds: admin calls answer in well under a
/// millisecond, an attestation with a TPM quote takes about a second.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of one request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which API: `admin`, `network`, `metrics`.
    pub api: &'static str,
    /// The HTTP method (`other` outside the standard ones).
    pub method: &'static str,
    /// The matched route template, or `unmatched`.
    pub route: String,
    /// The answer's status code.
    pub status: u16,
}

/// The labels of one duration histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Which API.
    pub api: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    /// The matched route template, or `unmatched`.
    pub route: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The middleware's instruments; clones share the same series.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl HttpMetrics {
    /// Puts both families on `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "plinth_api_requests",
            "API requests answered, by API, method, route template and status code",
            self.requests.clone(),
        );
        registry.register(
            "plinth_api_request_duration_seconds",
            "Time to answer an API request (until the answer's head), by route template",
            self.duration.clone(),
        );
    }

    /// Requests counted so far with exactly these labels (for tests and `plinthctl`).
    pub fn requests(&self, labels: &RequestLabels) -> u64 {
        self.requests.get(labels).map_or(0, |counter| counter.get())
    }

    async fn track(self, api: &'static str, request: Request, next: Next) -> Response {
        let method = method_label(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        let elapsed = started.elapsed().as_secs_f64();
        self.duration
            .get_or_create(&RouteLabels {
                api,
                method,
                route: route.clone(),
            })
            .observe(elapsed);
        self.requests
            .get_or_create(&RequestLabels {
                api,
                method,
                route,
                status: response.status().as_u16(),
            })
            .inc();
        response
    }
}

/// `router` with every route (and the fallback) counted and timed under `api`. Call it
/// on the finished router, after every `route`, `merge` and `fallback`.
pub fn instrument<S>(router: Router<S>, metrics: &HttpMetrics, api: &'static str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let metrics = metrics.clone();
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let metrics = metrics.clone();
            async move { metrics.track(api, request, next).await }
        },
    ))
}
