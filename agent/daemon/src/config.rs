//! Layered, typed and strict agent configuration.
//!
//! Sources are applied in this order, later ones overriding earlier ones key by key:
//!
//! 1. built-in defaults ([`AgentConfig::default`]);
//! 2. the vendor file, `/usr/lib/plinth/agent.toml` (shipped by the package);
//! 3. the main file, `/etc/plinth/agent.toml` (the sysadmin's);
//! 4. drop-ins, `/etc/plinth/agent.toml.d/*.toml`, in lexical order;
//! 5. environment variables `PLINTH_<SECTION>_<KEY>` (for example
//!    `PLINTH_API_SOCKET=/tmp/a.sock`).
//!
//! `--config PATH` replaces the vendor and main files with `PATH` alone and reads drop-ins
//! from `PATH.d/`; this is how tests run the agent unprivileged in a temporary directory.
//!
//! Every file is checked on its own against the schema, so an unknown key or a value of
//! the wrong type is reported with the file, line and key where it was written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The vendor configuration file shipped by the package.
pub const VENDOR_CONFIG: &str = "/usr/lib/plinth/agent.toml";
/// The sysadmin's main configuration file.
pub const MAIN_CONFIG: &str = "/etc/plinth/agent.toml";
/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "PLINTH_";

/// Errors found while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists but could not be read.
    #[error("cannot read config file {path}")]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A drop-in directory exists but could not be listed.
    #[error("cannot list config drop-in directory {path}")]
    ReadDir {
        /// The directory that could not be listed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file holding the mistake.
        path: PathBuf,
        /// 1-based line of the mistake (0 when unknown).
        line: usize,
        /// 1-based column of the mistake (0 when unknown).
        column: usize,
        /// What was wrong, naming the key.
        message: String,
    },
    /// An environment variable names an unknown key or holds a value of the wrong type.
    #[error("environment variable {variable}: {message}")]
    InvalidEnv {
        /// The offending variable.
        variable: String,
        /// What was wrong.
        message: String,
    },
    /// The merged configuration is well-formed but a value is not acceptable.
    #[error("invalid value for {key}: {message}")]
    Validate {
        /// The dotted key, for example `api.socket_mode`.
        key: String,
        /// Why the value was refused.
        message: String,
    },
}

/// The whole agent configuration, as the daemon uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the agent keeps state and how it logs.
    pub agent: AgentSection,
    /// The local admin API.
    pub api: ApiSection,
    /// Policy plugins: trusted keys, directory, per-plugin configuration.
    pub plugins: PluginsConfig,
    /// Sandboxed jobs: OCI runtime, image sources, CDI, limits, receipts.
    pub jobs: JobsSection,
    /// Images: registries, signature policy, pull limits, the cache bound.
    pub images: ImagesSection,
    /// Attestation evidence: the TPM, the SEV-SNP guest device, NVIDIA GPUs.
    pub attestation: AttestationSection,
    /// The liveness ledger.
    pub liveness: LivenessSection,
    /// The Prometheus metrics listener.
    pub metrics: MetricsSection,
}

/// The `[metrics]` section: where Prometheus scrapes the agent's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `address:port` of the plain-HTTP listener serving `GET /metrics`; empty: no
    /// listener (the admin socket's `GET /v1/metrics` still serves the same text).
    pub listen: String,
}

/// The default metrics listener: loopback only, on the port OpenTelemetry's Prometheus
/// exporters use.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
        }
    }
}

impl MetricsSection {
    /// The listener's address; `None` when turned off (empty `listen`).
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .map(Some)
            .map_err(|_| ConfigError::Validate {
                key: "metrics.listen".to_owned(),
                message: format!(
                    "{:?} is not an address:port such as \"127.0.0.1:9464\" (empty turns the listener off)",
                    self.listen
                ),
            })
    }
}

/// The `[liveness]` section: how often the agent appends to its liveness ledger, and
/// the network-quality measurements of `[liveness.net]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivenessSection {
    /// Seconds between ledger entries (1 to 3600).
    pub interval_s: u64,
    /// Network quality: the measurement endpoint and the peers to measure.
    pub net: NetSection,
}

impl Default for LivenessSection {
    fn default() -> Self {
        Self {
            interval_s: 60,
            net: NetSection::default(),
        }
    }
}

/// The `[liveness.net]` section: the TLS endpoint peers measure this agent through, and
/// the peers (pinned by their node keys) this agent measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSection {
    /// `address:port` of the measurement endpoint; empty: no endpoint.
    pub listen: String,
    /// Seconds between measurements of every peer; 0: only `plinthctl net probe`.
    pub interval_s: u64,
    /// Round trips measured per peer (1 to 100).
    pub samples: u32,
    /// Bytes of the throughput transfer (at most 64 MiB; 0: no transfer).
    pub transfer_bytes: u64,
    /// Requests one peer may make of the endpoint per minute.
    pub requests_per_minute: u32,
    /// The peers, the only hosts measured and the only clients served.
    pub peers: Vec<NetPeerSection>,
}

impl Default for NetSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            interval_s: 300,
            samples: 10,
            transfer_bytes: 8 * 1024 * 1024,
            requests_per_minute: 60,
            peers: Vec::new(),
        }
    }
}

/// One `[[liveness.net.peers]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetPeerSection {
    /// The name `plinthctl net probe` and the metrics use.
    pub name: String,
    /// `host:port` of the peer's measurement endpoint.
    pub address: String,
    /// The peer's node key (hex Ed25519 public key), pinned for TLS both ways.
    pub node_key: String,
}

