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
use crate::check::{Appraisal, Aspect, Check};
use crate::tpm::HashAlg;
use crate::tpm::credential::{self, CredentialError};
use crate::tpm::public::{TpmPublic, attributes};
use crate::x509chain::{self, RawPublicKey};

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
    /// The credential could not be made.
    #[error("cannot make the credential")]
    Credential(#[from] CredentialError),
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

/// What the verifier trusts EKs by.
#[derive(Debug, Clone, Default)]
pub struct EkAnchors {
    /// CA certificates (DER): self-signed ones are roots, the others intermediates.
    pub cas: Vec<Vec<u8>>,
    /// Pinned EK Names (nameAlg || H(TPMT_PUBLIC)).
    pub pinned_names: Vec<Vec<u8>>,
}

/// The attributes an AK must have: it never leaves its TPM and signs only
/// what the TPM produced.
pub const AK_REQUIRED_ATTRIBUTES: u32 = attributes::FIXED_TPM
    | attributes::FIXED_PARENT
    | attributes::SENSITIVE_DATA_ORIGIN
    | attributes::RESTRICTED
    | attributes::SIGN;

/// Checks an AK's attributes: [`AK_REQUIRED_ATTRIBUTES`] set, decrypt clear.
pub fn check_ak_attributes(ak: &TpmPublic) -> Result<String, String> {
    let missing = AK_REQUIRED_ATTRIBUTES & !ak.attributes;
    let have = attributes::names(ak.attributes).join(", ");
    if missing != 0 {
        return Err(format!(
            "AK attributes [{have}] lack [{}]",
            attributes::names(missing).join(", ")
        ));
    }
    if ak.attributes & attributes::DECRYPT != 0 {
        return Err(format!(
            "AK attributes [{have}] include decrypt: an AK only signs"
        ));
    }
    Ok(format!("AK attributes [{have}]"))
}

/// Checks that `name` is the Name of `public`.
pub fn check_name(public: &TpmPublic, name: &[u8], what: &str) -> Result<String, String> {
    match public.name() {
        Some(computed) if computed == name => Ok(format!(
            "{what} Name {} is the hash of its public area",
            hex::encode(name)
        )),
        Some(computed) => Err(format!(
            "{what} Name {} is not the hash of its public area ({})",
            hex::encode(name),
            hex::encode(computed)
        )),
        None => Err(format!(
            "{what} nameAlg {:#06x} cannot be computed",
            public.name_alg
        )),
    }
}

/// The outcome of checking a request: the appraisal (checks `enroll.*`) and,
/// when it verified, the EK it names and how it was trusted.
#[derive(Debug)]
pub struct RequestAppraisal {
    /// Every check, by name.
    pub appraisal: Appraisal,
    /// The EK public area and its trust, when every check passed.
    pub ek: Option<(TpmPublic, EkIdentity)>,
}

/// Appraises an enrollment request at unix time `at`: `enroll.ek_public`,
/// `enroll.ak_public`, `enroll.ak_name`, `enroll.ak_attributes`, `enroll.ek_trust`.
pub fn appraise_request(
    request: &EnrollmentRequest,
    anchors: &EkAnchors,
    at: i64,
) -> RequestAppraisal {
    let mut appraisal = Appraisal::new("enroll");
    appraisal.claim("hostname", request.hostname.clone());
    appraisal.claim("ak_name", hex::encode(&request.ak_name.0));
    appraisal.claim("node_public_key", request.node_public_key.to_string());
    let ek = TpmPublic::parse(&request.ek_public.0)
        .map_err(|err| format!("ek_public: {}", plinth_toolbox::error_chain(&err)))
        .and_then(|ek| {
            credential::check_storage_key(&ek)
                .map(|_| ek)
                .map_err(|err| format!("ek_public: {err}"))
        });
    appraisal.push(Check::from_result(
        "enroll.ek_public",
        Aspect::InstanceIdentity,
        ek.as_ref()
            .map(|ek| {
                format!(
                    "EK is a storage key ({}), Name {}",
                    key_kind(&ek.key),
                    ek.name().map(hex::encode).unwrap_or_default()
                )
            })
            .map_err(Clone::clone),
    ));
    let ak = TpmPublic::parse(&request.ak_public.0)
        .map_err(|err| format!("ak_public: {}", plinth_toolbox::error_chain(&err)));
    appraisal.push(Check::from_result(
        "enroll.ak_public",
        Aspect::InstanceIdentity,
        ak.as_ref()
            .map(|ak| format!("AK is an {} key", key_kind(&ak.key)))
            .map_err(Clone::clone),
    ));
    if let Ok(ak) = &ak {
        appraisal.push(Check::from_result(
            "enroll.ak_name",
            Aspect::InstanceIdentity,
            check_name(ak, &request.ak_name.0, "AK"),
        ));
        appraisal.push(Check::from_result(
            "enroll.ak_attributes",
            Aspect::InstanceIdentity,
            check_ak_attributes(ak),
        ));
    }
    let mut identity = None;
    if let Ok(ek) = &ek {
        let trust = ek_trust(request, ek, anchors, at);
        appraisal.push(Check::from_result(
            "enroll.ek_trust",
            Aspect::Hardware,
            trust
                .as_ref()
                .map(|(_, detail)| detail.clone())
                .map_err(Clone::clone),
        ));
        identity = trust.ok().map(|(identity, _)| identity);
    }
    let ek = match (ek, identity) {
        (Ok(ek), Some(identity)) if appraisal.verified() => Some((ek, identity)),
        _ => None,
    };
    RequestAppraisal { appraisal, ek }
}

fn key_kind(key: &RawPublicKey) -> String {
    match key {
        RawPublicKey::Rsa { n, .. } => format!("RSA {}", 8 * n.len()),
        RawPublicKey::P256(_) => "ECC P-256".to_owned(),
        RawPublicKey::P384(_) => "ECC P-384".to_owned(),
    }
}

/// How the EK is trusted: its certificate chains to a trusted CA and holds
/// the EK's key, or its Name is pinned. Errors give both reasons.
fn ek_trust(
    request: &EnrollmentRequest,
    ek: &TpmPublic,
    anchors: &EkAnchors,
    at: i64,
) -> Result<(EkIdentity, String), String> {
    let ek_name = ek.name().unwrap_or_default();
    let certificate_sha256 = request.ek_certificate.as_ref().map(|der| {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &der.0).as_ref());
        Hex(out)
    });
    let certificate = match &request.ek_certificate {
        None => Err("the request has no EK certificate".to_owned()),
        Some(_) if anchors.cas.is_empty() => {
            Err("the policy trusts no EK CA ([tpm] ek_ca_files)".to_owned())
        }
        Some(der) => certificate_trust(&der.0, request, ek, anchors, at),
    };
    let pinned = anchors.pinned_names.contains(&ek_name);
    match certificate {
        Ok((ca, detail)) => Ok((
            EkIdentity {
                trust: EkTrust::Certificate,
                ek_name: HexVec(ek_name),
                ek_certificate_sha256: certificate_sha256,
                ek_ca: Some(ca),
            },
            detail,
        )),
        Err(_) if pinned => Ok((
            EkIdentity {
                trust: EkTrust::Pinned,
                ek_name: HexVec(ek_name.clone()),
                ek_certificate_sha256: certificate_sha256,
                ek_ca: None,
            },
            format!("EK Name {} is pinned by the policy", hex::encode(&ek_name)),
        )),
        Err(reason) => Err(format!(
            "EK not trusted: {reason}; and its Name {} is not pinned",
            hex::encode(&ek_name)
        )),
    }
}

