//! The ledger writer against a real SQLite store and node key, with the test clock.

use std::sync::Arc;

use plinth_attestation::liveness::verify::{
    LivenessFault, OutageCause, VerifyOptions, parse_probes, verify,
};

use super::*;

const BOOT: &str = "0b0b0b0b-1111-2222-3333-444444444444";
const T0: u64 = 1_780_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
    clock: Arc<TestClock>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(&dir.path().join("plinth.db"), crate::migrations::MIGRATIONS).unwrap(),
        );
        let identity =
            Arc::new(NodeIdentity::load_or_create(&dir.path().join("node.key")).unwrap());
        Self {
            _dir: dir,
            store,
            identity,
            clock: Arc::new(TestClock::new(T0, 10_000, BOOT)),
        }
    }

    /// A new agent run (recorded in the store) with its writer.
    fn run(&self) -> (i64, LivenessService) {
        let (run_id, _) = self.store.begin_run("test").unwrap();
        let service = LivenessService::new(
            self.store.clone(),
            self.identity.clone(),
            self.clock.clone(),
            run_id,
            60,
            HealthSources::default(),
        );
        (run_id, service)
    }

    fn ticks(&self, service: &LivenessService, n: usize) {
        for _ in 0..n {
            self.clock.advance(60_000, 60_000);
            service.tick().unwrap().unwrap();
        }
    }

    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            node_key: Some(self.identity.public_key_hex()),
            ..VerifyOptions::default()
        }
    }

    fn ledger(&self) -> Vec<u8> {
        export(&self.store, None, None).unwrap()
    }
}

#[test]
fn a_clean_stop_and_an_unclean_end_become_gap_entries_with_their_cause() {
    let fx = Fixture::new();
    let (first_run, service) = fx.run();
    assert_eq!(service.begin().unwrap().kind, EntryKind::Start);
    fx.ticks(&service, 3);
    fx.clock.advance(5_000, 5_000);
    assert_eq!(service.stop().unwrap().unwrap().kind, EntryKind::Stop);
    assert!(
        service.tick().unwrap().is_none(),
        "nothing follows the stop entry"
    );
    fx.store.end_run(first_run, "clean").unwrap();

    fx.clock.advance(120_000, 120_000);
    let (_, service) = fx.run();
    let gap = service.begin().unwrap();
    assert_eq!(gap.kind, EntryKind::Gap);
    assert_eq!(gap.gap.as_ref().unwrap().cause, GapCause::Stopped);
    assert_eq!(gap.gap.as_ref().unwrap().length_ms, 120_000);
    fx.ticks(&service, 2);
    // This run ends without a stop entry or a clean record: SIGKILL.
    drop(service);
    fx.clock.advance(300_000, 300_000);
    let (_, service) = fx.run();
    let gap = service.begin().unwrap();
    assert_eq!(gap.gap.as_ref().unwrap().cause, GapCause::Unclean);
    fx.ticks(&service, 1);

    let report = verify(&fx.ledger(), &[], &fx.options()).unwrap();
    let outages: Vec<(OutageCause, u64)> = report
        .outages
        .iter()
        .map(|o| (o.cause, o.length_ms))
        .collect();
    assert_eq!(
        outages,
        vec![
            (OutageCause::Stopped, 120_000),
            (OutageCause::Unclean, 300_000)
        ]
    );
    assert_eq!(report.n_runs, 3);
}

#[test]
fn a_new_boot_id_is_a_reboot() {
    let fx = Fixture::new();
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.ticks(&service, 1);
    let rebooted = Arc::new(TestClock::new(T0 + 600_000, 3_000, "another-boot"));
    let (run_id, _) = fx.store.begin_run("test").unwrap();
    let service = LivenessService::new(
        fx.store.clone(),
        fx.identity.clone(),
        rebooted,
        run_id,
        60,
        HealthSources::default(),
    );
    assert_eq!(
        service.begin().unwrap().gap.unwrap().cause,
        GapCause::Reboot
    );
    let report = verify(&fx.ledger(), &[], &fx.options()).unwrap();
    assert_eq!(report.outages[0].cause, OutageCause::Reboot);
    assert_eq!(report.n_boots, 2);
}

