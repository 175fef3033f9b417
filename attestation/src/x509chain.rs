//! Certificate bundles, signatures and chains, checked with `ring`.
//!
//! `x509-parser` does the parsing; every signature (RSA PKCS#1 v1.5, RSA-PSS,
//! ECDSA P-256/P-384, Ed25519) is verified here with `ring` so that the AMD
//! RSA-PSS chains and the NVIDIA ECDSA chains go through one audited path.
//!
//! [`verify_chain`] applies these rules (RFC 5280 section 6.1, the parts an
//! offline vendor-chain verifier needs) to every link, the trust anchor's
//! included:
//!
//! - the child's issuer name equals the issuer's subject name (DER bytes);
//! - the issuer has basicConstraints with cA = TRUE (a missing extension
//!   means "not a CA", so a leaf can never act as an issuer);
//! - the issuer's pathLenConstraint, when present, is at least the number of
//!   non-self-issued intermediate CA certificates below it;
//! - the issuer's keyUsage, when present, has keyCertSign (a CA without
//!   keyUsage is unrestricted, as RFC 5280 4.2.1.3 reads);
//! - the issuer's key verifies the child's signature, and every certificate
//!   is valid at the given time.
//!
//! Every pinned vendor chain (AMD ARK/ASK/ASVK for Milan, Genoa and Turin,
//! NVIDIA's Device Identity CA and the device chains under it) satisfies
//! these rules as published, so no vendor exception is needed; the tests
//! check each pinned chain against them.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::SubjectPublicKeyInfo;

use thiserror::Error;

/// Errors from certificate handling.
#[derive(Debug, Error)]
pub enum X509ChainError {
    /// The input held no certificate.
    #[error("{source_name}: no certificate found (expected PEM or DER)")]
    Empty {
        /// The file or field the bundle came from.
        source_name: String,
    },
    /// The PEM text could not be decoded.
    #[error("invalid PEM")]
    BadPem(#[from] plinth_toolbox::pem::PemError),
    /// DER could not be parsed as a certificate.
    #[error("{source_name}: certificate {index} is not valid X.509 DER: {reason}")]
    BadDer {
        /// The file or field the bundle came from.
        source_name: String,
        /// Index of the certificate, from 0.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The signature algorithm is not one this verifier supports.
    #[error("certificate '{subject}': unsupported signature algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// Subject of the certificate.
        subject: String,
        /// OID or description of the algorithm.
        algorithm: String,
    },
    /// The signature did not verify.
    #[error("certificate '{subject}': signature does not verify with the key of '{issuer}'")]
    BadSignature {
        /// Subject of the certificate.
        subject: String,
        /// Subject of the issuer certificate whose key was used.
        issuer: String,
    },
    /// The certificate is outside its validity window.
    #[error("certificate '{subject}' is not valid at {at}: valid from {not_before} to {not_after}")]
    Expired {
        /// Subject of the certificate.
        subject: String,
        /// The time checked (RFC 3339).
        at: String,
        /// Start of validity (RFC 3339).
        not_before: String,
        /// End of validity (RFC 3339).
        not_after: String,
    },
    /// An issuer certificate is not a CA.
    #[error("certificate '{subject}' signs another certificate but {reason}")]
    NotCa {
        /// Subject of the certificate.
        subject: String,
        /// Why it is not a CA (what its basicConstraints say, or that it has none).
        reason: &'static str,
    },
    /// An issuer's keyUsage does not allow certificate signing.
    #[error(
        "certificate '{subject}' signs another certificate but its keyUsage ({usage}) lacks keyCertSign"
    )]
    KeyUsage {
        /// Subject of the certificate.
        subject: String,
        /// The key usages it has.
        usage: String,
    },
    /// An issuer has more CA certificates below it than its pathLenConstraint allows.
    #[error(
        "certificate '{subject}' has pathLenConstraint {path_len} but {below} intermediate CA certificate(s) follow it towards the leaf"
    )]
    PathLen {
        /// Subject of the certificate.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u32,
        /// Non-self-issued intermediates between it and the leaf.
        below: usize,
    },
    /// A certificate's issuer name is not the next certificate's subject.
    #[error(
        "certificate '{subject}' names issuer '{issuer}' but the certificate above it is '{next}'"
    )]
    IssuerMismatch {
        /// Subject of the certificate.
        subject: String,
        /// The issuer name it carries.
        issuer: String,
        /// Subject of the certificate that was to be its issuer.
        next: String,
    },
    /// The chain does not end at a trusted root.
    #[error("chain ending at '{subject}' does not lead to a trusted root")]
    UntrustedRoot {
        /// Subject of the last certificate.
        subject: String,
    },
    /// A public key could not be used.
    #[error("public key of '{subject}' is unusable: {reason}")]
    BadKey {
        /// Subject of the certificate.
        subject: String,
        /// Why.
        reason: String,
    },
}

