//! plinth-attestation: the offline verifier behind `plinth-verify`.
//!
//! Everything in this crate is pure Rust but its crypto backends: signatures
//! are checked with aws-lc-rs ([`crypto`]), digests and Ed25519 with `ring`;
//! certificates are parsed with `x509-parser`, and no module does network I/O.
//! Each kind of evidence has its own module with a parser (fuzzed, see `fuzz/`)
//! and a verifier that reports every check by name:
//!
//! - [`snp`]: AMD SEV-SNP attestation reports and the VCEK/VLEK -> ASK/ASVK -> ARK chain.
//! - [`gpu`]: NVIDIA SPDM GET_MEASUREMENTS reports, the device certificate chain and RIMs.
//! - [`tpm`]: TPM 2.0 quotes, AK public keys, PCR files and TCG event logs.
//! - [`policy`]: the appraisal policy file (TOML) with reference values and minimums.
//! - [`enroll`]: AK enrollment documents (request, challenge, response, AK record).
//! - [`ear`]: the signed EAR result token (draft-ietf-rats-ear).
//! - [`check`]: the named pass/fail checks every verifier returns.
//! - [`bundle`]: the signed evidence bundle (`plinth-evidence/1`) that binds all of it to one nonce.
//! - [`canonical`]: the canonical JSON that bundles, receipts and liveness ledgers sign.
//! - [`challenge`]: the GPU capacity challenge (`plinth-challenge/1`): PRG, Merkle
//!   commitment, Freivalds verifier, the CPU prover and the capacity policy.
//! - [`liveness`]: the signed liveness ledger, checkers' probe answers, uptime, outages and SLAs.
//!
//! - [`collect`]: the agent's side, the collectors (TPM, SEV-SNP, NVIDIA). Whatever
//!   needs a hardware library (tss-esapi, the `sev` ioctls, NVML) sits behind a cargo
//!   feature (`collect-tpm`, `collect-snp`, `collect-nvidia`), off by default, so that
//!   the verifier always builds on a laptop without TPM, SEV or NVIDIA software.

pub mod bundle;
pub mod bytes;
pub mod canonical;
pub mod challenge;
pub mod check;
pub mod cli;
pub mod collect;
pub mod crypto;
pub mod ear;
pub mod enroll;
pub mod gpu;
pub mod liveness;
pub mod policy;
pub mod receipt;
pub mod snp;
pub mod tpm;
pub mod x509chain;

pub use check::{Appraisal, Check, CheckStatus};
