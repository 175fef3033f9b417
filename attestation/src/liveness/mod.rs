//! Liveness ledgers (`"format": "plinth-liveness/1"`) and checkers' probe answers
//! (`"format": "plinth-liveness-probe/1"`): the evidence of a provider's uptime.
//!
//! Every `interval_s` the agent appends an [`Entry`] stating when it was written (wall
//! clock and time since boot), which boot and which agent run wrote it, a health summary
//! and the checker nonces answered since the previous entry. Entries are chained by
//! hash and signed by the node key exactly as receipts are (see [`crate::receipt`]):
//!
//! - **Signed message**: `b"plinth-liveness/1\n"` followed by the canonical JSON
//!   ([`crate::canonical`]) of the entry without its `signature` member.
//! - **Entry hash**: SHA-256 of the canonical JSON of the whole entry, `signature`
//!   included; the next entry's `prev_hash` is its lowercase hex, the first entry's is
//!   [`GENESIS_HASH`].
//!
//! A checker that POSTs a nonce gets a [`ProbeAnswer`]: the node's signature over the
//! nonce, the chain head (seq and hash) and the time. Because the head commits to the
//! whole chain before it, a ledger rewritten later across a probed period contradicts a
//! saved answer. [`verify`] checks a ledger against answers and computes uptime,
//! outages and an SLA verdict ([`sla`]).

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

pub mod sla;
pub mod verify;

#[cfg(test)]
mod tests;

/// The ledger format this module reads and writes.
pub const LIVENESS_FORMAT: &str = "plinth-liveness/1";

/// Domain separator prefixed to an entry's signed bytes.
pub const SIGNING_DOMAIN: &[u8] = b"plinth-liveness/1\n";

/// The probe answer format.
pub const PROBE_FORMAT: &str = "plinth-liveness-probe/1";

/// Domain separator prefixed to a probe answer's signed bytes.
pub const PROBE_SIGNING_DOMAIN: &[u8] = b"plinth-liveness-probe/1\n";

/// `prev_hash` of the first entry, and the head hash of an empty ledger.
pub const GENESIS_HASH: &str = crate::receipt::GENESIS_HASH;

/// Longest ledger or probe-file line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most anchors (answered probes) one entry records.
pub const MAX_ANCHORS_PER_ENTRY: usize = 64;

/// Shortest and longest probe nonce, in bytes.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Errors about one entry or probe answer.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    /// The JSON does not parse as the format.
    #[error("not valid {format} JSON")]
    Parse {
        /// The format expected.
        format: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A field has a bad value.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No canonical form.
    #[error("cannot be canonicalised")]
    Canonical(#[from] crate::canonical::CanonicalError),
}

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The first entry of a ledger.
    Start,
    /// A periodic entry of a run that is going on.
    Tick,
    /// Written at a clean shutdown: the last entry of a run.
    Stop,
    /// The first entry of a run after an earlier one: says how that run ended.
    Gap,
}

/// How the previous run ended, as a `gap` entry states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// A clean stop (SIGTERM, `systemctl stop`), recorded by that run.
    Stopped,
    /// The run ended without recording it: crash, SIGKILL, power loss.
    Unclean,
    /// The host rebooted (the boot id changed).
    Reboot,
}

impl GapCause {
    /// The name used in entries and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Unclean => "unclean",
            Self::Reboot => "reboot",
        }
    }
}

/// What a `gap` entry says about the time the agent was not running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapInfo {
    /// How the previous run ended.
    pub cause: GapCause,
    /// `wall_ms` of this entry minus `previous_wall_ms`.
    pub length_ms: u64,
    /// Seq of the last entry before the gap.
    pub previous_seq: u64,
    /// Wall time of that entry (Unix ms).
    pub previous_wall_ms: u64,
}

/// GPUs of the host as the agent saw them when writing the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSummary {
    /// GPUs drained (not offered to jobs).
    pub drained: u64,
    /// GPUs that pass health checks.
    pub healthy: u64,
    /// GPUs present.
    pub total: u64,
}