/// Reads a bundle of certificates: one or more PEM blocks, or a single DER
/// certificate. Returns the DER of each, in file order.
pub fn parse_bundle(bytes: &[u8], source_name: &str) -> Result<Vec<Vec<u8>>, X509ChainError> {
    let ders = if plinth_toolbox::pem::is_pem(bytes) {
        plinth_toolbox::pem::parse_all(bytes, "CERTIFICATE", source_name)?
    } else if bytes.is_empty() {
        Vec::new()
    } else {
        vec![bytes.to_vec()]
    };
    if ders.is_empty() {
        return Err(X509ChainError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    for (index, der) in ders.iter().enumerate() {
        parse_cert(der, source_name, index)?;
    }
    Ok(ders)
}

/// Parses one DER certificate, requiring that nothing trails it.
pub fn parse_cert<'a>(
    der: &'a [u8],
    source_name: &str,
    index: usize,
) -> Result<X509Certificate<'a>, X509ChainError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(X509ChainError::BadDer {
            source_name: source_name.to_owned(),
            index,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(err) => Err(X509ChainError::BadDer {
            source_name: source_name.to_owned(),
            index,
            reason: err.to_string(),
        }),
    }
}

/// The subject common name (or the whole subject when it has no CN).
pub fn subject_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.subject().to_string())
}

/// The raw value of the extension with dotted OID `oid`, if present.
pub fn extension_value<'a>(cert: &'a X509Certificate<'a>, oid: &str) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find(|ext| ext.oid.to_id_string() == oid)
        .map(|ext| ext.value)
}

fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ts.to_string())
}

/// Checks that `cert` is valid at unix time `at`.
pub fn check_validity(cert: &X509Certificate<'_>, at: i64) -> Result<(), X509ChainError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if at < not_before || at > not_after {
        return Err(X509ChainError::Expired {
            subject: subject_name(cert),
            at: rfc3339(at),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
        });
    }
    Ok(())
}

const OID_SHA1: &str = "1.3.14.3.2.26";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The named curve of an EC public key, if the key is EC.
pub fn ec_curve(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|any| any.as_oid().ok())
        .map(|oid| oid.to_id_string())
}