impl LivenessSection {
    /// Checks `[liveness]` and `[liveness.net]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Validate {
            key: key.to_owned(),
            message,
        };
        if !(1..=3600).contains(&self.interval_s) {
            return Err(invalid(
                "liveness.interval_s",
                format!("{} is not between 1 and 3600 seconds", self.interval_s),
            ));
        }
        let net = &self.net;
        if !net.listen.is_empty() && net.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "liveness.net.listen",
                format!(
                    "{:?} is not an address:port such as \"0.0.0.0:7443\"",
                    net.listen
                ),
            ));
        }
        if !(1..=100).contains(&net.samples) {
            return Err(invalid(
                "liveness.net.samples",
                format!("{} is not between 1 and 100", net.samples),
            ));
        }
        if net.transfer_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "liveness.net.transfer_bytes",
                format!("{} is more than 64 MiB", net.transfer_bytes),
            ));
        }
        if net.requests_per_minute == 0 {
            return Err(invalid(
                "liveness.net.requests_per_minute",
                "must be greater than 0".to_owned(),
            ));
        }
        for (idx, peer) in net.peers.iter().enumerate() {
            let key = |field: &str| format!("liveness.net.peers[{idx}].{field}");
            if peer.name.is_empty() || net.peers[..idx].iter().any(|p| p.name == peer.name) {
                return Err(invalid(
                    &key("name"),
                    format!("{:?} is empty or not unique", peer.name),
                ));
            }
            if !peer.address.contains(':') {
                return Err(invalid(
                    &key("address"),
                    format!("{:?} is not host:port", peer.address),
                ));
            }
            let hex_ok = peer.node_key.len() == 64
                && peer
                    .node_key
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !hex_ok {
                return Err(invalid(
                    &key("node_key"),
                    format!(
                        "{:?} is not a node key (64 lowercase hex digits)",
                        peer.node_key
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The `[images]` section: where registry images come from, who must have signed them,
/// the limits of a pull and the size of the image cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// Bytes of unpacked images the cache keeps before least-recently-used images that no
    /// job uses are evicted; 0 means unbounded.
    pub cache_max_bytes: u64,
    /// Layers downloaded at the same time by one pull.
    pub concurrency: u32,
    /// Seconds to connect (TCP and TLS) to a registry.
    pub connect_timeout_seconds: u64,
    /// Seconds a registry may send nothing before the attempt fails (a stall).
    pub stall_timeout_seconds: u64,
    /// Retries of a failed download (with backoff, resumed where the registry allows).
    pub retries: u32,
    /// Largest manifest or image index, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest image config, in bytes.
    pub max_config_bytes: u64,
    /// Most layers of one image.
    pub max_layers: u32,
    /// Largest compressed image (config and layers), in bytes.
    pub max_image_bytes: u64,
    /// Most entries of one image index.
    pub max_index_entries: u32,
    /// Most redirects one request follows.
    pub max_redirects: u32,
    /// The registries this host may pull from (`[[images.registries]]`); none: the host
    /// has no registry access and runs local images only.
    pub registries: Vec<RegistrySection>,
    /// Named cosign public keys (PEM files, `cosign.pub`) that `signed_by` lists refer to.
    pub keys: BTreeMap<String, PathBuf>,
    /// Per-tenant signature policy, replacing a registry's `signed_by` for that tenant.
    pub tenants: BTreeMap<String, TenantImagesPolicy>,
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self {
            cache_max_bytes: 0,
            concurrency: 4,
            connect_timeout_seconds: 10,
            stall_timeout_seconds: 30,
            retries: 3,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_config_bytes: 4 * 1024 * 1024,
            max_layers: 256,
            max_image_bytes: 64 * 1024 * 1024 * 1024,
            max_index_entries: 256,
            max_redirects: 5,
            registries: Vec::new(),
            keys: BTreeMap::new(),
            tenants: BTreeMap::new(),
        }
    }
}

/// The `[attestation]` section: where the evidence collectors find the hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttestationSection {
    /// The TPM's TCTI (`device:/dev/tpmrm0`; tests `swtpm:host=127.0.0.1,port=N`); an
    /// empty string turns the TPM collector off.
    pub tpm_tcti: String,
    /// The persistent handle of the attestation key (created there, under the EK, on
    /// first use).
    pub ak_handle: u32,
    /// The EK's (and so the AK's) algorithm: `rsa2048`, `ecc-p256` or `ecc-p384`.
    pub ek_algorithm: plinth_attestation::collect::EkAlgorithm,
    /// The PCRs to quote, as tpm2-tools writes them (`sha256:0-9,14`, banks joined by `+`).
    pub pcrs: plinth_attestation::collect::PcrSpec,
    /// The TCG event log the kernel exposes.
    pub event_log: PathBuf,
    /// The SEV-SNP guest device: `/dev/sev-guest`, or empty to turn SNP collection off.
    pub sev_device: PathBuf,
    /// Collect NVIDIA GPU inventory and CC attestation reports through NVML.
    pub nvidia: bool,
}

impl Default for AttestationSection {
    fn default() -> Self {
        Self {
            tpm_tcti: "device:/dev/tpmrm0".to_owned(),
            ak_handle: 0x8101_0002,
            ek_algorithm: plinth_attestation::collect::EkAlgorithm::default(),
            pcrs: plinth_attestation::collect::PcrSpec::default(),
            event_log: PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements"),
            sev_device: PathBuf::from("/dev/sev-guest"),
            nvidia: true,
        }
    }
}

/// One `[[images.registries]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// The registry as image references name it (`registry.example`, `127.0.0.1:5000`).
    pub host: String,
    /// Mirrors tried in order before the host itself.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Root-only (0600) TOML file with `username` and `password`, or `token`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// PEM CA bundle that alone is trusted for this registry's TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP; accepted only when the host and every mirror are loopback addresses.
    #[serde(default)]
    pub insecure: bool,
    /// Names of `[images.keys]`, one of which must have signed every image from here.
    #[serde(default)]
    pub signed_by: Vec<String>,
}

/// One `[images.tenants.<tenant>]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantImagesPolicy {
    /// Names of `[images.keys]`, one of which must have signed the tenant's registry
    /// images (replaces the registry's `signed_by`; empty: no signature required).
    pub signed_by: Vec<String>,
}

