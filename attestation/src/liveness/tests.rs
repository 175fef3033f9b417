//! Liveness ledgers: a good ledger's report, and every tamper case named at its entry.

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::sla::{DrainedGpus, SlaPolicy, availability_percent};
use super::verify::{LivenessFault, OutageCause, VerifyOptions, parse_probes, verify};
use super::*;

const BOOT_A: &str = "11111111-2222-3333-4444-555555555555";
const BOOT_B: &str = "99999999-2222-3333-4444-555555555555";

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn key_hex(key: &Ed25519KeyPair) -> String {
    hex::encode(key.public_key().as_ref())
}

fn sign(key: &Ed25519KeyPair) -> impl Fn(&[u8]) -> [u8; 64] + '_ {
    move |bytes: &[u8]| -> [u8; 64] { key.sign(bytes).as_ref().try_into().unwrap() }
}

/// Writes a ledger the way the agent does: 1-minute ticks.
struct Writer<'a> {
    key: &'a Ed25519KeyPair,
    entries: Vec<Entry>,
    head: Option<(u64, String)>,
}

impl<'a> Writer<'a> {
    fn new(key: &'a Ed25519KeyPair) -> Self {
        Self {
            key,
            entries: Vec::new(),
            head: None,
        }
    }

    fn append(&mut self, kind: EntryKind, wall_ms: u64, boot: (&str, u64), run_id: u64) {
        let gap = (kind == EntryKind::Gap).then(|| {
            let previous = self.entries.last().unwrap();
            GapInfo {
                cause: if previous.boot_id != boot.0 {
                    GapCause::Reboot
                } else if previous.kind == EntryKind::Stop {
                    GapCause::Stopped
                } else {
                    GapCause::Unclean
                },
                previous_seq: previous.seq,
                previous_wall_ms: previous.wall_ms,
                length_ms: wall_ms - previous.wall_ms,
            }
        });
        let mut entry = Entry {
            format: LIVENESS_FORMAT.to_owned(),
            seq: 0,
            prev_hash: String::new(),
            kind,
            wall_ms,
            boot_ms: boot.1,
            boot_id: boot.0.to_owned(),
            run_id,
            interval_s: 60,
            health: Health {
                store: "ok".to_owned(),
                gpus: GpuSummary {
                    total: 2,
                    healthy: 2,
                    drained: 0,
                },
                ..Health::default()
            },
            anchors: Vec::new(),
            gap,
            net: Vec::new(),
            node_key: key_hex(self.key),
            signature: String::new(),
        };
        let previous = self.head.as_ref().map(|(seq, hash)| (*seq, hash.as_str()));
        let hash = entry.seal(previous, sign(self.key)).unwrap();
        self.head = Some((entry.seq, hash));
        self.entries.push(entry);
    }

    /// Answers a probe now (the agent's side) and returns the answer.
    fn probe(&mut self, nonce_byte: u8, wall_ms: u64) -> ProbeAnswer {
        let (head_seq, head_hash) = self.head.clone().unwrap_or((0, GENESIS_HASH.to_owned()));
        let mut answer = ProbeAnswer {
            format: PROBE_FORMAT.to_owned(),
            nonce: hex::encode([nonce_byte; 16]),
            head_seq,
            head_hash,
            wall_ms,
            node_key: key_hex(self.key),
            signature: String::new(),
        };
        answer.sign_with(sign(self.key)).unwrap();
        answer
    }

    /// Records an answered probe in the next entry, as the agent does.
    fn record(&mut self, answer: &ProbeAnswer, kind: EntryKind, wall_ms: u64, boot: (&str, u64)) {
        let run_id = self.entries.last().map_or(1, |e| e.run_id);
        self.append(kind, wall_ms, boot, run_id);
        let entry = self.entries.last_mut().unwrap();
        entry.anchors.push(Anchor {
            nonce: answer.nonce.clone(),
            head_seq: answer.head_seq,
            wall_ms: answer.wall_ms,
        });
        self.reseal_last();
    }

