//! Per-instance store data: the host interface implementation, the deny-all WASI
//! context, resource limits, clocks, entropy and the facts (network quality, liveness)
//! of the current call.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::bindings::pricing::plinth::policy::{entropy, host, types};
use crate::bindings::reporting::plinth::policy::liveness;
use crate::bindings::scheduling::plinth::policy::network;
use crate::facts::{CallFacts, Facts, NoFacts};
use crate::stats::{PluginStats, bump};

/// Longest log message forwarded; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 2048;
/// Most structured fields forwarded per log record.
const MAX_LOG_FIELDS: usize = 16;
/// Most stderr lines forwarded to the log per instance; further lines are dropped and
/// counted.
const MAX_STDERR_LINES: u32 = 64;
/// Wall time reported in deterministic mode: 2026-01-01T00:00:00Z.
const FROZEN_WALL_SECONDS: u64 = 1_767_225_600;
/// Entropy seed in deterministic mode.
const FROZEN_SEED: u64 = 0x706c_696e_7468_5eed;

/// Where a plugin's time comes from.
#[derive(Clone, Copy)]
pub(crate) enum Clocks {
    /// Real clocks; monotonic time counts from `origin`.
    Real {
        /// Origin of the monotonic clock.
        origin: Instant,
    },
    /// Frozen clocks for deterministic runs.
    Frozen,
}

impl Clocks {
    fn monotonic_ns(self) -> u64 {
        match self {
            Clocks::Real { origin } => {
                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            Clocks::Frozen => 0,
        }
    }

    fn wall(self) -> Duration {
        match self {
            Clocks::Real { .. } => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            Clocks::Frozen => Duration::from_secs(FROZEN_WALL_SECONDS),
        }
    }
}

impl HostWallClock for Clocks {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        self.wall()
    }
}

impl HostMonotonicClock for Clocks {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.monotonic_ns()
    }
}

/// SplitMix64: small, fast, and good enough for a plugin's hash seeds and sampling. Not
/// for secrets; plugins have no secrets to make.
#[derive(Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }
}

impl rand_core::TryRng for SplitMix {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A seed for a new store: frozen in deterministic mode, else distinct per store.
pub(crate) fn fresh_seed(deterministic: bool) -> u64 {
    if deterministic {
        return FROZEN_SEED;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    SplitMix(nanos ^ SEED_COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)).next()
}

/// Memory and table limits of one store; remembers whether a limit was hit so that the
/// resulting trap can be reported as what it is.
pub(crate) struct CallLimiter {
    pub(crate) memory_bytes: usize,
    pub(crate) memory_hit: bool,
    pub(crate) table_elements: usize,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// Data of one plugin instance's store.
pub struct StoreState {
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) clocks: Clocks,
    pub(crate) entropy: SplitMix,
    pub(crate) seed: u64,
    pub(crate) limiter: CallLimiter,
    pub(crate) log_budget: u32,
    pub(crate) log_limit: u32,
    pub(crate) stats: Arc<PluginStats>,
    /// What `network.peers` and `liveness.summary` answer during the current call.
    pub(crate) facts: CallFacts,
    /// Built on first use: most plugins never touch WASI.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
}

impl StoreState {
    pub(crate) fn new(
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        clocks: Clocks,
        seed: u64,
        limiter: CallLimiter,
        log_limit: u32,
        stats: Arc<PluginStats>,
    ) -> StoreState {
        StoreState {
            plugin,
            config,
            clocks,
            entropy: SplitMix(seed),
            seed,
            limiter,
            log_budget: log_limit,
            log_limit,
            stats,
            facts: CallFacts::new(Arc::new(NoFacts)),
            wasi: None,
            table: ResourceTable::new(),
        }
    }

    /// Reset per-call budgets and set the call's facts; in deterministic mode also rewind
    /// the entropy.
    pub(crate) fn begin_call(&mut self, deterministic: bool, facts: Facts) {
        self.facts = CallFacts::new(facts);
        self.log_budget = self.log_limit;
        self.limiter.memory_hit = false;
        if deterministic {
            self.entropy = SplitMix(self.seed);
        }
    }
}

/// The WASI context every plugin gets: nothing granted. No preopened directories, no
/// environment variables, no arguments, no sockets or name lookups (the socket check
/// denies every address and the import check refuses wasi:sockets anyway), stdin empty,
/// stdout and stderr discarded; clocks and randomness are the host's own.
fn deny_all_wasi(clocks: Clocks, seed: u64, stderr: StderrToLog) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stderr(stderr)
        .wall_clock(clocks)
        .monotonic_clock(clocks)
        .secure_random(SplitMix(seed ^ 0x5ec0_e5ec))
        .insecure_random(SplitMix(seed ^ 0x1115_ecce))
        .insecure_random_seed(u128::from(seed))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false);
    builder.build()
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let clocks = self.clocks;
        let seed = self.seed;
        let (plugin, stats) = (&self.plugin, &self.stats);
        let ctx = self
            .wasi
            .get_or_insert_with(|| deny_all_wasi(clocks, seed, StderrToLog::new(plugin, stats)));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// A plugin's stderr, forwarded to the agent's log: each line becomes a `warn` record
