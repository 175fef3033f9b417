//! The versioning rule: older compatible plugins are served, newer ones and other majors
//! refused.

use plinth_plugin_host::{PluginKind, PluginLoadError, PriceDecision, ScheduleDecision};

use crate::support::{host, pricing_state, request, spec, state, wasm};

#[test]
fn plugin_built_against_frozen_0_1_0_is_served() {
    let Some(bytes) = wasm("plinth_hostile_compat_0_1_0") else {
        return;
    };
    let host = host();
    let plugin = host
        .load_component(spec("compat", PluginKind::Pricing, &[]), &bytes)
        .unwrap();
    eprintln!("{:#?}", plugin.info());
    assert_eq!(plugin.info().wit, "plinth:policy@0.1.0");
    let decision = plugin.price(&request(2), &pricing_state()).unwrap();
    match decision {
        PriceDecision::Offer(quote) => assert_eq!(quote.price_micros, 7200),
        other => panic!("{other:?}"),
    }
    assert_eq!(plugin.stats().log_records, 1);
}

#[test]
fn plugin_built_for_another_major_is_refused() {
    let Some(bytes) = wasm("plinth_hostile_wrong_major") else {
        return;
    };
    let host = host();
    let error = host
        .load_component(spec("future", PluginKind::Pricing, &[]), &bytes)
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        matches!(error, PluginLoadError::WrongWitVersion { ref found, .. } if found == "1.0.0"),
        "{message}"
    );
    assert!(
        message.contains("future")
            && message.contains("1.0.0")
            && message.contains("0.1.0 to 0.1.2"),
        "{message}"
    );
}

#[test]
fn plugin_built_against_frozen_0_1_1_is_served() {
    let Some(bytes) = wasm("plinth_hostile_compat_0_1_1") else {
        return;
    };
    let host = host();
    let plugin = host
        .load_component(spec("compat", PluginKind::Scheduling, &[]), &bytes)
        .unwrap();
    assert_eq!(plugin.info().wit, "plinth:policy@0.1.1");
    assert!(
        !plugin
            .info()
            .imports
            .iter()
            .any(|import| import.starts_with("plinth:policy/network")),
        "{:?}",
        plugin.info().imports
    );
    let mut busy = state();
    busy.gpus[0].allocated = true;
    busy.gpus[2].drained = true;
    let decision = plugin.schedule(&request(3), &busy).unwrap();
    assert_eq!(decision, ScheduleDecision::Admit(vec![1, 3, 4]));
    // Its 0.1.1 `host.log` and `entropy` imports work.
    assert_eq!(plugin.stats().log_records, 1);
}

#[test]
fn plugin_built_for_a_newer_minor_is_refused() {
    let Some(bytes) = wasm("plinth_hostile_future_minor") else {
        return;
    };
    let host = host();
    let error = host
        .load_component(spec("future", PluginKind::Scheduling, &[]), &bytes)
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        matches!(error, PluginLoadError::WrongWitVersion { ref found, .. } if found == "0.1.3"),
        "{message}"
    );
    assert_eq!(
        message,
        "plugin future: built for plinth:policy/scheduling@0.1.3, but this host serves plinth:policy 0.1.0 to 0.1.2"
    );
}