fn certificate_trust(
    der: &[u8],
    request: &EnrollmentRequest,
    ek: &TpmPublic,
    anchors: &EkAnchors,
    at: i64,
) -> Result<(String, String), String> {
    let supplied: Vec<Vec<u8>> = request.ek_chain.iter().map(|c| c.0.clone()).collect();
    let summary = x509chain::verify_with_ca_bundle(der, &supplied, &anchors.cas, at)
        .map_err(|err| format!("EK certificate: {}", plinth_toolbox::error_chain(&err)))?;
    let cert = x509chain::parse_cert(der, "ek_certificate", 0)
        .map_err(|err| format!("EK certificate: {err}"))?;
    let cert_key = x509chain::raw_public_key(cert.public_key(), &x509chain::subject_name(&cert))
        .map_err(|err| format!("EK certificate: {err}"))?;
    if cert_key != ek.key {
        return Err("the EK certificate holds another key than ek_public".to_owned());
    }
    let ca = summary.subjects.last().cloned().unwrap_or_default();
    Ok((
        ca,
        format!(
            "EK certificate chains to a trusted CA ({}) and holds the EK's key",
            summary.subjects.join(" -> ")
        ),
    ))
}

/// A challenge and the state the verifier keeps for it.
#[derive(Debug, Clone)]
pub struct IssuedChallenge {
    /// What the agent gets.
    pub challenge: EnrollmentChallenge,
    /// What the verifier keeps.
    pub state: EnrollmentState,
}

