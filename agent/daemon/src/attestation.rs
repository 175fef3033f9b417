//! Attestation: the node's claims, the evidence collectors and the signed
//! `plinth-evidence/1` bundle, plus the agent's half of AK enrollment.
//!
//! [`AttestationService::collect`] assembles the claims (node key, host name, boot id,
//! agent version and binary SHA-256, configuration SHA-256 as `check-config` prints it,
//! every loaded plugin, the GPU inventory), computes the binding digest over the
//! verifier's nonce and the claims, collects every piece with the binding in it (TPM
//! quote qualifying data, SNP REPORT_DATA, each GPU's SPDM nonce) and signs the bundle
//! with the node key. Missing hardware makes a piece absent with the reason; it never
//! fails the agent.
//!
//! Everything here blocks (TPM commands, ioctls, NVML); the API calls it on a blocking
//! thread. The TPM, the SNP device and NVML are each behind a mutex, so one collection
//! at a time talks to each (swtpm and `/dev/tpm0` have no resource manager).
//!
//! The SNP firmware and the GPUs come in through [`Sources`]: [`Sources::detect`] opens
//! the real devices (at start, once); tests may pass the labelled recording doubles of
//! `plinth_attestation::collect` (its `test-doubles` feature, a dev-dependency only), which
//! the daemon never does.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use plinth_attestation::bundle::model::{
    AgentClaims, Base64Bytes, Evidence, EvidenceBundle, Hex, HexVec, NodeClaims, Piece,
    PluginClaim, TpmEvidence, UnsignedBundle,
};
use plinth_attestation::collect::Gathered;
use plinth_attestation::collect::nvidia::{self, GpuEvidenceSource};
use plinth_attestation::collect::snp::{self, SnpFirmware};
use plinth_attestation::collect::tpm::{
    TpmCollectError, TpmCollection, TpmCollector, TpmSettings, TpmTimings,
};
use plinth_attestation::enroll::{
    EnrollmentChallenge, EnrollmentRequest, EnrollmentResponse, REQUEST_FORMAT, RESPONSE_FORMAT,
};

use crate::config::AttestationSection;
use crate::identity::NodeIdentity;
use crate::plugins::PluginService;

/// Errors of attestation requests.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// The verifier's nonce is not acceptable.
    #[error("nonce: {reason}")]
    Nonce {
        /// Why.
        reason: String,
    },
    /// The TPM collector is turned off (`attestation.tpm_tcti = ""`).
    #[error("the TPM collector is turned off (attestation.tpm_tcti is empty)")]
    TpmOff,
    /// A TPM operation failed.
    #[error("TPM")]
    Tpm(#[from] TpmCollectError),
    /// A challenge for another AK.
    #[error(
        "the challenge is for AK {challenge_name} at {challenge_handle:#010x}, but this agent's AK is {ak_name} at {ak_handle:#010x}"
    )]
    WrongAk {
        /// The challenge's AK Name (hex).
        challenge_name: String,
        /// The challenge's AK handle.
        challenge_handle: u32,
        /// This agent's AK Name (hex).
        ak_name: String,
        /// This agent's AK handle.
        ak_handle: u32,
    },
    /// The claims could not be gathered.
    #[error("cannot read {what}")]
    Claims {
        /// What.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle could not be built or signed.
    #[error("cannot build the evidence bundle")]
    Bundle(#[from] plinth_attestation::bundle::BundleError),
    /// A lock was poisoned by a panicking collector.
    #[error("the {what} collector is unusable after a failure")]
    Poisoned {
        /// Which collector.
        what: &'static str,
    },
}

/// The SNP firmware and GPU driver the service uses, or why there are none.
pub struct Sources {
    /// The SEV-SNP firmware.
    pub snp: Result<Box<dyn SnpFirmware>, String>,
    /// The NVIDIA GPUs.
    pub gpus: Result<Box<dyn GpuEvidenceSource>, String>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sources")
            .field("snp", &self.snp.as_ref().map(|_| "present"))
            .field("gpus", &self.gpus.as_ref().map(|_| "present"))
            .finish()
    }
}

