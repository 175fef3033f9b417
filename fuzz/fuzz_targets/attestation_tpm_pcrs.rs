//! Fuzz the tpm2-tools PCR file parser (serialized and values layouts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::pcrs::{PcrSelection, composite_digest, parse_pcr_file};

fuzz_target!(|data: &[u8]| {
    let selection = vec![
        PcrSelection {
            hash_id: 0x000b,
            pcrs: vec![0, 7],
        },
        PcrSelection {
            hash_id: 0x0004,
            pcrs: vec![1],
        },
    ];
    if let Ok(values) = parse_pcr_file(data, &selection) {
        let _ = composite_digest(&values, &selection, HashAlg::Sha256);
    }
});
