//! Fuzz the liveness ledger and probe-answer parsers and the verifier: any bytes give
//! a report or the first bad entry, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::liveness::verify::{VerifyOptions, parse_probes, verify};
use plinth_attestation::liveness::{Entry, ProbeAnswer};

fuzz_target!(|data: &[u8]| {
    // The first half is a ledger, the second a probe file (split at the first NUL).
    let (ledger, probe_text) = match data.iter().position(|b| *b == 0) {
        Some(idx) => (&data[..idx], &data[idx + 1..]),
        None => (data, &[][..]),
    };
    let probes: Vec<_> = parse_probes(probe_text)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(idx, answer)| (idx + 1, answer))
        .collect();
    let _ = verify(ledger, &probes, &VerifyOptions::default());
    let _ = verify(
        ledger,
        &probes,
        &VerifyOptions {
            partial: true,
            from_ms: Some(0),
            to_ms: Some(u64::MAX),
            tolerance_ms: Some(u64::MAX),
            ..VerifyOptions::default()
        },
    );
    if let Ok(entry) = Entry::from_json(data) {
        let _ = entry.signature_verifies();
        let _ = entry.hash();
    }
    if let Ok(answer) = ProbeAnswer::from_json(data) {
        let _ = answer.signature_verifies();
    }
});
