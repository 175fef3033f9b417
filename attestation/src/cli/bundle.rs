//! `plinth-verify bundle` and `plinth-verify batch`: evidence bundles, one or
//! a directory of them on all cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use rayon::prelude::*;
use serde_json::json;

use super::{CliError, Outcome, hex_arg, read};
use crate::bundle::verify::{self, BundleContext};
use crate::check::{Appraisal, Aspect, Check};
use crate::enroll::AkRecord;
use crate::policy::Policy;

/// Arguments of `bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle (`plinthctl attest -o`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The nonce sent to the node (hex).
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// AK record of the node's enrolled AK (`enroll finish -o`); may be repeated.
    #[arg(long, value_name = "FILE")]
    pub ak_record: Vec<PathBuf>,
}

/// Arguments of `batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Directory of bundles (`*.json`).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Nonces per bundle: lines `FILE-NAME HEX` (`#` starts a comment).
    #[arg(long, value_name = "FILE", conflicts_with = "nonce")]
    pub nonces: Option<PathBuf>,
    /// One nonce for every bundle (hex).
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Directory of AK records (`*.json`).
    #[arg(long, value_name = "DIR")]
    pub ak_records: Option<PathBuf>,
    /// An AK record; may be repeated.
    #[arg(long, value_name = "FILE")]
    pub ak_record: Vec<PathBuf>,
}

/// Reads AK records given one by one and as directories.
fn load_ak_records(files: &[PathBuf], dir: Option<&Path>) -> Result<Vec<AkRecord>, CliError> {
    let mut paths = files.to_vec();
    if let Some(dir) = dir {
        paths.extend(json_files(dir)?);
    }
    paths
        .iter()
        .map(|path| super::enroll::read_ak_record(path))
        .collect()
}

/// The `*.json` files of `dir`, sorted by name.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CliError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CliError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `bundle`.
pub(super) fn run_bundle(
    args: &BundleArgs,
    policy: &Policy,
    at: i64,
) -> Result<Vec<Appraisal>, CliError> {
    let nonce = hex_arg("nonce", &args.nonce)?;
    let records = load_ak_records(&args.ak_record, None)?;
    let bytes = read(&args.file)?;
    let context = BundleContext {
        nonce: Some(&nonce),
        policy,
        ak_records: &records,
        at,
    };
    Ok(verify::verify_bytes(&bytes, &context).appraisals)
}

