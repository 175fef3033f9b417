//! The `plinth-verify` command line: argument definitions and the commands.
//!
//! `main.rs` only parses arguments with [`Cli`], calls [`run`] and maps the
//! outcome to an exit code: 0 verified, 1 evidence rejected, 2 bad usage.
//! Evidence bundles (`bundle`, `batch`) are in [`bundle`], AK enrollment
//! (`enroll challenge|finish`) in [`enroll`], liveness ledgers (`liveness`) in
//! [`liveness`]. `challenge` re-checks a capacity-challenge transcript
//! ([`crate::challenge`]) against the policy's `[challenge]` section.
//!
//! Evidence that does not parse (a truncated report, a quote with trailing
//! bytes, a VCEK that is not X.509) is a verdict, not a usage error: the
//! appraisal gets a failing `<subject>.parse` check naming the file and the
//! field (an unparseable EK certificate fails `tpm.ek_chain`, an unparseable
//! `--eventlog` fails `eventlog.parse`), so the auditor still gets a report
//! (and `--json`) and exit code 1. Exit 2 is kept for what the auditor controls: arguments, missing
//! files, the policy, RIMs, the EK CA bundle and the EAR key.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use thiserror::Error;

mod bundle;
mod enroll;
pub mod liveness;

pub use bundle::{BatchArgs, BundleArgs};
pub use enroll::{EnrollArgs, EnrollCommand};
pub use liveness::LivenessArgs;

use crate::check::{Appraisal, Aspect, Check};
use crate::ear::{self, EarError, EarSigner};
use crate::gpu::rim::Rim;
use crate::gpu::spdm::{self, GpuEvidence, SpdmReport};
use crate::policy::{Policy, PolicyError};
use crate::snp::{self, SnpEvidence, SnpReport};
use crate::tpm::eventlog::{self, EventLog};
use crate::tpm::pcrs;
use crate::tpm::public;
use crate::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};
use crate::x509chain;

/// Errors that stop a command before a verdict (exit code 2): usage errors,
/// unreadable files and bad auditor-side inputs. Unparseable evidence is not
/// one of them (see the module documentation).
#[derive(Debug, Error)]
pub enum CliError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong, with its causes.
        reason: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The policy file.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The EAR key.
    #[error(transparent)]
    Ear(#[from] EarError),
    /// An output file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `plinth-verify`: offline verification of TPM, SEV-SNP and NVIDIA GPU evidence.
#[derive(Debug, Parser)]
#[command(name = "plinth-verify", version, about, long_about = None)]
pub struct Cli {
    /// What to verify.
    #[command(subcommand)]
    pub command: Command,
    /// Print the result as JSON instead of the human report.
    #[arg(long, global = true)]
    pub json: bool,
    /// Appraisal policy file (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Write a signed EAR token (JWS) to FILE (needs --ear-key).
    #[arg(long, global = true, value_name = "FILE")]
    pub ear: Option<PathBuf>,
    /// The verifier's Ed25519 PKCS#8 key for --ear.
    #[arg(long, global = true, value_name = "FILE")]
    pub ear_key: Option<PathBuf>,
    /// Time at which certificates must be valid (RFC 3339; default now).
    #[arg(long, global = true, value_name = "RFC3339")]
    pub at: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify an AMD SEV-SNP attestation report.
    Snp(SnpArgs),
    /// Verify an NVIDIA GPU / NVSwitch SPDM attestation report.
    Gpu(GpuArgs),
    /// Verify a TPM 2.0 quote (tpm2_quote -m/-s/-o output).
    TpmQuote(TpmQuoteArgs),
    /// Parse and replay a TCG event log; print PCRs per bank.
    Eventlog(EventlogArgs),
    /// Generate an Ed25519 key for signing EAR tokens.
    Keygen(KeygenArgs),
    /// Verify a usage receipt ledger (JSON lines from `plinthctl receipts export`).
    Receipts(ReceiptsArgs),
    /// Verify an evidence bundle (`plinthctl attest`): every piece, bound to one nonce.
    Bundle(BundleArgs),
    /// Verify every bundle in a directory on all cores; print a summary.
    Batch(BatchArgs),
    /// Enroll an AK: issue a credential challenge, then check the answer.
    Enroll(EnrollArgs),
    /// Verify a liveness ledger (`plinthctl liveness export`) against probe answers;
    /// report uptime, outages and an SLA verdict.
    Liveness(LivenessArgs),
    /// Re-check a saved capacity-challenge transcript (`plinthctl challenge run -o`).
    Challenge(ChallengeArgs),
}

/// Arguments of `challenge`.
#[derive(Debug, Args)]
pub struct ChallengeArgs {
    /// The transcript (`plinth-challenge/1` JSON).
    #[arg(value_name = "TRANSCRIPT")]
    pub transcript: PathBuf,
}

/// Arguments of `receipts`.
#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    /// The ledger (JSON lines).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The node's Ed25519 public key: hex, or a file holding the hex (node.key.pub).
    #[arg(long, value_name = "KEY")]
    pub node_key: String,
    /// The export starts at this seq instead of 1 (needs --start-prev).
    #[arg(long, value_name = "SEQ", requires = "start_prev")]
    pub start_seq: Option<u64>,
    /// Hash of the receipt before --start-seq (hex).
    #[arg(long, value_name = "HEX", requires = "start_seq")]
    pub start_prev: Option<String>,
    /// The seq the last receipt must have (detects truncation at the end).
    #[arg(long, value_name = "SEQ")]
    pub expect_last_seq: Option<u64>,
}

