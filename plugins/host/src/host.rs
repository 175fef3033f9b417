//! The plugin host: one wasmtime engine, a linker with the host interface and a
//! deny-all WASI, the compiled-code cache, the epoch ticker, and loaded plugins.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::bindings::pricing::exports::plinth::policy::pricing::PriceDecision;
use crate::bindings::pricing::plinth::policy::types::{
    HostState, JobRequest, PolicyError, PricingState,
};
use crate::bindings::reporting::exports::plinth::policy::reporting::{ReportRecord, UsageRecord};
use crate::bindings::scheduling::exports::plinth::policy::scheduling::ScheduleDecision;
use crate::bindings::{pricing, reporting, scheduling};
use crate::cache::{CacheError, CompileCache};
use crate::config::{HostConfig, Limits, PluginKind};
use crate::facts::{CallFacts, Facts, NoFacts};
use crate::package::{Package, PackageError, TrustPolicy, sha256_hex};
use crate::stats::{PluginStats, PluginStatsSnapshot, bump};
use crate::store::{CallLimiter, Clocks, StoreState, fresh_seed};
use crate::ticker::EpochTicker;
use crate::version::{InterfaceProblem, check_interfaces, parse_wit_package};

/// Errors while creating the host.
#[derive(Debug, thiserror::Error)]
pub enum PluginHostError {
    /// Wasmtime rejected the engine configuration.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The host interface or WASI could not be added to the linker.
    #[error("cannot link the host interface: {0}")]
    Link(String),
    /// The compiled-code cache could not be opened.
    #[error("cannot open the compiled-code cache")]
    Cache(#[from] CacheError),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
}

/// Errors while loading a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// The package is malformed, unsigned, untrusted or tampered.
    #[error("cannot load plugin package")]
    Package(#[from] PackageError),
    /// The wasm is not a valid component.
    #[error("plugin {plugin}: cannot compile component: {reason}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// Compiler message.
        reason: String,
    },
    /// The plugin was built for a WIT version this host does not serve.
    #[error(
        "plugin {plugin}: built for {interface}@{found}, but this host serves plinth:policy {served}"
    )]
    WrongWitVersion {
        /// Plugin name.
        plugin: String,
        /// Interface carrying the version.
        interface: String,
        /// Version found.
        found: String,
        /// Range served.
        served: String,
    },
    /// The plugin imports a capability the host does not grant.
    #[error("plugin {plugin}: imports {import}, a capability plinth does not grant")]
    UngrantedImport {
        /// Plugin name.
        plugin: String,
        /// The import.
        import: String,
    },
    /// The plugin does not export what its kind requires.
    #[error(
        "plugin {plugin}: declared kind {kind} but does not export {expected} (exports: {found})"
    )]
    MissingExport {
        /// Plugin name.
        plugin: String,
        /// Declared kind.
        kind: PluginKind,
        /// Expected interface.
        expected: String,
        /// What it exports.
        found: String,
    },
    /// The manifest's WIT version disagrees with the component.
    #[error(
        "plugin {plugin}: manifest says {manifest} but the component exports version {component}"
    )]
    ManifestMismatch {
        /// Plugin name.
        plugin: String,
        /// Manifest `wit`.
        manifest: String,
        /// Version found in the component.
        component: String,
    },
    /// Pre-instantiation failed (type mismatch with the host interface).
    #[error("plugin {plugin}: cannot link: {reason}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// Linker message.
        reason: String,
    },
}

