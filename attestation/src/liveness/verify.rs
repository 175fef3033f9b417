//! Verification of a liveness ledger against checkers' probe answers, and what it proves:
//! uptime as a lower bound and the outages with their causes.
//!
//! Checks, in ledger order, stopping at the first bad entry: every line parses strictly;
//! the node key is the expected one; the signature verifies; `seq` is the previous + 1
//! (smaller: reordering, larger: a deleted entry); `prev_hash` is the previous entry's
//! hash; within one boot neither the wall clock nor the time since boot runs backwards;
//! a new agent run or a new boot begins with a `gap` entry (entries that claim
//! continuity across a restart hide a gap), and what a gap entry claims (previous seq,
//! time, length, reboot or not) matches the chain. Then every probe answer: its
//! signature under the node key, and the chain it names: the entry at the answered head
//! has the answered hash, no entry up to that head was written after the answer and
//! none after it before, and the entry after the head records the nonce. A ledger
//! rewritten across a probed period (a backfilled outage) fails one of these at the
//! first entry that contradicts the answer.
//!
//! Uptime is the time between consecutive entries of one run that are no further apart
//! than the interval plus a tolerance; every other stretch of the window is an outage,
//! whose cause is the gap entry's (`stopped`, `unclean`, `reboot`), `missed` (the run
//! went on but wrote no entry: a stall or a suspend) or `no_evidence` (the window
//! reaches past the ledger).
//!
//! Signatures are checked in batches of up to [`SIGNATURE_BATCH`] entries (ed25519-dalek's
//! `verify_batch`, two to three times as fast per signature as one check each), the
//! batches on all cores. A batch that fails is checked again entry by entry with the single-entry
//! check, so the first bad entry is named exactly as before; a batch only ever accepts
//! what that check accepts, except a signature crafted by the key's own holder with a
//! small-order component in `R` (the batch equation is cofactorless with random
//! weights), which proves nothing the holder could not sign anyway.

use std::borrow::Borrow;
use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use super::{Entry, EntryKind, GENESIS_HASH, GapCause, MAX_LINE_BYTES, ProbeAnswer};

/// Most entries (or probe answers) whose signatures are verified in one batch. Larger
/// batches are cheaper per signature (the multi-scalar multiplication shares more work:
/// 1024 verified a month's ledger 20 % faster than 256 on the development machine); a
/// failed batch costs one single check per item.
pub const SIGNATURE_BATCH: usize = 1024;

/// Fewest items per batch, so that small inputs still batch.
const MIN_SIGNATURE_BATCH: usize = 64;

/// The batch size for `n_items`: large, but at least one batch per core.
fn batch_size(n_items: usize) -> usize {
    (n_items / rayon::current_num_threads().max(1)).clamp(MIN_SIGNATURE_BATCH, SIGNATURE_BATCH)
}

/// How a ledger is checked and which window is reported.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The node key every entry and answer must carry (hex); `None` accepts the first
    /// entry's key and requires the same everywhere else.
    pub node_key: Option<String>,
    /// The export does not start at seq 1 (`plinthctl liveness export --from`): accept
    /// its first entry's `prev_hash` as given.
    pub partial: bool,
    /// Start of the reported window (Unix ms); default: the first entry.
    pub from_ms: Option<u64>,
    /// End of the reported window (Unix ms); default: the last entry.
    pub to_ms: Option<u64>,
    /// How late an entry may be and still prove continuity; default half the interval.
    pub tolerance_ms: Option<u64>,
}

