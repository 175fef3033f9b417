//! Verification of a whole bundle: the binding checks, then every piece with
//! the verifier of its kind (TPM quote and event log, SNP report and chain,
//! each GPU's SPDM report and chain), then the fleet policy.
//!
//! The result is one [`Appraisal`] per subject: `bundle` (format, nonce,
//! binding, node signature, fleet policy), `tpm-quote` (the quote verifier's
//! `tpm.*` checks with `tpm.nonce` named `tpm.qualifying_data`, the event log's
//! `eventlog.*`, `tpm.ak_enrolled`), `snp` (with `snp.report_data`), and
//! `gpu[N]` for each claimed GPU (the SPDM verifier's checks renamed
//! `gpu[N].*`, plus `gpu[N].identity`), and `capacity` when the bundle carries a
//! capacity-challenge transcript (the challenge verifier's `challenge.*` checks under
//! the policy's `[challenge]` section, or `capacity.parse`). An absent piece is a skip naming the
//! collector's reason, or a failure of `policy.required_evidence` when the
//! policy requires it.

use crate::bundle::model::{self, EvidenceBundle, Piece};
use crate::check::{Appraisal, Aspect, Check};
use crate::enroll::{self, AkRecord};
use crate::gpu::spdm::{self, SpdmReport};
use crate::policy::{EvidenceKind, HexBytes, Policy};
use crate::snp::{self, SnpReport};
use crate::tpm::eventlog;
use crate::tpm::public::TpmPublic;
use crate::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};

/// What a bundle is verified against.
#[derive(Debug, Clone, Copy)]
pub struct BundleContext<'a> {
    /// The nonce the verifier sent; None skips `bundle.nonce` (freshness unchecked).
    pub nonce: Option<&'a [u8]>,
    /// The appraisal policy.
    pub policy: &'a Policy,
    /// AK records of enrolled AKs (looked up by AK Name).
    pub ak_records: &'a [AkRecord],
    /// Unix time at which certificates must be valid.
    pub at: i64,
}

/// The appraisals of one bundle, in order: `bundle`, then the pieces.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// Every appraisal.
    pub appraisals: Vec<Appraisal>,
}

impl BundleReport {
    /// True when every appraisal verified.
    pub fn verified(&self) -> bool {
        self.appraisals.iter().all(Appraisal::verified)
    }

    /// The first failing check, in report order.
    pub fn first_failure(&self) -> Option<&Check> {
        self.appraisals.iter().flat_map(Appraisal::failures).next()
    }
}

/// Parses and verifies a bundle. A bundle that does not parse is one failing
/// `bundle.parse` check naming the member.
pub fn verify_bytes(bytes: &[u8], context: &BundleContext<'_>) -> BundleReport {
    match EvidenceBundle::parse(bytes) {
        Ok(bundle) => verify(&bundle, context),
        Err(err) => {
            let mut appraisal = Appraisal::new("bundle");
            appraisal.push(Check::fail(
                "bundle.parse",
                Aspect::Hardware,
                plinth_toolbox::error_chain(&err),
            ));
            BundleReport {
                appraisals: vec![appraisal],
            }
        }
    }
}

