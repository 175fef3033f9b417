//! Crafted X.509 certificates for the chain tests: DER written by hand and
//! signed with `ring` (ECDSA P-256 with SHA-256), so the tests need no
//! external tool (no openssl, no certtool) and no extra dependency.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

/// keyUsage bits as the first byte of the DER BIT STRING.
pub const KU_DIGITAL_SIGNATURE: u8 = 0x80;
/// keyCertSign.
pub const KU_KEY_CERT_SIGN: u8 = 0x04;
/// cRLSign.
pub const KU_CRL_SIGN: u8 = 0x02;

/// A P-256 key pair.
pub struct Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Key {
    /// A fresh key.
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { pair, rng }
    }

    fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&self.rng, message)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// What to put in a certificate.
#[derive(Clone)]
pub struct Spec {
    /// Subject CN.
    pub subject: String,
    /// Issuer CN (the issuer's subject CN, unless a test wants a mismatch).
    pub issuer: String,
    /// basicConstraints: None = no extension; Some((ca, pathLen)).
    pub basic_constraints: Option<(bool, Option<u8>)>,
    /// keyUsage first byte: None = no extension.
    pub key_usage: Option<u8>,
    /// Serial number.
    pub serial: u8,
}

impl Spec {
    /// A self-issued root CA (CA:TRUE, keyCertSign|cRLSign).
    pub fn root(cn: &str) -> Self {
        Self {
            subject: cn.to_owned(),
            issuer: cn.to_owned(),
            basic_constraints: Some((true, None)),
            key_usage: Some(KU_KEY_CERT_SIGN | KU_CRL_SIGN),
            serial: 1,
        }
    }

    /// An intermediate CA issued by `issuer`.
    pub fn ca(cn: &str, issuer: &str) -> Self {
        Self {
            subject: cn.to_owned(),
            issuer: issuer.to_owned(),
            basic_constraints: Some((true, None)),
            key_usage: Some(KU_KEY_CERT_SIGN | KU_CRL_SIGN),
            serial: 2,
        }
    }

    /// An end-entity certificate issued by `issuer` (CA:FALSE, digitalSignature).
    pub fn leaf(cn: &str, issuer: &str) -> Self {
        Self {
            subject: cn.to_owned(),
            issuer: issuer.to_owned(),
            basic_constraints: Some((false, None)),
            key_usage: Some(KU_DIGITAL_SIGNATURE),
            serial: 3,
        }
    }
}

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

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

fn name(cn: &str) -> Vec<u8> {
    seq(&[tlv(0x31, &seq(&[oid("2.5.4.3"), tlv(0x0c, cn.as_bytes())]))])
}

fn bit_string(first_byte: u8) -> Vec<u8> {
    let unused = if first_byte == 0 {
        0
    } else {
        first_byte.trailing_zeros() as u8
    };
    tlv(0x03, &[unused, first_byte])
}

fn extension(id: &str, critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(tlv(0x01, &[0xff]));
    }
    parts.push(tlv(0x04, &value));
    seq(&parts)
}

/// A DER certificate for `spec` with `subject_key`'s public key, signed by
/// `issuer_key`. Valid from 2020-01-01 to 2040-01-01.
pub fn cert(spec: &Spec, subject_key: &Key, issuer_key: &Key) -> Vec<u8> {
    let ecdsa_sha256 = seq(&[oid("1.2.840.10045.4.3.2")]);
    let spki = seq(&[
        seq(&[oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")]),
        tlv(0x03, &[&[0u8][..], subject_key.public_point()].concat()),
    ]);
    let mut extensions = Vec::new();
    if let Some((ca, path_len)) = spec.basic_constraints {
        let mut body = Vec::new();
        if ca {
            body.push(tlv(0x01, &[0xff]));
        }
        if let Some(n) = path_len {
            body.push(tlv(0x02, &[n]));
        }
        extensions.push(extension("2.5.29.19", true, seq(&body)));
    }
    if let Some(bits) = spec.key_usage {
        extensions.push(extension("2.5.29.15", true, bit_string(bits)));
    }
    let mut tbs_parts = vec![
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(0x02, &[spec.serial]),
        ecdsa_sha256.clone(),
        name(&spec.issuer),
        seq(&[tlv(0x17, b"200101000000Z"), tlv(0x17, b"400101000000Z")]),
        name(&spec.subject),
        spki,
    ];
    if !extensions.is_empty() {
        tbs_parts.push(tlv(0xa3, &seq(&extensions)));
    }
    let tbs = seq(&tbs_parts);
    let signature = issuer_key.sign(&tbs);
    seq(&[
        tbs,
        ecdsa_sha256,
        tlv(0x03, &[&[0u8][..], &signature].concat()),
    ])
}

/// PEM text of DER certificates.
pub fn pem(ders: &[&[u8]]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
