//! Fuzz the AK loader: TPM2B_PUBLIC / TPMT_PUBLIC / PEM / DER public keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::tpm::public::{TpmPublic, load_ak};

fuzz_target!(|data: &[u8]| {
    let _ = TpmPublic::parse(data);
    let _ = load_ak(data, "fuzz");
});
