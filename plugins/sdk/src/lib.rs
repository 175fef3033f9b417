//! SDK for plinth policy plugins written in Rust.
//!
//! A plugin is a `cdylib` crate that depends on this crate, implements the `Guest` trait
//! of one module ([`pricing`], [`scheduling`] or [`reporting`]) and calls the matching
//! export macro. Only the world named by that macro ends up in the component (wit-bindgen
//! emits a world's exports only from its export macro), so one SDK serves all kinds:
//!
//! ```text
//! use plinth_plugin_sdk::pricing::{Guest, JobRequest, PricingState, PriceDecision, PolicyError};
//!
//! struct MyPricing;
//!
//! impl Guest for MyPricing {
//!     fn price(req: JobRequest, state: PricingState) -> Result<PriceDecision, PolicyError> {
//!         plinth_plugin_sdk::init_logging();
//!         plinth_plugin_sdk::log::info!("pricing {}", req.request_id);
//!         Ok(PriceDecision::Refuse("not today".into()))
//!     }
//! }
//!
//! plinth_plugin_sdk::export_pricing!(MyPricing);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the output in
//! `target/wasm32-wasip2/release/*.wasm` is a component for `plinth:policy@0.1.2`.
//! The `log` crate's macros (re-exported as [`log`]) are routed to the host's structured
//! log once `init_logging()` ran (cheap and idempotent: call it first thing in every
//! exported function).
//! Configuration comes from [`config_get`] and [`config_keys`], time from
//! [`monotonic_now_ns`] and [`wall_now`]. Since 0.1.2 a scheduling plugin reads the host's
//! measured network quality to its configured peers with [`scheduling::network_peers`],
//! and a reporting plugin the liveness ledger's summary of a period with
//! [`reporting::liveness_summary`]. Nothing else is reachable: the host grants no files,
//! sockets or environment.

pub use log;

/// Bindings generated from `plugins/wit/policy.wit`, world `pricing-plugin`.
#[doc(hidden)]
#[allow(
    missing_docs,
    clippy::all,
    unsafe_op_in_unsafe_fn,
    unused_qualifications
)]
pub mod pricing_bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "pricing-plugin",
        pub_export_macro: true,
        export_macro_name: "export_pricing_raw",
        default_bindings_module: "plinth_plugin_sdk::pricing_bindings",
        generate_all,
    });
}

/// Bindings generated from `plugins/wit/policy.wit`, world `scheduling-plugin`.
#[doc(hidden)]
#[allow(
    missing_docs,
    clippy::all,
    unsafe_op_in_unsafe_fn,
    unused_qualifications
)]
pub mod scheduling_bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "scheduling-plugin",
        pub_export_macro: true,
        export_macro_name: "export_scheduling_raw",
        default_bindings_module: "plinth_plugin_sdk::scheduling_bindings",
        generate_all,
    });
}

/// Bindings generated from `plugins/wit/policy.wit`, world `reporting-plugin`.
#[doc(hidden)]
#[allow(
    missing_docs,
    clippy::all,
    unsafe_op_in_unsafe_fn,
    unused_qualifications
)]
pub mod reporting_bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "reporting-plugin",
        pub_export_macro: true,
        export_macro_name: "export_reporting_raw",
        default_bindings_module: "plinth_plugin_sdk::reporting_bindings",
        generate_all,
    });
}

/// Everything a pricing plugin needs.
pub mod pricing {
    pub use crate::pricing_bindings::exports::plinth::policy::pricing::{
        Guest, PriceDecision, Quote,
    };
    pub use crate::pricing_bindings::plinth::policy::types::{
        GpuClass, JobRequest, PolicyError, PricingState,
    };
}

/// Everything a scheduling plugin needs.
pub mod scheduling {
    pub use crate::scheduling_bindings::exports::plinth::policy::scheduling::{
        Guest, ScheduleDecision,
    };
    pub use crate::scheduling_bindings::plinth::policy::network::PeerQuality;
    pub use crate::scheduling_bindings::plinth::policy::types::{
        Gpu, HostState, JobRequest, PolicyError,
    };