/// Arguments of `snp`.
#[derive(Debug, Args)]
pub struct SnpArgs {
    /// Attestation report: 0x4A0 raw bytes or hex text.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// VCEK or VLEK certificate (DER or PEM).
    #[arg(long, value_name = "FILE")]
    pub vcek: Option<PathBuf>,
    /// ASK/ASVK + ARK chain (PEM) instead of the pinned one; the ARK must still be a pinned AMD root.
    #[arg(long, value_name = "FILE")]
    pub chain: Option<PathBuf>,
    /// Expected REPORT_DATA (hex), overriding the policy.
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
}

/// Arguments of `gpu`.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// SPDM report (hex text or binary), or an NVIDIA SDK evidence JSON file.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// Device certificate chain (PEM, leaf first); optional for SDK evidence JSON.
    #[arg(long, value_name = "FILE")]
    pub certs: Option<PathBuf>,
    /// Expected nonce (hex), overriding the policy.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// RIM (SWID tag XML) to compare measurements with; may be repeated.
    #[arg(long, value_name = "FILE")]
    pub rim: Vec<PathBuf>,
}

/// Arguments of `tpm-quote`.
#[derive(Debug, Args)]
pub struct TpmQuoteArgs {
    /// AK public key: TPM2B_PUBLIC (tpm2_createak -u), TPMT_PUBLIC, PEM or a certificate.
    #[arg(long, value_name = "FILE")]
    pub ak: PathBuf,
    /// Quote message (TPMS_ATTEST, tpm2_quote -m).
    #[arg(long, value_name = "FILE")]
    pub quote: PathBuf,
    /// Signature (TPMT_SIGNATURE, tpm2_quote -s).
    #[arg(long, value_name = "FILE")]
    pub sig: PathBuf,
    /// PCR values (tpm2_quote -o; 'serialized' or 'values' format).
    #[arg(long, value_name = "FILE")]
    pub pcrs: Option<PathBuf>,
    /// Expected qualifying data (hex), overriding the policy.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Binary event log to replay against the quoted PCRs (needs --pcrs).
    #[arg(long, value_name = "FILE")]
    pub eventlog: Option<PathBuf>,
    /// EK certificate (DER or PEM) to check against --ek-ca.
    #[arg(long, value_name = "FILE", requires = "ek_ca")]
    pub ek_cert: Option<PathBuf>,
    /// CA bundle (PEM) for the EK certificate: intermediates and roots.
    #[arg(long, value_name = "FILE", requires = "ek_cert")]
    pub ek_ca: Option<PathBuf>,
    /// AK record (`plinth-verify enroll finish -o`): proves the AK lives beside an EK.
    #[arg(long, value_name = "FILE")]
    pub ak_record: Option<PathBuf>,
}

