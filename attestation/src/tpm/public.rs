//! TPM2B_PUBLIC / TPMT_PUBLIC parsing (the AK public area), and PEM keys.

use thiserror::Error;

use crate::bytes::{BytesError, Reader};
use crate::tpm::HashAlg;
use crate::x509chain::{self, RawPublicKey, X509ChainError};

/// Errors parsing a public key.
#[derive(Debug, Error)]
pub enum TpmPublicError {
    /// A field ran past the end.
    #[error("tpm public area truncated")]
    Truncated(#[from] BytesError),
    /// An algorithm we do not handle.
    #[error("tpm public area: unsupported {field} {value:#06x}")]
    Unsupported {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u16,
    },
    /// Bytes left after the structure.
    #[error("tpm public area: {count} trailing bytes")]
    Trailing {
        /// How many.
        count: usize,
    },
    /// A PEM or DER key that did not parse.
    #[error("not a TPM2B_PUBLIC, TPMT_PUBLIC, PEM public key or certificate")]
    Pem(#[source] X509ChainError),
}

/// A parsed TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The key.
    pub key: RawPublicKey,
    /// nameAlg.
    pub name_alg: u16,
    /// objectAttributes.
    pub attributes: u32,
    /// The signing scheme's hash, when the key fixes one.
    pub scheme_hash: Option<HashAlg>,
    /// The marshalled TPMT_PUBLIC (for computing the key's Name).
    pub tpmt_bytes: Vec<u8>,
    /// parameters.symmetric of a storage key (an EK's is AES-128-CFB), when not TPM_ALG_NULL.
    pub symmetric: Option<SymmetricDef>,
}

/// A TPMT_SYM_DEF_OBJECT that is not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    /// The algorithm (TPM_ALG_AES is 0x0006).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// The mode (TPM_ALG_CFB is 0x0043).
    pub mode: u16,
}

/// TPMA_OBJECT bits.
pub mod attributes {
    /// fixedTPM: the key cannot be duplicated off this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent: the key cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// restricted: signs only TPM-generated structures (or decrypts only TPM formats).
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign (signEncrypt).
    pub const SIGN: u32 = 1 << 18;

