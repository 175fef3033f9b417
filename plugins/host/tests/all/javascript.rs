//! JavaScript (TypeScript) plugins built from plugins/examples/js with componentize-js:
//! the pricing example answers exactly as the Rust one on every shared fixture, the
//! scheduling and reporting examples pass the Rust examples' fixtures, and hostile JS
//! (a loop, a memory bomb, a thrown error, ...) is contained like hostile Rust.
//! Skipped, with the reason printed, only when Node.js or npm is absent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use plinth_plugin_host::fallback::FallbackConfig;
use plinth_plugin_host::tools::{self, fixture_config};
use plinth_plugin_host::{
    CompiledComponent, DecisionSource, HostConfig, Limits, Plugin, PluginCallError, PluginHost,
    PluginKind, PluginSpec, PolicySet, PriceDecision, SelfTest,
};

use crate::support::{examples_dir, pricing_state, request, wasm};

/// One host per mode for the whole test process, and each JS component compiled once
/// per host: a JS component is 12 MB of wasm (the JavaScript engine), which takes
/// seconds to compile.
struct Hosts {
    normal: PluginHost,
    deterministic: PluginHost,
    compiled: Mutex<HashMap<(bool, String), CompiledComponent>>,
}

fn hosts() -> &'static Hosts {
    static HOSTS: OnceLock<Hosts> = OnceLock::new();
    HOSTS.get_or_init(|| {
        let host = |deterministic| {
            PluginHost::new(HostConfig {
                deterministic,
                pool_instances: 16,
                ..HostConfig::default()
            })
            .unwrap()
        };
        Hosts {
            normal: host(false),
            deterministic: host(true),
            compiled: Mutex::new(HashMap::new()),
        }
    })
}

/// JS plugins get the host's maximum memory (the engine's heap starts at several MiB)
/// and 200 ms of CPU: the debug build of the host, which these tests use, lowers a 4 MiB
/// answer or instantiates the engine much more slowly than the release build.
const JS_CPU_MS: u64 = 200;

fn js_limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        cpu_ms: JS_CPU_MS,
        ..Limits::default()
    }
}

