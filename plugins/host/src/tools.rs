//! Library side of `plinthctl plugin keygen|sign|inspect|test|bench`: everything a
//! plugin author needs without a running agent. The CLI only parses arguments, calls
//! these and prints the (JSON-serializable) results.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::facts::{FixedFacts, LivenessSummary, PeerQuality};
use crate::host::{
    CompiledComponent, Instance, Plugin, PluginCallError, PluginHost, PluginInfo, PluginLoadError,
    PluginSpec,
};
use crate::package::{self, Manifest, Package, PackageError, TrustPolicy};
use crate::{HostState, JobRequest, Limits, PluginKind, PricingState, UsageRecord};

/// Errors of the author tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A package operation failed.
    #[error("package error")]
    Package(#[from] PackageError),
    /// A signing key file could not be read, parsed or written.
    #[error("signing key")]
    Key(#[from] plinth_toolbox::keyfile::KeyFileError),
    /// Loading the plugin failed.
    #[error("cannot load plugin")]
    Load(#[from] PluginLoadError),
    /// A JSON file is malformed.
    #[error("invalid JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest file is malformed.
    #[error("invalid manifest {path}")]
    ManifestToml {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// Raw wasm whose kind cannot be told from its exports.
    #[error(
        "cannot tell the plugin kind of this wasm: it exports none of plinth:policy/pricing, scheduling, reporting"
    )]
    UnknownKind,
    /// A call made while benchmarking failed.
    #[error("benchmark call failed")]
    Call(#[from] PluginCallError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ToolsError + '_ {
    move |source| ToolsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generate an Ed25519 key; write the PKCS#8 private key to `secret_path` (mode 0600,
/// never overwriting) and return the public key as hex (for the agent's trusted keys).
pub fn keygen(secret_path: &Path) -> Result<String, ToolsError> {
    let key_pair = plinth_toolbox::keyfile::create(secret_path)?;
    Ok(plinth_toolbox::keyfile::public_key_hex(&key_pair))
}

/// Read a manifest file (TOML; `wasm_sha256` may be empty, it is filled in).
pub fn read_manifest(path: &Path) -> Result<Manifest, ToolsError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    toml::from_str(&text).map_err(|source| ToolsError::ManifestToml {
        path: path.to_path_buf(),
        source,
    })
}

/// Build a package from a manifest and wasm, signed with the key file at `key_path`
/// (or unsigned when `None`), and return its bytes.
pub fn sign(
    manifest: Manifest,
    wasm: Vec<u8>,
    key_path: Option<&Path>,
) -> Result<Vec<u8>, ToolsError> {
    let mut package = Package::build(manifest, wasm)?;
    if let Some(key_path) = key_path {
        let key_pair = plinth_toolbox::keyfile::load(key_path)?;
        package.sign(&key_pair)?;
    }
    Ok(package.to_bytes())
}

/// What `plinthctl plugin inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectReport {
    /// The manifest, when the file is a package.
    pub manifest: Option<Manifest>,
    /// Signer key (hex), when signed.
    pub signer: Option<String>,
    /// Whether the signature verifies (ignoring trust), when signed.
    pub signature_valid: Option<bool>,
    /// Whether the wasm matches the manifest digest, when a package.
    pub wasm_digest_matches: Option<bool>,
    /// What the host sees after compiling: kind, WIT version, imports, exports, limits.
    pub plugin: PluginInfo,
}

fn detect_kind(host: &PluginHost, compiled: &CompiledComponent) -> Result<PluginKind, ToolsError> {
    for kind in PluginKind::ALL {
        let spec = PluginSpec {
            name: "inspect".to_string(),
            version: "0".to_string(),
            kind,
            declared_wit: None,
            limits: Limits::default(),
            config: BTreeMap::new(),
            signer: None,
        };
        match host.load_compiled(spec, compiled) {
            Ok(_) => return Ok(kind),
            Err(PluginLoadError::MissingExport { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ToolsError::UnknownKind)
}

/// A plugin loaded by [`load_timed`], with what loading it cost.
pub struct Loaded {
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// What `inspect` reports about it.
    pub report: InspectReport,
    /// Size of the wasm component, bytes.
    pub wasm_bytes: usize,
    /// Time spent compiling the component (or loading it from the host's cache).
    pub compile: Duration,
}

/// Parse either a package or a raw wasm component and load it for inspection (a
/// package's signature is checked but not required to be trusted).
pub fn load_any(
    host: &PluginHost,
    bytes: &[u8],
    config: &BTreeMap<String, String>,
) -> Result<(Arc<Plugin>, InspectReport), ToolsError> {
    load_timed(host, bytes, config).map(|loaded| (loaded.plugin, loaded.report))
}

/// [`load_any`], timing the compilation (done once, also for a raw component whose
/// kind is found by trying each kind's exports).
pub fn load_timed(
    host: &PluginHost,
    bytes: &[u8],
    config: &BTreeMap<String, String>,
) -> Result<Loaded, ToolsError> {
    if bytes.starts_with(package::MAGIC) {
        let parsed = Package::parse(bytes)?;
        let signature_valid = parsed.signature.as_ref().map(|(key, _)| {
            let trust = TrustPolicy {
                trusted_keys: vec![*key],
                allow_unsigned: false,
            };
            !matches!(
                parsed.verify(&trust),
                Err(PackageError::BadSignature { .. })
            )
        });
        let wasm_digest_matches =
            Some(package::sha256_hex(&parsed.wasm) == parsed.manifest.wasm_sha256);
        let mut merged = parsed.manifest.config.clone();
        merged.extend(
            config
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        let spec = PluginSpec {
            name: parsed.manifest.name.clone(),
            version: parsed.manifest.version.clone(),
            kind: parsed.manifest.kind,
            declared_wit: Some(parsed.manifest.wit.clone()),
            limits: parsed.manifest.limits.unwrap_or_default(),
            config: merged,
            signer: parsed.signature.as_ref().map(|(key, _)| hex::encode(key)),
        };
        let started = Instant::now();
        let compiled = host.compile(&spec.name, &parsed.wasm)?;
        let compile = started.elapsed();
        let plugin = host.load_compiled(spec, &compiled)?;
        let report = InspectReport {
            signer: parsed.signature.as_ref().map(|(key, _)| hex::encode(key)),
            manifest: Some(parsed.manifest),
            signature_valid,
            wasm_digest_matches,
            plugin: plugin.info().clone(),
        };
        return Ok(Loaded {
            plugin,
            report,
            wasm_bytes: parsed.wasm.len(),
            compile,
        });
    }
    let started = Instant::now();
    let compiled = host.compile("unpackaged", bytes)?;
    let compile = started.elapsed();
    let kind = detect_kind(host, &compiled)?;
    let spec = PluginSpec {
        name: "unpackaged".to_string(),
        version: "0".to_string(),
        kind,
        declared_wit: None,
        limits: Limits::default(),
        config: config.clone(),
        signer: None,
    };
    let plugin = host.load_compiled(spec, &compiled)?;
    let report = InspectReport {
        manifest: None,
        signer: None,
        signature_valid: None,
        wasm_digest_matches: None,
        plugin: plugin.info().clone(),
    };
    Ok(Loaded {
        plugin,
        report,
        wasm_bytes: bytes.len(),
        compile,
    })
}

/// Inspect a package or raw component.
pub fn inspect(host: &PluginHost, bytes: &[u8]) -> Result<InspectReport, ToolsError> {
    load_any(host, bytes, &BTreeMap::new()).map(|(_, report)| report)
}

/// Input of a pricing fixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PricingInput {
    /// The request.
    pub request: JobRequest,
    /// The summarised host state (see [`crate::summarize`]).
    pub state: PricingState,
}

/// Input of a scheduling fixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestInput {
    /// The request.
    pub request: JobRequest,
    /// The host state.
    pub state: HostState,
    /// What `network.peers` answers during the call (WIT 0.1.2; default none).
    #[serde(default)]
    pub network: Vec<PeerQuality>,
}

impl RequestInput {
    fn facts(&self) -> Arc<FixedFacts> {
        Arc::new(FixedFacts {
            network: self.network.clone(),
            liveness: Vec::new(),
        })
    }
}

/// Input of a reporting fixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportInput {
    /// The usage records.
    pub records: Vec<UsageRecord>,
    /// The summaries `liveness.summary` answers during the call, each for exactly the
    /// period it names (WIT 0.1.2; default none).
    #[serde(default)]
    pub liveness: Vec<LivenessSummary>,
}

impl ReportInput {
    fn facts(&self) -> Arc<FixedFacts> {
        Arc::new(FixedFacts {
            network: Vec::new(),
            liveness: self.liveness.clone(),
        })
    }
}

fn instance(fresh: bool) -> Instance {
    if fresh {
        Instance::Fresh
    } else {
        Instance::Warm
    }
}

/// Call `plugin` with a JSON fixture input; the answer as JSON: `{"Ok": ...}` or
/// `{"Err": ...}` for the plugin's own result, or the call error.
pub fn call_json(
    plugin: &Plugin,
    input: &Value,
    fresh: bool,
) -> Result<Result<Value, PluginCallError>, serde_json::Error> {
    fn to_json<T: Serialize>(result: Result<T, PluginCallError>) -> Result<Value, PluginCallError> {
        match result {
            Ok(value) => Ok(serde_json::json!({ "Ok": value })),
            Err(PluginCallError::Policy { error, .. }) => Ok(serde_json::json!({ "Err": error })),
            Err(other) => Err(other),
        }
    }
    Ok(match plugin.kind() {
        PluginKind::Pricing => {
            let input: PricingInput = serde_json::from_value(input.clone())?;
            let result = if fresh {
                plugin.price_fresh(&input.request, &input.state)
            } else {
                plugin.price(&input.request, &input.state)
            };
            to_json(result)
        }
        PluginKind::Scheduling => {
            let input: RequestInput = serde_json::from_value(input.clone())?;
            to_json(plugin.schedule_with(
                instance(fresh),
                &input.request,
                &input.state,
                input.facts(),
            ))
        }
        PluginKind::Reporting => {
            let input: ReportInput = serde_json::from_value(input.clone())?;
            to_json(plugin.report_with(instance(fresh), &input.records, input.facts()))
        }
    })
}

/// One fixture's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Fixture name (file stem before `.input.json`).
    pub name: String,
    /// Whether the answer matched.
    pub passed: bool,
    /// Expected answer (absent when the expected file is missing).
    pub expected: Option<Value>,
    /// Actual answer, or the call error as `{"CallError": "..."}`.
    pub actual: Value,
    /// Every difference, one per line (`/Ok/Offer/price_micros: expected 5, got 6`), or
    /// why the case could not be compared; `None` when it passed.
    pub diff: Option<String>,
    /// A unified diff of the expected and actual answers, pretty-printed, when both
    /// exist and differ.
    pub text_diff: Option<String>,
    /// The plugin's own log records during the call (and what it wrote to stderr),
    /// formatted as `LEVEL message key="value"...`.
    pub logs: Vec<String>,
}

/// Outcome of running a fixture directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureReport {
    /// One entry per `*.input.json`, sorted by name.
    pub cases: Vec<CaseResult>,
}

