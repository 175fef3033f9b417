//! Usage receipts (`"format": "plinth-receipt/1"`) and ledger verification.
//!
//! A receipt states what a job used during a period and what it cost, signed
//! by the node key (Ed25519) and chained to the previous receipt of the
//! node's ledger by hash. A ledger is exported as JSON lines, one receipt per
//! line, in sequence order.
//!
//! # Canonical bytes
//!
//! `canonical(v)` is the form of [`crate::canonical`] (no insignificant
//! whitespace, object keys sorted by their UTF-8 bytes at every level,
//! integers only, strings escaped as `serde_json` does), with `null` for
//! absent optional values.
//!
//! - **Signed message**: `b"plinth-receipt/1\n"` followed by the canonical
//!   bytes of the receipt object *without* its `signature` member.
//! - **Receipt hash**: SHA-256 of the canonical bytes of the whole receipt,
//!   `signature` included. The next receipt's `prev_hash` is its lowercase
//!   hex; the first receipt (`seq` 1) has 64 zeros.
//! - `node_key` and `signature` are lowercase hex (32 and 64 bytes).
//! - `image` (the manifest digest of the job's image and its verified signer) is
//!   the one member left out when absent rather than written as `null`: it was
//!   added after the first receipts were issued, and those keep verifying.
//!
//! # What verification checks
//!
//! For every line, in order: it parses strictly (unknown fields refused), the
//! format is `plinth-receipt/1`, the node key is the expected one, the
//! signature verifies, `seq` is the previous `seq` + 1 (a smaller or equal
//! `seq` is reported as reordering or duplication, a larger one as a gap),
//! `prev_hash` is the previous receipt's hash, the period is not inverted,
//! a job's periods do not overlap, and nothing follows a job's final
//! receipt (which would bill it twice). The ledger must start at `seq` 1
//! unless a starting point is given, and a last line cut short is reported
//! as truncation. Truncation at a line boundary at the end can only be
//! caught against an expected head (`expected_last_seq`). Verification
//! stops at the first bad record and reports its line number.

use std::collections::HashMap;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The receipt format this module reads and writes.
pub const RECEIPT_FORMAT: &str = "plinth-receipt/1";

/// Domain separator prefixed to the signed bytes.
pub const SIGNING_DOMAIN: &[u8] = b"plinth-receipt/1\n";

/// `prev_hash` of the first receipt.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest ledger line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Errors about a single receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt does not parse.
    #[error("receipt is not valid plinth-receipt/1 JSON")]
    Parse(#[source] serde_json::Error),
    /// A field has a bad value.
    #[error("receipt field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The receipt has no canonical form.
    #[error("receipt cannot be canonicalised")]
    Canonical(#[from] crate::canonical::CanonicalError),
    /// The signature does not verify under `node_key`.
    #[error("receipt signature does not verify under node key {node_key}")]
    BadSignature {
        /// The key that was tried.
        node_key: String,
    },
}

/// Whether a receipt covers part of a running job or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A period of a job that is still running.
    Interim,
    /// The last period of a job; nothing more is billed for it.
    Final,
}

/// Usage during the receipt's period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptUsage {
    /// Wall-clock milliseconds.
    pub wall_ms: u64,
    /// CPU nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory in bytes (over the job so far).
    pub peak_memory_bytes: u64,
    /// Peak number of tasks (over the job so far).
    pub peak_pids: u64,
    /// GPU-milliseconds summed over GPUs; `None` where not measured.
    pub gpu_ms: Option<u64>,
    /// GPU energy in millijoules; `None` where not measured.
    pub gpu_energy_mj: Option<u64>,
    /// Why GPU figures are absent, when they are.
    pub gpu_absent_reason: Option<String>,
    /// Per-GPU facts of the period, when measured (NVML). Omitted (not `null`) when
    /// absent, so receipts issued before the field existed keep their canonical bytes
    /// and verify unchanged; `gpu_absent_reason` says why when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<ReceiptGpu>>,
}