    fn reseal_last(&mut self) {
        let mut entry = self.entries.pop().unwrap();
        let previous = self.entries.last().map(|e| (e.seq, e.hash().unwrap()));
        let hash = entry
            .seal(
                previous.as_ref().map(|(s, h)| (*s, h.as_str())),
                sign(self.key),
            )
            .unwrap();
        self.head = Some((entry.seq, hash));
        self.entries.push(entry);
    }

    /// Re-chains and re-signs everything from `from_idx` (a forger with the node key).
    fn rechain_from(&mut self, from_idx: usize) {
        let tail: Vec<Entry> = self.entries.drain(from_idx..).collect();
        self.head = self.entries.last().map(|e| (e.seq, e.hash().unwrap()));
        for mut entry in tail {
            let previous = self.head.as_ref().map(|(s, h)| (*s, h.clone()));
            let hash = entry
                .seal(
                    previous.as_ref().map(|(s, h)| (*s, h.as_str())),
                    sign(self.key),
                )
                .unwrap();
            self.head = Some((entry.seq, hash));
            self.entries.push(entry);
        }
    }

    fn text(&self) -> Vec<u8> {
        lines(&self.entries)
    }
}

fn lines(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&serde_json::to_vec(entry).unwrap());
        out.push(b'\n');
    }
    out
}

const MIN: u64 = 60_000;
const T0: u64 = 1_780_000_000_000;

/// Ten ticks, a SIGKILL, 20 minutes down, a restart; ten ticks, a clean stop, 5 minutes
/// down, ten ticks; a reboot after 3 minutes, five ticks.
fn history(key: &Ed25519KeyPair) -> Writer<'_> {
    let mut w = Writer::new(key);
    w.append(EntryKind::Start, T0, (BOOT_A, 1000), 1);
    for i in 1..10 {
        w.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, 1000 + i * MIN), 1);
    }
    let mut t = T0 + 9 * MIN + 20 * MIN;
    w.append(EntryKind::Gap, t, (BOOT_A, 1000 + 29 * MIN), 2);
    for _ in 0..9 {
        t += MIN;
        w.append(EntryKind::Tick, t, (BOOT_A, 1000 + (t - T0)), 2);
    }
    t += 10_000;
    w.append(EntryKind::Stop, t, (BOOT_A, 1000 + (t - T0)), 2);
    t += 5 * MIN;
    w.append(EntryKind::Gap, t, (BOOT_A, 1000 + (t - T0)), 3);
    for _ in 0..9 {
        t += MIN;
        w.append(EntryKind::Tick, t, (BOOT_A, 1000 + (t - T0)), 3);
    }
    t += 3 * MIN;
    w.append(EntryKind::Gap, t, (BOOT_B, 20_000), 4);
    for i in 1..5 {
        w.append(EntryKind::Tick, t + i * MIN, (BOOT_B, 20_000 + i * MIN), 4);
    }
    w
}

fn opts(key: &Ed25519KeyPair) -> VerifyOptions {
    VerifyOptions {
        node_key: Some(key_hex(key)),
        ..VerifyOptions::default()
    }
}

fn first_bad(
    text: &[u8],
    probes: &[(usize, ProbeAnswer)],
    key: &Ed25519KeyPair,
) -> (usize, Option<u64>, LivenessFault) {
    let err = verify(text, probes, &opts(key)).unwrap_err();
    (err.line, err.seq, err.fault)
}

#[test]
fn a_good_history_reports_each_outage_with_its_cause() {
    let key = key(1);
    let w = history(&key);
    let report = verify(&w.text(), &[], &opts(&key)).unwrap();
    assert_eq!(report.n_entries, 36);
    assert_eq!(report.n_runs, 4);
    assert_eq!(report.n_boots, 2);
    let causes: Vec<(OutageCause, u64)> = report
        .outages
        .iter()
        .map(|o| (o.cause, o.length_ms))
        .collect();
    assert_eq!(
        causes,
        vec![
            (OutageCause::Unclean, 20 * MIN),
            (OutageCause::Stopped, 5 * MIN),
            (OutageCause::Reboot, 3 * MIN),
        ]
    );
    let down: u64 = causes.iter().map(|(_, ms)| ms).sum();
    assert_eq!(report.uptime_ms, report.window_ms() - down);
}

