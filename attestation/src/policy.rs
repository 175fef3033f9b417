//! The appraisal policy: reference values and minimums, from a TOML file.
//!
//! Every section and key is optional; unknown keys are rejected so that a typo
//! in a policy never silently weakens it. See `docs/attestation.md` for an
//! example.
//!
//! Defaults have one source: each struct's `Default` implementation. Every
//! struct is `#[serde(default)]` at the container level, so a missing section,
//! an empty section and a section missing some keys all take their values from
//! `Default`, and `Policy::default()` is exactly the policy of an empty file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Errors loading a policy file.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}")]
    Read {
        /// The policy path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("invalid policy file {path}")]
    Parse {
        /// The policy path.
        path: String,
        /// The TOML error (names the key and line).
        #[source]
        source: toml::de::Error,
    },
}

/// Bytes written in the policy as a hex string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HexBytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::bytes::decode_hex_text(&text)
            .map(HexBytes)
            .map_err(|err| serde::de::Error::custom(format!("'{text}' is not hex: {err}")))
    }
}

/// The whole appraisal policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Reference values for SEV-SNP reports.
    pub snp: SnpPolicy,
    /// Reference values for NVIDIA GPU reports.
    pub gpu: GpuPolicy,
    /// Reference values for TPM quotes and event logs.
    pub tpm: TpmPolicy,
    /// Settings for the EAR token.
    pub ear: EarPolicy,
    /// What a fleet auditor requires of evidence bundles.
    pub fleet: FleetPolicy,
    /// The capacity challenge: GPU models' peak int8 throughput and memory, deadlines.
    pub challenge: crate::challenge::ChallengePolicy,
}

impl Policy {
    /// Loads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| PolicyError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// Minimum TCB component versions (security patch levels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinTcb {
    /// Minimum boot loader SPL.
    pub bootloader: u8,
    /// Minimum PSP OS (TEE) SPL.
    pub tee: u8,
    /// Minimum SNP firmware SPL.
    pub snp: u8,
    /// Minimum CPU microcode SPL.
    pub microcode: u8,
    /// Minimum FMC SPL (Turin and later; ignored for older products).
    pub fmc: u8,
}

/// SEV-SNP reference values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnpPolicy {
    /// Accept guests launched with the DEBUG policy bit (default: no).
    pub allow_debug: bool,
    /// Minimum reported TCB.
    pub min_tcb: Option<MinTcb>,
    /// Allowed launch measurements (48-byte hex each); empty = any.
    pub measurements: Vec<HexBytes>,
    /// Expected REPORT_DATA (up to 64 bytes, zero-padded).
    pub report_data: Option<HexBytes>,
    /// Accept reports signed with a VLEK (default: yes; cloud SNP instances
    /// sign with VLEKs).
    pub allow_vlek: bool,
    /// Minimum guest SVN.
    pub min_guest_svn: Option<u32>,
    /// Required VMPL of the report (e.g. 0).
    pub vmpl: Option<u32>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        Self {
            allow_debug: false,
            min_tcb: None,
            measurements: Vec::new(),
            report_data: None,
            allow_vlek: true,
            min_guest_svn: None,
            vmpl: None,
        }
    }
}

/// NVIDIA GPU reference values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuPolicy {
    /// Expected nonce (32 bytes hex); `--nonce` overrides it.
    pub nonce: Option<HexBytes>,
    /// Allowed driver versions as the report states them (e.g. "550.144.03"); empty = any.
    pub driver_versions: Vec<String>,
    /// Allowed VBIOS versions as the report states them (e.g. "96.00.74.00.1C"); empty = any.
    pub vbios_versions: Vec<String>,
    /// Reference measurements by block index ("2" = ["hex", ...]): each listed
    /// block must equal one of its values.
    pub measurements: BTreeMap<String, Vec<HexBytes>>,
    /// Refuse any bytes after the SPDM signature, zero padding included
    /// (default: no; zero padding is accepted and noted, as the Confidential
    /// Containers stack records reports with a trailing 0x00).
    pub strict_length: bool,
}

/// TPM reference values and EK trust.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TpmPolicy {
    /// Expected qualifying data (nonce), hex; `--nonce` overrides it.
    pub nonce: Option<HexBytes>,
    /// Golden PCR values: bank name ("sha256") -> PCR index ("7") -> hex value.
    pub pcrs: BTreeMap<String, BTreeMap<String, HexBytes>>,
    /// PEM files of the CAs trusted to issue EK certificates (roots and
    /// intermediates), relative to the policy file's directory.
    pub ek_ca_files: Vec<String>,
    /// EK Names (nameAlg || digest, hex, as `tpm2_readpublic` prints them)
    /// trusted without a certificate.
    pub pinned_ek_names: Vec<HexBytes>,
    /// How long an enrollment challenge stays valid, in seconds (default 600).
    pub enrollment_ttl_seconds: u64,
}

impl Default for TpmPolicy {
    fn default() -> Self {
        Self {
            nonce: None,
            pcrs: BTreeMap::new(),
            ek_ca_files: Vec::new(),
            pinned_ek_names: Vec::new(),
            enrollment_ttl_seconds: 600,
        }
    }
}

/// A kind of evidence a bundle can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    /// The TPM quote.
    Tpm,
    /// The SEV-SNP report.
    Snp,
    /// A report for every GPU the host claims (nothing on hosts claiming none).
    Gpu,
}

impl EvidenceKind {
    /// The name used in the policy and in check details.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::Snp => "snp",
            Self::Gpu => "gpu",
        }
    }
}

