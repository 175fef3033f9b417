//! The `plinth-evidence/1` data model: serde types, the binding digest, the
//! node signature and the strict parser.
//!
//! # Representation
//!
//! - Digests, keys, nonces and signatures are lowercase hex ([`Hex`],
//!   [`HexVec`]); binary evidence (TPM structures, reports, DER certificates,
//!   the event log) is standard padded base64 ([`Base64Bytes`]). Parsing
//!   refuses other spellings (uppercase hex, unpadded or non-canonical
//!   base64), so a parsed bundle serialises back to exactly the members it
//!   was read from.
//! - An optional member that is absent is omitted, never `null`.
//! - A piece of evidence ([`Piece`]) is an object with a `status` member:
//!   `{"status":"present", ...the piece's members}` or
//!   `{"status":"absent","reason":"why"}`.
//! - `evidence.gpus[i]` is the evidence of `claims.gpus[i]` (same length,
//!   same order); an absent entry says why that GPU has none.
//!
//! # Binding and signature
//!
//! `binding = SHA-256(BINDING_DOMAIN || u16_be(len(nonce)) || nonce ||
//! canonical(claims))`, see [`binding_digest`]. It is the TPM quote's
//! qualifyingData (32 bytes), the SNP report's REPORT_DATA (binding followed
//! by 32 zero bytes) and each GPU's SPDM requester nonce (32 bytes).
//!
//! The node signs `SIGNING_DOMAIN || canonical(bundle without "signature")`
//! with its Ed25519 key ([`EvidenceBundle::sign`],
//! [`EvidenceBundle::verify_node_signature`]). The canonical form is
//! [`crate::canonical`]'s.

use std::collections::BTreeMap;
use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use thiserror::Error;

use crate::canonical::{self, CanonicalError};
use crate::tpm::HashAlg;
use crate::tpm::pcrs::PcrValues;

/// The format string of this version of the bundle.
pub const FORMAT: &str = "plinth-evidence/1";

/// Domain separator at the start of the binding digest's input.
pub const BINDING_DOMAIN: &[u8] = b"plinth-evidence/1 binding\n";

/// Domain separator at the start of the bytes the node signs.
pub const SIGNING_DOMAIN: &[u8] = b"plinth-evidence/1 signature\n";

/// Shortest verifier nonce accepted, in bytes.
pub const MIN_NONCE_LEN: usize = 16;

/// Longest verifier nonce accepted, in bytes.
pub const MAX_NONCE_LEN: usize = 64;

/// Largest bundle [`EvidenceBundle::parse`] reads, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// Most GPUs (claims and evidence entries) in one bundle.
pub const MAX_GPUS: usize = 64;

/// Most plugins in one bundle's claims.
pub const MAX_PLUGINS: usize = 256;

/// Most certificates in one chain (EK, SNP or GPU).
pub const MAX_CHAIN_CERTS: usize = 16;

/// Errors building, signing or parsing a bundle.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The file is larger than [`MAX_BUNDLE_BYTES`].
    #[error("bundle is {size} bytes, more than the {max} a bundle may have")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The JSON does not match the model; `path` names the member.
    #[error("bundle member `{path}`: {reason}")]
    Json {
        /// Dotted path of the member (`evidence.tpm: quote`, `claims.gpus[0].uuid`).
        path: String,
        /// What serde said.
        reason: String,
    },
    /// A member parsed but its value is not allowed.
    #[error("bundle member `{field}` is invalid: {reason}")]
    Invalid {
        /// Dotted path of the member.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The canonical form could not be produced.
    #[error("bundle cannot be canonicalised")]
    Canonical(#[from] CanonicalError),
    /// The signing key is not the key the claims name.
    #[error("signing key {key} is not the claims' node_public_key {claimed}")]
    KeyMismatch {
        /// Hex public key of the signer.
        key: String,
        /// Hex key in the claims.
        claimed: String,
    },
    /// The binding member is not the digest of the nonce and claims.
    #[error("binding {found} is not the digest of the nonce and claims ({expected})")]
    BindingMismatch {
        /// The bundle's binding.
        found: String,
        /// The recomputed digest.
        expected: String,
    },
    /// The node signature does not verify.
    #[error("node signature does not verify under node_public_key {node_key}")]
    BadSignature {
        /// Hex node key.
        node_key: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `N` bytes written as `2N` lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = decode_lower_hex(&text).map_err(D::Error::custom)?;
        let array: [u8; N] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            D::Error::custom(format!(
                "'{text}' is {} bytes, expected {N} ({} hex digits)",
                bytes.len(),
                2 * N
            ))
        })?;
        Ok(Self(array))
    }
}

