//! The agent's side of the capacity challenge: round 1 computes and commits, round 2
//! opens, with the committed C kept in memory between them.
//!
//! The prover is chosen per request: `cpu` (the CPU prover, rayon) or `gpu:INDEX` (the
//! CUDA prover, [`super::cuda`], when libcuda is present). At most
//! [`MAX_PENDING`] challenges wait for round 2 (each holds C, `4·n²` bytes), and a
//! pending challenge expires after [`PENDING_TTL`]. n is capped at [`MAX_AGENT_N`] so
//! that a request cannot make the agent allocate more than a few GiB.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plinth_attestation::challenge::{
    self, ChallengeRequest, Commitment, Committed, Hex32, OpenRequest, OpenResponse, Prover,
    TranscriptError,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most challenges waiting for round 2.
pub const MAX_PENDING: usize = 4;

/// How long a committed challenge waits for round 2.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// The largest n the agent accepts (C is 1 GiB at 16,384).
pub const MAX_AGENT_N: u32 = 16_384;

/// Errors of the challenge endpoints.
#[derive(Debug, Error)]
pub enum ChallengeApiError {
    /// The request is malformed; names the field.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No pending challenge has this id.
    #[error("no pending challenge {id} (unknown, already opened, or expired)")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// Too many challenges wait for round 2.
    #[error("{MAX_PENDING} challenges already wait for round 2")]
    Busy,
    /// The prover could not run.
    #[error("the prover failed: {detail}")]
    Prover {
        /// What failed.
        detail: String,
    },
}

impl From<TranscriptError> for ChallengeApiError {
    fn from(err: TranscriptError) -> Self {
        match err {
            TranscriptError::Parse { path, reason } => Self::Invalid {
                field: path,
                reason,
            },
            TranscriptError::Invalid { field, reason } => Self::Invalid { field, reason },
        }
    }
}

/// The body of `POST /v1/challenges`: round 1's request and the device to prove on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartChallenge {
    /// The seed of A and B.
    pub seed: Hex32,
    /// The size.
    pub n: u32,
    /// The deadline, milliseconds.
    pub deadline_ms: u64,
    /// `SHA-256(r_seed)`.
    pub r_commitment: Hex32,
    /// `cpu` (default) or `gpu:INDEX`.
    #[serde(default)]
    pub device: Option<String>,
}

impl StartChallenge {
    /// Round 1's request.
    pub fn request(&self) -> ChallengeRequest {
        ChallengeRequest {
            seed: self.seed,
            n: self.n,
            deadline_ms: self.deadline_ms,
            r_commitment: self.r_commitment,
        }
    }
}

/// Which prover a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU prover.
    Cpu,
    /// The CUDA prover on this GPU index.
    Gpu(u32),
}

/// Parses `cpu` or `gpu:INDEX`.
pub fn parse_device(text: &str) -> Result<Device, ChallengeApiError> {
    if text == "cpu" {
        return Ok(Device::Cpu);
    }
    text.strip_prefix("gpu:")
        .and_then(|index| index.parse().ok())
        .map(Device::Gpu)
        .ok_or_else(|| ChallengeApiError::Invalid {
            field: "device".to_owned(),
            reason: format!("'{text}' is neither cpu nor gpu:INDEX"),
        })
}

struct Pending {
    committed: Committed,
    at: Instant,
}

/// Challenges answered in round 1, waiting for round 2.
#[derive(Default)]
pub struct Challenges {
    pending: Mutex<BTreeMap<String, Pending>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Challenges").finish_non_exhaustive()
    }
}

fn new_id() -> Result<String, ChallengeApiError> {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        ChallengeApiError::Prover {
            detail: "the system random number generator failed".to_owned(),
        }
    })?;
    Ok(format!("ch-{}", hex::encode(bytes)))
}

impl Challenges {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates a round-1 request (the size against [`MAX_AGENT_N`] too).
    pub fn validate(request: &ChallengeRequest) -> Result<(), ChallengeApiError> {
        request.validate()?;
        if request.n > MAX_AGENT_N {
            return Err(ChallengeApiError::Invalid {
                field: "n".to_owned(),
                reason: format!(
                    "{} is larger than this agent's limit {MAX_AGENT_N}",
                    request.n
                ),
            });
        }
        Ok(())
    }

