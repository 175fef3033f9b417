//! The SEV-SNP collector: an extended attestation report whose REPORT_DATA is the
//! bundle's binding digest followed by 32 zero bytes, and the VCEK/VLEK (with the
//! ASK/ASVK and ARK when the host supplies them) from the report's certificate table.
//!
//! The firmware sits behind [`SnpFirmware`]. [`SevGuest`] (feature `collect-snp`)
//! talks to `/dev/sev-guest` through the `sev` crate's `SNP_GET_EXT_REPORT` ioctl;
//! [`recorded::RecordedSnpFirmware`] (only with `cfg(test)` or the `test-doubles`
//! feature) is a labelled test double that replays a recorded real report and records
//! what it was asked, so everything around the ioctl is tested without an SNP guest.
//! Nothing selects the double at run time: the agent constructs [`SevGuest`] or
//! records the piece as absent.
//!
//! [`collect`] checks what the firmware returned before it goes into a bundle: the
//! report parses, carries exactly the REPORT_DATA asked for, is signed, and the
//! certificate table holds the key the report names (VCEK or VLEK).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::bundle::model::{Base64Bytes, SnpEvidence, snp_report_data};
use crate::snp::{REPORT_SIZE, SigningKey, SnpReport, SnpReportError};

/// The SEV-SNP guest device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// What a certificate-table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpCertKind {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// The AMD signing key under the ARK: the ASK (signs VCEKs) or the ASVK (signs
    /// VLEKs); the GHCB certificate table has one GUID for both.
    Ask,
    /// AMD Root Key.
    Ark,
    /// A CRL or an entry this collector does not use.
    Other,
}

/// One certificate from the host's certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpCertificate {
    /// What it is.
    pub kind: SnpCertKind,
    /// Its bytes as the host supplied them (DER, or PEM from some hosts).
    pub bytes: Vec<u8>,
}

/// What the firmware returns for an extended report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedReport {
    /// The attestation report (0x4A0 bytes).
    pub report: Vec<u8>,
    /// The certificate table (empty when the host supplies none).
    pub certificates: Vec<SnpCertificate>,
}

/// Errors of the SNP collector.
#[derive(Debug, Error)]
pub enum SnpCollectError {
    /// No guest device: this is not an SEV-SNP guest.
    #[error("no SEV-SNP guest device at {path} (not running in an SEV-SNP guest)")]
    NoDevice {
        /// The device path.
        path: PathBuf,
    },
    /// The device exists but cannot be opened.
    #[error("cannot open the SEV-SNP guest device {path}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The firmware refused the request.
    #[error("SNP_GET_EXT_REPORT on {path} failed: {detail}")]
    Firmware {
        /// The device path.
        path: PathBuf,
        /// The `sev` crate's description of the firmware or VMM error.
        detail: String,
    },
    /// The report does not parse.
    #[error("the firmware's attestation report does not parse")]
    Report(#[source] SnpReportError),
    /// The report is not the size of a report.
    #[error("the firmware returned {len} bytes, not a {REPORT_SIZE}-byte attestation report")]
    ReportSize {
        /// Bytes returned.
        len: usize,
    },
    /// The report carries other REPORT_DATA than the request's.
    #[error("the firmware's report carries REPORT_DATA {found}, not the requested {expected}")]
    ReportDataMismatch {
        /// Hex of the report's REPORT_DATA.
        found: String,
        /// Hex of the requested REPORT_DATA.
        expected: String,
    },
    /// The report names no signing key.
    #[error("the firmware's report is not signed (SIGNING_KEY is {key:?})")]
    Unsigned {
        /// The report's signing-key field.
        key: SigningKey,
    },
    /// The host supplied no certificate for the report's key.
    #[error(
        "the host's certificate table holds no {key} certificate for the report (the hypervisor must provide it, e.g. with snphost import)"
    )]
    NoEndorsementKey {
        /// `VCEK` or `VLEK`.
        key: &'static str,
    },
    /// A certificate from the table is neither DER nor a PEM certificate.
    #[error("the certificate table's {kind:?} entry is not a DER or PEM certificate")]
    BadCertificate {
        /// Which entry.
        kind: SnpCertKind,
    },
}

