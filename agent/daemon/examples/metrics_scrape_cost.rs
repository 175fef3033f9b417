//! The cost of one metrics scrape: `AgentMetrics::render` for a host with eight GPUs
//! (the labelled recording NVML **test double**, feature `test-doubles`) and the admin
//! API's series after requests on 20 routes with 3 status codes each, timed over 1,000
//! renders in each format; prints the mean time and the text's size.
//!
//! `cargo run -p plinth-agent --features test-doubles --example metrics_scrape_cost [--release]`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use plinth_agent::gpu::double::RecordingNvml;
use plinth_agent::gpu::{GpuService, GpuSettings};
use plinth_agent::metrics::{AgentMetrics, ExpositionFormat, MetricsSources, instrument};
use tower::ServiceExt;

const N_RENDERS: u32 = 1_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        plinth_agent::store::Store::open(
            &dir.path().join("plinth.db"),
            plinth_agent::migrations::MIGRATIONS,
        )
        .unwrap(),
    );
    let gpus = GpuService::start(
        Ok(Arc::new(RecordingNvml::with_gpus(8))),
        store,
        GpuSettings::default(),
    );
    gpus.poll_once();
    let metrics = Arc::new(AgentMetrics::new(MetricsSources {
        gpus: Some(gpus.clone()),
        ..MetricsSources::default()
    }));
    let mut router = Router::new();
    for route_idx in 0..20 {
        router = router.route(
            &format!("/v1/area{route_idx}/{{id}}"),
            get(|| async { StatusCode::OK }),
        );
    }
    let router = instrument(router, metrics.http(), "admin");
    for route_idx in 0..20 {
        for id in ["a", "b", "c"] {
            let request = Request::builder()
                .uri(format!("/v1/area{route_idx}/{id}"))
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let request = Request::builder()
            .method("POST")
            .uri(format!("/v1/area{route_idx}/x"))
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap();
    }
    for format in [ExpositionFormat::Prometheus, ExpositionFormat::OpenMetrics] {
        let mut size = 0;
        let started = Instant::now();
        for _ in 0..N_RENDERS {
            size = metrics.render(format).unwrap().len();
        }
        let mean = started.elapsed() / N_RENDERS;
        println!(
            "{format:?}: {:.1} µs per render, {size} bytes, {} lines",
            mean.as_secs_f64() * 1e6,
            metrics.render(format).unwrap().lines().count()
        );
    }
    gpus.shutdown();
}