/// Why a plugin call produced no answer. Every variant names the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginCallError {
    /// The CPU deadline passed (epoch interruption).
    #[error("plugin {plugin}: exceeded its cpu limit of {limit_ms} ms")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The limit.
        limit_ms: u64,
    },
    /// Fuel ran out (deterministic mode).
    #[error("plugin {plugin}: ran out of fuel ({fuel} units)")]
    FuelExhausted {
        /// Plugin name.
        plugin: String,
        /// The budget.
        fuel: u64,
    },
    /// The plugin tried to grow memory beyond its limit.
    #[error("plugin {plugin}: exceeded its memory limit of {limit_bytes} bytes")]
    MemoryExhausted {
        /// Plugin name.
        plugin: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// The wasm stack overflowed (deep recursion).
    #[error("plugin {plugin}: wasm stack overflow (recursion too deep)")]
    StackOverflow {
        /// Plugin name.
        plugin: String,
    },
    /// Any other trap.
    #[error("plugin {plugin}: trapped: {trap}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Trap description.
        trap: String,
    },
    /// The answer is larger than allowed.
    #[error("plugin {plugin}: output of {size} bytes exceeds its limit of {limit} bytes")]
    OutputTooLarge {
        /// Plugin name.
        plugin: String,
        /// Answer size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The answer is well-typed but makes no sense (e.g. a drained GPU).
    #[error("plugin {plugin}: invalid output: {reason}")]
    InvalidOutput {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin returned its own error.
    #[error("plugin {plugin}: policy error: {error:?}")]
    Policy {
        /// Plugin name.
        plugin: String,
        /// The plugin's error.
        error: PolicyError,
    },
    /// A fresh instance could not be created (e.g. the pool is exhausted).
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The plugin is of another kind than the call.
    #[error("plugin {plugin}: is a {actual} plugin, called as {wanted}")]
    WrongKind {
        /// Plugin name.
        plugin: String,
        /// Its kind.
        actual: PluginKind,
        /// The call's kind.
        wanted: PluginKind,
    },
}

/// Everything known about a loaded plugin, for `inspect` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: PluginKind,
    /// WIT package version the component was built for.
    pub wit: String,
    /// SHA-256 of the wasm.
    pub wasm_sha256: String,
    /// Effective limits (after clamping).
    pub limits: Limits,
    /// Component imports.
    pub imports: Vec<String>,
    /// Component exports.
    pub exports: Vec<String>,
    /// Signer's public key (hex), when signed.
    pub signer: Option<String>,
    /// Configuration keys the plugin sees.
    pub config_keys: Vec<String>,
}

/// A compiled component, not yet checked or linked (see [`PluginHost::compile`]).
#[derive(Clone)]
pub struct CompiledComponent {
    component: Component,
    wasm_sha256: String,
}

impl CompiledComponent {
    /// SHA-256 of the wasm, hex.
    pub fn wasm_sha256(&self) -> &str {
        &self.wasm_sha256
    }
}

impl std::fmt::Debug for CompiledComponent {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CompiledComponent")
            .field("wasm_sha256", &self.wasm_sha256)
            .finish_non_exhaustive()
    }
}

/// Which instance a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    /// A warm instance, reused between calls (the normal path).
    Warm,
    /// A fresh instance, dropped after the call (nothing survives from earlier calls).
    Fresh,
}

/// What to load, apart from the wasm.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: PluginKind,
    /// WIT package declared in the manifest (checked against the component), if any.
    pub declared_wit: Option<String>,
    /// Requested limits (clamped by the host).
    pub limits: Limits,
    /// Configuration the plugin reads through `config-get`.
    pub config: BTreeMap<String, String>,
    /// Signer's public key, hex.
    pub signer: Option<String>,
}

struct HostShared {
    engine: Engine,
    linker: Linker<StoreState>,
    config: HostConfig,
    cache: Option<CompileCache>,
    clocks: Clocks,
    ticker: EpochTicker,
    /// What plugins' `network` and `liveness` calls read (see [`PluginHost::set_facts`]).
    facts: RwLock<Facts>,
}

