//! `plinth-verify enroll challenge|finish`: the verifier's half of AK
//! enrollment. The verifier keeps no state but the `--state` file.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{CliError, Outcome, human, parse_err, read};
use crate::check::Appraisal;
use crate::enroll::{
    self, AkRecord, EkAnchors, EnrollmentRequest, EnrollmentResponse, EnrollmentState,
};
use crate::policy::Policy;
use crate::tpm::public;
use crate::x509chain;

/// Arguments of `enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The step.
    #[command(subcommand)]
    pub command: EnrollCommand,
}

/// The two steps of enrollment.
#[derive(Debug, Subcommand)]
pub enum EnrollCommand {
    /// Check an enrollment request (`plinthctl attest enroll`) and write a challenge.
    Challenge {
        /// The request.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Where to write the challenge for the agent.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
        /// Where to write what `finish` needs (keep it; never send it).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// A PEM bundle of EK CAs, in addition to the policy's `[tpm] ek_ca_files`.
        #[arg(long, value_name = "FILE")]
        ek_ca: Vec<PathBuf>,
    },
    /// Check the agent's response and write the AK record.
    Finish {
        /// The state written by `challenge`.
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// The agent's response (`plinthctl attest activate`).
        #[arg(long, value_name = "FILE")]
        response: PathBuf,
        /// Where to write the AK record.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
    },
}

/// Reads and parses an AK record.
pub(crate) fn read_ak_record(path: &Path) -> Result<AkRecord, CliError> {
    AkRecord::parse(&read(path)?).map_err(|err| parse_err(path, &err))
}

/// `tpm.ak_binding` for `tpm-quote --ak-record`: the quote's AK (the `--ak`
/// file) is the enrolled one.
pub(crate) fn ak_binding(record: &AkRecord, ak_bytes: &[u8]) -> Result<String, String> {
    let recorded = public::TpmPublic::parse(&record.ak_public.0)
        .map_err(|err| format!("AK record's ak_public: {err}"))?;
    let given = public::load_ak(ak_bytes, "--ak").map_err(|err| format!("--ak: {err}"))?;
    if given == recorded.key {
        Ok(enroll::describe(record))
    } else {
        Err(format!(
            "the quote's AK is not the AK of the record ({})",
            hex::encode(&record.ak_name.0)
        ))
    }
}

/// The policy's EK CA files (relative to the policy file) and `extra`, and its pinned EK Names.
fn load_anchors(
    policy: &Policy,
    policy_path: Option<&Path>,
    extra: &[PathBuf],
) -> Result<EkAnchors, CliError> {
    let base = policy_path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = policy
        .tpm
        .ek_ca_files
        .iter()
        .map(|file| base.join(file))
        .collect();
    files.extend(extra.iter().cloned());
    let mut cas = Vec::new();
    for file in &files {
        cas.extend(
            x509chain::parse_bundle(&read(file)?, &file.display().to_string())
                .map_err(|err| parse_err(file, &err))?,
        );
    }
    Ok(EkAnchors {
        cas,
        pinned_names: policy
            .tpm
            .pinned_ek_names
            .iter()
            .map(|name| name.0.clone())
            .collect(),
    })
}

fn write(path: &Path, value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|err| CliError::Parse {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    bytes.push(b'\n');
    plinth_toolbox::durable::write(path, &bytes).map_err(|err| CliError::Parse {
        path: path.display().to_string(),
        reason: plinth_toolbox::error_chain(&err),
    })
}

fn render(appraisal: &Appraisal, json_output: bool, written: Option<&Path>) -> String {
    if json_output {
        let value = json!({
            "verified": appraisal.verified(),
            "appraisals": [appraisal],
            "written": written.map(|path| path.display().to_string()),
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        let mut out = human(appraisal);
        if let Some(path) = written {
            out.push_str(&format!("wrote {}\n", path.display()));
        }
        out
    }
}

/// Runs `enroll challenge` or `enroll finish`. A request or response that
/// fails a check is a verdict (exit 1, nothing written).
pub(super) fn run(
    args: &EnrollArgs,
    policy: &Policy,
    policy_path: Option<&Path>,
    at: i64,
    json_output: bool,
) -> Result<Outcome, CliError> {
    let now = time::OffsetDateTime::from_unix_timestamp(at)
        .map_err(|err| CliError::Usage(format!("--at: {err}")))?;
    match &args.command {
        EnrollCommand::Challenge {
            request,
            out,
            state,
            ek_ca,
        } => {
            let anchors = load_anchors(policy, policy_path, ek_ca)?;
            let request_bytes = read(request)?;
            let parsed = match EnrollmentRequest::parse(&request_bytes) {
                Ok(parsed) => parsed,
                Err(err) => {
                    let mut appraisal = Appraisal::new("enroll");
                    appraisal.push(crate::check::Check::fail(
                        "enroll.parse",
                        crate::check::Aspect::InstanceIdentity,
                        parse_err(request, &err).to_string(),
                    ));
                    return Ok(Outcome {
                        output: render(&appraisal, json_output, None),
                        appraisals: vec![appraisal],
                    });
                }
            };
            let checked = enroll::appraise_request(&parsed, &anchors, at);
            let mut written = None;
            if let Some((ek, identity)) = &checked.ek {
                let issued = enroll::issue_challenge(&parsed, ek, identity.clone(), now)
                    .map_err(|err| parse_err(request, &err))?;
                write(state, &issued.state)?;
                write(out, &issued.challenge)?;
                written = Some(out.as_path());
            }
            Ok(Outcome {
                output: render(&checked.appraisal, json_output, written),
                appraisals: vec![checked.appraisal],
            })
        }
        EnrollCommand::Finish {
            state,
            response,
            out,
        } => {
            let state_value =
                EnrollmentState::parse(&read(state)?).map_err(|err| parse_err(state, &err))?;
            let response_bytes = read(response)?;
            let (appraisal, record) = match EnrollmentResponse::parse(&response_bytes) {
                Ok(parsed) => enroll::finish(
                    &state_value,
                    &parsed,
                    now,
                    policy.tpm.enrollment_ttl_seconds,
                ),
                Err(err) => {
                    let mut appraisal = Appraisal::new("enroll");
                    appraisal.push(crate::check::Check::fail(
                        "enroll.parse",
                        crate::check::Aspect::InstanceIdentity,
                        parse_err(response, &err).to_string(),
                    ));
                    (appraisal, None)
                }
            };
            let mut written = None;
            if let Some(record) = &record {
                write(out, record)?;
                written = Some(out.as_path());
            }
            Ok(Outcome {
                output: render(&appraisal, json_output, written),
                appraisals: vec![appraisal],
            })
        }
    }
}
