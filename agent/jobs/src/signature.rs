//! Cosign-compatible, key-based image signatures, verified before an image is
//! unpacked.
//!
//! Cosign stores the signature of the image with manifest digest
//! `sha256:<hex>` in the same repository under the tag `sha256-<hex>.sig`: an
//! OCI manifest whose layers have the media type
//! [`SIMPLESIGNING_MEDIA_TYPE`]. Each layer blob is a "simple signing"
//! payload (JSON naming the signed manifest digest) and carries the
//! signature of those exact bytes, base64 DER ECDSA, in the annotation
//! [`SIGNATURE_ANNOTATION`]. Keys are ECDSA P-256 public keys in PEM
//! (`PUBLIC KEY`, SubjectPublicKeyInfo), as `cosign generate-key-pair`
//! writes `cosign.pub`.
//!
//! This is a small verifier on ring and x509-parser (both already in the
//! tree) rather than sigstore-rs, which would bring a second TLS and crypto
//! stack, OpenSSL-style key handling and the keyless (Fulcio/Rekor) machinery
//! a key-based policy does not use. Everything here parses untrusted bytes
//! and is fuzzed (`fuzz/fuzz_targets/jobs_registry_documents.rs`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;

/// Media type of a cosign simple-signing payload layer.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature of a payload layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign container image signature.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// Largest simple-signing payload read.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
/// Most signature layers looked at in one signature manifest.
pub const MAX_SIGNATURES: usize = 32;

/// Errors from reading keys or verifying signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A key file could not be read.
    #[error("cannot read signing key {name:?} from {path}")]
    ReadKey {
        /// The key's configured name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not an ECDSA P-256 public key in PEM.
    #[error("signing key {name:?} ({origin}) is not an ECDSA P-256 public key: {reason}")]
    BadKey {
        /// The key's configured name.
        name: String,
        /// Where it came from.
        origin: String,
        /// What was wrong.
        reason: String,
    },
    /// The signature manifest is not a usable cosign signature manifest.
    #[error("signature manifest {tag} is malformed: {reason}")]
    BadSignatureManifest {
        /// Its tag.
        tag: String,
        /// What was wrong.
        reason: String,
    },
    /// A payload is not a cosign simple-signing document.
    #[error("signature payload {digest} is malformed: {reason}")]
    BadPayload {
        /// The payload blob's digest.
        digest: String,
        /// What was wrong.
        reason: String,
    },
    /// No signature verifies with any required key.
    #[error("image {image} is not signed by any of the required keys ({keys}): {reasons}")]
    NotSigned {
        /// The image.
        image: String,
        /// The required key names.
        keys: String,
        /// Why each signature found was refused (or that there was none).
        reasons: String,
    },
}

/// A public key signatures are checked against.
#[derive(Debug, Clone)]
pub struct CosignKey {
    /// The configured name (`[images.keys]`).
    pub name: String,
    /// Hex SHA-256 of the SubjectPublicKeyInfo DER: the key's fingerprint.
    pub fingerprint: String,
    /// The uncompressed P-256 point ring verifies with.
    point: Vec<u8>,
}

/// Who signed an image, as recorded in the cache, the job and its receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedSigner {
    /// The configured name of the key that verified the signature.
    pub key: String,
    /// Hex SHA-256 of the key's SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// The manifest digest the signature covers.
    pub signed_digest: String,
    /// The `docker-reference` the signer named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_reference: Option<String>,
}

/// OID of `id-ecPublicKey`.
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the P-256 curve (`prime256v1`).
const OID_P256: &str = "1.2.840.10045.3.1.7";

impl CosignKey {
    /// Parses a PEM (`PUBLIC KEY`) or DER SubjectPublicKeyInfo holding an
    /// ECDSA P-256 key; `origin` names it in errors.
    pub fn parse(name: &str, bytes: &[u8], origin: &str) -> Result<CosignKey, SignatureError> {
        let bad = |reason: String| SignatureError::BadKey {
            name: name.to_owned(),
            origin: origin.to_owned(),
            reason,
        };
        let der = plinth_toolbox::pem::der_or_pem(bytes, "PUBLIC KEY", origin)
            .map_err(|err| bad(err.to_string()))?;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .map_err(|err| bad(format!("not a SubjectPublicKeyInfo: {err}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the key", rest.len())));
        }
        let algorithm = spki.algorithm.algorithm.to_id_string();
        if algorithm != OID_EC_PUBLIC_KEY {
            return Err(bad(format!("algorithm {algorithm} is not id-ecPublicKey")));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|params| params.as_oid().ok())
            .map(|oid| oid.to_id_string())
            .unwrap_or_default();
        if curve != OID_P256 {
            return Err(bad(format!("curve {curve:?} is not P-256 ({OID_P256})")));
        }
        let point = spki.subject_public_key.data.to_vec();
        if point.len() != 65 || point[0] != 4 {
            return Err(bad(
                "the point is not an uncompressed P-256 point".to_owned()
            ));
        }
        Ok(CosignKey {
            name: name.to_owned(),
            fingerprint: hex::encode(ring::digest::digest(&ring::digest::SHA256, &der).as_ref()),
            point,
        })
    }

    /// Reads a key file.
    pub fn load(name: &str, path: &Path) -> Result<CosignKey, SignatureError> {
        let bytes = std::fs::read(path).map_err(|source| SignatureError::ReadKey {
            name: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        Self::parse(name, &bytes, &path.display().to_string())
    }

    /// Whether `signature` (DER ECDSA) over `payload` verifies with this key.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.point,
        )
        .verify(payload, signature)
        .is_ok()
    }
}