impl Sources {
    /// Opens the real devices the configuration names: `/dev/sev-guest` through the
    /// `sev` crate and NVML (when the `nvidia` feature is built in and
    /// `attestation.nvidia` is on). What is missing says why.
    pub fn detect(section: &AttestationSection) -> Self {
        let snp: Result<Box<dyn SnpFirmware>, String> = if section.sev_device.as_os_str().is_empty()
        {
            Err("SEV-SNP collection is turned off (attestation.sev_device is empty)".to_owned())
        } else {
            snp::SevGuest::open()
                .map(|guest| Box::new(guest) as Box<dyn SnpFirmware>)
                .map_err(|err| crate::error_chain(&err))
        };
        Self {
            snp,
            gpus: detect_gpus(section),
        }
    }
}

#[cfg(feature = "nvidia")]
fn detect_gpus(section: &AttestationSection) -> Result<Box<dyn GpuEvidenceSource>, String> {
    if !section.nvidia {
        return Err("NVIDIA collection is turned off (attestation.nvidia = false)".to_owned());
    }
    nvidia::NvmlSource::init()
        .map(|nvml| Box::new(nvml) as Box<dyn GpuEvidenceSource>)
        .map_err(|err| crate::error_chain(&err))
}

#[cfg(not(feature = "nvidia"))]
fn detect_gpus(_section: &AttestationSection) -> Result<Box<dyn GpuEvidenceSource>, String> {
    Err("plinth-agent was built without the nvidia feature".to_owned())
}

/// Step timings of one collection, for the log and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectTimings {
    /// The TPM's steps (zero when the TPM is off).
    pub tpm: TpmTimings,
    /// Assembling the claims (binary hash cached after the first time).
    pub claims: std::time::Duration,
    /// SNP and GPU collection.
    pub other_evidence: std::time::Duration,
    /// Building and signing the bundle.
    pub sign: std::time::Duration,
}

/// Which attestation operation a request asked for (the `operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttestationOperation {
    /// An evidence bundle for a verifier's nonce.
    Evidence,
    /// The AK enrollment request.
    Enrollment,
    /// TPM2_ActivateCredential for an enrollment challenge.
    Activation,
}

impl AttestationOperation {
    /// Every operation.
    pub const ALL: [AttestationOperation; 3] = [
        AttestationOperation::Evidence,
        AttestationOperation::Enrollment,
        AttestationOperation::Activation,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationOperation::Evidence => "evidence",
            AttestationOperation::Enrollment => "enrollment",
            AttestationOperation::Activation => "activation",
        }
    }
}

/// What the attestation service counts, for the agent's metrics: requests and failed
/// requests per operation (a bundle with an absent piece is not a failure; an error
/// answer is).
#[derive(Debug, Default)]
pub struct AttestationMetrics {
    requests: [prometheus_client::metrics::counter::Counter; 3],
    failures: [prometheus_client::metrics::counter::Counter; 3],
}

impl AttestationMetrics {
    fn slot(operation: AttestationOperation) -> usize {
        match operation {
            AttestationOperation::Evidence => 0,
            AttestationOperation::Enrollment => 1,
            AttestationOperation::Activation => 2,
        }
    }

    fn count<T, E>(&self, operation: AttestationOperation, outcome: &Result<T, E>) {
        let slot = Self::slot(operation);
        self.requests[slot].inc();
        if outcome.is_err() {
            self.failures[slot].inc();
        }
    }

    /// Requests of `operation` since the agent started.
    pub fn requests(&self, operation: AttestationOperation) -> u64 {
        self.requests[Self::slot(operation)].get()
    }

    /// Failed requests of `operation` since the agent started.
    pub fn failures(&self, operation: AttestationOperation) -> u64 {
        self.failures[Self::slot(operation)].get()
    }
}

/// The attestation service of one agent.
pub struct AttestationService {
    tpm: Option<Mutex<TpmCollector>>,
    snp: Result<Mutex<Box<dyn SnpFirmware>>, String>,
    gpus: Result<Mutex<Box<dyn GpuEvidenceSource>>, String>,
    identity: Arc<NodeIdentity>,
    config_sha256: [u8; 32],
    plugins: Option<Arc<PluginService>>,
    binary_sha256: OnceLock<Result<[u8; 32], String>>,
    /// Where the latest completed capacity-challenge transcript comes from (the GPU
    /// module's last passed burn-in), put in `evidence.capacity`.
    capacity: OnceLock<CapacitySource>,
    metrics: AttestationMetrics,
}

/// Gives the latest completed capacity-challenge transcript, if there is one.
pub type CapacitySource =
    Arc<dyn Fn() -> Option<plinth_attestation::challenge::Transcript> + Send + Sync>;

