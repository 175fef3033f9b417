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
pub mod market;
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
    /// `--remote`, `--identity` or `--node-key` is wrong.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// `--remote` needs `--identity`.
    #[error("--remote needs --identity FILE (a client identity: `plinthctl identity new`)")]
    NoIdentity,
}

impl CtlError {
    /// Exit code: 69 (unavailable) when the agent cannot be reached, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Client(
                ClientError::NotRunning { .. }
                | ClientError::Stale { .. }
                | ClientError::Connect { .. }
                | ClientError::RemoteConnect { .. },
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

/// The client of `cli`: the network API with `--remote`, else the admin socket.
pub fn client(cli: &CtlCli) -> Result<AdminClient, CtlError> {
    let Some(url) = &cli.remote else {
        return Ok(AdminClient::new(&socket_path(cli)));
    };
    let path = cli.identity.as_ref().ok_or(CtlError::NoIdentity)?;
    let identity = crate::remote::ClientIdentity::load(path)?;
    let target = crate::remote::RemoteTarget::new(url, Some(&identity), cli.node_key.as_deref())?;
    Ok(AdminClient::remote(target))
}

/// Runs one `plinthctl` command.
pub async fn run(cli: CtlCli) -> Result<(), CtlError> {
    if let CtlCommand::Identity { command } = cli.command {
        return market::identity(command);
    }
    let client = client(&cli)?;
    let result = dispatch(&client, cli.command).await;
    if let Some(remote) = client.remote_target()
        && cli.node_key.is_none()
        && let Some(key) = remote.node_key()
    {
        eprintln!(
            "plinthctl: {} proved node key {key} (pass --node-key to require it)",
            remote.authority
        );
    }
    result
}

async fn dispatch(client: &AdminClient, command: CtlCommand) -> Result<(), CtlError> {
    match command {
        CtlCommand::Status(output) => status::run(client, output).await,
        CtlCommand::Jobs { command } => jobs::run(client, command).await,
        CtlCommand::Receipts { command } => jobs::run_receipts(client, command).await,
        CtlCommand::Plugin { command } => plugin::dispatch(client, command).await,
        CtlCommand::Images { command } => images::run(client, command).await,
        CtlCommand::Attest(args) => attest::run(client, args).await,
        CtlCommand::Gpus(args) => gpus::run(client, args).await,
        CtlCommand::Challenge { command } => gpus::run_challenge(client, command).await,
        CtlCommand::Liveness { command } => liveness::run(client, command).await,
        CtlCommand::Net { command } => net::run(client, command).await,
        CtlCommand::Metrics => net::metrics(client).await,
        CtlCommand::Quote(args) => market::quote(client, args).await,
        CtlCommand::Lease(args) => market::lease(client, args).await,
        CtlCommand::Reports(args) => market::reports(client, args).await,
        CtlCommand::BenchQuotes(args) => market::bench_quotes(client, args).await,
        CtlCommand::Identity { command } => market::identity(command),
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
