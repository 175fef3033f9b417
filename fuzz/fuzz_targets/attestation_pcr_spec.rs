//! Fuzz the PCR selection syntax of `attestation.pcrs` (`sha256:0-9,14+sha1:0-7`): any
//! text parses or gives an error naming the part; a parsed selection prints in its
//! canonical form and parses back to the same selection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::collect::PcrSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<PcrSpec>() {
        let canonical = spec.to_string();
        let again: PcrSpec = canonical.parse().expect("canonical form parses");
        assert_eq!(again, spec);
        assert!(!spec.is_empty());
    }
});
