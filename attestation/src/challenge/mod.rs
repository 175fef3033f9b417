//! The capacity challenge (`plinth-challenge/1`): a two-round challenge–response that
//! shows a host can multiply large int8 matrices as fast as the GPU it claims, checked
//! in O(n²) by anyone holding the transcript.
//!
//! Round 1: the challenger sends a seed, a size n, a deadline and `SHA-256(r_seed)`. The
//! prover derives the `i8` matrices A and B from the seed ([`prg`]), computes C = A·B
//! exactly (`i32` accumulation; a [`prover::Prover`]), and returns the Merkle root over
//! C's rows ([`merkle`]) and its compute time. Round 2: the challenger reveals `r_seed`
//! (r is derived from it *and the root*) and k row indices; the prover returns `C·r mod
//! p` and the opened rows with their proofs. The verifier ([`verify`]) regenerates A and
//! B, checks Freivalds' `A·(B·r) = C·r`, each opened row's dot product with r and its
//! proof, and, with the policy ([`policy`]), that the commitment came within the time a
//! device of the claimed model needs and that n fits its memory.
//!
//! Why it is sound: the root is fixed before r is known, and r depends on the root, so
//! changing C (or the root) after seeing r changes r. A prover that commits to a wrong C
//! must either answer `C·r` for its wrong C (Freivalds fails, except with probability
//! 1/p per wrong row) or answer the honest `A·(B·r)` (which it can compute in O(n²))
//! with rows that do not match it (every opened wrong row fails `challenge.rows`): a
//! prover that computed only a fraction f of the rows passes k random openings with
//! probability (1 − f)^k at most. The deadline turns correctness into capacity.
//!
//! The messages are in [`transcript`]; the challenger's side is [`Challenger`].

pub mod merkle;
pub mod policy;
pub mod prg;
pub mod prover;
pub mod transcript;
pub mod verify;

use rand_core::{Rng as _, SeedableRng as _};
use thiserror::Error;

pub use policy::ChallengePolicy;
pub use prover::{Committed, CpuProver, Prover, ProverError, commit};
pub use transcript::{
    ChallengeRequest, Commitment, Hex32, OpenRequest, OpenResponse, OpenedRow, ProverInfo,
    Transcript, TranscriptError,
};
pub use verify::verify;

/// The transcript format.
pub const FORMAT: &str = "plinth-challenge/1";

/// n must be a multiple of this (whole ChaCha20 words per row, tensor-core tiles).
pub const N_MULTIPLE: u32 = 64;

/// The largest n: 65,536 keeps every `i32` entry of C and every `i64` sum of the
/// verifier exact.
pub const MAX_N: u32 = 65_536;

/// The rows a challenger opens by default.
pub const DEFAULT_ROWS: u32 = 16;

/// Errors of the challenger.
#[derive(Debug, Error)]
pub enum ChallengeError {
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The request or the answer is malformed.
    #[error(transparent)]
    Transcript(#[from] TranscriptError),
}

/// The challenger's side: round 1's request with its secret `r_seed`.
#[derive(Debug, Clone)]
pub struct Challenger {
    /// Round 1's request.
    pub request: ChallengeRequest,
    r_seed: [u8; 32],
}

fn random_32() -> Result<[u8; 32], ChallengeError> {
    let mut out = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .map_err(|_| ChallengeError::Random)?;
    Ok(out)
}

impl Challenger {
    /// A fresh challenge of size `n` with `deadline_ms`, seeds from the system RNG.
    pub fn new(n: u32, deadline_ms: u64) -> Result<Self, ChallengeError> {
        Self::with_seeds(n, deadline_ms, random_32()?, random_32()?)
    }

    /// A challenge with given seeds (tests).
    pub fn with_seeds(
        n: u32,
        deadline_ms: u64,
        seed: [u8; 32],
        r_seed: [u8; 32],
    ) -> Result<Self, ChallengeError> {
        let request = ChallengeRequest {
            seed: Hex32(seed),
            n,
            deadline_ms,
            r_commitment: Hex32(prg::digest(&[&r_seed])),
        };
        request.validate()?;
        Ok(Self { request, r_seed })
    }

    /// Round 2's request: `r_seed` and `rows` distinct row indices drawn from it
    /// (all rows when `rows >= n`).
    pub fn open_request(&self, rows: u32) -> OpenRequest {
        let n = self.request.n;
        let wanted = rows.min(n) as usize;
        let mut rng = chacha20::ChaCha20Rng::from_seed(prg::digest(&[
            b"plinth-challenge/1 rows",
            &self.r_seed,
        ]));
        let mut chosen = Vec::with_capacity(wanted);
        let mut seen = std::collections::BTreeSet::new();
        while chosen.len() < wanted {
            let index = (rng.next_u64() % u64::from(n)) as u32;
            if seen.insert(index) {
                chosen.push(index);
            }
        }
        OpenRequest {
            r_seed: Hex32(self.r_seed),
            rows: chosen,
        }
    }

    /// The saved transcript of both rounds.
    pub fn transcript(
        &self,
        commitment: Commitment,
        elapsed_ms: u64,
        open: OpenRequest,
        response: OpenResponse,
    ) -> Transcript {
        Transcript {
            format: FORMAT.to_owned(),
            challenge: self.request.clone(),
            commitment,
            elapsed_ms,
            open,
            response,
        }
    }
}

/// Plays both sides in-process with `prover`: the transcript of one honest run (tests,
/// benchmarks, burn-in).
pub fn run_local(
    prover: &dyn Prover,
    n: u32,
    deadline_ms: u64,
    rows: u32,
) -> Result<Transcript, ProverError> {
    let challenger = Challenger::new(n, deadline_ms).map_err(|err| ProverError::Device {
        device: prover.info().device,
        detail: err.to_string(),
    })?;
    let started = std::time::Instant::now();
    let committed = commit(prover, "local", &challenger.request)?;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let open = challenger.open_request(rows);
    let response = committed.open(&open)?;
    Ok(challenger.transcript(committed.commitment.clone(), elapsed_ms, open, response))
}
