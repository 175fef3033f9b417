//! `plinth-runner`: the privileged helper of the plinth agent (see the
//! library's documentation and docs/packaging.md).
//!
//! Exit codes: 0 done, 1 a failure at run time, 78 invalid configuration
//! (the unit's `RestartPreventExitStatus`).

use clap::Parser;
use plinth_runner::cli::{RunnerCli, RunnerCommand};
use plinth_runner::config::RunnerConfig;
use plinth_runner::server::{Runner, ServerError};
use std::process::ExitCode;
use tracing_subscriber::prelude::*;

/// Invalid configuration (sysexits `EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLINTH_RUNNER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => {
            let _ = registry.with(layer).try_init();
        }
        None => {
            let _ = registry
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .try_init();
        }
    }
}

fn serve(config: RunnerConfig) -> Result<(), ServerError> {
    let runner = Runner::new(config)?;
    let listener = runner.bind()?;
    tracing::info!(socket = %runner.config().socket.display(), "plinth-runner is ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = interval / 2;
        std::thread::spawn(move || {
            loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                std::thread::sleep(every);
            }
        });
    }
    runner.serve(&listener);
    Ok(())
}

fn main() -> ExitCode {
    let cli = RunnerCli::parse();
    init_logging();
    match cli.command {
        RunnerCommand::Supervise { bundle_dir } => match plinth_runner::supervise::run(&bundle_dir)
        {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!(
                    "plinth-runner supervise: {}",
                    plinth_toolbox::error_chain(&err)
                );
                ExitCode::FAILURE
            }
        },
        RunnerCommand::CheckConfig | RunnerCommand::Run => {
            let config = match RunnerConfig::load(&cli.config) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("plinth-runner: {}", plinth_toolbox::error_chain(&err));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if matches!(cli.command, RunnerCommand::CheckConfig) {
                println!("{}: valid", cli.config.display());
                return ExitCode::SUCCESS;
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %plinth_toolbox::error_chain(&err), "plinth-runner stopped");
                    eprintln!("plinth-runner: {}", plinth_toolbox::error_chain(&err));
                    if matches!(err, ServerError::Config(_)) {
                        ExitCode::from(EXIT_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}
