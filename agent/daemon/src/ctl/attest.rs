//! `plinthctl attest`: fetch a signed evidence bundle for a verifier's nonce, and the
//! agent's side of AK enrollment (`attest enroll`, `attest activate`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use plinth_attestation::bundle::EvidenceBundle;
use plinth_attestation::enroll::{EnrollmentChallenge, EnrollmentRequest, EnrollmentResponse};

use super::CtlError;
use crate::api::attestation::AttestRequest;
use crate::client::AdminClient;

/// Arguments of `plinthctl attest`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AttestArgs {
    /// Enrollment steps; without one, fetch a bundle.
    #[command(subcommand)]
    pub command: Option<AttestCommand>,
    /// The verifier's nonce, 16 to 64 bytes as hex.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Write the bundle here instead of standard output.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also verify the bundle here, with the auditor's library (what `plinth-verify
    /// bundle` checks), and fail unless it verifies.
    #[arg(long)]
    pub verify: bool,
    /// AK record of the node's enrolled AK, for --verify (`plinth-verify enroll finish -o`).
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub ak_record: Vec<PathBuf>,
    /// Appraisal policy (TOML) for --verify.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub policy: Option<PathBuf>,
}

/// The agent's half of AK enrollment.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Print (or write) the enrollment request for `plinth-verify enroll challenge`
    /// (creates the AK at attestation.ak_handle when there is none).
    Enroll {
        /// Write the request here instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Answer a verifier's challenge (TPM2_ActivateCredential) for
    /// `plinth-verify enroll finish`.
    Activate {
        /// The challenge written by `plinth-verify enroll challenge`.
        #[arg(long, value_name = "FILE")]
        challenge: PathBuf,
        /// Write the response here instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Errors of `plinthctl attest` before the agent is asked, and of its checks after.
#[derive(Debug, thiserror::Error)]
pub enum AttestCtlError {
    /// An --ak-record or --policy file cannot be read or parsed.
    #[error("{path}: {reason}")]
    VerifyInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// --verify: the bundle did not verify; the report says why.
    #[error("the bundle does not verify: {first_failure}")]
    NotVerified {
        /// The first failing check.
        first_failure: String,
    },
    /// The bundle names another node key than the one that served the TLS connection.
    #[error(
        "the bundle's node key {bundle} is not the key {served_by} that served this connection: the endpoint is not the attested node"
    )]
    OtherNode {
        /// The bundle's node key.
        bundle: String,
        /// The TLS handshake's node key.
        served_by: String,
    },
    /// No nonce.
    #[error("--nonce HEX is required: the verifier's nonce (16 to 64 bytes) binds the bundle")]
    NoNonce,
    /// The challenge file cannot be read.
    #[error("cannot read the challenge {path}")]
    ReadChallenge {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The challenge file is not a challenge.
    #[error("{path} is not an enrollment challenge")]
    BadChallenge {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: plinth_attestation::enroll::EnrollError,
    },
}

fn emit(value: &impl serde::Serialize, out: Option<&Path>) -> Result<(), CtlError> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    match out {
        Some(path) => {
            std::fs::write(path, &text).map_err(|source| CtlError::Output {
                what: path.display().to_string(),
                source,
            })?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&text)
                .map_err(|source| CtlError::Output {
                    what: "standard output".to_owned(),
                    source,
                })
        }
    }
}

/// Verifies `bundle` for `nonce` with plinth-attestation (the library behind
/// plinth-verify) and prints its report to standard error.
fn verify_bundle(
    bundle: &EvidenceBundle,
    nonce: &str,
    ak_records: &[PathBuf],
    policy: Option<&Path>,
) -> Result<(), CtlError> {
    use plinth_attestation::bundle::verify::{BundleContext, verify};
    let input = |path: &Path, reason: String| AttestCtlError::VerifyInput {
        path: path.to_owned(),
        reason,
    };
    let records = ak_records
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|err| input(path, err.to_string()))?;
            plinth_attestation::enroll::AkRecord::parse(&bytes)
                .map_err(|err| input(path, crate::error_chain(&err)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = match policy {
        Some(path) => plinth_attestation::policy::Policy::load(path)
            .map_err(|err| input(path, crate::error_chain(&err)))?,
        None => plinth_attestation::policy::Policy::default(),
    };
    let nonce = hex::decode(nonce.trim()).map_err(|_| AttestCtlError::NoNonce)?;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let report = verify(
        bundle,
        &BundleContext {
            nonce: Some(&nonce),
            policy: &policy,
            ak_records: &records,
            at,
        },
    );
    for appraisal in &report.appraisals {
        eprint!("{}", appraisal.to_human());
    }
    match report.first_failure() {
        None => {
            eprintln!("bundle: VERIFIED");
            Ok(())
        }
        Some(check) => Err(AttestCtlError::NotVerified {
            first_failure: format!("{}: {}", check.name, check.detail),
        }
        .into()),
    }
}

/// Runs `plinthctl attest ...`.
pub async fn run(client: &AdminClient, args: AttestArgs) -> Result<(), CtlError> {
    match args.command {
        None => {
            let nonce = args.nonce.ok_or(AttestCtlError::NoNonce)?;
            let bundle: EvidenceBundle = client
                .post(
                    "/v1/attestation",
                    &AttestRequest {
                        nonce: nonce.clone(),
                    },
                )
                .await?;
            // Over the network API the bundle must vouch for the endpoint: its node key
            // is the key that signed this TLS handshake (docs/api.md).
            if let Some(remote) = client.remote_target() {
                let served_by = remote.node_key().unwrap_or_default();
                let claimed = bundle.claims.node_public_key.to_string();
                if claimed != served_by {
                    return Err(AttestCtlError::OtherNode {
                        bundle: claimed,
                        served_by,
                    }
                    .into());
                }
                eprintln!(
                    "the bundle's node key {served_by} is the key that served this TLS connection; \
                     check the bundle with `plinth-verify bundle --nonce ...`"
                );
            }
            emit(&bundle, args.out.as_deref())?;
            if args.verify {
                verify_bundle(&bundle, &nonce, &args.ak_record, args.policy.as_deref())?;
            }
            Ok(())
        }
        Some(AttestCommand::Enroll { out }) => {
            let request: EnrollmentRequest = client
                .post("/v1/attestation/enrollment", &serde_json::json!({}))
                .await?;
            emit(&request, out.as_deref())
        }
        Some(AttestCommand::Activate { challenge, out }) => {
            let bytes =
                std::fs::read(&challenge).map_err(|source| AttestCtlError::ReadChallenge {
                    path: challenge.clone(),
                    source,
                })?;
            let parsed = EnrollmentChallenge::parse(&bytes).map_err(|source| {
                AttestCtlError::BadChallenge {
                    path: challenge.clone(),
                    source,
                }
            })?;
            let response: EnrollmentResponse =
                client.post("/v1/attestation/activation", &parsed).await?;
            emit(&response, out.as_deref())
        }
    }
}
