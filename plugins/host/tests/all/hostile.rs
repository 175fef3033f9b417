//! Hostile plugins are contained: each call fails with an error naming the plugin and
//! the cause, the host keeps answering other plugins, and the policy set falls back.

use std::time::Instant;

use plinth_plugin_host::fallback::FallbackConfig;
use plinth_plugin_host::{
    DecisionSource, PluginCallError, PluginKind, PluginLoadError, PolicySet, PriceDecision,
    SelfTest,
};

use crate::support::{host, load, pricing_state, request, spec, wasm};

fn misbehave(
    mode: &str,
) -> Option<(
    plinth_plugin_host::PluginHost,
    std::sync::Arc<plinth_plugin_host::Plugin>,
)> {
    let host = host();
    let plugin = load(
        &host,
        "plinth_hostile_misbehave",
        &format!("evil-{mode}"),
        PluginKind::Pricing,
        &[("mode", mode)],
    )?;
    Some((host, plugin))
}

/// After a hostile call, a well-behaved plugin on the same host still answers.
fn good_plugin_still_answers(host: &plinth_plugin_host::PluginHost) {
    let good = load(
        host,
        "plinth_example_pricing",
        "good",
        PluginKind::Pricing,
        &[],
    )
    .unwrap();
    match good.price(&request(1), &pricing_state()).unwrap() {
        PriceDecision::Offer(quote) => assert!(quote.price_micros > 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn infinite_loop_times_out() {
    let Some((host, plugin)) = misbehave("loop") else {
        return;
    };
    let started = Instant::now();
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::Timeout {
            plugin: "evil-loop".to_string(),
            limit_ms: 50
        }
    );
    assert!(
        started.elapsed().as_millis() < 2_000,
        "took {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("evil-loop") && error.to_string().contains("cpu limit"));
    // A second call on a fresh instance is contained the same way.
    assert!(matches!(
        plugin.price(&request(1), &pricing_state()),
        Err(PluginCallError::Timeout { .. })
    ));
    let stats = plugin.stats();
    assert_eq!((stats.calls, stats.timeouts, stats.ok), (2, 2, 0));
    good_plugin_still_answers(&host);
}

/// The epoch ticker sleeps while no call runs, and a loop that starts on an idle host
/// is still stopped at its budget: never before it (the deadline counts ticks from the
/// start of the call), and within a tick plus scheduling delay after it.
#[test]
fn idle_host_does_not_tick_and_still_stops_a_loop_at_its_budget() {
    let Some((host, plugin)) = misbehave("loop") else {
        return;
    };
    let idle_ticks = || {
        let before = host.epoch_ticks();
        std::thread::sleep(plinth_plugin_host::ticker::LINGER * 5);
        host.epoch_ticks() - before
    };
    // The first window may include the linger after loading; after that, silence.
    let _ = idle_ticks();
    assert_eq!(idle_ticks(), 0, "an idle host must not advance the epoch");

    let ticks_before = host.epoch_ticks();
    let started = Instant::now();
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, PluginCallError::Timeout { limit_ms: 50, .. }),
        "{error:?}"
    );
    let ticked = host.epoch_ticks() - ticks_before;
    eprintln!("loop stopped after {elapsed:?} ({ticked} ticks) for a 50 ms budget");
    assert!(
        ticked >= 50,
        "the deadline fired after only {ticked} ticks of 1 ms"
    );
    assert!(
        elapsed.as_millis() >= 50,
        "the deadline fired early: {elapsed:?}"
    );
    assert!(elapsed.as_millis() < 1_000, "took {elapsed:?}");
    let _ = idle_ticks();
    assert_eq!(idle_ticks(), 0, "the ticker must park again after the call");
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let Some((host, plugin)) = misbehave("membomb") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::MemoryExhausted {
            plugin: "evil-membomb".to_string(),
            limit_bytes: 16 << 20
        }
    );
    assert_eq!(plugin.stats().memory_exhausted, 1);
    good_plugin_still_answers(&host);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let Some((host, plugin)) = misbehave("recursion") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::StackOverflow {
            plugin: "evil-recursion".to_string()
        }
    );
    good_plugin_still_answers(&host);
}

#[test]
fn huge_output_is_rejected() {
    let Some((host, plugin)) = misbehave("huge-output") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::OutputTooLarge {
            plugin: "evil-huge-output".to_string(),
            size: 4 << 20,
            limit: 64 << 10
        }
    );
    good_plugin_still_answers(&host);
}

#[test]
fn trap_is_reported_with_its_cause() {
    let Some((host, plugin)) = misbehave("trap") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    match &error {
        PluginCallError::Trap { plugin, trap } => {
            assert_eq!(plugin, "evil-trap");
            assert!(
                trap.contains("divide by zero") || trap.contains("unreachable"),
                "{trap}"
            );
        }
        other => panic!("{other:?}"),
    }
    good_plugin_still_answers(&host);
}

