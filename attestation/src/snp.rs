//! AMD SEV-SNP attestation reports: parsing and verification.
//!
//! The report layout follows the SEV-SNP ABI specification (ATTESTATION_REPORT,
//! 0x4A0 bytes). Versions 2 and 3+ are accepted; version 3 adds the CPUID
//! family/model/stepping bytes used to tell products apart, and Turin uses a
//! different TCB_VERSION layout (an FMC byte first). The signature is ECDSA
//! P-384 with SHA-384 over bytes 0..0x2A0, r and s stored little-endian in
//! 72-byte fields. Reserved bytes after the signature and the zero padding of
//! r and s must be zero, so any single changed byte of a report is rejected.
//!
//! Three containers are read, which is what real producers write (see
//! [`Container`]): the bare 0x4A0-byte report (`/dev/sev-guest` through
//! snpguest or go-sev-guest, and the kernel's configfs-tsm `outblob`); the
//! firmware's MSG_REPORT_RSP as the `SNP_GET_REPORT` ioctl returns it (a
//! 0x20-byte header, the report, zero padding to the 4000-byte response
//! buffer); and the extended report, the report followed by the certificate
//! table the hypervisor supplies (`SNP_GET_EXT_REPORT`, go-sev-guest's
//! `attest -extended`). Anything else after a report is refused.

use serde_json::json;
use thiserror::Error;
use x509_parser::certificate::X509Certificate;

use crate::bytes::{BytesError, Reader, decode_hex_text};
use crate::check::{Appraisal, Aspect, Check};
use crate::policy::SnpPolicy;
use crate::x509chain::{self, X509ChainError};

/// Size of an attestation report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Length of the signed part of the report.
pub const SIGNED_LEN: usize = 0x2A0;
const SIGNATURE_OFFSET: usize = 0x2A0;
const SIG_COMPONENT_LEN: usize = 72;
const P384_LEN: usize = 48;

/// Errors parsing a report.
#[derive(Debug, Error)]
pub enum SnpReportError {
    /// Neither raw 0x4A0 bytes nor hex text of them, nor a known container.
    #[error(
        "snp report is {len} bytes: expected {REPORT_SIZE} raw bytes or their hex text, a MSG_REPORT_RSP of at most 4000 bytes, or a report followed by a certificate table"
    )]
    BadLength {
        /// Length of the input (decoded, for hex text).
        len: usize,
    },
    /// The firmware response header is not a successful 0x4A0-byte report.
    #[error("snp MSG_REPORT_RSP {field} is {value:#x}, expected {expected:#x}")]
    Response {
        /// Which header field.
        field: &'static str,
        /// Its value.
        value: u32,
        /// The value a successful response has.
        expected: u32,
    },
    /// Non-zero bytes where only zero padding may follow.
    #[error("snp {container}: {count} bytes after the report are not zero padding")]
    Padding {
        /// Which container.
        container: &'static str,
        /// How many bytes followed.
        count: usize,
    },
    /// The bytes after the report are not a well-formed certificate table.
    #[error("snp certificate table after the report: {reason}")]
    CertTable {
        /// What was wrong.
        reason: String,
    },
    /// A field could not be read.
    #[error("snp report truncated")]
    Truncated(#[from] BytesError),
    /// Unsupported report version.
    #[error("snp report version {version} is not supported (expected 2 to 5)")]
    Version {
        /// The version field.
        version: u32,
    },
    /// Unsupported signature algorithm.
    #[error("snp report signature algorithm {algo} is not ECDSA P-384 with SHA-384 (1)")]
    SignatureAlgorithm {
        /// The SIGNATURE_ALGO field.
        algo: u32,
    },
}

/// Errors verifying a report that are not evidence failures (bad inputs).
#[derive(Debug, Error)]
pub enum SnpVerifyError {
    /// The VCEK/VLEK certificate could not be parsed.
    #[error("bad vcek/vlek certificate")]
    Certificate(#[source] X509ChainError),
    /// The chain file could not be parsed.
    #[error("bad ask/ark chain")]
    Chain(#[source] X509ChainError),
}

/// AMD EPYC product generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4).
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Product {
    /// The name AMD uses in certificate subjects.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    fn from_name(text: &str) -> Option<Self> {
        [Product::Milan, Product::Genoa, Product::Turin]
            .into_iter()
            .find(|p| text.contains(p.name()))
    }

    /// From CPUID family and model (report version 3 and later).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f) | (0x19, 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// Which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// No key (unsigned report).
    None,
    /// A reserved value.
    Reserved(u8),
}

/// A decoded TCB_VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// The eight raw bytes.
    pub raw: [u8; 8],
}

impl TcbVersion {
    /// Decodes the eight raw bytes for `product` (Turin has its own layout).
    pub fn decode(raw: [u8; 8], product: Option<Product>) -> Self {
        if product == Some(Product::Turin) {
            Self {
                fmc: Some(raw[0]),
                bootloader: raw[1],
                tee: raw[2],
                snp: raw[3],
                microcode: raw[7],
                raw,
            }
        } else {
            Self {
                fmc: None,
                bootloader: raw[0],
                tee: raw[1],
                snp: raw[6],
                microcode: raw[7],
                raw,
            }
        }
    }