/// The cosign signature tag of a manifest digest: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// One signature layer of a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// Digest of the payload blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The DER ECDSA signature of the payload.
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
struct RawSignatureManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(default)]
    layers: Vec<RawLayer>,
}

#[derive(Deserialize)]
struct RawLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Parses a signature manifest (the document at `tag`) into its signature
/// layers: simple-signing layers with a signature annotation; other layers
/// are skipped. At most [`MAX_SIGNATURES`] layers are accepted.
pub fn parse_signature_manifest(
    bytes: &[u8],
    tag: &str,
) -> Result<Vec<SignatureLayer>, SignatureError> {
    let bad = |reason: String| SignatureError::BadSignatureManifest {
        tag: tag.to_owned(),
        reason,
    };
    let raw: RawSignatureManifest =
        serde_json::from_slice(bytes).map_err(|err| bad(format!("not a manifest: {err}")))?;
    if raw.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} is not 2",
            raw.schema_version
        )));
    }
    if raw.layers.len() > MAX_SIGNATURES {
        return Err(bad(format!(
            "{} layers, more than the {MAX_SIGNATURES} looked at",
            raw.layers.len()
        )));
    }
    let mut out = Vec::new();
    for layer in raw.layers {
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(encoded) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        if layer.size > MAX_PAYLOAD_BYTES {
            return Err(bad(format!(
                "payload {} is {} bytes, over {MAX_PAYLOAD_BYTES}",
                layer.digest, layer.size
            )));
        }
        crate::image::sha256_hex(&layer.digest)
            .map_err(|_| bad(format!("payload digest {:?} is not sha256", layer.digest)))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|err| {
                bad(format!(
                    "signature of {} is not base64: {err}",
                    layer.digest
                ))
            })?;
        out.push(SignatureLayer {
            digest: layer.digest,
            size: layer.size,
            signature,
        });
    }
    Ok(out)
}

/// The parts of a simple-signing payload the policy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleSigning {
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: String,
    /// `critical.identity.docker-reference`.
    pub docker_reference: Option<String>,
}

#[derive(Deserialize)]
struct RawPayload {
    critical: RawCritical,
}

#[derive(Deserialize)]
struct RawCritical {
    #[serde(default)]
    identity: Option<RawIdentity>,
    image: RawImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawIdentity {
    #[serde(rename = "docker-reference", default)]
    docker_reference: Option<String>,
}

#[derive(Deserialize)]
struct RawImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Parses a simple-signing payload; `digest` names it in errors.
pub fn parse_payload(bytes: &[u8], digest: &str) -> Result<SimpleSigning, SignatureError> {
    let bad = |reason: String| SignatureError::BadPayload {
        digest: digest.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_PAYLOAD_BYTES {
        return Err(bad(format!(
            "{} bytes, over {MAX_PAYLOAD_BYTES}",
            bytes.len()
        )));
    }
    let raw: RawPayload = serde_json::from_slice(bytes)
        .map_err(|err| bad(format!("not a simple-signing document: {err}")))?;
    if raw.critical.kind != COSIGN_SIGNATURE_TYPE {
        return Err(bad(format!(
            "critical.type {:?} is not {COSIGN_SIGNATURE_TYPE:?}",
            raw.critical.kind
        )));
    }
    Ok(SimpleSigning {
        manifest_digest: raw.critical.image.docker_manifest_digest,
        docker_reference: raw.critical.identity.and_then(|id| id.docker_reference),
    })
}

/// Checks one signature layer whose payload bytes were fetched (and verified
/// against `layer.digest`): the signature must verify with one of `keys` and
/// the payload must name one of `digests` (the image's manifest digest, or
/// the index digest a multi-platform reference resolved to). The error
/// string says why it was refused.
pub fn check_signature(
    layer: &SignatureLayer,
    payload: &[u8],
    keys: &[CosignKey],
    digests: &[&str],
) -> Result<VerifiedSigner, String> {
    let Some(key) = keys
        .iter()
        .find(|key| key.verifies(payload, &layer.signature))
    else {
        return Err(format!(
            "signature {} does not verify with any required key (signed by an unknown key)",
            layer.digest
        ));
    };
    let parsed = parse_payload(payload, &layer.digest).map_err(|err| err.to_string())?;
    if !digests.contains(&parsed.manifest_digest.as_str()) {
        return Err(format!(
            "signature {} by key {:?} is for another image: it names {}, the image is {}",
            layer.digest,
            key.name,
            parsed.manifest_digest,
            digests.join(" / ")
        ));
    }
    Ok(VerifiedSigner {
        key: key.name.clone(),
        key_sha256: key.fingerprint.clone(),
        signed_digest: parsed.manifest_digest,
        docker_reference: parsed.docker_reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    /// SPKI DER prefix of a P-256 public key (the fixed DER header).
    const P256_SPKI_PREFIX: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    fn key_pair() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        (pair, plinth_toolbox::pem::encode("PUBLIC KEY", &spki))
    }

    fn payload(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {"identity": {"docker-reference": "r.example/app"},
                         "image": {"docker-manifest-digest": digest},
                         "type": COSIGN_SIGNATURE_TYPE},
            "optional": null
        }))
        .unwrap()
    }

