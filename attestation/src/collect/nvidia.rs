//! The NVIDIA collector: the GPU inventory (UUID, model, architecture, driver and VBIOS
//! versions, confidential-computing mode) for the bundle's claims, and, for each GPU in
//! CC mode, the SPDM GET_MEASUREMENTS request and response signed over the bundle's
//! binding digest (the 32-byte requester nonce) with the device certificate chain.
//!
//! The driver sits behind [`GpuEvidenceSource`]. [`NvmlSource`] (feature
//! `collect-nvidia`) loads libnvidia-ml at run time through nvml-wrapper, so the agent
//! builds and runs on hosts without a driver; no driver, no GPU or CC off is recorded
//! (the piece says why), never a crash. [`recorded::RecordedGpus`] (only with
//! `cfg(test)` or the `test-doubles` feature) is a labelled test double that replays
//! recorded real SPDM reports; nothing selects it at run time.
//!
//! NVSwitches are attested through NVIDIA's NSCQ library, not NVML: the NVML source
//! reports GPUs only (docs/attestation.md, "Collecting").

use thiserror::Error;

use crate::bundle::model::{Base64Bytes, CcMode, GpuClaim, GpuEvidence, Piece};
use crate::gpu::spdm::SpdmReport;

/// One GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// NVML device index.
    pub index: u32,
    /// `GPU-...`.
    pub uuid: String,
    /// Model name.
    pub model: String,
    /// Architecture, lowercase (`hopper`, `blackwell`).
    pub arch: String,
    /// Driver version.
    pub driver_version: String,
    /// VBIOS version.
    pub vbios_version: String,
    /// Confidential-computing mode.
    pub cc_mode: CcMode,
}

impl GpuDevice {
    /// The bundle claim for this GPU.
    pub fn claim(&self) -> GpuClaim {
        GpuClaim {
            index: self.index,
            uuid: self.uuid.clone(),
            model: self.model.clone(),
            driver_version: self.driver_version.clone(),
            vbios_version: self.vbios_version.clone(),
            cc_mode: self.cc_mode,
        }
    }
}

/// What the driver returns for an attestation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAttestation {
    /// The SPDM GET_MEASUREMENTS request followed by the response.
    pub report: Vec<u8>,
    /// The device certificate chain, leaf first, as the driver gives it (PEM blocks
    /// back to back, or one DER certificate after another).
    pub certificate_chain: Vec<u8>,
}

/// Errors of the NVIDIA collector.
#[derive(Debug, Error)]
pub enum GpuCollectError {
    /// libnvidia-ml could not be loaded or initialised.
    #[error("no NVIDIA driver: {detail}")]
    NoDriver {
        /// NVML's error.
        detail: String,
    },
    /// An NVML query failed.
    #[error("NVML {operation} failed for GPU {index}: {detail}")]
    Nvml {
        /// The query.
        operation: &'static str,
        /// The device index.
        index: u32,
        /// NVML's error.
        detail: String,
    },
    /// The driver's report does not parse as an SPDM measurement report.
    #[error("GPU {index}'s attestation report does not parse: {reason}")]
    Report {
        /// The device index.
        index: u32,
        /// The parser's error.
        reason: String,
    },
    /// The report was made for another nonce.
    #[error("GPU {index}'s report carries requester nonce {found}, not the binding {expected}")]
    NonceMismatch {
        /// The device index.
        index: u32,
        /// The report's nonce.
        found: String,
        /// The binding.
        expected: String,
    },
    /// The certificate chain is not PEM or DER certificates.
    #[error("GPU {index}'s certificate chain is not PEM or DER certificates: {reason}")]
    Chain {
        /// The device index.
        index: u32,
        /// What was wrong.
        reason: String,
    },
}

/// The GPUs' driver, as the collector uses it.
pub trait GpuEvidenceSource: Send {
    /// Every GPU, in index order.
    fn devices(&mut self) -> Result<Vec<GpuDevice>, GpuCollectError>;