/// (target `plinth::plugin`, `stream="stderr"`), cut at the log message limit, at most
/// [`MAX_STDERR_LINES`] per instance (then dropped and counted in `log_dropped`). This is
/// where a Rust plugin's panic message ends up (a JS plugin built without stdio prints
/// nothing; see `guarded` in plugins/examples/js/lib/plinth.ts). Only the p2
/// stream is used (wasmtime-wasi is linked without p3); the p3 stream discards.
#[derive(Clone)]
pub(crate) struct StderrToLog {
    state: Arc<std::sync::Mutex<StderrState>>,
}

struct StderrState {
    plugin: Arc<str>,
    stats: Arc<PluginStats>,
    partial: Vec<u8>,
    lines_left: u32,
}

impl StderrToLog {
    fn new(plugin: &Arc<str>, stats: &Arc<PluginStats>) -> StderrToLog {
        StderrToLog {
            state: Arc::new(std::sync::Mutex::new(StderrState {
                plugin: Arc::clone(plugin),
                stats: Arc::clone(stats),
                partial: Vec::new(),
                lines_left: MAX_STDERR_LINES,
            })),
        }
    }
}

impl StderrState {
    fn emit(&mut self, line: &[u8]) {
        if self.lines_left == 0 {
            bump(&self.stats.log_dropped);
            return;
        }
        self.lines_left -= 1;
        bump(&self.stats.log_records);
        let mut text = String::from_utf8_lossy(line).trim_end().to_string();
        truncate(&mut text, MAX_LOG_MESSAGE);
        let plugin = &*self.plugin;
        tracing::warn!(target: "plinth::plugin", plugin, stream = "stderr", "{text}");
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|byte| *byte == b'\n') {
            self.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.partial.len() >= MAX_LOG_MESSAGE {
                let line = std::mem::take(&mut self.partial);
                self.emit(&line);
            }
        }
    }
}

impl wasmtime_wasi::p2::OutputStream for StderrToLog {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        if let Ok(mut state) = self.state.lock() {
            state.write(&bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrToLog {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::cli::IsTerminal for StderrToLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrToLog {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        wasmtime_wasi::cli::StdoutStream::async_stream(&wasmtime_wasi::p2::pipe::SinkOutputStream)
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
}

impl host::Host for StoreState {
    fn log(&mut self, lvl: host::Level, mut message: String, mut fields: Vec<(String, String)>) {
        if self.log_budget == 0 {
            bump(&self.stats.log_dropped);
            return;
        }
        self.log_budget -= 1;
        bump(&self.stats.log_records);
        truncate(&mut message, MAX_LOG_MESSAGE);
        fields.truncate(MAX_LOG_FIELDS);
        let fields = fields
            .into_iter()
            .map(|(mut key, mut value)| {
                truncate(&mut key, 64);
                truncate(&mut value, 256);
                format!("{key}={value:?}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &*self.plugin;
        match lvl {
            host::Level::Trace => {
                tracing::trace!(target: "plinth::plugin", plugin, %fields, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "plinth::plugin", plugin, %fields, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "plinth::plugin", plugin, %fields, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "plinth::plugin", plugin, %fields, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "plinth::plugin", plugin, %fields, "{message}")
            }
        }
    }

    fn monotonic_now(&mut self) -> u64 {
        self.clocks.monotonic_ns()
    }

    fn wall_now(&mut self) -> host::Datetime {
        let wall = self.clocks.wall();
        host::Datetime {
            seconds: wall.as_secs(),
            nanoseconds: wall.subsec_nanos(),
        }
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }
}

impl types::Host for StoreState {}

impl network::Host for StoreState {
    fn peers(&mut self) -> Vec<network::PeerQuality> {
        self.facts.peers()
    }
}

impl liveness::Host for StoreState {
    fn summary(&mut self, from_s: u64, to_s: u64) -> Option<liveness::LivenessSummary> {
        self.facts.summary(from_s, to_s)
    }
}

impl entropy::Host for StoreState {
    fn next_u64(&mut self) -> u64 {
        self.entropy.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let mut first = SplitMix(7);
        let mut second = SplitMix(7);
        let mut third = SplitMix(8);
        let a = first.next();
        assert_eq!(a, second.next());
        assert_ne!(a, third.next());
        assert_ne!(fresh_seed(false), fresh_seed(false));
        assert_eq!(fresh_seed(true), fresh_seed(true));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut text = "ééééé".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "é...");
    }
}