/// An active policy plugin and the hash of its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginHash {
    /// The plugin kind (`pricing`, `scheduling`, `reporting`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Hex SHA-256 of its wasm.
    pub sha256: String,
}

/// The agent's health when the entry was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// GPUs total, healthy and drained.
    pub gpus: GpuSummary,
    /// Active policy plugins.
    pub plugins: Vec<PluginHash>,
    /// Jobs running.
    pub running_jobs: u64,
    /// The store's integrity check result at open (`ok` or SQLite's findings).
    pub store: String,
}

/// A checker's probe the agent answered since the previous entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The head seq the answer named.
    pub head_seq: u64,
    /// The checker's nonce (hex).
    pub nonce: String,
    /// The answer's time (Unix ms).
    pub wall_ms: u64,
}

/// A network-quality measurement of one configured peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSample {
    /// When it was measured (Unix ms).
    pub at_ms: u64,
    /// The peer's configured name.
    pub peer: String,
    /// Median round trip, microseconds.
    pub rtt_median_us: u64,
    /// Fastest round trip (connect, handshake, request), microseconds.
    pub rtt_min_us: u64,
    /// 99th percentile round trip, microseconds.
    pub rtt_p99_us: u64,
    /// Round trips measured.
    pub samples: u64,
    /// Bytes per second of the bounded transfer, when one was made.
    pub throughput_bytes_per_s: Option<u64>,
}

/// One signed ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Probes answered since the previous entry.
    pub anchors: Vec<Anchor>,
    /// The kernel's boot id.
    pub boot_id: String,
    /// Time since the host booted (CLOCK_BOOTTIME), milliseconds.
    pub boot_ms: u64,
    /// Always [`LIVENESS_FORMAT`].
    pub format: String,
    /// For `gap` entries: how the previous run ended and how long the agent was away.
    pub gap: Option<GapInfo>,
    /// Health summary.
    pub health: Health,
    /// The interval the agent writes entries at, seconds.
    pub interval_s: u64,
    /// Start, tick, stop or gap.
    pub kind: EntryKind,
    /// The latest network-quality measurements.
    pub net: Vec<NetSample>,
    /// Hex Ed25519 public key of the node.
    pub node_key: String,
    /// Hex SHA-256 of the previous entry ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// The agent run (the store's run record) that wrote it.
    pub run_id: u64,
    /// Position in the ledger, from 1.
    pub seq: u64,
    /// Hex Ed25519 signature over [`Entry::signing_bytes`].
    pub signature: String,
    /// Wall-clock time, Unix milliseconds.
    pub wall_ms: u64,
}

/// A signed answer to a checker's probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswer {
    /// Always [`PROBE_FORMAT`].
    pub format: String,
    /// Hash of the head entry ([`GENESIS_HASH`] when empty).
    pub head_hash: String,
    /// The ledger head when the probe was answered (0 when empty).
    pub head_seq: u64,
    /// Hex Ed25519 public key of the node.
    pub node_key: String,
    /// The checker's nonce (hex).
    pub nonce: String,
    /// Hex Ed25519 signature over [`ProbeAnswer::signing_bytes`].
    pub signature: String,
    /// When it was answered (Unix ms).
    pub wall_ms: u64,
}

