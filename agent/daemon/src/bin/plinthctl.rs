//! `plinthctl`: the admin CLI of the local plinth agent.

use std::process::ExitCode;

use clap::Parser;
use plinth_agent::cli::CtlCli;
use plinth_agent::{ctl, error_chain};

fn main() -> ExitCode {
    let cli = CtlCli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("plinthctl: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("plinthctl: {}", error_chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