    /// GPU `index`'s attestation report for requester nonce `nonce`, and its chain.
    fn attestation(
        &mut self,
        index: u32,
        nonce: [u8; 32],
    ) -> Result<GpuAttestation, GpuCollectError>;
}

/// Each GPU's evidence piece for `binding`, in the order of `devices`: present for a
/// GPU in CC mode (on or devtools) whose report carries the binding, absent with the
/// reason otherwise.
pub fn collect(
    source: &mut dyn GpuEvidenceSource,
    devices: &[GpuDevice],
    binding: &[u8; 32],
) -> Vec<Piece<GpuEvidence>> {
    devices
        .iter()
        .map(|device| match device.cc_mode {
            CcMode::Off => Piece::absent(format!(
                "GPU {} ({}) is not in confidential-computing mode: no attestation report",
                device.index, device.uuid
            )),
            CcMode::Unknown => Piece::absent(format!(
                "the driver does not report the confidential-computing mode of GPU {} ({})",
                device.index, device.uuid
            )),
            CcMode::On | CcMode::Devtools => match collect_one(source, device, binding) {
                Ok(evidence) => Piece::Present(evidence),
                Err(err) => Piece::absent(plinth_toolbox::error_chain(&err)),
            },
        })
        .collect()
}

fn collect_one(
    source: &mut dyn GpuEvidenceSource,
    device: &GpuDevice,
    binding: &[u8; 32],
) -> Result<GpuEvidence, GpuCollectError> {
    let attestation = source.attestation(device.index, *binding)?;
    let report =
        SpdmReport::parse_binary(&attestation.report).map_err(|err| GpuCollectError::Report {
            index: device.index,
            reason: plinth_toolbox::error_chain(&err),
        })?;
    if report.request_nonce != *binding {
        return Err(GpuCollectError::NonceMismatch {
            index: device.index,
            found: hex::encode(report.request_nonce),
            expected: hex::encode(binding),
        });
    }
    let certificates =
        chain_ders(&attestation.certificate_chain).map_err(|reason| GpuCollectError::Chain {
            index: device.index,
            reason,
        })?;
    Ok(GpuEvidence {
        index: device.index,
        uuid: device.uuid.clone(),
        arch: device.arch.clone(),
        report: Base64Bytes(attestation.report),
        certificates: certificates.into_iter().map(Base64Bytes).collect(),
        cc_mode: device.cc_mode,
        driver_version: device.driver_version.clone(),
        vbios_version: device.vbios_version.clone(),
    })
}

/// Splits a certificate chain into DER certificates: PEM blocks, or DER SEQUENCEs
/// back to back (the driver's buffer may be zero-padded after the last one).
fn chain_ders(chain: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if plinth_toolbox::pem::is_pem(chain) {
        return crate::x509chain::parse_bundle(chain, "gpu certificate chain")
            .map_err(|err| plinth_toolbox::error_chain(&err));
    }
    let mut rest = chain;
    let mut ders = Vec::new();
    while let Some((&first, _)) = rest.split_first() {
        if first == 0 && rest.iter().all(|b| *b == 0) {
            break;
        }
        let der = crate::collect::der_prefix(rest)
            .ok_or_else(|| format!("no DER certificate at byte {}", chain.len() - rest.len()))?;
        ders.push(der.to_vec());
        rest = &rest[der.len()..];
    }
    if ders.is_empty() {
        return Err("the chain is empty".to_owned());
    }
    Ok(ders)
}

#[cfg(feature = "collect-nvidia")]
pub use nvml::NvmlSource;

#[cfg(feature = "collect-nvidia")]
mod nvml {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::enums::device::DeviceArchitecture;
    use nvml_wrapper::error::NvmlError;

    use super::{GpuAttestation, GpuCollectError, GpuDevice, GpuEvidenceSource};
    use crate::bundle::model::CcMode;

    /// The real driver: NVML, loaded at run time.
    pub struct NvmlSource {
        nvml: Nvml,
    }