pub(crate) fn is_hex(s: &str, n_bytes: usize) -> bool {
    s.len() == n_bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `nonce` is lowercase hex of an acceptable length ([`NONCE_BYTES`]).
pub fn nonce_is_valid(nonce: &str) -> bool {
    nonce.len().is_multiple_of(2)
        && NONCE_BYTES.contains(&(nonce.len() / 2))
        && nonce
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> LivenessError {
    LivenessError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// The canonical JSON of a record of this module and its signed bytes, from one
/// serialisation.
///
/// Every struct here declares its fields in the byte order of their names, nested
/// structs included, and holds no floats, so serde_json's compact output *is* the
/// canonical form of [`crate::canonical`] (checked against it by
/// `tests::serde_order_is_the_canonical_form`); building a `serde_json::Value` and
/// sorting it, as receipts do, costs more than the signature check. The signed bytes
/// are `domain` + that text without its `"signature"` member: a `,"signature":` with an
/// unescaped quote cannot occur inside a JSON string, and no nested object has the key.
fn canonical_forms<T: Serialize>(
    value: &T,
    signature: &str,
    domain: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), LivenessError> {
    let whole = serde_json::to_vec(value).map_err(crate::canonical::CanonicalError::Serialize)?;
    let member = format!(
        ",\"signature\":{}",
        serde_json::to_string(signature).map_err(crate::canonical::CanonicalError::Serialize)?
    );
    let at = whole
        .windows(member.len())
        .rposition(|window| window == member.as_bytes())
        .ok_or_else(|| invalid("signature", "is missing from the serialised record"))?;
    let mut signing = Vec::with_capacity(domain.len() + whole.len());
    signing.extend_from_slice(domain);
    signing.extend_from_slice(&whole[..at]);
    signing.extend_from_slice(&whole[at + member.len()..]);
    Ok((whole, signing))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Signs `signing_bytes` with `sign` and returns the hex signature: the one signing
/// step shared by ledger entries and probe answers.
fn signed_hex(signing_bytes: &[u8], sign: impl FnOnce(&[u8]) -> [u8; 64]) -> String {
    hex::encode(sign(signing_bytes))
}

pub(crate) fn verify_ed25519(node_key: &str, message: &[u8], signature: &str) -> bool {
    let (Ok(key), Ok(signature)) = (hex::decode(node_key), hex::decode(signature)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key)
        .verify(message, &signature)
        .is_ok()
}

impl Entry {
    /// Parses one entry (one ledger line) strictly.
    pub fn from_json(bytes: &[u8]) -> Result<Entry, LivenessError> {
        let entry: Entry =
            serde_json::from_slice(bytes).map_err(|source| LivenessError::Parse {
                format: LIVENESS_FORMAT,
                source,
            })?;
        entry.check_fields()?;
        Ok(entry)
    }

    /// Checks the format, the hex fields and that `gap` is present exactly on gap entries.
    pub fn check_fields(&self) -> Result<(), LivenessError> {
        if self.format != LIVENESS_FORMAT {
            return Err(invalid(
                "format",
                format!("{:?} is not {LIVENESS_FORMAT:?}", self.format),
            ));
        }
        if self.seq == 0 {
            return Err(invalid("seq", "must start at 1"));
        }
        if self.interval_s == 0 {
            return Err(invalid("interval_s", "must be greater than 0"));
        }
        if !is_hex(&self.prev_hash, 32) {
            return Err(invalid("prev_hash", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&self.node_key, 32) {
            return Err(invalid("node_key", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&self.signature, 64) {
            return Err(invalid("signature", "is not 128 lowercase hex digits"));
        }
        if self.anchors.len() > MAX_ANCHORS_PER_ENTRY {
            return Err(invalid(
                "anchors",
                format!(
                    "{} anchors, more than {MAX_ANCHORS_PER_ENTRY}",
                    self.anchors.len()
                ),
            ));
        }
        if let Some(anchor) = self.anchors.iter().find(|a| !nonce_is_valid(&a.nonce)) {
            return Err(invalid(
                "anchors.nonce",
                format!("{:?} is not 16 to 64 bytes of lowercase hex", anchor.nonce),
            ));
        }
        match (&self.kind, &self.gap) {
            (EntryKind::Gap, None) => Err(invalid("gap", "a gap entry must say how the gap began")),
            (EntryKind::Gap, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(invalid("gap", "only gap entries carry `gap`")),
        }
    }

    /// The bytes the node signs: [`SIGNING_DOMAIN`] + canonical JSON without `signature`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, LivenessError> {
        Ok(self.canonical_forms()?.1)
    }

    /// The canonical JSON of the whole entry and the signed bytes, from one
    /// serialisation (what verification needs per entry).
    pub fn canonical_forms(&self) -> Result<(Vec<u8>, Vec<u8>), LivenessError> {
        canonical_forms(self, &self.signature, SIGNING_DOMAIN)
    }

    /// Whether `signing_bytes` verify under the entry's `node_key`.
    pub fn signature_verifies_over(&self, signing_bytes: &[u8]) -> bool {
        verify_ed25519(&self.node_key, signing_bytes, &self.signature)
    }

    /// Signs the entry with `sign` (the node key's Ed25519 signer).
    pub fn sign_with(&mut self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<(), LivenessError> {
        self.signature = signed_hex(&self.signing_bytes()?, sign);
        Ok(())
    }

    /// Whether the signature verifies under the entry's own `node_key`.
    pub fn signature_verifies(&self) -> Result<bool, LivenessError> {
        Ok(verify_ed25519(
            &self.node_key,
            &self.signing_bytes()?,
            &self.signature,
        ))
    }

    /// Chains the entry after `previous` (its seq and hash; `None` for the first entry),
    /// signs it with `sign` and returns its hash: what a ledger writer does per entry.
    pub fn seal(
        &mut self,
        previous: Option<(u64, &str)>,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<String, LivenessError> {
        let (seq, prev_hash) = previous.map_or((1, GENESIS_HASH), |(seq, hash)| (seq + 1, hash));
        self.seq = seq;
        self.prev_hash = prev_hash.to_owned();
        self.sign_with(sign)?;
        self.hash()
    }

    /// Hex SHA-256 of the whole entry (the next entry's `prev_hash`).
    pub fn hash(&self) -> Result<String, LivenessError> {
        let whole =
            serde_json::to_vec(self).map_err(crate::canonical::CanonicalError::Serialize)?;
        Ok(sha256_hex(&whole))
    }
}

impl ProbeAnswer {
    /// Parses one probe answer strictly.
    pub fn from_json(bytes: &[u8]) -> Result<ProbeAnswer, LivenessError> {
        let answer: ProbeAnswer =
            serde_json::from_slice(bytes).map_err(|source| LivenessError::Parse {
                format: PROBE_FORMAT,
                source,
            })?;
        if answer.format != PROBE_FORMAT {
            return Err(invalid(
                "format",
                format!("{:?} is not {PROBE_FORMAT:?}", answer.format),
            ));
        }
        if !nonce_is_valid(&answer.nonce) {
            return Err(invalid("nonce", "is not 16 to 64 bytes of lowercase hex"));
        }
        if !is_hex(&answer.head_hash, 32) {
            return Err(invalid("head_hash", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&answer.node_key, 32) {
            return Err(invalid("node_key", "is not 64 lowercase hex digits"));
        }
        if !is_hex(&answer.signature, 64) {
            return Err(invalid("signature", "is not 128 lowercase hex digits"));
        }
        Ok(answer)
    }

    /// The bytes the node signs: [`PROBE_SIGNING_DOMAIN`] + canonical JSON without
    /// `signature`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, LivenessError> {
        Ok(canonical_forms(self, &self.signature, PROBE_SIGNING_DOMAIN)?.1)
    }

    /// Signs the answer with `sign`.
    pub fn sign_with(&mut self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<(), LivenessError> {
        self.signature = signed_hex(&self.signing_bytes()?, sign);
        Ok(())
    }

    /// Whether the signature verifies under the answer's own `node_key`.
    pub fn signature_verifies(&self) -> Result<bool, LivenessError> {
        Ok(verify_ed25519(
            &self.node_key,
            &self.signing_bytes()?,
            &self.signature,
        ))
    }
}