    fn sign(pair: &EcdsaKeyPair, bytes: &[u8]) -> Vec<u8> {
        pair.sign(&SystemRandom::new(), bytes)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn signatures_verify_only_with_their_key_and_digest() {
        let (pair, pem) = key_pair();
        let (_, other_pem) = key_pair();
        let key = CosignKey::parse("release", pem.as_bytes(), "test").unwrap();
        let other = CosignKey::parse("other", other_pem.as_bytes(), "test").unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let bytes = payload(&digest);
        let layer = SignatureLayer {
            digest: format!("sha256:{}", crate::image::sha256_of(&bytes)),
            size: bytes.len() as u64,
            signature: sign(&pair, &bytes),
        };
        let signer =
            check_signature(&layer, &bytes, &[other.clone(), key.clone()], &[&digest]).unwrap();
        assert_eq!(signer.key, "release");
        assert_eq!(signer.signed_digest, digest);
        assert_eq!(signer.docker_reference.as_deref(), Some("r.example/app"));
        let unknown = check_signature(&layer, &bytes, &[other], &[&digest]).unwrap_err();
        assert!(unknown.contains("unknown key"), "{unknown}");
        let another = format!("sha256:{}", "b".repeat(64));
        let wrong =
            check_signature(&layer, &bytes, std::slice::from_ref(&key), &[&another]).unwrap_err();
        assert!(wrong.contains("for another image"), "{wrong}");
        let mut tampered = bytes.clone();
        tampered[5] ^= 1;
        assert!(check_signature(&layer, &tampered, &[key], &[&digest]).is_err());
    }

    #[test]
    fn keys_other_than_p256_are_refused() {
        let ed = ring::signature::Ed25519KeyPair::from_pkcs8(
            ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(ed.public_key().as_ref());
        let pem = plinth_toolbox::pem::encode("PUBLIC KEY", &spki);
        let err = CosignKey::parse("ed", pem.as_bytes(), "ed.pub").unwrap_err();
        assert!(err.to_string().contains("not id-ecPublicKey"), "{err}");
        assert!(CosignKey::parse("junk", b"junk", "junk.pub").is_err());
    }

    #[test]
    fn signature_manifests_and_payloads_are_parsed_strictly() {
        let digest = format!("sha256:{}", "c".repeat(64));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
            "layers": [
                {"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": digest, "size": 10,
                 "annotations": {SIGNATURE_ANNOTATION: "AAEC"}},
                {"mediaType": "application/octet-stream", "digest": digest, "size": 10}
            ]
        });
        let layers =
            parse_signature_manifest(&serde_json::to_vec(&manifest).unwrap(), "t").unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].signature, vec![0, 1, 2]);
        let mut bad = manifest.clone();
        bad["layers"][0]["annotations"][SIGNATURE_ANNOTATION] = "!!".into();
        assert!(parse_signature_manifest(&serde_json::to_vec(&bad).unwrap(), "t").is_err());
        let mut huge = manifest;
        huge["layers"][0]["size"] = (MAX_PAYLOAD_BYTES + 1).into();
        assert!(parse_signature_manifest(&serde_json::to_vec(&huge).unwrap(), "t").is_err());
        let wrong_type = br#"{"critical":{"image":{"docker-manifest-digest":"x"},"type":"other"}}"#;
        assert!(parse_payload(wrong_type, "p").is_err());
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "c".repeat(64))
        );
    }
}
