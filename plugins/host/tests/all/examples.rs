//! The example plugins against their fixtures (expected outputs checked in next to them).
//! Set PLINTH_BLESS=1 to rewrite the expected files after an intended change, then
//! review the diff.

use plinth_plugin_host::tools::{self, fixture_config};
use plinth_plugin_host::{HostConfig, PluginHost, PluginKind};

use crate::support::{examples_dir, spec, wasm};

fn check(file: &str, dir: &str, kind: PluginKind) {
    let Some(bytes) = wasm(file) else { return };
    let fixtures = examples_dir().join(dir).join("fixtures");
    let config = fixture_config(&fixtures).unwrap();
    // Deterministic mode: frozen clocks, fuel instead of time, as `plinthctl plugin test`.
    let host = PluginHost::new(HostConfig {
        deterministic: true,
        pool_instances: 8,
        ..HostConfig::default()
    })
    .unwrap();
    let mut plugin_spec = spec(file, kind, &[]);
    plugin_spec.config = config;
    let plugin = host.load_component(plugin_spec, &bytes).unwrap();
    let bless = std::env::var_os("PLINTH_BLESS").is_some();
    let report = tools::run_fixtures(&plugin, &fixtures, bless).unwrap();
    assert!(
        report.cases.len() >= 4,
        "too few fixtures in {}",
        fixtures.display()
    );
    for case in &report.cases {
        assert!(
            case.passed,
            "{file} fixture {}: {}",
            case.name,
            case.diff.clone().unwrap_or_default()
        );
    }
    assert!(report.all_passed());
    assert_eq!(plugin.stats().traps, 0);
}

#[test]
fn pricing_example_matches_fixtures() {
    check("plinth_example_pricing", "pricing", PluginKind::Pricing);
}

#[test]
fn scheduling_example_matches_fixtures() {
    check(
        "plinth_example_scheduling",
        "scheduling",
        PluginKind::Scheduling,
    );
}

#[test]
fn reporting_example_matches_fixtures() {
    check(
        "plinth_example_reporting",
        "reporting",
        PluginKind::Reporting,
    );
}

#[test]
fn fixture_mismatch_is_reported_with_a_diff() {
    let Some(bytes) = wasm("plinth_example_pricing") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let source = examples_dir().join("pricing/fixtures");
    for name in [
        "h100-one-gpu-one-hour.input.json",
        "h100-one-gpu-one-hour.expected.json",
    ] {
        std::fs::copy(source.join(name), temp.path().join(name)).unwrap();
    }
    let expected_path = temp.path().join("h100-one-gpu-one-hour.expected.json");
    let text = std::fs::read_to_string(&expected_path)
        .unwrap()
        .replace("2895000", "1");
    std::fs::write(&expected_path, text).unwrap();
    let host = crate::support::host();
    let plugin = host
        .load_component(spec("pricing", PluginKind::Pricing, &[]), &bytes)
        .unwrap();
    let report = tools::run_fixtures(&plugin, temp.path(), false).unwrap();
    assert!(!report.all_passed());
    let diff = report.cases[0].diff.clone().unwrap();
    assert!(
        diff.starts_with("/Ok/Offer/") && diff.contains("expected 1, got 2895000"),
        "{diff}"
    );
}

#[test]
fn concurrent_calls_share_warm_instances() {
    let host = crate::support::host();
    let Some(plugin) = crate::support::load(
        &host,
        "plinth_example_pricing",
        "shared",
        PluginKind::Pricing,
        &[],
    ) else {
        return;
    };
    let expected = plugin
        .price(
            &crate::support::request(2),
            &crate::support::pricing_state(),
        )
        .unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..100 {
                    let answer = plugin
                        .price(
                            &crate::support::request(2),
                            &crate::support::pricing_state(),
                        )
                        .unwrap();
                    assert_eq!(answer, expected);
                }
            });
        }
    });
    let stats = plugin.stats();
    assert_eq!((stats.calls, stats.ok, stats.traps), (401, 401, 0));
    // Instances are reused: at most one per concurrent caller was ever created.
    assert!(stats.instantiations <= 5, "{stats:?}");
    assert!(stats.p50_ns > 0 && stats.p99_ns >= stats.p50_ns);
}

#[test]
fn bench_reports_wall_clock_and_cpu_series() {
    let host = crate::support::host();
    let Some(plugin) = crate::support::load(
        &host,
        "plinth_example_pricing",
        "bench",
        PluginKind::Pricing,
        &[],
    ) else {
        return;
    };
    let input =
        std::fs::read(examples_dir().join("pricing/fixtures/h100-one-gpu-one-hour.input.json"))
            .unwrap();
    let input: serde_json::Value = serde_json::from_slice(&input).unwrap();
    let report = tools::bench(&plugin, &input, 50).unwrap();
    for (name, series) in [
        ("warm", Some(report.warm)),
        ("fresh", Some(report.fresh)),
        ("warm_cpu", report.warm_cpu),
        ("fresh_cpu", report.fresh_cpu),
    ] {
        let series = series.unwrap_or_else(|| panic!("{name}: no series on Linux"));
        assert_eq!(series.samples, 50, "{name}");
        assert!(
            0 < series.p50_ns && series.p50_ns <= series.p99_ns && series.p99_ns <= series.max_ns,
            "{name}: {series:?}"
        );
    }
    // A fresh instance does strictly more work than a warm call, in CPU time too.
    assert!(report.fresh_cpu.unwrap().mean_ns > report.warm_cpu.unwrap().mean_ns);
    // The JSON form keeps the CPU series, and a report without them still parses.
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["warm_cpu"]["p99_ns"].as_u64().unwrap() > 0);
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("warm_cpu");
    old.as_object_mut().unwrap().remove("fresh_cpu");
    let parsed: tools::BenchReport = serde_json::from_value(old).unwrap();
    assert_eq!(parsed.warm_cpu, None);
}
