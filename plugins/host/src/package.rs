//! Signed plugin packages: a manifest plus the wasm component, Ed25519-signed.
//!
//! # File format (`.plinthpkg`, version 1)
//!
//! All integers little-endian; nothing may follow the wasm.
//!
//! | bytes   | content                                                          |
//! |---------|------------------------------------------------------------------|
//! | 8       | magic `PLNTHPKG`                                                 |
//! | 4       | format version, `1`                                              |
//! | 4       | manifest length M (at most 64 KiB)                               |
//! | M       | manifest, TOML, UTF-8 (see [`Manifest`])                         |
//! | 4       | signature block length S: `0` (unsigned) or `96`                 |
//! | S       | 32-byte Ed25519 public key, then the 64-byte signature           |
//! | 8       | wasm length W (at most 64 MiB)                                   |
//! | W       | the wasm component                                               |
//!
//! The signature covers `plinth-plugin-package-v1\n` followed by the manifest bytes;
//! the manifest carries the wasm's SHA-256, which binds the wasm to the signature.
//! Verification order: structure, signature, trusted key, wasm digest, manifest fields.

use std::collections::BTreeMap;

use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::config::{Limits, PluginKind};

/// Magic bytes at the start of every package.
pub const MAGIC: &[u8; 8] = b"PLNTHPKG";
/// The only format version this host reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest accepted manifest.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Largest accepted wasm.
pub const MAX_WASM_BYTES: u64 = 64 << 20;
/// Domain separator prepended to the manifest before signing.
pub const SIGNING_CONTEXT: &[u8] = b"plinth-plugin-package-v1\n";

/// Errors while reading, verifying or writing packages.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The bytes end before a field.
    #[error(
        "package truncated while reading {field} (need {need} bytes at offset {offset}, have {len})"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where.
        offset: usize,
        /// How many bytes it needed.
        need: u64,
        /// Total package length.
        len: usize,
    },
    /// Wrong magic.
    #[error("not a plinth plugin package (magic {found:?})")]
    Magic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// Unknown format version.
    #[error("package format version {0} is not supported (this host reads version 1)")]
    FormatVersion(u32),
    /// A length field is out of bounds.
    #[error("package {field} length {len} exceeds the limit of {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The signature block has a length other than 0 or 96.
    #[error("package signature block has {0} bytes (expected 0 or 96)")]
    SignatureBlock(u32),
    /// Bytes follow the wasm.
    #[error("package has {0} trailing bytes after the wasm")]
    TrailingBytes(usize),
    /// The manifest is not valid UTF-8 TOML of the expected shape.
    #[error("package manifest is invalid")]
    Manifest(#[source] toml::de::Error),
    /// The manifest could not be encoded.
    #[error("cannot encode manifest")]
    ManifestEncode(#[source] toml::ser::Error),
    /// A manifest field has a bad value.
    #[error("manifest field {field} is invalid: {reason}")]
    ManifestField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The package carries no signature and unsigned packages are not allowed.
    #[error("plugin {name}: package is unsigned and unsigned plugins are not allowed")]
    Unsigned {
        /// Plugin name from the manifest.
        name: String,
    },
    /// The signature does not verify.
    #[error("plugin {name}: signature by key {key} does not verify")]
    BadSignature {
        /// Plugin name.
        name: String,
        /// The key in the package, hex.
        key: String,
    },
    /// The signature verifies but the key is not trusted.
    #[error("plugin {name}: signed by untrusted key {key}")]
    UntrustedKey {
        /// Plugin name.
        name: String,
        /// The key, hex.
        key: String,
    },
    /// The wasm does not match the manifest's digest.
    #[error("plugin {name}: wasm SHA-256 {actual} does not match the manifest's {expected}")]
    Tampered {
        /// Plugin name.
        name: String,
        /// Manifest digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// A key could not be generated or parsed.
    #[error("invalid Ed25519 key: {0}")]
    Key(String),
}

/// The manifest of a plugin package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name: 1-64 characters of `[a-z0-9._-]`.
    pub name: String,
    /// Plugin version (free-form, e.g. semver), 1-64 printable characters.
    pub version: String,
    /// What the plugin decides.
    pub kind: PluginKind,
    /// WIT package the plugin was built against, e.g. `plinth:policy@0.1.1`.
    pub wit: String,
    /// SHA-256 of the wasm, lowercase hex.
    pub wasm_sha256: String,
    /// Limits the plugin asks for (clamped by the host); defaults when absent.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Default configuration; the operator's configuration overrides it key by key.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl Manifest {
    /// Check field syntax.
    pub fn validate(&self) -> Result<(), PackageError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte)
            });
        if !name_ok {
            return Err(PackageError::ManifestField {
                field: "name",
                reason: format!("{:?} is not 1-64 characters of [a-z0-9._-]", self.name),
            });
        }
        if self.version.is_empty()
            || self.version.len() > 64
            || !self.version.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(PackageError::ManifestField {
                field: "version",
                reason: format!("{:?} is not 1-64 printable characters", self.version),
            });
        }
        if crate::version::parse_wit_package(&self.wit).is_none() {
            return Err(PackageError::ManifestField {
                field: "wit",
                reason: format!("{:?} is not plinth:policy@MAJOR.MINOR.PATCH", self.wit),
            });
        }
        if self.wasm_sha256.len() != 64
            || !self
                .wasm_sha256
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        {
            return Err(PackageError::ManifestField {
                field: "wasm_sha256",
                reason: format!("{:?} is not 64 lowercase hex digits", self.wasm_sha256),
            });
        }
        Ok(())
    }
}

