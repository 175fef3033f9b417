//! Host-side bindings generated from `plugins/wit/policy.wit` (plinth:policy@0.1.2).
//!
//! One module per world. The three worlds import the same `host`, `entropy` and `types`
//! interfaces; the scheduling and reporting bindings reuse the pricing module's
//! generated code for them (`with:`), so there is one Rust type per WIT type and one
//! implementation of the host interface. The scheduling world also imports `network`
//! and the reporting world `liveness` (both added in 0.1.2), generated in those modules.

/// The `pricing-plugin` world, plus the shared `types`, `host` and `entropy` interfaces.
pub mod pricing {
    wasmtime::component::bindgen!({
        path: "../wit/policy.wit",
        world: "pricing-plugin",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq, Eq],
    });
}

/// The `scheduling-plugin` world.
pub mod scheduling {
    wasmtime::component::bindgen!({
        path: "../wit/policy.wit",
        world: "scheduling-plugin",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq, Eq],
        with: {
            "plinth:policy/types": crate::bindings::pricing::plinth::policy::types,
            "plinth:policy/host": crate::bindings::pricing::plinth::policy::host,
            "plinth:policy/entropy": crate::bindings::pricing::plinth::policy::entropy,
        },
    });
}

/// The `reporting-plugin` world.
pub mod reporting {
    wasmtime::component::bindgen!({
        path: "../wit/policy.wit",
        world: "reporting-plugin",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq, Eq],
        with: {
            "plinth:policy/types": crate::bindings::pricing::plinth::policy::types,
            "plinth:policy/host": crate::bindings::pricing::plinth::policy::host,
            "plinth:policy/entropy": crate::bindings::pricing::plinth::policy::entropy,
        },
    });
}
