//! The versioning rule: older compatible plugins are served, other majors refused.

use plinth_plugin_host::{PluginKind, PluginLoadError, PriceDecision};

use crate::support::{host, pricing_state, request, spec, wasm};

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
            && message.contains("0.1.0 to 0.1.1"),
        "{message}"
    );
}