    /// The host's latest network-quality measurement of every configured peer (round
    /// trips in microseconds, throughput in bytes per second), ordered by peer name;
    /// empty when the host measures none (WIT 0.1.2, `network.peers`).
    pub fn network_peers() -> Vec<PeerQuality> {
        crate::scheduling_bindings::plinth::policy::network::peers()
    }
}

/// Everything a reporting plugin needs.
pub mod reporting {
    pub use crate::reporting_bindings::exports::plinth::policy::reporting::{
        Guest, ReportRecord, UsageRecord,
    };
    pub use crate::reporting_bindings::plinth::policy::liveness::{
        LivenessSummary, Outage, OutageCause,
    };
    pub use crate::reporting_bindings::plinth::policy::types::PolicyError;

    /// The agent's liveness ledger summarised over `[from_s, to_s)` (Unix seconds):
    /// entries, covered and provable-uptime seconds, outages with their causes, drained
    /// GPU time, the head; `None` when the host keeps no ledger, the period is empty or
    /// longer than 31 days, or the call asked for more than 64 summaries (WIT 0.1.2,
    /// `liveness.summary`).
    pub fn liveness_summary(from_s: u64, to_s: u64) -> Option<LivenessSummary> {
        crate::reporting_bindings::plinth::policy::liveness::summary(from_s, to_s)
    }
}

mod host_glue {
    //! Safe wrappers over the generated host imports and the `log` backend.

    use crate::pricing_bindings::plinth::policy::host;

    /// Wall-clock time as the host reports it.
    pub use host::Datetime;

    /// The `log` backend that forwards records to the host's structured log.
    struct HostLogger;

    impl log::Log for HostLogger {
        fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &log::Record<'_>) {
            let level = match record.level() {
                log::Level::Error => host::Level::Error,
                log::Level::Warn => host::Level::Warn,
                log::Level::Info => host::Level::Info,
                log::Level::Debug => host::Level::Debug,
                log::Level::Trace => host::Level::Trace,
            };
            let message = record.args().to_string();
            let fields = vec![("target".to_string(), record.target().to_string())];
            host::log(level, &message, &fields);
        }

        fn flush(&self) {}
    }

    static LOGGER: HostLogger = HostLogger;

    /// Route the `log` macros to the host. Idempotent and cheap.
    pub fn init_logging() {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    }

    /// Read one key of the operator's configuration for this plugin.
    pub fn config_get(key: &str) -> Option<String> {
        host::config_get(key)
    }

    /// Every configuration key, sorted.
    pub fn config_keys() -> Vec<String> {
        host::config_keys()
    }

    /// Read a configuration key and parse it, falling back to `default` when the key
    /// is absent. A present but unparsable value is an error naming the key.
    pub fn config_parse<T: core::str::FromStr>(key: &str, default: T) -> Result<T, String> {
        match host::config_get(key) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<T>()
                .map_err(|_| format!("config key {key}: cannot parse {text:?}")),
        }
    }

    /// Monotonic clock in nanoseconds.
    pub fn monotonic_now_ns() -> u64 {
        host::monotonic_now()
    }

    /// Wall-clock time.
    pub fn wall_now() -> Datetime {
        host::wall_now()
    }
}

pub use host_glue::{
    Datetime, config_get, config_keys, config_parse, init_logging, monotonic_now_ns, wall_now,
};

/// Export a type implementing [`pricing::Guest`] as this component's pricing policy.
#[macro_export]
macro_rules! export_pricing {
    ($ty:ident) => {
        $crate::pricing_bindings::export_pricing_raw!($ty with_types_in $crate::pricing_bindings);
    };
}

/// Export a type implementing [`scheduling::Guest`] as this component's scheduling policy.
#[macro_export]
macro_rules! export_scheduling {
    ($ty:ident) => {
        $crate::scheduling_bindings::export_scheduling_raw!($ty with_types_in $crate::scheduling_bindings);
    };
}

/// Export a type implementing [`reporting::Guest`] as this component's reporting policy.
#[macro_export]
macro_rules! export_reporting {
    ($ty:ident) => {
        $crate::reporting_bindings::export_reporting_raw!($ty with_types_in $crate::reporting_bindings);
    };
}
