//! The agent's side of the privileged runner (`plinth-runner`, see DESIGN.md
//! "Privileges" and docs/packaging.md): the request and answer types of its
//! Unix socket, and [`RunnerClient`], which the engine uses instead of
//! spawning supervisors and running the OCI runtime itself when
//! `[jobs] runner_socket` is set.
//!
//! The protocol is one JSON request per connection, answered by one JSON
//! line; the runner checks the peer's credentials and re-validates every
//! request, so nothing here is trusted by it. [`RunnerClient`] implements
//! [`OciRuntime`] for what engine recovery needs (`state`, `kill`, `delete`);
//! `run_detached` belongs to the supervisor, which the runner owns.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{ContainerState, DetachedRun, KillSignal, OciRuntime, RuntimeError};

/// The largest request or answer either side reads, in bytes.
pub const MAX_MESSAGE_BYTES: u64 = 64 * 1024;

/// How long the client waits for the runner's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the runner client.
#[derive(Debug, thiserror::Error)]
pub enum RunnerClientError {
    /// The socket could not be reached or the exchange failed.
    #[error("cannot talk to plinth-runner on {socket}")]
    Io {
        /// The runner's socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The answer was not the runner's JSON.
    #[error("plinth-runner on {socket} sent an answer that does not parse")]
    Parse {
        /// The runner's socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The runner refused or failed the request; its reason.
    #[error("plinth-runner refused {op}: {reason}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// The runner's reason (also in its log).
        reason: String,
    },
}

/// Signals the runner forwards to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunnerSignal {
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
}

impl From<KillSignal> for RunnerSignal {
    fn from(signal: KillSignal) -> Self {
        match signal {
            KillSignal::Term => RunnerSignal::Term,
            KillSignal::Kill => RunnerSignal::Kill,
        }
    }
}

impl From<RunnerSignal> for KillSignal {
    fn from(signal: RunnerSignal) -> Self {
        match signal {
            RunnerSignal::Term => KillSignal::Term,
            RunnerSignal::Kill => KillSignal::Kill,
        }
    }
}

/// A request to the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunnerRequest {
    /// Validate the prepared job in `job_dir` and start its supervisor.
    Start {
        /// The job directory (under the runner's state directory).
        job_dir: PathBuf,
    },
    /// `state` of a job's container.
    State {
        /// Container id (`plinth-<job id>`).
        container_id: String,
    },
    /// `kill` a job's container.
    Kill {
        /// Container id.
        container_id: String,
        /// Signal.
        signal: RunnerSignal,
        /// Signal every process of the container.
        all: bool,
    },
    /// `delete --force` a job's container.
    Delete {
        /// Container id.
        container_id: String,
    },
    /// Remove an ended job's directory (its outputs may belong to the job's user).
    Remove {
        /// The job directory.
        job_dir: PathBuf,
    },
}

impl RunnerRequest {
    /// The operation's name, for logs and errors.
    pub fn op(&self) -> &'static str {
        match self {
            RunnerRequest::Start { .. } => "start",
            RunnerRequest::State { .. } => "state",
            RunnerRequest::Kill { .. } => "kill",
            RunnerRequest::Delete { .. } => "delete",
            RunnerRequest::Remove { .. } => "remove",
        }
    }
}

/// The container state in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerContainerState {
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Host pid of the container's init.
    pub pid: i32,
}

/// The runner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerAnswer {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not (refusals name the field and value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `state`: the container's state, `None` when the runtime does not know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunnerContainerState>,
}

impl RunnerAnswer {
    /// A success without a state.
    pub fn done() -> RunnerAnswer {
        RunnerAnswer {
            ok: true,
            error: None,
            state: None,
        }
    }

    /// A refusal or failure.
    pub fn refused(reason: String) -> RunnerAnswer {
        RunnerAnswer {
            ok: false,
            error: Some(reason),
            state: None,
        }
    }
}

/// A client of the runner's socket.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    socket: PathBuf,
}

impl RunnerClient {
    /// A client of the runner listening on `socket`.
    pub fn new(socket: &Path) -> RunnerClient {
        RunnerClient {
            socket: socket.to_path_buf(),
        }
    }