/// A parsed, not yet verified package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The manifest bytes exactly as signed.
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Ed25519 public key and signature, if signed.
    pub signature: Option<([u8; 32], [u8; 64])>,
    /// The wasm component.
    pub wasm: Vec<u8>,
}

/// Which packages the host accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// Ed25519 public keys (32 bytes) whose signatures are accepted.
    pub trusted_keys: Vec<[u8; 32]>,
    /// Accept packages without a signature (development only). Signed packages must
    /// still carry a valid signature from a trusted key.
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    /// Parse hex-encoded public keys.
    pub fn from_hex_keys<S: AsRef<str>>(
        keys: &[S],
        allow_unsigned: bool,
    ) -> Result<TrustPolicy, PackageError> {
        let trusted_keys = keys
            .iter()
            .map(|key| parse_public_key_hex(key.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustPolicy {
            trusted_keys,
            allow_unsigned,
        })
    }
}

/// Parse a 32-byte Ed25519 public key written as 64 hex digits.
pub fn parse_public_key_hex(text: &str) -> Result<[u8; 32], PackageError> {
    let bytes = hex::decode(text.trim())
        .map_err(|error| PackageError::Key(format!("public key {text:?}: {error}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| PackageError::Key(format!("public key {text:?} is not 32 bytes")))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, need: u64) -> Result<&'a [u8], PackageError> {
        let truncated = PackageError::Truncated {
            field,
            offset: self.offset,
            need,
            len: self.bytes.len(),
        };
        let need_usize = usize::try_from(need).map_err(|_| truncated)?;
        let end = self.offset.checked_add(need_usize);
        match end.and_then(|end| self.bytes.get(self.offset..end)) {
            Some(slice) => {
                self.offset += need_usize;
                Ok(slice)
            }
            None => Err(PackageError::Truncated {
                field,
                offset: self.offset,
                need,
                len: self.bytes.len(),
            }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PackageError> {
        let slice = self.take(field, 4)?;
        let mut array = [0u8; 4];
        array.copy_from_slice(slice);
        Ok(u32::from_le_bytes(array))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, PackageError> {
        let slice = self.take(field, 8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(slice);
        Ok(u64::from_le_bytes(array))
    }
}

impl Package {
    /// Parse package bytes (structure and manifest syntax only; see [`Package::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Package, PackageError> {
        let mut reader = Reader { bytes, offset: 0 };
        let magic = reader.take("magic", 8)?;
        if magic != MAGIC {
            return Err(PackageError::Magic {
                found: magic.to_vec(),
            });
        }
        let version = reader.u32("format version")?;
        if version != FORMAT_VERSION {
            return Err(PackageError::FormatVersion(version));
        }
        let manifest_len = reader.u32("manifest length")?;
        if manifest_len as usize > MAX_MANIFEST_BYTES {
            return Err(PackageError::TooLarge {
                field: "manifest",
                len: u64::from(manifest_len),
                max: MAX_MANIFEST_BYTES as u64,
            });
        }
        let manifest_bytes = reader.take("manifest", u64::from(manifest_len))?.to_vec();
        let signature_len = reader.u32("signature block length")?;
        let signature = match signature_len {
            0 => None,
            96 => {
                let block = reader.take("signature block", 96)?;
                let mut key = [0u8; 32];
                let mut sig = [0u8; 64];
                key.copy_from_slice(&block[..32]);
                sig.copy_from_slice(&block[32..]);
                Some((key, sig))
            }
            other => return Err(PackageError::SignatureBlock(other)),
        };
        let wasm_len = reader.u64("wasm length")?;
        if wasm_len > MAX_WASM_BYTES {
            return Err(PackageError::TooLarge {
                field: "wasm",
                len: wasm_len,
                max: MAX_WASM_BYTES,
            });
        }
        let wasm = reader.take("wasm", wasm_len)?.to_vec();
        let trailing = bytes.len() - reader.offset;
        if trailing != 0 {
            return Err(PackageError::TrailingBytes(trailing));
        }
        let manifest_text =
            std::str::from_utf8(&manifest_bytes).map_err(|error| PackageError::ManifestField {
                field: "manifest",
                reason: format!("not UTF-8: {error}"),
            })?;
        let manifest: Manifest = toml::from_str(manifest_text).map_err(PackageError::Manifest)?;
        manifest.validate()?;
        Ok(Package {
            manifest_bytes,
            manifest,
            signature,
            wasm,
        })
    }

    /// Check the signature against `trust` and the wasm against the manifest digest.
    pub fn verify(&self, trust: &TrustPolicy) -> Result<(), PackageError> {
        let name = self.manifest.name.clone();
        match &self.signature {
            None if trust.allow_unsigned => {}
            None => return Err(PackageError::Unsigned { name }),
            Some((key, sig)) => {
                let message = [SIGNING_CONTEXT, self.manifest_bytes.as_slice()].concat();
                signature::UnparsedPublicKey::new(&signature::ED25519, key)
                    .verify(&message, sig)
                    .map_err(|_| PackageError::BadSignature {
                        name: name.clone(),
                        key: hex::encode(key),
                    })?;
                if !trust.trusted_keys.iter().any(|trusted| trusted == key) {
                    return Err(PackageError::UntrustedKey {
                        name,
                        key: hex::encode(key),
                    });
                }
            }
        }
        let actual = sha256_hex(&self.wasm);
        if actual != self.manifest.wasm_sha256 {
            return Err(PackageError::Tampered {
                name: self.manifest.name.clone(),
                expected: self.manifest.wasm_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Serialize to the package format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.manifest_bytes.len() + self.wasm.len() + 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.manifest_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        match &self.signature {
            None => out.extend_from_slice(&0u32.to_le_bytes()),
            Some((key, sig)) => {
                out.extend_from_slice(&96u32.to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(sig);
            }
        }
        out.extend_from_slice(&(self.wasm.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.wasm);
        out
    }

    /// Build an unsigned package from a manifest (its `wasm_sha256` is filled in) and wasm.
    pub fn build(mut manifest: Manifest, wasm: Vec<u8>) -> Result<Package, PackageError> {
        manifest.wasm_sha256 = sha256_hex(&wasm);
        manifest.validate()?;
        if wasm.len() as u64 > MAX_WASM_BYTES {
            return Err(PackageError::TooLarge {
                field: "wasm",
                len: wasm.len() as u64,
                max: MAX_WASM_BYTES,
            });
        }
        let manifest_bytes = toml::to_string(&manifest)
            .map_err(PackageError::ManifestEncode)?
            .into_bytes();
        Ok(Package {
            manifest_bytes,
            manifest,
            signature: None,
            wasm,
        })
    }

    /// Sign with an Ed25519 key (load key files with [`plinth_toolbox::keyfile`]).
    pub fn sign(&mut self, key_pair: &Ed25519KeyPair) -> Result<(), PackageError> {
        let message = [SIGNING_CONTEXT, self.manifest_bytes.as_slice()].concat();
        let sig = key_pair.sign(&message);
        let mut public = [0u8; 32];
        public.copy_from_slice(key_pair.public_key().as_ref());
        let mut sig_bytes = [0u8; 64];
        sig_bytes.copy_from_slice(sig.as_ref());
        self.signature = Some((public, sig_bytes));
        Ok(())
    }
}

/// A new Ed25519 key pair and its public key as hex (the key file is written by
/// [`plinth_toolbox::keyfile::create`]).
pub fn generate_key() -> Result<(Ed25519KeyPair, String), PackageError> {
    let (key_pair, _) = plinth_toolbox::keyfile::generate()
        .map_err(|error| PackageError::Key(plinth_toolbox::error_chain(&error)))?;
    let public_hex = plinth_toolbox::keyfile::public_key_hex(&key_pair);
    Ok((key_pair, public_hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "demo".to_string(),
            version: "1.0.0".to_string(),
            kind: PluginKind::Pricing,
            wit: "plinth:policy@0.1.1".to_string(),
            wasm_sha256: String::new(),
            limits: None,
            config: BTreeMap::new(),
        }
    }

    #[test]
    fn signed_round_trip_verifies() {
        let (pkcs8, public_hex) = generate_key().unwrap();
        let mut package = Package::build(manifest(), b"\0asm fake".to_vec()).unwrap();
        package.sign(&pkcs8).unwrap();
        let bytes = package.to_bytes();
        let parsed = Package::parse(&bytes).unwrap();
        let trust = TrustPolicy::from_hex_keys(&[public_hex], false).unwrap();
        parsed.verify(&trust).unwrap();
        assert_eq!(parsed.manifest, package.manifest);
    }

    #[test]
    fn refusals_name_the_cause() {
        let (pkcs8, public_hex) = generate_key().unwrap();
        let (_, other_hex) = generate_key().unwrap();
        let trust = TrustPolicy::from_hex_keys(&[public_hex], false).unwrap();
        let unsigned = Package::build(manifest(), b"wasm".to_vec()).unwrap();
        let error = unsigned.verify(&trust).unwrap_err();
        assert!(matches!(error, PackageError::Unsigned { .. }), "{error}");

        let mut signed = unsigned.clone();
        signed.sign(&pkcs8).unwrap();
        let mut tampered = signed.clone();
        tampered.wasm.push(0);
        let error = tampered.verify(&trust).unwrap_err();
        assert!(matches!(error, PackageError::Tampered { .. }), "{error}");

        let mut forged = signed.clone();
        forged.manifest_bytes = forged.manifest_bytes.replace_first(b"1.0.0", b"6.6.6");
        let error = forged.verify(&trust).unwrap_err();
        assert!(
            matches!(error, PackageError::BadSignature { .. }),
            "{error}"
        );

        let other_trust = TrustPolicy::from_hex_keys(&[other_hex], false).unwrap();
        let error = signed.verify(&other_trust).unwrap_err();
        assert!(
            matches!(error, PackageError::UntrustedKey { .. }),
            "{error}"
        );
    }

    trait ReplaceFirst {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }

    impl ReplaceFirst for Vec<u8> {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let at = self
                .windows(from.len())
                .position(|window| window == from)
                .unwrap();
            [&self[..at], to, &self[at + from.len()..]].concat()
        }
    }

    #[test]
    fn malformed_packages_are_rejected() {
        let package = Package::build(manifest(), b"wasm".to_vec()).unwrap();
        let bytes = package.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Package::parse(&bytes[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(1);
        assert!(matches!(
            Package::parse(&trailing),
            Err(PackageError::TrailingBytes(1))
        ));
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            Package::parse(&bad_magic),
            Err(PackageError::Magic { .. })
        ));
        let mut bad_name = manifest();
        bad_name.name = "Bad Name".to_string();
        assert!(Package::build(bad_name, b"w".to_vec()).is_err());
    }
}
