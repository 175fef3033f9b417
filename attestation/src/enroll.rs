//! AK enrollment: how a verifier comes to trust an attestation key it has
//! never seen, by a TPM2_MakeCredential / TPM2_ActivateCredential round.
//!
//! 1. The agent sends an [`EnrollmentRequest`] (`plinthctl attest enroll`):
//!    its EK public area, the EK certificate and chain when the TPM has one,
//!    the AK's public area and Name, and the node key.
//! 2. The verifier (`plinth-verify enroll challenge`) checks that the EK
//!    certificate chains to a CA the policy trusts (or that the EK's Name is
//!    pinned), that the AK is a restricted signing key that never left its
//!    TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign) and
//!    that the AK Name is the hash of its public area; then it wraps a fresh
//!    secret to the EK for that AK Name ([`crate::tpm::credential`]) and
//!    answers with an [`EnrollmentChallenge`]. What it must remember is in an
//!    [`EnrollmentState`] file, the only state the verifier keeps.
//! 3. Only the TPM holding that EK, and holding a loaded key with that Name,
//!    can recover the secret (TPM2_ActivateCredential); the agent returns it
//!    in an [`EnrollmentResponse`].
//! 4. `plinth-verify enroll finish` compares the secret with the state and
//!    writes an [`AkRecord`], which `plinth-verify bundle --ak-record` and
//!    `tpm-quote --ak-record` accept as proof that the AK belongs to that EK.
//!
//! All four documents are JSON with a `format` member; binary members are
//! standard base64, digests and names lowercase hex, as in bundles.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bundle::model::{Base64Bytes, Hex, HexVec};

/// Format of [`EnrollmentRequest`].
pub const REQUEST_FORMAT: &str = "plinth-enroll-request/1";
/// Format of [`EnrollmentChallenge`].
pub const CHALLENGE_FORMAT: &str = "plinth-enroll-challenge/1";
/// Format of [`EnrollmentResponse`].
pub const RESPONSE_FORMAT: &str = "plinth-enroll-response/1";
/// Format of [`EnrollmentState`].
pub const STATE_FORMAT: &str = "plinth-enroll-state/1";
/// Format of [`AkRecord`].
pub const AK_RECORD_FORMAT: &str = "plinth-ak-record/1";

/// Largest enrollment document read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Errors reading enrollment documents and running the verifier's half.
#[derive(Debug, Error)]
pub enum EnrollError {
    /// A document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("{document} is {size} bytes, more than {max}")]
    TooLarge {
        /// Which document.
        document: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A document does not match its schema; `path` names the member.
    #[error("{document} member `{path}`: {reason}")]
    Json {
        /// Which document.
        document: &'static str,
        /// Dotted path of the member.
        path: String,
        /// What serde said.
        reason: String,
    },
    /// A member parsed but its value is not allowed.
    #[error("{document} member `{field}` is invalid: {reason}")]
    Invalid {
        /// Which document.
        document: &'static str,
        /// The member.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// What the agent sends to enroll its AK (`plinthctl attest enroll`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    /// Always [`REQUEST_FORMAT`].
    pub format: String,
    /// The node's Ed25519 public key (the key that signs its bundles).
    pub node_public_key: Hex<32>,
    /// The host name (informational; copied into the AK record).
    pub hostname: String,
    /// The EK's public area (TPM2B_PUBLIC): RSA 2048 or ECC P-256 EK template.
    pub ek_public: Base64Bytes,
    /// The EK certificate (DER), when the TPM holds one in NV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_certificate: Option<Base64Bytes>,
    /// Intermediate CA certificates of the EK certificate (DER), issuer first.
    pub ek_chain: Vec<Base64Bytes>,
    /// The AK's public area (TPM2B_PUBLIC).
    pub ak_public: Base64Bytes,
    /// The AK's Name: nameAlg (2 bytes, big-endian) || H(TPMT_PUBLIC).
    pub ak_name: HexVec,
    /// The AK's persistent handle.
    pub ak_handle: u32,
}

/// What the verifier answers (`plinth-verify enroll challenge -o`).
///
/// `id_object` and `encrypted_secret` are the *buffers* of TPM2B_ID_OBJECT
/// and TPM2B_ENCRYPTED_SECRET (without their u16 size), what
/// TPM2_ActivateCredential takes as `credentialBlob` and `secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentChallenge {
    /// Always [`CHALLENGE_FORMAT`].
    pub format: String,
    /// The AK Name the credential is bound to.
    pub ak_name: HexVec,
    /// The AK's persistent handle, from the request.
    pub ak_handle: u32,
    /// TPM2B_ID_OBJECT buffer: integrityHMAC (TPM2B) || encIdentity.
    pub id_object: Base64Bytes,
    /// TPM2B_ENCRYPTED_SECRET buffer: the seed, encrypted to the EK.
    pub encrypted_secret: Base64Bytes,
}

/// What the agent returns after TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentResponse {
    /// Always [`RESPONSE_FORMAT`].
    pub format: String,
    /// The AK Name (must equal the challenge's).
    pub ak_name: HexVec,
    /// The recovered credential (the secret).
    pub secret: HexVec,
}

