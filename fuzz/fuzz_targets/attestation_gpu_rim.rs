//! Fuzz the NVIDIA RIM (SWID XML) parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::gpu::rim::Rim;

fuzz_target!(|data: &[u8]| {
    let _ = Rim::parse(data);
});
