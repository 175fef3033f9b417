//! Fuzz the NVIDIA SPDM GET_MEASUREMENTS report parser (binary and hex text)
//! and the NVIDIA SDK evidence JSON reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::gpu::spdm::SpdmReport;

fuzz_target!(|data: &[u8]| {
    let _ = plinth_attestation::gpu::spdm::parse_sdk_evidence(data);
    let Ok(report) = SpdmReport::parse(data) else {
        return;
    };
    assert!(report.signed_bytes().len() + 96 + report.trailing.len() == report.raw.len());
    let _ = plinth_attestation::gpu::spdm::trailing_data_check(&report, false);
    let _ = report.driver_version();
    let _ = report.vbios_version();
});