/// How the verifier came to trust the EK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EkTrust {
    /// The EK certificate chains to a CA in the policy's trusted EK CAs, and
    /// its public key is the EK public area's.
    Certificate,
    /// The EK's Name is pinned in the policy.
    Pinned,
}

/// How the EK was trusted, recorded in the state and the AK record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EkIdentity {
    /// Certificate chain or pinned Name.
    pub trust: EkTrust,
    /// The EK's Name (nameAlg || H(TPMT_PUBLIC)).
    pub ek_name: HexVec,
    /// SHA-256 of the EK certificate (DER), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_certificate_sha256: Option<Hex<32>>,
    /// Subject of the trusted CA the chain ended at (certificate trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_ca: Option<String>,
}

/// What the verifier keeps between `challenge` and `finish` (a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentState {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// The request the challenge answered (already checked).
    pub request: EnrollmentRequest,
    /// How the EK was trusted.
    pub ek: EkIdentity,
    /// SHA-256 of the secret wrapped in the challenge (the secret itself is not kept).
    pub secret_sha256: Hex<32>,
    /// When the challenge was issued (RFC 3339).
    pub issued_at: String,
}

/// The record of an enrolled AK (`plinth-verify enroll finish -o`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkRecord {
    /// Always [`AK_RECORD_FORMAT`].
    pub format: String,
    /// The AK's public area (TPM2B_PUBLIC).
    pub ak_public: Base64Bytes,
    /// The AK's Name.
    pub ak_name: HexVec,
    /// The AK's persistent handle.
    pub ak_handle: u32,
    /// The node key enrolled with this AK.
    pub node_public_key: Hex<32>,
    /// The host name given at enrollment.
    pub hostname: String,
    /// The EK the AK was proven to live beside, and how it was trusted.
    pub ek: EkIdentity,
    /// When enrollment finished (RFC 3339).
    pub enrolled_at: String,
}

/// Parses one enrollment document strictly and checks its `format`.
fn parse_document<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    document: &'static str,
    format: &str,
    format_of: impl Fn(&T) -> &str,
) -> Result<T, EnrollError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(EnrollError::TooLarge {
            document,
            size: bytes.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| EnrollError::Json {
            document,
            path: err.path().to_string(),
            reason: err.into_inner().to_string(),
        })?;
    deserializer.end().map_err(|err| EnrollError::Json {
        document,
        path: ".".to_owned(),
        reason: err.to_string(),
    })?;
    let found = format_of(&value);
    if found != format {
        return Err(EnrollError::Invalid {
            document,
            field: "format",
            reason: format!("{found:?} is not {format:?}"),
        });
    }
    Ok(value)
}

impl EnrollmentRequest {
    /// Parses a request (untrusted: it comes from the node).
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrollError> {
        let request: Self =
            parse_document(bytes, "enrollment request", REQUEST_FORMAT, |r: &Self| {
                &r.format
            })?;
        if request.ek_chain.len() > crate::bundle::model::MAX_CHAIN_CERTS {
            return Err(EnrollError::Invalid {
                document: "enrollment request",
                field: "ek_chain",
                reason: format!("has {} certificates", request.ek_chain.len()),
            });
        }
        Ok(request)
    }
}

impl EnrollmentChallenge {
    /// Parses a challenge (the agent reads it).
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrollError> {
        parse_document(
            bytes,
            "enrollment challenge",
            CHALLENGE_FORMAT,
            |c: &Self| &c.format,
        )
    }
}

impl EnrollmentResponse {
    /// Parses a response (untrusted: it comes from the node).
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrollError> {
        parse_document(bytes, "enrollment response", RESPONSE_FORMAT, |r: &Self| {
            &r.format
        })
    }
}

impl EnrollmentState {
    /// Parses the verifier's state file.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrollError> {
        parse_document(bytes, "enrollment state", STATE_FORMAT, |s: &Self| {
            &s.format
        })
    }
}

impl AkRecord {
    /// Parses an AK record.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrollError> {
        parse_document(bytes, "AK record", AK_RECORD_FORMAT, |r: &Self| &r.format)
    }
}
