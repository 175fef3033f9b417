//! SPDM GET_MEASUREMENTS request/response reports as NVIDIA devices produce
//! them, and their verification.
//!
//! A report is the GET_MEASUREMENTS request (SPDM 1.1: version, code 0xE0,
//! param1, param2, a 32-byte nonce and the slot id: 37 bytes) followed by the
//! MEASUREMENTS response (version, code 0x60, param1, param2, block count, a
//! 24-bit record length, the measurement record, the responder's 32-byte
//! nonce, a 16-bit opaque length, NVIDIA's opaque data, then a 96-byte ECDSA
//! P-384 signature, r || s big-endian). The signature covers every byte before
//! it, request included, hashed with SHA-384.
//!
//! The report is parsed by its SPDM lengths, never by the input's length:
//! bytes after the signature are kept in [`SpdmReport::trailing`] and judged
//! by the `gpu.trailing_data` check. The NVIDIA driver (nvtrust, the SDK)
//! writes nothing after the signature; the Confidential Containers stack
//! records the report with one 0x00 byte after it. Zero padding is accepted
//! and noted, anything else is refused, and `gpu.strict_length = true`
//! refuses any trailing byte.

use std::collections::BTreeMap;

use serde_json::json;
use thiserror::Error;

use crate::bytes::{BytesError, Reader, decode_hex_text};
use crate::check::{Appraisal, Aspect, Check};
use crate::gpu::rim::Rim;
use crate::policy::GpuPolicy;
use crate::x509chain::{self, X509ChainError};

/// Length of the ECDSA P-384 signature.
pub const SIGNATURE_LEN: usize = 96;
const REQUEST_CODE: u8 = 0xE0;
const RESPONSE_CODE: u8 = 0x60;
const OID_TCG_DICE_TCB_INFO: &str = "2.23.133.5.4.1";
const OID_TCG_DICE_TCB_INFO_EXT: &str = "2.23.133.5.4.1.1";

/// The pinned NVIDIA Device Identity CA.
pub const NVIDIA_DEVICE_ROOT_PEM: &str =
    include_str!("../../certs/nvidia/device_identity_root.pem");

/// Errors parsing an SPDM report.
#[derive(Debug, Error)]
pub enum SpdmError {
    /// A field ran past the end.
    #[error("spdm report truncated")]
    Truncated(#[from] BytesError),
    /// Not hex text and not binary of a plausible size.
    #[error("spdm report is neither binary nor hex text")]
    Encoding,
    /// Wrong request/response codes.
    #[error("spdm {which} code is {code:#04x}, expected {expected:#04x}")]
    Code {
        /// Request or response.
        which: &'static str,
        /// The code found.
        code: u8,
        /// The code expected.
        expected: u8,
    },
    /// The request did not ask for a signature.
    #[error("spdm request param1 {param1:#04x} does not request a signature")]
    Unsigned {
        /// param1.
        param1: u8,
    },
    /// The measurement record holds bytes its blocks do not account for.
    #[error("spdm measurement record has {extra} bytes more than its {blocks} blocks account for")]
    RecordLength {
        /// The extra bytes.
        extra: usize,
        /// NumberOfBlocks.
        blocks: u8,
    },
    /// A measurement block was malformed.
    #[error("spdm measurement block {index} is malformed")]
    Block {
        /// Block index.
        index: u8,
        /// What ran short.
        #[source]
        source: BytesError,
    },
}

/// One measurement block (DMTF format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// Block index (from 1).
    pub index: u8,
    /// Measurement specification (1 = DMTF).
    pub spec: u8,
    /// DMTF value type.
    pub value_type: u8,
    /// The measurement value.
    pub value: Vec<u8>,
}

/// A parsed report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdmReport {
    /// SPDM version of the request (0x11 = 1.1).
    pub version: u8,
    /// Request param1 and param2.
    pub request_params: (u8, u8),
    /// The requester's nonce.
    pub request_nonce: [u8; 32],
    /// Slot id of the certificate chain.
    pub slot_id: u8,
    /// Response param1 and param2.
    pub response_params: (u8, u8),
    /// Measurement blocks.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub response_nonce: [u8; 32],
    /// NVIDIA opaque data fields: (type, value), in order.
    pub opaque: Vec<(u16, Vec<u8>)>,
    /// True when the opaque data parsed completely as type/length/value fields.
    pub opaque_well_formed: bool,
    /// The signature (r || s, big-endian).
    pub signature: Vec<u8>,
    /// Length of the signed part: every byte before the signature.
    pub signed_len: usize,
    /// Bytes after the signature (not signed; see the module documentation).
    pub trailing: Vec<u8>,
    /// The raw report, trailing bytes included.
    pub raw: Vec<u8>,
}