/// What a receipt says about one GPU the job held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptGpu {
    /// The GPU's uuid (`GPU-...`).
    pub uuid: String,
    /// Milliseconds the job held it in the period.
    pub gpu_ms: u64,
    /// Mean SM utilisation over the period, percent.
    pub mean_sm_util_pct: u32,
    /// Energy over the period, joules (NVML's total-energy counter).
    pub energy_j: u64,
}

/// The price of the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPrice {
    /// Amount in millionths of the currency unit.
    pub amount_micros: u64,
    /// Currency or token symbol.
    pub currency: String,
}

/// A signed usage receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// Position in the node's ledger, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the previous receipt ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Job id.
    pub job_id: String,
    /// Lease id (the network's name for the job's contract).
    pub lease_id: String,
    /// Tenant.
    pub tenant: String,
    /// Interim or final.
    pub kind: ReceiptKind,
    /// Period start, Unix milliseconds.
    pub period_start_ms: u64,
    /// Period end, Unix milliseconds.
    pub period_end_ms: u64,
    /// Usage in the period.
    pub usage: ReceiptUsage,
    /// Price of the period.
    pub price: ReceiptPrice,
    /// Hex SHA-256 of the pricing policy (plugin) that priced it.
    pub pricing_policy_sha256: String,
    /// Hex Ed25519 public key of the node.
    pub node_key: String,
    /// The image the job ran: its manifest digest and, when a signature policy applied,
    /// the key that signed it. Omitted (not `null`) when absent, so receipts issued
    /// before the field existed keep their canonical bytes and verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ReceiptImage>,
    /// The id of the signed quote whose terms priced the job (jobs started through the
    /// network API's leases). Omitted when absent, like `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<String>,
    /// Hex Ed25519 signature over [`Receipt::signing_bytes`].
    pub signature: String,
}

/// What a receipt says about the job's image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptImage {
    /// `sha256:<hex>` of the image manifest that ran.
    pub manifest_digest: String,
    /// The registry reference it was pulled by, for registry images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Hex SHA-256 of the SubjectPublicKeyInfo of the key whose cosign signature was
    /// verified before the image was unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_key_sha256: Option<String>,
    /// The operator's name for that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// Canonical JSON bytes of any serialisable value (see [`crate::canonical`]).
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ReceiptError> {
    Ok(crate::canonical::to_canonical_json(value)?)
}