/// Verifies a parsed bundle.
pub fn verify(bundle: &EvidenceBundle, context: &BundleContext<'_>) -> BundleReport {
    let mut head = Appraisal::new("bundle");
    head.nonce = Some(hex::encode(&bundle.nonce.0));
    head.claim("hostname", bundle.claims.hostname.clone());
    head.claim("boot_id", bundle.claims.boot_id.clone());
    head.claim("collected_at", bundle.collected_at.clone());
    head.claim("node_public_key", bundle.claims.node_public_key.to_string());
    head.claim("agent_version", bundle.claims.agent.version.clone());
    head.claim(
        "agent_binary_sha256",
        bundle.claims.agent.binary_sha256.to_string(),
    );
    head.claim("config_sha256", bundle.claims.config_sha256.to_string());
    head.claim("binding", bundle.binding.to_string());
    head.push(match context.nonce {
        Some(expected) => Check::from_bool(
            "bundle.nonce",
            Aspect::Freshness,
            bundle.nonce.0 == expected,
            format!(
                "bundle nonce {} expected {}",
                hex::encode(&bundle.nonce.0),
                hex::encode(expected)
            ),
        ),
        None => Check::skip(
            "bundle.nonce",
            Aspect::Freshness,
            format!(
                "no expected nonce given: freshness not checked (bundle nonce is {})",
                hex::encode(&bundle.nonce.0)
            ),
        ),
    });
    let binding_ok = match bundle.expected_binding() {
        Ok(expected) if expected == bundle.binding.0 => Ok(format!(
            "binding {} is SHA-256 of the nonce and the claims",
            bundle.binding
        )),
        Ok(expected) => Err(format!(
            "binding {} is not the digest of the nonce and the claims ({})",
            bundle.binding,
            hex::encode(expected)
        )),
        Err(err) => Err(plinth_toolbox::error_chain(&err)),
    };
    head.push(Check::from_result(
        "bundle.binding",
        Aspect::Freshness,
        binding_ok,
    ));
    head.push(Check::from_result(
        "bundle.signature",
        Aspect::InstanceIdentity,
        bundle
            .verify_node_signature()
            .map(|()| {
                format!(
                    "Ed25519 signature by node key {} verifies",
                    bundle.claims.node_public_key
                )
            })
            .map_err(|err| plinth_toolbox::error_chain(&err)),
    ));
    policy_checks(&mut head, bundle, context.policy);

    let binding = bundle.binding.0;
    let mut pieces = Vec::new();
    pieces.push(tpm_appraisal(bundle, &binding, context));
    pieces.push(snp_appraisal(bundle, &binding, context));
    for (index, piece) in bundle.evidence.gpus.iter().enumerate() {
        pieces.push(gpu_appraisal(bundle, index, piece, &binding, context));
    }
    let mut appraisals = vec![head];
    for piece in pieces {
        match piece {
            Appraised::Present(appraisal) => appraisals.push(appraisal),
            // An absent piece has nothing to appraise: its skip goes with the
            // bundle's checks.
            Appraised::Absent(check) => appraisals[0].push(check),
        }
    }
    // The optional capacity-challenge transcript (no member: no appraisal).
    if let Some(capacity) = super::capacity::appraise(bundle, &context.policy.challenge) {
        appraisals.push(capacity);
    }
    BundleReport { appraisals }
}

fn allowed(list: &[HexBytes], digest: &[u8]) -> bool {
    list.iter().any(|allowed| allowed.0 == digest)
}