    impl std::fmt::Debug for NvmlSource {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.debug_struct("NvmlSource").finish_non_exhaustive()
        }
    }

    impl NvmlSource {
        /// Loads libnvidia-ml and initialises NVML.
        pub fn init() -> Result<Self, GpuCollectError> {
            Nvml::init()
                .map(|nvml| Self { nvml })
                .map_err(|err| GpuCollectError::NoDriver {
                    detail: err.to_string(),
                })
        }
    }

    fn nvml_error(
        operation: &'static str,
        index: u32,
    ) -> impl FnOnce(NvmlError) -> GpuCollectError {
        move |err| GpuCollectError::Nvml {
            operation,
            index,
            detail: err.to_string(),
        }
    }

    impl GpuEvidenceSource for NvmlSource {
        fn devices(&mut self) -> Result<Vec<GpuDevice>, GpuCollectError> {
            let count = self
                .nvml
                .device_count()
                .map_err(nvml_error("device_count", 0))?;
            let driver_version = self
                .nvml
                .sys_driver_version()
                .map_err(nvml_error("sys_driver_version", 0))?;
            let mut devices = Vec::new();
            for index in 0..count {
                let device = self
                    .nvml
                    .device_by_index(index)
                    .map_err(nvml_error("device_by_index", index))?;
                let arch = match device.architecture() {
                    Ok(DeviceArchitecture::Unknown) | Err(_) => "unknown".to_owned(),
                    Ok(arch) => arch.to_string().to_lowercase(),
                };
                // CC mode is a system setting; NotSupported means a GPU without CC.
                let cc_mode = match (device.is_cc_enabled(), device.is_cc_dev_mode_enabled()) {
                    (Ok(true), Ok(true)) => CcMode::Devtools,
                    (Ok(true), _) => CcMode::On,
                    (Ok(false), _) | (Err(NvmlError::NotSupported), _) => CcMode::Off,
                    (Err(_), _) => CcMode::Unknown,
                };
                devices.push(GpuDevice {
                    index,
                    uuid: device.uuid().map_err(nvml_error("uuid", index))?,
                    model: device.name().map_err(nvml_error("name", index))?,
                    arch,
                    driver_version: driver_version.clone(),
                    vbios_version: device
                        .vbios_version()
                        .map_err(nvml_error("vbios_version", index))?,
                    cc_mode,
                });
            }
            Ok(devices)
        }

        fn attestation(
            &mut self,
            index: u32,
            nonce: [u8; 32],
        ) -> Result<GpuAttestation, GpuCollectError> {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(nvml_error("device_by_index", index))?;
            let report = device
                .confidential_compute_gpu_attestation_report(nonce)
                .map_err(nvml_error("conf_compute_gpu_attestation_report", index))?;
            let certificate = device
                .confidential_compute_gpu_certificate()
                .map_err(nvml_error("conf_compute_gpu_certificate", index))?;
            Ok(GpuAttestation {
                report: report.attestation_report,
                certificate_chain: certificate.attestation_cert_chain,
            })
        }
    }
}

#[cfg(any(test, feature = "test-doubles"))]
pub mod recorded {
    //! **Test double.** Replays recorded real SPDM reports (from the vectors directory)
    //! for made-up devices, and records every request. Compiled only for tests and the
    //! `test-doubles` feature; the agent never selects it.

    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::{GpuAttestation, GpuCollectError, GpuDevice, GpuEvidenceSource};
    use crate::bundle::model::CcMode;

    /// Every (index, nonce) requested, in order.
    pub type RequestLog = Arc<Mutex<Vec<(u32, [u8; 32])>>>;

    /// **Test double** of [`GpuEvidenceSource`].
    #[derive(Debug, Clone, Default)]
    pub struct RecordedGpus {
        devices: Vec<(GpuDevice, GpuAttestation)>,
        requests: RequestLog,
    }

