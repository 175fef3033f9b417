//! `plinth-verify`: parse arguments, run the library, map to exit codes
//! (0 verified, 1 evidence rejected, 2 bad usage or unreadable input).

use std::process::ExitCode;

use clap::Parser as _;
use plinth_attestation::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(outcome) => {
            print!("{}", outcome.output);
            if outcome.verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("plinth-verify: {}", plinth_toolbox::error_chain(&err));
            ExitCode::from(2)
        }
    }
}