/// Verifies that `issuer` signed `child`.
pub fn verify_signed_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), X509ChainError> {
    let subject = subject_name(child);
    let issuer_name = subject_name(issuer);
    let unsupported = |algorithm: String| X509ChainError::UnsupportedAlgorithm {
        subject: subject.clone(),
        algorithm,
    };
    let sig_alg_oid = child.signature_algorithm.algorithm.to_id_string();
    let algorithm = SignatureAlgorithm::try_from(&child.signature_algorithm)
        .map_err(|_| unsupported(sig_alg_oid.clone()))?;
    let spki = issuer.public_key();
    let verification: &'static dyn crate::crypto::signature::VerificationAlgorithm = match algorithm
    {
        SignatureAlgorithm::RSA => match sig_alg_oid.as_str() {
            "1.2.840.113549.1.1.5" => {
                &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
            }
            "1.2.840.113549.1.1.11" => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA512,
            other => return Err(unsupported(other.to_owned())),
        },
        SignatureAlgorithm::RSASSA_PSS(params) => {
            let hash = params.hash_algorithm_oid().to_id_string();
            // ring fixes the salt length to the digest length, as AMD and
            // every PSS profile we meet here do.
            if params.salt_length() as usize != pss_salt_len(&hash) {
                return Err(unsupported(format!(
                    "RSA-PSS with salt length {} for hash {hash}",
                    params.salt_length()
                )));
            }
            match hash.as_str() {
                OID_SHA256 => &crate::crypto::signature::RSA_PSS_2048_8192_SHA256,
                OID_SHA384 => &crate::crypto::signature::RSA_PSS_2048_8192_SHA384,
                OID_SHA512 => &crate::crypto::signature::RSA_PSS_2048_8192_SHA512,
                other => return Err(unsupported(format!("RSA-PSS with hash {other}"))),
            }
        }
        SignatureAlgorithm::ECDSA => {
            let curve = ec_curve(spki).unwrap_or_default();
            match (sig_alg_oid.as_str(), curve.as_str()) {
                ("1.2.840.10045.4.3.2", OID_P256) => {
                    &crate::crypto::signature::ECDSA_P256_SHA256_ASN1
                }
                ("1.2.840.10045.4.3.3", OID_P256) => {
                    &crate::crypto::signature::ECDSA_P256_SHA384_ASN1
                }
                ("1.2.840.10045.4.3.2", OID_P384) => {
                    &crate::crypto::signature::ECDSA_P384_SHA256_ASN1
                }
                ("1.2.840.10045.4.3.3", OID_P384) => {
                    &crate::crypto::signature::ECDSA_P384_SHA384_ASN1
                }
                (alg, curve) => {
                    return Err(unsupported(format!("ECDSA {alg} on curve {curve}")));
                }
            }
        }
        SignatureAlgorithm::ED25519 => &crate::crypto::signature::ED25519,
        _ => return Err(unsupported(sig_alg_oid)),
    };
    let cache_key = signature_cache_key(child, spki);
    if signature_cache_contains(&cache_key) {
        return Ok(());
    }
    let key = crate::crypto::signature::UnparsedPublicKey::new(
        verification,
        &spki.subject_public_key.data,
    );
    key.verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
        .map_err(|_| X509ChainError::BadSignature {
            subject,
            issuer: issuer_name,
        })?;
    signature_cache_insert(cache_key);
    Ok(())
}

/// Certificate signatures already verified in this process, keyed by SHA-256
/// over (signature algorithm, TBS bytes, signature, issuer SPKI). Vendor
/// intermediates (AMD ASK/ARK, NVIDIA identity CAs) recur in every report, so
/// a checker verifying many reports checks each CA signature once. Only
/// successful verifications are remembered; validity periods are still
/// checked every time. Bounded: cleared when it reaches
/// [`SIGNATURE_CACHE_CAPACITY`] entries.
type SignatureCache = std::sync::Mutex<std::collections::HashSet<[u8; 32]>>;
static SIGNATURE_CACHE: std::sync::OnceLock<SignatureCache> = std::sync::OnceLock::new();

/// Maximum number of remembered certificate signatures.
pub const SIGNATURE_CACHE_CAPACITY: usize = 4096;