    fn describe(&self) -> String {
        let fmc = self.fmc.map(|f| format!("fmc={f} ")).unwrap_or_default();
        format!(
            "{fmc}bootloader={} tee={} snp={} microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// What the report came wrapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// Exactly the 0x4A0-byte report (or its hex text).
    Bare,
    /// The firmware's MSG_REPORT_RSP (status 0, REPORT_SIZE 0x4A0, reserved
    /// zero), as the `SNP_GET_REPORT` ioctl returns it.
    GuestResponse {
        /// Zero bytes after the report (the rest of the ioctl's buffer).
        padding: usize,
    },
    /// The report followed by the hypervisor's certificate table (GHCB
    /// extended guest request).
    Extended {
        /// The table's entries, in table order.
        certs: Vec<CertTableEntry>,
    },
}

/// One certificate from an extended report's certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTableEntry {
    /// The entry's GUID, as its 16 table bytes.
    pub guid: [u8; 16],
    /// `vcek`, `vlek`, `ask`, `ark`, `asvk`, or `unknown`.
    pub kind: &'static str,
    /// The certificate bytes (DER).
    pub der: Vec<u8>,
}

/// (GUID in table byte order, kind). GUIDs from the GHCB specification and
/// the AMD SEV-SNP firmware ABI; the table stores them in the mixed-endian
/// UEFI layout.
const CERT_GUIDS: &[(&str, &str)] = &[
    ("63da758d-e664-4564-adc5-f4b93be8accd", "vcek"),
    ("a8074bc2-a25a-483e-aae6-39c045a0b8a1", "vlek"),
    ("4ab7b379-bbac-4fe4-a02f-05aef327c782", "ask"),
    ("c0b406a4-a803-4952-9743-3fb6014cd0ae", "ark"),
    ("00000000-0000-0000-0000-000000000000", "end"),
];

/// The 16 table bytes of a textual GUID (UEFI layout: the first three
/// groups little-endian).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(hex).ok()?;
    let raw: [u8; 16] = raw.try_into().ok()?;
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

fn cert_kind(guid: &[u8; 16]) -> &'static str {
    CERT_GUIDS
        .iter()
        .find(|(text, _)| guid_bytes(text).as_ref() == Some(guid))
        .map(|(_, kind)| *kind)
        .unwrap_or("unknown")
}

/// Most entries a certificate table may have (the GHCB table names four).
const MAX_CERT_ENTRIES: usize = 16;
/// Size of the SNP_GET_REPORT ioctl's response buffer.
const GUEST_RESPONSE_BUFFER: usize = 4000;
const RESPONSE_HEADER: usize = 0x20;

/// Parses the GHCB certificate table: 24-byte entries (GUID, offset, length,
/// little-endian, offsets from the table start) up to an all-zero entry, then
/// the certificates. Every byte not covered by an entry must be zero.
fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, SnpReportError> {
    let bad = |reason: String| SnpReportError::CertTable { reason };
    let mut r = Reader::new(table);
    let mut entries = Vec::new();
    let mut covered = vec![false; table.len()];
    loop {
        let guid: [u8; 16] = r.array("cert_table.guid").map_err(|e| bad(e.to_string()))?;
        let offset = r
            .u32_le("cert_table.offset")
            .map_err(|e| bad(e.to_string()))? as usize;
        let length = r
            .u32_le("cert_table.length")
            .map_err(|e| bad(e.to_string()))? as usize;
        if guid == [0; 16] {
            if offset != 0 || length != 0 {
                return Err(bad(
                    "the terminating entry has a non-zero offset or length".to_owned()
                ));
            }
            break;
        }
        if entries.len() == MAX_CERT_ENTRIES {
            return Err(bad(format!("more than {MAX_CERT_ENTRIES} entries")));
        }
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= table.len() && length > 0)
            .ok_or_else(|| {
                bad(format!(
                    "entry {} (offset {offset}, length {length}) is empty or runs past the table's {} bytes",
                    entries.len(),
                    table.len()
                ))
            })?;
        for flag in covered.get_mut(offset..end).unwrap_or_default() {
            *flag = true;
        }
        entries.push(CertTableEntry {
            guid,
            kind: cert_kind(&guid),
            der: table.get(offset..end).unwrap_or_default().to_vec(),
        });
    }
    let header_end = r.position();
    let stray = table
        .iter()
        .zip(&covered)
        .enumerate()
        .filter(|(i, (byte, covered))| *i >= header_end && !**covered && **byte != 0)
        .count();
    if entries.is_empty() {
        return Err(bad("no entries".to_owned()));
    }
    if stray > 0 {
        return Err(bad(format!(
            "{stray} non-zero bytes belong to no certificate"
        )));
    }
    Ok(entries)
}

