//! The drain policy: which events and health readings withdraw a GPU.
//!
//! Fatal XIDs (the hardware or driver is in a state a job cannot recover from) and
//! uncorrectable ECC errors drain the GPU; application XIDs (a job's own fault: illegal
//! address, graphics exception, reset channel, ...) are counted, not drained; every
//! other XID is counted and logged. A storm of corrected ECC errors (more than
//! [`CORRECTABLE_STORM`] between two polls) drains too: it precedes page retirement
//! and usually an uncorrectable error. A GPU that stops answering is drained as lost.
//!
//! XID meanings follow NVIDIA's "XID Errors" table (r550): 48 double-bit ECC, 63/64 ECC
//! page retirement or row remapping event/failure, 74 NVLink error, 79 fallen off the
//! bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC error, 119/120 GSP
//! RPC timeout/error, 140 unrecoverable ECC; 13, 31, 43, 45 and 68 are the
//! application's.

use super::nvml::{GpuEventKind, GpuHealth};

/// XIDs that drain the GPU.
pub const FATAL_XIDS: &[u64] = &[48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140];

/// XIDs caused by the application: counted, not drained.
pub const APPLICATION_XIDS: &[u64] = &[13, 31, 43, 45, 68];

/// More corrected ECC errors than this between two health polls drains the GPU.
pub const CORRECTABLE_STORM: u64 = 1000;

/// What the policy makes of an event or a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Withdraw the GPU, with the reason recorded.
    Drain(String),
    /// An application's fault: count it.
    Application(u64),
    /// Worth a log line and a count, nothing more.
    Note(String),
}

/// The verdict on one driver event.
pub fn classify(kind: &GpuEventKind) -> Verdict {
    match kind {
        GpuEventKind::Xid { code } if FATAL_XIDS.contains(code) => {
            Verdict::Drain(format!("fatal XID {code}"))
        }
        GpuEventKind::Xid { code } if APPLICATION_XIDS.contains(code) => {
            Verdict::Application(*code)
        }
        GpuEventKind::Xid { code } => Verdict::Note(format!("XID {code}")),
        GpuEventKind::UncorrectableEcc => Verdict::Drain("uncorrectable ECC error".to_owned()),
        GpuEventKind::CorrectableEcc => Verdict::Note("corrected ECC error".to_owned()),
        GpuEventKind::Lost => Verdict::Drain("the GPU stopped answering (lost)".to_owned()),
    }
}

/// The verdict on a health reading compared with the previous one: `Some(reason)` when
/// the GPU must be drained. The first reading after the agent starts is the baseline for
/// the counters (they count since the driver loaded, and a GPU drained for them before
/// a restart stays drained through the store), so only increases drain.
pub fn judge_health(previous: Option<&GpuHealth>, current: &GpuHealth) -> Option<String> {
    if let (Some(ecc), Some(before)) = (
        current.ecc.as_ref(),
        previous.and_then(|health| health.ecc.as_ref()),
    ) {
        if ecc.volatile_uncorrected > before.volatile_uncorrected {
            return Some(format!(
                "uncorrectable ECC errors: {} (was {})",
                ecc.volatile_uncorrected, before.volatile_uncorrected
            ));
        }
        let corrected = ecc
            .volatile_corrected
            .saturating_sub(before.volatile_corrected);
        if corrected > CORRECTABLE_STORM {
            return Some(format!(
                "ECC storm: {corrected} corrected errors since the last poll"
            ));
        }
    }
    if current
        .retired_pages
        .as_ref()
        .is_some_and(|pages| pages.double_bit > 0 && pages.pending)
    {
        return Some("a page retirement for a double-bit error awaits a reset".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::nvml::EccCounts;

    #[test]
    fn fatal_xids_drain_application_xids_count_others_note() {
        for code in [48, 63, 64, 74, 79, 92, 94, 95] {
            assert!(matches!(
                classify(&GpuEventKind::Xid { code }),
                Verdict::Drain(_)
            ));
        }
        for code in [13, 31, 43, 45, 68] {
            assert_eq!(
                classify(&GpuEventKind::Xid { code }),
                Verdict::Application(code)
            );
        }
        assert!(matches!(
            classify(&GpuEventKind::Xid { code: 61 }),
            Verdict::Note(_)
        ));
        assert!(matches!(
            classify(&GpuEventKind::UncorrectableEcc),
            Verdict::Drain(_)
        ));
        assert!(matches!(
            classify(&GpuEventKind::CorrectableEcc),
            Verdict::Note(_)
        ));
    }

    fn with_ecc(corrected: u64, uncorrected: u64) -> GpuHealth {
        GpuHealth {
            ecc: Some(EccCounts {
                volatile_corrected: corrected,
                volatile_uncorrected: uncorrected,
                aggregate_uncorrected: uncorrected,
            }),
            ..GpuHealth::default()
        }
    }

    #[test]
    fn uncorrectable_counts_and_storms_drain_steady_counts_do_not() {
        assert_eq!(judge_health(None, &with_ecc(5, 0)), None);
        // The first reading is the baseline; an increase drains.
        assert_eq!(judge_health(None, &with_ecc(0, 1)), None);
        assert!(judge_health(Some(&with_ecc(0, 1)), &with_ecc(0, 2)).is_some());
        assert_eq!(judge_health(Some(&with_ecc(5, 1)), &with_ecc(900, 1)), None);
        let storm = judge_health(Some(&with_ecc(5, 1)), &with_ecc(2000, 1)).unwrap();
        assert!(storm.contains("ECC storm"), "{storm}");
        assert!(judge_health(None, &GpuHealth::default()).is_none());
    }
}
