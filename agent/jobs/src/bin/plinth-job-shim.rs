//! `plinth-job-shim JOB_DIR`: the per-job supervisor (see `plinth_jobs::shim`).
//!
//! Exit status: 0 when a result was recorded in the job directory, 1 when
//! not even that was possible, 2 on bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(job_dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: plinth-job-shim JOB_DIR");
        return ExitCode::from(2);
    };
    match plinth_jobs::shim::run(&PathBuf::from(job_dir)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("plinth-job-shim: {}", plinth_toolbox::error_chain(&err));
            ExitCode::from(1)
        }
    }
}
