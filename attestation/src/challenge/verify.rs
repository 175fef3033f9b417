//! The verifier: re-checks a transcript in O(n²) time and O(n) memory.
//!
//! A and B are regenerated row by row from the seed (never stored), `s = B·r` is one
//! pass over B and `A·s` one pass over A, each modulo [`MODULUS`]; the opened rows are
//! checked against the root and against `C·r`. The checks, by name:
//!
//! - `challenge.structure`: the transcript's shape ([`Transcript::validate`]);
//! - `challenge.r_commitment`: `SHA-256(r_seed)` is round 1's `r_commitment`;
//! - `challenge.openings`: at least the policy's `min_rows` rows were opened;
//! - `challenge.merkle`: every opened row's proof leads to the committed root;
//! - `challenge.rows`: every opened row's dot product with r is its entry of `C·r`;
//! - `challenge.freivalds`: `A·(B·r) = C·r` modulo p;
//! - `challenge.deadline`: the commitment arrived within the challenge's deadline;
//! - `challenge.capacity`: the size fits the claimed device's memory and the commitment
//!   arrived within the policy's budget for that device ([`ChallengePolicy`]).

use rayon::prelude::*;

use super::merkle::{self, Hash};
use super::policy::ChallengePolicy;
use super::prg::{self, MODULUS, Matrix, RowGenerator};
use super::transcript::Transcript;
use crate::check::{Appraisal, Aspect, Check};

/// `A·(B·r) mod p` for the challenge with `seed` and size `n`, on all cores.
pub fn freivalds_product(seed: &[u8; 32], n: usize, r: &[u64]) -> Vec<u64> {
    let times = |generator: RowGenerator, vector: &[u64]| -> Vec<u64> {
        (0..n)
            .into_par_iter()
            .map_init(
                || vec![0i8; n],
                |row, index| {
                    generator.fill_row(index, row);
                    prg::dot_i8(row, vector)
                },
            )
            .collect()
    };
    let s = times(RowGenerator::new(seed, n, Matrix::B), r);
    times(RowGenerator::new(seed, n, Matrix::A), &s)
}

