//! `plinthctl`: the admin CLI's commands, one submodule per area.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::{CtlCli, CtlCommand};
use crate::client::{AdminClient, ClientError};
use crate::config::{self, ConfigSources};

pub mod attest;
pub mod gpus;
pub mod images;
pub mod jobs;
pub mod liveness;
pub mod net;
pub mod plugin;
pub mod status;

/// Errors of `plinthctl` commands.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing output failed.
    #[error("cannot write {what}")]
    Output {
        /// What was being written.
        what: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// JSON output could not be produced.
    #[error("cannot render JSON")]
    Json(#[from] serde_json::Error),
    /// A `plinthctl plugin` tool failed.
    #[error(transparent)]
    Plugin(#[from] plugin::PluginCtlError),
    /// A `plinthctl attest` argument or file is wrong.
    #[error(transparent)]
    Attest(#[from] attest::AttestCtlError),
    /// A `plinthctl gpus` or `plinthctl challenge` step failed.
    #[error(transparent)]
    Gpus(#[from] gpus::GpusCtlError),
    /// A `plinthctl liveness` argument is wrong.
    #[error(transparent)]
    Liveness(#[from] liveness::LivenessCtlError),
}

impl CtlError {
    /// Exit code: 69 (unavailable) when the agent cannot be reached, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Client(
                ClientError::NotRunning { .. }
                | ClientError::Stale { .. }
                | ClientError::Connect { .. },
            ) => 69,
            Self::Client(ClientError::PermissionDenied { .. }) => 77,
            _ => 1,
        }
    }
}

/// Finds the admin socket: `--socket`/`PLINTH_SOCKET`, else the agent's configuration,
/// else the built-in default.
pub fn socket_path(cli: &CtlCli) -> PathBuf {
    if let Some(socket) = &cli.socket {
        return socket.clone();
    }
    let sources = ConfigSources::from_arg(cli.config.as_deref());
    match config::load(&sources) {
        Ok(loaded) => loaded.config.socket_path(),
        Err(_) => config::AgentConfig::default().socket_path(),
    }
}

/// Runs one `plinthctl` command.
pub async fn run(cli: CtlCli) -> Result<(), CtlError> {
    let client = AdminClient::new(&socket_path(&cli));
    match cli.command {
        CtlCommand::Status(output) => status::run(&client, output).await,
        CtlCommand::Jobs { command } => jobs::run(&client, command).await,
        CtlCommand::Receipts { command } => jobs::run_receipts(&client, command).await,
        CtlCommand::Plugin { command } => plugin::dispatch(&client, command).await,
        CtlCommand::Images { command } => images::run(&client, command).await,
        CtlCommand::Attest(args) => attest::run(&client, args).await,
        CtlCommand::Gpus(args) => gpus::run(&client, args).await,
        CtlCommand::Challenge { command } => gpus::run_challenge(&client, command).await,
        CtlCommand::Liveness { command } => liveness::run(&client, command).await,
        CtlCommand::Net { command } => net::run(&client, command).await,
        CtlCommand::Metrics => net::metrics(&client).await,
        CtlCommand::Completions { shell } => {
            let mut command = CtlCli::command();
            clap_complete::generate(shell, &mut command, "plinthctl", &mut std::io::stdout());
            Ok(())
        }
        CtlCommand::Man { out_dir } => {
            let written =
                crate::cli::write_man_pages(&out_dir).map_err(|source| CtlError::Output {
                    what: format!("man pages into {}", out_dir.display()),
                    source,
                })?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}
