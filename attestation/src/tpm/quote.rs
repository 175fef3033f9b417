//! TPM 2.0 quotes: TPMS_ATTEST and TPMT_SIGNATURE parsing and verification.
//!
//! The input files are what `tpm2_quote -m MSG -s SIG -o PCRS` writes: the
//! marshalled TPMS_ATTEST, the marshalled TPMT_SIGNATURE (tpm2-tools' default
//! `tss` format) and a PCR file (see [`super::pcrs`]).

use serde_json::json;
use thiserror::Error;

use crate::bytes::{BytesError, Reader};
use crate::check::{Appraisal, Aspect, Check};
use crate::policy::TpmPolicy;
use crate::tpm::HashAlg;
use crate::tpm::pcrs::{self, PcrSelection, PcrValues};
use crate::x509chain::RawPublicKey;

/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// Errors parsing quote structures.
#[derive(Debug, Error)]
pub enum TpmQuoteError {
    /// A field ran past the end.
    #[error("tpm structure truncated")]
    Truncated(#[from] BytesError),
    /// Bytes after the structure.
    #[error("{structure}: {count} trailing bytes")]
    Trailing {
        /// Which structure.
        structure: &'static str,
        /// How many bytes.
        count: usize,
    },
    /// A signature algorithm we do not handle.
    #[error("TPMT_SIGNATURE: unsupported sigAlg {alg:#06x}")]
    UnsupportedSigAlg {
        /// The TPM_ALG_ID.
        alg: u16,
    },
    /// Too many PCR banks.
    #[error("TPML_PCR_SELECTION count {count} exceeds 16")]
    TooManyBanks {
        /// The count.
        count: u32,
    },
}

/// A parsed TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// magic (must be TPM_GENERATED).
    pub magic: u32,
    /// type (must be TPM_ST_ATTEST_QUOTE for a quote).
    pub attest_type: u16,
    /// qualifiedSigner (Name of the signing key).
    pub qualified_signer: Vec<u8>,
    /// extraData (the caller's qualifying data, the nonce).
    pub extra_data: Vec<u8>,
    /// clockInfo.clock.
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub safe: bool,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// The quoted PCR selection (quotes only).
    pub pcr_select: Vec<PcrSelection>,
    /// The quoted PCR digest (quotes only).
    pub pcr_digest: Vec<u8>,
    /// The raw bytes (what is signed).
    pub raw: Vec<u8>,
}

impl Attest {
    /// Parses a marshalled TPMS_ATTEST. A TPM2B_ATTEST (size-prefixed) is
    /// accepted too.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmQuoteError> {
        let body = if bytes.len() >= 2
            && usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) == bytes.len() - 2
            && bytes.get(2..6) == Some(&TPM_GENERATED.to_be_bytes()[..])
        {
            &bytes[2..]
        } else {
            bytes
        };
        let mut r = Reader::new(body);
        let magic = r.u32_be("magic")?;
        let attest_type = r.u16_be("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = r.u64_be("clockInfo.clock")?;
        let reset_count = r.u32_be("clockInfo.resetCount")?;
        let restart_count = r.u32_be("clockInfo.restartCount")?;
        let safe = r.u8("clockInfo.safe")? != 0;
        let firmware_version = r.u64_be("firmwareVersion")?;
        let mut pcr_select = Vec::new();
        let mut pcr_digest = Vec::new();
        if attest_type == ST_ATTEST_QUOTE {
            let count = r.u32_be("pcrSelect.count")?;
            if count > 16 {
                return Err(TpmQuoteError::TooManyBanks { count });
            }
            for _ in 0..count {
                let hash_id = r.u16_be("pcrSelect.hash")?;
                let size = r.u8("pcrSelect.sizeofSelect")?;
                let bitmap = r.take(usize::from(size), "pcrSelect.pcrSelect")?;
                pcr_select.push(PcrSelection::from_bitmap(hash_id, bitmap));
            }
            pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
            if r.remaining() != 0 {
                return Err(TpmQuoteError::Trailing {
                    structure: "TPMS_ATTEST",
                    count: r.remaining(),
                });
            }
        }
        Ok(Self {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            pcr_select,
            pcr_digest,
            raw: body.to_vec(),
        })
    }
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash algorithm id.
        hash_id: u16,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Hash algorithm id.
        hash_id: u16,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Hash algorithm id.
        hash_id: u16,
        /// r, big-endian.
        r: Vec<u8>,
        /// s, big-endian.
        s: Vec<u8>,
    },
}