impl ImagesSection {
    /// Checks `[images]`: positive limits, unique hosts, `insecure` only for loopback,
    /// key names that exist, absolute file paths.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Validate { key, message };
        for (key, value) in [
            ("images.concurrency", u64::from(self.concurrency)),
            ("images.stall_timeout_seconds", self.stall_timeout_seconds),
            (
                "images.connect_timeout_seconds",
                self.connect_timeout_seconds,
            ),
            ("images.max_manifest_bytes", self.max_manifest_bytes),
            ("images.max_config_bytes", self.max_config_bytes),
            ("images.max_layers", u64::from(self.max_layers)),
            ("images.max_image_bytes", self.max_image_bytes),
            (
                "images.max_index_entries",
                u64::from(self.max_index_entries),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key.to_owned(), "must be greater than 0".to_owned()));
            }
        }
        let known_keys = |key: String, names: &[String]| -> Result<(), ConfigError> {
            match names.iter().find(|name| !self.keys.contains_key(*name)) {
                Some(name) => Err(invalid(
                    key,
                    format!("{name:?} is not a key in [images.keys]"),
                )),
                None => Ok(()),
            }
        };
        let mut hosts = std::collections::BTreeSet::new();
        for (idx, registry) in self.registries.iter().enumerate() {
            let key = |field: &str| format!("images.registries[{idx}].{field}");
            if registry.host.is_empty() || registry.host.contains('/') {
                return Err(invalid(
                    key("host"),
                    format!("{:?} is not HOST[:PORT]", registry.host),
                ));
            }
            if !hosts.insert(registry.host.as_str()) {
                return Err(invalid(
                    key("host"),
                    format!("{} is listed twice", registry.host),
                ));
            }
            if registry.insecure {
                let remote = std::iter::once(&registry.host)
                    .chain(&registry.mirrors)
                    .find(|host| !plinth_jobs::registry::is_loopback_host(host));
                if let Some(remote) = remote {
                    return Err(invalid(
                        key("insecure"),
                        format!(
                            "plain HTTP is allowed only for loopback hosts, and {remote} is not one"
                        ),
                    ));
                }
            }
            for (field, path) in [
                ("credentials_file", &registry.credentials_file),
                ("ca_file", &registry.ca_file),
            ] {
                if let Some(path) = path
                    && !path.is_absolute()
                {
                    return Err(invalid(
                        key(field),
                        format!("{} is not an absolute path", path.display()),
                    ));
                }
            }
            known_keys(key("signed_by"), &registry.signed_by)?;
        }
        for (tenant, policy) in &self.tenants {
            known_keys(
                format!("images.tenants.{tenant}.signed_by"),
                &policy.signed_by,
            )?;
        }
        for (name, path) in &self.keys {
            if !path.is_absolute() {
                return Err(invalid(
                    format!("images.keys.{name}"),
                    format!("{} is not an absolute path", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// The TCTI names libtss2 ships loaders for.
const TCTI_NAMES: &[&str] = &["device", "swtpm", "mssim", "tabrmd"];

impl AttestationSection {
    /// Checks what the schema alone cannot: the AK handle's range, the TCTI's name and
    /// the SNP device.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |key: &str, message: String| ConfigError::Validate {
            key: format!("attestation.{key}"),
            message,
        };
        plinth_attestation::collect::check_ak_handle(self.ak_handle)
            .map_err(|message| refuse("ak_handle", message))?;
        let tcti_name = self.tpm_tcti.split(':').next().unwrap_or_default();
        if !self.tpm_tcti.is_empty() && !TCTI_NAMES.contains(&tcti_name) {
            return Err(refuse(
                "tpm_tcti",
                format!(
                    "{:?} names no TCTI; use one of {} (e.g. device:/dev/tpmrm0), or \"\" to turn the TPM off",
                    self.tpm_tcti,
                    TCTI_NAMES.join(", ")
                ),
            ));
        }
        let sev_guest = Path::new(plinth_attestation::collect::snp::SEV_GUEST_DEVICE);
        if !self.sev_device.as_os_str().is_empty() && self.sev_device != sev_guest {
            return Err(refuse(
                "sev_device",
                format!(
                    "{} is not supported: the SEV-SNP guest driver is opened as {} (or set \"\" to turn SNP off)",
                    self.sev_device.display(),
                    sev_guest.display()
                ),
            ));
        }
        Ok(())
    }
}

/// The `[plugins]` section of agent.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory of installed packages, one `<kind>.plinthpkg` per kind (default:
    /// `<agent.state_dir>/plugins`).
    pub dir: Option<PathBuf>,
    /// Private directory for compiled code, mode 0700 and owned by the agent's user
    /// (default: `<agent.state_dir>/plugin-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Ed25519 public keys (64 hex digits) whose signed packages are accepted.
    pub trusted_keys: Vec<String>,
    /// Accept unsigned packages (development only).
    pub allow_unsigned: bool,
    /// Operator configuration per plugin name, overriding the manifest's defaults.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// Directory with self-test fixtures per plugin name (`<dir>/<name>/*.input.json`);
    /// plugins without fixtures get a smoke test.
    pub fixtures_dir: Option<PathBuf>,
    /// Settings of the built-in fallback policies.
    pub fallback: plinth_plugin_host::fallback::FallbackConfig,
}

/// The `[jobs]` section: how tenants' jobs run and are billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSection {
    /// Run jobs at all (a host may only attest and price).
    pub enabled: bool,
    /// The OCI runtime: `runc`, `crun`, or an absolute path.
    pub runtime: PathBuf,
    /// Directories from which images may be imported (OCI layouts and archives);
    /// empty means `<state_dir>/import`.
    pub image_roots: Vec<PathBuf>,
    /// Container Device Interface spec directories, in priority order.
    pub cdi_dirs: Vec<PathBuf>,
    /// cgroup parent of job containers.
    pub cgroup_parent: String,
    /// Cap of each captured log (stdout, stderr), in bytes; the oldest bytes go first.
    pub log_cap_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    pub kill_grace_seconds: u64,
    /// Seconds between interim receipts of a running job.
    pub receipt_interval_seconds: u64,
    /// Whether a job may ask for the host's network namespace (`"network": "host"`);
    /// off by default, so tenants get a private namespace with loopback only.
    pub allow_host_network: bool,
    /// The privileged runner's socket (`plinth-runner`); unset, the agent starts job
    /// supervisors and runc itself, which needs root (tests and development only).
    pub runner_socket: Option<PathBuf>,
}

impl Default for JobsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            runtime: PathBuf::from("runc"),
            image_roots: Vec::new(),
            cdi_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            cgroup_parent: "plinth".to_owned(),
            log_cap_bytes: 8 * 1024 * 1024,
            kill_grace_seconds: 10,
            receipt_interval_seconds: 300,
            allow_host_network: false,
            runner_socket: None,
        }
    }
}