impl std::fmt::Debug for AttestationService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AttestationService")
            .field("tpm", &self.tpm.is_some())
            .field("snp", &self.snp.as_ref().map(|_| "present"))
            .field("gpus", &self.gpus.as_ref().map(|_| "present"))
            .finish_non_exhaustive()
    }
}

/// The TPM collector's settings from the `[attestation]` section.
pub fn tpm_settings(section: &AttestationSection) -> TpmSettings {
    TpmSettings {
        tcti: section.tpm_tcti.clone(),
        ak_handle: section.ak_handle,
        ek_algorithm: section.ek_algorithm,
        pcrs: section.pcrs.clone(),
        event_log: section.event_log.clone(),
    }
}

fn read_trimmed(path: &str) -> Result<String, AttestationError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| AttestationError::Claims {
            what: path.to_owned(),
            source,
        })
}

fn sha256_file(path: &Path) -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n_read = file
            .read(&mut buffer)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if n_read == 0 {
            break;
        }
        context.update(&buffer[..n_read]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    Ok(out)
}

impl AttestationService {
    /// Puts the transcript `source` gives (the latest completed capacity challenge)
    /// into every bundle's `evidence.capacity`; `plinth-verify bundle` re-checks it.
    /// Set once (the daemon wires the GPU module's last passed burn-in).
    pub fn include_capacity(&self, source: CapacitySource) {
        let _ = self.capacity.set(source);
    }

    /// The service for `section` with `sources`; `config_sha256` is the running
    /// configuration's digest (hex, as `check-config` prints it).
    pub fn new(
        section: &AttestationSection,
        sources: Sources,
        identity: Arc<NodeIdentity>,
        config_sha256: &str,
        plugins: Option<Arc<PluginService>>,
    ) -> Self {
        let mut digest = [0u8; 32];
        if let Ok(bytes) = hex::decode(config_sha256)
            && bytes.len() == 32
        {
            digest.copy_from_slice(&bytes);
        }
        Self {
            tpm: (!section.tpm_tcti.is_empty())
                .then(|| Mutex::new(TpmCollector::new(tpm_settings(section)))),
            snp: sources.snp.map(Mutex::new),
            gpus: sources.gpus.map(Mutex::new),
            identity,
            config_sha256: digest,
            plugins,
            binary_sha256: OnceLock::new(),
            capacity: OnceLock::new(),
            metrics: AttestationMetrics::default(),
        }
    }

    /// Requests and failures per operation.
    pub fn metrics(&self) -> &AttestationMetrics {
        &self.metrics
    }

    /// One line for the log: which collectors are on.
    pub fn summary(&self) -> String {
        format!(
            "tpm: {}, snp: {}, gpus: {}",
            self.tpm
                .as_ref()
                .and_then(|tpm| tpm.lock().ok().map(|tpm| tpm.settings().tcti.clone()))
                .unwrap_or_else(|| "off".to_owned()),
            match &self.snp {
                Ok(_) => "sev-guest",
                Err(reason) => reason,
            },
            match &self.gpus {
                Ok(_) => "nvml",
                Err(reason) => reason,
            }
        )
    }

    fn binary_sha256(&self) -> Result<[u8; 32], AttestationError> {
        // The running image cannot change under a process, so it is hashed once.
        self.binary_sha256
            .get_or_init(|| sha256_file(Path::new("/proc/self/exe")))
            .clone()
            .map_err(|reason| AttestationError::Claims {
                what: "/proc/self/exe".to_owned(),
                source: std::io::Error::other(reason),
            })
    }

    fn plugin_claims(&self) -> Vec<PluginClaim> {
        let Some(plugins) = &self.plugins else {
            return Vec::new();
        };
        plugins
            .list()
            .into_iter()
            .map(|status| {
                let mut sha256 = [0u8; 32];
                if let Ok(bytes) = hex::decode(&status.info.wasm_sha256)
                    && bytes.len() == 32
                {
                    sha256.copy_from_slice(&bytes);
                }
                PluginClaim {
                    kind: status.info.kind.to_string(),
                    name: status.info.name,
                    version: status.info.version,
                    sha256: Hex(sha256),
                }
            })
            .collect()
    }