const ALG_RSASSA: u16 = 0x0014;
const ALG_RSAPSS: u16 = 0x0016;
const ALG_ECDSA: u16 = 0x0018;

impl TpmSignature {
    /// Parses a marshalled TPMT_SIGNATURE.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmQuoteError> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16_be("sigAlg")?;
        let hash_id = r.u16_be("signature.hash")?;
        let sig = match sig_alg {
            ALG_RSASSA => Self::RsaSsa {
                hash_id,
                sig: r.tpm2b("signature.rsassa.sig")?.to_vec(),
            },
            ALG_RSAPSS => Self::RsaPss {
                hash_id,
                sig: r.tpm2b("signature.rsapss.sig")?.to_vec(),
            },
            ALG_ECDSA => Self::Ecdsa {
                hash_id,
                r: r.tpm2b("signature.ecdsa.signatureR")?.to_vec(),
                s: r.tpm2b("signature.ecdsa.signatureS")?.to_vec(),
            },
            alg => return Err(TpmQuoteError::UnsupportedSigAlg { alg }),
        };
        if r.remaining() != 0 {
            return Err(TpmQuoteError::Trailing {
                structure: "TPMT_SIGNATURE",
                count: r.remaining(),
            });
        }
        Ok(sig)
    }

    /// The hash algorithm id.
    pub fn hash_id(&self) -> u16 {
        match self {
            Self::RsaSsa { hash_id, .. }
            | Self::RsaPss { hash_id, .. }
            | Self::Ecdsa { hash_id, .. } => *hash_id,
        }
    }

    /// A short name of the scheme.
    pub fn scheme_name(&self) -> String {
        let hash = HashAlg::from_id(self.hash_id())
            .map(HashAlg::name)
            .unwrap_or("unknown-hash");
        let scheme = match self {
            Self::RsaSsa { .. } => "RSASSA",
            Self::RsaPss { .. } => "RSAPSS",
            Self::Ecdsa { .. } => "ECDSA",
        };
        format!("{scheme}-{hash}")
    }

    /// Verifies this signature over `message` with `key`.
    pub fn verify(&self, key: &RawPublicKey, message: &[u8]) -> Result<(), String> {
        use crate::crypto::signature as sig;
        let hash = HashAlg::from_id(self.hash_id());
        match (self, key) {
            (
                Self::RsaSsa { sig: s, .. } | Self::RsaPss { sig: s, .. },
                RawPublicKey::Rsa { n, e },
            ) => {
                let params: &sig::RsaParameters = match (self, hash) {
                    (Self::RsaSsa { .. }, Some(HashAlg::Sha1)) => {
                        &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
                    }
                    (Self::RsaSsa { .. }, Some(HashAlg::Sha256)) => {
                        &sig::RSA_PKCS1_2048_8192_SHA256
                    }
                    (Self::RsaSsa { .. }, Some(HashAlg::Sha384)) => {
                        &sig::RSA_PKCS1_2048_8192_SHA384
                    }
                    (Self::RsaSsa { .. }, Some(HashAlg::Sha512)) => {
                        &sig::RSA_PKCS1_2048_8192_SHA512
                    }
                    (Self::RsaPss { .. }, Some(HashAlg::Sha256)) => &sig::RSA_PSS_2048_8192_SHA256,
                    (Self::RsaPss { .. }, Some(HashAlg::Sha384)) => &sig::RSA_PSS_2048_8192_SHA384,
                    (Self::RsaPss { .. }, Some(HashAlg::Sha512)) => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => {
                        return Err(format!(
                            "unsupported signature scheme {}",
                            self.scheme_name()
                        ));
                    }
                };
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, message, s)
                    .map_err(|_| {
                        format!(
                            "{} signature does not verify with the AK",
                            self.scheme_name()
                        )
                    })
            }
            (Self::Ecdsa { r, s, .. }, RawPublicKey::P256(point) | RawPublicKey::P384(point)) => {
                let alg: &'static sig::EcdsaVerificationAlgorithm = match (key, hash) {
                    (RawPublicKey::P256(_), Some(HashAlg::Sha256)) => &sig::ECDSA_P256_SHA256_ASN1,
                    (RawPublicKey::P256(_), Some(HashAlg::Sha384)) => &sig::ECDSA_P256_SHA384_ASN1,
                    (RawPublicKey::P384(_), Some(HashAlg::Sha256)) => &sig::ECDSA_P384_SHA256_ASN1,
                    (RawPublicKey::P384(_), Some(HashAlg::Sha384)) => &sig::ECDSA_P384_SHA384_ASN1,
                    _ => {
                        return Err(format!(
                            "unsupported signature scheme {} for this curve",
                            self.scheme_name()
                        ));
                    }
                };
                let der = ecdsa_der(r, s);
                sig::UnparsedPublicKey::new(alg, point)
                    .verify(message, &der)
                    .map_err(|_| {
                        format!(
                            "{} signature does not verify with the AK",
                            self.scheme_name()
                        )
                    })
            }
            _ => Err(format!(
                "signature scheme {} does not match the AK's key type",
                self.scheme_name()
            )),
        }
    }
}

