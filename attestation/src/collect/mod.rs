//! Evidence collectors: the agent's side of attestation.
//!
//! Each hardware family sits behind its own module and cargo feature, so the verifier
//! (`plinth-verify`) never links a hardware library:
//!
//! - [`tpm`] (feature `collect-tpm`, tss-esapi over libtss2): EK, AK, quote,
//!   ActivateCredential, the TCG event log;
//! - [`snp`] (trait always; the `/dev/sev-guest` implementation with feature
//!   `collect-snp`): the extended attestation report and its certificate table;
//! - [`nvidia`] (trait always; the NVML implementation with feature
//!   `collect-nvidia`): per-GPU CC attestation reports and certificate chains.
//!
//! The SNP and NVIDIA modules also hold labelled test doubles that replay recorded
//! real reports (`cfg(any(test, feature = "test-doubles"))`); nothing selects them at
//! run time. What is pure (the PCR selection syntax, the EK algorithm names) is always
//! compiled so that the agent's configuration is checked on any build.

pub mod nvidia;
pub mod pcr_spec;
pub mod snp;
#[cfg(feature = "collect-tpm")]
pub mod tpm;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use pcr_spec::{PcrBankSelection, PcrSpec, PcrSpecError};

/// A piece of evidence, or why there is none.
///
/// Collectors never fail the agent for missing hardware: an absent TPM, SNP device or
/// GPU driver is a [`Gathered::Absent`] with the reason, recorded in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gathered<T> {
    /// The evidence.
    Present(T),
    /// Why the evidence is missing (one line, naming the device or operation).
    Absent {
        /// The reason.
        reason: String,
    },
}

impl<T> Gathered<T> {
    /// An absent piece with `reason`.
    pub fn absent(reason: impl Into<String>) -> Self {
        Self::Absent {
            reason: reason.into(),
        }
    }

    /// From a result: the error (and its causes, on one line) becomes the reason.
    pub fn from_result<E: std::error::Error>(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Self::Present(value),
            Err(err) => Self::absent(plinth_toolbox::error_chain(&err)),
        }
    }

    /// The evidence, when present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Self::Present(value) => Some(value),
            Self::Absent { .. } => None,
        }
    }

    /// The reason, when absent.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Present(_) => None,
            Self::Absent { reason } => Some(reason),
        }
    }
}

/// The endorsement key's algorithm, which also decides the AK's: the templates of the
/// TCG EK Credential Profile (2.3 r2 B.3.3/B.3.4, 2.5 r2 B.4 for P-384) and the EK
/// certificate's NV index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EkAlgorithm {
    /// RSA 2048 (template L-1; certificate at 0x01c00002; AK RSA 2048, RSASSA-SHA256).
    #[default]
    Rsa2048,
    /// ECC NIST P-256 (template L-2; certificate at 0x01c0000a; AK P-256, ECDSA-SHA256).
    EccP256,
    /// ECC NIST P-384 (template H-3; certificate at 0x01c00016; AK P-384, ECDSA-SHA384).
    EccP384,
}

impl EkAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [Self; 3] = [Self::Rsa2048, Self::EccP256, Self::EccP384];

    /// The configuration name (`rsa2048`, `ecc-p256`, `ecc-p384`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::EccP256 => "ecc-p256",
            Self::EccP384 => "ecc-p384",
        }
    }

    /// The NV index of this EK's certificate (TCG EK Credential Profile, 2.2.1.4/2.2.1.5).
    pub fn certificate_nv_index(self) -> u32 {
        match self {
            Self::Rsa2048 => 0x01c0_0002,
            Self::EccP256 => 0x01c0_000a,
            Self::EccP384 => 0x01c0_0016,
        }
    }
}

impl fmt::Display for EkAlgorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for EkAlgorithm {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.name() == text)
            .ok_or_else(|| {
                format!("unknown EK algorithm {text:?}; use rsa2048, ecc-p256 or ecc-p384")
            })
    }
}

impl TryFrom<String> for EkAlgorithm {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<EkAlgorithm> for String {
    fn from(alg: EkAlgorithm) -> Self {
        alg.name().to_owned()
    }
}

/// The first and last persistent handle a TPM accepts for TPM2_EvictControl by the
/// owner (TPM 2.0 Part 2, 7.5: 0x81000000-0x817fffff is the owner's range).
pub const OWNER_PERSISTENT_RANGE: (u32, u32) = (0x8100_0000, 0x817f_ffff);

/// Checks that `handle` may hold the agent's AK: a persistent handle in the owner's range.
pub fn check_ak_handle(handle: u32) -> Result<(), String> {
    let (first, last) = OWNER_PERSISTENT_RANGE;
    if (first..=last).contains(&handle) {
        Ok(())
    } else {
        Err(format!(
            "{handle:#010x} is not a persistent handle in the owner's range {first:#010x}-{last:#010x}"
        ))
    }
}

/// The DER SEQUENCE at the start of `bytes` (definite lengths of up to four bytes):
/// certificates from NV indices, certificate tables and driver buffers arrive padded.
pub(crate) fn der_prefix(bytes: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n_len_bytes = usize::from(first & 0x7f);
        if n_len_bytes == 0 || n_len_bytes > 4 || rest.len() < n_len_bytes {
            return None;
        }
        let len = rest[..n_len_bytes]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (len, 2 + n_len_bytes)
    };
    bytes.get(..header.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ek_algorithms_round_trip_by_name() {
        for alg in EkAlgorithm::ALL {
            assert_eq!(alg.name().parse::<EkAlgorithm>().unwrap(), alg);
        }
        let err = "rsa4096".parse::<EkAlgorithm>().unwrap_err();
        assert!(err.contains("\"rsa4096\""), "{err}");
        assert_eq!(EkAlgorithm::default(), EkAlgorithm::Rsa2048);
    }

    #[test]
    fn ak_handles_must_be_owner_persistent() {
        assert!(check_ak_handle(0x8101_0002).is_ok());
        for bad in [0x0100_0000, 0x8000_0000, 0x8180_0000, 0x81ff_ffff] {
            let err = check_ak_handle(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:#010x}")), "{err}");
        }
    }

    #[test]
    fn der_prefix_reads_long_and_short_lengths() {
        assert_eq!(
            der_prefix(&[0x30, 2, 1, 2, 0, 0]),
            Some(&[0x30, 2, 1, 2][..])
        );
        let long = [vec![0x30, 0x82, 0x01, 0x00], vec![7; 0x100], vec![0; 3]].concat();
        assert_eq!(der_prefix(&long).map(<[u8]>::len), Some(0x104));
        assert_eq!(der_prefix(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_prefix(&[0x31, 0]), None);
        assert_eq!(der_prefix(&[0x30, 5, 1]), None);
    }

    #[test]
    fn gathered_keeps_the_reason() {
        let absent: Gathered<u8> = Gathered::from_result(Err(std::io::Error::other("no device")));
        assert_eq!(absent.reason(), Some("no device"));
        assert_eq!(absent.present(), None);
        assert_eq!(Gathered::<u8>::Present(3).present(), Some(&3));
    }
}
