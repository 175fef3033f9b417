//! The transcript model, `plinth-challenge/1`: the two rounds' messages and the saved
//! transcript that `plinth-verify challenge` re-checks offline.
//!
//! Every message is a JSON object with a fixed set of members (unknown members are
//! refused); 32-byte values are lowercase hex, the opened rows of C are base64 of their
//! little-endian `i32`s, residues modulo [`super::prg::MODULUS`] are JSON integers (below
//! 2^40, so exact in every JSON implementation). Parse errors name the member that failed
//! (`response.rows[2].proof[0]`), and [`Transcript::validate`] names the field whose value
//! is inconsistent.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::prg::MODULUS;
use super::{FORMAT, MAX_N, N_MULTIPLE};

/// Errors parsing or validating challenge messages.
#[derive(Debug, Error)]
pub enum TranscriptError {
    /// The JSON does not have the transcript's shape.
    #[error("{path}: {reason}")]
    Parse {
        /// The member that failed (`.` for the document).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A field's value is out of range or inconsistent with another.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as a JSON path.
        field: String,
        /// What was wrong.
        reason: String,
    },
}

impl TranscriptError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field (or member path) the error names.
    pub fn field(&self) -> &str {
        match self {
            Self::Parse { path, .. } => path,
            Self::Invalid { field, .. } => field,
        }
    }
}

/// A 32-byte value written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex32(pub [u8; 32]);

impl Serialize for Hex32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(|err| {
            serde::de::Error::custom(format!("'{text}' is not 32 bytes of hex: {err}"))
        })?;
        Ok(Self(out))
    }
}

/// Round 1, challenger to prover: the seed, the size and the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The seed of A and B.
    pub seed: Hex32,
    /// The size: A, B and C are n × n (a multiple of 64, at most 65,536).
    pub n: u32,
    /// How long the prover has to return the commitment, in milliseconds.
    pub deadline_ms: u64,
    /// `SHA-256(r_seed)`: the challenger fixes round 2's randomness before it sees the
    /// commitment, so an auditor can tell that r was not chosen afterwards.
    pub r_commitment: Hex32,
}

impl ChallengeRequest {
    /// Checks the size (field `n`) and the deadline (`deadline_ms`).
    pub fn validate(&self) -> Result<(), TranscriptError> {
        if self.n == 0 || !self.n.is_multiple_of(N_MULTIPLE) || self.n > MAX_N {
            return Err(TranscriptError::invalid(
                "n",
                format!(
                    "{} is not a positive multiple of {N_MULTIPLE} up to {MAX_N}",
                    self.n
                ),
            ));
        }
        if self.deadline_ms == 0 {
            return Err(TranscriptError::invalid("deadline_ms", "must be positive"));
        }
        Ok(())
    }
}

/// What produced a commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProverInfo {
    /// `cpu` or `gpu:INDEX`.
    pub device: String,
    /// The device's model as the driver names it (`NVIDIA H200`), or `cpu`.
    pub model: String,
}

/// Round 1's answer: the Merkle root over the rows of C.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// The challenge's id at the prover (round 2 names it).
    pub id: String,
    /// The Merkle root over the rows of C.
    pub root: Hex32,
    /// The prover's own measure of the time from the request to the root, in
    /// milliseconds (informational: the deadline is judged on the challenger's clock).
    pub compute_ms: u64,
    /// The device that computed C.
    pub prover: ProverInfo,
}

/// Round 2, challenger to prover: the randomness of r and the rows to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The preimage of the request's `r_commitment`; r is derived from it and the root.
    pub r_seed: Hex32,
    /// Distinct row indices of C to open.
    pub rows: Vec<u32>,
}

/// One opened row of C.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenedRow {
    /// The row's index.
    pub index: u32,
    /// The row: base64 of n little-endian `i32`s.
    pub values: String,
    /// The Merkle proof: siblings from the leaf up.
    pub proof: Vec<Hex32>,
}