/// What a fleet auditor requires of evidence bundles (`[fleet]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetPolicy {
    /// Allowed SHA-256 digests of the agent binary; empty = any (check skipped).
    pub agent_binaries: Vec<HexBytes>,
    /// Allowed SHA-256 digests of plugins; empty = any (check skipped).
    pub plugins: Vec<HexBytes>,
    /// Evidence every bundle must carry (default: tpm and gpu; gpu means a
    /// report for every claimed GPU, so it asks nothing of hosts without GPUs).
    pub require: Vec<EvidenceKind>,
    /// Require the quote's AK to be enrolled (an AK record given for it);
    /// default yes.
    pub require_enrolled_ak: bool,
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self {
            agent_binaries: Vec::new(),
            plugins: Vec::new(),
            require: vec![EvidenceKind::Tpm, EvidenceKind::Gpu],
            require_enrolled_ak: true,
        }
    }
}

/// EAR token settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarPolicy {
    /// `ear.verifier-id.developer` (default "plinth").
    pub developer: String,
    /// `ear.appraisal-policy-id` written into each submodule.
    pub policy_id: Option<String>,
}

impl Default for EarPolicy {
    fn default() -> Self {
        Self {
            developer: "plinth".to_owned(),
            policy_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_policy() {
        let policy = Policy::from_toml(
            r#"
            [snp]
            allow_debug = false
            min_tcb = { bootloader = 2, snp = 5, microcode = 68 }
            measurements = ["00ff"]
            report_data = "abcd"
            [gpu]
            nonce = "0x11"
            driver_versions = ["550.144.03"]
            measurements = { "2" = ["aa"] }
            [tpm]
            nonce = "beef"
            pcrs.sha256 = { "0" = "00" }
            [ear]
            developer = "auditor"
            "#,
        )
        .unwrap();
        assert_eq!(policy.snp.min_tcb.unwrap().snp, 5);
        assert_eq!(policy.snp.measurements[0].0, vec![0, 0xff]);
        assert!(policy.snp.allow_vlek);
        assert_eq!(policy.gpu.nonce.unwrap().0, vec![0x11]);
        assert_eq!(policy.tpm.pcrs["sha256"]["0"].0, vec![0]);
        assert_eq!(policy.ear.developer, "auditor");
    }

    /// One source of defaults: no file, an empty file, every section present
    /// but empty, and a section with only some keys all agree with `Default`.
    #[test]
    fn defaults_have_one_source() {
        let built_in = Policy::default();
        assert!(built_in.snp.allow_vlek, "VLEK is allowed by default");
        assert!(!built_in.snp.allow_debug);
        assert!(!built_in.gpu.strict_length);
        assert_eq!(built_in.ear.developer, "plinth");
        assert_eq!(built_in.tpm.enrollment_ttl_seconds, 600);
        assert_eq!(
            built_in.fleet.require,
            vec![EvidenceKind::Tpm, EvidenceKind::Gpu]
        );
        assert!(built_in.fleet.require_enrolled_ak);
        assert_eq!(Policy::from_toml("").unwrap(), built_in);
        assert_eq!(
            Policy::from_toml("[snp]\n[gpu]\n[tpm]\n[ear]\n[fleet]\n").unwrap(),
            built_in
        );
        for section in ["snp", "gpu", "tpm", "ear", "fleet"] {
            assert_eq!(
                Policy::from_toml(&format!("[{section}]\n")).unwrap(),
                built_in,
                "[{section}] alone"
            );
        }
        // A section with one key keeps every other default.
        let partial = Policy::from_toml("[snp]\nallow_debug = true\n").unwrap();
        assert_eq!(
            partial.snp,
            SnpPolicy {
                allow_debug: true,
                ..SnpPolicy::default()
            }
        );
        let partial = Policy::from_toml("[snp]\nmin_tcb = { snp = 3 }\n").unwrap();
        assert_eq!(
            partial.snp.min_tcb,
            Some(MinTcb {
                snp: 3,
                ..MinTcb::default()
            })
        );
        let partial = Policy::from_toml("[ear]\npolicy_id = \"p\"\n").unwrap();
        assert_eq!(partial.ear.developer, "plinth");
        let partial = Policy::from_toml("[fleet]\nplugins = [\"ab\"]\n").unwrap();
        assert_eq!(
            partial.fleet,
            FleetPolicy {
                plugins: vec![HexBytes(vec![0xab])],
                ..FleetPolicy::default()
            }
        );
        let partial = Policy::from_toml("[tpm]\nek_ca_files = [\"ca.pem\"]\n").unwrap();
        assert_eq!(partial.tpm.enrollment_ttl_seconds, 600);
        let none = Policy::from_toml("[fleet]\nrequire = []\n").unwrap();
        assert!(none.fleet.require.is_empty());
        assert!(Policy::from_toml("[fleet]\nrequire = [\"tpu\"]\n").is_err());
        // Explicit values override.
        let strict =
            Policy::from_toml("[snp]\nallow_vlek = false\n[gpu]\nstrict_length = true\n").unwrap();
        assert!(!strict.snp.allow_vlek);
        assert!(strict.gpu.strict_length);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_hex() {
        assert!(Policy::from_toml("[snp]\nallow_debugg = true\n").is_err());
        assert!(Policy::from_toml("[snp]\nreport_data = \"xyz\"\n").is_err());
        assert!(Policy::from_toml("[nope]\n").is_err());
    }
}
