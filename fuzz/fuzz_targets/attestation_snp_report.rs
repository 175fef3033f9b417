//! Fuzz the SEV-SNP report parser (raw 0x4A0 bytes or hex text, bare, in a
//! MSG_REPORT_RSP or followed by a certificate table) and the
//! signature check on whatever parses: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::snp::{SnpReport, TcbVersion};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = SnpReport::parse(data) else {
        return;
    };
    assert_eq!(report.raw.len(), 0x4A0);
    // Whatever container the report came in, its accessors never panic.
    let _ = report.container_note();
    let _ = report.table_vek();
    let _ = report.table_chain();
    // An arbitrary (invalid) point must be rejected, never panic.
    let mut point = vec![0x04];
    point.extend_from_slice(&report.raw[..96]);
    let _ = report.verify_signature(&point);
    let _ = TcbVersion::decode(report.reported_tcb, None);
});
