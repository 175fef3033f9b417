//! The one Ed25519 private-key file format: a PKCS#8 document (v2 as ring writes it, or
//! v1 as `openssl genpkey -algorithm ed25519` writes it) in a PEM block labelled
//! `PRIVATE KEY`, mode 0600, written once and never replaced. Node keys, EAR signing
//! keys and plugin-signing keys all use it, so one `openssl pkey -in KEY -pubout` works
//! on every key plinth writes.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::durable::{self, DurableError, WriteOptions};

/// PEM label of private-key files.
pub const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// Errors of key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {origin}")]
    Read {
        /// The file.
        origin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM (a DER key, or something else).
    #[error(
        "{origin}: not a PEM private key file; plinth key files are PKCS#8 PEM (`PRIVATE KEY`), convert a DER key with `openssl pkey -inform DER -in KEY -out KEY.pem`"
    )]
    NotPem {
        /// The file.
        origin: String,
    },
    /// The PEM could not be read.
    #[error("invalid key file")]
    Pem(#[from] crate::pem::PemError),
    /// The PKCS#8 document is not an Ed25519 key.
    #[error("{origin}: not an Ed25519 PKCS#8 private key ({reason})")]
    NotEd25519 {
        /// The file.
        origin: String,
        /// What ring said.
        reason: String,
    },
    /// The system random generator failed.
    #[error("cannot generate an Ed25519 key: the system random generator failed")]
    Random,
    /// The key could not be written.
    #[error("cannot write the key file")]
    Write(#[from] DurableError),
}

/// A new key: the key pair and its PEM file contents.
pub fn generate() -> Result<(Ed25519KeyPair, String), KeyFileError> {
    let document =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyFileError::Random)?;
    let key_pair =
        Ed25519KeyPair::from_pkcs8(document.as_ref()).map_err(|err| KeyFileError::NotEd25519 {
            origin: "generated key".to_owned(),
            reason: err.to_string(),
        })?;
    Ok((
        key_pair,
        crate::pem::encode(PRIVATE_KEY_LABEL, document.as_ref()),
    ))
}

/// Parses key-file contents; `origin` (the file name) goes into errors.
pub fn parse(bytes: &[u8], origin: &str) -> Result<Ed25519KeyPair, KeyFileError> {
    if !crate::pem::is_pem(bytes) {
        return Err(KeyFileError::NotPem {
            origin: origin.to_owned(),
        });
    }
    let der = crate::pem::parse_one(bytes, PRIVATE_KEY_LABEL, origin)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|err| KeyFileError::NotEd25519 {
        origin: origin.to_owned(),
        reason: err.to_string(),
    })
}

/// Reads and parses the key file at `path` (no permission checks: callers that hold a
/// long-lived identity check ownership and mode on the opened file themselves).
pub fn load(path: &Path) -> Result<Ed25519KeyPair, KeyFileError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
        origin: origin.clone(),
        source,
    })?;
    parse(&bytes, &origin)
}

/// Generates a key and writes it to `path` (mode 0600, never replacing a file).
pub fn create(path: &Path) -> Result<Ed25519KeyPair, KeyFileError> {
    let (key_pair, text) = generate()?;
    durable::write_with(path, text.as_bytes(), WriteOptions::PRIVATE_NEW)?;
    Ok(key_pair)
}

/// The raw public key of a key pair, as 64 lowercase hex digits.
pub fn public_key_hex(key_pair: &Ed25519KeyPair) -> String {
    key_pair
        .public_key()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// `openssl genpkey -algorithm ed25519` output (PKCS#8 v1, no public key).
    const OPENSSL_V1: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOab4tLoVDeAeaJOhbYmgGQNrGbGwXY92x+Id6BncW0t\n-----END PRIVATE KEY-----\n";

    #[test]
    fn created_keys_reload_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let created = create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).unwrap();
        assert_eq!(public_key_hex(&created), public_key_hex(&loaded));
        assert_eq!(public_key_hex(&loaded).len(), 64);
        assert!(create(&path).is_err(), "an existing key is never replaced");
        assert_eq!(
            public_key_hex(&load(&path).unwrap()),
            public_key_hex(&created)
        );
    }

    #[test]
    fn openssl_v1_keys_are_accepted() {
        let key = parse(OPENSSL_V1.as_bytes(), "openssl.pem").unwrap();
        assert_eq!(public_key_hex(&key).len(), 64);
    }

    #[test]
    fn der_and_wrong_contents_are_refused_with_the_file_named() {
        let der = crate::pem::parse_one(OPENSSL_V1.as_bytes(), PRIVATE_KEY_LABEL, "t").unwrap();
        let err = parse(&der, "plugin.key").unwrap_err();
        assert!(matches!(err, KeyFileError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("plugin.key"), "{err}");
        let cert = crate::pem::encode("CERTIFICATE", b"x");
        let err = parse(cert.as_bytes(), "ear.key").unwrap_err();
        assert!(
            crate::error_chain(&err).contains("ear.key: no PEM block"),
            "{}",
            crate::error_chain(&err)
        );
        let junk = crate::pem::encode(PRIVATE_KEY_LABEL, &[1, 2, 3]);
        let err = parse(junk.as_bytes(), "node.key").unwrap_err();
        assert!(matches!(err, KeyFileError::NotEd25519 { .. }), "{err}");
    }
}