    /// Round 1: computes C with `prover`, commits, keeps it for round 2. Blocking (run
    /// it on a blocking thread).
    pub fn round1(
        &self,
        prover: &dyn Prover,
        request: &ChallengeRequest,
    ) -> Result<Commitment, ChallengeApiError> {
        Self::validate(request)?;
        {
            let mut pending = self.lock();
            pending.retain(|_, entry| entry.at.elapsed() < PENDING_TTL);
            if pending.len() >= MAX_PENDING {
                return Err(ChallengeApiError::Busy);
            }
        }
        let id = new_id()?;
        let committed =
            challenge::commit(prover, &id, request).map_err(|err| ChallengeApiError::Prover {
                detail: crate::error_chain(&err),
            })?;
        let commitment = committed.commitment.clone();
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            return Err(ChallengeApiError::Busy);
        }
        pending.insert(
            id,
            Pending {
                committed,
                at: Instant::now(),
            },
        );
        Ok(commitment)
    }

    /// Round 2: opens the rows and returns `C·r`; the challenge is then forgotten.
    pub fn round2(&self, id: &str, open: &OpenRequest) -> Result<OpenResponse, ChallengeApiError> {
        let entry = self
            .lock()
            .remove(id)
            .filter(|entry| entry.at.elapsed() < PENDING_TTL)
            .ok_or_else(|| ChallengeApiError::UnknownId { id: id.to_owned() })?;
        match entry.committed.open(open) {
            Ok(response) => Ok(response),
            Err(err) => {
                // A malformed round 2 does not cost the challenger its round 1.
                self.lock().insert(id.to_owned(), entry);
                Err(err.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_attestation::challenge::{ChallengePolicy, Challenger, CpuProver};

    #[test]
    fn both_rounds_through_the_agent_give_a_verifying_transcript() {
        let challenges = Challenges::default();
        let challenger = Challenger::new(128, 600_000).unwrap();
        let started = Instant::now();
        let commitment = challenges.round1(&CpuProver, &challenger.request).unwrap();
        let elapsed = started.elapsed().as_millis() as u64;
        let open = challenger.open_request(8);
        let response = challenges.round2(&commitment.id, &open).unwrap();
        let transcript = challenger.transcript(commitment.clone(), elapsed, open.clone(), response);
        let policy = ChallengePolicy {
            slack_ms: 600_000,
            ..ChallengePolicy::default()
        };
        assert!(challenge::verify(&transcript, &policy).verified());
        // Opened once only.
        assert!(matches!(
            challenges.round2(&commitment.id, &open),
            Err(ChallengeApiError::UnknownId { .. })
        ));
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let challenges = Challenges::default();
        let mut request = Challenger::new(128, 1000).unwrap().request;
        request.n = 100;
        let err = challenges.round1(&CpuProver, &request).unwrap_err();
        assert!(
            matches!(&err, ChallengeApiError::Invalid { field, .. } if field == "n"),
            "{err}"
        );
        request.n = MAX_AGENT_N + 64;
        let err = challenges.round1(&CpuProver, &request).unwrap_err();
        assert!(
            matches!(&err, ChallengeApiError::Invalid { field, .. } if field == "n"),
            "{err}"
        );
        request.n = 64;
        let commitment = challenges.round1(&CpuProver, &request).unwrap();
        let open = OpenRequest {
            r_seed: Hex32([0; 32]),
            rows: vec![3, 3],
        };
        let err = challenges.round2(&commitment.id, &open).unwrap_err();
        assert!(
            matches!(&err, ChallengeApiError::Invalid { field, .. } if field == "rows[1]"),
            "{err}"
        );
        // Still pending after the malformed round 2.
        let open = OpenRequest {
            r_seed: Hex32([0; 32]),
            rows: vec![3],
        };
        assert!(challenges.round2(&commitment.id, &open).is_ok());
        assert!(matches!(
            parse_device("gpu:x"),
            Err(ChallengeApiError::Invalid { .. })
        ));
        assert_eq!(parse_device("gpu:3").unwrap(), Device::Gpu(3));
    }
}
