//! `plinth-verify liveness`: a liveness ledger, checked against saved probe answers,
//! with its uptime, outages and an optional SLA verdict.
//!
//! Exit codes follow the other subcommands: 0 when the ledger verifies (and the SLA, if
//! one is given, is met), 1 when it is rejected or the SLA is missed, 2 for usage errors
//! and unreadable files (the ledger, the probe file, the SLA policy).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{CliError, Outcome, read};
use crate::check::{Appraisal, Aspect, Check};
use crate::liveness::sla::{self, SlaPolicy};
use crate::liveness::verify::{self, LivenessReport, VerifyOptions};

/// Arguments of `liveness`.
#[derive(Debug, Args)]
pub struct LivenessArgs {
    /// The ledger (JSON lines from `plinthctl liveness export`).
    #[arg(value_name = "LEDGER")]
    pub ledger: PathBuf,
    /// The node's Ed25519 public key: hex, or a file holding the hex (node.key.pub);
    /// default: the key of the first entry.
    #[arg(long, value_name = "KEY")]
    pub node_key: Option<String>,
    /// Probe answers the checker saved (JSON lines, `plinthctl liveness probe` output).
    #[arg(long, value_name = "FILE")]
    pub probes: Option<PathBuf>,
    /// Start of the reported window: RFC 3339 or Unix milliseconds.
    #[arg(long, value_name = "T")]
    pub from: Option<String>,
    /// End of the reported window: RFC 3339 or Unix milliseconds.
    #[arg(long, value_name = "T")]
    pub to: Option<String>,
    /// SLA policy (TOML): minimum availability, longest outage, drained GPUs.
    #[arg(long, value_name = "POLICY")]
    pub sla: Option<PathBuf>,
    /// The ledger is an export that starts after seq 1 (`plinthctl liveness export --from`).
    #[arg(long)]
    pub partial: bool,
    /// How late an entry may be and still prove continuity (default: half the
    /// interval, or the SLA policy's `tolerance_seconds`).
    #[arg(long, value_name = "SECONDS")]
    pub tolerance_seconds: Option<u64>,
}

/// Parses a time argument: Unix milliseconds or RFC 3339.
pub fn parse_time_ms(name: &str, text: &str) -> Result<u64, CliError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|err| {
            CliError::Usage(format!(
                "--{name} '{text}' is neither Unix milliseconds nor RFC 3339: {err}"
            ))
        })?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| CliError::Usage(format!("--{name} '{text}' is before 1970")))
}

fn node_key_arg(value: &str) -> Result<String, CliError> {
    let text = if Path::new(value).is_file() {
        String::from_utf8_lossy(&read(Path::new(value))?).into_owned()
    } else {
        value.to_owned()
    };
    let key = text.trim().to_ascii_lowercase();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "--node-key '{value}' is not a 32-byte hex Ed25519 public key (or a file holding one)"
        )));
    }
    Ok(key)
}