/// Wraps a fresh 32-byte secret (at most the EK nameAlg's size) to the EK
/// for the request's AK Name.
pub fn issue_challenge(
    request: &EnrollmentRequest,
    ek: &TpmPublic,
    identity: EkIdentity,
    now: time::OffsetDateTime,
) -> Result<IssuedChallenge, EnrollError> {
    let size = HashAlg::from_id(ek.name_alg)
        .map_or(32, HashAlg::size)
        .min(32);
    let mut secret = vec![0u8; size];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| EnrollError::Invalid {
            document: "enrollment challenge",
            field: "secret",
            reason: "no random bytes available".to_owned(),
        })?;
    let credential = credential::make_credential(ek, &request.ak_name.0, &secret)?;
    Ok(IssuedChallenge {
        challenge: EnrollmentChallenge {
            format: CHALLENGE_FORMAT.to_owned(),
            ak_name: request.ak_name.clone(),
            ak_handle: request.ak_handle,
            id_object: Base64Bytes(credential.id_object),
            encrypted_secret: Base64Bytes(credential.encrypted_secret),
        },
        state: EnrollmentState {
            format: STATE_FORMAT.to_owned(),
            request: request.clone(),
            ek: identity,
            secret_sha256: sha256(&secret),
            issued_at: rfc3339(now),
        },
    })
}

fn sha256(data: &[u8]) -> Hex<32> {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    Hex(out)
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Appraises a response against the state at `now`: `enroll.ak_name`,
/// `enroll.freshness` (no older than `ttl_seconds`), `enroll.credential`
/// (the secret is the one wrapped). The AK record when all pass.
pub fn finish(
    state: &EnrollmentState,
    response: &EnrollmentResponse,
    now: time::OffsetDateTime,
    ttl_seconds: u64,
) -> (Appraisal, Option<AkRecord>) {
    let mut appraisal = Appraisal::new("enroll");
    appraisal.claim("ak_name", hex::encode(&state.request.ak_name.0));
    appraisal.push(Check::from_bool(
        "enroll.ak_name",
        Aspect::InstanceIdentity,
        response.ak_name == state.request.ak_name,
        format!(
            "response for AK {}, challenge for AK {}",
            hex::encode(&response.ak_name.0),
            hex::encode(&state.request.ak_name.0)
        ),
    ));
    let age = time::OffsetDateTime::parse(
        &state.issued_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|issued| (now - issued).whole_seconds())
    .map_err(|err| format!("state issued_at '{}': {err}", state.issued_at));
    appraisal.push(Check::from_result(
        "enroll.freshness",
        Aspect::Freshness,
        age.and_then(|age| {
            if (0..=i64::try_from(ttl_seconds).unwrap_or(i64::MAX)).contains(&age) {
                Ok(format!(
                    "challenge issued {age} s ago (limit {ttl_seconds} s)"
                ))
            } else {
                Err(format!(
                    "challenge issued {age} s ago, outside 0..={ttl_seconds} s"
                ))
            }
        }),
    ));
    let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
        &sha256(&response.secret.0).0,
        &state.secret_sha256.0,
    )
    .is_ok();
    appraisal.push(Check::from_bool(
        "enroll.credential",
        Aspect::Hardware,
        matches,
        if matches {
            "the TPM holding the EK recovered the secret for this AK Name (ActivateCredential)"
        } else {
            "the returned secret is not the one wrapped to the EK: the AK does not live beside that EK"
        },
    ));
    if !appraisal.verified() {
        return (appraisal, None);
    }
    let record = AkRecord {
        format: AK_RECORD_FORMAT.to_owned(),
        ak_public: state.request.ak_public.clone(),
        ak_name: state.request.ak_name.clone(),
        ak_handle: state.request.ak_handle,
        node_public_key: state.request.node_public_key,
        hostname: state.request.hostname.clone(),
        ek: state.ek.clone(),
        enrolled_at: rfc3339(now),
    };
    (appraisal, Some(record))
}

/// One line saying how an AK record establishes trust (the detail of
/// `tpm.ak_enrolled` and `tpm.ak_binding`).
pub fn describe(record: &AkRecord) -> String {
    let how = match record.ek.trust {
        EkTrust::Certificate => format!(
            "an EK certificate chaining to {}",
            record.ek.ek_ca.as_deref().unwrap_or("a trusted CA")
        ),
        EkTrust::Pinned => "a pinned EK Name".to_owned(),
    };
    format!(
        "AK {} of {} was enrolled at {} by credential activation with EK {} ({how})",
        hex::encode(&record.ak_name.0),
        record.hostname,
        record.enrolled_at,
        hex::encode(&record.ek.ek_name.0)
    )
}
