//! What the host tells plugins beyond a call's arguments (added in WIT 0.1.2): the
//! measured network quality to configured peers (`plinth:policy/network`, scheduling
//! plugins) and the liveness ledger's summary of a period (`plinth:policy/liveness`,
//! reporting plugins).
//!
//! The agent supplies them through a [`HostFacts`] implementation set once on the host
//! ([`crate::PluginHost::set_facts`]); every call then reads the facts current at its
//! start. Fixtures and tests supply them per call with [`FixedFacts`] (the `network`
//! and `liveness` members of a fixture input). A host with neither answers an empty
//! peer list and no summary, which is what a 0.1.2 plugin sees on a host that measures
//! nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::bindings::reporting::plinth::policy::liveness::{
    LivenessSummary, Outage, OutageCause,
};
pub use crate::bindings::scheduling::plinth::policy::network::PeerQuality;

/// Longest period a plugin may ask a liveness summary for: 31 days, in seconds.
pub const MAX_SUMMARY_PERIOD_S: u64 = 31 * 24 * 3600;

/// Most liveness summaries one plugin call may ask for; further asks answer none (each
/// reads the ledger, and a host call cannot be interrupted by the CPU deadline).
pub const MAX_SUMMARIES_PER_CALL: u32 = 64;

/// Most peers handed to a plugin per call (the configured peers are few; this bounds
/// what a misconfigured host lowers into the guest).
pub const MAX_PEERS: usize = 256;

/// The source of the facts plugins can ask for. Implemented by the agent over its
/// network-quality measurements and its liveness ledger.
pub trait HostFacts: Send + Sync {
    /// The latest measurement of every configured peer measured so far, by peer name.
    fn peers(&self) -> Vec<PeerQuality>;

    /// The liveness summary of `[from_s, to_s)` (Unix seconds); `None` when there is no
    /// ledger. Called only with `from_s < to_s` and at most [`MAX_SUMMARY_PERIOD_S`]
    /// apart.
    fn liveness_summary(&self, from_s: u64, to_s: u64) -> Option<LivenessSummary>;
}

/// Shared facts, as the host and the calls hold them.
pub type Facts = Arc<dyn HostFacts>;

/// A host that measures nothing and keeps no ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFacts;

impl HostFacts for NoFacts {
    fn peers(&self) -> Vec<PeerQuality> {
        Vec::new()
    }

    fn liveness_summary(&self, _from_s: u64, _to_s: u64) -> Option<LivenessSummary> {
        None
    }
}

/// Facts given in advance (fixtures, tests, benchmarks): the peers as listed, and the
/// summary whose period is exactly the one asked for (none otherwise), so that a fixture
/// also checks which periods a plugin asks about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedFacts {
    /// What `network.peers` answers.
    #[serde(default)]
    pub network: Vec<PeerQuality>,
    /// The summaries `liveness.summary` answers from.
    #[serde(default)]
    pub liveness: Vec<LivenessSummary>,
}

impl HostFacts for FixedFacts {
    fn peers(&self) -> Vec<PeerQuality> {
        self.network.clone()
    }

    fn liveness_summary(&self, from_s: u64, to_s: u64) -> Option<LivenessSummary> {
        self.liveness
            .iter()
            .find(|summary| summary.period_start_s == from_s && summary.period_end_s == to_s)
            .cloned()
    }
}

/// Per-call state of the facts interfaces inside a store.
pub(crate) struct CallFacts {
    pub(crate) facts: Facts,
    pub(crate) summaries_left: u32,
}

impl CallFacts {
    pub(crate) fn new(facts: Facts) -> CallFacts {
        CallFacts {
            facts,
            summaries_left: MAX_SUMMARIES_PER_CALL,
        }
    }

    pub(crate) fn peers(&self) -> Vec<PeerQuality> {
        let mut peers = self.facts.peers();
        peers.truncate(MAX_PEERS);
        peers
    }

    pub(crate) fn summary(&mut self, from_s: u64, to_s: u64) -> Option<LivenessSummary> {
        if to_s <= from_s || to_s - from_s > MAX_SUMMARY_PERIOD_S || self.summaries_left == 0 {
            return None;
        }
        self.summaries_left -= 1;
        self.facts.liveness_summary(from_s, to_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(from_s: u64, to_s: u64) -> LivenessSummary {
        LivenessSummary {
            period_start_s: from_s,
            period_end_s: to_s,
            entries: 60,
            covered_s: to_s - from_s,
            uptime_s: to_s - from_s,
            drained_gpu_s: 0,
            outages: Vec::new(),
            head_seq: 60,
            head_hash: "ab".repeat(32),
        }
    }

    #[test]
    fn fixed_facts_answer_exact_periods_only() {
        let facts = FixedFacts {
            network: Vec::new(),
            liveness: vec![summary(3600, 7200)],
        };
        assert_eq!(
            facts.liveness_summary(3600, 7200),
            Some(summary(3600, 7200))
        );
        assert_eq!(facts.liveness_summary(3600, 7201), None);
        assert_eq!(NoFacts.liveness_summary(3600, 7200), None);
    }

    #[test]
    fn calls_are_bounded() {
        let mut call = CallFacts::new(Arc::new(FixedFacts {
            network: Vec::new(),
            liveness: vec![summary(0, 3600)],
        }));
        assert_eq!(call.summary(3600, 3600), None, "empty period");
        assert_eq!(call.summary(0, MAX_SUMMARY_PERIOD_S + 1), None, "too long");
        for _ in 0..MAX_SUMMARIES_PER_CALL {
            assert!(call.summary(0, 3600).is_some());
        }
        assert_eq!(call.summary(0, 3600), None, "budget spent");
    }
}