/// `policy.agent_binary`, `policy.plugins`, `policy.required_evidence`.
fn policy_checks(head: &mut Appraisal, bundle: &EvidenceBundle, policy: &Policy) {
    let fleet = &policy.fleet;
    let binary = &bundle.claims.agent.binary_sha256;
    head.push(if fleet.agent_binaries.is_empty() {
        Check::skip(
            "policy.agent_binary",
            Aspect::Executables,
            format!("no allowed agent binaries in the policy (binary is {binary})"),
        )
    } else {
        Check::from_bool(
            "policy.agent_binary",
            Aspect::Executables,
            allowed(&fleet.agent_binaries, &binary.0),
            format!(
                "agent {} binary {binary} {} the policy's allowed binaries",
                bundle.claims.agent.version,
                if allowed(&fleet.agent_binaries, &binary.0) {
                    "is one of"
                } else {
                    "is not one of"
                }
            ),
        )
    });
    head.push(if fleet.plugins.is_empty() {
        Check::skip(
            "policy.plugins",
            Aspect::Executables,
            format!(
                "no allowed plugins in the policy ({} loaded)",
                bundle.claims.plugins.len()
            ),
        )
    } else {
        let refused: Vec<String> = bundle
            .claims
            .plugins
            .iter()
            .filter(|plugin| !allowed(&fleet.plugins, &plugin.sha256.0))
            .map(|plugin| {
                format!(
                    "{} plugin {} {} ({})",
                    plugin.kind, plugin.name, plugin.version, plugin.sha256
                )
            })
            .collect();
        Check::from_bool(
            "policy.plugins",
            Aspect::Executables,
            refused.is_empty(),
            if refused.is_empty() {
                format!(
                    "all {} loaded plugins are allowed",
                    bundle.claims.plugins.len()
                )
            } else {
                format!("not allowed by the policy: {}", refused.join("; "))
            },
        )
    });
    let mut missing = Vec::new();
    for kind in &fleet.require {
        match kind {
            EvidenceKind::Tpm => {
                if let Piece::Absent { reason } = &bundle.evidence.tpm {
                    missing.push(format!("tpm ({reason})"));
                }
            }
            EvidenceKind::Snp => {
                if let Piece::Absent { reason } = &bundle.evidence.snp {
                    missing.push(format!("snp ({reason})"));
                }
            }
            EvidenceKind::Gpu => {
                for (index, piece) in bundle.evidence.gpus.iter().enumerate() {
                    if let Piece::Absent { reason } = piece {
                        missing.push(format!("gpu[{index}] ({reason})"));
                    }
                }
            }
        }
    }
    let required: Vec<&str> = fleet.require.iter().map(|kind| kind.name()).collect();
    head.push(if required.is_empty() {
        Check::skip(
            "policy.required_evidence",
            Aspect::Hardware,
            "the policy requires no evidence",
        )
    } else {
        Check::from_bool(
            "policy.required_evidence",
            Aspect::Hardware,
            missing.is_empty(),
            if missing.is_empty() {
                format!(
                    "required evidence present: {} ({} GPUs claimed)",
                    required.join(", "),
                    bundle.claims.gpus.len()
                )
            } else {
                format!("required evidence absent: {}", missing.join("; "))
            },
        )
    });
}

/// The appraisal of a piece whose `member` does not parse: one failing `check`.
fn unparsed(subject: &str, check: &str, member: &str, err: &dyn std::error::Error) -> Appraised {
    Appraised::Present(single(
        subject,
        Check::fail(
            check,
            Aspect::Hardware,
            format!("{member}: {}", plinth_toolbox::error_chain(err)),
        ),
    ))
}

/// An appraisal of `subject` holding one check.
fn single(subject: &str, check: Check) -> Appraisal {
    let mut appraisal = Appraisal::new(subject);
    appraisal.push(check);
    appraisal
}

/// What a piece yields: its appraisal, or for an absent piece one skip
/// naming the collector's reason (whether the policy required the piece is
/// `policy.required_evidence`).
enum Appraised {
    Present(Appraisal),
    Absent(Check),
}

fn absent(check: &str, reason: &str) -> Appraised {
    Appraised::Absent(Check::skip(
        check,
        Aspect::Hardware,
        format!("absent: {reason}"),
    ))
}

fn rename(appraisal: &mut Appraisal, from: &str, to: &str) {
    for check in &mut appraisal.checks {
        if check.name == from {
            check.name = to.to_owned();
        }
    }
}