/// The `[agent]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Directory for persistent state: the database and the node key.
    pub state_dir: PathBuf,
    /// Directory for runtime files (sockets); recreated at boot.
    pub runtime_dir: PathBuf,
    /// Default log filter, in `tracing` `EnvFilter` syntax (`info`, `plinth_agent=debug`).
    pub log_level: String,
    /// Where logs go.
    pub log_target: LogTarget,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/plinth"),
            runtime_dir: PathBuf::from("/run/plinth"),
            log_level: "info".to_owned(),
            log_target: LogTarget::Auto,
        }
    }
}

/// Where the agent sends its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when started by systemd (`JOURNAL_STREAM` set), stderr otherwise.
    Auto,
    /// Always structured logs to journald.
    Journald,
    /// Always human-readable text to stderr.
    Stderr,
}

/// The `[api]` section: the local admin API on a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Path of the admin socket. Relative paths are taken under `agent.runtime_dir`.
    pub socket: PathBuf,
    /// Permission bits of the socket, as an octal string (`"0660"`).
    pub socket_mode: String,
    /// Group that owns the socket (its members may administer the agent); unset keeps the
    /// agent's primary group.
    pub socket_group: Option<String>,
    /// Address (`host:port`) of the remote network API (HTTP/JSON over mutual TLS); unset
    /// (the default) or empty serves no network API. See docs/api.md.
    pub listen: Option<String>,
    /// The clients of the network API, each pinned by its certificate.
    pub clients: Vec<ApiClientSection>,
    /// Largest request body the network API reads, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Sustained requests per second each client may make (429 past it).
    pub rate_per_second: u32,
    /// Requests a client may make in a burst above the sustained rate.
    pub rate_burst: u32,
    /// How long a quote stays valid, in seconds.
    pub quote_ttl_seconds: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("admin.sock"),
            socket_mode: "0660".to_owned(),
            socket_group: None,
            listen: None,
            clients: Vec::new(),
            max_body_bytes: 256 * 1024,
            rate_per_second: 2000,
            rate_burst: 4000,
            quote_ttl_seconds: 300,
        }
    }
}

impl ApiSection {
    /// Checks the network API's settings: a listen address that parses, positive limits,
    /// and clients with unique names, known roles and 32-byte hex pins.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Validate { key, message };
        if let Some(listen) = &self.listen
            && !listen.is_empty()
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "api.listen".to_owned(),
                format!("{listen:?} is not an address such as 0.0.0.0:7443"),
            ));
        }
        for (key, value) in [
            ("api.max_body_bytes", self.max_body_bytes as u64),
            ("api.rate_per_second", u64::from(self.rate_per_second)),
            ("api.rate_burst", u64::from(self.rate_burst)),
            ("api.quote_ttl_seconds", self.quote_ttl_seconds),
        ] {
            if value == 0 {
                return Err(invalid(key.to_owned(), "must be greater than 0".to_owned()));
            }
        }
        for (position, client) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("api.clients[{position}].{field}");
            if client.name.is_empty()
                || !client
                    .name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
            {
                return Err(invalid(
                    key("name"),
                    format!(
                        "{:?} is not a name of letters, digits, '-', '_' or '.'",
                        client.name
                    ),
                ));
            }
            if self.clients[..position]
                .iter()
                .any(|other| other.name == client.name)
            {
                return Err(invalid(
                    key("name"),
                    format!("{:?} is listed twice", client.name),
                ));
            }
            if !["market", "checker", "admin"].contains(&client.role.as_str()) {
                return Err(invalid(
                    key("role"),
                    format!("{:?} is not market, checker or admin", client.role),
                ));
            }
            let pin = &client.cert_sha256;
            if pin.len() != 64
                || !pin
                    .bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(invalid(
                    key("cert_sha256"),
                    format!("{pin:?} is not 64 lowercase hex digits (a SHA-256)"),
                ));
            }
        }
        Ok(())
    }
}