impl FixtureReport {
    /// Whether every case passed (and there was at least one).
    pub fn all_passed(&self) -> bool {
        !self.cases.is_empty() && self.cases.iter().all(|case| case.passed)
    }
}

/// Read `config.json` (a flat string map) from a fixture directory, if present.
pub fn fixture_config(dir: &Path) -> Result<BTreeMap<String, String>, ToolsError> {
    let path = dir.join("config.json");
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| ToolsError::Json { path, source })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(ToolsError::Io { path, source }),
    }
}

/// Describe where two JSON values differ: the first difference, by JSON pointer.
pub fn json_diff(expected: &Value, actual: &Value) -> Option<String> {
    json_differences(expected, actual).into_iter().next()
}

/// Every place where two JSON values differ, by JSON pointer, in document order.
pub fn json_differences(expected: &Value, actual: &Value) -> Vec<String> {
    fn walk(path: &str, expected: &Value, actual: &Value, found: &mut Vec<String>) {
        let shown = if path.is_empty() { "/" } else { path };
        match (expected, actual) {
            (Value::Object(left), Value::Object(right)) => {
                let keys: std::collections::BTreeSet<&String> =
                    left.keys().chain(right.keys()).collect();
                for key in keys {
                    let child = format!("{path}/{key}");
                    match (left.get(key), right.get(key)) {
                        (Some(a), Some(b)) => walk(&child, a, b, found),
                        (Some(a), None) => found.push(format!("{child}: expected {a}, missing")),
                        (None, Some(b)) => found.push(format!("{child}: unexpected {b}")),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(left), Value::Array(right)) => {
                for (index, (a, b)) in left.iter().zip(right).enumerate() {
                    walk(&format!("{path}/{index}"), a, b, found);
                }
                for (index, a) in left.iter().enumerate().skip(right.len()) {
                    found.push(format!("{path}/{index}: expected {a}, missing"));
                }
                for (index, b) in right.iter().enumerate().skip(left.len()) {
                    found.push(format!("{path}/{index}: unexpected {b}"));
                }
                if left.len() != right.len() {
                    found.push(format!(
                        "{shown}: expected {} elements, got {}",
                        left.len(),
                        right.len()
                    ));
                }
            }
            _ if expected == actual => {}
            _ => found.push(format!("{shown}: expected {expected}, got {actual}")),
        }
    }
    let mut found = Vec::new();
    walk("", expected, actual, &mut found);
    found
}

/// A unified diff (`-` expected, `+` actual) of two JSON values, pretty-printed with
/// sorted keys, with two lines of context.
pub fn unified_json_diff(expected: &Value, actual: &Value) -> String {
    let pretty = |value: &Value| {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        text.push('\n');
        text
    };
    let (left, right) = (pretty(expected), pretty(actual));
    similar::TextDiff::from_lines(&left, &right)
        .unified_diff()
        .context_radius(2)
        .header("expected", "actual")
        .to_string()
}

/// Captures the `plinth::plugin` log records (the plugin's own log, and its stderr) that
/// the host emits on this thread while `call` runs. Plugin calls run on the caller's
/// thread, so a thread-scoped subscriber sees exactly that call's records.
pub fn capture_plugin_logs<T>(call: impl FnOnce() -> T) -> (T, Vec<String>) {
    let capture = log_capture::Capture::default();
    let lines = capture.lines();
    let answer = tracing::subscriber::with_default(capture, call);
    let lines = lines.lock().map(|lines| lines.clone()).unwrap_or_default();
    (answer, lines)
}

mod log_capture {
    //! A minimal `tracing` subscriber that keeps the plugin log records it sees.

    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Keeps every `plinth::plugin` event as one formatted line.
    #[derive(Default)]
    pub(super) struct Capture {
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl Capture {
        /// The captured lines, shared.
        pub(super) fn lines(&self) -> Arc<Mutex<Vec<String>>> {
            Arc::clone(&self.lines)
        }
    }

    #[derive(Default)]
    struct Line {
        message: String,
        fields: String,
    }

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "message" => {
                    let _ = write!(self.message, "{value:?}");
                }
                "plugin" => {}
                "fields" => {
                    let _ = write!(self.fields, "{value:?}");
                }
                other => {
                    let _ = write!(self.fields, " {other}={value:?}");
                }
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "message" => self.message.push_str(value),
                "plugin" => {}
                "fields" => self.fields.push_str(value),
                other => {
                    let _ = write!(self.fields, " {other}={value:?}");
                }
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "plinth::plugin"
        }

        fn new_span(&self, _span: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _span: &Id, _values: &Record<'_>) {}

        fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut line = Line::default();
            event.record(&mut line);
            let mut text = format!("{:<5} {}", event.metadata().level(), line.message);
            let fields = line.fields.trim();
            if !fields.is_empty() {
                text.push(' ');
                text.push_str(fields);
            }
            if let Ok(mut lines) = self.lines.lock() {
                lines.push(text);
            }
        }

        fn enter(&self, _span: &Id) {}

        fn exit(&self, _span: &Id) {}
    }
}

/// Run every `NAME.input.json` in `dir` through `plugin` (fresh instance each, so cases
/// do not influence each other) and compare with `NAME.expected.json`. With `bless`, write
/// the actual answers as the expected files instead (for authors creating fixtures).
pub fn run_fixtures(plugin: &Plugin, dir: &Path, bless: bool) -> Result<FixtureReport, ToolsError> {
    let mut inputs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(".input.json"))
        .collect();
    inputs.sort();
    let mut cases = Vec::new();
    for input_path in inputs {
        let file_name = input_path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = file_name.trim_end_matches(".input.json").to_string();
        let bytes = fs::read(&input_path).map_err(io_error(&input_path))?;
        let input: Value = serde_json::from_slice(&bytes).map_err(|source| ToolsError::Json {
            path: input_path.clone(),
            source,
        })?;
        let (answer, logs) = capture_plugin_logs(|| call_json(plugin, &input, true));
        let actual = match answer {
            Ok(Ok(value)) => value,
            Ok(Err(call_error)) => serde_json::json!({ "CallError": call_error.to_string() }),
            Err(source) => {
                return Err(ToolsError::Json {
                    path: input_path.clone(),
                    source,
                });
            }
        };
        let expected_path = dir.join(format!("{name}.expected.json"));
        if bless {
            let mut text =
                serde_json::to_string_pretty(&actual).map_err(|source| ToolsError::Json {
                    path: expected_path.clone(),
                    source,
                })?;
            text.push('\n');
            fs::write(&expected_path, text).map_err(io_error(&expected_path))?;
        }
        let expected: Option<Value> = match fs::read(&expected_path) {
            Ok(bytes) => {
                Some(
                    serde_json::from_slice(&bytes).map_err(|source| ToolsError::Json {
                        path: expected_path.clone(),
                        source,
                    })?,
                )
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ToolsError::Io {
                    path: expected_path,
                    source,
                });
            }
        };
        let (diff, text_diff) = match &expected {
            Some(expected) => {
                let differences = json_differences(expected, &actual);
                if differences.is_empty() {
                    (None, None)
                } else {
                    (
                        Some(differences.join("\n")),
                        Some(unified_json_diff(expected, &actual)),
                    )
                }
            }
            None => (
                Some(format!("{} is missing", expected_path.display())),
                None,
            ),
        };
        cases.push(CaseResult {
            name,
            passed: diff.is_none(),
            expected,
            actual,
            diff,
            text_diff,
            logs,
        });
    }
    Ok(FixtureReport { cases })
}