    /// Collects and signs a bundle for the verifier's `nonce` (16 to 64 bytes).
    pub fn collect(&self, nonce: &[u8]) -> Result<EvidenceBundle, AttestationError> {
        let outcome = self.collect_timed(nonce).map(|(bundle, _)| bundle);
        self.metrics.count(AttestationOperation::Evidence, &outcome);
        outcome
    }

    /// [`Self::collect`], with the time each step took.
    pub fn collect_timed(
        &self,
        nonce: &[u8],
    ) -> Result<(EvidenceBundle, CollectTimings), AttestationError> {
        plinth_attestation::bundle::model::check_nonce(nonce).map_err(|err| {
            AttestationError::Nonce {
                reason: match err {
                    plinth_attestation::bundle::BundleError::Invalid { reason, .. } => reason,
                    other => other.to_string(),
                },
            }
        })?;
        let mut timings = CollectTimings::default();
        let started = std::time::Instant::now();
        let devices = match &self.gpus {
            Ok(source) => {
                let mut source = source
                    .lock()
                    .map_err(|_| AttestationError::Poisoned { what: "NVIDIA" })?;
                match source.devices() {
                    Ok(devices) => devices,
                    Err(err) => {
                        tracing::info!(reason = %crate::error_chain(&err), "no GPU inventory");
                        Vec::new()
                    }
                }
            }
            Err(_) => Vec::new(),
        };
        let claims = NodeClaims {
            node_public_key: Hex(self.identity.public_key().try_into().unwrap_or([0u8; 32])),
            hostname: read_trimmed("/proc/sys/kernel/hostname")?,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
            agent: AgentClaims {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                binary_sha256: Hex(self.binary_sha256()?),
            },
            config_sha256: Hex(self.config_sha256),
            plugins: self.plugin_claims(),
            gpus: devices.iter().map(nvidia::GpuDevice::claim).collect(),
        };
        let binding = plinth_attestation::bundle::binding_digest(nonce, &claims)?;
        timings.claims = started.elapsed();

        let tpm = match &self.tpm {
            None => {
                Piece::absent("the TPM collector is turned off (attestation.tpm_tcti is empty)")
            }
            Some(collector) => {
                let mut collector = collector
                    .lock()
                    .map_err(|_| AttestationError::Poisoned { what: "TPM" })?;
                match collector.collect(&binding, true) {
                    Ok(collection) => {
                        timings.tpm = collection.timings;
                        Piece::Present(tpm_evidence(collection))
                    }
                    Err(err) => {
                        let reason = crate::error_chain(&err);
                        tracing::warn!(%reason, "no TPM evidence");
                        Piece::absent(reason)
                    }
                }
            }
        };
        let started = std::time::Instant::now();
        let snp = match &self.snp {
            Err(reason) => Piece::absent(reason.clone()),
            Ok(firmware) => {
                let mut firmware = firmware
                    .lock()
                    .map_err(|_| AttestationError::Poisoned { what: "SNP" })?;
                match snp::collect(firmware.as_mut(), &binding) {
                    Ok(evidence) => Piece::Present(evidence),
                    Err(err) => Piece::absent(crate::error_chain(&err)),
                }
            }
        };
        let gpus = match &self.gpus {
            Ok(source) if !devices.is_empty() => {
                let mut source = source
                    .lock()
                    .map_err(|_| AttestationError::Poisoned { what: "NVIDIA" })?;
                nvidia::collect(source.as_mut(), &devices, &binding)
            }
            _ => Vec::new(),
        };
        timings.other_evidence = started.elapsed();

        let started = std::time::Instant::now();
        let unsigned = UnsignedBundle::new(
            nonce,
            time::OffsetDateTime::now_utc(),
            claims,
            Evidence {
                tpm,
                snp,
                gpus,
                capacity: self
                    .capacity
                    .get()
                    .and_then(|source| source())
                    .and_then(|transcript| serde_json::to_value(transcript).ok()),
            },
        )?;
        let bundle = EvidenceBundle::sign(unsigned, self.identity.key_pair())?;
        timings.sign = started.elapsed();
        Ok((bundle, timings))
    }