/// Bytes of any length written as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HexVec(pub Vec<u8>);

impl fmt::Debug for HexVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl Serialize for HexVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode_lower_hex(&text).map(Self).map_err(D::Error::custom)
    }
}

fn decode_lower_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("'{text}' is not lowercase hex"));
    }
    hex::decode(text).map_err(|err| format!("'{text}' is not hex: {err}"))
}

/// Binary data written as standard, padded base64.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|err| {
                D::Error::custom(format!(
                    "not standard padded base64 ({err}) in a {}-character string",
                    text.len()
                ))
            })
    }
}

/// A piece of evidence: present with its data, or absent with the reason.
///
/// Serialised as the data's members plus `"status":"present"`, or as
/// `{"status":"absent","reason":"..."}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece<T> {
    /// The evidence was collected.
    Present(T),
    /// It was not, and this is why.
    Absent {
        /// Why (no device, driver missing, CC mode off, the collector's error).
        reason: String,
    },
}

impl<T> Piece<T> {
    /// The data when present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Self::Present(data) => Some(data),
            Self::Absent { .. } => None,
        }
    }

    /// An absent piece with `reason`.
    pub fn absent(reason: impl Into<String>) -> Self {
        Self::Absent {
            reason: reason.into(),
        }
    }
}

impl<T: Serialize> Serialize for Piece<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut map = match self {
            Self::Present(data) => match serde_json::to_value(data).map_err(S::Error::custom)? {
                Value::Object(map) => map,
                _ => return Err(S::Error::custom("present evidence is not a JSON object")),
            },
            Self::Absent { reason } => {
                let mut map = serde_json::Map::new();
                map.insert("reason".to_owned(), Value::String(reason.clone()));
                map
            }
        };
        let status = match self {
            Self::Present(_) => "present",
            Self::Absent { .. } => "absent",
        };
        if map.contains_key("status") {
            return Err(S::Error::custom(
                "evidence data has its own `status` member",
            ));
        }
        map.insert("status".to_owned(), Value::String(status.to_owned()));
        map.serialize(serializer)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Piece<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::deserialize(deserializer)?;
        let status = match map.remove("status") {
            Some(Value::String(status)) => status,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "status: expected \"present\" or \"absent\", found {other}"
                )));
            }
            None => return Err(D::Error::missing_field("status")),
        };
        match status.as_str() {
            "absent" => {
                let reason = match map.remove("reason") {
                    Some(Value::String(reason)) => reason,
                    Some(_) => return Err(D::Error::custom("reason: expected a string")),
                    None => return Err(D::Error::missing_field("reason")),
                };
                if let Some(key) = map.keys().next() {
                    return Err(D::Error::custom(format!(
                        "unknown member `{key}` in absent evidence (only status and reason)"
                    )));
                }
                Ok(Self::Absent { reason })
            }
            "present" => serde_path_to_error::deserialize(Value::Object(map))
                .map(Self::Present)
                .map_err(|err| D::Error::custom(format!("{}: {}", err.path(), err.inner()))),
            other => Err(D::Error::custom(format!(
                "status: expected \"present\" or \"absent\", found \"{other}\""
            ))),
        }
    }
}

