//! `plinthctl gpus [--json]`, `gpus drain|undrain INDEX --reason TEXT`, and
//! `plinthctl challenge run`: the challenger's side of the capacity challenge played
//! against the local agent, the transcript saved for `plinth-verify challenge`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use plinth_attestation::challenge::{
    self, ChallengePolicy, Challenger, Commitment, DEFAULT_ROWS, OpenResponse,
};

use super::CtlError;
use crate::api::gpus::{DrainAnswer, DrainRequest};
use crate::client::AdminClient;
use crate::gpu::challenge::StartChallenge;
use crate::gpu::{GpuEntry, GpusReport};

/// Errors of `plinthctl gpus` and `plinthctl challenge`.
#[derive(Debug, thiserror::Error)]
pub enum GpusCtlError {
    /// The challenge could not be set up.
    #[error("cannot start the challenge")]
    Challenge(#[from] challenge::ChallengeError),
    /// The transcript did not verify.
    #[error("the transcript does not verify: {failed}")]
    Rejected {
        /// The failed checks.
        failed: String,
    },
}

/// Arguments of `plinthctl gpus`.
#[derive(Debug, Args)]
pub struct GpusArgs {
    /// Drain or undrain a GPU; without one, show every GPU.
    #[command(subcommand)]
    pub command: Option<GpusCommand>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `plinthctl gpus` subcommands.
#[derive(Debug, Subcommand)]
pub enum GpusCommand {
    /// Withdraw a GPU from scheduling and quotes (recorded).
    Drain {
        /// The GPU's index.
        index: u32,
        /// Why (recorded in the drain log).
        #[arg(long)]
        reason: String,
    },
    /// Run a burn-in (a capacity challenge on the GPU); a drained GPU that passes returns
    /// to service (recorded).
    BurnIn {
        /// The GPU's index.
        index: u32,
    },
    /// Return a drained GPU to service (recorded).
    Undrain {
        /// The GPU's index.
        index: u32,
        /// Why (recorded in the drain log).
        #[arg(long)]
        reason: String,
    },
}

/// `plinthctl challenge` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChallengeCommand {
    /// Play the challenger against the local agent and save the transcript.
    Run(ChallengeRunArgs),
}

/// Arguments of `plinthctl challenge run`.
#[derive(Debug, Args)]
pub struct ChallengeRunArgs {
    /// The size: A, B and C are N × N (a multiple of 64).
    #[arg(long, value_name = "N")]
    pub n: u32,
    /// The prover: `cpu` or `gpu:INDEX`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Rows of C to open.
    #[arg(long, default_value_t = DEFAULT_ROWS)]
    pub rows: u32,
    /// The deadline for the commitment, milliseconds.
    #[arg(long, default_value_t = 600_000)]
    pub deadline_ms: u64,
    /// Where to write the transcript.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs `plinthctl gpus`.
pub async fn run(client: &AdminClient, args: GpusArgs) -> Result<(), CtlError> {
    let (index, reason, action) = match args.command {
        None => {
            let report: GpusReport = client.get("/v1/gpus").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
            return Ok(());
        }
        Some(GpusCommand::BurnIn { index }) => {
            let transcript: challenge::Transcript = client
                .post(&format!("/v1/gpus/{index}/burn-in"), &serde_json::json!({}))
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&transcript)?);
            } else {
                println!(
                    "GPU {index}: burn-in passed (n = {}, {} ms); in service",
                    transcript.challenge.n, transcript.commitment.compute_ms
                );
            }
            return Ok(());
        }
        Some(GpusCommand::Drain { index, reason }) => (index, reason, "drain"),
        Some(GpusCommand::Undrain { index, reason }) => (index, reason, "undrain"),
    };
    let answer: DrainAnswer = client
        .post(
            &format!("/v1/gpus/{index}/{action}"),
            &DrainRequest { reason },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "GPU {index}: {}{}",
            if answer.drained {
                "drained"
            } else {
                "in service"
            },
            if answer.changed { "" } else { " (unchanged)" }
        );
    }
    Ok(())
}

