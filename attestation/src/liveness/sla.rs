//! SLA policies (TOML) and their judgement of a verified liveness ledger.
//!
//! ```toml
//! min_availability_percent = 99.5   # proven uptime over the window
//! max_outage_minutes = 30           # no single outage longer than this
//! drained_gpus = "partial"          # "ignore", "partial" (by drained share) or "outage"
//! tolerance_seconds = 30            # lateness an entry may have and still prove continuity
//! ```
//!
//! Every key is optional; an absent limit is not judged. Unknown keys are refused, so a
//! misspelt limit is never silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::verify::LivenessReport;
use crate::check::{Aspect, Check};

/// Errors reading a policy.
#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    /// The file could not be read.
    #[error("cannot read SLA policy {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("SLA policy {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the key.
        message: String,
    },
}

/// How drained GPUs count against availability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainedGpus {
    /// Drained GPUs do not count.
    Ignore,
    /// Time with drained GPUs counts as outage by the drained share of the GPUs.
    #[default]
    Partial,
    /// Time with any GPU drained counts as a whole outage.
    Outage,
}

/// Proven availability in percent of the window, drained GPUs counted as `drained` says
/// (100 for an empty window).
pub fn availability_percent(report: &LivenessReport, drained: DrainedGpus) -> f64 {
    let window = report.window_ms();
    if window == 0 {
        return 100.0;
    }
    let lost = match drained {
        DrainedGpus::Ignore => 0,
        DrainedGpus::Partial => report.drained_share_ms,
        DrainedGpus::Outage => report.drained_any_ms,
    };
    (report.uptime_ms.saturating_sub(lost) as f64 / window as f64) * 100.0
}

/// An SLA policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaPolicy {
    /// Least proven availability, percent of the window.
    pub min_availability_percent: Option<f64>,
    /// Longest single outage, minutes.
    pub max_outage_minutes: Option<u64>,
    /// How drained GPUs count.
    pub drained_gpus: DrainedGpus,
    /// Lateness an entry may have and still prove continuity, seconds.
    pub tolerance_seconds: Option<u64>,
}

impl SlaPolicy {
    /// Parses a policy from TOML text; `name` is used in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Self, SlaError> {
        let policy: SlaPolicy = toml::from_str(text).map_err(|err| SlaError::Parse {
            path: name.to_owned(),
            message: err.message().trim().to_owned(),
        })?;
        if let Some(percent) = policy.min_availability_percent
            && !(0.0..=100.0).contains(&percent)
        {
            return Err(SlaError::Parse {
                path: name.to_owned(),
                message: format!("min_availability_percent {percent} is not between 0 and 100"),
            });
        }
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Self, SlaError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SlaError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_toml(&text, &name)
    }

    /// Judges a report: one check per limit the policy sets.
    pub fn judge(&self, report: &LivenessReport) -> Vec<Check> {
        let mut checks = Vec::new();
        let availability = availability_percent(report, self.drained_gpus);
        if let Some(min) = self.min_availability_percent {
            checks.push(Check::from_bool(
                "sla.availability",
                Aspect::Configuration,
                availability >= min,
                format!(
                    "proven availability {availability:.3}% over {} s (minimum {min}%, drained GPUs: {:?})",
                    report.window_ms() / 1000,
                    self.drained_gpus
                ),
            ));
        }
        if let Some(max_minutes) = self.max_outage_minutes {
            let longest = report.outages.iter().max_by_key(|o| o.length_ms);
            let limit_ms = max_minutes.saturating_mul(60_000);
            let detail = match longest {
                Some(outage) => format!(
                    "longest outage {} s ({:?}, before seq {}); limit {max_minutes} min",
                    outage.length_ms / 1000,
                    outage.cause,
                    outage.next_seq
                ),
                None => format!("no outage; limit {max_minutes} min"),
            };
            checks.push(Check::from_bool(
                "sla.max_outage",
                Aspect::Configuration,
                longest.is_none_or(|o| o.length_ms <= limit_ms),
                detail,
            ));
        }
        checks
    }
}
