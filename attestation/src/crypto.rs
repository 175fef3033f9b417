//! The verifier's signature backend: aws-lc-rs, with ring's API.
//!
//! Every signature the verifier checks (certificate chains, SNP and SPDM
//! reports, TPM quotes) goes through [`signature`]. aws-lc-rs verifies ECDSA
//! P-384 about four times and RSA-PSS-4096 about 1.3 times as fast as ring
//! here (see docs/attestation.md, "Benchmarks"), and it is already needed for
//! TPM2_MakeCredential (RSA-OAEP with a label, AES-CFB), so ring is kept only
//! for digests, Ed25519 and the node and EAR keys, where both are equally
//! fast. aws-lc-rs builds with a C compiler alone on Linux and macOS.

pub use aws_lc_rs::signature;