/// What is wrong, at the entry (or probe answer) it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LivenessFault {
    /// The line is empty.
    #[error("blank line")]
    BlankLine,
    /// The line is too long.
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The line is not a valid entry.
    #[error("not a valid entry: {0}")]
    Invalid(String),
    /// Signed by another key.
    #[error("node key {found} is not the expected {expected}")]
    WrongKey {
        /// Expected key.
        expected: String,
        /// Key found.
        found: String,
    },
    /// The signature does not verify: the entry was edited.
    #[error("signature does not verify (the entry was edited)")]
    BadSignature,
    /// The ledger does not start at seq 1.
    #[error(
        "ledger starts at seq {found}, not 1 (truncated at the front? use --partial for an export with --from)"
    )]
    BadStart {
        /// Seq found.
        found: u64,
    },
    /// A seq was skipped.
    #[error("sequence gap: expected seq {expected}, found {found} (an entry was deleted)")]
    Deleted {
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A seq went backwards or repeated.
    #[error("out of order: seq {found} after seq {previous}")]
    Reordered {
        /// Previous seq.
        previous: u64,
        /// Seq found.
        found: u64,
    },
    /// `prev_hash` is not the previous entry's hash.
    #[error("chain broken: prev_hash {found} is not the previous entry's hash {expected}")]
    ChainBroken {
        /// Expected hash.
        expected: String,
        /// Hash found.
        found: String,
    },
    /// A clock ran backwards within one boot.
    #[error("{clock} runs backwards within boot {boot_id}: {found} ms after {previous} ms")]
    ClockBackwards {
        /// `wall_ms` or `boot_ms`.
        clock: &'static str,
        /// The boot.
        boot_id: String,
        /// The previous entry's reading.
        previous: u64,
        /// This entry's reading.
        found: u64,
    },
    /// A new run or boot without a gap entry.
    #[error(
        "claims continuity but the {what} changed from {previous} to {found}: a gap entry is missing (hidden gap)"
    )]
    HiddenGap {
        /// `run_id` or `boot_id`.
        what: &'static str,
        /// The previous entry's value.
        previous: String,
        /// This entry's value.
        found: String,
    },
    /// An entry that may only start a ledger, in the middle of one.
    #[error("a start entry after seq 1")]
    StartInMiddle,
    /// A gap entry whose claims contradict the chain.
    #[error("gap entry claims {claim}")]
    BadGapClaim {
        /// What is wrong with the claim.
        claim: String,
    },
    /// A probe answer's signature does not verify, or it is from another node.
    #[error("probe answer (line {probe_line} of the probe file) is not signed by the node key")]
    ProbeNotSigned {
        /// Line in the probe answers file.
        probe_line: usize,
    },
    /// The ledger contradicts a saved probe answer.
    #[error(
        "contradicts probe answer {nonce} (line {probe_line} of the probe file: head seq {head_seq} at {wall_ms} ms): {how}"
    )]
    ContradictsProbe {
        /// Line in the probe answers file.
        probe_line: usize,
        /// The nonce.
        nonce: String,
        /// The head the answer named.
        head_seq: u64,
        /// The answer's time.
        wall_ms: u64,
        /// How the ledger contradicts it.
        how: String,
    },
}

/// The first bad entry of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger line {line}{}: {fault}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct LivenessLedgerError {
    /// 1-based ledger line (0 for a fault in the probe file itself).
    pub line: usize,
    /// The entry's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub fault: LivenessFault,
}

/// Why the agent was not proven up for a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageCause {
    /// A clean stop.
    Stopped,
    /// A crash, SIGKILL or power loss.
    Unclean,
    /// A host reboot.
    Reboot,
    /// The run went on but wrote no entry in time (a stall or a suspend).
    Missed,
    /// The window reaches beyond the ledger.
    NoEvidence,
}

impl From<GapCause> for OutageCause {
    fn from(cause: GapCause) -> Self {
        match cause {
            GapCause::Stopped => Self::Stopped,
            GapCause::Unclean => Self::Unclean,
            GapCause::Reboot => Self::Reboot,
        }
    }
}

/// One stretch without proof of service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// Start (Unix ms), clipped to the window.
    pub start_ms: u64,
    /// End (Unix ms), clipped to the window.
    pub end_ms: u64,
    /// `end_ms - start_ms`.
    pub length_ms: u64,
    /// Why.
    pub cause: OutageCause,
    /// The entry after the outage (0 for `no_evidence` at the end).
    pub next_seq: u64,
}

/// What a verified ledger proves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivenessReport {
    /// Entries.
    pub n_entries: usize,
    /// First seq (0 when empty).
    pub first_seq: u64,
    /// Last seq (0 when empty).
    pub last_seq: u64,
    /// Hash of the last entry, [`GENESIS_HASH`] when empty.
    pub head_hash: String,
    /// The node key.
    pub node_key: Option<String>,
    /// Probe answers checked against the chain.
    pub n_probes: usize,
    /// Distinct agent runs.
    pub n_runs: usize,
    /// Distinct boots.
    pub n_boots: usize,
    /// The reported window (Unix ms).
    pub window_start_ms: u64,
    /// The reported window (Unix ms).
    pub window_end_ms: u64,
    /// Time proven up within the window (the lower bound).
    pub uptime_ms: u64,
    /// Of that, time with drained GPUs, weighted by the drained share of the GPUs.
    pub drained_share_ms: u64,
    /// Of that, time with at least one GPU drained.
    pub drained_any_ms: u64,
    /// Every outage in the window, in time order.
    pub outages: Vec<Outage>,
}

