//! Fuzz the receipt ledger verifier: any bytes give a summary or the first
//! bad line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::receipt::{LedgerOptions, Receipt, verify_ledger};

fuzz_target!(|data: &[u8]| {
    let _ = verify_ledger(data, &LedgerOptions::default());
    if let Ok(receipt) = Receipt::from_json(data) {
        let _ = receipt.verify_signature();
        let _ = receipt.hash();
    }
});