fn signature_cache_key(child: &X509Certificate<'_>, spki: &SubjectPublicKeyInfo<'_>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        child.signature_algorithm.algorithm.as_bytes(),
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
        spki.raw,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

fn signature_cache_contains(key: &[u8; 32]) -> bool {
    SIGNATURE_CACHE
        .get()
        .and_then(|cache| cache.lock().ok().map(|set| set.contains(key)))
        .unwrap_or(false)
}

fn signature_cache_insert(key: [u8; 32]) {
    let cache = SIGNATURE_CACHE.get_or_init(Default::default);
    if let Ok(mut set) = cache.lock() {
        if set.len() >= SIGNATURE_CACHE_CAPACITY {
            set.clear();
        }
        set.insert(key);
    }
}

/// Forgets every remembered certificate signature (benchmarks use it to
/// measure cold verification).
pub fn clear_signature_cache() {
    if let Some(cache) = SIGNATURE_CACHE.get()
        && let Ok(mut set) = cache.lock()
    {
        set.clear();
    }
}

fn pss_salt_len(hash_oid: &str) -> usize {
    match hash_oid {
        OID_SHA1 => 20,
        OID_SHA256 => 32,
        OID_SHA384 => 48,
        OID_SHA512 => 64,
        _ => 0,
    }
}

fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

/// Checks that `issuer` may issue `child`: names chain, `issuer` is a CA
/// whose keyUsage (if any) has keyCertSign and whose pathLenConstraint (if
/// any) allows `intermediates_below` non-self-issued CA certificates between
/// it and the leaf. The signature is checked separately
/// ([`verify_signed_by`]).
pub fn check_may_issue(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    intermediates_below: usize,
) -> Result<(), X509ChainError> {
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(X509ChainError::IssuerMismatch {
            subject: subject_name(child),
            issuer: child.issuer().to_string(),
            next: issuer.subject().to_string(),
        });
    }
    let not_ca = |reason| X509ChainError::NotCa {
        subject: subject_name(issuer),
        reason,
    };
    match issuer.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(path_len) = bc.value.path_len_constraint
                && usize::try_from(path_len).is_ok_and(|max| intermediates_below > max)
            {
                return Err(X509ChainError::PathLen {
                    subject: subject_name(issuer),
                    path_len,
                    below: intermediates_below,
                });
            }
        }
        Ok(Some(_)) => return Err(not_ca("its basicConstraints say cA = FALSE")),
        Ok(None) => return Err(not_ca("it has no basicConstraints extension (not a CA)")),
        Err(_) => {
            return Err(not_ca(
                "its basicConstraints extension is malformed or repeated",
            ));
        }
    }
    match issuer.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Err(X509ChainError::KeyUsage {
            subject: subject_name(issuer),
            usage: ku.value.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(X509ChainError::KeyUsage {
            subject: subject_name(issuer),
            usage: "malformed or repeated".to_owned(),
        }),
    }
}

/// What a verified chain looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Subject names from leaf to root.
    pub subjects: Vec<String>,
    /// Index into the anchors of the root the chain ended at.
    pub anchor_index: usize,
}

/// Verifies `chain` (DER, leaf first) up to one of `anchors` (DER) at unix time
/// `at`. The chain may end with the anchor itself or with a certificate the
/// anchor signed. Every certificate, anchor included, must be valid at `at`,
/// and every link must satisfy [`check_may_issue`] (see the module
/// documentation for the rules).
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: i64,
) -> Result<ChainSummary, X509ChainError> {
    let certs = chain
        .iter()
        .enumerate()
        .map(|(index, der)| parse_cert(der, "chain", index))
        .collect::<Result<Vec<_>, _>>()?;
    let anchor_certs = anchors
        .iter()
        .enumerate()
        .map(|(index, der)| parse_cert(der, "trust anchors", index))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(last) = certs.last() else {
        return Err(X509ChainError::Empty {
            source_name: "chain".to_owned(),
        });
    };
    let mut subjects = Vec::new();
    // Non-self-issued intermediates seen so far (certificates 1..=index).
    let mut intermediates_below = 0usize;
    for (index, cert) in certs.iter().enumerate() {
        check_validity(cert, at)?;
        subjects.push(subject_name(cert));
        if index > 0 && !is_self_issued(cert) {
            intermediates_below += 1;
        }
        if let Some(issuer) = certs.get(index + 1) {
            check_may_issue(cert, issuer, intermediates_below)?;
            verify_signed_by(cert, issuer)?;
        }
    }
    // An anchor outside the chain has every chain certificate but the leaf
    // below it.
    let below_anchor = intermediates_below;
    let last_der = chain.last().map(Vec::as_slice).unwrap_or_default();
    // The chain may include the anchor itself.
    if let Some(anchor_index) = anchors.iter().position(|a| a.as_slice() == last_der) {
        return Ok(ChainSummary {
            subjects,
            anchor_index,
        });
    }
    for (anchor_index, anchor) in anchor_certs.iter().enumerate() {
        if anchor.subject().as_raw() == last.issuer().as_raw()
            && verify_signed_by(last, anchor).is_ok()
        {
            check_may_issue(last, anchor, below_anchor)?;
            check_validity(anchor, at)?;
            subjects.push(subject_name(anchor));
            return Ok(ChainSummary {
                subjects,
                anchor_index,
            });
        }
    }
    Err(X509ChainError::UntrustedRoot {
        subject: subject_name(last),
    })
}