/// Load the built JS example `file` (e.g. `plinth_js_pricing`), or `None` when Node.js is
/// absent (the reason is printed).
fn load_js(
    file: &str,
    name: &str,
    kind: PluginKind,
    config: BTreeMap<String, String>,
    deterministic: bool,
) -> Option<(&'static PluginHost, Arc<Plugin>)> {
    let path = plinth_tests::js_example_plugin(file).unwrap()?;
    let hosts = hosts();
    let host = if deterministic {
        &hosts.deterministic
    } else {
        &hosts.normal
    };
    let compiled = {
        let mut compiled = hosts.compiled.lock().unwrap();
        compiled
            .entry((deterministic, file.to_string()))
            .or_insert_with(|| {
                let bytes = std::fs::read(&path).unwrap();
                host.compile(file, &bytes).unwrap()
            })
            .clone()
    };
    let spec = PluginSpec {
        name: name.to_string(),
        version: "0.1.0".to_string(),
        kind,
        declared_wit: Some("plinth:policy@0.1.2".to_string()),
        limits: js_limits(),
        config,
        signer: None,
    };
    Some((host, host.load_compiled(spec, &compiled).unwrap()))
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Run the JS example against the fixtures of the Rust example `dir`; every case passes.
fn check_fixtures(file: &str, dir: &str, kind: PluginKind) -> Option<tools::FixtureReport> {
    let fixtures = examples_dir().join(dir).join("fixtures");
    let (_, plugin) = load_js(file, file, kind, fixture_config(&fixtures).unwrap(), true)?;
    let report = tools::run_fixtures(&plugin, &fixtures, false).unwrap();
    assert!(report.cases.len() >= 4, "too few fixtures in {dir}");
    for case in &report.cases {
        assert!(
            case.passed,
            "{file} fixture {}: {}\n{}",
            case.name,
            case.diff.clone().unwrap_or_default(),
            case.logs.join("\n")
        );
    }
    assert_eq!(plugin.stats().traps, 0);
    Some(report)
}

#[test]
fn js_pricing_answers_exactly_as_the_rust_pricing_example() {
    let Some(js) = check_fixtures("plinth_js_pricing", "pricing", PluginKind::Pricing) else {
        return;
    };
    // The same fixtures through the Rust example: the answers are equal value for value
    // (not only equal to the expected files, which a shared bug could also match).
    let Some(bytes) = wasm("plinth_example_pricing") else {
        return;
    };
    let fixtures = examples_dir().join("pricing/fixtures");
    let mut spec = crate::support::spec("rust-pricing", PluginKind::Pricing, &[]);
    spec.config = fixture_config(&fixtures).unwrap();
    let rust = hosts().deterministic.load_component(spec, &bytes).unwrap();
    let rust = tools::run_fixtures(&rust, &fixtures, false).unwrap();
    assert_eq!(rust.cases.len(), js.cases.len());
    for (rust_case, js_case) in rust.cases.iter().zip(&js.cases) {
        assert_eq!(rust_case.name, js_case.name);
        assert_eq!(rust_case.actual, js_case.actual, "fixture {}", js_case.name);
    }
    // Operator settings change both alike: the configuration path is ported too.
    let operator = config(&[
        ("rate.h100", "3000000"),
        ("surcharge.pct", "50"),
        ("surcharge.threshold-pct", "10"),
        ("currency", "EURC"),
    ]);
    let (_, js_plugin) = load_js(
        "plinth_js_pricing",
        "js-configured",
        PluginKind::Pricing,
        operator.clone(),
        true,
    )
    .unwrap();
    let mut spec = crate::support::spec("rust-configured", PluginKind::Pricing, &[]);
    spec.config = operator;
    let rust_plugin = hosts().deterministic.load_component(spec, &bytes).unwrap();
    for gpus in [1, 2, 8, 9] {
        let mut asked = request(gpus);
        asked.max_price_micros = Some(20_000_000);
        let js_answer = js_plugin.price(&asked, &pricing_state()).unwrap();
        assert_eq!(
            js_answer,
            rust_plugin.price(&asked, &pricing_state()).unwrap()
        );
        if gpus == 1 {
            match js_answer {
                PriceDecision::Offer(quote) => {
                    assert_eq!(quote.currency, "EURC");
                    assert_eq!(quote.gpu_hour_micros, (3_000_000 + 79 * 5_000) * 3 / 2);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // A bad setting is the same bad-config error in both.
    let (_, js_bad) = load_js(
        "plinth_js_pricing",
        "js-bad",
        PluginKind::Pricing,
        config(&[("per-gib-hour", "lots")]),
        true,
    )
    .unwrap();
    let error = js_bad.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::Policy {
            plugin: "js-bad".to_string(),
            error: plinth_plugin_host::PolicyError::BadConfig(
                "config key per-gib-hour: cannot parse \"lots\"".to_string()
            )
        }
    );
}

#[test]
fn js_scheduling_passes_the_rust_scheduling_fixtures() {
    check_fixtures("plinth_js_scheduling", "scheduling", PluginKind::Scheduling);
}

#[test]
fn js_reporting_passes_the_rust_reporting_fixtures() {
    check_fixtures("plinth_js_reporting", "reporting", PluginKind::Reporting);
}

fn misbehave(mode: &str) -> Option<Arc<Plugin>> {
    load_js(
        "plinth_js_misbehave",
        &format!("js-{mode}"),
        PluginKind::Pricing,
        config(&[("mode", mode)]),
        false,
    )
    .map(|(_, plugin)| plugin)
}

/// After a hostile call the JS pricing example on the same host still answers.
fn good_js_plugin_still_answers() {
    let (_, good) = load_js(
        "plinth_js_pricing",
        "js-good",
        PluginKind::Pricing,
        BTreeMap::new(),
        false,
    )
    .unwrap();
    match good.price(&request(1), &pricing_state()).unwrap() {
        PriceDecision::Offer(quote) => assert!(quote.price_micros > 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn js_infinite_loop_times_out() {
    let Some(plugin) = misbehave("loop") else {
        return;
    };
    for _ in 0..2 {
        let started = Instant::now();
        let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
        assert_eq!(
            error,
            PluginCallError::Timeout {
                plugin: "js-loop".to_string(),
                limit_ms: JS_CPU_MS
            }
        );
        assert!(
            started.elapsed().as_millis() < 2_000,
            "{:?}",
            started.elapsed()
        );
    }
    let stats = plugin.stats();
    assert_eq!((stats.calls, stats.timeouts, stats.ok), (2, 2, 0));
    good_js_plugin_still_answers();
}

#[test]
fn js_memory_bomb_hits_the_memory_limit() {
    let Some(plugin) = misbehave("membomb") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::MemoryExhausted {
            plugin: "js-membomb".to_string(),
            limit_bytes: 64 << 20
        }
    );
    assert_eq!(plugin.stats().memory_exhausted, 1);
    // The trapped instance was discarded: the next call starts from a fresh one.
    assert!(plugin.price(&request(1), &pricing_state()).is_err());
    assert_eq!(plugin.stats().instantiations, 2);
    good_js_plugin_still_answers();
}

#[test]
fn js_thrown_error_is_a_trap_and_guarded_one_a_logged_policy_error() {
    let Some(plugin) = misbehave("throw") else {
        return;
    };
    match plugin.price(&request(1), &pricing_state()).unwrap_err() {
        PluginCallError::Trap { plugin, .. } => assert_eq!(plugin, "js-throw"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plugin.stats().traps, 1);
    good_js_plugin_still_answers();
    // Through `guarded` (plinth.ts; the examples and templates use it) the same error is
    // logged with its stack and answered as an internal policy error.
    let guarded = misbehave("throw-guarded").unwrap();
    let (answer, logs) =
        tools::capture_plugin_logs(|| guarded.price(&request(1), &pricing_state()));
    assert_eq!(
        answer.unwrap_err(),
        PluginCallError::Policy {
            plugin: "js-throw-guarded".to_string(),
            error: plinth_plugin_host::PolicyError::Internal(
                "uncaught Error: thrown on purpose for req-1".to_string()
            )
        }
    );
    assert!(
        logs.iter()
            .any(|line| line.starts_with("ERROR uncaught Error: thrown on purpose for req-1")),
        "{logs:#?}"
    );
    assert_eq!(guarded.stats().traps, 0);
}

#[test]
fn js_runaway_recursion_and_bad_answers_are_contained() {
    let Some(recursion) = misbehave("recursion") else {
        return;
    };
    let error = recursion.price(&request(1), &pricing_state()).unwrap_err();
    // SpiderMonkey turns too much recursion into a JS exception (uncaught: a trap) before
    // the wasm stack overflows; either way the call fails and names the plugin.
    assert!(
        matches!(
            error,
            PluginCallError::Trap { .. } | PluginCallError::StackOverflow { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("js-recursion"));
    let huge = misbehave("huge-output").unwrap();
    assert_eq!(
        huge.price(&request(1), &pricing_state()).unwrap_err(),
        PluginCallError::OutputTooLarge {
            plugin: "js-huge-output".to_string(),
            size: 256 << 10,
            limit: 64 << 10
        }
    );
    let garbage = misbehave("garbage").unwrap();
    assert!(matches!(
        garbage.price(&request(1), &pricing_state()).unwrap_err(),
        PluginCallError::InvalidOutput { reason, .. } if reason.contains("currency")
    ));
    let flood = misbehave("log-flood").unwrap();
    assert_eq!(
        flood.price(&request(1), &pricing_state()).unwrap(),
        PriceDecision::Refuse("flooded".to_string())
    );
    let stats = flood.stats();
    assert_eq!((stats.log_records, stats.log_dropped), (32, 2_000 - 32));
    good_js_plugin_still_answers();
}

#[test]
fn js_plugin_turning_hostile_after_its_self_test_falls_back() {
    let Some(always) = misbehave("loop") else {
        return;
    };
    let policies = PolicySet::new(FallbackConfig::default());
    assert!(policies.install(always, SelfTest::Smoke).is_err());
    assert!(policies.active(PluginKind::Pricing).is_none());
    let (_, sleeper) = load_js(
        "plinth_js_misbehave",
        "js-sleeper",
        PluginKind::Pricing,
        config(&[("mode", "throw"), ("only-tenant", "tenant-a")]),
        false,
    )
    .unwrap();
    policies.install(sleeper, SelfTest::Smoke).unwrap();
    let decided = policies.price(&request(1), &pricing_state());
    match &decided.source {
        DecisionSource::BuiltIn {
            plugin_error: Some(error),
        } => assert!(error.contains("js-sleeper"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(decided.value, PriceDecision::Offer(_)));
    let mut other_tenant = request(1);
    other_tenant.tenant = "tenant-b".to_string();
    let decided = policies.price(&other_tenant, &pricing_state());
    assert!(
        matches!(decided.source, DecisionSource::Plugin { ref name, .. } if name == "js-sleeper")
    );
}