#[test]
fn a_window_reaching_past_the_ledger_is_no_evidence_and_sla_judges_it() {
    let key = key(1);
    let w = history(&key);
    let last = w.entries.last().unwrap().wall_ms;
    let options = VerifyOptions {
        from_ms: Some(T0 - 2 * MIN),
        to_ms: Some(last + MIN),
        ..opts(&key)
    };
    let report = verify(&w.text(), &[], &options).unwrap();
    assert_eq!(
        report.outages.first().unwrap().cause,
        OutageCause::NoEvidence
    );
    assert_eq!(report.outages.first().unwrap().length_ms, 2 * MIN);
    assert_eq!(
        report.outages.last().unwrap().cause,
        OutageCause::NoEvidence
    );
    let policy = SlaPolicy::from_toml(
        "min_availability_percent = 99.5\nmax_outage_minutes = 30\n",
        "sla.toml",
    )
    .unwrap();
    let checks = policy.judge(&report);
    assert_eq!(checks.len(), 2);
    assert!(
        checks[0].status == crate::check::CheckStatus::Fail,
        "{:?}",
        checks[0]
    );
    assert!(
        checks[1].status == crate::check::CheckStatus::Pass,
        "{:?}",
        checks[1]
    );
    let lenient = SlaPolicy::from_toml(
        "min_availability_percent = 40.0\nmax_outage_minutes = 10\n",
        "x",
    )
    .unwrap();
    let checks = lenient.judge(&report);
    assert!(
        checks[0].status == crate::check::CheckStatus::Pass,
        "{:?}",
        checks[0]
    );
    assert!(
        checks[1].status == crate::check::CheckStatus::Fail,
        "20-minute outage: {:?}",
        checks[1]
    );
    assert!(
        SlaPolicy::from_toml("min_availabilty_percent = 1.0", "typo.toml")
            .unwrap_err()
            .to_string()
            .contains("min_availabilty_percent")
    );
}

#[test]
fn drained_gpus_count_as_partial_outage() {
    let key = key(1);
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 0), 1);
    for i in 1..=10 {
        w.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, i * MIN), 1);
        if i > 5 {
            w.entries.last_mut().unwrap().health.gpus.drained = 1;
            w.reseal_last();
        }
    }
    let report = verify(&w.text(), &[], &opts(&key)).unwrap();
    assert_eq!(report.uptime_ms, 10 * MIN);
    assert_eq!(report.drained_share_ms, 5 * MIN / 2);
    assert_eq!(availability_percent(&report, DrainedGpus::Ignore), 100.0);
    assert_eq!(availability_percent(&report, DrainedGpus::Partial), 75.0);
    assert_eq!(availability_percent(&report, DrainedGpus::Outage), 50.0);
}

#[test]
fn an_edited_entry_is_named() {
    let key = key(1);
    let mut w = history(&key);
    w.entries[6].health.running_jobs = 3;
    assert_eq!(
        first_bad(&w.text(), &[], &key),
        (7, Some(7), LivenessFault::BadSignature)
    );
}

#[test]
fn reordering_is_named() {
    let key = key(1);
    let mut w = history(&key);
    w.entries.swap(4, 5);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (5, Some(6)));
    assert!(
        matches!(
            fault,
            LivenessFault::Deleted {
                expected: 5,
                found: 6
            }
        ),
        "{fault:?}"
    );
    // Moving an entry back is reported as reordering where it lands.
    let mut w = history(&key);
    let moved = w.entries.remove(2);
    w.entries.insert(6, moved);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (3, Some(4)), "{fault:?}");
    let mut w = history(&key);
    let moved = w.entries.remove(6);
    w.entries.insert(2, moved);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (3, Some(7)));
    assert!(matches!(fault, LivenessFault::Deleted { .. }), "{fault:?}");
    let mut w = history(&key);
    let dup = w.entries[3].clone();
    w.entries.insert(4, dup);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (5, Some(4)));
    assert_eq!(
        fault,
        LivenessFault::Reordered {
            previous: 4,
            found: 4
        }
    );
}