impl LivenessReport {
    /// Window length in ms.
    pub fn window_ms(&self) -> u64 {
        self.window_end_ms.saturating_sub(self.window_start_ms)
    }
}

struct Parsed {
    entry: Entry,
    signature_ok: bool,
    hash: String,
}

/// An entry parsed and hashed, with the bytes its signature covers (not checked yet).
struct Unchecked {
    entry: Entry,
    signing: Vec<u8>,
    hash: String,
}

fn parse_line(line: &[u8]) -> Result<Unchecked, LivenessFault> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_BYTES {
        return Err(LivenessFault::LineTooLong);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(LivenessFault::BlankLine);
    }
    let invalid = |err: &dyn std::error::Error| LivenessFault::Invalid(crate_error_chain(err));
    let entry = Entry::from_json(line).map_err(|err| invalid(&err))?;
    let (whole, signing) = entry.canonical_forms().map_err(|err| invalid(&err))?;
    let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, &whole).as_ref());
    Ok(Unchecked {
        entry,
        signing,
        hash,
    })
}

/// Parses one batch of lines and checks the signatures of the entries that parse.
fn parse_batch(lines: &[&[u8]]) -> Vec<Result<Parsed, LivenessFault>> {
    let unchecked: Vec<Result<Unchecked, LivenessFault>> =
        lines.iter().map(|line| parse_line(line)).collect();
    let signed: Vec<Signed<'_>> = unchecked
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .map(|item| Signed {
            node_key: &item.entry.node_key,
            message: &item.signing,
            signature: &item.entry.signature,
        })
        .collect();
    let mut verdicts = signatures_verify(&signed).into_iter();
    unchecked
        .into_iter()
        .map(|result| {
            result.map(|item| Parsed {
                signature_ok: verdicts.next().unwrap_or(false),
                entry: item.entry,
                hash: item.hash,
            })
        })
        .collect()
}

/// One signature to check: hex key and signature, as in the records, and the message.
struct Signed<'a> {
    node_key: &'a str,
    message: &'a [u8],
    signature: &'a str,
}

