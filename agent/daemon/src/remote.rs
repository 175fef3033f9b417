//! The client side of the network API for `plinthctl --remote URL --identity FILE`: a
//! client identity (an Ed25519 key and a self-signed certificate in one PEM file, made
//! by `plinthctl identity new`), and a TLS connection that authenticates the node by
//! its key: the server's certificate must carry an Ed25519 key (the node key, see
//! docs/api.md), equal to `--node-key` when given, and the handshake must be signed by
//! it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::liveness::net::ed25519_spki;

/// Errors of the remote client's set-up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The identity file cannot be read or written.
    #[error("cannot {action} the identity file {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The identity file lacks a part or a part does not parse.
    #[error("{path}: {reason}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The URL is not `https://HOST:PORT`.
    #[error("--remote {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `--node-key` is not 32 bytes of hex.
    #[error("--node-key {0:?} is not 64 hex digits (an Ed25519 public key)")]
    NodeKey(String),
    /// A key or certificate could not be made.
    #[error("cannot make the client identity")]
    Generate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS")]
    Tls(#[source] rustls::Error),
}

/// A client identity: its certificate and key (DER).
#[derive(Debug)]
pub struct ClientIdentity {
    /// The certificate.
    pub certificate: Vec<u8>,
    /// The PKCS#8 private key.
    pub key: Vec<u8>,
}

impl ClientIdentity {
    /// A new Ed25519 key and a self-signed certificate for `name`.
    pub fn generate(name: &str) -> Result<ClientIdentity, RemoteError> {
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(RemoteError::Generate)?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(RemoteError::Generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("plinth client {name}"));
        let certificate = params.self_signed(&key).map_err(RemoteError::Generate)?;
        Ok(ClientIdentity {
            certificate: certificate.der().to_vec(),
            key: pkcs8_v1(&key.serialize_der()),
        })
    }

    /// The PEM text of the identity file: the certificate, then the key.
    pub fn to_pem(&self) -> String {
        let certificate = pem_block("CERTIFICATE", &self.certificate);
        let key = pem_block("PRIVATE KEY", &self.key);
        format!("{certificate}{key}")
    }