#[test]
fn a_deleted_entry_is_named() {
    let key = key(1);
    let mut w = history(&key);
    w.entries.remove(12);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (13, Some(14)));
    assert_eq!(
        fault,
        LivenessFault::Deleted {
            expected: 13,
            found: 14
        }
    );
    // Deleting and re-chaining (the forger holds the key) still cannot hide a deleted
    // gap entry: the run changes without one.
    let mut w = history(&key);
    w.entries.remove(10);
    w.rechain_from(10);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (11, Some(11)));
    assert!(
        matches!(fault, LivenessFault::HiddenGap { what: "run_id", .. }),
        "{fault:?}"
    );
    // The front cannot be cut off silently either.
    let w = history(&key);
    let (line, seq, fault) = first_bad(&lines(&w.entries[1..]), &[], &key);
    assert_eq!(
        (line, seq, fault),
        (1, Some(2), LivenessFault::BadStart { found: 2 })
    );
    let partial = VerifyOptions {
        partial: true,
        ..opts(&key)
    };
    assert_eq!(
        verify(&lines(&w.entries[1..]), &[], &partial)
            .unwrap()
            .first_seq,
        2
    );
}

#[test]
fn a_clock_running_backwards_within_a_boot_is_named() {
    let key = key(1);
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 5000), 1);
    w.append(EntryKind::Tick, T0 + MIN, (BOOT_A, 5000 + MIN), 1);
    w.append(
        EntryKind::Tick,
        T0 + MIN - 30_000,
        (BOOT_A, 5000 + 2 * MIN),
        1,
    );
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (3, Some(3)));
    assert!(
        matches!(
            fault,
            LivenessFault::ClockBackwards {
                clock: "wall_ms",
                ..
            }
        ),
        "{fault:?}"
    );
    // Time since boot must not go back either; across boots it starts again.
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 5000), 1);
    w.append(EntryKind::Tick, T0 + MIN, (BOOT_A, 4000), 1);
    let (_, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!(seq, Some(2));
    assert!(
        matches!(
            fault,
            LivenessFault::ClockBackwards {
                clock: "boot_ms",
                ..
            }
        ),
        "{fault:?}"
    );
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 5000), 1);
    w.append(EntryKind::Gap, T0 + MIN, (BOOT_B, 4000), 2);
    assert!(verify(&w.text(), &[], &opts(&key)).is_ok());
}