/// The agent binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentClaims {
    /// The agent's version (`plinth-agent --version`).
    pub version: String,
    /// SHA-256 of the running agent binary (`/proc/self/exe`).
    pub binary_sha256: Hex<32>,
}

/// One loaded policy plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginClaim {
    /// Its kind: `pricing`, `scheduling` or `reporting`.
    pub kind: String,
    /// Its name from the manifest.
    pub name: String,
    /// Its version from the manifest.
    pub version: String,
    /// SHA-256 of the plugin's component (the wasm bytes).
    pub sha256: Hex<32>,
}

/// A GPU's confidential-computing mode as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    /// CC on: attestation reports are available.
    On,
    /// CC off.
    Off,
    /// CC DevTools mode (reports available, not production).
    Devtools,
    /// The driver did not say.
    Unknown,
}

impl CcMode {
    /// The serialised name.
    pub fn name(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Devtools => "devtools",
            Self::Unknown => "unknown",
        }
    }
}

/// One GPU of the host's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuClaim {
    /// NVML device index.
    pub index: u32,
    /// The GPU's UUID (`GPU-...`).
    pub uuid: String,
    /// Model name (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Driver version.
    pub driver_version: String,
    /// VBIOS version.
    pub vbios_version: String,
    /// Confidential-computing mode.
    pub cc_mode: CcMode,
}

/// What the node says about itself; the binding digest covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClaims {
    /// The node's Ed25519 public key (32 bytes), which signs the bundle.
    pub node_public_key: Hex<32>,
    /// The host name.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// The agent binary.
    pub agent: AgentClaims,
    /// SHA-256 of the merged configuration, as `plinth-agent check-config` prints it.
    pub config_sha256: Hex<32>,
    /// Every loaded plugin.
    pub plugins: Vec<PluginClaim>,
    /// The GPU inventory.
    pub gpus: Vec<GpuClaim>,
}

/// PCR values by bank name (`sha256`) and PCR index (serialised as a string key).
pub type PcrBanks = BTreeMap<String, BTreeMap<u32, HexVec>>;

/// TPM evidence: the AK, a quote over the binding, PCRs and the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// The AK's public area (TPM2B_PUBLIC, as `tpm2_createak -u` writes it).
    pub ak_public: Base64Bytes,
    /// The AK's persistent handle (e.g. 0x81010002).
    pub ak_handle: u32,
    /// The quote: the marshalled TPMS_ATTEST (`tpm2_quote -m`).
    pub quote: Base64Bytes,
    /// The quote's TPMT_SIGNATURE (`tpm2_quote -s`).
    pub signature: Base64Bytes,
    /// The quoted PCRs' values (the selection is the quote's).
    pub pcrs: PcrBanks,
    /// The binary TCG event log, when the host has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Base64Bytes>,
    /// The EK certificate (DER), when the TPM holds one in NV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_certificate: Option<Base64Bytes>,
    /// Intermediate certificates of the EK certificate (DER), leaf's issuer first.
    pub ek_chain: Vec<Base64Bytes>,
    /// The EK's public area (TPM2B_PUBLIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_public: Option<Base64Bytes>,
}

impl TpmEvidence {
    /// The PCR values in the form the quote verifier takes; errors name the bank.
    pub fn pcr_values(&self) -> Result<PcrValues, BundleError> {
        let mut values = PcrValues::new();
        for (bank_name, bank) in &self.pcrs {
            let field = format!("evidence.tpm.pcrs.{bank_name}");
            let alg = HashAlg::from_name(bank_name)
                .ok_or_else(|| invalid(&field, "is not a TPM hash algorithm name"))?;
            for (index, digest) in bank {
                if *index > 23 {
                    return Err(invalid(format!("{field}.{index}"), "is not a PCR index"));
                }
                if digest.0.len() != alg.size() {
                    return Err(invalid(
                        format!("{field}.{index}"),
                        format!(
                            "is {} bytes, a {bank_name} digest is {}",
                            digest.0.len(),
                            alg.size()
                        ),
                    ));
                }
                values
                    .entry(alg)
                    .or_default()
                    .insert(*index, digest.0.clone());
            }
        }
        Ok(values)
    }