    /// The names of the bits set in `attributes` that this module knows.
    pub fn names(attributes: u32) -> Vec<&'static str> {
        [
            (FIXED_TPM, "fixedTPM"),
            (FIXED_PARENT, "fixedParent"),
            (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
            (USER_WITH_AUTH, "userWithAuth"),
            (ADMIN_WITH_POLICY, "adminWithPolicy"),
            (RESTRICTED, "restricted"),
            (DECRYPT, "decrypt"),
            (SIGN, "sign"),
        ]
        .into_iter()
        .filter(|(bit, _)| attributes & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;
const ECC_NIST_P384: u16 = 0x0004;

impl TpmPublic {
    /// Parses a TPM2B_PUBLIC (size-prefixed) or a bare TPMT_PUBLIC.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmPublicError> {
        if bytes.len() >= 2 {
            let size = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if size == bytes.len() - 2
                && let Ok(public) = Self::parse_tpmt(&bytes[2..])
            {
                return Ok(public);
            }
        }
        Self::parse_tpmt(bytes)
    }

    /// Parses a bare TPMT_PUBLIC, which must fill `bytes`.
    pub fn parse_tpmt(bytes: &[u8]) -> Result<Self, TpmPublicError> {
        let mut r = Reader::new(bytes);
        let key_type = r.u16_be("type")?;
        let name_alg = r.u16_be("nameAlg")?;
        let attributes = r.u32_be("objectAttributes")?;
        let _auth_policy = r.tpm2b("authPolicy")?;
        let symmetric_alg = r.u16_be("parameters.symmetric.algorithm")?;
        let symmetric = if symmetric_alg != ALG_NULL {
            Some(SymmetricDef {
                algorithm: symmetric_alg,
                key_bits: r.u16_be("parameters.symmetric.keyBits")?,
                mode: r.u16_be("parameters.symmetric.mode")?,
            })
        } else {
            None
        };
        let scheme = r.u16_be("parameters.scheme")?;
        let scheme_hash = if scheme != ALG_NULL {
            HashAlg::from_id(r.u16_be("parameters.scheme.hashAlg")?)
        } else {
            None
        };
        let key = match key_type {
            ALG_RSA => {
                let _key_bits = r.u16_be("parameters.keyBits")?;
                let exponent = r.u32_be("parameters.exponent")?;
                let modulus = r.tpm2b("unique.rsa")?;
                let exponent = if exponent == 0 { 65537 } else { exponent };
                RawPublicKey::Rsa {
                    n: x509chain::strip_leading_zeros(modulus).to_vec(),
                    e: x509chain::strip_leading_zeros(&exponent.to_be_bytes()).to_vec(),
                }
            }
            ALG_ECC => {
                let curve = r.u16_be("parameters.curveID")?;
                let kdf = r.u16_be("parameters.kdf.scheme")?;
                if kdf != ALG_NULL {
                    r.u16_be("parameters.kdf.hashAlg")?;
                }
                let x = r.tpm2b("unique.ecc.x")?;
                let y = r.tpm2b("unique.ecc.y")?;
                let coord_len = match curve {
                    ECC_NIST_P256 => 32,
                    ECC_NIST_P384 => 48,
                    other => {
                        return Err(TpmPublicError::Unsupported {
                            field: "curveID",
                            value: other,
                        });
                    }
                };
                let mut point = vec![0x04];
                point.extend(left_pad(x, coord_len));
                point.extend(left_pad(y, coord_len));
                if curve == ECC_NIST_P256 {
                    RawPublicKey::P256(point)
                } else {
                    RawPublicKey::P384(point)
                }
            }
            other => {
                return Err(TpmPublicError::Unsupported {
                    field: "type",
                    value: other,
                });
            }
        };
        if r.remaining() != 0 {
            return Err(TpmPublicError::Trailing {
                count: r.remaining(),
            });
        }
        Ok(Self {
            key,
            name_alg,
            attributes,
            scheme_hash,
            tpmt_bytes: bytes.to_vec(),
            symmetric,
        })
    }
}

impl TpmPublic {
    /// The object's Name: nameAlg (big-endian u16) || H_nameAlg(TPMT_PUBLIC).
    /// None when nameAlg is not a hash this crate computes.
    pub fn name(&self) -> Option<Vec<u8>> {
        let alg = HashAlg::from_id(self.name_alg)?;
        let digest = alg.digest(&self.tpmt_bytes)?;
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend(digest);
        Some(name)
    }
}

/// Left-pads a big-endian coordinate to `len` bytes (longer values are kept
/// and will fail verification).
pub fn left_pad(value: &[u8], len: usize) -> Vec<u8> {
    let stripped = x509chain::strip_leading_zeros(value);
    let mut out = vec![0u8; len.saturating_sub(stripped.len())];
    out.extend_from_slice(stripped);
    out
}

/// Loads an AK from a file's bytes: TPM2B_PUBLIC, TPMT_PUBLIC, PEM public key,
/// DER SubjectPublicKeyInfo or certificate.
pub fn load_ak(bytes: &[u8], source_name: &str) -> Result<RawPublicKey, TpmPublicError> {
    if (bytes.starts_with(b"-----BEGIN") || bytes.first() == Some(&0x30))
        && let Ok(key) = x509chain::raw_public_key_from_pem_or_der(bytes, source_name)
    {
        return Ok(key);
    }
    match TpmPublic::parse(bytes) {
        Ok(public) => Ok(public.key),
        Err(err) => {
            x509chain::raw_public_key_from_pem_or_der(bytes, source_name).map_err(|pem_err| {
                if bytes.starts_with(b"-----BEGIN") {
                    TpmPublicError::Pem(pem_err)
                } else {
                    err
                }
            })
        }
    }
}