fn tpm_appraisal(
    bundle: &EvidenceBundle,
    binding: &[u8; 32],
    context: &BundleContext<'_>,
) -> Appraised {
    const SUBJECT: &str = "tpm-quote";
    let tpm = match &bundle.evidence.tpm {
        Piece::Present(tpm) => tpm,
        Piece::Absent { reason } => return absent("tpm.present", reason),
    };
    let parse_failure = |what: &str, err: &dyn std::error::Error| {
        unparsed(SUBJECT, "tpm.parse", &format!("evidence.tpm.{what}"), err)
    };
    let ak = match TpmPublic::parse(&tpm.ak_public.0) {
        Ok(ak) => ak,
        Err(err) => return parse_failure("ak_public", &err),
    };
    let attest = match Attest::parse(&tpm.quote.0) {
        Ok(attest) => attest,
        Err(err) => return parse_failure("quote", &err),
    };
    let signature = match TpmSignature::parse(&tpm.signature.0) {
        Ok(signature) => signature,
        Err(err) => return parse_failure("signature", &err),
    };
    let pcrs = match tpm.pcr_values() {
        Ok(pcrs) => pcrs,
        Err(err) => return parse_failure("pcrs", &err),
    };
    let evidence = QuoteEvidence {
        ak: ak.key.clone(),
        attest,
        signature,
        pcrs: Some(pcrs),
    };
    let mut appraisal = quote::verify(&evidence, Some(binding), &context.policy.tpm);
    rename(&mut appraisal, "tpm.nonce", "tpm.qualifying_data");
    match &tpm.event_log {
        Some(log) => {
            let none = crate::tpm::pcrs::PcrValues::new();
            let values = evidence.pcrs.as_ref().unwrap_or(&none);
            for check in eventlog::appraise_against(&log.0, values, "evidence.tpm.event_log") {
                appraisal.push(check);
            }
        }
        None => appraisal.push(Check::skip(
            "eventlog.replay",
            Aspect::Executables,
            "the bundle carries no event log",
        )),
    }
    appraisal.push(ak_enrolled(bundle, &ak, context));
    Appraised::Present(appraisal)
}

/// `tpm.ak_enrolled`: an AK record for this AK's Name exists, holds the same
/// public area, and was enrolled for the node key that signed the bundle.
fn ak_enrolled(bundle: &EvidenceBundle, ak: &TpmPublic, context: &BundleContext<'_>) -> Check {
    const NAME: &str = "tpm.ak_enrolled";
    let Some(name) = ak.name() else {
        return Check::fail(
            NAME,
            Aspect::InstanceIdentity,
            format!("AK nameAlg {:#06x} cannot be computed", ak.name_alg),
        );
    };
    let record = context
        .ak_records
        .iter()
        .find(|record| record.ak_name.0 == name);
    match record {
        None if !context.policy.fleet.require_enrolled_ak => Check::skip(
            NAME,
            Aspect::InstanceIdentity,
            format!(
                "AK {} is not enrolled; the policy does not require it",
                hex::encode(&name)
            ),
        ),
        None => Check::fail(
            NAME,
            Aspect::InstanceIdentity,
            format!(
                "AK {} is not enrolled: no AK record for it ({} given); \
                 nothing ties this AK to a TPM's EK",
                hex::encode(&name),
                context.ak_records.len()
            ),
        ),
        Some(record) => {
            let same_public = TpmPublic::parse(&record.ak_public.0)
                .map(|recorded| recorded.tpmt_bytes == ak.tpmt_bytes)
                .unwrap_or(false);
            if !same_public {
                Check::fail(
                    NAME,
                    Aspect::InstanceIdentity,
                    format!(
                        "the AK record for {} holds another public area",
                        hex::encode(&name)
                    ),
                )
            } else if record.node_public_key != bundle.claims.node_public_key {
                Check::fail(
                    NAME,
                    Aspect::InstanceIdentity,
                    format!(
                        "AK {} was enrolled for node key {}, the bundle is signed by {}",
                        hex::encode(&name),
                        record.node_public_key,
                        bundle.claims.node_public_key
                    ),
                )
            } else {
                Check::pass(NAME, Aspect::InstanceIdentity, enroll::describe(record))
            }
        }
    }
}

fn snp_appraisal(
    bundle: &EvidenceBundle,
    binding: &[u8; 32],
    context: &BundleContext<'_>,
) -> Appraised {
    const SUBJECT: &str = "snp";
    let piece = match &bundle.evidence.snp {
        Piece::Present(snp) => snp,
        Piece::Absent { reason } => return absent("snp.present", reason),
    };
    let fail = |what: &str, err: &dyn std::error::Error| {
        unparsed(SUBJECT, "snp.parse", &format!("evidence.snp.{what}"), err)
    };
    let report = match SnpReport::parse(&piece.report.0) {
        Ok(report) => report,
        Err(err) => return fail("report", &err),
    };
    let chain = if piece.chain.is_empty() {
        report.table_chain()
    } else {
        Some(piece.chain.iter().map(|der| der.0.clone()).collect())
    };
    let evidence = snp::SnpEvidence {
        report,
        vcek_der: piece.vcek.0.clone(),
        chain,
    };
    let mut policy = context.policy.snp.clone();
    policy.report_data = Some(HexBytes(model::snp_report_data(binding).to_vec()));
    match snp::verify(&evidence, &policy, context.at) {
        Ok(mut appraisal) => {
            rename(&mut appraisal, "snp.policy.report_data", "snp.report_data");
            Appraised::Present(appraisal)
        }
        Err(err) => fail("vcek", &err),
    }
}