/// Names an NVIDIA opaque data field.
pub fn opaque_field_name(field_type: u16) -> String {
    let name = match field_type {
        1 => "CERT_ISSUER_NAME",
        2 => "CERT_AUTHORITY_KEY_IDENTIFIER",
        3 => "DRIVER_VERSION",
        4 => "GPU_INFO",
        5 => "SKU",
        6 => "VBIOS_VERSION",
        7 => "MANUFACTURER_ID",
        8 => "TAMPER_DETECTION",
        9 => "SMC",
        10 => "VPR",
        11 => "NVDEC0_STATUS",
        12 => "MSRSCNT",
        13 => "CPRINFO",
        14 => "BOARD_ID",
        15 => "CHIP_SKU",
        16 => "CHIP_SKU_MOD",
        17 => "PROJECT",
        18 => "PROJECT_SKU",
        19 => "PROJECT_SKU_MOD",
        20 => "FWID",
        21 => "PROTECTED_PCIE_STATUS",
        22 => "SWITCH_PDI",
        23 => "FLOORSWEPT_PORTS",
        24 => "POSITION_ID",
        25 => "LOCK_SWITCH_STATUS",
        32 => "GPU_LINK_CONN",
        33 => "SYS_ENABLE_STATUS",
        34 => "OPAQUE_DATA_VERSION",
        35 => "CHIP_INFO",
        36 => "FEATURE_FLAG",
        255 => "INVALID",
        other => return format!("OPAQUE_FIELD_ID_{other}"),
    };
    format!("OPAQUE_FIELD_ID_{name}")
}

const OPAQUE_DRIVER_VERSION: u16 = 3;
const OPAQUE_VBIOS_VERSION: u16 = 6;
const OPAQUE_FWID: u16 = 20;

impl SpdmReport {
    /// Parses a report given as binary or as hex text.
    pub fn parse(input: &[u8]) -> Result<Self, SpdmError> {
        let is_text = input
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace() || *b == b'x');
        if is_text && !input.is_empty() {
            let text = std::str::from_utf8(input).map_err(|_| SpdmError::Encoding)?;
            let bytes = decode_hex_text(text).map_err(|_| SpdmError::Encoding)?;
            return Self::parse_binary(&bytes);
        }
        Self::parse_binary(input)
    }

    /// Parses a binary report.
    pub fn parse_binary(raw: &[u8]) -> Result<Self, SpdmError> {
        let mut r = Reader::new(raw);
        let version = r.u8("request.version")?;
        let code = r.u8("request.code")?;
        if code != REQUEST_CODE {
            return Err(SpdmError::Code {
                which: "request",
                code,
                expected: REQUEST_CODE,
            });
        }
        let param1 = r.u8("request.param1")?;
        let param2 = r.u8("request.param2")?;
        if param1 & 1 == 0 {
            return Err(SpdmError::Unsigned { param1 });
        }
        let request_nonce = r.array("request.nonce")?;
        let slot_id = if version >= 0x11 {
            r.u8("request.slot_id")?
        } else {
            0
        };
        let _response_version = r.u8("response.version")?;
        let code = r.u8("response.code")?;
        if code != RESPONSE_CODE {
            return Err(SpdmError::Code {
                which: "response",
                code,
                expected: RESPONSE_CODE,
            });
        }
        let rp1 = r.u8("response.param1")?;
        let rp2 = r.u8("response.param2")?;
        let n_blocks = r.u8("response.number_of_blocks")?;
        let record_len = r.u24_le("response.measurement_record_length")?;
        let record = r.take(record_len as usize, "response.measurement_record")?;
        let blocks = parse_blocks(record, n_blocks)?;
        let response_nonce = r.array("response.nonce")?;
        let opaque_len = r.u16_le("response.opaque_length")?;
        let opaque_bytes = r.take(usize::from(opaque_len), "response.opaque_data")?;
        let (opaque, opaque_well_formed) = parse_opaque(opaque_bytes);
        let signed_len = r.position();
        let signature = r.take(SIGNATURE_LEN, "response.signature")?.to_vec();
        let trailing = r.rest().to_vec();
        Ok(Self {
            version,
            request_params: (param1, param2),
            request_nonce,
            slot_id,
            response_params: (rp1, rp2),
            blocks,
            response_nonce,
            opaque,
            opaque_well_formed,
            signature,
            signed_len,
            trailing,
            raw: raw.to_vec(),
        })
    }

    /// The signed bytes (everything before the signature, nothing after it).
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..self.signed_len).unwrap_or_default()
    }

    /// The value of an opaque field.
    pub fn opaque_field(&self, field_type: u16) -> Option<&[u8]> {
        self.opaque
            .iter()
            .find(|(t, _)| *t == field_type)
            .map(|(_, v)| v.as_slice())
    }

    /// The driver version string, if reported.
    pub fn driver_version(&self) -> Option<String> {
        self.opaque_field(OPAQUE_DRIVER_VERSION)
            .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
    }

    /// The VBIOS version as NVIDIA prints it (e.g. "96.00.74.00.20").
    pub fn vbios_version(&self) -> Option<String> {
        let v = self.opaque_field(OPAQUE_VBIOS_VERSION)?;
        if v.len() != 8 {
            return Some(hex::encode(v));
        }
        Some(format!(
            "{:02X}.{:02X}.{:02X}.{:02X}.{:02X}",
            v[3], v[2], v[1], v[0], v[4]
        ))
    }
}

