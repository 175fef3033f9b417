//! Pricing plugin built against plinth:policy@1.0.0, a major version the host does not
//! serve: the host must refuse it with an error naming both versions.

wit_bindgen::generate!({
    path: "wit/policy.wit",
    world: "pricing-plugin",
    generate_all,
});

use exports::plinth::policy::pricing::{Guest, PriceDecision};
use plinth::policy::types::{JobRequest, PolicyError, PricingState};

struct FromTheFuture;

impl Guest for FromTheFuture {
    fn price(_req: JobRequest, _state: PricingState) -> Result<PriceDecision, PolicyError> {
        Ok(PriceDecision::Refuse("built for 1.0.0".to_string()))
    }
}

export!(FromTheFuture);