fn gpu_appraisal(
    bundle: &EvidenceBundle,
    index: usize,
    piece: &Piece<model::GpuEvidence>,
    binding: &[u8; 32],
    context: &BundleContext<'_>,
) -> Appraised {
    let subject = format!("gpu[{index}]");
    let prefix = format!("gpu[{index}].");
    let gpu = match piece {
        Piece::Present(gpu) => gpu,
        Piece::Absent { reason } => {
            return absent(&format!("{prefix}present"), reason);
        }
    };
    let fail = |what: &str, err: &dyn std::error::Error| {
        unparsed(
            &subject,
            &format!("{prefix}parse"),
            &format!("evidence.gpus[{index}].{what}"),
            err,
        )
    };
    let report = match SpdmReport::parse(&gpu.report.0) {
        Ok(report) => report,
        Err(err) => return fail("report", &err),
    };
    let identity = identity_check(bundle, index, gpu, &report);
    let evidence = spdm::GpuEvidence {
        report,
        chain: gpu.certificates.iter().map(|der| der.0.clone()).collect(),
        rims: Vec::new(),
    };
    let mut appraisal =
        match spdm::verify(&evidence, Some(binding), &context.policy.gpu, context.at) {
            Ok(appraisal) => appraisal,
            Err(err) => {
                return fail("certificates", &err);
            }
        };
    appraisal.subject = subject;
    for check in &mut appraisal.checks {
        if let Some(rest) = check.name.strip_prefix("gpu.") {
            check.name = format!("{prefix}{rest}");
        }
    }
    appraisal.checks.insert(0, identity);
    Appraised::Present(appraisal)
}

/// `gpu[N].identity`: the entry is the claimed GPU, and the claimed driver
/// and VBIOS versions are those in the signed report.
fn identity_check(
    bundle: &EvidenceBundle,
    index: usize,
    gpu: &model::GpuEvidence,
    report: &SpdmReport,
) -> Check {
    let name = format!("gpu[{index}].identity");
    let Some(claim) = bundle.claims.gpus.get(index) else {
        return Check::fail(
            &name,
            Aspect::InstanceIdentity,
            "no claimed GPU at this index",
        );
    };
    let mut problems = Vec::new();
    if gpu.index != claim.index || gpu.uuid != claim.uuid {
        problems.push(format!(
            "evidence is for GPU {} ({}), the claim for GPU {} ({})",
            gpu.index, gpu.uuid, claim.index, claim.uuid
        ));
    }
    if gpu.cc_mode != claim.cc_mode {
        problems.push(format!(
            "evidence says CC mode {}, the claim {}",
            gpu.cc_mode.name(),
            claim.cc_mode.name()
        ));
    }
    for (what, claimed, reported) in [
        ("driver", &claim.driver_version, report.driver_version()),
        ("VBIOS", &claim.vbios_version, report.vbios_version()),
    ] {
        match reported {
            Some(reported) if !reported.eq_ignore_ascii_case(claimed) => problems.push(format!(
                "claimed {what} version {claimed}, the signed report says {reported}"
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Check::pass(
            &name,
            Aspect::InstanceIdentity,
            format!(
                "GPU {} {} ({}), CC mode {}, driver {}, VBIOS {}",
                claim.index,
                claim.uuid,
                claim.model,
                claim.cc_mode.name(),
                claim.driver_version,
                claim.vbios_version
            ),
        )
    } else {
        Check::fail(&name, Aspect::InstanceIdentity, problems.join("; "))
    }
}
