//! TPM2_MakeCredential computed outside the TPM (TPM 2.0 Part 1, §24 "Credential
//! Protection", and Part 3, TPM2_MakeCredential), so a verifier can wrap a
//! secret that only the TPM holding a given EK, with a loaded key of a given
//! Name, can recover with TPM2_ActivateCredential.
//!
//! With `H` the EK's nameAlg and `name` the AK's Name:
//!
//! 1. A seed is made and protected for the EK (the "secret" of the output):
//!    - RSA EK: `seed` = |H| random bytes, encrypted with RSA-OAEP (hash `H`,
//!      MGF1 with `H`, label `"IDENTITY\0"`);
//!    - ECC EK: an ephemeral key on the EK's curve; `Z` = the x-coordinate of
//!      ECDH with the EK; `seed = KDFe(H, Z, "IDENTITY", ephemeral.x, EK.x,
//!      8·|H|)`; the secret is the ephemeral point as a TPMS_ECC_POINT.
//! 2. `symKey = KDFa(H, seed, "STORAGE", name, "", keyBits)` of the EK's
//!    symmetric definition (AES-128-CFB in every EK template).
//! 3. `encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))`.
//! 4. `HMACkey = KDFa(H, seed, "INTEGRITY", "", "", 8·|H|)`;
//!    `outerHMAC = HMAC-H(HMACkey, encIdentity || name)`.
//! 5. The credential blob (TPM2B_ID_OBJECT's buffer) is
//!    `TPM2B(outerHMAC) || encIdentity`.
//!
//! KDFa is SP 800-108 counter-mode HMAC: `HMAC-H(key, [i]₃₂ || label || 0x00
//! || contextU || contextV || [bits]₃₂)` for i = 1, 2, ...; KDFe is SP
//! 800-56A's concatenation KDF: `H([i]₃₂ || Z || label || 0x00 || partyU ||
//! partyV)`. Both are truncated to `bits`.
//!
//! The cryptography is aws-lc-rs (RSA-OAEP with a label, ECDH, AES-CFB, HMAC);
//! no TPM software is involved.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{self, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{self, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::{digest, hmac};
use thiserror::Error;

use crate::bytes::Reader;
use crate::tpm::HashAlg;
use crate::tpm::public::{TpmPublic, attributes};
use crate::x509chain::RawPublicKey;

const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;

/// The magic and version at the start of a `tpm2_makecredential -o` file.
const TPM2_TOOLS_MAGIC: u32 = 0xBADC_C0DE;
const TPM2_TOOLS_VERSION: u32 = 1;

/// Errors making a credential.
#[derive(Debug, Error)]
pub enum CredentialError {
    /// The EK's nameAlg is not a hash this module computes.
    #[error("EK nameAlg {alg:#06x} is not SHA-1, SHA-256, SHA-384 or SHA-512")]
    NameAlg {
        /// The TPM_ALG_ID.
        alg: u16,
    },
    /// The EK is not a restricted decryption key with AES-CFB.
    #[error("EK is not a storage key: {reason}")]
    NotStorageKey {
        /// What is missing.
        reason: String,
    },
    /// The credential is longer than the EK's nameAlg digest.
    #[error("credential is {len} bytes, at most {max} for this EK")]
    CredentialSize {
        /// Its length.
        len: usize,
        /// The digest size.
        max: usize,
    },
    /// The object Name is not nameAlg || digest.
    #[error("object name is {len} bytes: not a TPM Name")]
    Name {
        /// Its length.
        len: usize,
    },
    /// A cryptographic operation failed.
    #[error("{operation} failed")]
    Crypto {
        /// Which one.
        operation: &'static str,
    },
    /// A `tpm2_makecredential` file that does not parse.
    #[error("not a tpm2_makecredential file: {reason}")]
    FileFormat {
        /// What is wrong.
        reason: String,
    },
}

fn crypto(operation: &'static str) -> impl Fn(aws_lc_rs::error::Unspecified) -> CredentialError {
    move |_| CredentialError::Crypto { operation }
}

/// A credential made for one EK and one object Name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT's buffer: TPM2B(outerHMAC) || encIdentity.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET's buffer: the seed protected for the EK.
    pub encrypted_secret: Vec<u8>,
}