/// The wall clock steps back 30 s (a bad NTP server): the agent's entries keep a
/// monotonic time from the boot clock and verify; an entry that took the rolled-back
/// clock at its word (re-signed with the node key) is named by the verifier.
#[test]
fn a_clock_rollback_through_the_test_clock() {
    let fx = Fixture::new();
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.ticks(&service, 2);
    fx.clock.advance(60_000, -30_000);
    let entry = service.tick().unwrap().unwrap();
    assert_eq!(entry.seq, 4);
    assert_eq!(
        entry.wall_ms,
        T0 + 3 * 60_000,
        "derived from the boot clock"
    );
    fx.ticks(&service, 1);
    let ledger = fx.ledger();
    assert!(verify(&ledger, &[], &fx.options()).is_ok());

    let mut entries: Vec<Entry> = ledger
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    // What the rolled-back clock read.
    entries[3].wall_ms = T0 + 90_000;
    let mut previous = (entries[2].seq, entries[2].hash().unwrap());
    let mut text = Vec::new();
    for (idx, entry) in entries.iter_mut().enumerate() {
        if idx >= 3 {
            let hash = entry
                .seal(Some((previous.0, &previous.1)), |b| fx.identity.sign(b))
                .unwrap();
            previous = (entry.seq, hash);
        }
        text.extend_from_slice(&serde_json::to_vec(entry).unwrap());
        text.push(b'\n');
    }
    let err = verify(&text, &[], &fx.options()).unwrap_err();
    assert_eq!((err.line, err.seq), (4, Some(4)));
    assert!(
        matches!(
            err.fault,
            LivenessFault::ClockBackwards {
                clock: "wall_ms",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_probe_answer_is_recorded_in_the_next_entry_and_verifies() {
    let fx = Fixture::new();
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.clock.advance(1_000, 1_000);
    let nonce = "ab".repeat(16);
    let answer = service.probe(&nonce).unwrap();
    assert_eq!(answer.head_seq, 1);
    assert!(answer.signature_verifies().unwrap());
    assert!(matches!(
        service.probe(&nonce),
        Err(LivenessError::DuplicateNonce { .. })
    ));
    assert!(matches!(
        service.probe("abc"),
        Err(LivenessError::BadNonce { .. })
    ));
    fx.ticks(&service, 1);
    let entry: Entry =
        serde_json::from_slice(fx.ledger().split(|b| *b == b'\n').nth(1).unwrap()).unwrap();
    assert_eq!(entry.anchors.len(), 1);
    assert_eq!(entry.anchors[0].nonce, nonce);
    let mut probes_file = serde_json::to_vec(&answer).unwrap();
    probes_file.push(b'\n');
    let probes: Vec<_> = parse_probes(&probes_file)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(idx, a)| (idx + 1, a))
        .collect();
    assert_eq!(
        verify(&fx.ledger(), &probes, &fx.options())
            .unwrap()
            .n_probes,
        1
    );

    // Rate limit: at most MAX_ANCHORS_PER_ENTRY answers wait for one entry.
    for idx in 0..MAX_ANCHORS_PER_ENTRY {
        service.probe(&format!("{idx:032x}")).unwrap();
    }
    assert!(matches!(
        service.probe(&"cd".repeat(16)),
        Err(LivenessError::RateLimited)
    ));
    fx.ticks(&service, 1);
    assert!(service.probe(&"cd".repeat(16)).is_ok());
}

#[test]
fn export_selects_by_time() {
    let fx = Fixture::new();
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.ticks(&service, 4);
    let part = export(&fx.store, Some(T0 + 60_000), Some(T0 + 180_000)).unwrap();
    assert_eq!(
        part.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        3
    );
    let partial = VerifyOptions {
        partial: true,
        ..fx.options()
    };
    assert_eq!(verify(&part, &[], &partial).unwrap().first_seq, 2);
}

/// What a reporting plugin gets for a period (WIT 0.1.2 `liveness.summary`): the
/// entries written in it, the unclean outage with its length, and uptime proven across
/// the period's edges by the entries just outside it.
#[test]
fn a_period_summary_for_reporting_plugins_names_the_outage() {
    use plinth_plugin_host::{HostFacts, OutageCause as PluginCause};

    let fx = Fixture::new();
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.ticks(&service, 20);
    // SIGKILL: no stop entry, no clean end; back after 5 minutes.
    drop(service);
    fx.clock.advance(300_000, 300_000);
    let (_, service) = fx.run();
    service.begin().unwrap();
    fx.ticks(&service, 20);
    let service = Arc::new(service);

    // The period starts 5 entries into the first run and ends 5 before the last entry.
    let from_s = (T0 + 5 * 60_000) / 1000;
    let to_s = (T0 + 20 * 60_000 + 300_000 + 15 * 60_000) / 1000;
    let summary = service.summary(from_s, to_s).unwrap();
    assert_eq!(
        (summary.period_start_s, summary.period_end_s),
        (from_s, to_s)
    );
    assert_eq!(summary.outages.len(), 1, "{summary:?}");
    let outage = &summary.outages[0];
    assert_eq!(outage.cause, PluginCause::Unclean);
    assert_eq!(outage.length_s, 300);
    assert_eq!(outage.start_s, (T0 + 20 * 60_000) / 1000);
    assert_eq!(summary.uptime_s, to_s - from_s - 300);
    assert_eq!(summary.covered_s, to_s - from_s);
    // seqs 6..=21 (first run) and 22..=36 (the gap entry and 14 ticks) are in [from, to).
    assert_eq!(summary.entries, 31);
    assert_eq!(summary.head_seq, 36);
    let head = service.entries(0, u64::MAX).unwrap();
    let head = head.iter().find(|entry| entry.seq == 36).unwrap();
    assert_eq!(summary.head_hash, head.hash().unwrap());

    // Through the facts the plugin host reads, and a period past the ledger's end.
    let facts = facts::AgentFacts::new(Some(&service), None);
    assert_eq!(facts.liveness_summary(from_s, to_s), Some(summary));
    let later = facts.liveness_summary(to_s + 3600, to_s + 7200).unwrap();
    assert_eq!((later.entries, later.uptime_s, later.covered_s), (0, 0, 0));
    assert_eq!(later.outages[0].cause, PluginCause::NoEvidence);
    assert!(facts.peers().is_empty(), "no network-quality service");
    drop(service);
    assert_eq!(
        facts.liveness_summary(from_s, to_s),
        None,
        "the ledger writer is gone"
    );
}

#[test]
fn network_samples_become_peer_quality_records() {
    let sample = NetSample {
        at_ms: 1_780_000_123_456,
        peer: "b".to_owned(),
        rtt_median_us: 240,
        rtt_min_us: 180,
        rtt_p99_us: 420,
        samples: 10,
        throughput_bytes_per_s: Some(1_180_000_000),
    };
    let quality = facts::peer_quality(&sample);
    assert_eq!(quality.peer, "b");
    assert_eq!(
        (
            quality.rtt_min_us,
            quality.rtt_median_us,
            quality.rtt_p99_us
        ),
        (180, 240, 420)
    );
    assert_eq!(quality.samples, 10);
    assert_eq!(quality.throughput_bytes_per_s, Some(1_180_000_000));
    assert_eq!(quality.measured_at_s, 1_780_000_123);
}
