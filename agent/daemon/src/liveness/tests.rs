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