/// Whether each signature verifies, as [`super::verify_ed25519`] answers it: one batch
/// when every item is by one (well-formed, not small-order) key and the batch holds, else
/// one check per item.
fn signatures_verify(items: &[Signed<'_>]) -> Vec<bool> {
    if batch_verifies(items) {
        return vec![true; items.len()];
    }
    items
        .iter()
        .map(|item| super::verify_ed25519(item.node_key, item.message, item.signature))
        .collect()
}

fn batch_verifies(items: &[Signed<'_>]) -> bool {
    use ed25519_dalek::{Signature, VerifyingKey};

    let Some(first) = items.first() else {
        return true;
    };
    if items.iter().any(|item| item.node_key != first.node_key) {
        return false;
    }
    let mut key_bytes = [0u8; 32];
    if hex::decode_to_slice(first.node_key, &mut key_bytes).is_err() {
        return false;
    }
    let Ok(key) = VerifyingKey::from_bytes(&key_bytes) else {
        return false;
    };
    if key.is_weak() {
        return false;
    }
    let mut signatures = Vec::with_capacity(items.len());
    for item in items {
        let mut bytes = [0u8; 64];
        if hex::decode_to_slice(item.signature, &mut bytes).is_err() {
            return false;
        }
        signatures.push(Signature::from_bytes(&bytes));
    }
    let messages: Vec<&[u8]> = items.iter().map(|item| item.message).collect();
    let keys = vec![key; items.len()];
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// Whether each probe answer's signature verifies (batched as entries are).
fn probe_signatures_verify(probes: &[(usize, ProbeAnswer)]) -> Vec<bool> {
    let messages: Vec<Option<Vec<u8>>> = probes
        .par_iter()
        .map(|(_, answer)| answer.signing_bytes().ok())
        .collect();
    let mut verdicts = vec![false; probes.len()];
    let batch = batch_size(probes.len());
    let chunks: Vec<(usize, Vec<bool>)> = probes
        .par_chunks(batch)
        .enumerate()
        .map(|(chunk_idx, chunk)| {
            let start = chunk_idx * batch;
            let items: Vec<(usize, Signed<'_>)> = chunk
                .iter()
                .enumerate()
                .filter_map(|(offset, (_, answer))| {
                    let message = messages[start + offset].as_deref()?;
                    Some((
                        offset,
                        Signed {
                            node_key: &answer.node_key,
                            message,
                            signature: &answer.signature,
                        },
                    ))
                })
                .collect();
            let (offsets, signed): (Vec<usize>, Vec<Signed<'_>>) = items.into_iter().unzip();
            let mut chunk_verdicts = vec![false; chunk.len()];
            for (offset, ok) in offsets.into_iter().zip(signatures_verify(&signed)) {
                chunk_verdicts[offset] = ok;
            }
            (start, chunk_verdicts)
        })
        .collect();
    for (start, chunk_verdicts) in chunks {
        verdicts[start..start + chunk_verdicts.len()].copy_from_slice(&chunk_verdicts);
    }
    verdicts
}

fn crate_error_chain(err: &dyn std::error::Error) -> String {
    plinth_toolbox::error_chain(err)
}

/// Splits JSON-lines text into lines (a final newline ends the last line).
pub(crate) fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    lines
}

/// Parses a probe answers file (JSON lines); errors name the line.
pub fn parse_probes(text: &[u8]) -> Result<Vec<ProbeAnswer>, (usize, String)> {
    split_lines(text)
        .into_iter()
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(idx, line)| {
            if line.len() > MAX_LINE_BYTES {
                return Err((
                    idx + 1,
                    format!("line is longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            ProbeAnswer::from_json(line).map_err(|err| (idx + 1, crate_error_chain(&err)))
        })
        .collect()
}

/// Verifies a ledger (JSON lines) and `probes` (answers with their line numbers in the
/// probe file); returns what it proves or the first bad entry.
pub fn verify(
    text: &[u8],
    probes: &[(usize, ProbeAnswer)],
    options: &VerifyOptions,
) -> Result<LivenessReport, LivenessLedgerError> {
    let lines = split_lines(text);
    // Parsing, canonical forms, hashes and signatures are independent per line: batches
    // on all cores. The order-dependent checks below then run in one pass.
    let parsed: Vec<Result<Parsed, LivenessFault>> = lines
        .par_chunks(batch_size(lines.len()))
        .map(parse_batch)
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect();
    let mut entries: Vec<Parsed> = Vec::with_capacity(parsed.len());
    let mut expected_key = options.node_key.clone();
    for (idx, result) in parsed.into_iter().enumerate() {
        let line_no = idx + 1;
        let parsed = result.map_err(|fault| LivenessLedgerError {
            line: line_no,
            seq: None,
            fault,
        })?;
        let entry = &parsed.entry;
        let fail = |fault| LivenessLedgerError {
            line: line_no,
            seq: Some(entry.seq),
            fault,
        };
        match &expected_key {
            Some(key) if *key != entry.node_key => {
                return Err(fail(LivenessFault::WrongKey {
                    expected: key.clone(),
                    found: entry.node_key.clone(),
                }));
            }
            Some(_) => {}
            None => expected_key = Some(entry.node_key.clone()),
        }
        if !parsed.signature_ok {
            return Err(fail(LivenessFault::BadSignature));
        }
        match entries.last() {
            None => {
                if entry.seq != 1 && !options.partial {
                    return Err(fail(LivenessFault::BadStart { found: entry.seq }));
                }
                if entry.seq == 1 && entry.prev_hash != GENESIS_HASH {
                    return Err(fail(LivenessFault::ChainBroken {
                        expected: GENESIS_HASH.to_owned(),
                        found: entry.prev_hash.clone(),
                    }));
                }
                if entry.kind == EntryKind::Start && entry.seq != 1 {
                    return Err(fail(LivenessFault::StartInMiddle));
                }
            }
            Some(previous) => check_pair(previous, &parsed).map_err(fail)?,
        }
        entries.push(parsed);
    }
    let node_key = expected_key;
    // In head order, so that a rewrite is named from the first entry no earlier answer
    // pins.
    let signed = probe_signatures_verify(probes);
    let mut ordered: Vec<(&(usize, ProbeAnswer), bool)> = probes.iter().zip(signed).collect();
    ordered.sort_by_key(|((line, answer), _)| (answer.head_seq, answer.wall_ms, *line));
    let index = ProbeIndex::new(&entries);
    let mut pinned_up_to = 0;
    for ((probe_line, answer), signature_ok) in ordered {
        check_probe(
            &entries,
            &index,
            *probe_line,
            answer,
            node_key.as_deref(),
            signature_ok,
            pinned_up_to,
        )?;
        pinned_up_to = answer.head_seq;
    }
    let n_probes = probes.len();
    let head_hash = entries
        .last()
        .map_or_else(|| GENESIS_HASH.to_owned(), |p| p.hash.clone());
    Ok(report(&entries, head_hash, n_probes, node_key, options))
}

/// The order-dependent checks of `current` after `previous`.
fn check_pair(previous: &Parsed, current: &Parsed) -> Result<(), LivenessFault> {
    let (p, c) = (&previous.entry, &current.entry);
    if c.seq != p.seq + 1 {
        return Err(if c.seq <= p.seq {
            LivenessFault::Reordered {
                previous: p.seq,
                found: c.seq,
            }
        } else {
            LivenessFault::Deleted {
                expected: p.seq + 1,
                found: c.seq,
            }
        });
    }
    if c.prev_hash != previous.hash {
        return Err(LivenessFault::ChainBroken {
            expected: previous.hash.clone(),
            found: c.prev_hash.clone(),
        });
    }
    if c.kind == EntryKind::Start {
        return Err(LivenessFault::StartInMiddle);
    }
    let same_boot = c.boot_id == p.boot_id;
    if same_boot {
        for (clock, before, now) in [
            ("wall_ms", p.wall_ms, c.wall_ms),
            ("boot_ms", p.boot_ms, c.boot_ms),
        ] {
            if now < before {
                return Err(LivenessFault::ClockBackwards {
                    clock,
                    boot_id: c.boot_id.clone(),
                    previous: before,
                    found: now,
                });
            }
        }
    }
    if c.kind != EntryKind::Gap {
        if !same_boot {
            return Err(LivenessFault::HiddenGap {
                what: "boot_id",
                previous: p.boot_id.clone(),
                found: c.boot_id.clone(),
            });
        }
        if c.run_id != p.run_id {
            return Err(LivenessFault::HiddenGap {
                what: "run_id",
                previous: p.run_id.to_string(),
                found: c.run_id.to_string(),
            });
        }
        if p.kind == EntryKind::Stop {
            return Err(LivenessFault::HiddenGap {
                what: "run (after its stop entry)",
                previous: p.run_id.to_string(),
                found: c.run_id.to_string(),
            });
        }
        return Ok(());
    }
    let Some(gap) = &c.gap else {
        return Err(LivenessFault::BadGapClaim {
            claim: "nothing".to_owned(),
        });
    };
    let bad = |claim: String| Err(LivenessFault::BadGapClaim { claim });
    if c.run_id == p.run_id {
        return bad(format!("a restart but run {} goes on", c.run_id));
    }
    if gap.previous_seq != p.seq || gap.previous_wall_ms != p.wall_ms {
        return bad(format!(
            "previous entry seq {} at {} ms, but it is seq {} at {} ms",
            gap.previous_seq, gap.previous_wall_ms, p.seq, p.wall_ms
        ));
    }
    let length = c.wall_ms.saturating_sub(p.wall_ms);
    if gap.length_ms != length {
        return bad(format!(
            "a length of {} ms, but the entries are {length} ms apart",
            gap.length_ms
        ));
    }
    if (gap.cause == GapCause::Reboot) == same_boot {
        return bad(format!(
            "cause `{}` but the boot id {} changed",
            gap.cause.as_str(),
            if same_boot { "has not" } else { "has" }
        ));
    }
    Ok(())
}

/// What probe checks look up, built once: running maxima and minima of the entries'
/// times (is any entry up to a head later than an answer, any after it earlier?) and
/// where each nonce is recorded. A month of entries and a thousand answers then cost
/// one pass, not a thousand.
struct ProbeIndex<'a> {
    /// `prefix_max[i]`: the latest `wall_ms` of entries `0..=i`.
    prefix_max: Vec<u64>,
    /// `suffix_min[i]`: the earliest `wall_ms` of entries `i..`.
    suffix_min: Vec<u64>,
    /// The first entry recording each nonce.
    nonce_at: HashMap<&'a str, usize>,
}

impl<'a> ProbeIndex<'a> {
    fn new(entries: &'a [Parsed]) -> Self {
        let mut prefix_max = Vec::with_capacity(entries.len());
        let mut latest = 0;
        for parsed in entries {
            latest = latest.max(parsed.entry.wall_ms);
            prefix_max.push(latest);
        }
        let mut suffix_min = vec![u64::MAX; entries.len()];
        let mut earliest = u64::MAX;
        for (idx, parsed) in entries.iter().enumerate().rev() {
            earliest = earliest.min(parsed.entry.wall_ms);
            suffix_min[idx] = earliest;
        }
        let mut nonce_at = HashMap::new();
        for (idx, parsed) in entries.iter().enumerate() {
            for anchor in &parsed.entry.anchors {
                nonce_at.entry(anchor.nonce.as_str()).or_insert(idx);
            }
        }
        Self {
            prefix_max,
            suffix_min,
            nonce_at,
        }
    }
}

fn check_probe(
    entries: &[Parsed],
    index: &ProbeIndex<'_>,
    probe_line: usize,
    answer: &ProbeAnswer,
    node_key: Option<&str>,
    signature_ok: bool,
    pinned_up_to: u64,
) -> Result<(), LivenessLedgerError> {
    let key_ok = node_key.is_none_or(|key| key == answer.node_key);
    if !key_ok || !signature_ok {
        return Err(LivenessLedgerError {
            line: 0,
            seq: None,
            fault: LivenessFault::ProbeNotSigned { probe_line },
        });
    }
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let first_seq = first.entry.seq;
    let index_of = |seq: u64| {
        seq.checked_sub(first_seq)
            .map(|offset| offset as usize)
            .filter(|idx| *idx < entries.len())
    };
    let contradiction = |idx: usize, how: String| LivenessLedgerError {
        line: idx + 1,
        seq: Some(entries[idx].entry.seq),
        fault: LivenessFault::ContradictsProbe {
            probe_line,
            nonce: answer.nonce.clone(),
            head_seq: answer.head_seq,
            wall_ms: answer.wall_ms,
            how,
        },
    };
    // Time order first: it names the first entry of a backfilled stretch. Seqs are
    // consecutive here, so entries `..split` are the ones at or before the head.
    let split = (answer.head_seq + 1)
        .saturating_sub(first_seq)
        .min(entries.len() as u64) as usize;
    if split > 0 && index.prefix_max[split - 1] > answer.wall_ms {
        let idx = entries[..split]
            .iter()
            .position(|p| p.entry.wall_ms > answer.wall_ms)
            .unwrap_or(0);
        return Err(contradiction(
            idx,
            format!(
                "written at {} ms, after the answer, yet at or before its head",
                entries[idx].entry.wall_ms
            ),
        ));
    }
    if split < entries.len() && index.suffix_min[split] < answer.wall_ms {
        let idx = split
            + entries[split..]
                .iter()
                .position(|p| p.entry.wall_ms < answer.wall_ms)
                .unwrap_or(0);
        return Err(contradiction(
            idx,
            format!(
                "written at {} ms, before the answer, yet after its head",
                entries[idx].entry.wall_ms
            ),
        ));
    }
    if let Some(idx) = index_of(answer.head_seq)
        && entries[idx].hash != answer.head_hash
    {
        // Entries up to `pinned_up_to` match an earlier answer; the rewrite begins after.
        let first_unpinned = index_of(pinned_up_to + 1).unwrap_or(0).min(idx);
        return Err(contradiction(
            first_unpinned,
            format!(
                "rewritten: the ledger's seq {} has hash {}, not the answered head hash {} (entries up to seq {pinned_up_to} are pinned by earlier answers)",
                answer.head_seq, entries[idx].hash, answer.head_hash
            ),
        ));
    }
    if answer.head_seq == 0 && answer.head_hash != GENESIS_HASH {
        return Err(contradiction(0, "an empty head with a hash".to_owned()));
    }
    let recorded_at = index.nonce_at.get(answer.nonce.as_str()).copied();
    let next = index_of(answer.head_seq + 1);
    match (recorded_at, next) {
        (Some(found), Some(expected)) if found != expected => Err(contradiction(
            found,
            format!(
                "records the nonce, but the entry after the answered head is seq {}",
                answer.head_seq + 1
            ),
        )),
        (None, Some(expected)) => Err(contradiction(
            expected,
            "the entry after the answered head does not record the nonce".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn overlap(start: u64, end: u64, window_start: u64, window_end: u64) -> u64 {
    end.min(window_end).saturating_sub(start.max(window_start))
}

impl Borrow<Entry> for Parsed {
    fn borrow(&self) -> &Entry {
        &self.entry
    }
}

/// What `entries` (consecutive entries of one ledger, in order) prove over `options`'
/// window, without checking signatures, the chain or probe answers: for the ledger's own
/// writer, which trusts what it stored (the agent summarising a period for a reporting
/// plugin). Anyone else checks with [`verify`]. A window without entries is one
/// `no_evidence` outage.
pub fn summarize(entries: &[Entry], options: &VerifyOptions) -> LivenessReport {
    let head_hash = entries
        .last()
        .and_then(|entry| entry.hash().ok())
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    let node_key = entries.first().map(|entry| entry.node_key.clone());
    let mut summary = report(entries, head_hash, 0, node_key, options);
    if entries.is_empty() && summary.window_ms() > 0 {
        summary.outages.push(Outage {
            start_ms: summary.window_start_ms,
            end_ms: summary.window_end_ms,
            length_ms: summary.window_ms(),
            cause: OutageCause::NoEvidence,
            next_seq: 0,
        });
    }
    summary
}

fn report<E: Borrow<Entry>>(
    entries: &[E],
    head_hash: String,
    n_probes: usize,
    node_key: Option<String>,
    options: &VerifyOptions,
) -> LivenessReport {
    let first = entries.first().map(Borrow::borrow);
    let last = entries.last().map(Borrow::borrow);
    let window_start = options
        .from_ms
        .or(first.map(|e| e.wall_ms))
        .unwrap_or_default();
    let window_end = options
        .to_ms
        .or(last.map(|e| e.wall_ms))
        .unwrap_or(window_start)
        .max(window_start);
    let mut uptime_ms = 0;
    let mut drained_share_ms = 0;
    let mut drained_any_ms = 0;
    let mut outages = Vec::new();
    let mut push_outage = |start: u64, end: u64, cause, next_seq| {
        let (start, end) = (start.max(window_start), end.min(window_end));
        if end > start {
            outages.push(Outage {
                start_ms: start,
                end_ms: end,
                length_ms: end - start,
                cause,
                next_seq,
            });
        }
    };
    if let Some(first) = first {
        push_outage(
            window_start,
            first.wall_ms,
            OutageCause::NoEvidence,
            first.seq,
        );
    }
    for pair in entries.windows(2) {
        let (p, c): (&Entry, &Entry) = (pair[0].borrow(), pair[1].borrow());
        let interval_ms = c.interval_s.saturating_mul(1000);
        let tolerance = options.tolerance_ms.unwrap_or(interval_ms / 2);
        let apart = c.wall_ms.saturating_sub(p.wall_ms);
        match (&c.kind, &c.gap) {
            (EntryKind::Gap, Some(gap)) => {
                push_outage(p.wall_ms, c.wall_ms, gap.cause.into(), c.seq);
            }
            _ if apart > interval_ms.saturating_add(tolerance) => {
                push_outage(p.wall_ms, c.wall_ms, OutageCause::Missed, c.seq);
            }
            _ => {
                let covered = overlap(p.wall_ms, c.wall_ms, window_start, window_end);
                uptime_ms += covered;
                let gpus = &c.health.gpus;
                if gpus.total > 0 && gpus.drained > 0 {
                    drained_share_ms += covered * gpus.drained.min(gpus.total) / gpus.total;
                    drained_any_ms += covered;
                }
            }
        }
    }
    if let Some(last) = last {
        push_outage(last.wall_ms, window_end, OutageCause::NoEvidence, 0);
    }
    let mut runs: Vec<u64> = entries
        .iter()
        .map(|p| Borrow::<Entry>::borrow(p).run_id)
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let mut boots: Vec<&str> = entries
        .iter()
        .map(|p| Borrow::<Entry>::borrow(p).boot_id.as_str())
        .collect();
    boots.sort_unstable();
    boots.dedup();
    LivenessReport {
        n_entries: entries.len(),
        first_seq: first.map_or(0, |e| e.seq),
        last_seq: last.map_or(0, |e| e.seq),
        head_hash,
        node_key,
        n_probes,
        n_runs: runs.len(),
        n_boots: boots.len(),
        window_start_ms: window_start,
        window_end_ms: window_end,
        uptime_ms,
        drained_share_ms,
        drained_any_ms,
        outages,
    }
}