    fn tpm(&self) -> Result<std::sync::MutexGuard<'_, TpmCollector>, AttestationError> {
        self.tpm
            .as_ref()
            .ok_or(AttestationError::TpmOff)?
            .lock()
            .map_err(|_| AttestationError::Poisoned { what: "TPM" })
    }

    /// The enrollment request (`plinthctl attest enroll`): EK, EK certificate, AK (created
    /// and persisted at `attestation.ak_handle` when missing), node key, host name.
    pub fn enrollment_request(&self) -> Result<EnrollmentRequest, AttestationError> {
        let outcome = self.build_enrollment_request();
        self.metrics
            .count(AttestationOperation::Enrollment, &outcome);
        outcome
    }

    fn build_enrollment_request(&self) -> Result<EnrollmentRequest, AttestationError> {
        let identity = self.tpm()?.identity()?;
        Ok(EnrollmentRequest {
            format: REQUEST_FORMAT.to_owned(),
            node_public_key: Hex(self.identity.public_key().try_into().unwrap_or([0u8; 32])),
            hostname: read_trimmed("/proc/sys/kernel/hostname")?,
            ek_public: Base64Bytes(identity.endorsement_key.public),
            ek_certificate: identity.ek_certificate.map(Base64Bytes),
            ek_chain: Vec::new(),
            ak_public: Base64Bytes(identity.attestation_key.public),
            ak_name: HexVec(identity.attestation_key.name),
            ak_handle: identity.attestation_key.handle,
        })
    }

    /// Answers a verifier's enrollment challenge with TPM2_ActivateCredential, after
    /// checking that it is for this agent's AK.
    pub fn activate(
        &self,
        challenge: &EnrollmentChallenge,
    ) -> Result<EnrollmentResponse, AttestationError> {
        let outcome = self.activate_credential(challenge);
        self.metrics
            .count(AttestationOperation::Activation, &outcome);
        outcome
    }

    fn activate_credential(
        &self,
        challenge: &EnrollmentChallenge,
    ) -> Result<EnrollmentResponse, AttestationError> {
        let mut tpm = self.tpm()?;
        let ak = tpm.identity()?.attestation_key;
        if challenge.ak_name.0 != ak.name || challenge.ak_handle != ak.handle {
            return Err(AttestationError::WrongAk {
                challenge_name: hex::encode(&challenge.ak_name.0),
                challenge_handle: challenge.ak_handle,
                ak_name: hex::encode(&ak.name),
                ak_handle: ak.handle,
            });
        }
        let secret =
            tpm.activate_credential(&challenge.id_object.0, &challenge.encrypted_secret.0)?;
        Ok(EnrollmentResponse {
            format: RESPONSE_FORMAT.to_owned(),
            ak_name: HexVec(ak.name),
            secret: HexVec(secret),
        })
    }
}

fn tpm_evidence(collection: TpmCollection) -> TpmEvidence {
    let event_log = match collection.event_log {
        Gathered::Present(bytes) => Some(Base64Bytes(bytes)),
        Gathered::Absent { reason } => {
            tracing::info!(%reason, "no TCG event log in the TPM evidence");
            None
        }
    };
    TpmEvidence {
        ak_public: Base64Bytes(collection.ak.public),
        ak_handle: collection.ak.handle,
        quote: Base64Bytes(collection.quote.attest),
        signature: Base64Bytes(collection.quote.signature),
        pcrs: TpmEvidence::banks_from(&collection.quote.pcrs),
        event_log,
        ek_certificate: collection.ek_certificate.map(Base64Bytes),
        ek_chain: Vec::new(),
        ek_public: collection.ek_public.map(Base64Bytes),
    }
}

#[cfg(test)]
mod tests {
    use plinth_attestation::bundle::model::CcMode;
    use plinth_attestation::collect::nvidia::recorded::RecordedGpus;
    use plinth_attestation::collect::snp::recorded::{RecordedSnpFirmware, vectors_dir};

    use super::*;

    fn service(sources: Sources, dir: &Path) -> AttestationService {
        let identity = Arc::new(NodeIdentity::load_or_create(&dir.join("node.key")).unwrap());
        let section = AttestationSection {
            tpm_tcti: String::new(),
            ..AttestationSection::default()
        };
        AttestationService::new(&section, sources, identity, &"ab".repeat(32), None)
    }