/// A parsed attestation report. Fields keep the report's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// Report format version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy bits.
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL that requested the report.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 SHA-384).
    pub signature_algo: u32,
    /// Current TCB, raw.
    pub current_tcb: [u8; 8],
    /// Platform info bits.
    pub platform_info: u64,
    /// AUTHOR_KEY_EN bit.
    pub author_key_en: bool,
    /// MASK_CHIP_ID bit.
    pub mask_chip_id: bool,
    /// Signing key selector.
    pub signing_key: SigningKey,
    /// Guest-supplied report data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host data.
    pub host_data: [u8; 32],
    /// ID key digest.
    pub id_key_digest: [u8; 48],
    /// Author key digest.
    pub author_key_digest: [u8; 48],
    /// Report ID.
    pub report_id: [u8; 32],
    /// Migration agent report ID.
    pub report_id_ma: [u8; 32],
    /// Reported TCB, raw (what the VCEK is issued for).
    pub reported_tcb: [u8; 8],
    /// CPUID family, model and stepping (version 3 and later).
    pub cpuid: Option<(u8, u8, u8)>,
    /// Chip ID.
    pub chip_id: [u8; 64],
    /// Committed TCB, raw.
    pub committed_tcb: [u8; 8],
    /// Current firmware version (major, minor, build).
    pub current_version: (u8, u8, u8),
    /// Committed firmware version (major, minor, build).
    pub committed_version: (u8, u8, u8),
    /// Launch TCB, raw.
    pub launch_tcb: [u8; 8],
    /// Signature r, big-endian, 48 bytes.
    pub sig_r: [u8; 48],
    /// Signature s, big-endian, 48 bytes.
    pub sig_s: [u8; 48],
    /// True when the zero padding of r/s and the reserved tail are all zero.
    pub reserved_zero: bool,
    /// What the report came in.
    pub container: Container,
    /// The raw report (0x4A0 bytes, without its container).
    pub raw: Vec<u8>,
}

/// The DEBUG bit of the guest policy.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// The MIGRATE_MA bit of the guest policy.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;

impl SnpReport {
    /// Parses a report, raw or as hex text, bare or in one of the containers
    /// of [`Container`].
    pub fn parse(input: &[u8]) -> Result<Self, SnpReportError> {
        let decoded = std::str::from_utf8(input)
            .ok()
            .filter(|text| !text.trim().is_empty())
            .and_then(|text| decode_hex_text(text).ok());
        match decoded {
            Some(bytes) if input.len() != REPORT_SIZE => Self::parse_container(&bytes),
            _ => Self::parse_container(input),
        }
    }

