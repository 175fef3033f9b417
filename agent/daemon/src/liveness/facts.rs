//! What the agent tells policy plugins through WIT 0.1.2: scheduling plugins the latest
//! network-quality measurement of each configured peer (`network.peers`, from
//! [`NetService::latest`], i.e. `plinthctl net probe` and the periodic measurements),
//! reporting plugins the liveness ledger's summary of a period (`liveness.summary`,
//! from the ledger in the store).
//!
//! The summary is computed from the agent's own ledger without checking signatures (the
//! agent wrote it; checkers verify exports with `plinth-verify liveness`): the entries
//! of the period plus two intervals on either side, so that continuity across the
//! period's edges is proven by the neighbouring entries rather than reported as an
//! outage.

use std::sync::{Arc, Weak};

use plinth_attestation::liveness::verify::{OutageCause as LedgerCause, VerifyOptions, summarize};
use plinth_attestation::liveness::{GENESIS_HASH, NetSample};
use plinth_plugin_host::{HostFacts, LivenessSummary, Outage, OutageCause, PeerQuality};

use super::net::NetService;
use super::{LivenessError, LivenessService};

/// The plugin host's facts, read from the agent's services when a plugin asks. Holds
/// weak references: the services hold the plugin service, not the other way round.
#[derive(Debug, Default)]
pub struct AgentFacts {
    liveness: Option<Weak<LivenessService>>,
    net: Option<Weak<NetService>>,
}

impl AgentFacts {
    /// Facts from the ledger writer and the network-quality service, where they run.
    pub fn new(
        liveness: Option<&Arc<LivenessService>>,
        net: Option<&Arc<NetService>>,
    ) -> AgentFacts {
        AgentFacts {
            liveness: liveness.map(Arc::downgrade),
            net: net.map(Arc::downgrade),
        }
    }
}

impl HostFacts for AgentFacts {
    fn peers(&self) -> Vec<PeerQuality> {
        self.net
            .as_ref()
            .and_then(Weak::upgrade)
            .map(|net| net.latest().iter().map(peer_quality).collect())
            .unwrap_or_default()
    }

    fn liveness_summary(&self, from_s: u64, to_s: u64) -> Option<LivenessSummary> {
        let liveness = self.liveness.as_ref().and_then(Weak::upgrade)?;
        match liveness.summary(from_s, to_s) {
            Ok(summary) => Some(summary),
            Err(err) => {
                tracing::warn!(from_s, to_s, error = %crate::error_chain(&err), "cannot summarise the liveness ledger for a plugin");
                None
            }
        }
    }
}

/// A network-quality measurement as the `network` interface carries it.
pub fn peer_quality(sample: &NetSample) -> PeerQuality {
    PeerQuality {
        peer: sample.peer.clone(),
        rtt_min_us: sample.rtt_min_us,
        rtt_median_us: sample.rtt_median_us,
        rtt_p99_us: sample.rtt_p99_us,
        samples: u32::try_from(sample.samples).unwrap_or(u32::MAX),
        throughput_bytes_per_s: sample.throughput_bytes_per_s,
        measured_at_s: sample.at_ms / 1000,
    }
}

fn outage_cause(cause: LedgerCause) -> OutageCause {
    match cause {
        LedgerCause::Stopped => OutageCause::Stopped,
        LedgerCause::Unclean => OutageCause::Unclean,
        LedgerCause::Reboot => OutageCause::Reboot,
        LedgerCause::Missed => OutageCause::Missed,
        LedgerCause::NoEvidence => OutageCause::NoEvidence,
    }
}

impl LivenessService {
    /// What the ledger proves about `[from_s, to_s)` (Unix seconds), for reporting
    /// plugins: entries written in it, seconds covered and provably up, drained GPU time,
    /// outages with their causes, and its last entry.
    pub fn summary(&self, from_s: u64, to_s: u64) -> Result<LivenessSummary, LivenessError> {
        let from_ms = from_s.saturating_mul(1000);
        let to_ms = to_s.saturating_mul(1000).max(from_ms);
        let margin_ms = self.interval_s.saturating_mul(2000);
        let entries = self.entries(
            from_ms.saturating_sub(margin_ms),
            to_ms.saturating_add(margin_ms),
        )?;
        let report = summarize(
            &entries,
            &VerifyOptions {
                from_ms: Some(from_ms),
                to_ms: Some(to_ms),
                ..VerifyOptions::default()
            },
        );
        let in_period: Vec<_> = entries
            .iter()
            .filter(|entry| entry.wall_ms >= from_ms && entry.wall_ms < to_ms)
            .collect();
        let head = in_period.last();
        let head_hash = match head {
            Some(entry) => entry.hash()?,
            None => GENESIS_HASH.to_owned(),
        };
        let no_evidence_ms: u64 = report
            .outages
            .iter()
            .filter(|outage| outage.cause == LedgerCause::NoEvidence)
            .map(|outage| outage.length_ms)
            .sum();
        Ok(LivenessSummary {
            period_start_s: from_s,
            period_end_s: to_s,
            entries: in_period.len() as u64,
            covered_s: report.window_ms().saturating_sub(no_evidence_ms) / 1000,
            uptime_s: report.uptime_ms / 1000,
            drained_gpu_s: report.drained_share_ms / 1000,
            outages: report
                .outages
                .iter()
                .map(|outage| Outage {
                    start_s: outage.start_ms / 1000,
                    length_s: outage.length_ms / 1000,
                    cause: outage_cause(outage.cause),
                })
                .collect(),
            head_seq: head.map_or(0, |entry| entry.seq),
            head_hash,
        })
    }
}
