//! `GET /v1/status`: what the agent is, how long it has run, and what it found.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::SharedState;

/// The answer of `GET /v1/status`; `plinthctl status` renders it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// The agent's version.
    pub version: String,
    /// Process id of the agent.
    pub pid: u32,
    /// When the agent started (RFC 3339).
    pub started_at: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// How the previous run ended: `none`, `clean`, or `unclean` (crash or kill).
    pub previous_run: String,
    /// The node identity.
    pub node: NodeStatus,
    /// The state store.
    pub store: StoreStatus,
    /// Detected hardware.
    pub hardware: HardwareStatus,
    /// The configuration in force.
    pub config: ConfigStatus,
    /// The network API, when `api.listen` is set: its address, the SHA-256 of the node
    /// certificate, the number of pinned clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_api: Option<crate::netapi::NetApiStatus>,
}

/// Node identity facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Key file.
    pub key_path: String,
}

/// Store health facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// Database file.
    pub path: String,
    /// Schema version.
    pub schema_version: u32,
    /// Integrity check result at start.
    pub integrity: String,
    /// Journal mode.
    pub journal_mode: String,
    /// Whether the database answered a query just now.
    pub responsive: bool,
}

/// Detected hardware facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HardwareStatus {
    /// TPM device, if any.
    pub tpm: Option<String>,
    /// SEV-SNP guest device, if any.
    pub sev_snp: Option<String>,
    /// Number of NVIDIA GPUs; 0 means the agent runs CPU-only.
    pub nvidia_gpus: usize,
    /// Summary line.
    pub summary: String,
    /// GPUs as the GPU module sees them (NVML): total, healthy, drained.
    #[serde(default)]
    pub gpus: crate::gpu::GpuSummary,
    /// Why the host runs CPU-only, when it does (no driver, no GPU).
    #[serde(default)]
    pub cpu_only: Option<String>,
}

/// Configuration facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigStatus {
    /// Files read, in order.
    pub files: Vec<String>,
    /// SHA-256 of the merged configuration.
    pub sha256: String,
}

/// Routes of this module.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/v1/status", get(status))
}

async fn status(State(state): State<SharedState>) -> Json<StatusReport> {
    let store = state.store.clone();
    let responsive = tokio::task::spawn_blocking(move || {
        store
            .connection()
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    let health = state.store.health();
    let display = |path: &std::path::Path| path.display().to_string();
    Json(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: state.started_at.clone(),
        uptime_seconds: state.started.elapsed().as_secs(),
        previous_run: match &state.previous_run {
            crate::store::PreviousRun::None => "none".to_owned(),
            crate::store::PreviousRun::Clean => "clean".to_owned(),
            crate::store::PreviousRun::Unclean { started_at } => {
                format!("unclean (run started {started_at} did not shut down)")
            }
        },
        node: NodeStatus {
            public_key: state.identity.public_key_hex(),
            key_path: display(state.identity.path()),
        },
        store: StoreStatus {
            path: display(&health.path),
            schema_version: health.schema_version,
            integrity: health.integrity.clone(),
            journal_mode: health.journal_mode.clone(),
            responsive,
        },
        hardware: HardwareStatus {
            tpm: state.hardware.tpm.as_deref().map(display),
            sev_snp: state.hardware.sev_snp.as_deref().map(display),
            nvidia_gpus: state.hardware.nvidia_gpus.len(),
            summary: state.hardware.summary.clone(),
            gpus: state.gpus.summary(),
            cpu_only: state.gpus.cpu_only().map(str::to_owned),
        },
        config: ConfigStatus {
            files: state.config.files_read.iter().map(|p| display(p)).collect(),
            sha256: state.config.sha256.clone(),
        },
        network_api: state.network_api.get().cloned(),
    })
}
