//! Fuzz the TCG event log parser, replay and comparison.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::tpm::eventlog::{EventLog, compare};

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    let replayed = log.replay();
    let checks = compare(&log, &replayed, &replayed);
    assert!(
        checks
            .iter()
            .all(|c| c.status != plinth_attestation::CheckStatus::Fail)
    );
    for event in &log.events {
        let _ = event.type_name();
    }
});