    /// PCR banks from verifier-form values.
    pub fn banks_from(values: &PcrValues) -> PcrBanks {
        values
            .iter()
            .map(|(alg, bank)| {
                let bank = bank
                    .iter()
                    .map(|(index, digest)| (*index, HexVec(digest.clone())))
                    .collect();
                (alg.name().to_owned(), bank)
            })
            .collect()
    }
}

/// SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The attestation report (0x4A0 bytes), REPORT_DATA = binding || 32 zero bytes.
    pub report: Base64Bytes,
    /// The VCEK or VLEK certificate (DER), as the report's signing key says.
    pub vcek: Base64Bytes,
    /// The ASK/ASVK and ARK (DER, ASK first); empty: the verifier's pinned chain.
    pub chain: Vec<Base64Bytes>,
}

/// One GPU's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidence {
    /// NVML device index (equals the claim's).
    pub index: u32,
    /// The GPU's UUID (equals the claim's).
    pub uuid: String,
    /// Architecture (`hopper`, `blackwell`).
    pub arch: String,
    /// The SPDM GET_MEASUREMENTS request and response, nonce = binding.
    pub report: Base64Bytes,
    /// The device certificate chain (DER), leaf first.
    pub certificates: Vec<Base64Bytes>,
    /// Confidential-computing mode.
    pub cc_mode: CcMode,
    /// Driver version.
    pub driver_version: String,
    /// VBIOS version.
    pub vbios_version: String,
}

/// Every piece of hardware evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The TPM quote and what opens it.
    pub tpm: Piece<TpmEvidence>,
    /// The SEV-SNP report.
    pub snp: Piece<SnpEvidence>,
    /// One entry per `claims.gpus` entry, same order.
    pub gpus: Vec<Piece<GpuEvidence>>,
    /// The latest capacity-challenge result (integers only), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Value>,
}

/// The signature algorithm of the node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
}

/// The node's signature over the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSignature {
    /// Always `ed25519`.
    pub algorithm: SignatureAlgorithm,
    /// The 64-byte signature over [`SIGNING_DOMAIN`] and the canonical unsigned bundle.
    pub value: Hex<64>,
}

/// A bundle: the nonce, the claims and the evidence, and the node's
/// signature once signed ([`EvidenceBundle`]; before that, [`UnsignedBundle`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle<S: SignatureState> {
    /// Always [`FORMAT`].
    pub format: String,
    /// The verifier's nonce.
    pub nonce: HexVec,
    /// When the evidence was collected (RFC 3339).
    pub collected_at: String,
    /// The node's claims.
    pub claims: NodeClaims,
    /// [`binding_digest`] of the nonce and claims.
    pub binding: Hex<32>,
    /// The hardware evidence.
    pub evidence: Evidence,
    /// The node key's signature (no member at all before signing).
    #[serde(skip_serializing_if = "SignatureState::is_unsigned")]
    pub signature: S,
}

/// Whether a [`Bundle`] carries a signature.
pub trait SignatureState: Clone + PartialEq + fmt::Debug {
    /// True for [`Unsigned`].
    fn is_unsigned(&self) -> bool;
}

/// A bundle that is not signed yet; serialised as no `signature` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsigned;

impl SignatureState for Unsigned {
    fn is_unsigned(&self) -> bool {
        true
    }
}

impl SignatureState for NodeSignature {
    fn is_unsigned(&self) -> bool {
        false
    }
}

/// A signed `plinth-evidence/1` bundle.
pub type EvidenceBundle = Bundle<NodeSignature>;

/// A bundle before the node signs it ([`EvidenceBundle::sign`]).
pub type UnsignedBundle = Bundle<Unsigned>;