    #[test]
    fn bundle_binds_the_claims_and_carries_every_piece() {
        let vectors = vectors_dir();
        let (Ok(snp), Ok(gpus)) = (
            RecordedSnpFirmware::milan(&vectors),
            RecordedGpus::new()
                .with_recorded_hopper(&vectors, 0, CcMode::On)
                .and_then(|gpus| gpus.with_recorded_hopper(&vectors, 1, CcMode::Off)),
        ) else {
            eprintln!(
                "SKIP attestation assembly: vectors not found at {}",
                vectors.display()
            );
            return;
        };
        let snp_requests = snp.requests();
        let gpu_requests = gpus.requests();
        let dir = tempfile::tempdir().unwrap();
        let service = service(
            Sources {
                snp: Ok(Box::new(snp)),
                gpus: Ok(Box::new(gpus)),
            },
            dir.path(),
        );
        let nonce = [0x42u8; 24];
        let bundle = service.collect(&nonce).unwrap();
        bundle.verify_node_signature().unwrap();
        assert_eq!(bundle.expected_binding().unwrap(), bundle.binding.0);
        assert_eq!(bundle.claims.config_sha256.0, [0xab; 32]);
        assert_eq!(bundle.claims.gpus.len(), 2);
        assert_eq!(bundle.evidence.gpus.len(), 2);
        assert!(
            matches!(&bundle.evidence.tpm, Piece::Absent { reason } if reason.contains("tpm_tcti"))
        );
        // The recorded reports were made for other data, so the collector asked with
        // the binding and refused what came back, saying why.
        let binding = bundle.binding.0;
        assert_eq!(
            snp_requests.lock().unwrap().as_slice(),
            &[plinth_attestation::bundle::model::snp_report_data(&binding)]
        );
        assert!(
            matches!(&bundle.evidence.snp, Piece::Absent { reason } if reason.contains("REPORT_DATA"))
        );
        assert_eq!(gpu_requests.lock().unwrap().as_slice(), &[(0, binding)]);
        assert!(
            matches!(&bundle.evidence.gpus[0], Piece::Absent { reason } if reason.contains("not the binding"))
        );
        assert!(
            matches!(&bundle.evidence.gpus[1], Piece::Absent { reason } if reason.contains("not in confidential-computing mode"))
        );
        // The bundle parses back exactly.
        let json = bundle.to_json_pretty().unwrap();
        assert_eq!(EvidenceBundle::parse(&json).unwrap(), bundle);
        // The binary hash is the running test binary's.
        let exe = sha256_file(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(bundle.claims.agent.binary_sha256.0, exe);
    }

    #[test]
    fn the_latest_capacity_transcript_goes_into_the_bundle_and_verifies() {
        use plinth_attestation::challenge::{CpuProver, DEFAULT_ROWS, run_local};
        let dir = tempfile::tempdir().unwrap();
        let service = service(
            Sources {
                snp: Err("none".to_owned()),
                gpus: Err("none".to_owned()),
            },
            dir.path(),
        );
        // None yet: no member, as before.
        let bundle = service.collect(&[1u8; 16]).unwrap();
        assert!(bundle.evidence.capacity.is_none());
        let transcript = run_local(&CpuProver, 64, 60_000, DEFAULT_ROWS).unwrap();
        let given = transcript.clone();
        service.include_capacity(Arc::new(move || Some(given.clone())));
        let bundle = service.collect(&[1u8; 16]).unwrap();
        bundle.verify_node_signature().unwrap();
        let appraisal = plinth_attestation::bundle::capacity::appraise(
            &EvidenceBundle::parse(&bundle.to_json_pretty().unwrap()).unwrap(),
            &plinth_attestation::challenge::ChallengePolicy::default(),
        )
        .unwrap();
        assert!(appraisal.verified(), "{appraisal:?}");
        assert_eq!(
            serde_json::from_value::<plinth_attestation::challenge::Transcript>(
                bundle.evidence.capacity.unwrap()
            )
            .unwrap(),
            transcript
        );
    }

    #[test]
    fn bad_nonces_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(
            Sources {
                snp: Err("none".to_owned()),
                gpus: Err("none".to_owned()),
            },
            dir.path(),
        );
        for nonce in [vec![0u8; 15], vec![0u8; 65]] {
            let err = service.collect(&nonce).unwrap_err().to_string();
            assert!(err.starts_with("nonce: "), "{err}");
        }
        let bundle = service.collect(&[1u8; 16]).unwrap();
        assert!(matches!(&bundle.evidence.snp, Piece::Absent { reason } if reason == "none"));
        assert!(bundle.evidence.gpus.is_empty());
        assert!(matches!(
            service.enrollment_request(),
            Err(AttestationError::TpmOff)
        ));
    }
}