/// DER-encodes an ECDSA signature from big-endian r and s. Non-minimal
/// encodings in the input (leading zeros) are normalised, as the TPM pads r/s.
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn integer(value: &[u8]) -> Vec<u8> {
        let stripped = crate::x509chain::strip_leading_zeros(value);
        let mut body = Vec::with_capacity(stripped.len() + 1);
        if stripped.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(stripped);
        let mut out = vec![0x02];
        push_len(&mut out, body.len());
        out.extend(body);
        out
    }
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
    }
    let mut body = integer(r);
    body.extend(integer(s));
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

/// The inputs for verifying one quote.
#[derive(Debug, Clone)]
pub struct QuoteEvidence {
    /// The AK public key.
    pub ak: RawPublicKey,
    /// The parsed TPMS_ATTEST.
    pub attest: Attest,
    /// The parsed TPMT_SIGNATURE.
    pub signature: TpmSignature,
    /// PCR values supplied beside the quote, if any.
    pub pcrs: Option<PcrValues>,
}

/// Verifies a quote. `nonce` is the expected qualifying data (the CLI's
/// `--nonce`, else the policy's).
pub fn verify(evidence: &QuoteEvidence, nonce: Option<&[u8]>, policy: &TpmPolicy) -> Appraisal {
    let attest = &evidence.attest;
    let mut appraisal = Appraisal::new("tpm-quote");
    appraisal.nonce = Some(hex::encode(&attest.extra_data));
    appraisal.claim("extra_data", hex::encode(&attest.extra_data));
    appraisal.claim("qualified_signer", hex::encode(&attest.qualified_signer));
    appraisal.claim(
        "clock_info",
        json!({"clock": attest.clock, "reset_count": attest.reset_count,
               "restart_count": attest.restart_count, "safe": attest.safe}),
    );
    appraisal.claim(
        "firmware_version",
        format!("{:#018x}", attest.firmware_version),
    );
    let selection: Vec<String> = attest
        .pcr_select
        .iter()
        .map(|s| {
            let bank = HashAlg::from_id(s.hash_id)
                .map(|a| a.name().to_owned())
                .unwrap_or_else(|| format!("{:#06x}", s.hash_id));
            let list: Vec<String> = s.pcrs.iter().map(u32::to_string).collect();
            format!("{bank}:{}", list.join(","))
        })
        .collect();
    appraisal.claim("pcr_selection", selection.join("+"));
    appraisal.claim("pcr_digest", hex::encode(&attest.pcr_digest));

    appraisal.push(Check::from_bool(
        "tpm.magic",
        Aspect::Hardware,
        attest.magic == TPM_GENERATED,
        format!(
            "magic {:#010x} (TPM_GENERATED_VALUE is {TPM_GENERATED:#010x})",
            attest.magic
        ),
    ));
    appraisal.push(Check::from_bool(
        "tpm.type",
        Aspect::Hardware,
        attest.attest_type == ST_ATTEST_QUOTE,
        format!(
            "type {:#06x} (TPM_ST_ATTEST_QUOTE is {ST_ATTEST_QUOTE:#06x})",
            attest.attest_type
        ),
    ));
    appraisal.push(Check::from_result(
        "tpm.signature",
        Aspect::Hardware,
        evidence
            .signature
            .verify(&evidence.ak, &attest.raw)
            .map(|()| {
                format!(
                    "{} signature over TPMS_ATTEST verifies with the AK",
                    evidence.signature.scheme_name()
                )
            }),
    ));
    match nonce {
        Some(expected) => appraisal.push(Check::from_bool(
            "tpm.nonce",
            Aspect::Freshness,
            expected == attest.extra_data.as_slice(),
            format!(
                "qualifying data {} expected {}",
                hex::encode(&attest.extra_data),
                hex::encode(expected)
            ),
        )),
        None => appraisal.push(Check::skip(
            "tpm.nonce",
            Aspect::Freshness,
            format!(
                "no expected nonce given: freshness not checked (qualifying data is {})",
                hex::encode(&attest.extra_data)
            ),
        )),
    }
    match &evidence.pcrs {
        Some(values) => {
            let hash = HashAlg::from_id(evidence.signature.hash_id());
            let result = match hash {
                Some(hash) => {
                    pcrs::composite_digest(values, &attest.pcr_select, hash).and_then(|digest| {
                        if digest == attest.pcr_digest {
                            Ok(format!(
                                "{} of the supplied PCR values equals the quoted pcrDigest",
                                hash.name()
                            ))
                        } else {
                            Err(format!(
                                "{} of the supplied PCR values is {}, the quote says {}",
                                hash.name(),
                                hex::encode(&digest),
                                hex::encode(&attest.pcr_digest)
                            ))
                        }
                    })
                }
                None => Err("signature hash algorithm unknown".to_owned()),
            };
            appraisal.push(Check::from_result(
                "tpm.pcr_digest",
                Aspect::Executables,
                result,
            ));
            let mut pcr_claims = serde_json::Map::new();
            for (bank, map) in values {
                let bank_claims: serde_json::Map<String, serde_json::Value> = map
                    .iter()
                    .map(|(idx, value)| (idx.to_string(), json!(hex::encode(value))))
                    .collect();
                pcr_claims.insert(bank.name().to_owned(), bank_claims.into());
            }
            appraisal.claim("pcrs", serde_json::Value::Object(pcr_claims));
            apply_policy(&mut appraisal, values, policy);
        }
        None => appraisal.push(Check::skip(
            "tpm.pcr_digest",
            Aspect::Executables,
            "no PCR values supplied: the quoted digest cannot be opened",
        )),
    }
    appraisal
}