/// The SEV-SNP firmware, as the collector uses it.
pub trait SnpFirmware: Send {
    /// Requests an extended attestation report carrying `report_data`.
    fn extended_report(&mut self, report_data: [u8; 64])
    -> Result<ExtendedReport, SnpCollectError>;
}

/// Collects the SNP piece: an extended report with REPORT_DATA = `binding` || 32 zero
/// bytes, checked, with the VCEK/VLEK and chain from the certificate table.
pub fn collect(
    firmware: &mut dyn SnpFirmware,
    binding: &[u8; 32],
) -> Result<SnpEvidence, SnpCollectError> {
    let report_data = snp_report_data(binding);
    let extended = firmware.extended_report(report_data)?;
    if extended.report.len() != REPORT_SIZE {
        return Err(SnpCollectError::ReportSize {
            len: extended.report.len(),
        });
    }
    let report = SnpReport::parse(&extended.report).map_err(SnpCollectError::Report)?;
    if report.report_data != report_data {
        return Err(SnpCollectError::ReportDataMismatch {
            found: hex::encode(report.report_data),
            expected: hex::encode(report_data),
        });
    }
    let (key_kind, signer_kind, key_name) = match report.signing_key {
        SigningKey::Vcek => (SnpCertKind::Vcek, SnpCertKind::Ask, "VCEK"),
        SigningKey::Vlek => (SnpCertKind::Vlek, SnpCertKind::Ask, "VLEK"),
        key => return Err(SnpCollectError::Unsigned { key }),
    };
    let der_of = |kind: SnpCertKind| -> Result<Option<Vec<u8>>, SnpCollectError> {
        extended
            .certificates
            .iter()
            .find(|cert| cert.kind == kind)
            .map(certificate_der)
            .transpose()
    };
    let vek = der_of(key_kind)?.ok_or(SnpCollectError::NoEndorsementKey { key: key_name })?;
    // The chain is the signer then the root, or nothing (the verifier's pinned chain).
    let chain = match (der_of(signer_kind)?, der_of(SnpCertKind::Ark)?) {
        (Some(signer), Some(root)) => vec![Base64Bytes(signer), Base64Bytes(root)],
        _ => Vec::new(),
    };
    Ok(SnpEvidence {
        report: Base64Bytes(extended.report),
        vcek: Base64Bytes(vek),
        chain,
    })
}

fn certificate_der(cert: &SnpCertificate) -> Result<Vec<u8>, SnpCollectError> {
    let bad = || SnpCollectError::BadCertificate { kind: cert.kind };
    let der = if plinth_toolbox::pem::is_pem(&cert.bytes) {
        plinth_toolbox::pem::der_or_pem(&cert.bytes, "CERTIFICATE", "snp certificate table")
            .map_err(|_| bad())?
    } else {
        // Hosts pad table entries; keep the outer DER SEQUENCE.
        crate::collect::der_prefix(&cert.bytes)
            .ok_or_else(bad)?
            .to_vec()
    };
    Ok(der)
}

/// Whether the host has an SEV-SNP guest device at `path`.
pub fn device_present(path: &Path) -> bool {
    path.exists()
}

#[cfg(feature = "collect-snp")]
pub use guest::SevGuest;

#[cfg(feature = "collect-snp")]
mod guest {
    use std::path::{Path, PathBuf};

    use sev::firmware::guest::Firmware;
    use sev::firmware::host::CertType;

    use super::{ExtendedReport, SEV_GUEST_DEVICE, SnpCertKind, SnpCertificate, SnpCollectError};

    /// The real SEV-SNP guest device, through the `sev` crate (which opens
    /// `/dev/sev-guest` by that path).
    #[derive(Debug)]
    pub struct SevGuest {
        firmware: Firmware,
        path: PathBuf,
    }