/// Runs `plinth-verify liveness`.
pub fn run(args: &LivenessArgs, json_output: bool) -> Result<Outcome, CliError> {
    let policy = args
        .sla
        .as_deref()
        .map(SlaPolicy::load)
        .transpose()
        .map_err(|err| CliError::Usage(plinth_toolbox::error_chain(&err)))?;
    let from_ms = args
        .from
        .as_deref()
        .map(|t| parse_time_ms("from", t))
        .transpose()?;
    let to_ms = args
        .to
        .as_deref()
        .map(|t| parse_time_ms("to", t))
        .transpose()?;
    if let (Some(from), Some(to)) = (from_ms, to_ms)
        && to < from
    {
        return Err(CliError::Usage(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let probes = match &args.probes {
        Some(path) => {
            verify::parse_probes(&read(path)?).map_err(|(line, reason)| CliError::Parse {
                path: format!("{}:{line}", path.display()),
                reason,
            })?
        }
        None => Vec::new(),
    };
    let numbered: Vec<_> = probes
        .into_iter()
        .enumerate()
        .map(|(idx, answer)| (idx + 1, answer))
        .collect();
    let options = VerifyOptions {
        node_key: args.node_key.as_deref().map(node_key_arg).transpose()?,
        partial: args.partial,
        from_ms,
        to_ms,
        tolerance_ms: args
            .tolerance_seconds
            .or(policy.as_ref().and_then(|p| p.tolerance_seconds))
            .map(|s| s.saturating_mul(1000)),
    };
    let ledger = read(&args.ledger)?;
    let appraisal = appraise(
        &args.ledger.display().to_string(),
        &ledger,
        &numbered,
        &options,
        policy.as_ref(),
    );
    let output = if json_output {
        let value = json!({"verified": appraisal.verified(), "appraisals": [&appraisal]});
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        human(&appraisal)
    };
    Ok(Outcome {
        appraisals: vec![appraisal],
        output,
    })
}

/// Verifies a ledger and reports it as an appraisal: `liveness.ledger`,
/// `liveness.probes` and one `sla.*` check per policy limit, the report as claims.
pub fn appraise(
    name: &str,
    ledger: &[u8],
    probes: &[(usize, crate::liveness::ProbeAnswer)],
    options: &VerifyOptions,
    policy: Option<&SlaPolicy>,
) -> Appraisal {
    let mut appraisal = Appraisal::new("liveness");
    appraisal.claim("ledger", name);
    let report = match verify::verify(ledger, probes, options) {
        Ok(report) => report,
        Err(err) => {
            appraisal.push(Check::fail(
                "liveness.ledger",
                Aspect::InstanceIdentity,
                err.to_string(),
            ));
            appraisal.claim("first_bad_line", err.line as u64);
            if let Some(seq) = err.seq {
                appraisal.claim("first_bad_seq", seq);
            }
            return appraisal;
        }
    };
    appraisal.push(Check::pass(
        "liveness.ledger",
        Aspect::InstanceIdentity,
        format!(
            "{} entries (seq {}..{}, {} runs, {} boots): signatures, chain, sequence, clocks and gaps verified",
            report.n_entries, report.first_seq, report.last_seq, report.n_runs, report.n_boots
        ),
    ));
    appraisal.push(if probes.is_empty() {
        Check::skip(
            "liveness.probes",
            Aspect::Freshness,
            "no probe answers given (--probes): nothing pins the ledger against backfilling",
        )
    } else {
        Check::pass(
            "liveness.probes",
            Aspect::Freshness,
            format!("{} probe answers agree with the chain", report.n_probes),
        )
    });
    if let Some(policy) = policy {
        for check in policy.judge(&report) {
            appraisal.push(check);
        }
    }
    claims(&mut appraisal, &report, policy);
    appraisal
}

fn claims(appraisal: &mut Appraisal, report: &LivenessReport, policy: Option<&SlaPolicy>) {
    let drained = policy.map(|p| p.drained_gpus).unwrap_or_default();
    appraisal.claim("entries", report.n_entries as u64);
    appraisal.claim("last_seq", report.last_seq);
    appraisal.claim("head_hash", report.head_hash.clone());
    if let Some(key) = &report.node_key {
        appraisal.claim("node_key", key.clone());
    }
    appraisal.claim("window_start_ms", report.window_start_ms);
    appraisal.claim("window_end_ms", report.window_end_ms);
    appraisal.claim("uptime_ms", report.uptime_ms);
    appraisal.claim("drained_share_ms", report.drained_share_ms);
    appraisal.claim(
        "availability_percent",
        format!("{:.4}", sla::availability_percent(report, drained)),
    );
    appraisal.claim(
        "outages",
        serde_json::to_value(&report.outages).unwrap_or_default(),
    );
}

fn human(appraisal: &Appraisal) -> String {
    let mut out = appraisal.to_human();
    let claim = |key: &str| appraisal.claims.get(key).cloned().unwrap_or_default();
    if let Some(uptime) = claim("uptime_ms").as_u64() {
        let window = claim("window_end_ms")
            .as_u64()
            .unwrap_or_default()
            .saturating_sub(claim("window_start_ms").as_u64().unwrap_or_default());
        out.push_str(&format!(
            "  uptime (lower bound): {} s of {} s ({}%)\n",
            uptime / 1000,
            window / 1000,
            claim("availability_percent").as_str().unwrap_or_default()
        ));
    }
    if let Some(outages) = claim("outages").as_array() {
        out.push_str(&format!("  outages: {}\n", outages.len()));
        for outage in outages {
            out.push_str(&format!(
                "    {} ms for {} s: {} (before seq {})\n",
                outage["start_ms"],
                outage["length_ms"].as_u64().unwrap_or_default() / 1000,
                outage["cause"].as_str().unwrap_or_default(),
                outage["next_seq"]
            ));
        }
    }
    out
}
