//! Fuzz the capacity-challenge transcript parser and verifier: any bytes give a
//! parse error naming the member, a structure error naming the field, or an
//! appraisal, never a panic. Sizes are capped so that one input stays fast.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::challenge::{ChallengePolicy, OpenRequest, Transcript, verify};

fuzz_target!(|data: &[u8]| {
    if let Ok(transcript) = Transcript::from_json(data) {
        let _ = transcript.validate();
        if transcript.challenge.n <= 256 {
            let _ = verify(&transcript, &ChallengePolicy::default());
        }
    }
    let _ = plinth_attestation::challenge::transcript::parse_json::<OpenRequest>(data);
});