impl Credential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential
    /// -i` reads: magic 0xBADCC0DE, version 1 (both big-endian u32), then
    /// the TPM2B_ID_OBJECT and the TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.id_object.len() + self.encrypted_secret.len());
        out.extend(TPM2_TOOLS_MAGIC.to_be_bytes());
        out.extend(TPM2_TOOLS_VERSION.to_be_bytes());
        push_tpm2b(&mut out, &self.id_object);
        push_tpm2b(&mut out, &self.encrypted_secret);
        out
    }

    /// Reads a `tpm2_makecredential -o` file.
    pub fn from_tpm2_tools(bytes: &[u8]) -> Result<Self, CredentialError> {
        let bad = |reason: String| CredentialError::FileFormat { reason };
        let mut r = Reader::new(bytes);
        let magic = r.u32_be("magic").map_err(|e| bad(e.to_string()))?;
        let version = r.u32_be("version").map_err(|e| bad(e.to_string()))?;
        if magic != TPM2_TOOLS_MAGIC || version != TPM2_TOOLS_VERSION {
            return Err(bad(format!("magic {magic:#010x} version {version}")));
        }
        let id_object = r.tpm2b("credentialBlob").map_err(|e| bad(e.to_string()))?;
        let encrypted_secret = r.tpm2b("secret").map_err(|e| bad(e.to_string()))?;
        if r.remaining() != 0 {
            return Err(bad(format!("{} trailing bytes", r.remaining())));
        }
        Ok(Self {
            id_object: id_object.to_vec(),
            encrypted_secret: encrypted_secret.to_vec(),
        })
    }
}

