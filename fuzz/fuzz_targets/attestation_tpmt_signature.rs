//! Fuzz the TPMT_SIGNATURE parser and verification against fixed keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::tpm::quote::TpmSignature;
use plinth_attestation::x509chain::RawPublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok(signature) = TpmSignature::parse(data) else {
        return;
    };
    let rsa = RawPublicKey::Rsa {
        n: vec![0xc5; 256],
        e: vec![1, 0, 1],
    };
    let mut point = vec![0x04];
    point.extend([7u8; 64]);
    let ecc = RawPublicKey::P256(point);
    assert!(signature.verify(&rsa, b"message").is_err());
    assert!(signature.verify(&ecc, b"message").is_err());
});