/// One `[[api.clients]]` entry: a client of the network API, its role, and the pin of its
/// TLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientSection {
    /// The client's name (quotes, leases and jobs are scoped to it; the tenant of its jobs).
    pub name: String,
    /// `market`, `checker` or `admin`.
    pub role: String,
    /// Lowercase hex SHA-256 of the client's whole certificate (DER), or of its
    /// SubjectPublicKeyInfo (DER), so that a renewed certificate over the same key keeps
    /// the pin.
    pub cert_sha256: String,
}

impl AgentConfig {
    /// The admin socket path with relative paths resolved under the runtime directory.
    pub fn socket_path(&self) -> PathBuf {
        self.agent.runtime_dir.join(&self.api.socket)
    }

    /// The SQLite database path.
    pub fn database_path(&self) -> PathBuf {
        self.agent.state_dir.join("plinth.db")
    }

    /// The node key path.
    pub fn node_key_path(&self) -> PathBuf {
        self.agent.state_dir.join("node.key")
    }

    /// The admin socket mode parsed from its octal string.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        parse_mode(&self.api.socket_mode)
    }

    /// Checks values that the schema alone cannot check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mode = self.socket_mode()?;
        if mode & 0o007 != 0 {
            return Err(ConfigError::Validate {
                key: "api.socket_mode".to_owned(),
                message: format!(
                    "{:04o} gives other users access to the admin API; use 0660 or stricter",
                    mode
                ),
            });
        }
        for (key, path) in [
            ("agent.state_dir", &self.agent.state_dir),
            ("agent.runtime_dir", &self.agent.runtime_dir),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Validate {
                    key: key.to_owned(),
                    message: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        let jobs = &self.jobs;
        let positive = [
            ("jobs.log_cap_bytes", jobs.log_cap_bytes),
            (
                "jobs.receipt_interval_seconds",
                jobs.receipt_interval_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Validate {
                    key: key.to_owned(),
                    message: "must be greater than 0".to_owned(),
                });
            }
        }
        if jobs.runtime.as_os_str().is_empty() {
            return Err(ConfigError::Validate {
                key: "jobs.runtime".to_owned(),
                message: "must name an OCI runtime such as runc or crun".to_owned(),
            });
        }
        if self.api.socket.as_os_str().is_empty() {
            return Err(ConfigError::Validate {
                key: "api.socket".to_owned(),
                message: "must not be empty".to_owned(),
            });
        }
        self.api.validate()?;
        self.images.validate()?;
        self.attestation.validate()?;
        self.liveness.validate()?;
        self.metrics.listen_addr()?;
        tracing_subscriber::EnvFilter::try_new(&self.agent.log_level).map_err(|err| {
            ConfigError::Validate {
                key: "agent.log_level".to_owned(),
                message: format!("{:?} is not a log filter: {err}", self.agent.log_level),
            }
        })?;
        Ok(())
    }
}

fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| ConfigError::Validate {
            key: "api.socket_mode".to_owned(),
            message: format!("{text:?} is not an octal permission mode such as \"0660\""),
        })
}

/// Where configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// Files read in order; missing files are skipped.
    pub files: Vec<PathBuf>,
    /// Drop-in directory whose `*.toml` files are read after `files`, in lexical order.
    pub dropin_dir: Option<PathBuf>,
    /// Environment variables to apply last (name, value).
    pub env: Vec<(String, String)>,
}

impl ConfigSources {
    /// The standard locations, plus the process environment.
    pub fn system() -> Self {
        Self {
            files: vec![PathBuf::from(VENDOR_CONFIG), PathBuf::from(MAIN_CONFIG)],
            dropin_dir: Some(PathBuf::from(format!("{MAIN_CONFIG}.d"))),
            env: std::env::vars().collect(),
        }
    }

    /// One explicit file (`--config PATH`) and its `PATH.d/` drop-ins, plus the
    /// process environment.
    pub fn explicit(path: &Path) -> Self {
        let mut dropin = path.as_os_str().to_owned();
        dropin.push(".d");
        Self {
            files: vec![path.to_owned()],
            dropin_dir: Some(PathBuf::from(dropin)),
            env: std::env::vars().collect(),
        }
    }

    /// `--config PATH` when given, else the standard locations.
    pub fn from_arg(path: Option<&Path>) -> Self {
        match path {
            Some(path) => Self::explicit(path),
            None => Self::system(),
        }
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged, validated configuration.
    pub config: AgentConfig,
    /// Files that were read, in order.
    pub files_read: Vec<PathBuf>,
    /// Environment variables that were applied.
    pub env_applied: Vec<String>,
    /// Non-fatal remarks to log once logging is up (for example ignored variables).
    pub warnings: Vec<String>,
    /// SHA-256 of the merged configuration (canonical TOML), for attestation claims.
    pub sha256: String,
}

impl fmt::Display for LoadedConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.files_read.is_empty() {
            writeln!(formatter, "# no config files found; built-in defaults")?;
        }
        for file in &self.files_read {
            writeln!(formatter, "# read {}", file.display())?;
        }
        for variable in &self.env_applied {
            writeln!(formatter, "# applied ${variable}")?;
        }
        writeln!(formatter, "# sha256 {}", self.sha256)?;
        let text = toml::to_string_pretty(&self.config).map_err(|_| fmt::Error)?;
        write!(formatter, "{text}")
    }
}

