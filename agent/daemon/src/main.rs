//! `plinth-agent`: parses arguments, loads configuration, starts the daemon, and maps
//! errors to exit codes systemd understands (see `plinth_agent::daemon::exit_code`).

use std::process::ExitCode;

use clap::Parser;
use plinth_agent::cli::{AgentCli, AgentCommand};
use plinth_agent::config::{self, ConfigSources};
use plinth_agent::daemon::{self, RunOptions, exit_code};
use plinth_agent::{error_chain, systemd};

fn main() -> ExitCode {
    let cli = AgentCli::parse();
    match cli.command {
        AgentCommand::JobShim { job_dir } => match plinth_jobs::shim::run(&job_dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("plinth-agent job-shim: {}", error_chain(&err));
                ExitCode::from(1)
            }
        },
        AgentCommand::CheckConfig(arg) => {
            match config::load(&ConfigSources::from_arg(arg.config.as_deref())) {
                Ok(loaded) => {
                    for warning in &loaded.warnings {
                        eprintln!("warning: {warning}");
                    }
                    print!("{loaded}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("plinth-agent: {}", error_chain(&err));
                    ExitCode::from(exit_code::CONFIG)
                }
            }
        }
        AgentCommand::Run(arg) => {
            let sources = ConfigSources::from_arg(arg.config.as_deref());
            let loaded = match config::load(&sources) {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("plinth-agent: invalid configuration: {}", error_chain(&err));
                    return ExitCode::from(exit_code::CONFIG);
                }
            };
            if let Err(err) = systemd::init_logging(
                loaded.config.agent.log_target,
                &loaded.config.agent.log_level,
            ) {
                eprintln!("plinth-agent: {}", error_chain(&err));
                return ExitCode::from(exit_code::TRANSIENT);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("plinth-agent")
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("plinth-agent: cannot start the async runtime: {err}");
                    return ExitCode::from(exit_code::TRANSIENT);
                }
            };
            match runtime.block_on(daemon::run(loaded, RunOptions { sources })) {
                Ok(()) => ExitCode::from(exit_code::OK),
                Err(err) => {
                    let chain = error_chain(&err);
                    tracing::error!(error = %chain, "plinth-agent failed");
                    eprintln!("plinth-agent: {chain}");
                    ExitCode::from(err.exit_code())
                }
            }
        }
    }
}
