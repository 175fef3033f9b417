//! Quote latency: the example pricing plugin on a warm instance and on a fresh instance,
//! next to (a) the same pricing logic as a native Rust function and (b) Akash-style
//! pricing, a shell script started per quote that reads the request as JSON on stdin.
//!
//! Run with `cargo bench -p plinth-plugin-host --bench quote`; prints p50/p99 per series
//! and a JSON line. A custom harness (not criterion) because the numbers that matter are
//! tail percentiles of single calls, which criterion does not report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../examples/pricing/src/logic.rs"]
#[allow(dead_code)]
mod logic;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use plinth_plugin_host::tools::Percentiles;
use plinth_plugin_host::{
    Gpu, HostConfig, HostState, JobRequest, Limits, PluginHost, PluginKind, PluginSpec,
    PriceDecision, PricingState, Quote, summarize,
};

/// The example pricing plugin, built from source by the shared test helper.
fn build_pricing_example() -> Option<Vec<u8>> {
    let path = plinth_tests::example_plugin("plinth_example_pricing").unwrap()?;
    std::fs::read(path).ok()
}

fn inputs() -> (JobRequest, HostState) {
    let n_gpus: u32 = std::env::var("PLINTH_BENCH_GPUS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8);
    let gpus = (0..n_gpus)
        .map(|index| Gpu {
            index,
            uuid: if std::env::var_os("PLINTH_BENCH_NO_UUID").is_some() {
                String::new()
            } else {
                format!("GPU-{index:08x}-1111-2222-3333-444455556666")
            },
            model: "NVIDIA H100 80GB HBM3".to_string(),
            memory_mib: 81_559,
            numa_node: index / 4,
            nvlink_domain: index / 4,
            utilisation_pct: 0,
            drained: false,
            allocated: index == 0,
        })
        .collect();
    let request = JobRequest {
        request_id: "req-1".to_string(),
        tenant: "tenant-a".to_string(),
        gpu_count: 2,
        gpu_model: Some("h100".to_string()),
        min_gpu_memory_mib: 40_000,
        duration_s: 7200,
        max_price_micros: None,
    };
    (
        request,
        HostState {
            gpus,
            running_jobs: 1,
            utilisation_pct: 80,
        },
    )
}

/// The plugin's logic called natively, including the same conversions the plugin does.
fn native_price(
    config: &logic::PricingConfig,
    request: &JobRequest,
    state: &PricingState,
) -> PriceDecision {
    let classes: Vec<logic::ClassView<'_>> = state
        .classes
        .iter()
        .map(|class| logic::ClassView {
            model: &class.model,
            memory_mib: class.memory_mib,
            free: class.free,
        })
        .collect();
    let view = logic::RequestView {
        gpu_count: request.gpu_count,
        gpu_model: request.gpu_model.as_deref(),
        min_gpu_memory_mib: request.min_gpu_memory_mib,
        duration_s: request.duration_s,
        max_price_micros: request.max_price_micros,
    };
    match logic::price(config, &view, &classes, state.utilisation_pct).unwrap() {
        logic::Decision::Offer(offer) => PriceDecision::Offer(Quote {
            price_micros: offer.price_micros,
            currency: config.currency.clone(),
            billable_s: offer.billable_s,
            gpu_hour_micros: offer.gpu_hour_micros,
        }),
        logic::Decision::Refuse(reason) => PriceDecision::Refuse(reason),
    }
}

fn series(iterations: usize, mut call: impl FnMut()) -> Percentiles {
    for _ in 0..(iterations / 10).max(1) {
        call();
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        call();
        samples.push(started.elapsed().as_nanos() as u64);
    }
    Percentiles::of(&mut samples)
}

fn print(name: &str, percentiles: &Percentiles) {
    println!(
        "{name:<28} n={:<7} p50={:>10.3} us  p99={:>10.3} us  mean={:>10.3} us",
        percentiles.samples,
        percentiles.p50_ns as f64 / 1000.0,
        percentiles.p99_ns as f64 / 1000.0,
        percentiles.mean_ns as f64 / 1000.0
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let Some(wasm) = build_pricing_example() else {
        return;
    };
    let host = PluginHost::new(HostConfig {
        pool_instances: 32,
        ..HostConfig::default()
    })
    .unwrap();
    let spec = PluginSpec {
        name: "example-pricing".to_string(),
        version: "bench".to_string(),
        kind: PluginKind::Pricing,
        declared_wit: None,
        limits: Limits::default(),
        config: BTreeMap::new(),
        signer: None,
    };
    let plugin = host.load_component(spec, &wasm).unwrap();
    let (request, host_state) = inputs();
    // The agent summarises the host state when GPUs change, not per quote.
    let state = summarize(&host_state);

    let native_config = logic::PricingConfig::from_lookup(&[], |_| None).unwrap();
    let expected = native_price(&native_config, &request, &state);
    assert_eq!(
        plugin.price(&request, &state).unwrap(),
        expected,
        "plugin and native logic disagree"
    );
    let PriceDecision::Offer(expected_quote) = &expected else {
        panic!("bench input must be priced")
    };

    // PLINTH_BENCH_PROFILE=warm|fresh: only spin that path for 3 s (for `perf record`).
    if let Ok(path) = std::env::var("PLINTH_BENCH_PROFILE") {
        let started = Instant::now();
        while started.elapsed().as_secs() < 3 {
            let answer = if path == "fresh" {
                plugin.price_fresh(&request, &state)
            } else {
                plugin.price(&request, &state)
            };
            std::hint::black_box(answer.unwrap());
        }
        return;
    }
    let native = series(200_000, || {
        std::hint::black_box(native_price(
            &native_config,
            std::hint::black_box(&request),
            &state,
        ));
    });
    let warm = series(50_000, || {
        std::hint::black_box(
            plugin
                .price(std::hint::black_box(&request), &state)
                .unwrap(),
        );
    });
    let fresh = series(10_000, || {
        std::hint::black_box(
            plugin
                .price_fresh(std::hint::black_box(&request), &state)
                .unwrap(),
        );
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/akash_quote.sh");
    let request_json =
        serde_json::to_vec(&serde_json::json!({ "request": &request, "state": &host_state }))
            .unwrap();
    let run_script = || -> String {
        let mut child = Command::new("sh")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&request_json)
            .unwrap();
        let output = child.wait_with_output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let answer = run_script();
    assert!(
        answer.contains(&format!("\"price_micros\":{}", expected_quote.price_micros)),
        "script disagrees: {answer}"
    );
    let process = series(500, || {
        std::hint::black_box(run_script());
    });

    println!(
        "quote latency, example pricing plugin ({} GPUs in host state)",
        host_state.gpus.len()
    );
    print("native rust function", &native);
    print("wasm plugin, warm instance", &warm);
    print("wasm plugin, fresh instance", &fresh);
    print("process per quote (sh)", &process);
    println!(
        "speed-up vs process per quote at p99: warm {:.0}x, fresh {:.0}x",
        process.p99_ns as f64 / warm.p99_ns.max(1) as f64,
        process.p99_ns as f64 / fresh.p99_ns.max(1) as f64
    );
    println!(
        "{}",
        serde_json::json!({
            "native": native, "warm": warm, "fresh": fresh, "process_per_quote": process,
            "stats": plugin.stats(),
        })
    );
}