fn parse_blocks(record: &[u8], n_blocks: u8) -> Result<Vec<MeasurementBlock>, SpdmError> {
    let mut r = Reader::new(record);
    let mut blocks = Vec::new();
    for ordinal in 0..n_blocks {
        let block_err = |source| SpdmError::Block {
            index: ordinal,
            source,
        };
        let index = r.u8("block.index").map_err(block_err)?;
        let spec = r.u8("block.measurement_specification").map_err(block_err)?;
        let size = r.u16_le("block.measurement_size").map_err(block_err)?;
        let body = r
            .take(usize::from(size), "block.measurement")
            .map_err(block_err)?;
        let mut body_reader = Reader::new(body);
        let value_type = body_reader.u8("dmtf.value_type").map_err(block_err)?;
        let value_size = body_reader.u16_le("dmtf.value_size").map_err(block_err)?;
        let value = body_reader
            .take(usize::from(value_size), "dmtf.value")
            .map_err(block_err)?
            .to_vec();
        blocks.push(MeasurementBlock {
            index,
            spec,
            value_type,
            value,
        });
    }
    if r.remaining() != 0 {
        return Err(SpdmError::RecordLength {
            extra: r.remaining(),
            blocks: n_blocks,
        });
    }
    Ok(blocks)
}

fn parse_opaque(bytes: &[u8]) -> (Vec<(u16, Vec<u8>)>, bool) {
    let mut r = Reader::new(bytes);
    let mut fields = Vec::new();
    while r.remaining() > 0 {
        let Ok(field_type) = r.u16_le("opaque.type") else {
            return (fields, false);
        };
        let Ok(size) = r.u16_le("opaque.size") else {
            return (fields, false);
        };
        let Ok(value) = r.take(usize::from(size), "opaque.value") else {
            return (fields, false);
        };
        fields.push((field_type, value.to_vec()));
    }
    (fields, true)
}

/// Inputs for verifying one device.
#[derive(Debug, Clone)]
pub struct GpuEvidence {
    /// The parsed report.
    pub report: SpdmReport,
    /// The device certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// RIMs to compare measurements with.
    pub rims: Vec<Rim>,
}