    /// The recorded H100 report of nvtrust's local verifier and its chain.
    pub const HOPPER_REPORT: &str = "nvtrust/guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/samples/hopperAttestationReport.txt";
    /// The chain of [`HOPPER_REPORT`].
    pub const HOPPER_CHAIN: &str = "nvtrust/guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/samples/hopperCertChain.txt";

    impl RecordedGpus {
        /// No GPUs.
        pub fn new() -> Self {
            Self::default()
        }

        /// Adds a device that answers every request with `attestation`.
        pub fn with_device(mut self, device: GpuDevice, attestation: GpuAttestation) -> Self {
            self.devices.push((device, attestation));
            self
        }

        /// A GPU (index `index`, CC `cc_mode`) replaying the recorded H100 report.
        pub fn with_recorded_hopper(
            self,
            vectors: &Path,
            index: u32,
            cc_mode: CcMode,
        ) -> std::io::Result<Self> {
            let text = std::fs::read_to_string(vectors.join(HOPPER_REPORT))?;
            let report = hex::decode(text.split_whitespace().collect::<String>())
                .map_err(std::io::Error::other)?;
            let chain = std::fs::read(vectors.join(HOPPER_CHAIN))?;
            let device = GpuDevice {
                index,
                uuid: format!("GPU-recorded-{index}"),
                model: "NVIDIA H100 (recorded report)".to_owned(),
                arch: "hopper".to_owned(),
                driver_version: "recorded".to_owned(),
                vbios_version: "recorded".to_owned(),
                cc_mode,
            };
            Ok(self.with_device(
                device,
                GpuAttestation {
                    report,
                    certificate_chain: chain,
                },
            ))
        }

        /// The requester nonce of the recorded H100 report.
        pub fn hopper_nonce(vectors: &Path) -> std::io::Result<[u8; 32]> {
            let text = std::fs::read_to_string(vectors.join(HOPPER_REPORT))?;
            let report = hex::decode(text.split_whitespace().collect::<String>())
                .map_err(std::io::Error::other)?;
            report
                .get(4..36)
                .and_then(|nonce| nonce.try_into().ok())
                .ok_or_else(|| std::io::Error::other("recorded report too short"))
        }

        /// The request log (shared, readable after the double moved).
        pub fn requests(&self) -> RequestLog {
            Arc::clone(&self.requests)
        }
    }

    impl GpuEvidenceSource for RecordedGpus {
        fn devices(&mut self) -> Result<Vec<GpuDevice>, GpuCollectError> {
            Ok(self
                .devices
                .iter()
                .map(|(device, _)| device.clone())
                .collect())
        }

