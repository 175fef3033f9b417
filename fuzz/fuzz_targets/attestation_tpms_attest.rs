//! Fuzz the TPMS_ATTEST parser (tpm2_quote -m output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::tpm::quote::Attest;

fuzz_target!(|data: &[u8]| {
    let Ok(attest) = Attest::parse(data) else {
        return;
    };
    assert!(attest.pcr_select.len() <= 16);
});