#[test]
fn a_gap_hidden_by_entries_claiming_continuity_is_named() {
    let key = key(1);
    // The gap entry of the SIGKILL (seq 11) turned into a tick and everything after
    // re-signed: the run changes under a claim of continuity.
    let mut w = history(&key);
    w.entries[10].kind = EntryKind::Tick;
    w.entries[10].gap = None;
    w.rechain_from(10);
    let (line, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!((line, seq), (11, Some(11)));
    assert_eq!(
        fault,
        LivenessFault::HiddenGap {
            what: "run_id",
            previous: "1".to_owned(),
            found: "2".to_owned()
        }
    );
    // Hiding a reboot: the boot id changes without a gap entry.
    let mut w = history(&key);
    w.entries[31].kind = EntryKind::Tick;
    w.entries[31].gap = None;
    w.entries[31].run_id = 3;
    w.rechain_from(31);
    let (_, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!(seq, Some(32));
    assert!(
        matches!(
            fault,
            LivenessFault::HiddenGap {
                what: "boot_id",
                ..
            }
        ),
        "{fault:?}"
    );
    // A gap entry that understates its length.
    let mut w = history(&key);
    w.entries[10].gap.as_mut().unwrap().length_ms = MIN;
    w.rechain_from(10);
    let (_, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!(seq, Some(11));
    assert!(
        matches!(fault, LivenessFault::BadGapClaim { .. }),
        "{fault:?}"
    );
    // A run that goes on after its stop entry.
    let mut w = history(&key);
    w.entries[21].kind = EntryKind::Tick;
    w.entries[21].gap = None;
    w.entries[21].run_id = 2;
    w.rechain_from(21);
    let (_, seq, fault) = first_bad(&w.text(), &[], &key);
    assert_eq!(seq, Some(22));
    assert!(
        matches!(fault, LivenessFault::HiddenGap { .. }),
        "{fault:?}"
    );
}

/// The agent was down for 20 minutes (a SIGKILL); a checker probed before and after.
/// The provider, holding the node key, later backfills the outage with ticks of one
/// continuous run and re-signs everything: the saved answer after the outage names the
/// first backfilled entry.
#[test]
fn a_backfill_against_a_saved_probe_answer_is_detected() {
    let key = key(1);
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 0), 1);
    for i in 1..5 {
        w.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, i * MIN), 1);
    }
    let before = w.probe(0xaa, T0 + 4 * MIN + 10_000);
    w.record(&before, EntryKind::Tick, T0 + 5 * MIN, (BOOT_A, 5 * MIN));
    // Down from T0+5min to T0+25min.
    w.append(EntryKind::Gap, T0 + 25 * MIN, (BOOT_A, 25 * MIN), 2);
    let after = w.probe(0xbb, T0 + 25 * MIN + 5000);
    w.record(&after, EntryKind::Tick, T0 + 26 * MIN, (BOOT_A, 26 * MIN));
    for i in 27..30 {
        w.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, i * MIN), 2);
    }
    let probes = vec![(1, before.clone()), (2, after.clone())];
    let honest = verify(&w.text(), &probes, &opts(&key)).unwrap();
    assert_eq!(honest.n_probes, 2);
    assert_eq!(honest.outages.len(), 1);
    assert_eq!(honest.outages[0].cause, OutageCause::Unclean);

    // The forgery: entries 1..=6 kept, 19 ticks of run 1 inserted for the outage, the
    // rest relabelled as run 1 and re-chained. Without probes it verifies.
    let mut forged = Writer::new(&key);
    forged.entries = w.entries[..6].to_vec();
    forged.head = Some((6, forged.entries[5].hash().unwrap()));
    for i in 6..25 {
        forged.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, i * MIN), 1);
    }
    for original in &w.entries[6..] {
        let mut entry = original.clone();
        entry.kind = EntryKind::Tick;
        entry.gap = None;
        entry.run_id = 1;
        let previous = forged.head.clone();
        let hash = entry
            .seal(previous.as_ref().map(|(s, h)| (*s, h.as_str())), sign(&key))
            .unwrap();
        forged.head = Some((entry.seq, hash));
        forged.entries.push(entry);
    }
    let forged_text = forged.text();
    let report = verify(&forged_text, &[(1, before.clone())], &opts(&key)).unwrap();
    assert!(
        report.outages.is_empty(),
        "the backfill looks continuous: {report:?}"
    );
    // The answer after the outage says the head was seq 7 at T0+25min+5s; the
    // forged ledger has seq 8 (the second backfilled tick) written before that.
    let (line, seq, fault) = first_bad(&forged_text, &probes, &key);
    assert_eq!((line, seq), (8, Some(8)), "{fault}");
    assert!(
        matches!(fault, LivenessFault::ContradictsProbe { probe_line: 2, .. }),
        "{fault:?}"
    );
    // Rewriting an entry between two answers, times kept: the later answer's head hash
    // no longer matches, and the first entry not pinned by the earlier answer is named.
    let mut w2 = Writer::new(&key);
    w2.entries = w.entries.clone();
    w2.entries[5].health.running_jobs = 7;
    w2.rechain_from(5);
    let (_, seq, fault) = first_bad(&w2.text(), &probes, &key);
    assert_eq!(seq, Some(6), "{fault}");
    assert!(
        matches!(fault, LivenessFault::ContradictsProbe { probe_line: 2, .. }),
        "{fault:?}"
    );
    // An answer signed by someone else is refused outright.
    let mut foreign = after.clone();
    foreign.signature = before.signature.clone();
    let err = verify(&w.text(), &[(3, foreign)], &opts(&key)).unwrap_err();
    assert_eq!(err.fault, LivenessFault::ProbeNotSigned { probe_line: 3 });
}

