//! Unit tests of the registry's rendering and the API middleware.

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::http::RequestLabels;
use super::*;

fn agent_metrics() -> Arc<AgentMetrics> {
    Arc::new(AgentMetrics::new(MetricsSources::default()))
}

#[test]
fn every_family_is_described_without_sources() {
    let text = agent_metrics()
        .render(ExpositionFormat::Prometheus)
        .unwrap();
    for name in [
        "plinth_agent_info",
        "plinth_jobs",
        "plinth_job_start_latency_seconds",
        "plinth_receipts_appended_total",
        "plinth_plugin_calls_total",
        "plinth_plugin_traps_total",
        "plinth_plugin_fallbacks_total",
        "plinth_plugin_call_duration_seconds",
        "plinth_attestation_requests_total",
        "plinth_attestation_failures_total",
        "plinth_gpus",
        "plinth_gpu_drained",
        "plinth_liveness_head_seq",
        "plinth_net_rtt_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("plinth_attestation_requests_total{operation=\"evidence\"} 0\n"));
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert!(!text.contains("{}"), "{text}");
}

#[test]
fn openmetrics_is_served_to_whoever_asks_for_it() {
    let mut headers = HeaderMap::new();
    assert_eq!(
        ExpositionFormat::negotiate(&headers),
        ExpositionFormat::Prometheus
    );
    headers.insert(
        header::ACCEPT,
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        ExpositionFormat::negotiate(&headers),
        ExpositionFormat::OpenMetrics
    );
    let text = agent_metrics()
        .render(ExpositionFormat::OpenMetrics)
        .unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE plinth_receipts_appended counter\n"));
}

#[test]
fn counter_names_take_their_total_suffix_in_prometheus_text() {
    let openmetrics = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total 3\n# HELP b_x X.\n# TYPE b_x gauge\n# UNIT b_x seconds\nb_x 1.0\n# EOF\n";
    assert_eq!(
        to_prometheus_text(openmetrics),
        "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3\n# HELP b_x X.\n# TYPE b_x gauge\nb_x 1.0\n"
    );
}

#[tokio::test]
async fn the_middleware_counts_route_templates_not_paths() {
    let metrics = agent_metrics();
    let router = instrument(
        Router::new()
            .route("/v1/jobs/{id}", get(|| async { "job" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no") }),
        metrics.http(),
        "admin",
    );
    for path in ["/v1/jobs/j1", "/v1/jobs/j2", "/nope/123"] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        router.clone().oneshot(request).await.unwrap();
    }
    let labels = |route: &str, status| RequestLabels {
        api: "admin",
        method: "GET",
        route: route.to_owned(),
        status,
    };
    assert_eq!(metrics.http().requests(&labels("/v1/jobs/{id}", 200)), 2);
    assert_eq!(metrics.http().requests(&labels("unmatched", 404)), 1);
    let text = metrics.render(ExpositionFormat::Prometheus).unwrap();
    assert!(!text.contains("j1"), "{text}");
    assert!(text.contains(
        "plinth_api_request_duration_seconds_count{api=\"admin\",method=\"GET\",route=\"/v1/jobs/{id}\"} 2\n"
    ), "{text}");
}