/// Arguments of `eventlog`.
#[derive(Debug, Args)]
pub struct EventlogArgs {
    /// Binary event log (binary_bios_measurements).
    pub file: PathBuf,
}

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the PKCS#8 PEM private key.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The appraisals (empty for keygen).
    pub appraisals: Vec<Appraisal>,
    /// The text printed to stdout.
    pub output: String,
}

impl Outcome {
    /// True when every appraisal verified.
    pub fn verified(&self) -> bool {
        self.appraisals.iter().all(Appraisal::verified)
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn parse_err(path: &Path, err: &dyn std::error::Error) -> CliError {
    CliError::Parse {
        path: path.display().to_string(),
        reason: plinth_toolbox::error_chain(err),
    }
}

/// The appraisal of evidence that did not parse: one failing check,
/// `check` (e.g. `snp.parse`), whose detail is `err` (it names the file and
/// the field).
pub(crate) fn unparseable(subject: &str, check: &str, err: &CliError) -> Appraisal {
    let mut appraisal = Appraisal::new(subject);
    appraisal.push(Check::fail(check, Aspect::Hardware, err.to_string()));
    appraisal
}

/// Parses one piece of evidence read from `path`; a parse error becomes the
/// `Err` appraisal of [`unparseable`].
fn parse_evidence<T, E: std::error::Error>(
    subject: &str,
    check: &str,
    path: &Path,
    parsed: Result<T, E>,
) -> Result<T, Appraisal> {
    parsed.map_err(|e| unparseable(subject, check, &parse_err(path, &e)))
}

pub(crate) fn hex_arg(name: &str, value: &str) -> Result<Vec<u8>, CliError> {
    crate::bytes::decode_hex_text(value)
        .map_err(|err| CliError::Usage(format!("--{name} '{value}' is not hex: {err}")))
}

fn parse_at(at: Option<&str>) -> Result<i64, CliError> {
    match at {
        None => Ok(time::OffsetDateTime::now_utc().unix_timestamp()),
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|err| CliError::Usage(format!("--at '{text}' is not RFC 3339: {err}")))
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> Result<Outcome, CliError> {
    let policy = match &cli.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let at = parse_at(cli.at.as_deref())?;
    let appraisals = match &cli.command {
        Command::Keygen(args) => return keygen(args),
        Command::Snp(args) => vec![run_snp(args, &policy, at)?],
        Command::Gpu(args) => run_gpu(args, &policy, at)?,
        Command::TpmQuote(args) => vec![run_tpm_quote(args, &policy, at)?],
        Command::Eventlog(args) => vec![run_eventlog(args)?],
        Command::Receipts(args) => vec![run_receipts(args)?],
        Command::Challenge(args) => vec![run_challenge(args, &policy)?],
        Command::Bundle(args) => bundle::run_bundle(args, &policy, at)?,
        Command::Batch(args) => {
            if cli.ear.is_some() {
                return Err(CliError::Usage(
                    "--ear is for one piece of evidence or one bundle, not a batch".to_owned(),
                ));
            }
            return bundle::run_batch(args, &policy, at, cli.json);
        }
        Command::Enroll(args) => {
            return enroll::run(args, &policy, cli.policy.as_deref(), at, cli.json);
        }
        Command::Liveness(args) => return liveness::run(args, cli.json),
    };
    if let Some(ear_path) = &cli.ear {
        let key_path = cli.ear_key.as_ref().ok_or_else(|| {
            CliError::Usage(
                "--ear needs --ear-key FILE (create one with `plinth-verify keygen --out FILE`)"
                    .to_owned(),
            )
        })?;
        let signer = EarSigner::from_pkcs8(&read(key_path)?, &key_path.display().to_string())?;
        let nonce = appraisals.iter().find_map(|a| a.nonce.clone());
        let claims = ear::claims(
            &appraisals,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            &policy.ear.developer,
            policy.ear.policy_id.as_deref(),
            nonce.as_deref(),
        );
        std::fs::write(ear_path, signer.sign(&claims)).map_err(|source| CliError::Write {
            path: ear_path.display().to_string(),
            source,
        })?;
    }
    let output = if cli.json {
        let verified = appraisals.iter().all(Appraisal::verified);
        let value = json!({"verified": verified, "appraisals": appraisals});
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        appraisals.iter().map(human).collect::<Vec<_>>().join("\n")
    };
    Ok(Outcome { appraisals, output })
}

pub(crate) fn human(appraisal: &Appraisal) -> String {
    let mut out = appraisal.to_human();
    // Scalar claims worth showing an auditor, then the GPU measurement list.
    for key in [
        "product",
        "measurement",
        "report_data",
        "host_data",
        "device",
        "driver_version",
        "vbios_version",
        "request_nonce",
        "pcr_selection",
        "extra_data",
    ] {
        if let Some(value) = appraisal.claims.get(key).and_then(|v| v.as_str()) {
            out.push_str(&format!("  {key}: {value}\n"));
        }
    }
    if let Some(blocks) = appraisal
        .claims
        .get("measurements")
        .and_then(|m| m.as_object())
    {
        out.push_str("  measurements:\n");
        let mut sorted: Vec<_> = blocks.iter().collect();
        sorted.sort_by_key(|(k, _)| k.parse::<u32>().unwrap_or(u32::MAX));
        for (idx, value) in sorted {
            out.push_str(&format!(
                "    {idx:<2} : {}\n",
                value.as_str().unwrap_or_default()
            ));
        }
    }
    if appraisal.subject == "eventlog"
        && let Some(banks) = appraisal.claims.get("pcrs").and_then(|p| p.as_object())
    {
        {
            for (bank, pcrs) in banks {
                out.push_str(&format!("  {bank}:\n"));
                if let Some(pcrs) = pcrs.as_object() {
                    let mut sorted: Vec<_> = pcrs.iter().collect();
                    sorted.sort_by_key(|(k, _)| k.parse::<u32>().unwrap_or(u32::MAX));
                    for (idx, value) in sorted {
                        out.push_str(&format!(
                            "    {idx:<2} : 0x{}\n",
                            value.as_str().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    out
}

fn keygen(args: &KeygenArgs) -> Result<Outcome, CliError> {
    // The one plinth key-file format, written durably with mode 0600, never replacing
    // an existing file.
    let key = plinth_toolbox::keyfile::create(&args.out).map_err(EarError::from)?;
    let public_key = ring::signature::KeyPair::public_key(&key).as_ref().to_vec();
    use base64::Engine as _;
    Ok(Outcome {
        appraisals: Vec::new(),
        output: format!(
            "wrote {}\npublic key (raw Ed25519, base64url): {}\n",
            args.out.display(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public_key)
        ),
    })
}

fn run_receipts(args: &ReceiptsArgs) -> Result<Appraisal, CliError> {
    let key_text = if Path::new(&args.node_key).is_file() {
        String::from_utf8_lossy(&read(Path::new(&args.node_key))?).into_owned()
    } else {
        args.node_key.clone()
    };
    let node_key = key_text.trim().to_ascii_lowercase();
    if node_key.len() != 64 || !node_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "--node-key '{}' is not a 32-byte hex Ed25519 public key (or a file holding one)",
            args.node_key
        )));
    }
    let options = crate::receipt::LedgerOptions {
        node_key: Some(node_key),
        start: args.start_seq.zip(args.start_prev.clone()),
        expected_last_seq: args.expect_last_seq,
    };
    let ledger = read(&args.file)?;
    Ok(crate::receipt::appraise_ledger(
        &args.file.display().to_string(),
        &ledger,
        &options,
    ))
}

fn run_challenge(args: &ChallengeArgs, policy: &Policy) -> Result<Appraisal, CliError> {
    let bytes = read(&args.transcript)?;
    let transcript = match parse_evidence(
        "challenge",
        "challenge.parse",
        &args.transcript,
        crate::challenge::Transcript::from_json(&bytes),
    ) {
        Ok(transcript) => transcript,
        Err(appraisal) => return Ok(appraisal),
    };
    Ok(crate::challenge::verify(&transcript, &policy.challenge))
}

fn run_snp(args: &SnpArgs, policy: &Policy, at: i64) -> Result<Appraisal, CliError> {
    let mut snp_policy = policy.snp.clone();
    if let Some(data) = &args.report_data {
        snp_policy.report_data = Some(crate::policy::HexBytes(hex_arg("report-data", data)?));
    }
    let report_bytes = read(&args.report)?;
    let report = match parse_evidence(
        "snp",
        "snp.parse",
        &args.report,
        SnpReport::parse(&report_bytes),
    ) {
        Ok(report) => report,
        Err(appraisal) => return Ok(appraisal),
    };
    let vcek_der = match (&args.vcek, report.table_vek()) {
        (Some(vcek_path), _) => {
            let vcek_bytes = read(vcek_path)?;
            match parse_evidence(
                "snp",
                "snp.parse",
                vcek_path,
                x509chain::parse_bundle(&vcek_bytes, &vcek_path.display().to_string()),
            ) {
                Ok(ders) => ders.into_iter().next().unwrap_or_default(),
                Err(appraisal) => return Ok(appraisal),
            }
        }
        (None, Some(entry)) => match parse_evidence(
            "snp",
            "snp.parse",
            &args.report,
            x509chain::parse_cert(&entry.der, "certificate table", 0).map(|_| ()),
        ) {
            Ok(()) => entry.der.clone(),
            Err(appraisal) => return Ok(appraisal),
        },
        (None, None) => {
            let tcb = report.reported_tcb;
            return Err(CliError::Usage(format!(
                "--vcek FILE is required: fetch the VCEK for this chip from AMD KDS, e.g. \
                 https://kdsintf.amd.com/vcek/v1/<Milan|Genoa|Turin>/{}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=.. \
                 (reported TCB bytes {})",
                hex::encode(report.chip_id),
                hex::encode(tcb)
            )));
        }
    };
    let chain = match &args.chain {
        Some(path) => match parse_evidence(
            "snp",
            "snp.parse",
            path,
            x509chain::parse_bundle(&read(path)?, &path.display().to_string()),
        ) {
            Ok(chain) => Some(chain),
            Err(appraisal) => return Ok(appraisal),
        },
        None => report.table_chain(),
    };
    let evidence = SnpEvidence {
        report,
        vcek_der,
        chain,
    };
    let vcek_source = args.vcek.as_deref().unwrap_or(&args.report);
    snp::verify(&evidence, &snp_policy, at).map_err(|e| parse_err(vcek_source, &e))
}

fn run_gpu(args: &GpuArgs, policy: &Policy, at: i64) -> Result<Vec<Appraisal>, CliError> {
    let report_bytes = read(&args.report)?;
    let nonce = match &args.nonce {
        Some(n) => Some(hex_arg("nonce", n)?),
        None => policy.gpu.nonce.as_ref().map(|n| n.0.clone()),
    };
    let mut rims = Vec::new();
    for path in &args.rim {
        rims.push(Rim::parse(&read(path)?).map_err(|e| parse_err(path, &e))?);
    }
    // (report bytes, chain bytes, chain source) per device.
    let mut devices: Vec<(Vec<u8>, Vec<u8>, PathBuf)> = Vec::new();
    if report_bytes
        .first()
        .is_some_and(|b| *b == b'[' || *b == b'{')
    {
        let Some(items) = spdm::parse_sdk_evidence(&report_bytes) else {
            let err = CliError::Parse {
                path: args.report.display().to_string(),
                reason: "JSON is not NVIDIA SDK evidence ([{arch, certificate, evidence, nonce}])"
                    .to_owned(),
            };
            return Ok(vec![unparseable("gpu", "gpu.parse", &err)]);
        };
        for item in items {
            let certs = match &args.certs {
                Some(path) => read(path)?,
                None => item.certificate,
            };
            devices.push((item.report, certs, args.report.clone()));
        }
    } else {
        let certs_path = args.certs.as_ref().ok_or_else(|| {
            CliError::Usage("--certs FILE is required for a hex or binary report".to_owned())
        })?;
        devices.push((report_bytes, read(certs_path)?, certs_path.clone()));
    }
    let mut appraisals = Vec::new();
    for (index, (report, certs, certs_path)) in devices.into_iter().enumerate() {
        let parsed = parse_evidence("gpu", "gpu.parse", &args.report, SpdmReport::parse(&report))
            .and_then(|report| {
                parse_evidence(
                    "gpu",
                    "gpu.parse",
                    &certs_path,
                    x509chain::parse_bundle(&certs, &certs_path.display().to_string()),
                )
                .map(|chain| (report, chain))
            });
        let mut appraisal = match parsed {
            Ok((report, chain)) => {
                let evidence = GpuEvidence {
                    report,
                    chain,
                    rims: rims.clone(),
                };
                spdm::verify(&evidence, nonce.as_deref(), &policy.gpu, at)
                    .map_err(|e| parse_err(&certs_path, &e))?
            }
            Err(appraisal) => appraisal,
        };
        if index > 0 {
            appraisal.subject = format!("gpu{index}");
        }
        appraisals.push(appraisal);
    }
    Ok(appraisals)
}

fn run_tpm_quote(args: &TpmQuoteArgs, policy: &Policy, at: i64) -> Result<Appraisal, CliError> {
    const SUBJECT: &str = "tpm-quote";
    const PARSE: &str = "tpm.parse";
    let ak_bytes = read(&args.ak)?;
    let quote_bytes = read(&args.quote)?;
    let sig_bytes = read(&args.sig)?;
    let pcr_bytes = match &args.pcrs {
        Some(path) => Some((path, read(path)?)),
        None => None,
    };
    let ak = match parse_evidence(
        SUBJECT,
        PARSE,
        &args.ak,
        public::load_ak(&ak_bytes, &args.ak.display().to_string()),
    ) {
        Ok(ak) => ak,
        Err(appraisal) => return Ok(appraisal),
    };
    let attest = match parse_evidence(SUBJECT, PARSE, &args.quote, Attest::parse(&quote_bytes)) {
        Ok(attest) => attest,
        Err(appraisal) => return Ok(appraisal),
    };
    let signature = match parse_evidence(SUBJECT, PARSE, &args.sig, TpmSignature::parse(&sig_bytes))
    {
        Ok(signature) => signature,
        Err(appraisal) => return Ok(appraisal),
    };
    let pcr_values = match pcr_bytes {
        Some((path, bytes)) => match parse_evidence(
            SUBJECT,
            PARSE,
            path,
            pcrs::parse_pcr_file(&bytes, &attest.pcr_select),
        ) {
            Ok(values) => Some(values),
            Err(appraisal) => return Ok(appraisal),
        },
        None => None,
    };
    let nonce = match &args.nonce {
        Some(n) => Some(hex_arg("nonce", n)?),
        None => policy.tpm.nonce.as_ref().map(|n| n.0.clone()),
    };
    let evidence = QuoteEvidence {
        ak,
        attest,
        signature,
        pcrs: pcr_values,
    };
    let mut appraisal = quote::verify(&evidence, nonce.as_deref(), &policy.tpm);
    if let Some(log_path) = &args.eventlog {
        let Some(values) = &evidence.pcrs else {
            return Err(CliError::Usage(
                "--eventlog needs --pcrs to compare against".to_owned(),
            ));
        };
        let log = read(log_path)?;
        for check in eventlog::appraise_against(&log, values, &log_path.display().to_string()) {
            appraisal.push(check);
        }
    }
    if let (Some(ek_path), Some(ca_path)) = (&args.ek_cert, &args.ek_ca) {
        let ek_bytes = read(ek_path)?;
        // The CA bundle is the auditor's trust material: a bad one is usage.
        let cas = x509chain::parse_bundle(&read(ca_path)?, &ca_path.display().to_string())
            .map_err(|e| parse_err(ca_path, &e))?;
        let ek_result = x509chain::parse_bundle(&ek_bytes, &ek_path.display().to_string())
            .map_err(|e| parse_err(ek_path, &e).to_string())
            .and_then(|ek| {
                let leaf = ek.first().map(Vec::as_slice).unwrap_or_default();
                x509chain::verify_with_ca_bundle(leaf, &[], &cas, at)
                    .map(|summary| summary.subjects.join(" -> "))
                    .map_err(|e| e.to_string())
            });
        appraisal.push(Check::from_result(
            "tpm.ek_chain",
            Aspect::Hardware,
            ek_result,
        ));
        if args.ak_record.is_none() {
            appraisal.push(Check::skip(
                "tpm.ak_binding",
                Aspect::Hardware,
                "a quote does not prove that the AK lives in the TPM holding this EK; that is established at enrollment (give --ak-record)",
            ));
        }
    }
    if let Some(record_path) = &args.ak_record {
        let record = enroll::read_ak_record(record_path)?;
        appraisal.push(Check::from_result(
            "tpm.ak_binding",
            Aspect::Hardware,
            enroll::ak_binding(&record, &ak_bytes),
        ));
    }
    Ok(appraisal)
}

fn run_eventlog(args: &EventlogArgs) -> Result<Appraisal, CliError> {
    let bytes = read(&args.file)?;
    let log = match parse_evidence(
        "eventlog",
        "eventlog.parse",
        &args.file,
        EventLog::parse(&bytes),
    ) {
        Ok(log) => log,
        Err(appraisal) => return Ok(appraisal),
    };
    let replayed = log.replay();
    let mut appraisal = Appraisal::new("eventlog");
    let unknown = log
        .events
        .iter()
        .filter(|e| e.type_name().starts_with("EV_UNKNOWN"))
        .count();
    appraisal.push(Check::pass(
        "eventlog.parse",
        Aspect::Executables,
        format!(
            "{} events, {} format, banks {}{}",
            log.events.len(),
            if log.crypto_agile {
                "crypto-agile"
            } else {
                "legacy SHA-1"
            },
            replayed
                .keys()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(","),
            if unknown > 0 {
                format!(", {unknown} of unknown type")
            } else {
                String::new()
            }
        ),
    ));
    let mut banks = serde_json::Map::new();
    for (bank, values) in &replayed {
        let map: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(idx, v)| (idx.to_string(), json!(hex::encode(v))))
            .collect();
        banks.insert(bank.name().to_owned(), serde_json::Value::Object(map));
    }
    appraisal.claim("pcrs", serde_json::Value::Object(banks));
    let events: Vec<serde_json::Value> = log
        .events
        .iter()
        .map(|e| {
            json!({"index": e.index, "pcr": e.pcr, "type": e.type_name(),
                   "digests": e.digests.iter().map(|(alg, d)| json!({
                       "alg": crate::tpm::HashAlg::from_id(*alg).map(|a| a.name().to_owned()).unwrap_or_else(|| format!("{alg:#06x}")),
                       "digest": hex::encode(d)})).collect::<Vec<_>>(),
                   "data_len": e.data.len()})
        })
        .collect();
    appraisal.claim("events", events);
    Ok(appraisal)
}