    /// Reads an identity file (a CERTIFICATE and a PRIVATE KEY block, in any order).
    pub fn load(path: &Path) -> Result<ClientIdentity, RemoteError> {
        let text = std::fs::read(path).map_err(|source| RemoteError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let blocks = ::pem::parse_many(&text).map_err(|err| RemoteError::Identity {
            path: path.to_owned(),
            reason: format!("not PEM: {err}"),
        })?;
        let find = |tag: &str| {
            blocks
                .iter()
                .find(|block| block.tag() == tag)
                .map(|block| block.contents().to_vec())
                .ok_or_else(|| RemoteError::Identity {
                    path: path.to_owned(),
                    reason: format!("no {tag} block (make one with `plinthctl identity new`)"),
                })
        };
        Ok(ClientIdentity {
            certificate: find("CERTIFICATE")?,
            key: find("PRIVATE KEY")?,
        })
    }

    /// What `[[api.clients]] cert_sha256` pins: the SHA-256 of the certificate's public key
    /// (so the certificate can be renewed over the same key).
    pub fn spki_sha256(&self) -> String {
        crate::netapi::tls::certificate_spki(&self.certificate)
            .map(|spki| crate::netapi::tls::sha256_hex(&spki))
            .unwrap_or_default()
    }
}

/// The RFC 8410 PKCS#8 v1 form of an Ed25519 key that ring wrote as v2 (with the public
/// key): OpenSSL 3.0, and so Python, curl and schemathesis, read only v1; rustls reads
/// both. Any other document is returned as it is.
fn pkcs8_v1(der: &[u8]) -> Vec<u8> {
    // SEQUENCE (any length), version 1, the Ed25519 algorithm, the 32-byte seed.
    const V2_AFTER_LENGTH: [u8; 14] = [
        0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    match (der.first(), der.get(2..16), der.get(16..48)) {
        (Some(0x30), Some(after), Some(seed)) if after == V2_AFTER_LENGTH => {
            let mut v1 = V1_PREFIX.to_vec();
            v1.extend_from_slice(seed);
            v1
        }
        _ => der.to_vec(),
    }
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    ::pem::encode(&::pem::Pem::new(tag, der.to_vec()))
}

/// A network API endpoint: where, who we are, whom we expect.
#[derive(Debug, Clone)]
pub struct RemoteTarget {
    /// `host:port` to connect to.
    pub authority: String,
    /// The TLS configuration (client certificate, node-key check).
    pub tls: Arc<rustls::ClientConfig>,
    /// The node key the server's handshake proved, once connected (hex).
    pub seen_node_key: Arc<Mutex<Option<String>>>,
}

impl RemoteTarget {
    /// A target for `url` (`https://HOST:PORT`), authenticating with `identity` and, when
    /// given, expecting the node key `node_key` (hex).
    pub fn new(
        url: &str,
        identity: Option<&ClientIdentity>,
        node_key: Option<&str>,
    ) -> Result<RemoteTarget, RemoteError> {
        let bad = |reason: &str| RemoteError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https:// (the network API is TLS only)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("must be https://HOST:PORT with no path"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:7443")
        };
        let expected = match node_key {
            Some(key) => {
                let bytes = hex::decode(key).map_err(|_| RemoteError::NodeKey(key.to_owned()))?;
                if bytes.len() != 32 {
                    return Err(RemoteError::NodeKey(key.to_owned()));
                }
                Some(bytes)
            }
            None => None,
        };
        let seen = Arc::new(Mutex::new(None));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(NodeKeyVerifier {
            expected,
            seen: seen.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(RemoteError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some(identity) => {
                let key = PrivateKeyDer::try_from(identity.key.clone()).map_err(|reason| {
                    RemoteError::Identity {
                        path: PathBuf::from("--identity"),
                        reason: reason.to_owned(),
                    }
                })?;
                builder
                    .with_client_auth_cert(
                        vec![CertificateDer::from(identity.certificate.clone())],
                        key,
                    )
                    .map_err(RemoteError::Tls)?
            }
            // Without an identity (tests of the 401 answer).
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(RemoteTarget {
            authority,
            tls: Arc::new(config),
            seen_node_key: seen,
        })
    }

    /// The host part of the authority (the TLS server name).
    pub fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The node key the last handshake proved, hex.
    pub fn node_key(&self) -> Option<String> {
        self.seen_node_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Accepts a server certificate whose key is an Ed25519 key (equal to the expected node
/// key when one is given); the handshake signature then proves the server holds it.
#[derive(Debug)]
struct NodeKeyVerifier {
    expected: Option<Vec<u8>>,
    seen: Arc<Mutex<Option<String>>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NodeKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let spki = crate::netapi::tls::certificate_spki(end_entity).ok_or(
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        )?;
        let key = spki
            .get(12..)
            .filter(|key| key.len() == 32 && ed25519_spki(key) == spki)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's certificate does not carry an Ed25519 node key".to_owned(),
                )
            })?;
        if let Some(expected) = &self.expected
            && expected.as_slice() != key
        {
            return Err(rustls::Error::General(format!(
                "the server's node key is {}, not the expected --node-key {}",
                hex::encode(key),
                hex::encode(expected)
            )));
        }
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hex::encode(key));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_pem() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ClientIdentity::generate("market-a").unwrap();
        let path = dir.path().join("id.pem");
        std::fs::write(&path, identity.to_pem()).unwrap();
        let loaded = ClientIdentity::load(&path).unwrap();
        assert_eq!(loaded.certificate, identity.certificate);
        assert_eq!(loaded.key, identity.key);
        assert_eq!(loaded.spki_sha256().len(), 64);
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = ClientIdentity::load(&path).unwrap_err().to_string();
        assert!(error.contains("PRIVATE KEY"), "{error}");
    }

    #[test]
    fn urls_must_be_https_without_a_path() {
        let identity = ClientIdentity::generate("x").unwrap();
        assert_eq!(
            RemoteTarget::new("https://127.0.0.1:9", Some(&identity), None)
                .unwrap()
                .authority,
            "127.0.0.1:9"
        );
        assert_eq!(
            RemoteTarget::new("https://host", Some(&identity), None)
                .unwrap()
                .authority,
            "host:7443"
        );
        assert_eq!(
            RemoteTarget::new("https://[::1]:7443/", Some(&identity), None)
                .unwrap()
                .host(),
            "::1"
        );
        for bad in ["http://h:1", "https://h:1/v1", "https://"] {
            assert!(
                RemoteTarget::new(bad, Some(&identity), None).is_err(),
                "{bad}"
            );
        }
        assert!(RemoteTarget::new("https://h:1", Some(&identity), Some("zz")).is_err());
    }
}