    impl SevGuest {
        /// Opens `/dev/sev-guest`; absent or unopenable devices are errors naming it.
        pub fn open() -> Result<Self, SnpCollectError> {
            let path = PathBuf::from(SEV_GUEST_DEVICE);
            if !Path::new(&path).exists() {
                return Err(SnpCollectError::NoDevice { path });
            }
            let firmware = Firmware::open().map_err(|source| SnpCollectError::Open {
                path: path.clone(),
                source,
            })?;
            Ok(Self { firmware, path })
        }
    }

    impl super::SnpFirmware for SevGuest {
        fn extended_report(
            &mut self,
            report_data: [u8; 64],
        ) -> Result<ExtendedReport, SnpCollectError> {
            let (report, table) = self
                .firmware
                .get_ext_report(None, Some(report_data), None)
                .map_err(|err| SnpCollectError::Firmware {
                    path: self.path.clone(),
                    detail: err.to_string(),
                })?;
            let certificates = table
                .unwrap_or_default()
                .into_iter()
                .map(|entry| SnpCertificate {
                    kind: match entry.cert_type {
                        CertType::VCEK => SnpCertKind::Vcek,
                        CertType::VLEK => SnpCertKind::Vlek,
                        CertType::ASK => SnpCertKind::Ask,
                        CertType::ARK => SnpCertKind::Ark,
                        _ => SnpCertKind::Other,
                    },
                    bytes: entry.data,
                })
                .collect();
            Ok(ExtendedReport {
                report,
                certificates,
            })
        }
    }
}

#[cfg(any(test, feature = "test-doubles"))]
pub mod recorded {
    //! **Test double.** Replays a recorded real SEV-SNP report and certificate table and
    //! records every REPORT_DATA it was asked for. Compiled only for tests and the
    //! `test-doubles` feature; the agent never selects it.

    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::{ExtendedReport, SnpCertKind, SnpCertificate, SnpCollectError, SnpFirmware};