/// Latency percentiles of one series, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Slowest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
}

impl Percentiles {
    /// Percentiles of `samples` (nanoseconds); sorts them.
    pub fn of(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let at = |quantile: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let rank = ((samples.len() as f64) * quantile).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let total: u128 = samples.iter().map(|sample| u128::from(*sample)).sum();
        Percentiles {
            samples: samples.len(),
            p50_ns: at(0.50),
            p90_ns: at(0.90),
            p99_ns: at(0.99),
            max_ns: samples.last().copied().unwrap_or(0),
            mean_ns: if samples.is_empty() {
                0
            } else {
                (total / samples.len() as u128) as u64
            },
        }
    }
}

/// What `plinthctl plugin bench` prints for one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Plugin name.
    pub plugin: String,
    /// Size of the wasm component, bytes.
    pub component_bytes: u64,
    /// Compiling the component with Cranelift (the host's cache is not used), ms.
    pub compile_ms: f64,
    /// Creating the plugin's first instance (the pooling slot, memory image, start
    /// functions) before any call, us.
    pub first_instantiation_us: f64,
    /// Calls on a warm (reused) instance.
    pub warm: Percentiles,
    /// Calls that each create a fresh instance from the pre-instantiated component.
    pub fresh: Percentiles,
    /// CPU time the calling thread spent in each warm call (the wall-clock series also
    /// counts time the thread waited for a core on a busy host; this one does not).
    /// `None` where the platform has no per-thread CPU clock.
    #[serde(default)]
    pub warm_cpu: Option<Percentiles>,
    /// CPU time of the calling thread in each fresh-instance call.
    #[serde(default)]
    pub fresh_cpu: Option<Percentiles>,
}