fn is_hex(s: &str, n_bytes: usize) -> bool {
    s.len() == n_bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Receipt {
    /// Parses one receipt (one ledger line) strictly.
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let receipt: Receipt = serde_json::from_slice(bytes).map_err(ReceiptError::Parse)?;
        receipt.check_fields()?;
        Ok(receipt)
    }

    /// Checks the format and the shape of the hex fields.
    pub fn check_fields(&self) -> Result<(), ReceiptError> {
        let invalid = |field, reason: &str| ReceiptError::InvalidField {
            field,
            reason: reason.to_string(),
        };
        if self.format != RECEIPT_FORMAT {
            return Err(invalid(
                "format",
                &format!("{:?} is not {RECEIPT_FORMAT:?}", self.format),
            ));
        }
        if self.seq == 0 {
            return Err(invalid("seq", "must start at 1"));
        }
        if !is_hex(&self.prev_hash, 32) {
            return Err(invalid("prev_hash", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&self.pricing_policy_sha256, 32) {
            return Err(invalid(
                "pricing_policy_sha256",
                "is not 64 lowercase hex digits",
            ));
        }
        if !is_hex(&self.node_key, 32) {
            return Err(invalid("node_key", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&self.signature, 64) {
            return Err(invalid("signature", "is not 128 lowercase hex digits"));
        }
        if self.period_end_ms < self.period_start_ms {
            return Err(invalid("period_end_ms", "is before period_start_ms"));
        }
        if let Some(image) = &self.image {
            let digest_ok = image
                .manifest_digest
                .strip_prefix("sha256:")
                .is_some_and(|hex_part| is_hex(hex_part, 32));
            if !digest_ok {
                return Err(invalid(
                    "image.manifest_digest",
                    "is not sha256:<64 lowercase hex digits>",
                ));
            }
            if let Some(key) = &image.signer_key_sha256
                && !is_hex(key, 32)
            {
                return Err(invalid(
                    "image.signer_key_sha256",
                    "is not 64 lowercase hex digits",
                ));
            }
        }
        Ok(())
    }

    /// The bytes the node signs: [`SIGNING_DOMAIN`] + canonical JSON without `signature`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let mut value = serde_json::to_value(self).map_err(ReceiptError::Parse)?;
        if let Value::Object(map) = &mut value {
            map.remove("signature");
        }
        let mut bytes = SIGNING_DOMAIN.to_vec();
        crate::canonical::write_canonical(&value, &mut bytes)?;
        Ok(bytes)
    }

    /// Signs the receipt with `sign` (the node key's Ed25519 signer).
    pub fn sign_with(&mut self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<(), ReceiptError> {
        let bytes = self.signing_bytes()?;
        self.signature = hex::encode(sign(&bytes));
        Ok(())
    }

    /// Verifies the signature under the receipt's own `node_key`.
    pub fn verify_signature(&self) -> Result<(), ReceiptError> {
        let bad = || ReceiptError::BadSignature {
            node_key: self.node_key.clone(),
        };
        let key = hex::decode(&self.node_key).map_err(|_| bad())?;
        let signature = hex::decode(&self.signature).map_err(|_| bad())?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&self.signing_bytes()?, &signature)
            .map_err(|_| bad())
    }

    /// Hex SHA-256 of the whole receipt (the next receipt's `prev_hash`).
    pub fn hash(&self) -> Result<String, ReceiptError> {
        let bytes = canonical_json(self)?;
        Ok(hex::encode(
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
        ))
    }
}

/// How a ledger is checked.
#[derive(Debug, Clone, Default)]
pub struct LedgerOptions {
    /// The node key every receipt must carry (hex); `None` accepts the first
    /// receipt's key and requires every other receipt to carry the same.
    pub node_key: Option<String>,
    /// Where the export starts, when it is not the whole ledger: (seq, prev_hash).
    pub start: Option<(u64, String)>,
    /// The `seq` the last receipt must have (detects truncation at the end).
    pub expected_last_seq: Option<u64>,
}

/// What is wrong with a ledger record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerFault {
    /// The line is empty.
    #[error("blank line")]
    BlankLine,
    /// The line is too long.
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The last line was cut short.
    #[error("last line is truncated (no newline and not a complete receipt)")]
    TruncatedLine,
    /// The line is not a valid receipt.
    #[error("not a valid receipt: {0}")]
    Invalid(String),
    /// The receipt is signed by another key.
    #[error("node key {found} is not the expected {expected}")]
    WrongKey {
        /// Expected key.
        expected: String,
        /// Key found.
        found: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The ledger does not start where it should.
    #[error("ledger starts at seq {found}, expected {expected} (truncated at the front?)")]
    BadStart {
        /// Expected first seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A sequence number was skipped.
    #[error("sequence gap: expected seq {expected}, found {found}")]
    Gap {
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A sequence number went backwards or repeated.
    #[error("out of order: seq {found} after seq {previous}")]
    Reordered {
        /// Previous seq.
        previous: u64,
        /// Seq found.
        found: u64,
    },
    /// `prev_hash` is not the previous receipt's hash.
    #[error("chain broken: prev_hash {found} is not the previous receipt's hash {expected}")]
    ChainBroken {
        /// Expected hash.
        expected: String,
        /// Hash found.
        found: String,
    },
    /// A job's period overlaps the one already billed.
    #[error(
        "job {job_id} is billed twice: period starts at {start_ms} before the last billed end {billed_until_ms}"
    )]
    OverlappingPeriod {
        /// Job.
        job_id: String,
        /// This period's start.
        start_ms: u64,
        /// End of what was already billed.
        billed_until_ms: u64,
    },
    /// A receipt follows the job's final receipt.
    #[error("job {job_id} has a receipt after its final receipt")]
    AfterFinal {
        /// Job.
        job_id: String,
    },
    /// The ledger ends before the expected head.
    #[error("ledger ends at seq {found}, expected {expected} (truncated at the end)")]
    TruncatedEnd {
        /// Expected last seq.
        expected: u64,
        /// Last seq found.
        found: u64,
    },
}

/// The first bad record of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger line {line}{}: {fault}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct LedgerError {
    /// 1-based line number (the line after the last for end-of-ledger faults).
    pub line: usize,
    /// The record's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub fault: LedgerFault,
}

/// Summary of a ledger that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerSummary {
    /// Number of receipts.
    pub n_receipts: usize,
    /// First seq (0 when empty).
    pub first_seq: u64,
    /// Last seq (0 when empty).
    pub last_seq: u64,
    /// Hash of the last receipt (the head), or [`GENESIS_HASH`] when empty.
    pub head_hash: String,
    /// The node key.
    pub node_key: Option<String>,
    /// Number of distinct jobs.
    pub n_jobs: usize,
    /// Number of jobs with a final receipt.
    pub n_final: usize,
    /// Sum of prices, millionths (per currency).
    pub totals_micros: Vec<(String, u64)>,
}

/// Verifies a JSON-lines ledger; returns the first bad record.
pub fn verify_ledger(text: &[u8], options: &LedgerOptions) -> Result<LedgerSummary, LedgerError> {
    let mut expected_key = options.node_key.clone();
    let (mut expected_seq, mut expected_prev) = match &options.start {
        Some((seq, prev)) => (*seq, prev.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let mut first_seq = 0;
    let mut n_receipts = 0;
    let mut billed: HashMap<String, (u64, bool)> = HashMap::new();
    let mut totals: Vec<(String, u64)> = Vec::new();
    let ends_with_newline = text.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if ends_with_newline || text.is_empty() {
        lines.pop();
    }
    let n_lines = lines.len();
    for (idx, line) in lines.into_iter().enumerate() {
        let line_no = idx + 1;
        let fail = |seq: Option<u64>, fault| LedgerError {
            line: line_no,
            seq,
            fault,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE_BYTES {
            return Err(fail(None, LedgerFault::LineTooLong));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(fail(None, LedgerFault::BlankLine));
        }
        let receipt = match Receipt::from_json(line) {
            Ok(receipt) => receipt,
            Err(err) => {
                let is_last = line_no == n_lines;
                let fault = if is_last
                    && !ends_with_newline
                    && matches!(&err, ReceiptError::Parse(e) if e.is_eof())
                {
                    LedgerFault::TruncatedLine
                } else {
                    LedgerFault::Invalid(plinth_toolbox::error_chain(&err))
                };
                return Err(fail(None, fault));
            }
        };
        let seq = Some(receipt.seq);
        match &expected_key {
            Some(key) if *key != receipt.node_key => {
                return Err(fail(
                    seq,
                    LedgerFault::WrongKey {
                        expected: key.clone(),
                        found: receipt.node_key.clone(),
                    },
                ));
            }
            Some(_) => {}
            None => expected_key = Some(receipt.node_key.clone()),
        }
        if receipt.verify_signature().is_err() {
            return Err(fail(seq, LedgerFault::BadSignature));
        }
        if receipt.seq != expected_seq {
            let fault = if n_receipts == 0 {
                LedgerFault::BadStart {
                    expected: expected_seq,
                    found: receipt.seq,
                }
            } else if receipt.seq < expected_seq {
                LedgerFault::Reordered {
                    previous: expected_seq - 1,
                    found: receipt.seq,
                }
            } else {
                LedgerFault::Gap {
                    expected: expected_seq,
                    found: receipt.seq,
                }
            };
            return Err(fail(seq, fault));
        }
        if receipt.prev_hash != expected_prev {
            return Err(fail(
                seq,
                LedgerFault::ChainBroken {
                    expected: expected_prev,
                    found: receipt.prev_hash.clone(),
                },
            ));
        }
        if let Some((billed_until_ms, was_final)) = billed.get(&receipt.job_id) {
            if *was_final {
                return Err(fail(
                    seq,
                    LedgerFault::AfterFinal {
                        job_id: receipt.job_id.clone(),
                    },
                ));
            }
            if receipt.period_start_ms < *billed_until_ms {
                return Err(fail(
                    seq,
                    LedgerFault::OverlappingPeriod {
                        job_id: receipt.job_id.clone(),
                        start_ms: receipt.period_start_ms,
                        billed_until_ms: *billed_until_ms,
                    },
                ));
            }
        }
        billed.insert(
            receipt.job_id.clone(),
            (receipt.period_end_ms, receipt.kind == ReceiptKind::Final),
        );
        match totals
            .iter_mut()
            .find(|(currency, _)| *currency == receipt.price.currency)
        {
            Some((_, total)) => *total = total.saturating_add(receipt.price.amount_micros),
            None => totals.push((receipt.price.currency.clone(), receipt.price.amount_micros)),
        }
        if n_receipts == 0 {
            first_seq = receipt.seq;
        }
        n_receipts += 1;
        expected_prev = receipt
            .hash()
            .map_err(|err| fail(seq, LedgerFault::Invalid(plinth_toolbox::error_chain(&err))))?;
        expected_seq = receipt.seq + 1;
    }
    let last_seq = if n_receipts == 0 { 0 } else { expected_seq - 1 };
    if let Some(expected) = options.expected_last_seq
        && expected != last_seq
    {
        return Err(LedgerError {
            line: n_lines + 1,
            seq: None,
            fault: LedgerFault::TruncatedEnd {
                expected,
                found: last_seq,
            },
        });
    }
    Ok(LedgerSummary {
        n_receipts,
        first_seq,
        last_seq,
        head_hash: expected_prev,
        node_key: expected_key,
        n_jobs: billed.len(),
        n_final: billed.values().filter(|(_, was_final)| *was_final).count(),
        totals_micros: totals,
    })
}

/// Verifies a ledger and reports it as an appraisal (one named check, with
/// the summary as claims), for `plinth-verify receipts`.
pub fn appraise_ledger(
    name: &str,
    text: &[u8],
    options: &LedgerOptions,
) -> crate::check::Appraisal {
    use crate::check::{Appraisal, Aspect, Check};
    let mut appraisal = Appraisal::new("receipts");
    appraisal.claim("ledger", name);
    match verify_ledger(text, options) {
        Ok(summary) => {
            appraisal.push(Check::pass(
                "receipts.ledger",
                Aspect::InstanceIdentity,
                format!(
                    "{} receipts (seq {}..{}) from {} jobs: signatures, chain, sequence and billing periods verified",
                    summary.n_receipts, summary.first_seq, summary.last_seq, summary.n_jobs
                ),
            ));
            appraisal.claim("receipts", summary.n_receipts as u64);
            appraisal.claim("last_seq", summary.last_seq);
            appraisal.claim("head_hash", summary.head_hash.clone());
            appraisal.claim("jobs", summary.n_jobs as u64);
            appraisal.claim("final_receipts", summary.n_final as u64);
            let totals: serde_json::Map<String, Value> = summary
                .totals_micros
                .iter()
                .map(|(currency, micros)| (currency.clone(), Value::from(*micros)))
                .collect();
            appraisal.claim("totals_micros", Value::Object(totals));
        }
        Err(err) => {
            appraisal.push(Check::fail(
                "receipts.ledger",
                Aspect::InstanceIdentity,
                err.to_string(),
            ));
            appraisal.claim("first_bad_line", err.line as u64);
        }
    }
    appraisal
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn make(
        key: &Ed25519KeyPair,
        seq: u64,
        prev: &str,
        job: &str,
        kind: ReceiptKind,
        start: u64,
        end: u64,
    ) -> Receipt {
        let mut receipt = Receipt {
            format: RECEIPT_FORMAT.into(),
            seq,
            prev_hash: prev.into(),
            job_id: job.into(),
            lease_id: format!("lease-{job}"),
            tenant: "tenant-a".into(),
            kind,
            period_start_ms: start,
            period_end_ms: end,
            usage: ReceiptUsage {
                wall_ms: end - start,
                cpu_ns: 5,
                peak_memory_bytes: 1 << 20,
                peak_pids: 3,
                gpu_ms: None,
                gpu_energy_mj: None,
                gpu_absent_reason: Some("no GPU assigned".into()),
                gpus: None,
            },
            price: ReceiptPrice {
                amount_micros: 1500,
                currency: "ATH".into(),
            },
            pricing_policy_sha256: "ab".repeat(32),
            node_key: hex::encode(key.public_key().as_ref()),
            image: None,
            quote_id: None,
            signature: String::new(),
        };
        receipt
            .sign_with(|bytes| key.sign(bytes).as_ref().try_into().unwrap())
            .unwrap();
        receipt
    }

    /// A valid ledger: job a (interim, final), job b (final).
    fn ledger(key: &Ed25519KeyPair) -> Vec<Receipt> {
        let r1 = make(key, 1, GENESIS_HASH, "a", ReceiptKind::Interim, 1000, 2000);
        let r2 = make(
            key,
            2,
            &r1.hash().unwrap(),
            "b",
            ReceiptKind::Final,
            1500,
            2500,
        );
        let r3 = make(
            key,
            3,
            &r2.hash().unwrap(),
            "a",
            ReceiptKind::Final,
            2000,
            3000,
        );
        vec![r1, r2, r3]
    }

    fn lines(receipts: &[Receipt]) -> Vec<u8> {
        let mut out = Vec::new();
        for receipt in receipts {
            out.extend(serde_json::to_vec(receipt).unwrap());
            out.push(b'\n');
        }
        out
    }

    fn options(key: &Ed25519KeyPair) -> LedgerOptions {
        LedgerOptions {
            node_key: Some(hex::encode(key.public_key().as_ref())),
            ..LedgerOptions::default()
        }
    }

    fn check(
        text: &[u8],
        options: &LedgerOptions,
        line: usize,
        fault: impl Fn(&LedgerFault) -> bool,
    ) {
        let err = verify_ledger(text, options).unwrap_err();
        assert_eq!(err.line, line, "{err}");
        assert!(fault(&err.fault), "{err}");
    }

    #[test]
    fn receipts_with_and_without_an_image_verify() {
        let key = key(7);
        let old = make(&key, 1, GENESIS_HASH, "a", ReceiptKind::Final, 1000, 2000);
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("\"image\""), "{text}");
        let mut new = make(
            &key,
            2,
            &old.hash().unwrap(),
            "b",
            ReceiptKind::Final,
            1000,
            2000,
        );
        new.image = Some(ReceiptImage {
            manifest_digest: format!("sha256:{}", "c".repeat(64)),
            reference: Some("r.example/app:v1".into()),
            signer_key_sha256: Some("d".repeat(64)),
            signer: Some("release".into()),
        });
        new.sign_with(|bytes| key.sign(bytes).as_ref().try_into().unwrap())
            .unwrap();
        let ledger = lines(&[old, new.clone()]);
        verify_ledger(&ledger, &options(&key)).unwrap();
        let parsed = Receipt::from_json(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert_eq!(parsed.image, new.image);
        let mut forged = new.clone();
        forged.image.as_mut().unwrap().manifest_digest = format!("sha256:{}", "e".repeat(64));
        assert!(forged.verify_signature().is_err());
        let mut bad = new;
        bad.image.as_mut().unwrap().manifest_digest = "latest".into();
        assert!(bad.check_fields().is_err());
    }

    #[test]
    fn receipts_with_and_without_per_gpu_facts_verify() {
        let key = key(8);
        let old = make(&key, 1, GENESIS_HASH, "a", ReceiptKind::Final, 1000, 2000);
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("\"gpus\""), "{text}");
        let mut new = make(
            &key,
            2,
            &old.hash().unwrap(),
            "b",
            ReceiptKind::Final,
            1000,
            2000,
        );
        new.usage.gpu_ms = Some(2000);
        new.usage.gpu_energy_mj = Some(1_400_000);
        new.usage.gpu_absent_reason = None;
        new.usage.gpus = Some(vec![
            ReceiptGpu {
                uuid: "GPU-a".into(),
                gpu_ms: 1000,
                mean_sm_util_pct: 97,
                energy_j: 700,
            },
            ReceiptGpu {
                uuid: "GPU-b".into(),
                gpu_ms: 1000,
                mean_sm_util_pct: 95,
                energy_j: 700,
            },
        ]);
        new.sign_with(|bytes| key.sign(bytes).as_ref().try_into().unwrap())
            .unwrap();
        verify_ledger(&lines(&[old, new.clone()]), &options(&key)).unwrap();
        let parsed = Receipt::from_json(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert_eq!(parsed.usage.gpus, new.usage.gpus);
        let mut forged = new;
        forged.usage.gpus.as_mut().unwrap()[0].energy_j = 1;
        assert!(forged.verify_signature().is_err());
    }

    #[test]
    fn canonical_bytes_are_sorted_and_compact() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, "x\n"], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&value).unwrap()).unwrap(),
            r#"{"a":{"c":null,"d":[1,"x\n"]},"b":1}"#
        );
        let key = key(1);
        let receipt = &ledger(&key)[0];
        let signing = receipt.signing_bytes().unwrap();
        assert!(signing.starts_with(b"plinth-receipt/1\n{\"format\":"));
        assert!(!String::from_utf8_lossy(&signing).contains("signature"));
    }

    #[test]
    fn a_good_ledger_verifies() {
        let key = key(1);
        let summary = verify_ledger(&lines(&ledger(&key)), &options(&key)).unwrap();
        assert_eq!(summary.n_receipts, 3);
        assert_eq!(summary.last_seq, 3);
        assert_eq!(summary.n_jobs, 2);
        assert_eq!(summary.n_final, 2);
        assert_eq!(summary.totals_micros, vec![("ATH".to_string(), 4500)]);
        assert_eq!(verify_ledger(b"", &options(&key)).unwrap().n_receipts, 0);
    }

    #[test]
    fn tampering_is_caught_at_the_right_line() {
        let key = key(1);
        let good = ledger(&key);
        let opts = options(&key);
        // A changed price breaks the signature.
        let mut tampered = good.clone();
        tampered[1].price.amount_micros = 1;
        check(&lines(&tampered), &opts, 2, |f| {
            *f == LedgerFault::BadSignature
        });
        // Reordering.
        let reordered = vec![good[0].clone(), good[2].clone(), good[1].clone()];
        check(&lines(&reordered), &opts, 2, |f| {
            matches!(
                f,
                LedgerFault::Gap {
                    expected: 2,
                    found: 3
                }
            )
        });
        let swapped = vec![good[1].clone(), good[0].clone()];
        check(&lines(&swapped), &opts, 1, |f| {
            matches!(
                f,
                LedgerFault::BadStart {
                    expected: 1,
                    found: 2
                }
            )
        });
        // A dropped record in the middle.
        check(&lines(&[good[0].clone(), good[2].clone()]), &opts, 2, |f| {
            matches!(f, LedgerFault::Gap { .. })
        });
        // Truncation at the front, at the end and mid-line.
        check(&lines(&good[1..]), &opts, 1, |f| {
            matches!(f, LedgerFault::BadStart { .. })
        });
        let head = LedgerOptions {
            expected_last_seq: Some(3),
            ..opts.clone()
        };
        check(&lines(&good[..2]), &head, 3, |f| {
            matches!(
                f,
                LedgerFault::TruncatedEnd {
                    expected: 3,
                    found: 2
                }
            )
        });
        let mut cut = lines(&good);
        cut.truncate(cut.len() - 40);
        check(&cut, &opts, 3, |f| *f == LedgerFault::TruncatedLine);
        // A re-signed receipt with a wrong prev_hash: chain broken.
        let forged = make(
            &key,
            2,
            &"11".repeat(32),
            "b",
            ReceiptKind::Final,
            1500,
            2500,
        );
        check(&lines(&[good[0].clone(), forged]), &opts, 2, |f| {
            matches!(f, LedgerFault::ChainBroken { .. })
        });
        // Another node's key.
        let other = key_other();
        let foreign = make(&other, 1, GENESIS_HASH, "a", ReceiptKind::Final, 0, 1);
        check(&lines(&[foreign]), &opts, 1, |f| {
            matches!(f, LedgerFault::WrongKey { .. })
        });
        // A duplicate (replayed) record.
        check(&lines(&[good[0].clone(), good[0].clone()]), &opts, 2, |f| {
            matches!(f, LedgerFault::Reordered { .. })
        });
        // Unknown fields and blank lines.
        let mut extra = lines(&good[..1]);
        extra.extend_from_slice(b"\n");
        check(&extra, &opts, 2, |f| *f == LedgerFault::BlankLine);
        let mut value = serde_json::to_value(&good[0]).unwrap();
        value["bonus"] = 1.into();
        let text = format!("{value}\n");
        check(text.as_bytes(), &opts, 1, |f| {
            matches!(f, LedgerFault::Invalid(_))
        });
    }

    fn key_other() -> Ed25519KeyPair {
        key(2)
    }

    #[test]
    fn double_billing_is_caught() {
        let key = key(1);
        let opts = options(&key);
        let r1 = make(&key, 1, GENESIS_HASH, "a", ReceiptKind::Final, 0, 100);
        let r2 = make(
            &key,
            2,
            &r1.hash().unwrap(),
            "a",
            ReceiptKind::Final,
            100,
            200,
        );
        check(&lines(&[r1.clone(), r2]), &opts, 2, |f| {
            matches!(f, LedgerFault::AfterFinal { .. })
        });
        let i1 = make(&key, 1, GENESIS_HASH, "a", ReceiptKind::Interim, 0, 100);
        let i2 = make(
            &key,
            2,
            &i1.hash().unwrap(),
            "a",
            ReceiptKind::Final,
            50,
            200,
        );
        check(&lines(&[i1, i2]), &opts, 2, |f| {
            matches!(f, LedgerFault::OverlappingPeriod { .. })
        });
    }

    #[test]
    fn ledgers_appraise_as_one_named_check() {
        let key = key(1);
        let good = appraise_ledger("l", &lines(&ledger(&key)), &options(&key));
        assert!(good.verified());
        assert_eq!(good.claims["last_seq"], 3);
        let mut tampered = ledger(&key);
        tampered[2].usage.cpu_ns += 1;
        let bad = appraise_ledger("l", &lines(&tampered), &options(&key));
        assert!(!bad.verified());
        assert_eq!(bad.claims["first_bad_line"], 3);
    }

    #[test]
    fn a_partial_export_verifies_from_its_start() {
        let key = key(1);
        let good = ledger(&key);
        let opts = LedgerOptions {
            start: Some((2, good[0].hash().unwrap())),
            ..options(&key)
        };
        assert_eq!(
            verify_ledger(&lines(&good[1..]), &opts).unwrap().first_seq,
            2
        );
    }
}