/// Verifies `leaf` against a CA bundle (DER): self-signed certificates in the
/// bundle are the roots; the path up to one is built by issuer name from the
/// bundle's other certificates and from `supplied` (intermediates sent with
/// the leaf, untrusted: they can only link to a root of the bundle).
pub fn verify_with_ca_bundle(
    leaf: &[u8],
    supplied: &[Vec<u8>],
    bundle: &[Vec<u8>],
    at: i64,
) -> Result<ChainSummary, X509ChainError> {
    let mut roots = Vec::new();
    let mut intermediates: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (index, der) in bundle.iter().enumerate() {
        let cert = parse_cert(der, "ca bundle", index)?;
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            roots.push(der.clone());
        } else {
            intermediates.push((cert.subject().as_raw().to_vec(), der.clone()));
        }
    }
    for (index, der) in supplied.iter().enumerate() {
        let cert = parse_cert(der, "supplied chain", index)?;
        intermediates.push((cert.subject().as_raw().to_vec(), der.clone()));
    }
    let mut chain = vec![leaf.to_vec()];
    // Walk up through intermediates by issuer name (bounded).
    for _ in 0..8 {
        let Some(last) = chain.last() else { break };
        let last_cert = parse_cert(last, "chain", chain.len() - 1)?;
        let issuer = last_cert.issuer().as_raw();
        if last_cert.subject().as_raw() == issuer {
            break;
        }
        let next = intermediates
            .iter()
            .find(|(subject, der)| subject.as_slice() == issuer && !chain.contains(der));
        match next {
            Some((_, der)) => chain.push(der.clone()),
            None => break,
        }
    }
    verify_chain(&chain, &roots, at)
}

/// A public key usable for raw (non-certificate) signature checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPublicKey {
    /// RSA modulus and exponent, big-endian, without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// EC point (uncompressed SEC1) on P-256.
    P256(Vec<u8>),
    /// EC point (uncompressed SEC1) on P-384.
    P384(Vec<u8>),
}

/// Extracts a raw public key from a SubjectPublicKeyInfo.
pub fn raw_public_key(
    spki: &SubjectPublicKeyInfo<'_>,
    subject: &str,
) -> Result<RawPublicKey, X509ChainError> {
    let bad = |reason: &str| X509ChainError::BadKey {
        subject: subject.to_owned(),
        reason: reason.to_owned(),
    };
    match spki.parsed().map_err(|err| bad(&err.to_string()))? {
        PublicKey::RSA(rsa) => Ok(RawPublicKey::Rsa {
            n: strip_leading_zeros(rsa.modulus).to_vec(),
            e: strip_leading_zeros(rsa.exponent).to_vec(),
        }),
        PublicKey::EC(point) => match ec_curve(spki).as_deref() {
            Some(OID_P256) => Ok(RawPublicKey::P256(point.data().to_vec())),
            Some(OID_P384) => Ok(RawPublicKey::P384(point.data().to_vec())),
            other => Err(bad(&format!(
                "unsupported curve {}",
                other.unwrap_or("none")
            ))),
        },
        _ => Err(bad("not an RSA or EC key")),
    }
}

/// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or a certificate and
/// returns its key.
pub fn raw_public_key_from_pem_or_der(
    bytes: &[u8],
    source_name: &str,
) -> Result<RawPublicKey, X509ChainError> {
    let is_certificate = plinth_toolbox::pem::is_pem(bytes)
        && plinth_toolbox::pem::parse_all(bytes, "CERTIFICATE", source_name).is_ok();
    if is_certificate {
        let ders = parse_bundle(bytes, source_name)?;
        let der = ders.first().map(Vec::as_slice).unwrap_or_default();
        let cert = parse_cert(der, source_name, 0)?;
        return raw_public_key(cert.public_key(), &subject_name(&cert));
    }
    let der = plinth_toolbox::pem::der_or_pem(bytes, "PUBLIC KEY", source_name)?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(&der).map_err(|err| X509ChainError::BadKey {
        subject: source_name.to_owned(),
        reason: err.to_string(),
    })?;
    raw_public_key(&spki, source_name)
}

/// Strips leading zero bytes from a big-endian integer.
pub fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Parses a DER INTEGER (tag 0x02) and returns it as u64, as AMD's VCEK
/// extensions encode their SPL values.
pub fn der_integer_u64(value: &[u8]) -> Option<u64> {
    let (&tag, rest) = value.split_first()?;
    if tag != 0x02 {
        return None;
    }
    let (&len, body) = rest.split_first()?;
    let len = usize::from(len);
    if len == 0 || len > 9 || body.len() != len {
        return None;
    }
    let digits = strip_leading_zeros(body);
    if digits.len() > 8 {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

/// Parses a DER OCTET STRING (tag 0x04, short or long form length) and returns
/// its content.
pub fn der_octet_string(value: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = value.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n_len_bytes = usize::from(first & 0x7f);
        if n_len_bytes == 0 || n_len_bytes > 2 || rest.len() < n_len_bytes {
            return None;
        }
        let (len_bytes, body) = rest.split_at(n_len_bytes);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, body)
    };
    (body.len() == len).then_some(body)
}

/// Splits DER content into its top-level TLVs: (tag byte, content). Returns
/// None on malformed input. Only definite lengths up to 4 bytes are accepted.
pub fn der_children(mut bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (&tag, rest) = bytes.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (len_bytes, rest) = rest.split_at(n);
            (
                len_bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
                rest,
            )
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        out.push((tag, content));
        bytes = rest;
    }
    Some(out)
}

/// The FWID digests of a TCG DICE TcbInfo extension value (OID 2.23.133.5.4.1
/// or 2.23.133.5.4.1.1): the `fwids [6]` list of (hashAlg, digest).
pub fn tcb_info_fwids(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // The extension value may be wrapped in an OCTET STRING.
    let value = der_octet_string(value).unwrap_or(value);
    let Some(top) = der_children(value) else {
        return out;
    };
    let Some((0x30, tcb_info)) = top.first().copied() else {
        return out;
    };
    let Some(fields) = der_children(tcb_info) else {
        return out;
    };
    for (tag, content) in fields {
        if tag != 0xA6 {
            continue;
        }
        for (fwid_tag, fwid) in der_children(content).unwrap_or_default() {
            if fwid_tag != 0x30 {
                continue;
            }
            if let Some(parts) = der_children(fwid)
                && let Some((0x04, digest)) = parts.get(1).copied()
            {
                out.push(digest.to_vec());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers() {
        assert_eq!(der_integer_u64(&[0x02, 0x01, 0x05]), Some(5));
        assert_eq!(der_integer_u64(&[0x02, 0x02, 0x00, 0x80]), Some(128));
        assert_eq!(der_integer_u64(&[0x04, 0x01, 0x05]), None);
        assert_eq!(der_integer_u64(&[0x02, 0x02, 0x05]), None);
        assert_eq!(der_octet_string(&[0x04, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der_octet_string(&[0x04, 0x81, 0x01, 7]), Some(&[7u8][..]));
        assert_eq!(der_octet_string(&[0x04, 0x03, 1]), None);
    }

    #[test]
    fn empty_bundle_is_an_error() {
        assert!(matches!(
            parse_bundle(b"", "x.pem"),
            Err(X509ChainError::Empty { .. })
        ));
        assert!(
            parse_bundle(
                b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
                "x.pem"
            )
            .is_err()
        );
    }
}
