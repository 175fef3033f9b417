//! `plinthctl liveness export|probe`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use plinth_attestation::liveness::ProbeAnswer;

use super::CtlError;
use crate::api::liveness::ProbeRequest;
use crate::client::AdminClient;

/// `plinthctl liveness` subcommands.
#[derive(Debug, Subcommand)]
pub enum LivenessCommand {
    /// Export the liveness ledger as JSON lines (check it with `plinth-verify liveness`).
    Export {
        /// Only entries written at or after T (RFC 3339 or Unix ms).
        #[arg(long, value_name = "T")]
        from: Option<String>,
        /// Only entries written at or before T (RFC 3339 or Unix ms).
        #[arg(long, value_name = "T")]
        to: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Probe the agent as a checker does: print the signed answer (one JSON line, for
    /// `plinth-verify liveness --probes`).
    Probe {
        /// The nonce (hex, 16 to 64 bytes); default: 32 random bytes.
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
    },
}

/// Errors of `plinthctl liveness` arguments.
#[derive(Debug, thiserror::Error)]
pub enum LivenessCtlError {
    /// A time argument is not a time.
    #[error("--{name} {value:?} is neither Unix milliseconds nor RFC 3339")]
    Time {
        /// The option.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// No randomness for a nonce.
    #[error("cannot draw a random nonce")]
    Random,
}

fn time_ms(name: &'static str, value: &str) -> Result<u64, LivenessCtlError> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| LivenessCtlError::Time {
            name,
            value: value.to_owned(),
        })
}

/// Runs a `plinthctl liveness` command.
pub async fn run(client: &AdminClient, command: LivenessCommand) -> Result<(), CtlError> {
    match command {
        LivenessCommand::Export { from, to, out } => {
            let mut query = Vec::new();
            if let Some(from) = &from {
                query.push(format!("from={}", time_ms("from", from)?));
            }
            if let Some(to) = &to {
                query.push(format!("to={}", time_ms("to", to)?));
            }
            let path = if query.is_empty() {
                "/v1/liveness/export".to_owned()
            } else {
                format!("/v1/liveness/export?{}", query.join("&"))
            };
            let bytes = client.request(Method::GET, &path, None).await?;
            match out {
                Some(path) => std::fs::write(&path, &bytes).map_err(|source| CtlError::Output {
                    what: path.display().to_string(),
                    source,
                })?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|source| CtlError::Output {
                        what: "the ledger".to_owned(),
                        source,
                    })?,
            }
            Ok(())
        }
        LivenessCommand::Probe { nonce } => {
            let nonce = match nonce {
                Some(nonce) => nonce.to_ascii_lowercase(),
                None => {
                    let mut bytes = [0u8; 32];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                        .map_err(|_| LivenessCtlError::Random)?;
                    hex::encode(bytes)
                }
            };
            let answer: ProbeAnswer = client
                .post("/v1/liveness/probe", &ProbeRequest { nonce })
                .await?;
            println!("{}", serde_json::to_string(&answer)?);
            Ok(())
        }
    }
}