/// Variables with the `PLINTH_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["PLINTH_VECTORS", "PLINTH_SOCKET", "PLINTH_LOG"];

/// Loads, merges and validates configuration from `sources`.
pub fn load(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let mut merged =
        toml::Table::try_from(AgentConfig::default()).map_err(|err| ConfigError::Validate {
            key: "(defaults)".to_owned(),
            message: err.to_string(),
        })?;
    let mut files_read = Vec::new();
    let mut paths: Vec<PathBuf> = sources.files.clone();
    if let Some(dir) = &sources.dropin_dir {
        paths.extend(dropin_files(dir)?);
    }
    for path in paths {
        let Some(table) = read_file(&path)? else {
            continue;
        };
        merge(&mut merged, table);
        files_read.push(path);
    }

    let mut env_applied = Vec::new();
    let mut warnings = Vec::new();
    let mut env: Vec<&(String, String)> = sources
        .env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (name, value) in env {
        if NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        match apply_env(&mut merged, name, value)? {
            true => env_applied.push(name.clone()),
            false => warnings.push(format!(
                "ignoring environment variable {name}: it names no configuration section"
            )),
        }
    }

    let config: AgentConfig =
        AgentConfig::deserialize(toml::Value::Table(merged)).map_err(|err| {
            ConfigError::InvalidEnv {
                variable: "(merged configuration)".to_owned(),
                message: err.to_string(),
            }
        })?;
    config.validate()?;
    let canonical = toml::to_string(&config).map_err(|err| ConfigError::Validate {
        key: "(all)".to_owned(),
        message: err.to_string(),
    })?;
    let sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ));
    Ok(LoadedConfig {
        config,
        files_read,
        env_applied,
        warnings,
        sha256,
    })
}

