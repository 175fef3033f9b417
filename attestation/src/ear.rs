//! EAR (EAT Attestation Results, draft-ietf-rats-ear) tokens signed with the
//! verifier's Ed25519 key as a compact JWS (alg EdDSA).
//!
//! Each appraisal becomes one submodule (`snp`, `gpu`, `tpm-quote`, ...) with
//! an `ear.status` and an `ear.trustworthiness-vector` built from the checks:
//! every aspect that has at least one check gets a claim, 2 (affirming) when
//! all its checks passed, the contraindicated value of that claim otherwise.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::check::{Appraisal, Aspect, CheckStatus};

/// The EAR profile this verifier emits.
pub const EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";

/// Errors with EAR keys and tokens.
#[derive(Debug, Error)]
pub enum EarError {
    /// The key file is not a plinth Ed25519 key file (PKCS#8 PEM).
    #[error("invalid EAR signing key")]
    Key(#[from] plinth_toolbox::keyfile::KeyFileError),
    /// A token that is not three base64url parts.
    #[error("ear token is not a compact JWS")]
    Malformed,
    /// A token whose signature does not verify.
    #[error("ear token signature does not verify")]
    BadSignature,
}

/// The verifier's signing key.
#[derive(Debug)]
pub struct EarSigner {
    key: Ed25519KeyPair,
}

impl EarSigner {
    /// Loads a key file: the one plinth key-file format, a PKCS#8 Ed25519 key in PEM
    /// (`PRIVATE KEY`; v1 as `openssl genpkey -algorithm ed25519` writes it, or v2).
    /// `path` names the file in errors.
    pub fn from_pkcs8(bytes: &[u8], path: &str) -> Result<Self, EarError> {
        let key = plinth_toolbox::keyfile::parse(bytes, path)?;
        Ok(Self { key })
    }

    /// Generates a new key and returns it as a key file's contents (PKCS#8 PEM).
    pub fn generate_pem() -> Result<String, EarError> {
        let (_, pem) = plinth_toolbox::keyfile::generate()?;
        Ok(pem)
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs claims as a compact JWS.
    pub fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// Verifies a compact JWS with a raw Ed25519 public key and returns its claims.
pub fn verify_token(token: &str, public_key: &[u8]) -> Result<Value, EarError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(EarError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| EarError::Malformed)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(format!("{header}.{payload}").as_bytes(), &signature)
        .map_err(|_| EarError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| EarError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| EarError::Malformed)
}

fn vector_claim(aspect: Aspect) -> Option<(&'static str, i64)> {
    // (claim name, contraindicated value) per the AR4SI trustworthiness tiers.
    match aspect {
        Aspect::Hardware => Some(("hardware", 97)),
        Aspect::InstanceIdentity => Some(("instance-identity", 96)),
        Aspect::Configuration => Some(("configuration", 96)),
        Aspect::Executables => Some(("executables", 96)),
        Aspect::Freshness => None,
    }
}

/// Builds the submodule for one appraisal.
pub fn submodule(appraisal: &Appraisal, policy_id: Option<&str>) -> Value {
    let mut vector = Map::new();
    for check in &appraisal.checks {
        let Some((claim, bad)) = vector_claim(check.aspect) else {
            continue;
        };
        match check.status {
            CheckStatus::Fail => {
                vector.insert(claim.to_owned(), json!(bad));
            }
            CheckStatus::Pass => {
                vector.entry(claim.to_owned()).or_insert(json!(2));
            }
            CheckStatus::Skip => {}
        }
    }
    let status = if appraisal.verified() {
        "affirming"
    } else {
        "contraindicated"
    };
    let mut sub = json!({
        "ear.status": status,
        "ear.trustworthiness-vector": vector,
    });
    if let (Some(id), Value::Object(map)) = (policy_id, &mut sub) {
        map.insert("ear.appraisal-policy-id".to_owned(), json!(id));
    }
    sub
}

/// Builds the EAR claims set for a run. `nonce_hex` becomes `eat_nonce`
/// (base64url) when it decodes to 8..=64 bytes.
pub fn claims(
    appraisals: &[Appraisal],
    iat: i64,
    developer: &str,
    policy_id: Option<&str>,
    nonce_hex: Option<&str>,
) -> Value {
    let mut submods = Map::new();
    for appraisal in appraisals {
        submods.insert(appraisal.subject.clone(), submodule(appraisal, policy_id));
    }
    let mut out = json!({
        "eat_profile": EAR_PROFILE,
        "iat": iat,
        "ear.verifier-id": {
            "developer": developer,
            "build": format!("plinth-verify {}", env!("CARGO_PKG_VERSION")),
        },
        "submods": submods,
    });
    let nonce = nonce_hex
        .and_then(|h| hex::decode(h).ok())
        .filter(|n| (8..=64).contains(&n.len()));
    if let (Some(nonce), Value::Object(map)) = (nonce, &mut out) {
        map.insert("eat_nonce".to_owned(), json!(URL_SAFE_NO_PAD.encode(nonce)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Check;

    #[test]
    fn sign_and_verify_round_trip() {
        let pem = EarSigner::generate_pem().unwrap();
        let signer = EarSigner::from_pkcs8(pem.as_bytes(), "k.pem").unwrap();
        let mut appraisal = Appraisal::new("snp");
        appraisal.push(Check::pass("snp.signature", Aspect::Hardware, "ok"));
        appraisal.push(Check::fail(
            "snp.policy.measurement",
            Aspect::Executables,
            "no",
        ));
        let claims = claims(
            &[appraisal],
            1_700_000_000,
            "plinth",
            Some("p1"),
            Some("00112233445566778899"),
        );
        let token = signer.sign(&claims);
        let back = verify_token(&token, &signer.public_key()).unwrap();
        assert_eq!(back["eat_profile"], EAR_PROFILE);
        assert_eq!(back["submods"]["snp"]["ear.status"], "contraindicated");
        assert_eq!(
            back["submods"]["snp"]["ear.trustworthiness-vector"]["hardware"],
            2
        );
        assert_eq!(
            back["submods"]["snp"]["ear.trustworthiness-vector"]["executables"],
            96
        );
        assert_eq!(back["eat_nonce"], "ABEiM0RVZneImQ");
        let mut tampered = token.clone();
        tampered.insert(token.len() - 2, 'A');
        assert!(verify_token(&tampered, &signer.public_key()).is_err());
        assert!(EarSigner::from_pkcs8(b"nope", "k.pem").is_err());
    }
}