/// Errors that are bad inputs rather than failed evidence.
#[derive(Debug, Error)]
pub enum GpuVerifyError {
    /// The pinned root did not parse (a build problem).
    #[error("pinned NVIDIA root does not parse")]
    PinnedRoot(#[source] X509ChainError),
    /// The leaf certificate did not parse.
    #[error("bad device certificate")]
    Leaf(#[source] X509ChainError),
}

/// The FWID at the end of a TCG DICE TcbInfo extension (its last 48-byte
/// OCTET STRING), as NVIDIA's verifiers read it.
pub fn tcb_info_fwid(value: &[u8]) -> Option<&[u8]> {
    let len = value.len();
    if len >= 50 && value[len - 50] == 0x04 && value[len - 49] == 0x30 {
        value.get(len - 48..)
    } else {
        None
    }
}

/// Verifies the report's signature with the leaf certificate's key.
pub fn verify_report_signature(
    report: &SpdmReport,
    leaf_key: &x509chain::RawPublicKey,
) -> Result<String, String> {
    match leaf_key {
        x509chain::RawPublicKey::P384(point) => crate::crypto::signature::UnparsedPublicKey::new(
            &crate::crypto::signature::ECDSA_P384_SHA384_FIXED,
            point,
        )
        .verify(report.signed_bytes(), &report.signature)
        .map(|()| {
            format!(
                "ECDSA P-384/SHA-384 over request and response (bytes 0..{}) verifies with the leaf certificate",
                report.signed_len
            )
        })
        .map_err(|_| {
            "ECDSA P-384/SHA-384 signature does not verify with the leaf certificate".to_owned()
        }),
        _ => Err("leaf certificate key is not P-384".to_owned()),
    }
}

/// Judges the bytes after the signature: none passes; zero padding passes
/// with a note (it is what the Confidential Containers stack records) unless
/// `strict_length` is set; any non-zero byte fails, since nothing after the
/// signature is signed.
pub fn trailing_data_check(report: &SpdmReport, strict_length: bool) -> Check {
    const NAME: &str = "gpu.trailing_data";
    let count = report.trailing.len();
    let offset = report.signed_len + SIGNATURE_LEN;
    if count == 0 {
        return Check::pass(NAME, Aspect::Hardware, "no bytes after the signature");
    }
    if report.trailing.iter().all(|b| *b == 0) {
        if strict_length {
            return Check::fail(
                NAME,
                Aspect::Hardware,
                format!(
                    "{count} byte(s) of zero padding after the signature (offset {offset}), refused because the policy sets gpu.strict_length = true"
                ),
            );
        }
        return Check::pass(
            NAME,
            Aspect::Hardware,
            format!(
                "note: {count} byte(s) of zero padding after the signature (offset {offset}; not signed, ignored; gpu.strict_length = true refuses it)"
            ),
        );
    }
    let shown = report.trailing.get(..32).unwrap_or(&report.trailing);
    Check::fail(
        NAME,
        Aspect::Hardware,
        format!(
            "{count} unsigned byte(s) after the signature (offset {offset}) are not zero padding: {}{}",
            hex::encode(shown),
            if count > shown.len() { "..." } else { "" }
        ),
    )
}

/// Verifies a report against its chain at unix time `at`. `nonce` is the
/// expected requester nonce (`--nonce`, else the policy's).
pub fn verify(
    evidence: &GpuEvidence,
    nonce: Option<&[u8]>,
    policy: &GpuPolicy,
    at: i64,
) -> Result<Appraisal, GpuVerifyError> {
    let report = &evidence.report;
    let roots = x509chain::parse_bundle(NVIDIA_DEVICE_ROOT_PEM.as_bytes(), "pinned nvidia root")
        .map_err(GpuVerifyError::PinnedRoot)?;
    let leaf_der = evidence
        .chain
        .first()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let leaf = x509chain::parse_cert(leaf_der, "device certificate chain", 0)
        .map_err(GpuVerifyError::Leaf)?;
    let mut appraisal = Appraisal::new("gpu");
    appraisal.nonce = Some(hex::encode(report.request_nonce));
    appraisal.claim("spdm_version", format!("{:#04x}", report.version));
    appraisal.claim("request_nonce", hex::encode(report.request_nonce));
    appraisal.claim("device", x509chain::subject_name(&leaf));
    if let Some(driver) = report.driver_version() {
        appraisal.claim("driver_version", driver);
    }
    if let Some(vbios) = report.vbios_version() {
        appraisal.claim("vbios_version", vbios);
    }
    let measurements: serde_json::Map<String, serde_json::Value> = report
        .blocks
        .iter()
        .map(|b| (b.index.to_string(), json!(hex::encode(&b.value))))
        .collect();
    appraisal.claim("measurements", serde_json::Value::Object(measurements));
    let opaque: serde_json::Map<String, serde_json::Value> = report
        .opaque
        .iter()
        .map(|(t, v)| (opaque_field_name(*t), json!(hex::encode(v))))
        .collect();
    appraisal.claim("opaque_data", serde_json::Value::Object(opaque));

    // Signature with the leaf key.
    let signature = x509chain::raw_public_key(leaf.public_key(), "leaf")
        .map_err(|err| err.to_string())
        .and_then(|key| verify_report_signature(report, &key));
    appraisal.push(Check::from_result(
        "gpu.signature",
        Aspect::Hardware,
        signature,
    ));
    appraisal.push(trailing_data_check(report, policy.strict_length));

    appraisal.push(Check::from_result(
        "gpu.cert_chain",
        Aspect::Hardware,
        x509chain::verify_chain(&evidence.chain, &roots, at)
            .map(|summary| {
                format!(
                    "{} (pinned NVIDIA Device Identity CA)",
                    summary.subjects.join(" -> ")
                )
            })
            .map_err(|err| err.to_string()),
    ));

    // FWID of the leaf against the report's opaque FWID.
    let mut cert_fwids: Vec<Vec<u8>> = Vec::new();
    for ext in leaf.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == OID_TCG_DICE_TCB_INFO || oid == OID_TCG_DICE_TCB_INFO_EXT {
            cert_fwids.extend(x509chain::tcb_info_fwids(ext.value));
            if cert_fwids.is_empty() {
                cert_fwids.extend(tcb_info_fwid(ext.value).map(<[u8]>::to_vec));
            }
        }
    }
    let fwid_check = match (report.opaque_field(OPAQUE_FWID), cert_fwids.is_empty()) {
        (Some(report_fwid), false) => {
            let ok = cert_fwids.iter().any(|f| f.as_slice() == report_fwid);
            let listed: Vec<String> = cert_fwids.iter().map(hex::encode).collect();
            Check::from_bool(
                "gpu.fwid",
                Aspect::InstanceIdentity,
                ok,
                format!(
                    "report FWID {} {} the leaf certificate's FWIDs [{}]",
                    hex::encode(report_fwid),
                    if ok { "is among" } else { "is not among" },
                    listed.join(", ")
                ),
            )
        }
        (Some(_), true) => Check::fail(
            "gpu.fwid",
            Aspect::InstanceIdentity,
            "report carries a FWID but the leaf certificate has no TCG DICE TcbInfo FWID (2.23.133.5.4.1)",
        ),
        (None, _) => Check::skip(
            "gpu.fwid",
            Aspect::InstanceIdentity,
            "report carries no FWID opaque field (older firmware)",
        ),
    };
    appraisal.push(fwid_check);
    appraisal.push(Check::from_bool(
        "gpu.opaque_data",
        Aspect::Configuration,
        report.opaque_well_formed,
        if report.opaque_well_formed {
            format!("{} opaque fields parsed", report.opaque.len())
        } else {
            "opaque data does not parse as type/length/value fields".to_owned()
        },
    ));

    match nonce {
        Some(expected) => appraisal.push(Check::from_bool(
            "gpu.nonce",
            Aspect::Freshness,
            expected == report.request_nonce.as_slice(),
            format!(
                "request nonce {} expected {}",
                hex::encode(report.request_nonce),
                hex::encode(expected)
            ),
        )),
        None => appraisal.push(Check::skip(
            "gpu.nonce",
            Aspect::Freshness,
            format!(
                "no expected nonce given: freshness not checked (report nonce {})",
                hex::encode(report.request_nonce)
            ),
        )),
    }

    appraisal.push(Check::pass(
        "gpu.measurements",
        Aspect::Executables,
        format!("{} measurement blocks listed", report.blocks.len()),
    ));
    if evidence.rims.is_empty() {
        appraisal.push(Check::skip("gpu.rim", Aspect::Executables, "no RIM given"));
    } else {
        appraisal.push(compare_rims(report, &evidence.rims));
    }
    apply_policy(&mut appraisal, report, policy);
    Ok(appraisal)
}

/// Compares report measurements with the active measurements of the RIMs: RIM
/// index i (from 0) is SPDM block i + 1 and must equal one of the RIM's
/// alternatives.
pub fn compare_rims(report: &SpdmReport, rims: &[Rim]) -> Check {
    let by_index: BTreeMap<u8, &MeasurementBlock> =
        report.blocks.iter().map(|b| (b.index, b)).collect();
    let mut problems = Vec::new();
    let mut compared = 0usize;
    for rim in rims {
        for m in rim.measurements.iter().filter(|m| m.active) {
            compared += 1;
            let block_index = m.index.checked_add(1).and_then(|i| u8::try_from(i).ok());
            match block_index.and_then(|i| by_index.get(&i)) {
                Some(block) if m.alternatives.contains(&block.value) => {}
                Some(block) => problems.push(format!(
                    "block {} ({}) is {}, not one of {} reference value(s) in RIM {}",
                    m.index + 1,
                    m.name,
                    hex::encode(&block.value),
                    m.alternatives.len(),
                    rim.product_version()
                )),
                None => problems.push(format!(
                    "block {} ({}) named by RIM {} is missing from the report",
                    m.index + 1,
                    m.name,
                    rim.product_version()
                )),
            }
        }
    }
    let names: Vec<String> = rims.iter().map(Rim::product_version).collect();
    Check::from_bool(
        "gpu.rim",
        Aspect::Executables,
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{compared} active measurements match RIM(s) {} (RIM signatures not verified)",
                names.join(", ")
            )
        } else {
            problems.join("; ")
        },
    )
}