/// Compares PCR values with the policy's golden values.
pub fn apply_policy(appraisal: &mut Appraisal, values: &PcrValues, policy: &TpmPolicy) {
    if policy.pcrs.is_empty() {
        return;
    }
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (bank_name, golden) in &policy.pcrs {
        let bank = HashAlg::from_name(bank_name);
        for (index, want) in golden {
            compared += 1;
            let have = bank
                .and_then(|b| values.get(&b))
                .and_then(|m| index.parse::<u32>().ok().and_then(|i| m.get(&i)));
            match have {
                Some(have) if *have == want.0 => {}
                Some(have) => mismatches.push(format!(
                    "{bank_name}:{index} is {} expected {}",
                    hex::encode(have),
                    hex::encode(&want.0)
                )),
                None => mismatches.push(format!("{bank_name}:{index} was not quoted")),
            }
        }
    }
    appraisal.push(Check::from_bool(
        "tpm.policy.pcrs",
        Aspect::Executables,
        mismatches.is_empty(),
        if mismatches.is_empty() {
            format!("{compared} PCR value(s) match the policy")
        } else {
            mismatches.join("; ")
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_der_pads_high_bit_and_strips_zeros() {
        assert_eq!(
            ecdsa_der(&[0x00, 0x80], &[0x01]),
            vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01]
        );
    }

    #[test]
    fn signature_parse_rejects_trailing_and_unknown() {
        assert!(TpmSignature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x01, 0xaa]).is_ok());
        assert!(TpmSignature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x01, 0xaa, 0x00]).is_err());
        assert!(TpmSignature::parse(&[0x00, 0x99, 0x00, 0x0b]).is_err());
    }
}