/// CPU time consumed so far by the calling thread, nanoseconds (`None` where the
/// platform has no per-thread CPU clock).
fn thread_cpu_ns() -> Option<u64> {
    use nix::time::{ClockId, clock_gettime};
    let now = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let nanos = i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec());
    u64::try_from(nanos).ok()
}

/// Measure warm-call and fresh-instance latency of `plugin` on one fixture input
/// (component size, compile and first-instantiation times are left 0: see
/// [`bench_file`]).
pub fn bench(plugin: &Plugin, input: &Value, iterations: usize) -> Result<BenchReport, ToolsError> {
    let iterations = iterations.max(10);
    let typed = TypedInput::parse(plugin.kind(), input)?;
    let series = |fresh: bool| -> Result<(Percentiles, Option<Percentiles>), ToolsError> {
        for _ in 0..iterations / 10 {
            typed.call(plugin, fresh)?;
        }
        let mut wall = Vec::with_capacity(iterations);
        let mut cpu = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let cpu_started = thread_cpu_ns();
            let started = Instant::now();
            typed.call(plugin, fresh)?;
            wall.push(started.elapsed().as_nanos() as u64);
            if let (Some(before), Some(after)) = (cpu_started, thread_cpu_ns()) {
                cpu.push(after.saturating_sub(before));
            }
        }
        let cpu = (cpu.len() == wall.len()).then(|| Percentiles::of(&mut cpu));
        Ok((Percentiles::of(&mut wall), cpu))
    };
    let (warm, warm_cpu) = series(false)?;
    let (fresh, fresh_cpu) = series(true)?;
    Ok(BenchReport {
        plugin: plugin.name().to_string(),
        component_bytes: 0,
        compile_ms: 0.0,
        first_instantiation_us: 0.0,
        warm,
        fresh,
        warm_cpu,
        fresh_cpu,
    })
}