fn apply_policy(appraisal: &mut Appraisal, report: &SpdmReport, policy: &GpuPolicy) {
    if !policy.driver_versions.is_empty() {
        let have = report.driver_version().unwrap_or_default();
        appraisal.push(Check::from_bool(
            "gpu.policy.driver_version",
            Aspect::Configuration,
            policy.driver_versions.contains(&have),
            format!(
                "driver version '{have}', allowed {:?}",
                policy.driver_versions
            ),
        ));
    }
    if !policy.vbios_versions.is_empty() {
        let have = report.vbios_version().unwrap_or_default();
        appraisal.push(Check::from_bool(
            "gpu.policy.vbios_version",
            Aspect::Configuration,
            policy
                .vbios_versions
                .iter()
                .any(|v| v.eq_ignore_ascii_case(&have)),
            format!(
                "VBIOS version '{have}', allowed {:?}",
                policy.vbios_versions
            ),
        ));
    }
    if !policy.measurements.is_empty() {
        let mut problems = Vec::new();
        for (index, allowed) in &policy.measurements {
            let block = index
                .parse::<u8>()
                .ok()
                .and_then(|i| report.blocks.iter().find(|b| b.index == i));
            match block {
                Some(b) if allowed.iter().any(|a| a.0 == b.value) => {}
                Some(b) => problems.push(format!("block {index} is {}", hex::encode(&b.value))),
                None => problems.push(format!("block {index} missing")),
            }
        }
        appraisal.push(Check::from_bool(
            "gpu.policy.measurements",
            Aspect::Executables,
            problems.is_empty(),
            if problems.is_empty() {
                format!("{} block(s) match the policy", policy.measurements.len())
            } else {
                problems.join("; ")
            },
        ));
    }
}