    fn parse_container(bytes: &[u8]) -> Result<Self, SnpReportError> {
        if bytes.len() == REPORT_SIZE {
            return Self::parse_raw(bytes, Container::Bare);
        }
        if bytes.len() < REPORT_SIZE {
            return Err(SnpReportError::BadLength { len: bytes.len() });
        }
        // A report starts with its version (2..5); a firmware response with
        // its status (0 on success) and REPORT_SIZE.
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
        };
        let version = word(0).unwrap_or_default();
        let is_report = (2..=5).contains(&version);
        if version == 0 || (!is_report && word(4) == Some(REPORT_SIZE as u32)) {
            return Self::parse_guest_response(bytes);
        }
        if !is_report {
            return Err(SnpReportError::BadLength { len: bytes.len() });
        }
        let (report, table) = bytes.split_at(REPORT_SIZE);
        if table.iter().all(|b| *b == 0) {
            // No producer pads a bare report.
            return Err(SnpReportError::BadLength { len: bytes.len() });
        }
        let certs = parse_cert_table(table)?;
        Self::parse_raw(report, Container::Extended { certs })
    }

    fn parse_guest_response(bytes: &[u8]) -> Result<Self, SnpReportError> {
        let mut r = Reader::new(bytes);
        let status = r.u32_le("msg_report_rsp.status")?;
        let size = r.u32_le("msg_report_rsp.report_size")?;
        let reserved = r.take(RESPONSE_HEADER - 8, "msg_report_rsp.reserved")?;
        for (field, value, expected) in [
            ("status", status, 0),
            ("report_size", size, REPORT_SIZE as u32),
            ("reserved", u32::from(reserved.iter().any(|b| *b != 0)), 0),
        ] {
            if value != expected {
                return Err(SnpReportError::Response {
                    field,
                    value,
                    expected,
                });
            }
        }
        if bytes.len() > GUEST_RESPONSE_BUFFER {
            return Err(SnpReportError::BadLength { len: bytes.len() });
        }
        let report = r.take(REPORT_SIZE, "msg_report_rsp.report")?;
        let padding = r.rest();
        if padding.iter().any(|b| *b != 0) {
            return Err(SnpReportError::Padding {
                container: "MSG_REPORT_RSP",
                count: padding.len(),
            });
        }
        Self::parse_raw(
            report,
            Container::GuestResponse {
                padding: padding.len(),
            },
        )
    }

    /// The VCEK or VLEK certificate carried in an extended report's table.
    pub fn table_vek(&self) -> Option<&CertTableEntry> {
        match &self.container {
            Container::Extended { certs } => certs
                .iter()
                .find(|entry| entry.kind == "vcek" || entry.kind == "vlek"),
            _ => None,
        }
    }

    /// The ASK/ASVK and ARK carried in an extended report's table, ASK first.
    pub fn table_chain(&self) -> Option<Vec<Vec<u8>>> {
        let Container::Extended { certs } = &self.container else {
            return None;
        };
        let ask = certs.iter().find(|e| e.kind == "ask")?;
        let ark = certs.iter().find(|e| e.kind == "ark")?;
        Some(vec![ask.der.clone(), ark.der.clone()])
    }

    /// One line on the report's container, for the `snp.container` check.
    pub fn container_note(&self) -> String {
        match &self.container {
            Container::Bare => "bare 0x4a0-byte report, nothing after it".to_owned(),
            Container::GuestResponse { padding } => format!(
                "note: MSG_REPORT_RSP from SNP_GET_REPORT (status 0, report_size 0x4a0), {padding} zero padding byte(s) after the report (not signed, ignored)"
            ),
            Container::Extended { certs } => {
                let kinds: Vec<&str> = certs.iter().map(|e| e.kind).collect();
                format!(
                    "note: extended report; the host's certificate table ({}) follows the report (not signed by it; certificates are checked on their own)",
                    kinds.join(", ")
                )
            }
        }
    }

    fn parse_raw(raw: &[u8], container: Container) -> Result<Self, SnpReportError> {
        let mut r = Reader::new(raw);
        let version = r.u32_le("version")?;
        if !(2..=5).contains(&version) {
            return Err(SnpReportError::Version { version });
        }
        let guest_svn = r.u32_le("guest_svn")?;
        let policy = r.u64_le("policy")?;
        let family_id = r.array("family_id")?;
        let image_id = r.array("image_id")?;
        let vmpl = r.u32_le("vmpl")?;
        let signature_algo = r.u32_le("signature_algo")?;
        if signature_algo != 1 {
            return Err(SnpReportError::SignatureAlgorithm {
                algo: signature_algo,
            });
        }
        let current_tcb = r.array("current_tcb")?;
        let platform_info = r.u64_le("platform_info")?;
        let key_info = r.u32_le("signing_key_info")?;
        let _reserved = r.u32_le("reserved0")?;
        let report_data = r.array("report_data")?;
        let measurement = r.array("measurement")?;
        let host_data = r.array("host_data")?;
        let id_key_digest = r.array("id_key_digest")?;
        let author_key_digest = r.array("author_key_digest")?;
        let report_id = r.array("report_id")?;
        let report_id_ma = r.array("report_id_ma")?;
        let reported_tcb = r.array("reported_tcb")?;
        let cpuid_bytes: [u8; 0x18] = r.array("cpuid_and_reserved")?;
        let cpuid = (version >= 3).then_some((cpuid_bytes[0], cpuid_bytes[1], cpuid_bytes[2]));
        let chip_id = r.array("chip_id")?;
        let committed_tcb = r.array("committed_tcb")?;
        let current: [u8; 4] = r.array("current_version")?;
        let committed: [u8; 4] = r.array("committed_version")?;
        let launch_tcb = r.array("launch_tcb")?;
        let signing_key = match (key_info >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other as u8),
        };
        let mut sig_reader = Reader::new(raw);
        sig_reader.take(SIGNATURE_OFFSET, "signed_region")?;
        let r_le = sig_reader.take(SIG_COMPONENT_LEN, "signature_r")?;
        let s_le = sig_reader.take(SIG_COMPONENT_LEN, "signature_s")?;
        let tail = sig_reader.rest();
        let reserved_zero = r_le[P384_LEN..].iter().all(|b| *b == 0)
            && s_le[P384_LEN..].iter().all(|b| *b == 0)
            && tail.iter().all(|b| *b == 0);
        let mut sig_r = [0u8; 48];
        let mut sig_s = [0u8; 48];
        for (out, inp) in sig_r.iter_mut().zip(r_le[..P384_LEN].iter().rev()) {
            *out = *inp;
        }
        for (out, inp) in sig_s.iter_mut().zip(s_le[..P384_LEN].iter().rev()) {
            *out = *inp;
        }
        Ok(Self {
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            signature_algo,
            current_tcb,
            platform_info,
            author_key_en: key_info & 1 != 0,
            mask_chip_id: key_info & 2 != 0,
            signing_key,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb,
            cpuid,
            chip_id,
            committed_tcb,
            current_version: (current[2], current[1], current[0]),
            committed_version: (committed[2], committed[1], committed[0]),
            launch_tcb,
            sig_r,
            sig_s,
            reserved_zero,
            container,
            raw: raw.to_vec(),
        })
    }

    /// The signed bytes (0..0x2A0).
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..SIGNED_LEN).unwrap_or_default()
    }

    /// Verifies the report signature with an uncompressed P-384 point.
    pub fn verify_signature(&self, public_point: &[u8]) -> bool {
        let mut sig = [0u8; 96];
        sig[..48].copy_from_slice(&self.sig_r);
        sig[48..].copy_from_slice(&self.sig_s);
        crate::crypto::signature::UnparsedPublicKey::new(
            &crate::crypto::signature::ECDSA_P384_SHA384_FIXED,
            public_point,
        )
        .verify(self.signed_bytes(), &sig)
        .is_ok()
    }
}