        fn attestation(
            &mut self,
            index: u32,
            nonce: [u8; 32],
        ) -> Result<GpuAttestation, GpuCollectError> {
            if let Ok(mut requests) = self.requests.lock() {
                requests.push((index, nonce));
            }
            self.devices
                .iter()
                .find(|(device, _)| device.index == index)
                .map(|(_, attestation)| attestation.clone())
                .ok_or(GpuCollectError::Nvml {
                    operation: "device_by_index",
                    index,
                    detail: "no such recorded device".to_owned(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recorded::RecordedGpus;
    use super::*;
    use crate::collect::snp::recorded::vectors_dir;
    use crate::policy::GpuPolicy;

    fn recorded(cc_modes: &[CcMode]) -> Option<(RecordedGpus, [u8; 32])> {
        let vectors = vectors_dir();
        let mut gpus = RecordedGpus::new();
        for (index, cc_mode) in cc_modes.iter().enumerate() {
            gpus = match gpus.with_recorded_hopper(&vectors, index as u32, *cc_mode) {
                Ok(gpus) => gpus,
                Err(err) => {
                    eprintln!(
                        "SKIP gpu collector: vectors not found at {} ({err})",
                        vectors.display()
                    );
                    return None;
                }
            };
        }
        Some((gpus, RecordedGpus::hopper_nonce(&vectors).ok()?))
    }

    #[test]
    fn cc_gpus_are_collected_and_their_reports_verify() {
        let Some((mut gpus, nonce)) = recorded(&[CcMode::On, CcMode::Off, CcMode::Devtools]) else {
            return;
        };
        let requests = gpus.requests();
        let devices = gpus.devices().unwrap();
        let pieces = collect(&mut gpus, &devices, &nonce);
        assert_eq!(pieces.len(), 3);
        // Only the GPUs in CC mode were asked, each with the binding as nonce.
        assert_eq!(
            requests.lock().unwrap().as_slice(),
            &[(0, nonce), (2, nonce)]
        );
        let off = pieces[1].clone();
        assert!(
            matches!(&off, Piece::Absent { reason } if reason.contains("not in confidential-computing mode")),
            "{off:?}"
        );
        let evidence = pieces[0].present().unwrap();
        assert_eq!(
            evidence.certificates.len(),
            5,
            "PEM chain split into DER, leaf first"
        );
        let report = SpdmReport::parse_binary(&evidence.report.0).unwrap();
        let ev = crate::gpu::spdm::GpuEvidence {
            report,
            chain: evidence.certificates.iter().map(|c| c.0.clone()).collect(),
            rims: Vec::new(),
        };
        let appraisal =
            crate::gpu::spdm::verify(&ev, Some(&nonce), &GpuPolicy::default(), 1_767_225_600)
                .unwrap();
        assert!(
            appraisal
                .checks
                .iter()
                .any(|c| c.name.contains("signature") && c.status == crate::CheckStatus::Pass),
            "{appraisal:?}"
        );
        assert_eq!(pieces[2].present().unwrap().cc_mode, CcMode::Devtools);
    }

    #[test]
    fn a_report_for_another_nonce_is_recorded_as_absent() {
        let Some((mut gpus, _nonce)) = recorded(&[CcMode::On]) else {
            return;
        };
        let devices = gpus.devices().unwrap();
        let pieces = collect(&mut gpus, &devices, &[7; 32]);
        let Piece::Absent { reason } = &pieces[0] else {
            panic!("a report for another nonce was accepted");
        };
        assert!(reason.contains("not the binding"), "{reason}");
        assert!(reason.contains(&hex::encode([7u8; 32])), "{reason}");
    }

    #[test]
    fn broken_driver_answers_are_absent_with_the_reason() {
        let device = GpuDevice {
            index: 0,
            uuid: "GPU-x".to_owned(),
            model: "m".to_owned(),
            arch: "hopper".to_owned(),
            driver_version: "1".to_owned(),
            vbios_version: "2".to_owned(),
            cc_mode: CcMode::On,
        };
        let mut gpus = RecordedGpus::new().with_device(
            device.clone(),
            GpuAttestation {
                report: vec![0x11, 0xe0, 0, 0],
                certificate_chain: Vec::new(),
            },
        );
        let pieces = collect(&mut gpus, std::slice::from_ref(&device), &[0; 32]);
        assert!(pieces[0].present().is_none());
        let unknown = GpuDevice {
            cc_mode: CcMode::Unknown,
            ..device
        };
        let pieces = collect(&mut gpus, &[unknown], &[0; 32]);
        assert!(
            matches!(&pieces[0], Piece::Absent { reason } if reason.contains("does not report"))
        );
    }

    #[test]
    fn der_chains_are_split_and_padding_ignored() {
        let one = [vec![0x30, 0x03], vec![1, 2, 3]].concat();
        let two = [vec![0x30, 0x81, 0x80], vec![9; 0x80]].concat();
        let chain = [one.clone(), two.clone(), vec![0; 10]].concat();
        assert_eq!(chain_ders(&chain).unwrap(), vec![one, two]);
        assert!(chain_ders(&[0x31, 0]).unwrap_err().contains("byte 0"));
        assert!(chain_ders(&[0; 4]).unwrap_err().contains("empty"));
    }
}