/// Everything `plinthctl plugin bench` measures of one package or component: its size,
/// the compile time, the first instantiation, then [`bench`]'s warm and fresh series.
/// Use a host without a compiled-code cache, so that the compile time is real.
pub fn bench_file(
    host: &PluginHost,
    bytes: &[u8],
    config: &BTreeMap<String, String>,
    input: &Value,
    iterations: usize,
) -> Result<BenchReport, ToolsError> {
    let loaded = load_timed(host, bytes, config)?;
    let started = Instant::now();
    loaded.plugin.prewarm()?;
    let first_instantiation = started.elapsed();
    let report = bench(&loaded.plugin, input, iterations)?;
    Ok(BenchReport {
        component_bytes: loaded.wasm_bytes as u64,
        compile_ms: loaded.compile.as_secs_f64() * 1e3,
        first_instantiation_us: first_instantiation.as_secs_f64() * 1e6,
        ..report
    })
}

/// A fixture input decoded once, so benchmarks time only the call.
pub enum TypedInput {
    /// Pricing input.
    Pricing(PricingInput),
    /// Scheduling input.
    Request(RequestInput),
    /// Reporting input.
    Report(ReportInput),
}

impl TypedInput {
    /// Decode `input` for a plugin of `kind`.
    pub fn parse(kind: PluginKind, input: &Value) -> Result<TypedInput, ToolsError> {
        let json_error = |source| ToolsError::Json {
            path: PathBuf::from("<bench input>"),
            source,
        };
        Ok(match kind {
            PluginKind::Pricing => {
                TypedInput::Pricing(serde_json::from_value(input.clone()).map_err(json_error)?)
            }
            PluginKind::Scheduling => {
                TypedInput::Request(serde_json::from_value(input.clone()).map_err(json_error)?)
            }
            PluginKind::Reporting => {
                TypedInput::Report(serde_json::from_value(input.clone()).map_err(json_error)?)
            }
        })
    }