/// Checks a verifier nonce's length.
pub fn check_nonce(nonce: &[u8]) -> Result<(), BundleError> {
    if (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
        Ok(())
    } else {
        Err(invalid(
            "nonce",
            format!(
                "is {} bytes, a nonce has {MIN_NONCE_LEN} to {MAX_NONCE_LEN}",
                nonce.len()
            ),
        ))
    }
}

/// The binding digest: SHA-256 over [`BINDING_DOMAIN`], the nonce's length as
/// a big-endian u16, the nonce, and the canonical JSON of the claims.
pub fn binding_digest(nonce: &[u8], claims: &NodeClaims) -> Result<[u8; 32], BundleError> {
    check_nonce(nonce)?;
    let mut input = BINDING_DOMAIN.to_vec();
    // check_nonce bounds the length far below u16::MAX.
    input.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
    input.extend_from_slice(nonce);
    canonical::write_canonical(
        &serde_json::to_value(claims).map_err(CanonicalError::Serialize)?,
        &mut input,
    )?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(out)
}

/// The SNP REPORT_DATA a bundle's report must carry: binding || 32 zero bytes.
pub fn snp_report_data(binding: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(binding);
    out
}

fn signing_bytes_of(value: Value) -> Result<Vec<u8>, BundleError> {
    let mut value = value;
    if let Value::Object(map) = &mut value {
        map.remove("signature");
    }
    let mut bytes = SIGNING_DOMAIN.to_vec();
    canonical::write_canonical(&value, &mut bytes)?;
    Ok(bytes)
}

impl Bundle<Unsigned> {
    /// A bundle of `claims` and `evidence` for `nonce`, with its binding computed.
    pub fn new(
        nonce: &[u8],
        collected_at: time::OffsetDateTime,
        claims: NodeClaims,
        evidence: Evidence,
    ) -> Result<Self, BundleError> {
        let binding = binding_digest(nonce, &claims)?;
        let collected_at = collected_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|err| invalid("collected_at", err.to_string()))?;
        Ok(Self {
            format: FORMAT.to_owned(),
            nonce: HexVec(nonce.to_vec()),
            collected_at,
            claims,
            binding: Hex(binding),
            evidence,
            signature: Unsigned,
        })
    }
}

impl<S: SignatureState + Serialize> Bundle<S> {
    /// The bytes the node signs: [`SIGNING_DOMAIN`] and the canonical JSON
    /// of the bundle without its `signature` member.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, BundleError> {
        signing_bytes_of(serde_json::to_value(self).map_err(CanonicalError::Serialize)?)
    }

    /// Recomputes the binding digest from the nonce and claims.
    pub fn expected_binding(&self) -> Result<[u8; 32], BundleError> {
        binding_digest(&self.nonce.0, &self.claims)
    }
}

impl Bundle<NodeSignature> {
    /// Signs `unsigned` with the node key, after checking that the key is the
    /// claims' `node_public_key` and that the binding is the digest of the
    /// nonce and claims.
    pub fn sign(unsigned: UnsignedBundle, key: &Ed25519KeyPair) -> Result<Self, BundleError> {
        let public = key.public_key().as_ref();
        if public != unsigned.claims.node_public_key.0.as_slice() {
            return Err(BundleError::KeyMismatch {
                key: hex::encode(public),
                claimed: unsigned.claims.node_public_key.to_string(),
            });
        }
        let expected = binding_digest(&unsigned.nonce.0, &unsigned.claims)?;
        if expected != unsigned.binding.0 {
            return Err(BundleError::BindingMismatch {
                found: unsigned.binding.to_string(),
                expected: hex::encode(expected),
            });
        }
        let signature = key.sign(&unsigned.signing_bytes()?);
        let mut value = [0u8; 64];
        value.copy_from_slice(signature.as_ref());
        Ok(Bundle {
            format: unsigned.format,
            nonce: unsigned.nonce,
            collected_at: unsigned.collected_at,
            claims: unsigned.claims,
            binding: unsigned.binding,
            evidence: unsigned.evidence,
            signature: NodeSignature {
                algorithm: SignatureAlgorithm::Ed25519,
                value: Hex(value),
            },
        })
    }

