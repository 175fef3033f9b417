//! TLS of the network API: the node certificate (a self-signed X.509 certificate whose
//! key IS the node's Ed25519 key, so the evidence bundle that commits to the node key
//! vouches for the endpoint), the client-certificate verifier (any certificate whose
//! holder proves possession of its key; pinning is checked per request, so that an
//! unknown client gets a 401 rather than a TLS alert), and the listener that completes
//! handshakes off the accept loop and hands axum each connection with its peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::NetApiError;
use crate::identity::NodeIdentity;
use crate::liveness::net::{NodeSigningKey, ed25519_spki};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed and not yet taken by the server.
const ACCEPT_QUEUE: usize = 256;

/// rcgen's view of the node key: it signs the self-signed certificate.
struct NodeCertKey<'a>(&'a NodeIdentity);

impl rcgen::PublicKeyData for NodeCertKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for NodeCertKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.0.sign(message).to_vec())
    }
}

/// The node's TLS certificate (DER): self-signed with the node key, subject
/// `CN=plinth-node <first 16 hex digits of the key>`, valid for `names` (DNS names or IP
/// addresses). Its SubjectPublicKeyInfo is the node key's.
pub fn node_certificate(identity: &NodeIdentity, names: &[String]) -> Result<Vec<u8>, NetApiError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(NetApiError::Cert)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("plinth-node {}", &identity.public_key_hex()[..16]),
    );
    let certificate = params
        .self_signed(&NodeCertKey(identity))
        .map_err(NetApiError::Cert)?;
    Ok(certificate.der().to_vec())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The SubjectPublicKeyInfo (DER) of a certificate, or `None` when it does not parse.
pub fn certificate_spki(certificate: &[u8]) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    Some(parsed.tbs_certificate.subject_pki.raw.to_vec())
}

/// What the SPKI of the node's certificate must be: the node key's (RFC 8410).
pub fn expected_spki(identity: &NodeIdentity) -> Vec<u8> {
    ed25519_spki(identity.public_key())
}

/// Accepts any client certificate whose holder signs the handshake with its key; the
/// request layer then looks the certificate up among the pinned clients.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
        self.algorithms.supported_schemes()
    }
}

/// The server's TLS configuration: TLS 1.3 and 1.2 with the ring provider, the node
/// certificate, optional client certificates, HTTP/1.1.
pub fn server_config(
    identity: &Arc<NodeIdentity>,
    certificate: Vec<u8>,
) -> Result<Arc<rustls::ServerConfig>, NetApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let key = Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(certificate)],
        Arc::new(NodeSigningKey(identity.clone())),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(NetApiError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub address: SocketAddr,
    /// The client's certificate (DER), if it presented one.
    pub certificate: Option<Vec<u8>>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections arrive TLS-established; handshakes run in their own
/// tasks (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow client delays no other.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, PeerInfo)>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, address) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "network API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    break;
                }
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let certificate = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|certificate| certificate.to_vec());
                            let peer = PeerInfo {
                                address,
                                certificate,
                            };
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%address, %error, "network API handshake failed")
                        }
                        Err(_) => tracing::debug!(%address, "network API handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(connection) = self.ready.recv().await {
                return connection;
            }
            // The accept loop ended (it never does while the listener lives); wait for
            // the server's shutdown instead of spinning.
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerInfo {
            address: self.local,
            certificate: None,
        })
    }
}
