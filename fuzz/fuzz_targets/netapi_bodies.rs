//! Fuzz the network API's JSON bodies as the handlers parse them: any bytes give a value
//! or an error naming the field, never a panic; parsed quotes and leases are checked
//! (signature, expiry, ids, bounds) as a lease checks them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_agent::netapi::quotes::{LeaseRequest, QuoteRequest, SignedQuote, check_id};
use plinth_agent::netapi::routes::parse_body;

const NODE_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_body::<QuoteRequest>(data) {
        let _ = check_id("quote_id", &request.quote_id);
        let _ = request.request.validate("request");
        let _ = request
            .request
            .to_policy(&request.quote_id, &request.client_id);
    }
    if let Ok(lease) = parse_body::<LeaseRequest>(data) {
        let _ = check_id("lease_id", &lease.lease_id);
        let _ = lease.quote.check(NODE_KEY, &lease.quote.client_id, 0);
        let _ = lease.quote.signing_bytes();
    }
    if let Ok(quote) = parse_body::<SignedQuote>(data) {
        let _ = quote.check(NODE_KEY, "market-a", u64::MAX);
    }
});
