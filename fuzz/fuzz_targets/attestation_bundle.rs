//! Fuzz the evidence bundle parser and verifier: any bytes give a parsed
//! bundle or an error naming the member, never a panic; a parsed bundle
//! serialises back to a bundle that parses to the same value, and
//! verifying it yields a report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::bundle::EvidenceBundle;
use plinth_attestation::bundle::verify::{self, BundleContext};
use plinth_attestation::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = EvidenceBundle::parse(data) else {
        return;
    };
    let text = bundle.to_json_pretty().expect("a parsed bundle serialises");
    let again = EvidenceBundle::parse(&text).expect("a serialised bundle parses");
    assert_eq!(again, bundle);
    let policy = Policy::default();
    let context = BundleContext {
        nonce: Some(&bundle.nonce.0),
        policy: &policy,
        ak_records: &[],
        at: 1_767_225_600,
    };
    let report = verify::verify(&bundle, &context);
    assert!(!report.appraisals.is_empty());
});