    /// The runner's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and reads the answer.
    pub fn call(&self, request: &RunnerRequest) -> Result<RunnerAnswer, RunnerClientError> {
        let io_err = |source| RunnerClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(io_err)?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(io_err)?;
        let mut bytes = serde_json::to_vec(request).map_err(|source| RunnerClientError::Parse {
            socket: self.socket.clone(),
            source,
        })?;
        bytes.push(b'\n');
        let written = stream
            .write_all(&bytes)
            .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_MESSAGE_BYTES)).read_line(&mut line);
        // A runner that refuses the peer answers without reading the request, so a
        // failed write (EPIPE) may still have a refusal to read: prefer it.
        match (written, read) {
            (_, Ok(n)) if n > 0 => {}
            (Err(err), _) | (Ok(()), Err(err)) => return Err(io_err(err)),
            (Ok(()), Ok(_)) => {}
        }
        let answer: RunnerAnswer =
            serde_json::from_str(&line).map_err(|source| RunnerClientError::Parse {
                socket: self.socket.clone(),
                source,
            })?;
        if answer.ok {
            Ok(answer)
        } else {
            Err(RunnerClientError::Refused {
                op: request.op(),
                reason: answer.error.unwrap_or_else(|| "no reason given".to_owned()),
            })
        }
    }

    /// Asks the runner to validate and start the prepared job in `job_dir`.
    pub fn start(&self, job_dir: &Path) -> Result<(), RunnerClientError> {
        self.call(&RunnerRequest::Start {
            job_dir: job_dir.to_path_buf(),
        })
        .map(|_| ())
    }

    /// Asks the runner to remove an ended job's directory.
    pub fn remove(&self, job_dir: &Path) -> Result<(), RunnerClientError> {
        self.call(&RunnerRequest::Remove {
            job_dir: job_dir.to_path_buf(),
        })
        .map(|_| ())
    }

    fn runtime_error(
        &self,
        command: &'static str,
        id: &str,
        err: RunnerClientError,
    ) -> RuntimeError {
        RuntimeError::Failed {
            binary: self.socket.clone(),
            command,
            id: id.to_owned(),
            status: "refused".to_owned(),
            stderr: plinth_toolbox::error_chain(&err),
        }
    }
}

impl OciRuntime for RunnerClient {
    fn run_detached(&self, request: DetachedRun<'_>) -> Result<(), RuntimeError> {
        // Supervisors run in the runner; the agent never starts a container itself.
        Err(RuntimeError::Failed {
            binary: self.socket.clone(),
            command: "run",
            id: request.id.to_owned(),
            status: "unsupported".to_owned(),
            stderr: "containers are started by plinth-runner's supervisors".to_owned(),
        })
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let answer = self
            .call(&RunnerRequest::State {
                container_id: id.to_owned(),
            })
            .map_err(|err| self.runtime_error("state", id, err))?;
        Ok(answer.state.map(|state| ContainerState {
            status: state.status,
            pid: state.pid,
        }))
    }

    fn kill(&self, id: &str, signal: KillSignal, all: bool) -> Result<(), RuntimeError> {
        self.call(&RunnerRequest::Kill {
            container_id: id.to_owned(),
            signal: signal.into(),
            all,
        })
        .map(|_| ())
        .map_err(|err| self.runtime_error("kill", id, err))
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(&RunnerRequest::Delete {
            container_id: id.to_owned(),
        })
        .map(|_| ())
        .map_err(|err| self.runtime_error("delete", id, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let request = RunnerRequest::Kill {
            container_id: "plinth-j1".into(),
            signal: RunnerSignal::Term,
            all: true,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"op":"kill","container_id":"plinth-j1","signal":"TERM","all":true}"#
        );
        assert_eq!(
            serde_json::from_str::<RunnerRequest>(&text).unwrap(),
            request
        );
        let extra = r#"{"op":"start","job_dir":"/x","privileged":true}"#;
        assert!(serde_json::from_str::<RunnerRequest>(extra).is_err());
    }

    #[test]
    fn a_missing_runner_is_an_io_error_naming_the_socket() {
        let client = RunnerClient::new(Path::new("/nonexistent/plinth-runner.sock"));
        let err = client
            .start(Path::new("/var/lib/plinth/jobs/j1"))
            .unwrap_err();
        assert!(matches!(err, RunnerClientError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/plinth-runner.sock"));
    }
}
