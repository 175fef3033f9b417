//! The command line of `plinth-runner` (in the library so that man pages and
//! completions are generated from it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// plinth-runner: starts re-validated job containers for the unprivileged plinth agent.
#[derive(Debug, Parser)]
#[command(name = "plinth-runner", version, about, long_about = None)]
pub struct RunnerCli {
    /// The runner's configuration file.
    #[arg(long, global = true, env = "PLINTH_RUNNER_CONFIG", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: RunnerCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Serve the runner's socket (what the systemd unit runs).
    Run,
    /// Check the configuration and exit (0: valid, 78: invalid).
    CheckConfig,
    /// Supervise one job (started by the runner itself).
    #[command(hide = true)]
    Supervise {
        /// The validated bundle directory with the runner's order.
        bundle_dir: PathBuf,
    },
}
