//! A small HTTP/1.1 client for the admin API over its Unix socket, used by `plinthctl`.

use std::io;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

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

/// A client of the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
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
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.connect_error(source))?;
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, "plinth-agent");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|err| ClientError::Request {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api {
            path: path.to_owned(),
            status,
            message,
        })
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

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        path: path.to_owned(),
        source,
    })
}
