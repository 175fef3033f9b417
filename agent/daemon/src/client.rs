//! A small HTTP/1.1 client for the agent's APIs, used by `plinthctl`: the admin API over
//! its Unix socket, or the network API over mutual TLS (`plinthctl --remote`, see
//! [`crate::remote`]); every command speaks to either.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

use crate::remote::RemoteTarget;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket exists: the agent is not running (or uses another socket path).
    #[error(
        "the agent is not running: no socket at {socket} (is plinth-agent started? try `systemctl status plinth-agent`, or pass --socket)"
    )]
    NotRunning {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// The socket exists but this user may not connect.
    #[error(
        "permission denied on {socket}: run as root or as a member of the socket's group (api.socket_group)"
    )]
    PermissionDenied {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// The socket exists but nobody listens: the agent died without removing it.
    #[error("no agent is listening on {socket} (stale socket; the agent stopped or crashed)")]
    Stale {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// Another connection failure.
    #[error("cannot connect to {socket}")]
    Connect {
        /// The socket path tried.
        socket: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The network API's address cannot be reached.
    #[error("cannot connect to {address}")]
    RemoteConnect {
        /// `host:port`.
        address: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake with the network API failed (the node key did not match, the
    /// server is not a plinth agent, ...).
    #[error("TLS handshake with {address} failed")]
    Tls {
        /// `host:port`.
        address: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("request {method} {path} failed")]
    Http {
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built or its body encoded.
    #[error("cannot build request {path}: {message}")]
    Request {
        /// The path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The agent answered with an error status.
    #[error("the agent refused {path}: {status}: {message}")]
    Api {
        /// The path.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// The agent's error message.
        message: String,
    },
    /// The agent's answer was not the expected JSON.
    #[error("unexpected answer from the agent for {path}")]
    Decode {
        /// The path.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of the admin API (or, [`AdminClient::remote`], of the network API).
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
    remote: Option<Arc<RemoteTarget>>,
}

impl AdminClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            remote: None,
        }
    }

    /// A client of the network API at `target`.
    pub fn remote(target: RemoteTarget) -> Self {
        Self {
            socket: PathBuf::from(&target.authority),
            remote: Some(Arc::new(target)),
        }
    }

    /// The network API this client talks to, if it is remote.
    pub fn remote_target(&self) -> Option<&RemoteTarget> {
        self.remote.as_deref()
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, path, None).await?;
        decode(path, &body)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|err| ClientError::Request {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let answer = self.request(Method::POST, path, Some(bytes)).await?;
        decode(path, &answer)
    }

    /// `DELETE path`, decoding a JSON answer.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::DELETE, path, None).await?;
        decode(path, &body)
    }

    /// Sends one request and returns the body of a 2xx answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let response = self.send(method.clone(), path, body).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                method,
                path: path.to_owned(),
                source,
            })?
            .to_bytes();
        Ok(bytes)
    }

    /// Sends one request and returns a 2xx answer with its body still to be read (for
    /// streamed answers such as a followed log).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let mut connection = self.connect_for(&method, path).await?;
        let response = connection.send_request(method.clone(), path, body).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        // `{"error": ...}`, with the policy's `reason` when a policy refused.
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| {
                let error = value.get("error")?.as_str()?.to_owned();
                Some(
                    match value.get("reason").and_then(serde_json::Value::as_str) {
                        Some(reason) => format!("{error}: {reason}"),
                        None => error,
                    },
                )
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api {
            path: path.to_owned(),
            status,
            message,
        })
    }

    /// A connection that can carry several requests in turn (HTTP/1.1 keep-alive), for
    /// load tests.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        self.connect_for(&Method::GET, "/").await
    }

    async fn connect_for(&self, method: &Method, path: &str) -> Result<Connection, ClientError> {
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        match &self.remote {
            None => {
                let stream = UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| self.connect_error(source))?;
                Ok(Connection {
                    sender: open(stream).await.map_err(http)?,
                    host: "plinth-agent".to_owned(),
                })
            }
            Some(remote) => {
                let address = remote.authority.clone();
                let tcp = TcpStream::connect(&address).await.map_err(|source| {
                    ClientError::RemoteConnect {
                        address: address.clone(),
                        source,
                    }
                })?;
                let _ = tcp.set_nodelay(true);
                let name = rustls::pki_types::ServerName::try_from(remote.host().to_owned())
                    .map_err(|err| ClientError::Request {
                        path: path.to_owned(),
                        message: format!("{}: {err}", remote.host()),
                    })?;
                let tls = tokio_rustls::TlsConnector::from(remote.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        address: address.clone(),
                        source,
                    })?;
                Ok(Connection {
                    sender: open(tls).await.map_err(http)?,
                    host: address,
                })
            }
        }
    }

    fn connect_error(&self, source: io::Error) -> ClientError {
        let socket = self.socket.clone();
        match source.kind() {
            io::ErrorKind::NotFound => ClientError::NotRunning { socket },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
            io::ErrorKind::ConnectionRefused => ClientError::Stale { socket },
            _ => ClientError::Connect { socket, source },
        }
    }
}

/// An open connection to the agent.
#[derive(Debug)]
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// Sends one request on this connection (a JSON body when one is given); answers
    /// the response with its body still to be read.
    async fn send_request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        self.sender.ready().await.map_err(http)?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|err| ClientError::Request {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
        self.sender.send_request(request).await.map_err(http)
    }

    /// Sends one JSON request on this connection; answers the status and the body.
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.send_request(method.clone(), path, Some(body)).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                method,
                path: path.to_owned(),
                source,
            })?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// An HTTP/1.1 connection over `io`, driven in its own task.
async fn open<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        path: path.to_owned(),
        source,
    })
}