/// The pinned AMD certificates: (product, is_vlek, PEM with ASK/ASVK then ARK).
const PINNED: &[(Product, bool, &str)] = &[
    (
        Product::Milan,
        false,
        include_str!("../certs/amd/ask_ark_milan.pem"),
    ),
    (
        Product::Milan,
        true,
        include_str!("../certs/amd/asvk_ark_milan.pem"),
    ),
    (
        Product::Genoa,
        false,
        include_str!("../certs/amd/ask_ark_genoa.pem"),
    ),
    (
        Product::Genoa,
        true,
        include_str!("../certs/amd/asvk_ark_genoa.pem"),
    ),
    (
        Product::Turin,
        false,
        include_str!("../certs/amd/ask_ark_turin.pem"),
    ),
    (
        Product::Turin,
        true,
        include_str!("../certs/amd/asvk_ark_turin.pem"),
    ),
];

/// The pinned chains decoded from PEM, once per process: (product, is_vlek,
/// ASK or ASVK DER, ARK DER).
type PinnedDer = (Product, bool, Vec<u8>, Vec<u8>);
static PINNED_DER: std::sync::OnceLock<Vec<PinnedDer>> = std::sync::OnceLock::new();

/// The pinned (ASK or ASVK, ARK) DER pair for a product and key kind.
pub fn pinned_chain(product: Product, vlek: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let decoded = PINNED_DER.get_or_init(|| {
        PINNED
            .iter()
            .filter_map(|(p, v, pem)| {
                let ders = x509chain::parse_bundle(pem.as_bytes(), "pinned amd chain").ok()?;
                let mut iter = ders.into_iter();
                Some((*p, *v, iter.next()?, iter.next()?))
            })
            .collect()
    });
    decoded
        .iter()
        .find(|(p, v, _, _)| *p == product && *v == vlek)
        .map(|(_, _, ask, ark)| (ask.clone(), ark.clone()))
}

/// Everything needed to verify one report.
#[derive(Debug, Clone)]
pub struct SnpEvidence {
    /// The parsed report.
    pub report: SnpReport,
    /// The VCEK or VLEK certificate (DER).
    pub vcek_der: Vec<u8>,
    /// An explicit ASK/ASVK + ARK chain (DER, ASK first), instead of the pinned one.
    pub chain: Option<Vec<Vec<u8>>>,
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";

fn ext_u8(cert: &X509Certificate<'_>, oid: &str) -> Option<u8> {
    x509chain::extension_value(cert, oid)
        .and_then(x509chain::der_integer_u64)
        .and_then(|v| u8::try_from(v).ok())
}

/// Verifies an SNP report and its certificates at unix time `at`.
pub fn verify(
    evidence: &SnpEvidence,
    policy: &SnpPolicy,
    at: i64,
) -> Result<Appraisal, SnpVerifyError> {
    let report = &evidence.report;
    let mut appraisal = Appraisal::new("snp");
    let vcek = x509chain::parse_cert(&evidence.vcek_der, "vcek", 0)
        .map_err(SnpVerifyError::Certificate)?;
    let vcek_issuer = vcek
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cert_is_vlek = vcek_issuer.contains("VLEK");
    let product_from_cert = Product::from_name(&vcek_issuer).or_else(|| {
        x509chain::extension_value(&vcek, OID_PRODUCT_NAME)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Product::from_name)
    });
    let product_from_report = report.cpuid.and_then(|(f, m, _)| Product::from_cpuid(f, m));
    let product = product_from_cert.or(product_from_report);
    let tcb = TcbVersion::decode(report.reported_tcb, product);

    appraisal.claim("version", report.version);
    appraisal.claim("product", product.map(Product::name).unwrap_or("unknown"));
    appraisal.claim("measurement", hex::encode(report.measurement));
    appraisal.claim("report_data", hex::encode(report.report_data));
    appraisal.claim("host_data", hex::encode(report.host_data));
    appraisal.claim("chip_id", hex::encode(report.chip_id));
    appraisal.claim("policy", format!("{:#x}", report.policy));
    appraisal.claim("vmpl", report.vmpl);
    appraisal.claim("guest_svn", report.guest_svn);
    appraisal.claim(
        "reported_tcb",
        json!({"raw": hex::encode(tcb.raw), "fmc": tcb.fmc, "bootloader": tcb.bootloader,
               "tee": tcb.tee, "snp": tcb.snp, "microcode": tcb.microcode}),
    );
    appraisal.nonce = Some(hex::encode(report.report_data));

    // Product consistency: the certificate's issuer and the report's CPUID.
    match (product_from_cert, product_from_report) {
        (Some(c), Some(r)) if c != r => appraisal.push(Check::fail(
            "snp.product",
            Aspect::Hardware,
            format!(
                "certificate is for {} but report CPUID says {}",
                c.name(),
                r.name()
            ),
        )),
        (Some(p), _) | (None, Some(p)) => appraisal.push(Check::pass(
            "snp.product",
            Aspect::Hardware,
            format!("{} (report version {})", p.name(), report.version),
        )),
        (None, None) => appraisal.push(Check::fail(
            "snp.product",
            Aspect::Hardware,
            format!("cannot tell the product from issuer '{vcek_issuer}' or the report"),
        )),
    }