/// Reads a `--nonces` file: `NAME HEX` per line.
fn read_nonces(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, CliError> {
    let text = String::from_utf8(read(path)?).map_err(|_| CliError::Parse {
        path: path.display().to_string(),
        reason: "not UTF-8 text".to_owned(),
    })?;
    let mut nonces = BTreeMap::new();
    for (line_idx, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| CliError::Parse {
            path: format!("{}:{}", path.display(), line_idx + 1),
            reason,
        };
        let (name, nonce) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `FILE-NAME HEX`".to_owned()))?;
        let nonce = crate::bytes::decode_hex_text(nonce)
            .map_err(|err| bad(format!("nonce of {name} is not hex: {err}")))?;
        if nonces.insert(name.to_owned(), nonce).is_some() {
            return Err(bad(format!("{name} is listed twice")));
        }
    }
    Ok(nonces)
}

/// One bundle's line in the batch result.
#[derive(Debug, Clone)]
struct BatchLine {
    file: String,
    verified: bool,
    first_failure: Option<Check>,
}

/// Runs `batch`: every bundle on all cores, a summary by first failing check.
pub(super) fn run_batch(
    args: &BatchArgs,
    policy: &Policy,
    at: i64,
    json_output: bool,
) -> Result<Outcome, CliError> {
    let started = Instant::now();
    let records = load_ak_records(&args.ak_record, args.ak_records.as_deref())?;
    let one_nonce = args
        .nonce
        .as_deref()
        .map(|nonce| hex_arg("nonce", nonce))
        .transpose()?;
    let nonces = args.nonces.as_deref().map(read_nonces).transpose()?;
    let files = json_files(&args.dir)?;
    let lines: Vec<BatchLine> = files
        .par_iter()
        .map(|path| {
            let file = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let nonce = match (&one_nonce, &nonces) {
                (Some(nonce), _) => Some(nonce.as_slice()),
                (None, Some(map)) => map.get(&file).map(Vec::as_slice),
                (None, None) => None,
            };
            let report = match std::fs::read(path) {
                Ok(bytes) => {
                    let context = BundleContext {
                        nonce,
                        policy,
                        ak_records: &records,
                        at,
                    };
                    let mut report = verify::verify_bytes(&bytes, &context);
                    if nonce.is_none() && nonces.is_some() {
                        report.appraisals[0].push(Check::fail(
                            "bundle.nonce",
                            Aspect::Freshness,
                            format!("{file} is not listed in the --nonces file"),
                        ));
                    }
                    report
                }
                Err(err) => verify::BundleReport {
                    appraisals: vec![{
                        let mut appraisal = Appraisal::new("bundle");
                        appraisal.push(Check::fail(
                            "bundle.read",
                            Aspect::Hardware,
                            format!("cannot read {}: {err}", path.display()),
                        ));
                        appraisal
                    }],
                },
            };
            BatchLine {
                file,
                verified: report.verified(),
                first_failure: report.first_failure().cloned(),
            }
        })
        .collect();
    let elapsed = started.elapsed();
    let n_verified = lines.iter().filter(|line| line.verified).count();
    let mut by_check: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        if !line.verified {
            let name = line
                .first_failure
                .as_ref()
                .map_or("no passing check", |check| check.name.as_str());
            *by_check.entry(name.to_owned()).or_default() += 1;
        }
    }
    let n_rejected = lines.len() - n_verified;
    let mut summary = Appraisal::new("batch");
    summary.claim("verified", n_verified);
    summary.claim("rejected", n_rejected);
    for line in &lines {
        let name = format!("batch.{}", line.file);
        summary.push(match (&line.first_failure, line.verified) {
            (_, true) => Check::pass(&name, Aspect::Hardware, "verified"),
            (Some(check), false) => Check::fail(
                &name,
                check.aspect,
                format!("{}: {}", check.name, check.detail),
            ),
            (None, false) => Check::fail(&name, Aspect::Hardware, "no check passed"),
        });
    }
    if lines.is_empty() {
        summary.push(Check::fail(
            "batch.bundles",
            Aspect::Hardware,
            format!("no *.json bundle in {}", args.dir.display()),
        ));
    }
    let output = if json_output {
        let bundles: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| {
                json!({
                    "file": line.file,
                    "verified": line.verified,
                    "first_failure": line.first_failure,
                })
            })
            .collect();
        let value = json!({
            "verified": summary.verified(),
            "summary": {
                "bundles": lines.len(),
                "verified": n_verified,
                "rejected": n_rejected,
                "rejected_by_first_failing_check": by_check,
                "seconds": elapsed.as_secs_f64(),
            },
            "bundles": bundles,
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        let mut out = String::new();
        for line in &lines {
            match &line.first_failure {
                None if line.verified => out.push_str(&format!("{}: VERIFIED\n", line.file)),
                None => out.push_str(&format!("{}: REJECTED (no check passed)\n", line.file)),
                Some(check) => out.push_str(&format!(
                    "{}: REJECTED {}: {}\n",
                    line.file, check.name, check.detail
                )),
            }
        }
        out.push_str(&format!(
            "batch: {} bundles, {n_verified} verified, {n_rejected} rejected ({:.2} s on {} threads)\n",
            lines.len(),
            elapsed.as_secs_f64(),
            rayon::current_num_threads()
        ));
        for (check, count) in &by_check {
            out.push_str(&format!("  rejected by {check}: {count}\n"));
        }
        out
    };
    Ok(Outcome {
        appraisals: vec![summary],
        output,
    })
}