impl OpenedRow {
    /// The row's entries, or why they do not decode to `n` values (`field` names the
    /// member in errors).
    pub fn entries(&self, n: usize, field: &str) -> Result<Vec<i32>, TranscriptError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.values)
            .map_err(|err| TranscriptError::invalid(field, format!("not base64: {err}")))?;
        if bytes.len() != n * 4 {
            return Err(TranscriptError::invalid(
                field,
                format!(
                    "{} bytes, expected {} (n = {n} int32 values)",
                    bytes.len(),
                    n * 4
                ),
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|chunk| i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }

    /// Encodes a row.
    pub fn encode(row: &[i32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(super::merkle::row_bytes(row))
    }
}

/// Round 2's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenResponse {
    /// `C·r mod p`, n residues.
    pub cr: Vec<u64>,
    /// The requested rows, in the order requested.
    pub rows: Vec<OpenedRow>,
}

/// A saved transcript: both rounds and the challenger's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    /// `plinth-challenge/1`.
    pub format: String,
    /// Round 1's request.
    pub challenge: ChallengeRequest,
    /// Round 1's answer.
    pub commitment: Commitment,
    /// The challenger's time from sending round 1 to receiving the commitment, in
    /// milliseconds.
    pub elapsed_ms: u64,
    /// Round 2's request.
    pub open: OpenRequest,
    /// Round 2's answer.
    pub response: OpenResponse,
}

impl Transcript {
    /// Parses a transcript; errors name the member that failed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TranscriptError> {
        parse_json(bytes)
    }

    /// Checks the transcript's shape: the format, the size, the lengths of `cr` and of
    /// every row, the openings against the request. Errors name the field.
    pub fn validate(&self) -> Result<(), TranscriptError> {
        if self.format != FORMAT {
            return Err(TranscriptError::invalid(
                "format",
                format!("'{}' is not {FORMAT}", self.format),
            ));
        }
        self.challenge
            .validate()
            .map_err(|err| prefix("challenge", err))?;
        validate_open_request(&self.open, self.challenge.n).map_err(|err| prefix("open", err))?;
        let n = self.challenge.n as usize;
        if self.response.cr.len() != n {
            return Err(TranscriptError::invalid(
                "response.cr",
                format!("{} values, expected n = {n}", self.response.cr.len()),
            ));
        }
        if let Some(position) = self.response.cr.iter().position(|&v| v >= MODULUS) {
            return Err(TranscriptError::invalid(
                format!("response.cr[{position}]"),
                format!("not below the modulus {MODULUS}"),
            ));
        }
        if self.response.rows.len() != self.open.rows.len() {
            return Err(TranscriptError::invalid(
                "response.rows",
                format!(
                    "{} rows opened, {} requested",
                    self.response.rows.len(),
                    self.open.rows.len()
                ),
            ));
        }
        for (position, (opened, &requested)) in
            self.response.rows.iter().zip(&self.open.rows).enumerate()
        {
            if opened.index != requested {
                return Err(TranscriptError::invalid(
                    format!("response.rows[{position}].index"),
                    format!("{} opened, {requested} requested", opened.index),
                ));
            }
            opened.entries(n, &format!("response.rows[{position}].values"))?;
        }
        Ok(())
    }
}

/// Checks round 2's request against the size: indices distinct and below n, at least one.
pub fn validate_open_request(open: &OpenRequest, n: u32) -> Result<(), TranscriptError> {
    if open.rows.is_empty() {
        return Err(TranscriptError::invalid("rows", "no rows to open"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (position, &index) in open.rows.iter().enumerate() {
        if index >= n {
            return Err(TranscriptError::invalid(
                format!("rows[{position}]"),
                format!("{index} is not below n = {n}"),
            ));
        }
        if !seen.insert(index) {
            return Err(TranscriptError::invalid(
                format!("rows[{position}]"),
                format!("{index} is requested twice"),
            ));
        }
    }
    Ok(())
}

fn prefix(parent: &str, err: TranscriptError) -> TranscriptError {
    match err {
        TranscriptError::Invalid { field, reason } => TranscriptError::Invalid {
            field: format!("{parent}.{field}"),
            reason,
        },
        other => other,
    }
}

/// Parses any challenge message; errors name the member that failed.
pub fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, TranscriptError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        TranscriptError::Parse {
            path: err.path().to_string(),
            reason: err.inner().to_string(),
        }
    })?;
    deserializer.end().map_err(|err| TranscriptError::Parse {
        path: ".".to_owned(),
        reason: err.to_string(),
    })?;
    Ok(value)
}