#[test]
fn probe_answers_parse_strictly() {
    let key = key(2);
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 0), 1);
    let answer = w.probe(0x11, T0 + 1);
    let mut text = serde_json::to_vec(&answer).unwrap();
    text.push(b'\n');
    assert_eq!(parse_probes(&text).unwrap(), vec![answer.clone()]);
    let mut bad = serde_json::to_value(&answer).unwrap();
    bad["nonce"] = "ab".into();
    let (line, message) = parse_probes(bad.to_string().as_bytes()).unwrap_err();
    assert_eq!(line, 1);
    assert!(message.contains("nonce"), "{message}");
    let mut extra = serde_json::to_value(&answer).unwrap();
    extra["surprise"] = 1.into();
    assert!(ProbeAnswer::from_json(extra.to_string().as_bytes()).is_err());
}

#[test]
fn entries_parse_strictly() {
    let key = key(3);
    let w = history(&key);
    let mut value = serde_json::to_value(&w.entries[10]).unwrap();
    value["gap"] = serde_json::Value::Null;
    let err = Entry::from_json(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("gap"), "{err}");
    let mut value = serde_json::to_value(&w.entries[1]).unwrap();
    value["format"] = "plinth-liveness/2".into();
    let (line, seq, fault) = first_bad(format!("{value}\n").as_bytes(), &[], &key);
    assert_eq!((line, seq), (1, None));
    assert!(
        matches!(fault, LivenessFault::Invalid(ref m) if m.contains("format")),
        "{fault:?}"
    );
    assert!(verify(b"", &[], &opts(&key)).unwrap().n_entries == 0);
}

/// The fast canonical form (serde's output, fields declared in byte order) is the
/// canonical form of `crate::canonical`, and the signed bytes are the canonical form
/// without `signature`, for an entry with every optional part present.
#[test]
fn serde_order_is_the_canonical_form() {
    let key = key(4);
    let mut w = history(&key);
    let mut entry = w.entries[10].clone();
    entry.anchors.push(Anchor {
        nonce: "ab".repeat(16),
        head_seq: 9,
        wall_ms: 5,
    });
    entry.health.plugins.push(PluginHash {
        kind: "pricing".to_owned(),
        name: "quote \"x\" \u{e9}\n".to_owned(),
        sha256: "cd".repeat(32),
    });
    entry.net = vec![
        NetSample {
            peer: "b".to_owned(),
            at_ms: 1,
            samples: 2,
            rtt_min_us: 3,
            rtt_median_us: 4,
            rtt_p99_us: 5,
            throughput_bytes_per_s: Some(6),
        },
        NetSample::default(),
    ];
    w.entries.push(entry.clone());
    let (whole, signing) = entry.canonical_forms().unwrap();
    assert_eq!(whole, crate::canonical::to_canonical_json(&entry).unwrap());
    let mut value = serde_json::to_value(&entry).unwrap();
    value.as_object_mut().unwrap().remove("signature");
    let mut expected = SIGNING_DOMAIN.to_vec();
    crate::canonical::write_canonical(&value, &mut expected).unwrap();
    assert_eq!(signing, expected);
    let answer = w.probe(0x33, T0);
    assert_eq!(
        serde_json::to_vec(&answer).unwrap(),
        crate::canonical::to_canonical_json(&answer).unwrap()
    );
    let mut value = serde_json::to_value(&answer).unwrap();
    value.as_object_mut().unwrap().remove("signature");
    let mut expected = PROBE_SIGNING_DOMAIN.to_vec();
    crate::canonical::write_canonical(&value, &mut expected).unwrap();
    assert_eq!(answer.signing_bytes().unwrap(), expected);
}