/// Verifies a transcript against a policy; every check is named (see the module
/// documentation).
pub fn verify(transcript: &Transcript, policy: &ChallengePolicy) -> Appraisal {
    let mut appraisal = Appraisal::new("challenge");
    if let Err(err) = transcript.validate() {
        appraisal.push(Check::fail(
            "challenge.structure",
            Aspect::Configuration,
            err.to_string(),
        ));
        return appraisal;
    }
    let n = transcript.challenge.n as usize;
    let seed = transcript.challenge.seed.0;
    let root = transcript.commitment.root.0;
    appraisal.push(Check::pass(
        "challenge.structure",
        Aspect::Configuration,
        format!("{} with n = {n}", transcript.format),
    ));
    appraisal.claim("n", n);
    appraisal.claim("device", transcript.commitment.prover.device.clone());
    appraisal.claim("model", transcript.commitment.prover.model.clone());
    appraisal.claim("root", hex::encode(root));
    appraisal.claim("elapsed_ms", transcript.elapsed_ms);
    appraisal.claim("compute_ms", transcript.commitment.compute_ms);
    let ops = 2 * (n as u128).pow(3);
    appraisal.claim(
        "achieved_gops",
        u64::try_from(ops / u128::from(transcript.elapsed_ms.max(1)) / 1_000_000)
            .unwrap_or(u64::MAX),
    );

    let r_seed = transcript.open.r_seed.0;
    let committed = prg::digest(&[&r_seed]);
    appraisal.push(Check::from_bool(
        "challenge.r_commitment",
        Aspect::Freshness,
        committed == transcript.challenge.r_commitment.0,
        if committed == transcript.challenge.r_commitment.0 {
            "r_seed is the preimage of round 1's r_commitment".to_owned()
        } else {
            format!(
                "SHA-256(r_seed) is {}, round 1 committed to {}",
                hex::encode(committed),
                hex::encode(transcript.challenge.r_commitment.0)
            )
        },
    ));
    let opened = transcript.open.rows.len();
    appraisal.push(Check::from_bool(
        "challenge.openings",
        Aspect::Hardware,
        opened >= policy.min_rows as usize,
        format!(
            "{opened} rows opened, the policy asks at least {}",
            policy.min_rows
        ),
    ));

    let r = prg::r_vector(&r_seed, &root, n);
    let mut bad_proofs = Vec::new();
    let mut bad_rows = Vec::new();
    for (position, row) in transcript.response.rows.iter().enumerate() {
        let Ok(entries) = row.entries(n, "row") else {
            continue; // Ruled out by validate.
        };
        let leaf = merkle::leaf(&seed, row.index, &entries);
        let proof: Vec<Hash> = row.proof.iter().map(|h| h.0).collect();
        if merkle::root_from_proof(leaf, row.index as usize, n, &proof) != Some(root) {
            bad_proofs.push(format!("response.rows[{position}] (row {})", row.index));
        }
        let expected = transcript.response.cr[row.index as usize];
        if prg::dot_i32(&entries, &r) != expected {
            bad_rows.push(format!("response.rows[{position}] (row {})", row.index));
        }
    }
    appraisal.push(Check::from_bool(
        "challenge.merkle",
        Aspect::Hardware,
        bad_proofs.is_empty(),
        if bad_proofs.is_empty() {
            format!("{opened} proofs lead to the root")
        } else {
            format!(
                "proof does not lead to the committed root: {}",
                bad_proofs.join(", ")
            )
        },
    ));
    appraisal.push(Check::from_bool(
        "challenge.rows",
        Aspect::Hardware,
        bad_rows.is_empty(),
        if bad_rows.is_empty() {
            format!("{opened} opened rows agree with C·r")
        } else {
            format!("row · r differs from response.cr: {}", bad_rows.join(", "))
        },
    ));

    let expected = freivalds_product(&seed, n, &r);
    let mismatches: Vec<usize> = expected
        .iter()
        .zip(&transcript.response.cr)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(index, _)| index)
        .collect();
    appraisal.push(Check::from_bool(
        "challenge.freivalds",
        Aspect::Hardware,
        mismatches.is_empty(),
        if mismatches.is_empty() {
            format!("A·(B·r) = C·r modulo {MODULUS}")
        } else {
            format!(
                "A·(B·r) differs from response.cr in {} of {n} entries (first: {})",
                mismatches.len(),
                mismatches
                    .iter()
                    .take(4)
                    .map(|i| format!("response.cr[{i}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    ));

    let deadline = transcript.challenge.deadline_ms;
    appraisal.push(Check::from_bool(
        "challenge.deadline",
        Aspect::Freshness,
        transcript.elapsed_ms <= deadline,
        format!(
            "commitment after {} ms, deadline {deadline} ms",
            transcript.elapsed_ms
        ),
    ));
    appraisal.push(capacity(transcript, policy));
    appraisal
}

fn capacity(transcript: &Transcript, policy: &ChallengePolicy) -> Check {
    let model = &transcript.commitment.prover.model;
    let n = u64::from(transcript.challenge.n);
    let result = policy.allowance(model, n).and_then(|allowance| {
        if let Some((needed, available)) = allowance.memory
            && needed > available
        {
            return Err(format!(
                "n = {n} needs {needed} bytes, more than the {available} of a {model}"
            ));
        }
        if transcript.elapsed_ms > allowance.budget_ms {
            return Err(format!(
                "commitment after {} ms, the policy allows a {model} {} ms for n = {n}",
                transcript.elapsed_ms, allowance.budget_ms
            ));
        }
        Ok(format!(
            "commitment after {} ms, within the {} ms a {model} is allowed for n = {n}",
            transcript.elapsed_ms, allowance.budget_ms
        ))
    });
    Check::from_result("challenge.capacity", Aspect::Configuration, result)
}
