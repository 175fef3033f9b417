//! Network quality between plinth agents: round-trip time and throughput to the peers of
//! `[liveness.net]`, through a small TLS endpoint that serves those peers only.
//!
//! Both sides authenticate with their node keys as TLS 1.3 raw public keys (RFC 7250),
//! each pinned in the other's configuration: an agent measures only configured peers,
//! and its endpoint serves only configured peers, so it cannot be used to flood anyone.
//! Each peer may make `requests_per_minute` requests; at most [`MAX_CONNECTIONS`] are
//! served at once; a transfer is at most [`MAX_TRANSFER_BYTES`]; a connection that does
//! not finish its handshake and request in [`REQUEST_TIMEOUT`] is dropped.
//!
//! The protocol after the handshake is one request line: `PING` (answered `PONG`) or
//! `BULK <bytes>` (answered with that many bytes). A round trip is timed from the TCP
//! connect to the `PONG`: connect, handshake and a small request, as a tightly coupled
//! job would see a new connection to that peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_attestation::liveness::NetSample;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureAlgorithm, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{NetPeerSection, NetSection};
use crate::identity::NodeIdentity;

/// The largest transfer the endpoint serves or a probe asks for.
pub const MAX_TRANSFER_BYTES: u64 = 64 * 1024 * 1024;

/// Connections the endpoint serves at once.
pub const MAX_CONNECTIONS: usize = 8;

/// Time a connection has for its handshake and request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a whole transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of network-quality measurements.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A peer name that `[liveness.net.peers]` does not list.
    #[error("peer {name:?} is not in [liveness.net.peers] (configured: {configured})")]
    UnknownPeer {
        /// The name asked for.
        name: String,
        /// The names configured.
        configured: String,
    },
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS")]
    Tls(#[from] rustls::Error),
    /// Connecting, the handshake or the request failed.
    #[error("{what} {address} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The peer.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The peer answered something else than the protocol says.
    #[error("peer {address} answered {answer:?}")]
    Protocol {
        /// The peer.
        address: String,
        /// What it answered.
        answer: String,
    },
    /// A step took too long.
    #[error("{what} {address} timed out")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The peer.
        address: String,
    },
}

/// The DER SubjectPublicKeyInfo of an Ed25519 public key (RFC 8410).
pub fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key);
    der
}

/// The node key as a rustls signing key (Ed25519 only).
#[derive(Debug)]
pub(crate) struct NodeSigningKey(pub(crate) Arc<NodeIdentity>);

impl SigningKey for NodeSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(NodeSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(ed25519_spki(
            self.0.public_key(),
        )))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

#[derive(Debug)]
struct NodeSigner(Arc<NodeIdentity>);

impl Signer for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.0.sign(message).to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        &algorithms(),
    )
}

fn not_pinned() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
}

/// The handshake-signature half shared by both pinned verifiers: TLS 1.2 refused,
/// TLS 1.3 signatures checked against the presented raw Ed25519 key, raw keys required.
macro_rules! raw_key_handshake_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    };
}

/// The client's check of the server: its raw key is the peer's pinned node key.
#[derive(Debug)]
struct PinnedServer {
    spki: Vec<u8>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.spki.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(not_pinned())
        }
    }

    raw_key_handshake_checks!();
}

/// The server's check of a client: its raw key is one of the pinned peers' node keys.
#[derive(Debug)]
struct PinnedClients {
    spkis: Vec<Vec<u8>>,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .spkis
            .iter()
            .any(|spki| spki.as_slice() == end_entity.as_ref())
        {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(not_pinned())
        }
    }

    raw_key_handshake_checks!();
}

fn certified_key(identity: &Arc<NodeIdentity>) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(ed25519_spki(identity.public_key()))],
        Arc::new(NodeSigningKey(identity.clone())),
    ))
}