/// Signatures are checked in batches of `SIGNATURE_BATCH`: a ledger of several batches
/// verifies, and an edit anywhere (first, middle or last entry of a batch, or the last
/// partial batch) is still named at its own entry, as the one-by-one check names it.
#[test]
fn batched_signature_checks_name_the_edited_entry_exactly() {
    use super::verify::SIGNATURE_BATCH;

    let key = key(4);
    let mut w = Writer::new(&key);
    let n = SIGNATURE_BATCH as u64 * 2 + 37;
    w.append(EntryKind::Start, T0, (BOOT_A, 1000), 1);
    for i in 1..n {
        w.append(EntryKind::Tick, T0 + i * MIN, (BOOT_A, 1000 + i * MIN), 1);
    }
    let report = verify(&w.text(), &[], &opts(&key)).unwrap();
    assert_eq!(report.n_entries as u64, n);
    assert_eq!(report.uptime_ms, (n - 1) * MIN);
    for idx in [
        0,
        SIGNATURE_BATCH - 1,
        SIGNATURE_BATCH,
        SIGNATURE_BATCH + 100,
        n as usize - 1,
    ] {
        let mut edited = w.entries.clone();
        edited[idx].health.running_jobs = 9;
        let bad = first_bad(&lines(&edited), &[], &key);
        assert_eq!(
            bad,
            (idx + 1, Some(idx as u64 + 1), LivenessFault::BadSignature),
            "edited entry {idx}"
        );
        // Two edits in one batch: the earlier one is named.
        edited[(idx + 3).min(n as usize - 1)].health.running_jobs = 9;
        assert_eq!(first_bad(&lines(&edited), &[], &key).0, idx + 1);
    }
    // A second key's signature inside a batch signed by the first: a batch mixing keys
    // is checked one by one, and the entry is named for its key.
    let other = self::key(5);
    let mut mixed = w.entries.clone();
    mixed[SIGNATURE_BATCH + 5].node_key = key_hex(&other);
    mixed[SIGNATURE_BATCH + 5].sign_with(sign(&other)).unwrap();
    let bad = first_bad(&lines(&mixed), &[], &key);
    assert_eq!(bad.0, SIGNATURE_BATCH + 6);
    assert!(
        matches!(bad.2, LivenessFault::WrongKey { .. }),
        "{:?}",
        bad.2
    );
}

/// Probe answers are batched too: one forged answer among many is the one reported.
#[test]
fn batched_probe_signature_checks_name_the_forged_answer() {
    let key = key(6);
    let mut w = Writer::new(&key);
    w.append(EntryKind::Start, T0, (BOOT_A, 1000), 1);
    let mut probes = Vec::new();
    let mut t = T0;
    for i in 0..300u32 {
        let mut answer = w.probe(0, t + 1_000);
        answer.nonce = format!("{i:032x}");
        answer.sign_with(sign(&key)).unwrap();
        t += MIN;
        w.record(&answer, EntryKind::Tick, t, (BOOT_A, 1000 + (t - T0)));
        probes.push((probes.len() + 1, answer));
    }
    let report = verify(&w.text(), &probes, &opts(&key)).unwrap();
    assert_eq!(report.n_probes, probes.len());
    let mut forged = probes.clone();
    forged[200].1.wall_ms += 1;
    let err = verify(&w.text(), &forged, &opts(&key)).unwrap_err();
    assert_eq!(
        err.fault,
        LivenessFault::ProbeNotSigned { probe_line: 201 },
        "{err}"
    );
}

/// The writer's own summary (no signature checks) proves what verification proves, and a
/// window without entries is one `no_evidence` outage.
#[test]
fn summarize_agrees_with_verify() {
    use super::verify::summarize;

    let key = key(7);
    let w = history(&key);
    let window = VerifyOptions {
        from_ms: Some(T0 + 5 * MIN),
        to_ms: Some(T0 + 45 * MIN),
        ..opts(&key)
    };
    let verified = verify(&w.text(), &[], &window).unwrap();
    let summary = summarize(&w.entries, &window);
    assert_eq!(summary, verified);
    assert!(!summary.outages.is_empty());
    let empty = summarize(
        &[],
        &VerifyOptions {
            from_ms: Some(T0),
            to_ms: Some(T0 + MIN),
            ..VerifyOptions::default()
        },
    );
    assert_eq!(empty.uptime_ms, 0);
    assert_eq!(empty.outages.len(), 1);
    assert_eq!(empty.outages[0].cause, OutageCause::NoEvidence);
    assert_eq!(empty.outages[0].length_ms, MIN);
}