impl HostShared {
    fn facts(&self) -> Facts {
        match self.facts.read() {
            Ok(facts) => Arc::clone(&facts),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// The wasmtime host for policy plugins. Cheap to share behind an `Arc`.
pub struct PluginHost {
    shared: Arc<HostShared>,
}

enum Pre {
    Pricing(pricing::PricingPluginPre<StoreState>),
    Scheduling(scheduling::SchedulingPluginPre<StoreState>),
    Reporting(reporting::ReportingPluginPre<StoreState>),
}

enum Bound {
    Pricing(pricing::PricingPlugin),
    Scheduling(scheduling::SchedulingPlugin),
    Reporting(reporting::ReportingPlugin),
}

struct Live {
    store: Store<StoreState>,
    bound: Bound,
}

/// A loaded, linked plugin ready to be called. Thread-safe; calls run on the caller's
/// thread, reusing a warm instance when one is free.
pub struct Plugin {
    shared: Arc<HostShared>,
    name: Arc<str>,
    info: PluginInfo,
    config: Arc<BTreeMap<String, String>>,
    pre: Pre,
    warm: Mutex<Vec<Live>>,
    stats: Arc<PluginStats>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Plugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("kind", &self.info.kind)
            .field("wit", &self.info.wit)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Create the engine (component model on, component-model async off, pooling
    /// allocator, epoch interruption, fuel in deterministic mode), the linker and the
    /// epoch ticker.
    pub fn new(config: HostConfig) -> Result<PluginHost, PluginHostError> {
        let mut wasm_config = Config::new();
        wasm_config.wasm_component_model(true);
        wasm_config.epoch_interruption(true);
        wasm_config.consume_fuel(config.deterministic);
        wasm_config.max_wasm_stack(config.max_wasm_stack);
        wasm_config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::new();
        let slots = config.pool_instances.max(1);
        pool.total_component_instances(slots);
        pool.total_core_instances(slots.saturating_mul(8));
        pool.total_memories(slots.saturating_mul(2));
        pool.total_tables(slots.saturating_mul(8));
        pool.max_core_instances_per_component(16);
        pool.max_memories_per_component(2);
        pool.max_tables_per_component(16);
        // Return memory to the kernel in batches: one madvise (and one TLB shootdown)
        // per batch instead of per instance, which dominates fresh-instance latency.
        pool.decommit_batch_size((slots as usize / 4).max(1));
        pool.linear_memory_keep_resident(256 << 10);
        pool.max_memory_size(usize::try_from(config.max_limits.memory_bytes).unwrap_or(usize::MAX));
        wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm_config)
            .map_err(|error| PluginHostError::Engine(format!("{error:#}")))?;

        let mut linker: Linker<StoreState> = Linker::new(&engine);
        pricing::PricingPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|error| PluginHostError::Link(format!("{error:#}")))?;
        // Added in 0.1.2: every plugin's linker has them; `version::check_interfaces`
        // lets only the kind that uses each import it.
        scheduling::plinth::policy::network::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|error| PluginHostError::Link(format!("{error:#}")))?;
        reporting::plinth::policy::liveness::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|error| PluginHostError::Link(format!("{error:#}")))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|error| PluginHostError::Link(format!("{error:#}")))?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &engine)?),
            None => None,
        };

        let tick = config.epoch_tick.max(Duration::from_micros(100));
        let ticker = EpochTicker::start(engine.clone(), tick).map_err(PluginHostError::Ticker)?;
        let clocks = if config.deterministic {
            Clocks::Frozen
        } else {
            Clocks::Real {
                origin: Instant::now(),
            }
        };
        Ok(PluginHost {
            shared: Arc::new(HostShared {
                engine,
                linker,
                config,
                cache,
                clocks,
                ticker,
                facts: RwLock::new(Arc::new(NoFacts)),
            }),
        })
    }

    /// Sets what plugins learn through the 0.1.2 `network` (scheduling) and `liveness`
    /// (reporting) interfaces, for every later call of every plugin of this host. The
    /// agent sets it once its measurements and ledger exist; until then plugins see no
    /// peers and no summary ([`NoFacts`]).
    pub fn set_facts(&self, facts: Facts) {
        match self.shared.facts.write() {
            Ok(mut slot) => *slot = facts,
            Err(poisoned) => *poisoned.into_inner() = facts,
        }
    }

    /// The host's configuration.
    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// Epoch ticks since the host started. The ticker ticks only while a plugin call is
    /// in flight (and for [`crate::ticker::LINGER`] after), so this stays still on an
    /// idle host.
    pub fn epoch_ticks(&self) -> u64 {
        self.shared.ticker.ticks()
    }

    /// Parse, verify (signature, trusted key, wasm digest) and load a package.
    /// `operator_config` overrides the manifest's default configuration key by key.
    pub fn load_package(
        &self,
        bytes: &[u8],
        trust: &TrustPolicy,
        operator_config: &BTreeMap<String, String>,
    ) -> Result<Arc<Plugin>, PluginLoadError> {
        let package = Package::parse(bytes)?;
        package.verify(trust)?;
        let manifest = &package.manifest;
        let mut config = manifest.config.clone();
        config.extend(
            operator_config
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        let spec = PluginSpec {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            kind: manifest.kind,
            declared_wit: Some(manifest.wit.clone()),
            limits: manifest.limits.unwrap_or_default(),
            config,
            signer: package.signature.as_ref().map(|(key, _)| hex::encode(key)),
        };
        self.load_component(spec, &package.wasm)
    }

    /// Compile (or fetch from the cache), check and pre-instantiate a component. No
    /// signature check: callers that take wasm from outside use [`Self::load_package`].
    pub fn load_component(
        &self,
        spec: PluginSpec,
        wasm: &[u8],
    ) -> Result<Arc<Plugin>, PluginLoadError> {
        let compiled = self.compile(&spec.name, wasm)?;
        self.load_compiled(spec, &compiled)
    }

    /// Compile a component (or fetch it from the compiled-code cache), without checking
    /// it; `plugin` names it in errors. [`Self::load_compiled`] checks and links it, as
    /// often as needed without compiling again.
    pub fn compile(&self, plugin: &str, wasm: &[u8]) -> Result<CompiledComponent, PluginLoadError> {
        let shared = &self.shared;
        let wasm_sha256 = sha256_hex(wasm);
        let cached = shared
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&shared.engine, &wasm_sha256));
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(&shared.engine, wasm).map_err(|error| {
                    PluginLoadError::Compile {
                        plugin: plugin.to_string(),
                        reason: format!("{error:#}"),
                    }
                })?;
                if let Some(cache) = &shared.cache {
                    cache.store(&wasm_sha256, &component);
                }
                component
            }
        };
        Ok(CompiledComponent {
            component,
            wasm_sha256,
        })
    }

    /// Check a compiled component (WIT version, imports, exports, manifest agreement) and
    /// pre-instantiate it as the plugin `spec` describes.
    pub fn load_compiled(
        &self,
        spec: PluginSpec,
        compiled: &CompiledComponent,
    ) -> Result<Arc<Plugin>, PluginLoadError> {
        let shared = &self.shared;
        let plugin = spec.name.clone();
        let component = &compiled.component;
        let wasm_sha256 = compiled.wasm_sha256.clone();
        let component_type = component.component_type();
        let imports: Vec<String> = component_type
            .imports(&shared.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports: Vec<String> = component_type
            .exports(&shared.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let built_for =
            check_interfaces(spec.kind, &imports, &exports).map_err(|problem| match problem {
                InterfaceProblem::Ungranted(import) => PluginLoadError::UngrantedImport {
                    plugin: plugin.clone(),
                    import,
                },
                InterfaceProblem::WrongVersion { name, found } => {
                    PluginLoadError::WrongWitVersion {
                        plugin: plugin.clone(),
                        interface: crate::version::split_versioned(&name).0.to_string(),
                        found,
                        served: crate::version::HOST_WIT_VERSION.served_range(),
                    }
                }
                InterfaceProblem::MissingExport { expected, found } => {
                    PluginLoadError::MissingExport {
                        plugin: plugin.clone(),
                        kind: spec.kind,
                        expected: expected.to_string(),
                        found: found.join(", "),
                    }
                }
            })?;
        if let Some(declared) = &spec.declared_wit
            && parse_wit_package(declared) != Some(built_for)
        {
            return Err(PluginLoadError::ManifestMismatch {
                plugin,
                manifest: declared.clone(),
                component: built_for.to_string(),
            });
        }
        let link_error = |error: wasmtime::Error| PluginLoadError::Link {
            plugin: plugin.clone(),
            reason: format!("{error:#}"),
        };
        let instance_pre = shared
            .linker
            .instantiate_pre(component)
            .map_err(link_error)?;
        let pre = match spec.kind {
            PluginKind::Pricing => {
                Pre::Pricing(pricing::PricingPluginPre::new(instance_pre).map_err(link_error)?)
            }
            PluginKind::Scheduling => Pre::Scheduling(
                scheduling::SchedulingPluginPre::new(instance_pre).map_err(link_error)?,
            ),
            PluginKind::Reporting => Pre::Reporting(
                reporting::ReportingPluginPre::new(instance_pre).map_err(link_error)?,
            ),
        };
        let limits = spec.limits.clamp_to(&shared.config.max_limits);
        let info = PluginInfo {
            name: spec.name.clone(),
            version: spec.version,
            kind: spec.kind,
            wit: format!("plinth:policy@{built_for}"),
            wasm_sha256,
            limits,
            imports,
            exports,
            signer: spec.signer,
            config_keys: spec.config.keys().cloned().collect(),
        };
        Ok(Arc::new(Plugin {
            shared: Arc::clone(shared),
            name: Arc::from(spec.name.as_str()),
            info,
            config: Arc::new(spec.config),
            pre,
            warm: Mutex::new(Vec::new()),
            stats: Arc::new(PluginStats::default()),
        }))
    }
}

/// Bytes of an answer, counting string and list contents.
trait OutputSize {
    fn output_size(&self) -> u64;
}

impl OutputSize for PolicyError {
    fn output_size(&self) -> u64 {
        match self {
            PolicyError::InvalidInput(text)
            | PolicyError::BadConfig(text)
            | PolicyError::Internal(text) => text.len() as u64,
        }
    }
}

impl OutputSize for PriceDecision {
    fn output_size(&self) -> u64 {
        match self {
            PriceDecision::Offer(quote) => 24 + quote.currency.len() as u64,
            PriceDecision::Refuse(reason) => reason.len() as u64,
        }
    }
}

impl OutputSize for ScheduleDecision {
    fn output_size(&self) -> u64 {
        match self {
            ScheduleDecision::Admit(indices) => 4 * indices.len() as u64,
            ScheduleDecision::Reject(reason) => reason.len() as u64,
            ScheduleDecision::Defer(_) => 4,
        }
    }
}

impl OutputSize for Vec<ReportRecord> {
    fn output_size(&self) -> u64 {
        self.iter()
            .map(|record| {
                16 + record.key.len() as u64
                    + record
                        .values
                        .iter()
                        .map(|(name, _)| 8 + name.len() as u64)
                        .sum::<u64>()
            })
            .sum()
    }
}

impl<T: OutputSize> OutputSize for Result<T, PolicyError> {
    fn output_size(&self) -> u64 {
        match self {
            Ok(value) => value.output_size(),
            Err(error) => error.output_size(),
        }
    }
}

fn validate_quote(decision: &PriceDecision) -> Result<(), String> {
    if let PriceDecision::Offer(quote) = decision {
        let currency_ok = (1..=16).contains(&quote.currency.len())
            && quote
                .currency
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        if !currency_ok {
            return Err(format!(
                "currency {:?} is not 1-16 characters of [A-Za-z0-9-]",
                quote.currency
            ));
        }
    }
    Ok(())
}

fn validate_schedule(
    decision: &ScheduleDecision,
    request: &JobRequest,
    state: &HostState,
) -> Result<(), String> {
    if let ScheduleDecision::Admit(indices) = decision {
        if indices.len() != request.gpu_count as usize {
            return Err(format!(
                "admitted {} gpus, request wants {}",
                indices.len(),
                request.gpu_count
            ));
        }
        for (position, index) in indices.iter().enumerate() {
            if indices[..position].contains(index) {
                return Err(format!("gpu {index} chosen twice"));
            }
            let Some(gpu) = state.gpus.iter().find(|gpu| gpu.index == *index) else {
                return Err(format!("gpu {index} does not exist"));
            };
            if gpu.drained {
                return Err(format!("gpu {index} is drained"));
            }
            if gpu.allocated {
                return Err(format!("gpu {index} is already allocated"));
            }
        }
    }
    Ok(())
}

impl Plugin {
    /// Name, version, kind, WIT version, limits, imports and exports.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        self.info.kind
    }

    /// Counters and latency percentiles.
    pub fn stats(&self) -> PluginStatsSnapshot {
        self.stats.snapshot()
    }

    /// The call latencies' cumulative counts at `edges_ns` (for a Prometheus histogram).
    pub fn latency_cumulative(&self, edges_ns: &[u64]) -> crate::stats::CumulativeCounts {
        self.stats.latency.cumulative(edges_ns)
    }

    /// Counts one decision the built-in policy made because this plugin's call failed.
    pub(crate) fn count_fallback(&self) {
        bump(&self.stats.fallbacks);
    }

    /// Create one instance now and keep it warm, so that the next call does not pay for
    /// instantiation (a JavaScript plugin's first instance costs milliseconds). Does
    /// nothing when the warm pool is full.
    pub fn prewarm(&self) -> Result<(), PluginCallError> {
        let live = self.instantiate()?;
        if let Ok(mut warm) = self.warm.lock()
            && warm.len() < self.shared.config.warm_instances_per_plugin
        {
            warm.push(live);
        }
        Ok(())
    }

    fn instantiate(&self) -> Result<Live, PluginCallError> {
        let shared = &self.shared;
        let limits = &self.info.limits;
        let state = StoreState::new(
            Arc::clone(&self.name),
            Arc::clone(&self.config),
            shared.clocks,
            fresh_seed(shared.config.deterministic),
            CallLimiter {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                memory_hit: false,
                table_elements: 100_000,
            },
            limits.log_records_per_call,
            Arc::clone(&self.stats),
        );
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        self.arm(&mut store, shared.facts());
        bump(&self.stats.instantiations);
        let instantiate_error = |error: wasmtime::Error| PluginCallError::Instantiate {
            plugin: self.name.to_string(),
            reason: format!("{error:#}"),
        };
        let bound = match &self.pre {
            Pre::Pricing(pre) => {
                Bound::Pricing(pre.instantiate(&mut store).map_err(instantiate_error)?)
            }
            Pre::Scheduling(pre) => {
                Bound::Scheduling(pre.instantiate(&mut store).map_err(instantiate_error)?)
            }
            Pre::Reporting(pre) => {
                Bound::Reporting(pre.instantiate(&mut store).map_err(instantiate_error)?)
            }
        };
        Ok(Live { store, bound })
    }

    /// Set the per-call budgets (epoch deadline, and fuel in deterministic mode) and the
    /// call's facts.
    fn arm(&self, store: &mut Store<StoreState>, facts: Facts) {
        let shared = &self.shared;
        let limits = &self.info.limits;
        let tick_us = shared.config.epoch_tick.as_micros().max(1) as u64;
        let mut ticks = (limits.cpu_ms.saturating_mul(1000))
            .div_ceil(tick_us)
            .max(1);
        if shared.config.deterministic {
            // Fuel decides; the epoch is only a backstop against a slow machine.
            ticks = ticks.saturating_mul(10);
            let _ = store.set_fuel(limits.fuel);
        }
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
            .data_mut()
            .begin_call(shared.config.deterministic, facts);
    }

    fn classify(&self, error: wasmtime::Error, state: &StoreState) -> PluginCallError {
        let plugin = self.name.to_string();
        let limits = &self.info.limits;
        if state.limiter.memory_hit {
            bump(&self.stats.memory_exhausted);
            bump(&self.stats.traps);
            return PluginCallError::MemoryExhausted {
                plugin,
                limit_bytes: limits.memory_bytes,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                bump(&self.stats.timeouts);
                PluginCallError::Timeout {
                    plugin,
                    limit_ms: limits.cpu_ms,
                }
            }
            Some(Trap::OutOfFuel) => {
                bump(&self.stats.timeouts);
                PluginCallError::FuelExhausted {
                    plugin,
                    fuel: limits.fuel,
                }
            }
            Some(Trap::StackOverflow) => {
                bump(&self.stats.traps);
                PluginCallError::StackOverflow { plugin }
            }
            Some(trap) => {
                bump(&self.stats.traps);
                PluginCallError::Trap {
                    plugin,
                    trap: trap.to_string(),
                }
            }
            None => {
                bump(&self.stats.traps);
                PluginCallError::Trap {
                    plugin,
                    trap: format!("{error:#}"),
                }
            }
        }
    }

    /// Run `call` on a warm instance (or a fresh one when `fresh` or none is free), with
    /// limits armed, and turn every failure into a [`PluginCallError`].
    fn run<T: OutputSize>(
        &self,
        fresh: bool,
        facts: Option<Facts>,
        call: impl FnOnce(&Bound, &mut Store<StoreState>) -> wasmtime::Result<Result<T, PolicyError>>,
        validate: impl FnOnce(&T) -> Result<(), String>,
    ) -> Result<T, PluginCallError> {
        let started = Instant::now();
        // The epoch ticker runs while this guard lives (instantiation included).
        let _in_flight = self.shared.ticker.enter();
        bump(&self.stats.calls);
        let reused = if fresh {
            None
        } else {
            self.warm.lock().ok().and_then(|mut warm| warm.pop())
        };
        let facts = facts.unwrap_or_else(|| self.shared.facts());
        let mut live = match reused {
            Some(mut live) => {
                self.arm(&mut live.store, facts);
                live
            }
            None => match self.instantiate() {
                Ok(mut live) => {
                    // Armed by `instantiate` (instantiation counts against the call's
                    // budget); only the call's facts are set here.
                    live.store.data_mut().facts = CallFacts::new(facts);
                    live
                }
                Err(error) => {
                    bump(&self.stats.traps);
                    return Err(error);
                }
            },
        };
        let outcome = call(&live.bound, &mut live.store);
        let result = match outcome {
            Err(error) => Err(self.classify(error, live.store.data())),
            Ok(answer) => {
                let size = answer.output_size();
                if size > self.info.limits.output_bytes {
                    bump(&self.stats.invalid_outputs);
                    Err(PluginCallError::OutputTooLarge {
                        plugin: self.name.to_string(),
                        size,
                        limit: self.info.limits.output_bytes,
                    })
                } else {
                    match answer {
                        Err(error) => {
                            bump(&self.stats.policy_errors);
                            Err(PluginCallError::Policy {
                                plugin: self.name.to_string(),
                                error,
                            })
                        }
                        Ok(value) => match validate(&value) {
                            Ok(()) => {
                                bump(&self.stats.ok);
                                Ok(value)
                            }
                            Err(reason) => {
                                bump(&self.stats.invalid_outputs);
                                Err(PluginCallError::InvalidOutput {
                                    plugin: self.name.to_string(),
                                    reason,
                                })
                            }
                        },
                    }
                }
            }
        };
        // Only instances that finished normally are reused; a trapped instance is dropped
        // (its pool slot is returned).
        let healthy = !matches!(
            result,
            Err(PluginCallError::Timeout { .. }
                | PluginCallError::FuelExhausted { .. }
                | PluginCallError::MemoryExhausted { .. }
                | PluginCallError::StackOverflow { .. }
                | PluginCallError::Trap { .. }
                | PluginCallError::Instantiate { .. })
        );
        if healthy
            && !fresh
            && let Ok(mut warm) = self.warm.lock()
            && warm.len() < self.shared.config.warm_instances_per_plugin
        {
            warm.push(live);
        }
        self.stats.latency.record(started.elapsed());
        result
    }

    fn wrong_kind(&self, wanted: PluginKind) -> PluginCallError {
        PluginCallError::WrongKind {
            plugin: self.name.to_string(),
            actual: self.info.kind,
            wanted,
        }
    }

    fn price_inner(
        &self,
        fresh: bool,
        request: &JobRequest,
        state: &PricingState,
    ) -> Result<PriceDecision, PluginCallError> {
        if !matches!(self.pre, Pre::Pricing(_)) {
            return Err(self.wrong_kind(PluginKind::Pricing));
        }
        self.run(
            fresh,
            None,
            |bound, store| match bound {
                Bound::Pricing(plugin) => plugin
                    .plinth_policy_pricing()
                    .call_price(store, request, state),
                _ => Err(wasmtime::Error::msg("instance kind mismatch")),
            },
            validate_quote,
        )
    }

    /// Quote a price, reusing a warm instance.
    pub fn price(
        &self,
        request: &JobRequest,
        state: &PricingState,
    ) -> Result<PriceDecision, PluginCallError> {
        self.price_inner(false, request, state)
    }

    /// Quote a price on a fresh instance (nothing survives from earlier calls).
    pub fn price_fresh(
        &self,
        request: &JobRequest,
        state: &PricingState,
    ) -> Result<PriceDecision, PluginCallError> {
        self.price_inner(true, request, state)
    }

    fn schedule_inner(
        &self,
        fresh: bool,
        facts: Option<Facts>,
        request: &JobRequest,
        state: &HostState,
    ) -> Result<ScheduleDecision, PluginCallError> {
        if !matches!(self.pre, Pre::Scheduling(_)) {
            return Err(self.wrong_kind(PluginKind::Scheduling));
        }
        self.run(
            fresh,
            facts,
            |bound, store| match bound {
                Bound::Scheduling(plugin) => plugin
                    .plinth_policy_scheduling()
                    .call_schedule(store, request, state),
                _ => Err(wasmtime::Error::msg("instance kind mismatch")),
            },
            |decision| validate_schedule(decision, request, state),
        )
    }

    /// Decide admission and GPUs, reusing a warm instance. An admission that names a
    /// missing, drained or allocated GPU, or the wrong number of GPUs, is an error.
    pub fn schedule(
        &self,
        request: &JobRequest,
        state: &HostState,
    ) -> Result<ScheduleDecision, PluginCallError> {
        self.schedule_inner(false, None, request, state)
    }

    /// [`Self::schedule`] on a fresh instance.
    pub fn schedule_fresh(
        &self,
        request: &JobRequest,
        state: &HostState,
    ) -> Result<ScheduleDecision, PluginCallError> {
        self.schedule_inner(true, None, request, state)
    }

    /// [`Self::schedule`] on the `instance` asked for, with `facts` (what
    /// `network.peers` answers) instead of the host's.
    pub fn schedule_with(
        &self,
        instance: Instance,
        request: &JobRequest,
        state: &HostState,
        facts: Facts,
    ) -> Result<ScheduleDecision, PluginCallError> {
        self.schedule_inner(instance == Instance::Fresh, Some(facts), request, state)
    }

    fn report_inner(
        &self,
        fresh: bool,
        facts: Option<Facts>,
        records: &[UsageRecord],
    ) -> Result<Vec<ReportRecord>, PluginCallError> {
        if !matches!(self.pre, Pre::Reporting(_)) {
            return Err(self.wrong_kind(PluginKind::Reporting));
        }
        self.run(
            fresh,
            facts,
            |bound, store| match bound {
                Bound::Reporting(plugin) => {
                    plugin.plinth_policy_reporting().call_report(store, records)
                }
                _ => Err(wasmtime::Error::msg("instance kind mismatch")),
            },
            |_| Ok(()),
        )
    }

    /// Aggregate usage records, reusing a warm instance.
    pub fn report(&self, records: &[UsageRecord]) -> Result<Vec<ReportRecord>, PluginCallError> {
        self.report_inner(false, None, records)
    }

    /// [`Self::report`] on a fresh instance.
    pub fn report_fresh(
        &self,
        records: &[UsageRecord],
    ) -> Result<Vec<ReportRecord>, PluginCallError> {
        self.report_inner(true, None, records)
    }

    /// [`Self::report`] on the `instance` asked for, with `facts` (what
    /// `liveness.summary` answers) instead of the host's.
    pub fn report_with(
        &self,
        instance: Instance,
        records: &[UsageRecord],
        facts: Facts,
    ) -> Result<Vec<ReportRecord>, PluginCallError> {
        self.report_inner(instance == Instance::Fresh, Some(facts), records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_count_contents() {
        let refuse = PriceDecision::Refuse("x".repeat(100));
        assert_eq!(refuse.output_size(), 100);
        let error: Result<PriceDecision, PolicyError> =
            Err(PolicyError::Internal("abc".to_string()));
        assert_eq!(error.output_size(), 3);
    }

    #[test]
    fn host_starts_and_rejects_non_components() {
        let host = PluginHost::new(HostConfig::default()).unwrap();
        let spec = PluginSpec {
            name: "junk".to_string(),
            version: "0".to_string(),
            kind: PluginKind::Pricing,
            declared_wit: None,
            limits: Limits::default(),
            config: BTreeMap::new(),
            signer: None,
        };
        let error = host.load_component(spec, b"not wasm").err().unwrap();
        assert!(
            matches!(error, PluginLoadError::Compile { ref plugin, .. } if plugin == "junk"),
            "{error}"
        );
    }
}