fn push_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    // Callers pass digests, RSA ciphertexts and ECC points: far below 64 KiB.
    out.extend((data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn hmac_alg(hash: HashAlg) -> Option<hmac::Algorithm> {
    match hash {
        HashAlg::Sha1 => Some(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha256 => Some(hmac::HMAC_SHA256),
        HashAlg::Sha384 => Some(hmac::HMAC_SHA384),
        HashAlg::Sha512 => Some(hmac::HMAC_SHA512),
        HashAlg::Sm3_256 => None,
    }
}

fn digest_alg(hash: HashAlg) -> Option<&'static digest::Algorithm> {
    match hash {
        HashAlg::Sha1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha256 => Some(&digest::SHA256),
        HashAlg::Sha384 => Some(&digest::SHA384),
        HashAlg::Sha512 => Some(&digest::SHA512),
        HashAlg::Sm3_256 => None,
    }
}

fn label_with_nul(label: &[u8]) -> Vec<u8> {
    let mut out = label.to_vec();
    if out.last() != Some(&0) {
        out.push(0);
    }
    out
}

/// KDFa (Part 1, §11.4.10.2): `bits` of SP 800-108 counter-mode HMAC-`hash`
/// keyed with `key`. `label` gets its terminating 0x00 if it lacks one.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, CredentialError> {
    let alg = hmac_alg(hash).ok_or(CredentialError::NameAlg { alg: hash.id() })?;
    let key = hmac::Key::new(alg, key);
    let label = label_with_nul(label);
    let n_bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(n_bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < n_bytes {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(&label);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(n_bytes);
    Ok(out)
}

/// KDFe (Part 1, §11.4.10.3): `bits` of the SP 800-56A concatenation KDF with
/// `hash` over the shared x-coordinate `z`. `label` gets its 0x00.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, CredentialError> {
    let alg = digest_alg(hash).ok_or(CredentialError::NameAlg { alg: hash.id() })?;
    let label = label_with_nul(label);
    let n_bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(n_bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < n_bytes {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(&label);
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(n_bytes);
    Ok(out)
}

/// Checks that `ek` can receive a credential: a restricted decryption key
/// whose symmetric definition is AES-CFB, with a nameAlg we compute.
/// Returns the nameAlg and the AES key size.
pub fn check_storage_key(ek: &TpmPublic) -> Result<(HashAlg, u16), CredentialError> {
    let hash = HashAlg::from_id(ek.name_alg)
        .filter(|alg| hmac_alg(*alg).is_some())
        .ok_or(CredentialError::NameAlg { alg: ek.name_alg })?;
    let needed = attributes::RESTRICTED | attributes::DECRYPT;
    if ek.attributes & needed != needed {
        return Err(CredentialError::NotStorageKey {
            reason: format!(
                "attributes are [{}], a storage key is restricted and decrypt",
                attributes::names(ek.attributes).join(", ")
            ),
        });
    }
    let symmetric = ek.symmetric.ok_or_else(|| CredentialError::NotStorageKey {
        reason: "its symmetric algorithm is TPM_ALG_NULL".to_owned(),
    })?;
    if symmetric.algorithm != ALG_AES
        || symmetric.mode != ALG_CFB
        || !matches!(symmetric.key_bits, 128 | 256)
    {
        return Err(CredentialError::NotStorageKey {
            reason: format!(
                "symmetric algorithm {:#06x}/{} bits/mode {:#06x}, not AES-128 or AES-256 in CFB mode",
                symmetric.algorithm, symmetric.key_bits, symmetric.mode
            ),
        });
    }
    Ok((hash, symmetric.key_bits))
}

/// Makes a credential holding `credential` for the object called `name`,
/// protected for `ek`, with a fresh random seed.
pub fn make_credential(
    ek: &TpmPublic,
    name: &[u8],
    credential: &[u8],
) -> Result<Credential, CredentialError> {
    let (hash, key_bits) = check_storage_key(ek)?;
    if credential.len() > hash.size() {
        return Err(CredentialError::CredentialSize {
            len: credential.len(),
            max: hash.size(),
        });
    }
    if name.len() < 2 {
        return Err(CredentialError::Name { len: name.len() });
    }
    let (seed, encrypted_secret) = protect_seed(ek, hash)?;
    let id_object = wrap(hash, key_bits, &seed, name, credential)?;
    Ok(Credential {
        id_object,
        encrypted_secret,
    })
}

/// Step 1: a seed and its protection for the EK.
fn protect_seed(ek: &TpmPublic, hash: HashAlg) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    const LABEL: &[u8] = b"IDENTITY\0";
    match &ek.key {
        RawPublicKey::Rsa { n, e } => {
            let mut seed = vec![0u8; hash.size()];
            SystemRandom::new()
                .fill(&mut seed)
                .map_err(crypto("random seed"))?;
            let oaep = match hash {
                HashAlg::Sha1 => &rsa::OAEP_SHA1_MGF1SHA1,
                HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
                HashAlg::Sm3_256 => return Err(CredentialError::NameAlg { alg: hash.id() }),
            };
            let key = PublicEncryptingKey::from_der(&rsa_spki_der(n, e)).map_err(|_| {
                CredentialError::Crypto {
                    operation: "RSA EK public key import",
                }
            })?;
            let key = OaepPublicEncryptingKey::new(key).map_err(crypto("RSA-OAEP key"))?;
            let mut out = vec![0u8; key.ciphertext_size()];
            let len = key
                .encrypt(oaep, &seed, &mut out, Some(LABEL))
                .map_err(crypto("RSA-OAEP encryption of the seed"))?
                .len();
            out.truncate(len);
            Ok((seed, out))
        }
        RawPublicKey::P256(point) | RawPublicKey::P384(point) => {
            let (alg, coord_len) = match &ek.key {
                RawPublicKey::P256(_) => (&agreement::ECDH_P256, 32),
                _ => (&agreement::ECDH_P384, 48),
            };
            let ephemeral = EphemeralPrivateKey::generate(alg, &SystemRandom::new())
                .map_err(crypto("ephemeral ECC key"))?;
            let ephemeral_public = ephemeral
                .compute_public_key()
                .map_err(crypto("ephemeral public key"))?;
            let ephemeral_point = ephemeral_public.as_ref();
            let (ephemeral_x, ephemeral_y) = split_point(ephemeral_point, coord_len)?;
            let (ek_x, _) = split_point(point, coord_len)?;
            let z = agreement::agree_ephemeral(
                ephemeral,
                UnparsedPublicKey::new(alg, point.as_slice()),
                CredentialError::Crypto {
                    operation: "ECDH with the EK",
                },
                |z| Ok(z.to_vec()),
            )?;
            let seed = kdfe(hash, &z, LABEL, ephemeral_x, ek_x, 8 * hash.size() as u32)?;
            let mut secret = Vec::with_capacity(4 + 2 * coord_len);
            push_tpm2b(&mut secret, ephemeral_x);
            push_tpm2b(&mut secret, ephemeral_y);
            Ok((seed, secret))
        }
    }
}

fn split_point(point: &[u8], coord_len: usize) -> Result<(&[u8], &[u8]), CredentialError> {
    match point.split_first() {
        Some((0x04, rest)) if rest.len() == 2 * coord_len => Ok(rest.split_at(coord_len)),
        _ => Err(CredentialError::Crypto {
            operation: "reading an uncompressed ECC point",
        }),
    }
}

/// Steps 2-5: the credential blob.
fn wrap(
    hash: HashAlg,
    key_bits: u16,
    seed: &[u8],
    name: &[u8],
    credential: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let sym_key = kdfa(hash, seed, b"STORAGE", name, &[], u32::from(key_bits))?;
    let cipher_alg = if key_bits == 128 {
        &cipher::AES_128
    } else {
        &cipher::AES_256
    };
    let key = UnboundCipherKey::new(cipher_alg, &sym_key).map_err(crypto("AES key"))?;
    let key = EncryptingKey::cfb128(key).map_err(crypto("AES-CFB key"))?;
    let mut enc_identity = Vec::with_capacity(2 + credential.len());
    push_tpm2b(&mut enc_identity, credential);
    key.less_safe_encrypt(
        &mut enc_identity,
        EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
    )
    .map_err(crypto("AES-CFB encryption of the credential"))?;
    let hmac_key = kdfa(hash, seed, b"INTEGRITY", &[], &[], 8 * hash.size() as u32)?;
    let alg = hmac_alg(hash).ok_or(CredentialError::NameAlg { alg: hash.id() })?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(alg, &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(name);
    let outer_hmac = ctx.sign();
    let mut id_object = Vec::with_capacity(2 + hash.size() + enc_identity.len());
    push_tpm2b(&mut id_object, outer_hmac.as_ref());
    id_object.extend(enc_identity);
    Ok(id_object)
}

/// DER SubjectPublicKeyInfo of an RSA key from its modulus and exponent.
fn rsa_spki_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    fn integer(value: &[u8]) -> Vec<u8> {
        let stripped = crate::x509chain::strip_leading_zeros(value);
        let mut body = Vec::with_capacity(stripped.len() + 1);
        if stripped.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(stripped);
        tlv(0x02, &body)
    }
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut rsa_key = integer(n);
    rsa_key.extend(integer(e));
    let rsa_key = tlv(0x30, &rsa_key);
    let mut bit_string = vec![0u8];
    bit_string.extend(rsa_key);
    let mut spki = RSA_ALGORITHM.to_vec();
    spki.extend(tlv(0x03, &bit_string));
    tlv(0x30, &spki)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa with one and with two HMAC blocks, computed by hand.
    #[test]
    fn kdfa_is_counter_mode_hmac() {
        let key = [0x0b; 32];
        let out = kdfa(HashAlg::Sha256, &key, b"STORAGE", b"uu", b"vv", 128).unwrap();
        let mut msg = 1u32.to_be_bytes().to_vec();
        msg.extend(b"STORAGE\0uuvv");
        msg.extend(128u32.to_be_bytes());
        let block = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &msg);
        assert_eq!(out, block.as_ref()[..16]);

        let long = kdfa(HashAlg::Sha256, &key, b"INTEGRITY\0", &[], &[], 384).unwrap();
        assert_eq!(long.len(), 48);
        let mut msg2 = 2u32.to_be_bytes().to_vec();
        msg2.extend(b"INTEGRITY\0");
        msg2.extend(384u32.to_be_bytes());
        let block2 = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &msg2);
        assert_eq!(long[32..], block2.as_ref()[..16]);
    }

    #[test]
    fn kdfe_is_the_concatenation_kdf() {
        let out = kdfe(HashAlg::Sha256, b"zz", b"IDENTITY", b"u", b"v", 256).unwrap();
        let mut msg = 1u32.to_be_bytes().to_vec();
        msg.extend(b"zzIDENTITY\0uv");
        assert_eq!(out, digest::digest(&digest::SHA256, &msg).as_ref());
    }

    #[test]
    fn spki_der_is_accepted_by_the_rsa_parser() {
        let n = [0xc5u8; 256];
        let der = rsa_spki_der(&n, &[1, 0, 1]);
        assert!(PublicEncryptingKey::from_der(&der).is_ok());
    }

    #[test]
    fn tpm2_tools_file_round_trips() {
        let credential = Credential {
            id_object: vec![1; 50],
            encrypted_secret: vec![2; 256],
        };
        let file = credential.to_tpm2_tools();
        assert_eq!(&file[..8], &[0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1]);
        assert_eq!(Credential::from_tpm2_tools(&file).unwrap(), credential);
        assert!(Credential::from_tpm2_tools(&file[..20]).is_err());
    }
}