    appraisal.push(Check::pass(
        "snp.container",
        Aspect::Hardware,
        report.container_note(),
    ));
    appraisal.push(signing_key_check(report.signing_key, &vcek_issuer, policy));

    appraisal.push(Check::from_bool(
        "snp.reserved_zero",
        Aspect::Hardware,
        report.reserved_zero,
        if report.reserved_zero {
            "signature padding and reserved bytes are zero".to_owned()
        } else {
            "signature padding or reserved bytes after the signature are not zero".to_owned()
        },
    ));

    // Report signature.
    let signature = match x509chain::raw_public_key(vcek.public_key(), "vcek") {
        Ok(x509chain::RawPublicKey::P384(point)) => {
            if report.verify_signature(&point) {
                Ok(
                    "ECDSA P-384/SHA-384 over bytes 0..0x2a0 verifies with the VCEK/VLEK"
                        .to_owned(),
                )
            } else {
                Err(
                    "ECDSA P-384/SHA-384 signature does not verify with the VCEK/VLEK key"
                        .to_owned(),
                )
            }
        }
        Ok(_) => Err("VCEK/VLEK key is not a P-384 key".to_owned()),
        Err(err) => Err(err.to_string()),
    };
    appraisal.push(Check::from_result(
        "snp.signature",
        Aspect::Hardware,
        signature,
    ));

    // Certificate chain VCEK/VLEK -> ASK/ASVK -> ARK, ARK pinned.
    let chain_result = verify_amd_chain(evidence, product, cert_is_vlek, at);
    match chain_result {
        Ok(detail) => appraisal.push(Check::pass("snp.cert_chain", Aspect::Hardware, detail)),
        Err(detail) => appraisal.push(Check::fail("snp.cert_chain", Aspect::Hardware, detail)),
    }

    // Reported TCB against the VCEK's extensions.
    let cert_tcb = (
        ext_u8(&vcek, OID_BL_SPL),
        ext_u8(&vcek, OID_TEE_SPL),
        ext_u8(&vcek, OID_SNP_SPL),
        ext_u8(&vcek, OID_UCODE_SPL),
    );
    let cert_fmc = ext_u8(&vcek, OID_FMC_SPL);
    let tcb_check = match cert_tcb {
        (Some(bl), Some(tee), Some(snp), Some(ucode)) => {
            let fmc_ok = match (tcb.fmc, cert_fmc) {
                (Some(report_fmc), Some(cert_fmc)) => report_fmc == cert_fmc,
                (Some(_), None) => false,
                _ => true,
            };
            let ok = fmc_ok
                && bl == tcb.bootloader
                && tee == tcb.tee
                && snp == tcb.snp
                && ucode == tcb.microcode;
            let cert_fmc_text = cert_fmc.map(|f| format!("fmc={f} ")).unwrap_or_default();
            Check::from_bool(
                "snp.tcb_matches_cert",
                Aspect::Configuration,
                ok,
                format!(
                    "report {} vs certificate {cert_fmc_text}bootloader={bl} tee={tee} snp={snp} microcode={ucode}",
                    tcb.describe()
                ),
            )
        }
        _ => Check::fail(
            "snp.tcb_matches_cert",
            Aspect::Configuration,
            "VCEK/VLEK lacks the AMD TCB extensions (1.3.6.1.4.1.3704.1.3.x)",
        ),
    };
    appraisal.push(tcb_check);

    // Chip ID against hwID (VCEK only).
    let chip_check = if report.mask_chip_id {
        Check::skip(
            "snp.chip_id",
            Aspect::InstanceIdentity,
            "MASK_CHIP_ID is set in the report",
        )
    } else if cert_is_vlek {
        Check::skip(
            "snp.chip_id",
            Aspect::InstanceIdentity,
            "VLEK certificates carry no hwID",
        )
    } else {
        match x509chain::extension_value(&vcek, OID_HWID) {
            Some(value) => {
                let hwid = x509chain::der_octet_string(value).unwrap_or(value);
                let prefix = report.chip_id.get(..hwid.len());
                let rest_zero = report
                    .chip_id
                    .get(hwid.len()..)
                    .is_some_and(|rest| rest.iter().all(|b| *b == 0) || hwid.len() == 64);
                Check::from_bool(
                    "snp.chip_id",
                    Aspect::InstanceIdentity,
                    !hwid.is_empty() && prefix == Some(hwid) && rest_zero,
                    format!("report chip_id vs certificate hwID {}", hex::encode(hwid)),
                )
            }
            None => Check::fail(
                "snp.chip_id",
                Aspect::InstanceIdentity,
                "VCEK lacks the hwID extension (1.3.6.1.4.1.3704.1.4)",
            ),
        }
    };
    appraisal.push(chip_check);

