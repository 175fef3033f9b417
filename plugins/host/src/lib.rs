//! plinth-plugin-host: runs third-party WebAssembly policy plugins (pricing, scheduling,
//! reporting) safely and fast.
//!
//! * [`PluginHost`] owns one wasmtime engine (component model, pooling allocator, epoch
//!   interruption, no component-model async), a linker with the `plinth:policy/host`
//!   interface and a WASI context that grants nothing, and the compiled-code cache.
//! * [`PluginHost::load_package`] verifies a signed [`package::Package`] and returns a
//!   [`Plugin`]: compiled, checked (WIT version, imports), pre-instantiated.
//! * [`Plugin::price`], [`Plugin::schedule`], [`Plugin::report`] call it under per-call
//!   limits; every failure is a [`PluginCallError`] naming the plugin and the cause.
//! * [`PolicySet`] holds the active plugin of each kind, falls back to built-in policies
//!   when a plugin fails, and swaps plugins only after they pass a self-test.
//! * [`tools`] are the library side of `plinthctl plugin keygen|sign|inspect|test|bench`,
//!   [`scaffold`] of `plinthctl plugin new` and [`wit`] of `plinthctl plugin wit`.
//!
//! The WIT lives in `plugins/wit/`; docs/plugins.md explains the versioning rule, the
//! package format and the security model.

#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod bindings;
pub mod cache;
pub mod config;
pub mod facts;
pub mod fallback;
pub mod host;
pub mod package;
pub mod policy;
pub mod scaffold;
pub mod stats;
pub mod store;
pub mod ticker;
pub mod tools;
pub mod version;
pub mod wit;

pub use bindings::pricing::exports::plinth::policy::pricing::{PriceDecision, Quote};
pub use bindings::pricing::plinth::policy::host::Level;
pub use bindings::pricing::plinth::policy::types::{
    Gpu, GpuClass, HostState, JobRequest, PolicyError, PricingState,
};
pub use bindings::reporting::exports::plinth::policy::reporting::{ReportRecord, UsageRecord};
pub use bindings::scheduling::exports::plinth::policy::scheduling::ScheduleDecision;
pub use config::{HostConfig, Limits, PluginKind};
pub use facts::{
    Facts, FixedFacts, HostFacts, LivenessSummary, NoFacts, Outage, OutageCause, PeerQuality,
};
pub use host::{
    CompiledComponent, Instance, Plugin, PluginCallError, PluginHost, PluginHostError, PluginInfo,
    PluginLoadError, PluginSpec,
};
pub use package::{Manifest, Package, PackageError, TrustPolicy};

pub use policy::{Decided, DecisionSource, PolicySet, ReloadError, SelfTest, summarize};
pub use stats::PluginStatsSnapshot;