    /// Call `plugin` once; policy refusals and policy errors count as answers.
    pub fn call(&self, plugin: &Plugin, fresh: bool) -> Result<(), ToolsError> {
        let outcome = match (self, plugin.kind()) {
            (TypedInput::Pricing(input), PluginKind::Pricing) => if fresh {
                plugin.price_fresh(&input.request, &input.state)
            } else {
                plugin.price(&input.request, &input.state)
            }
            .map(drop),
            (TypedInput::Request(input), PluginKind::Scheduling) => plugin
                .schedule_with(instance(fresh), &input.request, &input.state, input.facts())
                .map(drop),
            (TypedInput::Report(input), _) => plugin
                .report_with(instance(fresh), &input.records, input.facts())
                .map(drop),
            _ => return Err(ToolsError::UnknownKind),
        };
        match outcome {
            Ok(()) | Err(PluginCallError::Policy { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_series() {
        let mut samples: Vec<u64> = (1..=100).collect();
        let percentiles = Percentiles::of(&mut samples);
        assert_eq!(percentiles.p50_ns, 50);
        assert_eq!(percentiles.p99_ns, 99);
        assert_eq!(percentiles.max_ns, 100);
        assert_eq!(percentiles.mean_ns, 50);
    }

    #[test]
    fn json_diff_points_at_the_field() {
        let expected =
            serde_json::json!({"Ok": {"Offer": {"price_micros": 5, "currency": "USDC"}}});
        let actual = serde_json::json!({"Ok": {"Offer": {"price_micros": 6, "currency": "USDC"}}});
        assert_eq!(
            json_diff(&expected, &actual).unwrap(),
            "/Ok/Offer/price_micros: expected 5, got 6"
        );
        assert_eq!(json_diff(&expected, &expected), None);
    }

    #[test]
    fn keygen_refuses_to_overwrite_and_signs() {
        let temp = tempfile::tempdir().unwrap();
        let key = temp.path().join("author.key");
        let public_hex = keygen(&key).unwrap();
        assert_eq!(public_hex.len(), 64);
        assert!(keygen(&key).is_err());
        let manifest = Manifest {
            name: "x".to_string(),
            version: "1".to_string(),
            kind: PluginKind::Pricing,
            wit: "plinth:policy@0.1.1".to_string(),
            wasm_sha256: String::new(),
            limits: None,
            config: BTreeMap::new(),
        };
        let bytes = sign(manifest, b"wasm".to_vec(), Some(&key)).unwrap();
        let trust = TrustPolicy::from_hex_keys(&[public_hex], false).unwrap();
        Package::parse(&bytes).unwrap().verify(&trust).unwrap();
    }
}