    apply_policy(&mut appraisal, report, &tcb, policy);
    Ok(appraisal)
}

/// The `snp.signing_key` check: the report's SIGNING_KEY field must name the
/// kind of key the certificate is (a VLEK certificate is issued by
/// `SEV-VLEK-<product>`), and a VLEK must be allowed by the policy (it is by
/// default).
pub fn signing_key_check(report_key: SigningKey, cert_issuer: &str, policy: &SnpPolicy) -> Check {
    let cert_is_vlek = cert_issuer.contains("VLEK");
    let key_ok = match report_key {
        SigningKey::Vcek => !cert_is_vlek,
        SigningKey::Vlek => cert_is_vlek && policy.allow_vlek,
        _ => false,
    };
    Check::from_bool(
        "snp.signing_key",
        Aspect::Hardware,
        key_ok,
        format!(
            "report signed by {report_key:?}, certificate issued by '{cert_issuer}'{}",
            if cert_is_vlek && !policy.allow_vlek {
                " (policy forbids VLEK: allow_vlek = false)"
            } else {
                ""
            }
        ),
    )
}

fn verify_amd_chain(
    evidence: &SnpEvidence,
    product: Option<Product>,
    vlek: bool,
    at: i64,
) -> Result<String, String> {
    let products: Vec<Product> = match product {
        Some(p) => vec![p],
        None => vec![Product::Milan, Product::Genoa, Product::Turin],
    };
    let pinned_arks: Vec<Vec<u8>> = [Product::Milan, Product::Genoa, Product::Turin]
        .iter()
        .filter_map(|p| pinned_chain(*p, false).map(|(_, ark)| ark))
        .collect();
    let mut last_err = String::from("no pinned chain for this product");
    if let Some(chain) = &evidence.chain {
        // An explicit chain must still end at a pinned ARK.
        let mut full = vec![evidence.vcek_der.clone()];
        full.extend(chain.iter().cloned());
        return x509chain::verify_chain(&full, &pinned_arks, at)
            .map(|summary| {
                format!(
                    "{} (chain file; ARK matches the pinned AMD root)",
                    summary.subjects.join(" -> ")
                )
            })
            .map_err(|err| err.to_string());
    }
    for p in products {
        let Some((ask, ark)) = pinned_chain(p, vlek) else {
            continue;
        };
        let full = vec![evidence.vcek_der.clone(), ask, ark.clone()];
        match x509chain::verify_chain(&full, &[ark], at) {
            Ok(summary) => {
                return Ok(format!(
                    "{} (pinned {} roots)",
                    summary.subjects.join(" -> "),
                    p.name()
                ));
            }
            Err(err) => last_err = err.to_string(),
        }
    }
    Err(last_err)
}

