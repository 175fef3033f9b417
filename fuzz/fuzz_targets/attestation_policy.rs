//! Fuzz the appraisal policy parser (TOML).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::from_toml(text);
    }
});