fn peer_spki(peer: &NetPeerSection) -> Vec<u8> {
    ed25519_spki(&hex::decode(&peer.node_key).unwrap_or_default())
}

/// Requests per peer in the current minute.
#[derive(Debug, Default)]
struct RateWindow {
    started: Option<Instant>,
    counts: HashMap<Vec<u8>, u32>,
}

/// Network-quality measurements and the endpoint that serves peers' measurements.
pub struct NetService {
    settings: NetSection,
    identity: Arc<NodeIdentity>,
    server_config: Arc<rustls::ServerConfig>,
    connections: Arc<Semaphore>,
    rate: Mutex<RateWindow>,
    latest: Mutex<Vec<NetSample>>,
}

impl std::fmt::Debug for NetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl NetService {
    /// Builds the TLS configurations from the settings and the node key.
    pub fn new(settings: &NetSection, identity: Arc<NodeIdentity>) -> Result<Self, NetError> {
        let verifier = Arc::new(PinnedClients {
            spkis: settings.peers.iter().map(peer_spki).collect(),
        });
        let server_config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(
                rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(&identity)),
            ));
        Ok(Self {
            settings: settings.clone(),
            identity,
            server_config: Arc::new(server_config),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            rate: Mutex::new(RateWindow::default()),
            latest: Mutex::new(Vec::new()),
        })
    }

    fn client_config(&self, peer: &NetPeerSection) -> Result<Arc<rustls::ClientConfig>, NetError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                spki: peer_spki(peer),
            }))
            .with_client_cert_resolver(Arc::new(
                rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(
                    &self.identity,
                )),
            ));
        Ok(Arc::new(config))
    }

    /// Whether the client with `spki` may make another request this minute.
    fn admit(&self, spki: &[u8]) -> bool {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if rate
            .started
            .is_none_or(|started| now.duration_since(started) >= Duration::from_secs(60))
        {
            rate.started = Some(now);
            rate.counts.clear();
        }
        let count = rate.counts.entry(spki.to_vec()).or_default();
        *count += 1;
        *count <= self.settings.requests_per_minute
    }

    /// Serves peers' measurements on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config.clone());
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "net endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::debug!(%remote, "net endpoint: too many connections; dropped");
                continue;
            };
            let service = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(err) = service.serve_one(acceptor, stream).await {
                    tracing::debug!(%remote, error = %crate::error_chain(&err), "net endpoint: connection ended");
                }
                drop(permit);
            });
        }
    }

    async fn serve_one(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
    ) -> Result<(), NetError> {
        let address = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let io = |what| {
            let address = address.clone();
            move |source| NetError::Io {
                what,
                address,
                source,
            }
        };
        let timeout = |what| NetError::Timeout {
            what,
            address: address.clone(),
        };
        let _ = stream.set_nodelay(true);
        let (tls, line) = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let tls = acceptor
                .accept(stream)
                .await
                .map_err(io("TLS handshake with"))?;
            let mut reader = BufReader::new(tls);
            let mut line = Vec::new();
            (&mut reader)
                .take(64)
                .read_until(b'\n', &mut line)
                .await
                .map_err(io("reading the request of"))?;
            Ok::<_, NetError>((reader.into_inner(), line))
        })
        .await
        .map_err(|_| timeout("request from"))??;
        let spki = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.as_ref().to_vec())
            .unwrap_or_default();
        let mut tls = tls;
        if !self.admit(&spki) {
            tls.write_all(b"BUSY\n").await.map_err(io("answering"))?;
            let _ = tls.shutdown().await;
            return Ok(());
        }
        let request = String::from_utf8_lossy(&line).trim().to_owned();
        if request == "PING" {
            tls.write_all(b"PONG\n").await.map_err(io("answering"))?;
        } else if let Some(n) = request
            .strip_prefix("BULK ")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n <= MAX_TRANSFER_BYTES)
        {
            let chunk = vec![0u8; 64 * 1024];
            let mut left = n;
            tokio::time::timeout(TRANSFER_TIMEOUT, async {
                while left > 0 {
                    let take = left.min(chunk.len() as u64) as usize;
                    tls.write_all(&chunk[..take]).await?;
                    left -= take as u64;
                }
                tls.flush().await
            })
            .await
            .map_err(|_| timeout("transfer to"))?
            .map_err(io("sending to"))?;
        } else {
            tls.write_all(b"ERR bad request\n")
                .await
                .map_err(io("answering"))?;
        }
        let _ = tls.shutdown().await;
        Ok(())
    }

    /// The configured peer named `name`.
    pub fn peer(&self, name: &str) -> Result<&NetPeerSection, NetError> {
        self.settings
            .peers
            .iter()
            .find(|peer| peer.name == name)
            .ok_or_else(|| NetError::UnknownPeer {
                name: name.to_owned(),
                configured: self
                    .settings
                    .peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    async fn connect(
        &self,
        config: &Arc<rustls::ClientConfig>,
        peer: &NetPeerSection,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetError> {
        let address = peer.address.clone();
        let io = |what| {
            let address = address.clone();
            move |source| NetError::Io {
                what,
                address,
                source,
            }
        };
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&peer.address))
            .await
            .map_err(|_| NetError::Timeout {
                what: "connecting to",
                address: address.clone(),
            })?
            .map_err(io("connecting to"))?;
        let _ = stream.set_nodelay(true);
        let name = ServerName::try_from("plinth-peer")
            .map_err(|_| rustls::Error::General("server name".to_owned()))?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        tokio::time::timeout(REQUEST_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| NetError::Timeout {
                what: "TLS handshake with",
                address: address.clone(),
            })?
            .map_err(io("TLS handshake with"))
    }

    async fn request(
        &self,
        config: &Arc<rustls::ClientConfig>,
        peer: &NetPeerSection,
        request: &[u8],
        expect: usize,
    ) -> Result<Vec<u8>, NetError> {
        let mut tls = self.connect(config, peer).await?;
        let io = |what| {
            let address = peer.address.clone();
            move |source| NetError::Io {
                what,
                address,
                source,
            }
        };
        tls.write_all(request).await.map_err(io("sending to"))?;
        tls.flush().await.map_err(io("sending to"))?;
        let mut answer = Vec::with_capacity(expect.min(1 << 20));
        tokio::time::timeout(
            TRANSFER_TIMEOUT,
            (&mut tls).take(expect as u64 + 16).read_to_end(&mut answer),
        )
        .await
        .map_err(|_| NetError::Timeout {
            what: "answer of",
            address: peer.address.clone(),
        })?
        .map_err(io("reading the answer of"))?;
        Ok(answer)
    }

    /// Measures one configured peer: `samples` round trips and one bounded transfer.
    pub async fn measure(&self, peer: &NetPeerSection) -> Result<NetSample, NetError> {
        let config = self.client_config(peer)?;
        let mut rtts_us = Vec::with_capacity(self.settings.samples as usize);
        for _ in 0..self.settings.samples {
            let started = Instant::now();
            let answer = self.request(&config, peer, b"PING\n", 5).await?;
            let elapsed = started.elapsed();
            if answer != b"PONG\n" {
                return Err(NetError::Protocol {
                    address: peer.address.clone(),
                    answer: String::from_utf8_lossy(&answer).into_owned(),
                });
            }
            rtts_us.push(elapsed.as_micros() as u64);
        }
        rtts_us.sort_unstable();
        let pick = |quantile: f64| {
            let idx = ((rtts_us.len() as f64 - 1.0) * quantile).round() as usize;
            rtts_us.get(idx).copied().unwrap_or_default()
        };
        let transfer = self.settings.transfer_bytes.min(MAX_TRANSFER_BYTES);
        let throughput = if transfer == 0 {
            None
        } else {
            let started = Instant::now();
            let request = format!("BULK {transfer}\n");
            let answer = self
                .request(&config, peer, request.as_bytes(), transfer as usize)
                .await?;
            let elapsed = started.elapsed().as_secs_f64().max(1e-6);
            if answer.len() as u64 != transfer {
                return Err(NetError::Protocol {
                    address: peer.address.clone(),
                    answer: format!(
                        "{} bytes instead of {transfer}: {:?}",
                        answer.len(),
                        String::from_utf8_lossy(&answer[..answer.len().min(32)])
                    ),
                });
            }
            Some((transfer as f64 / elapsed) as u64)
        };
        Ok(NetSample {
            peer: peer.name.clone(),
            at_ms: plinth_jobs::protocol::now_ms(),
            samples: rtts_us.len() as u64,
            rtt_min_us: rtts_us.first().copied().unwrap_or_default(),
            rtt_median_us: pick(0.5),
            rtt_p99_us: pick(0.99),
            throughput_bytes_per_s: throughput,
        })
    }

    /// Measures the named peers (every configured peer when `names` is empty) and keeps
    /// the results for the ledger, the metrics and the scheduling plugin. A peer that
    /// fails is reported by name; the others are still measured.
    pub async fn probe(
        &self,
        names: &[String],
    ) -> Result<Vec<Result<NetSample, String>>, NetError> {
        let peers: Vec<NetPeerSection> = if names.is_empty() {
            self.settings.peers.clone()
        } else {
            names
                .iter()
                .map(|name| self.peer(name).cloned())
                .collect::<Result<_, _>>()?
        };
        let mut results = Vec::with_capacity(peers.len());
        for peer in &peers {
            let result = self.measure(peer).await;
            if let Ok(sample) = &result {
                let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                latest.retain(|s| s.peer != sample.peer);
                latest.push(sample.clone());
                latest.sort_by(|a, b| a.peer.cmp(&b.peer));
            }
            results
                .push(result.map_err(|err| format!("{}: {}", peer.name, crate::error_chain(&err))));
        }
        Ok(results)
    }

    /// The latest measurement of every peer measured so far.
    pub fn latest(&self) -> Vec<NetSample> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Seconds between periodic measurements (`None`: only on request).
    pub fn interval(&self) -> Option<Duration> {
        (self.settings.interval_s > 0 && !self.settings.peers.is_empty())
            .then(|| Duration::from_secs(self.settings.interval_s))
    }
}
/// Binds the endpoint (when `listen` is set) and starts the periodic measurements
/// (when `interval_s` and peers are set); measurements also go into the ledger.
pub async fn start(
    settings: &NetSection,
    identity: Arc<NodeIdentity>,
    liveness: Option<Arc<super::LivenessService>>,
) -> Option<Arc<NetService>> {
    if settings.listen.is_empty() && settings.peers.is_empty() {
        return None;
    }
    let service = match NetService::new(settings, identity) {
        Ok(service) => Arc::new(service),
        Err(err) => {
            tracing::error!(error = %crate::error_chain(&err), "cannot set up network-quality measurements");
            return None;
        }
    };
    if let Ok(address) = settings.listen.parse::<SocketAddr>() {
        match TcpListener::bind(address).await {
            Ok(listener) => {
                tracing::info!(%address, peers = settings.peers.len(), "network-quality endpoint listening");
                tokio::spawn(service.clone().serve(listener));
            }
            Err(err) => {
                tracing::error!(%address, error = %err, "cannot bind the network-quality endpoint (liveness.net.listen)");
            }
        }
    }
    if let Some(interval) = service.interval() {
        let periodic = service.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Ok(results) = periodic.probe(&[]).await {
                    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
                        tracing::warn!(failure = %failure, "network-quality measurement failed");
                    }
                }
                if let Some(liveness) = &liveness {
                    liveness.set_net(periodic.latest());
                }
            }
        });
    }
    Some(service)
}