    /// The evidence vectors directory: `$PLINTH_VECTORS`, else `shared/vectors` beside
    /// the repository.
    pub fn vectors_dir() -> PathBuf {
        std::env::var_os("PLINTH_VECTORS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors"))
            })
    }

    /// Every REPORT_DATA requested, in order.
    pub type RequestLog = Arc<Mutex<Vec<[u8; 64]>>>;

    /// **Test double** of [`SnpFirmware`]: always answers with the recorded report.
    #[derive(Debug, Clone)]
    pub struct RecordedSnpFirmware {
        recorded: ExtendedReport,
        requests: RequestLog,
    }

    impl RecordedSnpFirmware {
        /// Replays `recorded`.
        pub fn new(recorded: ExtendedReport) -> Self {
            Self {
                recorded,
                requests: RequestLog::default(),
            }
        }

        /// The recorded Milan report of go-sev-guest (REPORT_DATA 0102030405 then
        /// zeros, so its "binding" is that and 27 zero bytes), its VCEK and the
        /// Milan ASK+ARK, from the vectors directory.
        pub fn milan(vectors: &Path) -> std::io::Result<Self> {
            let dir = vectors.join("go-sev-guest/verify/testdata");
            let report = std::fs::read(dir.join("attestation.bin"))?;
            let vcek = std::fs::read(dir.join("vcek.testcer"))?;
            let chain = std::fs::read_to_string(dir.join("milan.testcer"))?;
            let mut certificates = vec![SnpCertificate {
                kind: SnpCertKind::Vcek,
                bytes: vcek,
            }];
            // milan.testcer is ASK then ARK, as PEM.
            let mut blocks = chain.split_inclusive("-----END CERTIFICATE-----\n");
            for kind in [SnpCertKind::Ask, SnpCertKind::Ark] {
                if let Some(block) = blocks.next() {
                    certificates.push(SnpCertificate {
                        kind,
                        bytes: block.trim_start().as_bytes().to_vec(),
                    });
                }
            }
            Ok(Self::new(ExtendedReport {
                report,
                certificates,
            }))
        }

        /// The binding digest the recorded Milan report carries.
        pub fn milan_binding() -> [u8; 32] {
            let mut binding = [0u8; 32];
            binding[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
            binding
        }

        /// The log of requests (shared, so it can be read after the double moved).
        pub fn requests(&self) -> RequestLog {
            Arc::clone(&self.requests)
        }
    }

    impl SnpFirmware for RecordedSnpFirmware {
        fn extended_report(
            &mut self,
            report_data: [u8; 64],
        ) -> Result<ExtendedReport, SnpCollectError> {
            if let Ok(mut requests) = self.requests.lock() {
                requests.push(report_data);
            }
            Ok(self.recorded.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recorded::{RecordedSnpFirmware, vectors_dir};
    use super::*;
    use crate::policy::SnpPolicy;

    fn milan() -> Option<RecordedSnpFirmware> {
        let vectors = vectors_dir();
        match RecordedSnpFirmware::milan(&vectors) {
            Ok(double) => Some(double),
            Err(err) => {
                eprintln!(
                    "SKIP snp collector: vectors not found at {} ({err})",
                    vectors.display()
                );
                None
            }
        }
    }

    #[test]
    fn recorded_report_is_collected_and_verifies() {
        let Some(mut firmware) = milan() else { return };
        let requests = firmware.requests();
        let binding = RecordedSnpFirmware::milan_binding();
        let evidence = collect(&mut firmware, &binding).unwrap();
        assert_eq!(
            requests.lock().unwrap().as_slice(),
            &[snp_report_data(&binding)]
        );
        assert_eq!(evidence.chain.len(), 2);
        // The PEM entries were turned into DER.
        assert_eq!(evidence.chain[0].0[0], 0x30);
        let report = SnpReport::parse(&evidence.report.0).unwrap();
        let ev = crate::snp::SnpEvidence {
            report,
            vcek_der: evidence.vcek.0.clone(),
            chain: Some(evidence.chain.iter().map(|c| c.0.clone()).collect()),
        };
        let policy = SnpPolicy {
            allow_debug: true,
            ..SnpPolicy::default()
        };
        let appraisal = crate::snp::verify(&ev, &policy, 1_767_225_600).unwrap();
        assert!(appraisal.verified(), "{appraisal:?}");
    }

    #[test]
    fn a_report_for_other_data_is_refused() {
        let Some(mut firmware) = milan() else { return };
        let err = collect(&mut firmware, &[9; 32]).unwrap_err();
        assert!(
            matches!(err, SnpCollectError::ReportDataMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&hex::encode([9u8; 32])), "{err}");
    }

    #[test]
    fn missing_or_bad_certificates_are_named() {
        let Some(firmware) = milan() else { return };
        let binding = RecordedSnpFirmware::milan_binding();
        let mut recorded = firmware.clone();
        let base = recorded.extended_report([0; 64]).unwrap();

        let without_vcek = ExtendedReport {
            certificates: base
                .certificates
                .iter()
                .filter(|c| c.kind != SnpCertKind::Vcek)
                .cloned()
                .collect(),
            ..base.clone()
        };
        let err = collect(&mut RecordedSnpFirmware::new(without_vcek), &binding).unwrap_err();
        assert!(err.to_string().contains("no VCEK certificate"), "{err}");

        let only_vcek = ExtendedReport {
            certificates: base.certificates[..1].to_vec(),
            ..base.clone()
        };
        let evidence = collect(&mut RecordedSnpFirmware::new(only_vcek), &binding).unwrap();
        assert!(
            evidence.chain.is_empty(),
            "no chain: the verifier's pinned one"
        );

        let mut garbage = base.clone();
        garbage.certificates[0].bytes = b"not a certificate".to_vec();
        let err = collect(&mut RecordedSnpFirmware::new(garbage), &binding).unwrap_err();
        assert!(err.to_string().contains("Vcek"), "{err}");

        let mut padded = base.clone();
        padded.certificates[0].bytes.extend([0u8; 100]);
        let evidence = collect(&mut RecordedSnpFirmware::new(padded), &binding).unwrap();
        assert_eq!(evidence.vcek.0.len(), base.certificates[0].bytes.len());

        let short = ExtendedReport {
            report: base.report[..100].to_vec(),
            ..base
        };
        let err = collect(&mut RecordedSnpFirmware::new(short), &binding).unwrap_err();
        assert!(err.to_string().contains("100 bytes"), "{err}");
    }
}
