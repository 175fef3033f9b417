//! Named checks and the appraisal that collects them.
//!
//! Every verifier returns an [`Appraisal`]: a list of [`Check`]s, each with a
//! stable dotted name (`snp.signature`, `tpm.pcr_digest`, ...), a status and a
//! human-readable detail. The human report, `--json` and the EAR token are all
//! renderings of this one structure.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The check ran and the evidence satisfied it.
    Pass,
    /// The check ran and the evidence failed it.
    Fail,
    /// The check did not apply (no reference value, masked field, ...).
    Skip,
}

/// Which aspect of trustworthiness a check speaks to (maps onto the EAR
/// trustworthiness vector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aspect {
    /// Signatures and certificate chains to a vendor root: genuine hardware.
    Hardware,
    /// The identity of this particular chip, GPU or TPM.
    InstanceIdentity,
    /// Firmware versions, TCB levels, debug and policy bits.
    Configuration,
    /// Measurements of code: launch digests, PCRs, GPU measurements.
    Executables,
    /// Freshness: nonces and report data.
    Freshness,
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable dotted name, e.g. `snp.signature`.
    pub name: String,
    /// Pass, fail or skip.
    pub status: CheckStatus,
    /// What was compared, or why it failed.
    pub detail: String,
    /// What the check speaks to.
    pub aspect: Aspect,
}

impl Check {
    /// A passing check.
    pub fn pass(name: &str, aspect: Aspect, detail: impl Into<String>) -> Self {
        Self::new(name, aspect, CheckStatus::Pass, detail)
    }

    /// A failing check.
    pub fn fail(name: &str, aspect: Aspect, detail: impl Into<String>) -> Self {
        Self::new(name, aspect, CheckStatus::Fail, detail)
    }

    /// A check that did not apply.
    pub fn skip(name: &str, aspect: Aspect, detail: impl Into<String>) -> Self {
        Self::new(name, aspect, CheckStatus::Skip, detail)
    }

    /// Pass when `ok`, fail otherwise.
    pub fn from_bool(name: &str, aspect: Aspect, ok: bool, detail: impl Into<String>) -> Self {
        let status = if ok {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        };
        Self::new(name, aspect, status, detail)
    }

    /// A check from a result: `Ok(detail)` passes, `Err(reason)` fails.
    pub fn from_result(name: &str, aspect: Aspect, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(name, aspect, detail),
            Err(reason) => Self::fail(name, aspect, reason),
        }
    }

    fn new(name: &str, aspect: Aspect, status: CheckStatus, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status,
            detail: detail.into(),
            aspect,
        }
    }
}

/// The result of appraising one piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appraisal {
    /// What was appraised: `snp`, `gpu`, `tpm-quote`, `eventlog`.
    pub subject: String,
    /// Every check, in the order it ran.
    pub checks: Vec<Check>,
    /// Claims read from the evidence (measurements, TCB, PCRs...), for the report.
    pub claims: serde_json::Value,
    /// The nonce the evidence was bound to, when there is one (for the EAR token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl Appraisal {
    /// An empty appraisal of `subject`.
    pub fn new(subject: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            checks: Vec::new(),
            claims: serde_json::Value::Object(serde_json::Map::new()),
            nonce: None,
        }
    }

    /// Adds a check.
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Records a claim for the report.
    pub fn claim(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        if let serde_json::Value::Object(map) = &mut self.claims {
            map.insert(key.to_owned(), value.into());
        }
    }

    /// True when no check failed and at least one passed.
    pub fn verified(&self) -> bool {
        !self.checks.iter().any(|c| c.status == CheckStatus::Fail)
            && self.checks.iter().any(|c| c.status == CheckStatus::Pass)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    /// Renders the human report.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let verdict = if self.verified() {
            "VERIFIED"
        } else {
            "REJECTED"
        };
        let _ = writeln!(out, "{}: {verdict}", self.subject);
        for check in &self.checks {
            let mark = match check.status {
                CheckStatus::Pass => "pass",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skip => "skip",
            };
            let _ = writeln!(out, "  [{mark}] {}: {}", check.name, check.detail);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_a_pass_and_no_failure() {
        let mut appraisal = Appraisal::new("t");
        assert!(!appraisal.verified());
        appraisal.push(Check::skip("a", Aspect::Hardware, "n/a"));
        assert!(!appraisal.verified());
        appraisal.push(Check::pass("b", Aspect::Hardware, "ok"));
        assert!(appraisal.verified());
        appraisal.push(Check::fail("c", Aspect::Hardware, "bad"));
        assert!(!appraisal.verified());
        assert!(appraisal.to_human().contains("[FAIL] c: bad"));
    }
}
