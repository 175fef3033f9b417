//! Integration tests for plinth-attestation against real evidence vectors
//! (../shared/vectors, or $PLINTH_VECTORS) and against swtpm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle;
mod certgen;
mod chain;
mod challenge;
mod cli;
mod cli_bundle;
mod cli_liveness;
#[cfg(feature = "collect-tpm")]
mod collect_tpm;
mod common;
mod enroll;
mod eventlog;
mod gpu;
mod host;
mod snp;
mod swtpm;
mod tpm;
mod vectors;