    /// Verifies the node signature under the claims' `node_public_key`.
    pub fn verify_node_signature(&self) -> Result<(), BundleError> {
        let node_key = self.claims.node_public_key;
        UnparsedPublicKey::new(&ED25519, node_key.0)
            .verify(&self.signing_bytes()?, &self.signature.value.0)
            .map_err(|_| BundleError::BadSignature {
                node_key: node_key.to_string(),
            })
    }

    /// Parses a bundle strictly: size limit, known members only, the format
    /// string, then [`Self::check_shape`]. Errors name the member.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                size: bytes.len(),
                max: MAX_BUNDLE_BYTES,
            });
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let bundle: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            BundleError::Json {
                path,
                reason: err.into_inner().to_string(),
            }
        })?;
        deserializer.end().map_err(|err| BundleError::Json {
            path: ".".to_owned(),
            reason: err.to_string(),
        })?;
        bundle.check_shape()?;
        Ok(bundle)
    }

    /// The checks of [`Self::parse`] that go beyond the types: format,
    /// nonce length, timestamp and counts. (Whether each GPU entry is the
    /// claimed GPU is a verification check, `gpu[N].identity`.)
    pub fn check_shape(&self) -> Result<(), BundleError> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                format!("{:?} is not {FORMAT:?}", self.format),
            ));
        }
        check_nonce(&self.nonce.0)?;
        time::OffsetDateTime::parse(
            &self.collected_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|err| {
            invalid(
                "collected_at",
                format!("'{}' is not RFC 3339: {err}", self.collected_at),
            )
        })?;
        if self.claims.plugins.len() > MAX_PLUGINS {
            return Err(invalid(
                "claims.plugins",
                format!(
                    "has {} entries, at most {MAX_PLUGINS}",
                    self.claims.plugins.len()
                ),
            ));
        }
        if self.claims.gpus.len() > MAX_GPUS {
            return Err(invalid(
                "claims.gpus",
                format!("has {} entries, at most {MAX_GPUS}", self.claims.gpus.len()),
            ));
        }
        if self.evidence.gpus.len() != self.claims.gpus.len() {
            return Err(invalid(
                "evidence.gpus",
                format!(
                    "has {} entries for {} claimed GPUs (one entry per claimed GPU, same order)",
                    self.evidence.gpus.len(),
                    self.claims.gpus.len()
                ),
            ));
        }
        if let Some(tpm) = self.evidence.tpm.present()
            && tpm.ek_chain.len() > MAX_CHAIN_CERTS
        {
            return Err(invalid(
                "evidence.tpm.ek_chain",
                format!(
                    "has {} certificates, at most {MAX_CHAIN_CERTS}",
                    tpm.ek_chain.len()
                ),
            ));
        }
        if let Some(snp) = self.evidence.snp.present()
            && snp.chain.len() > MAX_CHAIN_CERTS
        {
            return Err(invalid(
                "evidence.snp.chain",
                format!(
                    "has {} certificates, at most {MAX_CHAIN_CERTS}",
                    snp.chain.len()
                ),
            ));
        }
        for (idx, piece) in self.evidence.gpus.iter().enumerate() {
            let Some(gpu) = piece.present() else {
                continue;
            };
            if gpu.certificates.len() > MAX_CHAIN_CERTS {
                return Err(invalid(
                    format!("evidence.gpus[{idx}].certificates"),
                    format!(
                        "has {} certificates, at most {MAX_CHAIN_CERTS}",
                        gpu.certificates.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bundle as pretty JSON (what `plinthctl attest -o` writes).
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, BundleError> {
        serde_json::to_vec_pretty(self)
            .map_err(|err| BundleError::Canonical(CanonicalError::Serialize(err)))
    }
}
