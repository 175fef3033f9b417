//! The job manager's API types: what a submission carries and what a job looks like to
//! the admin API and `plinthctl`.

use plinth_jobs::meter::Usage;
use plinth_jobs::spec::JobSpec;
use serde::{Deserialize, Serialize};

use super::state::JobState;

/// A job submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The job spec (`plinth-job/1`).
    pub spec: serde_json::Value,
    /// Tenant.
    pub tenant: String,
    /// Lease id.
    pub lease_id: String,
    /// CDI devices assigned by the scheduler (fully-qualified names).
    #[serde(default)]
    pub gpu_devices: Vec<String>,
}

/// The terms of the signed quote a job was leased under: they price its receipts in place
/// of the built-in pricing policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotedTerms {
    /// The quote's id (carried by every receipt of the job).
    pub quote_id: String,
    /// Price of one GPU-hour in micro-units, as quoted.
    pub gpu_hour_micros: u64,
    /// Currency code, as quoted.
    pub currency: String,
    /// SHA-256 (hex) of the pricing policy that quoted: the plugin's wasm, or the built-in
    /// policy's settings.
    pub pricing_sha256: String,
}

/// Answer to a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SubmitAnswer {
    /// The new job's id.
    pub id: String,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Lease id.
    pub lease_id: String,
    /// Lifecycle state.
    pub state: JobState,
    /// End reason or error; while preparing, the image import's progress.
    pub reason: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
    /// Created (unix ms).
    pub created_at_ms: u64,
    /// Started (unix ms).
    pub started_at_ms: Option<u64>,
    /// Ended (unix ms).
    pub ended_at_ms: Option<u64>,
    /// End of the last receipted period (unix ms).
    pub billed_until_ms: Option<u64>,
    /// Final usage (when ended).
    pub usage: Option<Usage>,
    /// The spec.
    pub spec: JobSpec,
    /// Assigned devices.
    pub gpu_devices: Vec<String>,
    /// The image the job runs (manifest digest, reference, verified signer), once prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<plinth_attestation::receipt::ReceiptImage>,
}
