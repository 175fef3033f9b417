//! Fuzz the job spec parser and validator: any bytes give a `JobSpec` or a
//! `JobSpecError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_jobs::spec::JobSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = JobSpec::from_json(data) {
        // A spec that validated once validates again after a round trip.
        let bytes = serde_json::to_vec(&spec).unwrap_or_default();
        assert!(JobSpec::from_json(&bytes).is_ok());
    }
});