fn apply_policy(
    appraisal: &mut Appraisal,
    report: &SnpReport,
    tcb: &TcbVersion,
    policy: &SnpPolicy,
) {
    let debug = report.policy & POLICY_DEBUG != 0;
    appraisal.push(Check::from_bool(
        "snp.policy.debug",
        Aspect::Configuration,
        !debug || policy.allow_debug,
        format!(
            "guest policy {:#x}: debug {}{}",
            report.policy,
            if debug { "enabled" } else { "disabled" },
            if debug && !policy.allow_debug {
                " but the appraisal policy disallows debug"
            } else {
                ""
            }
        ),
    ));
    match &policy.min_tcb {
        Some(min) => {
            let mut below = Vec::new();
            for (name, have, want) in [
                ("bootloader", tcb.bootloader, min.bootloader),
                ("tee", tcb.tee, min.tee),
                ("snp", tcb.snp, min.snp),
                ("microcode", tcb.microcode, min.microcode),
            ] {
                if have < want {
                    below.push(format!("{name} {have} < {want}"));
                }
            }
            if let Some(fmc) = tcb.fmc
                && fmc < min.fmc
            {
                below.push(format!("fmc {fmc} < {}", min.fmc));
            }
            appraisal.push(Check::from_bool(
                "snp.policy.min_tcb",
                Aspect::Configuration,
                below.is_empty(),
                if below.is_empty() {
                    format!("reported TCB {} meets the minimum", tcb.describe())
                } else {
                    format!("reported TCB below minimum: {}", below.join(", "))
                },
            ));
        }
        None => appraisal.push(Check::skip(
            "snp.policy.min_tcb",
            Aspect::Configuration,
            "no minimum TCB in the policy",
        )),
    }
    if policy.measurements.is_empty() {
        appraisal.push(Check::skip(
            "snp.policy.measurement",
            Aspect::Executables,
            format!(
                "no reference measurements; measurement is {}",
                hex::encode(report.measurement)
            ),
        ));
    } else {
        let ok = policy
            .measurements
            .iter()
            .any(|m| m.0.as_slice() == report.measurement.as_slice());
        appraisal.push(Check::from_bool(
            "snp.policy.measurement",
            Aspect::Executables,
            ok,
            format!(
                "measurement {} {} the {} allowed value(s)",
                hex::encode(report.measurement),
                if ok { "is among" } else { "is not among" },
                policy.measurements.len()
            ),
        ));
    }
    match &policy.report_data {
        Some(expected) => {
            let mut padded = [0u8; 64];
            let ok = if expected.0.len() <= 64 {
                padded[..expected.0.len()].copy_from_slice(&expected.0);
                padded == report.report_data
            } else {
                false
            };
            appraisal.push(Check::from_bool(
                "snp.policy.report_data",
                Aspect::Freshness,
                ok,
                format!(
                    "report_data {} expected {}",
                    hex::encode(report.report_data),
                    hex::encode(&expected.0)
                ),
            ));
        }
        None => appraisal.push(Check::skip(
            "snp.policy.report_data",
            Aspect::Freshness,
            "no expected report_data given",
        )),
    }
    if let Some(min_svn) = policy.min_guest_svn {
        appraisal.push(Check::from_bool(
            "snp.policy.guest_svn",
            Aspect::Configuration,
            report.guest_svn >= min_svn,
            format!("guest svn {} minimum {min_svn}", report.guest_svn),
        ));
    }
    if let Some(vmpl) = policy.vmpl {
        appraisal.push(Check::from_bool(
            "snp.policy.vmpl",
            Aspect::Configuration,
            report.vmpl == vmpl,
            format!("report vmpl {} expected {vmpl}", report.vmpl),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_chains_parse_and_self_verify() {
        for product in [Product::Milan, Product::Genoa, Product::Turin] {
            for vlek in [false, true] {
                let (ask, ark) = pinned_chain(product, vlek).unwrap();
                let now = 1_767_225_600; // 2026-01-01
                x509chain::verify_chain(&[ask, ark.clone()], &[ark], now).unwrap();
            }
        }
    }

    /// VLEK is allowed by the built-in policy, by a file without `[snp]`,
    /// by an empty `[snp]`, and refused only by `allow_vlek = false`. (No real
    /// VLEK-signed report exists in the vectors; this checks the decision
    /// itself, and `tests/all/snp.rs` runs it through `verify`.)
    #[test]
    fn vlek_allowed_by_default_and_refused_on_request() {
        use crate::check::CheckStatus;
        use crate::policy::Policy;
        let issuer = "SEV-VLEK-Milan";
        for (label, policy) in [
            ("built-in", Policy::default()),
            ("no [snp]", Policy::from_toml("[gpu]\n").unwrap()),
            ("empty [snp]", Policy::from_toml("[snp]\n").unwrap()),
            (
                "[snp] without allow_vlek",
                Policy::from_toml("[snp]\nallow_debug = false\n").unwrap(),
            ),
        ] {
            let check = signing_key_check(SigningKey::Vlek, issuer, &policy.snp);
            assert_eq!(check.status, CheckStatus::Pass, "{label}: {}", check.detail);
        }
        let refusing = Policy::from_toml("[snp]\nallow_vlek = false\n").unwrap();
        let check = signing_key_check(SigningKey::Vlek, issuer, &refusing.snp);
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(
            check.detail.contains("policy forbids VLEK"),
            "{}",
            check.detail
        );
        // The kinds must still agree.
        let default = SnpPolicy::default();
        for (key, issuer) in [
            (SigningKey::Vlek, "SEV-Milan"),
            (SigningKey::Vcek, "SEV-VLEK-Milan"),
            (SigningKey::None, "SEV-Milan"),
        ] {
            let check = signing_key_check(key, issuer, &default);
            assert_eq!(check.status, CheckStatus::Fail, "{key:?} with {issuer}");
        }
        let check = signing_key_check(SigningKey::Vcek, "SEV-Milan", &default);
        assert_eq!(check.status, CheckStatus::Pass);
    }

    #[test]
    fn guid_bytes_use_the_uefi_layout() {
        let vcek = guid_bytes("63da758d-e664-4564-adc5-f4b93be8accd").unwrap();
        assert_eq!(hex::encode(vcek), "8d75da6364e66445adc5f4b93be8accd");
        assert_eq!(cert_kind(&vcek), "vcek");
        assert_eq!(cert_kind(&[1; 16]), "unknown");
    }

    #[test]
    fn rejects_short_and_bad_version() {
        assert!(matches!(
            SnpReport::parse(&[0u8; 10]),
            Err(SnpReportError::BadLength { .. })
        ));
        let raw = vec![0u8; REPORT_SIZE];
        assert!(matches!(
            SnpReport::parse(&raw),
            Err(SnpReportError::Version { version: 0 })
        ));
    }

    #[test]
    fn turin_tcb_layout() {
        let tcb = TcbVersion::decode([1, 2, 3, 4, 0, 0, 0, 9], Some(Product::Turin));
        assert_eq!(
            (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
            (Some(1), 2, 3, 4, 9)
        );
        let tcb = TcbVersion::decode([2, 0, 0, 0, 0, 0, 5, 68], Some(Product::Milan));
        assert_eq!(
            (tcb.fmc, tcb.bootloader, tcb.snp, tcb.microcode),
            (None, 2, 5, 68)
        );
    }
}
