//! Fuzz certificate bundle input (PEM or DER) and chain verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::x509chain::{self, parse_bundle, verify_chain};

fuzz_target!(|data: &[u8]| {
    let Ok(ders) = parse_bundle(data, "fuzz") else {
        return;
    };
    let anchors: Vec<Vec<u8>> = ders.last().cloned().into_iter().collect();
    let _ = verify_chain(&ders, &anchors, 1_767_225_600);
    for der in &ders {
        if let Ok(cert) = x509chain::parse_cert(der, "fuzz", 0) {
            let _ = x509chain::raw_public_key(cert.public_key(), "fuzz");
            for ext in cert.extensions() {
                let _ = x509chain::tcb_info_fwids(ext.value);
                let _ = x509chain::der_integer_u64(ext.value);
            }
        }
    }
});
