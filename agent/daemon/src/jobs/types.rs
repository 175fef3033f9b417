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

/// Answer to a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