#[test]
fn garbage_output_is_rejected() {
    let Some((host, plugin)) = misbehave("garbage") else {
        return;
    };
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    match &error {
        PluginCallError::InvalidOutput { plugin, reason } => {
            assert_eq!(plugin, "evil-garbage");
            assert!(reason.contains("currency"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    good_plugin_still_answers(&host);
}

#[test]
fn log_flood_is_capped() {
    let Some((_host, plugin)) = misbehave("log-flood") else {
        return;
    };
    let decision = plugin.price(&request(1), &pricing_state()).unwrap();
    assert_eq!(decision, PriceDecision::Refuse("flooded".to_string()));
    let stats = plugin.stats();
    assert_eq!(stats.log_records, 32);
    assert_eq!(stats.log_dropped, 2_000 - 32);
}

#[test]
fn well_behaved_mode_of_the_same_plugin_answers() {
    let Some((_host, plugin)) = misbehave("none") else {
        return;
    };
    assert!(matches!(
        plugin.price(&request(1), &pricing_state()).unwrap(),
        PriceDecision::Offer(_)
    ));
}

#[test]
fn filesystem_import_is_refused_at_load() {
    let Some(bytes) = wasm("plinth_hostile_fs_import") else {
        return;
    };
    let host = host();
    let error = host
        .load_component(spec("snoop", PluginKind::Pricing, &[]), &bytes)
        .err()
        .unwrap();
    match &error {
        PluginLoadError::UngrantedImport { plugin, import } => {
            assert_eq!(plugin, "snoop");
            assert!(import.starts_with("wasi:filesystem/"), "{import}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wrong_kind_is_refused_at_load() {
    let Some(bytes) = wasm("plinth_example_pricing") else {
        return;
    };
    let error = host()
        .load_component(spec("confused", PluginKind::Scheduling, &[]), &bytes)
        .err()
        .unwrap();
    assert!(
        matches!(error, PluginLoadError::MissingExport { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("plinth:policy/scheduling"),
        "{error}"
    );
}

#[test]
fn policy_set_falls_back_and_keeps_serving() {
    let Some((host, hostile)) = misbehave("loop") else {
        return;
    };
    let policies = PolicySet::new(FallbackConfig::default());
    // The self-test catches an always-looping plugin: nothing is installed.
    let error = policies.install(hostile, SelfTest::Smoke).unwrap_err();
    assert!(
        format!("{error} {:?}", std::error::Error::source(&error)).contains("evil-loop"),
        "{error}"
    );
    assert!(policies.active(PluginKind::Pricing).is_none());

    // A plugin that behaves during the self-test and loops only for tenant-a later.
    let sleeper = load(
        &host,
        "plinth_hostile_misbehave",
        "sleeper",
        PluginKind::Pricing,
        &[("mode", "loop"), ("only-tenant", "tenant-a")],
    )
    .unwrap();
    policies.install(sleeper, SelfTest::Smoke).unwrap();
    let decided = policies.price(&request(1), &pricing_state());
    match &decided.source {
        DecisionSource::BuiltIn {
            plugin_error: Some(error),
        } => {
            assert!(
                error.contains("sleeper") && error.contains("cpu limit"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(decided.value, PriceDecision::Offer(_)),
        "built-in policy answers"
    );
    assert_eq!(policies.fallback_count(), 1);
    // Other tenants are still served by the plugin.
    let mut other_tenant = request(1);
    other_tenant.tenant = "tenant-b".to_string();
    let decided = policies.price(&other_tenant, &pricing_state());
    assert!(matches!(decided.source, DecisionSource::Plugin { ref name, .. } if name == "sleeper"));
}

#[test]
fn deterministic_mode_stops_loops_with_fuel() {
    let Some(bytes) = wasm("plinth_hostile_misbehave") else {
        return;
    };
    let host = plinth_plugin_host::PluginHost::new(plinth_plugin_host::HostConfig {
        deterministic: true,
        pool_instances: 4,
        ..plinth_plugin_host::HostConfig::default()
    })
    .unwrap();
    let mut looping = spec("fuel-loop", PluginKind::Pricing, &[("mode", "loop")]);
    looping.limits.fuel = 1_000_000;
    let plugin = host.load_component(looping, &bytes).unwrap();
    let error = plugin.price(&request(1), &pricing_state()).unwrap_err();
    assert_eq!(
        error,
        PluginCallError::FuelExhausted {
            plugin: "fuel-loop".to_string(),
            fuel: 1_000_000
        }
    );
    // Same input, same answer, every time: the well-behaved mode under fuel.
    let plugin = host
        .load_component(spec("fuel-ok", PluginKind::Pricing, &[]), &bytes)
        .unwrap();
    let first = plugin.price(&request(1), &pricing_state()).unwrap();
    assert_eq!(
        plugin.price_fresh(&request(1), &pricing_state()).unwrap(),
        first
    );
}