/// One device's evidence from an NVIDIA attestation SDK JSON file
/// (`[{"arch", "certificate" (base64 PEM chain), "evidence" (base64 report), "nonce"}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkEvidence {
    /// Architecture name.
    pub arch: String,
    /// The report bytes.
    pub report: Vec<u8>,
    /// The PEM chain bytes.
    pub certificate: Vec<u8>,
    /// The nonce as hex.
    pub nonce: String,
}

/// Parses the SDK's evidence JSON; None when the input is not that format.
pub fn parse_sdk_evidence(input: &[u8]) -> Option<Vec<SdkEvidence>> {
    use base64::Engine as _;
    let value: serde_json::Value = serde_json::from_slice(input).ok()?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        single @ serde_json::Value::Object(_) => vec![single],
        _ => return None,
    };
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?)
            .ok()
    };
    items
        .iter()
        .map(|item| {
            Some(SdkEvidence {
                arch: item.get("arch")?.as_str()?.to_owned(),
                report: b64(item.get("evidence")?)?,
                certificate: b64(item.get("certificate")?)?,
                nonce: item.get("nonce")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_root_parses() {
        let roots = x509chain::parse_bundle(NVIDIA_DEVICE_ROOT_PEM.as_bytes(), "root").unwrap();
        assert_eq!(roots.len(), 1);
    }

    #[test]
    fn rejects_wrong_codes_and_unsigned() {
        assert!(matches!(
            SpdmReport::parse_binary(&[0x11, 0x61]),
            Err(SpdmError::Code { .. })
        ));
        assert!(matches!(
            SpdmReport::parse_binary(&[0x11, 0xe0, 0x00, 0xff]),
            Err(SpdmError::Unsigned { .. })
        ));
        assert!(SpdmReport::parse(b"11e0").is_err());
    }

    #[test]
    fn fwid_from_tcb_info_tail() {
        let mut value = vec![0x30, 0x40];
        value.extend([0x04, 0x30]);
        value.extend([7u8; 48]);
        assert_eq!(tcb_info_fwid(&value), Some(&[7u8; 48][..]));
        assert_eq!(tcb_info_fwid(&[0; 10]), None);
    }
}
