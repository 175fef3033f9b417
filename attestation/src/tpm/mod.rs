//! TPM 2.0 evidence: quotes, attestation keys, PCR files and TCG event logs.
//!
//! Structures are parsed from their TPM wire encoding (big-endian, TPM2B
//! size-prefixed) by hand, without libtss2; every parser has a fuzz target.

pub mod credential;
pub mod eventlog;
pub mod pcrs;
pub mod public;
pub mod quote;

use serde::Serialize;

/// A TPM hash algorithm (TPM_ALG_ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HashAlg {
    /// SHA-1 (0x0004).
    Sha1,
    /// SHA-256 (0x000B).
    Sha256,
    /// SHA-384 (0x000C).
    Sha384,
    /// SHA-512 (0x000D).
    Sha512,
    /// SM3-256 (0x0012): parsed, never computed.
    Sm3_256,
}

impl HashAlg {
    /// From a TPM_ALG_ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000B => Some(Self::Sha256),
            0x000C => Some(Self::Sha384),
            0x000D => Some(Self::Sha512),
            0x0012 => Some(Self::Sm3_256),
            _ => None,
        }
    }

    /// The TPM_ALG_ID.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
        }
    }

    /// The tpm2-tools name ("sha256").
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sm3_256 => "sm3_256",
        }
    }

    /// From the tpm2-tools name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Sha1,
            Self::Sha256,
            Self::Sha384,
            Self::Sha512,
            Self::Sm3_256,
        ]
        .into_iter()
        .find(|alg| alg.name() == name)
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3_256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hashes `data`; None for algorithms ring does not implement (SM3).
    pub fn digest(self, data: &[u8]) -> Option<Vec<u8>> {
        let alg = match self {
            Self::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha384 => &ring::digest::SHA384,
            Self::Sha512 => &ring::digest::SHA512,
            Self::Sm3_256 => return None,
        };
        Some(ring::digest::digest(alg, data).as_ref().to_vec())
    }

    /// PCR extend: H(old || new); None for unsupported algorithms.
    pub fn extend(self, old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(old.len() + new.len());
        buf.extend_from_slice(old);
        buf.extend_from_slice(new);
        self.digest(&buf)
    }
}