fn render_entry(text: &mut String, entry: &GpuEntry) {
    let gpu = &entry.inventory;
    let state = match (&entry.drain, entry.lost) {
        (_, true) => "LOST".to_owned(),
        (Some(drain), false) => format!(
            "DRAINED by {} at {}: {}",
            drain.source.as_str(),
            drain.drained_at,
            drain.reason
        ),
        (None, false) => "in service".to_owned(),
    };
    let _ = writeln!(
        text,
        "GPU {} {} ({}, {} GiB) {}",
        gpu.index,
        gpu.name,
        gpu.architecture,
        gpu.memory_bytes >> 30,
        gpu.uuid
    );
    let _ = writeln!(text, "  state        {state}");
    let _ = writeln!(
        text,
        "  driver       {} (CUDA {}), VBIOS {}",
        gpu.driver_version, gpu.cuda_driver_version, gpu.vbios_version
    );
    let _ = writeln!(
        text,
        "  pci          {} numa {} nvlink peers {} mig {} ({} instances) cc {}",
        gpu.pci_bus_id,
        gpu.numa_node
            .map_or("-".to_owned(), |node| node.to_string()),
        gpu.nvlink_peers.len(),
        gpu.mig_mode,
        gpu.mig_instances.len(),
        gpu.cc_mode
    );
    let option =
        |value: Option<u32>, unit: &str| value.map_or("-".to_owned(), |v| format!("{v}{unit}"));
    match &entry.health {
        Some(health) => {
            let _ = writeln!(
                text,
                "  health       {} {} / {} sm {} mem {} util {}",
                option(health.temperature_c, "°C"),
                option(health.power_mw.map(|mw| mw / 1000), " W"),
                option(health.power_limit_mw.map(|mw| mw / 1000), " W"),
                option(health.sm_clock_mhz, " MHz"),
                option(health.memory_clock_mhz, " MHz"),
                option(health.sm_utilisation_pct, "%")
            );
            if !health.throttle_reasons.is_empty() {
                let _ = writeln!(
                    text,
                    "  throttle     {}",
                    health.throttle_reasons.join(", ")
                );
            }
            if let Some(ecc) = &health.ecc {
                let _ = writeln!(
                    text,
                    "  ecc          corrected {} uncorrected {} (lifetime {})",
                    ecc.volatile_corrected, ecc.volatile_uncorrected, ecc.aggregate_uncorrected
                );
            }
        }
        None => {
            let _ = writeln!(
                text,
                "  health       {}",
                entry.health_error.as_deref().unwrap_or("not read yet")
            );
        }
    }
    let counters = &entry.counters;
    if !counters.application_xids.is_empty() || !counters.other_xids.is_empty() {
        let _ = writeln!(
            text,
            "  xids         application {:?} other {:?}",
            counters.application_xids, counters.other_xids
        );
    }
    let _ = writeln!(
        text,
        "  cdi          {}",
        if entry.cdi_names.is_empty() {
            "-".to_owned()
        } else {
            entry.cdi_names.join(", ")
        }
    );
}

/// Renders the GPU report for people.
pub fn render(report: &GpusReport) -> String {
    let mut text = String::new();
    if let Some(reason) = &report.cpu_only {
        let _ = writeln!(text, "no GPU: this host runs CPU-only ({reason})");
        return text;
    }
    let _ = writeln!(
        text,
        "{} GPUs ({} healthy, {} drained), {}",
        report.summary.total,
        report.summary.healthy,
        report.summary.drained,
        report.driver.as_deref().unwrap_or("driver unknown")
    );
    for entry in &report.gpus {
        render_entry(&mut text, entry);
    }
    if let Some(hint) = &report.cdi_hint {
        let _ = writeln!(text, "note: {hint}");
    }
    text
}

/// Runs `plinthctl challenge`.
pub async fn run_challenge(
    client: &AdminClient,
    command: ChallengeCommand,
) -> Result<(), CtlError> {
    let ChallengeCommand::Run(args) = command;
    let challenger = Challenger::new(args.n, args.deadline_ms).map_err(GpusCtlError::Challenge)?;
    let start = StartChallenge {
        seed: challenger.request.seed,
        n: challenger.request.n,
        deadline_ms: challenger.request.deadline_ms,
        r_commitment: challenger.request.r_commitment,
        device: Some(args.device.clone()),
    };
    let started = Instant::now();
    let commitment: Commitment = client.post("/v1/challenges", &start).await?;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let open = challenger.open_request(args.rows);
    let response: OpenResponse = client
        .post(&format!("/v1/challenges/{}/open", commitment.id), &open)
        .await?;
    let transcript = challenger.transcript(commitment, elapsed_ms, open, response);
    let text = serde_json::to_vec_pretty(&transcript)?;
    std::fs::write(&args.out, text).map_err(|source| CtlError::Output {
        what: args.out.display().to_string(),
        source,
    })?;
    let appraisal = challenge::verify(&transcript, &ChallengePolicy::default());
    let ops = 2.0 * f64::from(args.n).powi(3);
    println!(
        "wrote {}: n = {} on {} ({}), commitment after {elapsed_ms} ms ({:.1} GOPS end to end; prover's own time {} ms)",
        args.out.display(),
        args.n,
        transcript.commitment.prover.device,
        transcript.commitment.prover.model,
        ops / (elapsed_ms.max(1) as f64) / 1e6,
        transcript.commitment.compute_ms
    );
    print!("{}", appraisal.to_human());
    if appraisal.verified() {
        Ok(())
    } else {
        Err(GpusCtlError::Rejected {
            failed: appraisal
                .failures()
                .map(|check| check.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into())
    }
}
