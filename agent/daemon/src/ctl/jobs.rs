//! `plinthctl jobs submit|list|show|logs|cancel` and `plinthctl receipts export`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;

use crate::client::AdminClient;
use crate::jobs::{JobInfo, SubmitAnswer, SubmitRequest};

use super::CtlError;

/// `plinthctl jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job spec (plinth-job/1 JSON file; `-` for stdin).
    Submit {
        /// The spec file.
        file: PathBuf,
        /// Tenant the job runs for.
        #[arg(long, default_value = "local")]
        tenant: String,
        /// Lease id (default: the job is its own lease).
        #[arg(long, default_value = "local")]
        lease: String,
        /// CDI device assigned to the job (repeat for each GPU), e.g. nvidia.com/gpu=0.
        #[arg(long = "gpu", value_name = "DEVICE")]
        gpus: Vec<String>,
        /// Wait until the job ends, showing its state.
        #[arg(long)]
        wait: bool,
    },
    /// List jobs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Show {
        /// Job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's log (the last MiB).
    Logs {
        /// Job id.
        id: String,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing new output until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Follow a job until it ends: its state changes, elapsed time and final usage.
    Watch {
        /// Job id.
        id: String,
    },
    /// Cancel a job (SIGTERM, grace period, SIGKILL).
    Cancel {
        /// Job id.
        id: String,
    },
}

/// `plinthctl receipts` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Export the receipt ledger as JSON lines (check it with `plinth-verify receipts`).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn output_error(what: &str) -> impl FnOnce(std::io::Error) -> CtlError + '_ {
    move |source| CtlError::Output {
        what: what.to_owned(),
        source,
    }
}

/// Runs a `plinthctl jobs` command.
pub async fn run(client: &AdminClient, command: JobsCommand) -> Result<(), CtlError> {
    match command {
        JobsCommand::Submit {
            file,
            tenant,
            lease,
            gpus,
            wait,
        } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(output_error("standard input"))?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(|source| CtlError::Output {
                    what: format!("job spec {}", file.display()),
                    source,
                })?
            };
            let spec: serde_json::Value = serde_json::from_str(&text)?;
            let request = SubmitRequest {
                spec,
                tenant,
                lease_id: lease,
                gpu_devices: gpus,
            };
            let answer: SubmitAnswer = client.post("/v1/jobs", &request).await?;
            println!("{}", answer.id);
            if wait {
                watch(client, &answer.id).await?;
            }
            Ok(())
        }
        JobsCommand::List { json } => {
            let jobs: Vec<JobInfo> = client.get("/v1/jobs").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                let mut text = format!(
                    "{:<18} {:<10} {:<12} {:<12} REASON\n",
                    "ID", "STATE", "TENANT", "LEASE"
                );
                for job in &jobs {
                    let _ = writeln!(
                        text,
                        "{:<18} {:<10} {:<12} {:<12} {}",
                        job.id,
                        job.state,
                        job.tenant,
                        job.lease_id,
                        job.reason.as_deref().unwrap_or("")
                    );
                }
                print!("{text}");
            }
            Ok(())
        }
        JobsCommand::Show { id, json } => {
            let job: JobInfo = client.get(&format!("/v1/jobs/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", render(&job));
            }
            Ok(())
        }
        JobsCommand::Logs { id, stderr, follow } => {
            let stream = if stderr { "stderr" } else { "stdout" };
            let path = format!("/v1/jobs/{id}/logs?stream={stream}&follow={follow}");
            let mut body = client.send(Method::GET, &path, None).await?.into_body();
            let mut stdout = std::io::stdout();
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                let frame = frame.map_err(|source| crate::client::ClientError::Http {
                    method: Method::GET,
                    path: path.clone(),
                    source,
                })?;
                if let Some(data) = frame.data_ref() {
                    stdout.write_all(data).map_err(output_error("the log"))?;
                    stdout.flush().map_err(output_error("the log"))?;
                }
            }
            Ok(())
        }
        JobsCommand::Watch { id } => watch(client, &id).await,
        JobsCommand::Cancel { id } => {
            let answer: SubmitAnswer = client.delete(&format!("/v1/jobs/{id}")).await?;
            println!("cancellation requested for {}", answer.id);
            Ok(())
        }
    }
}

/// Follows job `id` until it ends: each state change on its own line (with the
/// image import's progress while preparing), a live elapsed-time line on a terminal, and
/// the end: exit code, wall and CPU time, peak memory.
pub async fn watch(client: &AdminClient, id: &str) -> Result<(), CtlError> {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut last_shown = String::new();
    loop {
        let job: JobInfo = client.get(&format!("/v1/jobs/{id}")).await?;
        let shown = match &job.reason {
            Some(reason) => format!("{} ({reason})", job.state),
            None => job.state.to_string(),
        };
        if shown != last_shown {
            if terminal {
                eprint!("\r\x1b[K");
            }
            eprintln!("{id}: {shown}");
            last_shown = shown;
        } else if terminal {
            eprint!(
                "\r\x1b[K{id}: {} for {:.1} s",
                job.state,
                started.elapsed().as_secs_f64()
            );
        }
        if job.state.is_terminal() {
            if terminal {
                eprint!("\r\x1b[K");
            }
            let mut end = format!("{id}: ended {}", job.state);
            if let Some(code) = job.exit_code {
                let _ = write!(end, ", exit code {code}");
            }
            if let Some(usage) = &job.usage {
                let _ = write!(
                    end,
                    ", wall {:.1} s, cpu {:.2} s, peak memory {} KiB",
                    usage.wall_ms as f64 / 1000.0,
                    usage.cpu_ns as f64 / 1e9,
                    usage.peak_memory_bytes / 1024
                );
            }
            eprintln!("{end}");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs a `plinthctl receipts` command.
pub async fn run_receipts(client: &AdminClient, command: ReceiptsCommand) -> Result<(), CtlError> {
    match command {
        ReceiptsCommand::Export { out } => {
            let bytes = client.request(Method::GET, "/v1/receipts", None).await?;
            match out {
                Some(path) => std::fs::write(&path, &bytes).map_err(|source| CtlError::Output {
                    what: path.display().to_string(),
                    source,
                })?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .map_err(output_error("the ledger"))?,
            }
            Ok(())
        }
    }
}

/// Renders a job for people.
pub fn render(job: &JobInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "job {}", job.id);
    let _ = writeln!(text, "  state      {}", job.state);
    if let Some(reason) = &job.reason {
        let _ = writeln!(text, "  reason     {reason}");
    }
    if let Some(code) = job.exit_code {
        let _ = writeln!(text, "  exit code  {code}");
    }
    if let Some(signal) = job.signal {
        let _ = writeln!(text, "  signal     {signal}");
    }
    let _ = writeln!(text, "  tenant     {} (lease {})", job.tenant, job.lease_id);
    let _ = writeln!(text, "  image      {}", job.spec.image.path.display());
    let _ = writeln!(text, "  command    {:?}", job.spec.command);
    if !job.gpu_devices.is_empty() {
        let _ = writeln!(text, "  gpus       {}", job.gpu_devices.join(", "));
    }
    if let Some(usage) = &job.usage {
        let _ = writeln!(
            text,
            "  usage      wall {} ms, cpu {} ms, peak memory {} KiB, peak pids {}",
            usage.wall_ms,
            usage.cpu_ns / 1_000_000,
            usage.peak_memory_bytes / 1024,
            usage.peak_pids
        );
    }
    text
}
