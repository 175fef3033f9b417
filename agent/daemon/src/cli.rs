//! Command-line definitions of `plinth-agent` and `plinthctl` (clap), kept in the library
//! so that shell completions and man pages can be generated for both.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// plinth-agent: the plinth provider agent daemon.
#[derive(Debug, Parser)]
#[command(name = "plinth-agent", version, about, long_about = None)]
pub struct AgentCli {
    /// What to do.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// `plinth-agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent in the foreground (as systemd does).
    Run(ConfigArg),
    /// Load and check the configuration, print the merged result, and exit.
    CheckConfig(ConfigArg),
    /// Supervise one job's container (started by the agent itself).
    #[command(hide = true)]
    JobShim {
        /// The job directory.
        job_dir: PathBuf,
    },
}

/// The `--config` option shared by subcommands.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Read this file (and FILE.d/*.toml) instead of /usr/lib/plinth/agent.toml,
    /// /etc/plinth/agent.toml and /etc/plinth/agent.toml.d/.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// plinthctl: administer the local plinth agent, or (`--remote`) drive a host's network
/// API as a marketplace, checker or remote operator.
#[derive(Debug, Parser)]
#[command(name = "plinthctl", version, about, long_about = None)]
pub struct CtlCli {
    /// Admin socket of the agent (default: from the agent's configuration).
    #[arg(long, global = true, env = "PLINTH_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Talk to a host's network API (`https://HOST:PORT`) instead of the local socket.
    #[arg(long, global = true, env = "PLINTH_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    /// The client identity for --remote (PEM: certificate and key; `plinthctl identity new`).
    #[arg(long, global = true, env = "PLINTH_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The node key (hex) the --remote host must prove; without it any node key is
    /// accepted and printed.
    #[arg(long, global = true, env = "PLINTH_NODE_KEY", value_name = "HEX")]
    pub node_key: Option<String>,
    /// Agent configuration to read the socket path from.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `plinthctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show the agent's status.
    Status(OutputArgs),
    /// Submit, list, show, follow and cancel jobs.
    Jobs {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::jobs::JobsCommand,
    },
    /// The liveness ledger: export it, or probe it as a checker does.
    Liveness {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::liveness::LivenessCommand,
    },
    /// Print the agent's metrics (Prometheus text: network quality, liveness ledger).
    Metrics,
    /// Network quality: measure round-trip time and throughput to configured peers.
    Net {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::net::NetCommand,
    },
    /// Export the usage receipt ledger.
    Receipts {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::jobs::ReceiptsCommand,
    },
    /// Policy plugins: author tools (new, wit, keygen, sign, inspect, test, bench) and the
    /// agent's plugins (install, list, remove, reload).
    Plugin {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::plugin::PluginCommand,
    },
    /// The image cache and registry pulls (list, pull, remove, prune).
    Images {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::images::ImagesCommand,
    },
    /// Attestation: a signed evidence bundle for a verifier's nonce (`--nonce HEX`),
    /// and AK enrollment (`enroll`, `activate`).
    Attest(crate::ctl::attest::AttestArgs),
    /// GPUs: inventory, health and drain state; `drain|undrain INDEX --reason TEXT`,
    /// `burn-in INDEX`.
    Gpus(crate::ctl::gpus::GpusArgs),
    /// The capacity challenge: `run --n N [--device cpu|gpu:IDX] -o transcript.json`.
    Challenge {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::gpus::ChallengeCommand,
    },
    /// Ask the host for a signed quote (the pricing policy prices it).
    Quote(crate::ctl::market::QuoteArgs),
    /// Lease a quote: the scheduling policy admits the job and assigns GPUs; it starts.
    Lease(crate::ctl::market::LeaseArgs),
    /// The reporting policy's report of a period.
    Reports(crate::ctl::market::ReportsArgs),
    /// Load-test a host's quotes: COUNT quotes at RATE a second over keep-alive
    /// connections; prints throughput and latency percentiles.
    BenchQuotes(crate::ctl::market::BenchQuotesArgs),
    /// Client identities for --remote.
    Identity {
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::market::IdentityCommand,
    },
    /// Print shell completions for plinthctl.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for plinthctl and plinth-agent into a directory.
    Man {
        /// Output directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
}

/// Output format options.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Writes man pages for plinthctl, plinth-agent and plinth-verify (and each subcommand)
/// into `dir`.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for command in [CtlCli::command(), AgentCli::command(), verify_command()] {
        write_man_tree(dir, &command, &mut written)?;
    }
    Ok(written)
}

/// The command-line definition of `plinth-verify` (the auditor's tool, in
/// `plinth-attestation`), for its man pages and shell completions.
pub fn verify_command() -> clap::Command {
    use clap::CommandFactory;
    plinth_attestation::cli::Cli::command()
}

fn write_man_tree(
    dir: &std::path::Path,
    command: &clap::Command,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let command = command.clone();
    let name = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .to_owned();
    let mut buffer = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut buffer)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buffer)?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub = sub
            .clone()
            .display_name(format!("{name}-{}", sub.get_name()));
        write_man_tree(dir, &sub, written)?;
    }
    Ok(())
}