fn dropin_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one file, checking it against the schema; `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::ReadFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_layer(path, &text).map(Some)
}

/// Parses one configuration layer's text, checking it against the schema on its own so
/// that errors point into it (`path:line:column`). `path` is only used in errors.
pub fn parse_layer(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str::<AgentConfig>(text).map_err(|err| invalid(path, text, &err))?;
    toml::from_str::<toml::Table>(text).map_err(|err| invalid(path, text, &err))
}

fn invalid(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, column) = err
        .span()
        .map(|span| line_column(text, span.start))
        .unwrap_or((0, 0));
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message: err.message().trim().to_owned(),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `PLINTH_<SECTION>_<KEY>`; returns false when no section matches.
fn apply_env(merged: &mut toml::Table, name: &str, value: &str) -> Result<bool, ConfigError> {
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name).to_lowercase();
    let Some((section, key)) = rest.split_once('_') else {
        return Ok(false);
    };
    let Some(toml::Value::Table(section_table)) = merged.get_mut(section) else {
        return Ok(false);
    };
    section_table.insert(key.to_owned(), env_value(value));
    // Check the section with the new value now, so the error names the variable.
    let mut probe = toml::Table::new();
    probe.insert(
        section.to_owned(),
        toml::Value::Table(section_table.clone()),
    );
    AgentConfig::deserialize(toml::Value::Table(probe)).map_err(|err| ConfigError::InvalidEnv {
        variable: name.to_owned(),
        message: err.message().trim().to_owned(),
    })?;
    Ok(true)
}

/// Interprets an environment value as a TOML value when it parses as one (numbers,
/// booleans, arrays, quoted strings), else as a bare string.
fn env_value(value: &str) -> toml::Value {
    let document = format!("value = {value}");
    match toml::from_str::<BTreeMap<String, toml::Value>>(&document) {
        Ok(mut parsed) => parsed
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_listen_is_checked_and_can_be_turned_off() {
        let fixture = Fixture::new();
        let loaded = load(&fixture.sources(&[])).unwrap();
        assert_eq!(
            loaded.config.metrics.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let loaded = load(&fixture.sources(&[("PLINTH_METRICS_LISTEN", "")])).unwrap();
        assert_eq!(loaded.config.metrics.listen_addr().unwrap(), None);
        let err = load(&fixture.sources(&[("PLINTH_METRICS_LISTEN", "localhost")])).unwrap_err();
        let chain = crate::error_chain(&err);
        assert!(
            chain.contains("metrics.listen") && chain.contains("localhost"),
            "{chain}"
        );
    }

    #[test]
    fn defaults_have_one_source() {
        // The built-in configuration, an empty file, a file with every section present but
        // empty, and each section alone all mean the same configuration.
        let built_in = AgentConfig::default();
        let mut texts = vec![
            String::new(),
            "[agent]\n[api]\n[plugins]\n[plugins.fallback]\n[plugins.config]\n[jobs]\n[images]\n[images.keys]\n[images.tenants]\n[attestation]\n".to_owned(),
        ];
        for section in [
            "agent",
            "api",
            "plugins",
            "plugins.fallback",
            "jobs",
            "images",
            "attestation",
            "liveness",
            "metrics",
        ] {
            texts.push(format!("[{section}]\n"));
        }
        for text in texts {
            let parsed: AgentConfig = toml::from_str(&text).unwrap();
            assert_eq!(parsed, built_in, "{text:?}");
        }
        assert_eq!(
            built_in.plugins.fallback,
            plinth_plugin_host::fallback::FallbackConfig::default()
        );
    }

    #[test]
    fn images_section_is_checked() {
        let parse = |text: &str| {
            let config: AgentConfig = toml::from_str(text).unwrap();
            config.validate().map_err(|err| err.to_string())
        };
        let good = "[images]\ncache_max_bytes = 1000\n[images.keys]\nrelease = \"/etc/plinth/release.pub\"\n\
            [[images.registries]]\nhost = \"127.0.0.1:5000\"\ninsecure = true\nsigned_by = [\"release\"]\n\
            [images.tenants.acme]\nsigned_by = []\n";
        parse(good).unwrap();
        let remote = "[[images.registries]]\nhost = \"registry.example\"\ninsecure = true\n";
        let err = parse(remote).unwrap_err();
        assert!(
            err.contains("images.registries[0].insecure") && err.contains("registry.example"),
            "{err}"
        );
        let unknown = "[[images.registries]]\nhost = \"r.example\"\nsigned_by = [\"nope\"]\n";
        assert!(
            parse(unknown)
                .unwrap_err()
                .contains("images.registries[0].signed_by")
        );
        let twice = "[[images.registries]]\nhost = \"r.example\"\n[[images.registries]]\nhost = \"r.example\"\n";
        assert!(parse(twice).unwrap_err().contains("listed twice"));
        let zero = "[images]\nconcurrency = 0\n";
        assert!(parse(zero).unwrap_err().contains("images.concurrency"));
        assert!(
            toml::from_str::<AgentConfig>("[[images.registries]]\nhost = \"a\"\nmirror = []\n")
                .is_err()
        );
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn sources(&self, env: &[(&str, &str)]) -> ConfigSources {
            ConfigSources {
                files: vec![
                    self.dir.path().join("vendor.toml"),
                    self.dir.path().join("agent.toml"),
                ],
                dropin_dir: Some(self.dir.path().join("agent.toml.d")),
                env: env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            }
        }
    }

    #[test]
    fn defaults_when_nothing_exists() {
        let fixture = Fixture::new();
        let loaded = load(&fixture.sources(&[])).unwrap();
        assert_eq!(loaded.config, AgentConfig::default());
        assert!(loaded.files_read.is_empty());
        assert_eq!(
            loaded.config.socket_path(),
            PathBuf::from("/run/plinth/admin.sock")
        );
    }

    #[test]
    fn layers_apply_in_order() {
        let fixture = Fixture::new();
        fixture.write(
            "vendor.toml",
            "[agent]\nstate_dir = \"/v\"\nlog_level = \"debug\"\n",
        );
        fixture.write("agent.toml", "[agent]\nstate_dir = \"/main\"\n");
        fixture.write("agent.toml.d/20-b.toml", "[api]\nsocket_mode = \"0600\"\n");
        fixture.write(
            "agent.toml.d/10-a.toml",
            "[api]\nsocket_mode = \"0640\"\nsocket = \"a.sock\"\n",
        );
        fixture.write("agent.toml.d/ignored.conf", "garbage = [");
        let loaded = load(&fixture.sources(&[("PLINTH_AGENT_RUNTIME_DIR", "/rt")])).unwrap();
        let config = loaded.config;
        assert_eq!(config.agent.state_dir, PathBuf::from("/main"));
        assert_eq!(config.agent.log_level, "debug");
        assert_eq!(config.api.socket_mode, "0600", "later drop-in wins");
        assert_eq!(config.socket_path(), PathBuf::from("/rt/a.sock"));
        assert_eq!(loaded.files_read.len(), 4);
        assert_eq!(loaded.env_applied, vec!["PLINTH_AGENT_RUNTIME_DIR"]);
    }

    #[test]
    fn env_overrides_files_and_parses_types() {
        let fixture = Fixture::new();
        fixture.write("agent.toml", "[api]\nsocket_group = \"wheel\"\n");
        let loaded = load(&fixture.sources(&[
            ("PLINTH_API_SOCKET_GROUP", "plinth"),
            ("PLINTH_AGENT_LOG_TARGET", "stderr"),
        ]))
        .unwrap();
        assert_eq!(loaded.config.api.socket_group.as_deref(), Some("plinth"));
        assert_eq!(loaded.config.agent.log_target, LogTarget::Stderr);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let fixture = Fixture::new();
        let path = fixture.write(
            "agent.toml",
            "[agent]\nstate_dir = \"/x\"\nstate_dri = \"/y\"\n",
        );
        let err = load(&fixture.sources(&[])).unwrap_err();
        let ConfigError::Invalid {
            path: err_path,
            line,
            message,
            ..
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(err_path, &path);
        assert_eq!(*line, 3);
        assert!(message.contains("state_dri"), "{message}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", path.display()))
        );
    }

    #[test]
    fn unknown_section_is_refused() {
        let fixture = Fixture::new();
        fixture.write("agent.toml.d/50-x.toml", "\n[agnet]\nstate_dir = \"/x\"\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("agnet"));
        assert!(err.to_string().contains("50-x.toml"));
    }

    #[test]
    fn wrong_type_is_refused() {
        let fixture = Fixture::new();
        fixture.write("agent.toml", "[agent]\nlog_target = 3\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { line: 2, .. }), "{err}");
        fixture.write("agent.toml", "[agent]\nlog_target = \"syslog\"\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(err.to_string().contains("syslog"), "{err}");
    }

    #[test]
    fn syntax_error_is_refused() {
        let fixture = Fixture::new();
        fixture.write("agent.toml", "[agent\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { line: 1, .. }), "{err}");
    }

    #[test]
    fn unreadable_file_is_refused() {
        let fixture = Fixture::new();
        // A directory where a file is expected cannot be read as one.
        std::fs::create_dir(fixture.dir.path().join("agent.toml")).unwrap();
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
        assert!(err.to_string().contains("agent.toml"));
    }

    #[test]
    fn unknown_env_key_is_refused() {
        let fixture = Fixture::new();
        let err = load(&fixture.sources(&[("PLINTH_API_SOCKETT", "/x")])).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidEnv { .. }), "{err}");
        assert!(err.to_string().contains("PLINTH_API_SOCKETT"), "{err}");
        assert!(err.to_string().contains("sockett"), "{err}");
    }

    #[test]
    fn bad_env_value_is_refused() {
        let fixture = Fixture::new();
        let err = load(&fixture.sources(&[("PLINTH_AGENT_LOG_TARGET", "everywhere")])).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidEnv { .. }), "{err}");
        assert!(err.to_string().contains("PLINTH_AGENT_LOG_TARGET"));
    }

    #[test]
    fn env_without_section_is_a_warning() {
        let fixture = Fixture::new();
        let loaded =
            load(&fixture.sources(&[("PLINTH_VECTORS", "/v"), ("PLINTH_NOPE_X", "1")])).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("PLINTH_NOPE_X"));
    }

    #[test]
    fn validation_errors_name_the_key() {
        let fixture = Fixture::new();
        fixture.write("agent.toml", "[api]\nsocket_mode = \"0666\"\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(err.to_string().contains("api.socket_mode"), "{err}");
        fixture.write("agent.toml", "[api]\nsocket_mode = \"rw\"\n");
        assert!(
            load(&fixture.sources(&[]))
                .unwrap_err()
                .to_string()
                .contains("\"rw\"")
        );
        fixture.write("agent.toml", "[agent]\nstate_dir = \"relative\"\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(err.to_string().contains("agent.state_dir"), "{err}");
        fixture.write("agent.toml", "[agent]\nlog_level = \"=[\"\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(err.to_string().contains("agent.log_level"), "{err}");
    }

    #[test]
    fn jobs_section_is_checked() {
        let fixture = Fixture::new();
        fixture.write(
            "agent.toml",
            "[jobs]\nruntime = \"/usr/bin/crun\"\nreceipt_interval_seconds = 60\n",
        );
        let loaded = load(&fixture.sources(&[("PLINTH_JOBS_KILL_GRACE_SECONDS", "3")])).unwrap();
        assert_eq!(loaded.config.jobs.runtime, PathBuf::from("/usr/bin/crun"));
        assert_eq!(loaded.config.jobs.receipt_interval_seconds, 60);
        assert_eq!(loaded.config.jobs.kill_grace_seconds, 3);
        fixture.write("agent.toml", "[jobs]\nreceipt_interval_seconds = 0\n");
        let err = load(&fixture.sources(&[])).unwrap_err();
        assert!(
            err.to_string().contains("jobs.receipt_interval_seconds"),
            "{err}"
        );
    }

    #[test]
    fn attestation_section_layers_and_is_checked() {
        let fixture = Fixture::new();
        fixture.write(
            "agent.toml",
            "[attestation]\nak_handle = 0x81010005\npcrs = \"sha1:0-7+sha256:0-9,14\"\nnvidia = false\n",
        );
        let loaded = load(&fixture.sources(&[(
            "PLINTH_ATTESTATION_TPM_TCTI",
            "swtpm:host=127.0.0.1,port=2321",
        )]))
        .unwrap();
        let attestation = &loaded.config.attestation;
        assert_eq!(attestation.tpm_tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(attestation.ak_handle, 0x8101_0005);
        assert_eq!(attestation.pcrs.to_string(), "sha1:0-7+sha256:0-9,14");
        assert!(!attestation.nvidia);
        let loaded =
            load(&fixture.sources(&[("PLINTH_ATTESTATION_AK_HANDLE", "0x81010009")])).unwrap();
        assert_eq!(loaded.config.attestation.ak_handle, 0x8101_0009);
        let cases: &[(&str, &str)] = &[
            (
                "[attestation]\npcrs = \"sha256:0-99\"\n",
                "\"0-99\" in bank sha256",
            ),
            (
                "[attestation]\nak_handle = 0x80000001\n",
                "attestation.ak_handle",
            ),
            (
                "[attestation]\ntpm_tcti = \"pigeon:x\"\n",
                "attestation.tpm_tcti",
            ),
            (
                "[attestation]\nsev_device = \"/dev/other\"\n",
                "attestation.sev_device",
            ),
            ("[attestation]\nek_algorithm = \"rsa1024\"\n", "\"rsa1024\""),
            ("[attestation]\ntpm = 1\n", "tpm"),
        ];
        for (text, expected) in cases {
            fixture.write("agent.toml", text);
            let err = crate::error_chain(&load(&fixture.sources(&[])).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
        fixture.write(
            "agent.toml",
            "[attestation]\ntpm_tcti = \"\"\nsev_device = \"\"\n",
        );
        assert!(load(&fixture.sources(&[])).is_ok());
    }

    #[test]
    fn config_digest_changes_with_content() {
        let fixture = Fixture::new();
        let first = load(&fixture.sources(&[])).unwrap().sha256;
        fixture.write("agent.toml", "[agent]\nlog_level = \"debug\"\n");
        let second = load(&fixture.sources(&[])).unwrap().sha256;
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
    }
}
