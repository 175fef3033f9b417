//! Test plugin that reads a host file through WASI: it imports wasi:filesystem, a
//! capability plinth never grants, so the host must refuse to load it.

wit_bindgen::generate!({
    path: "../../../wit/policy.wit",
    world: "pricing-plugin",
    generate_all,
});

use exports::plinth::policy::pricing::{Guest, PriceDecision};
use plinth::policy::types::{JobRequest, PolicyError, PricingState};

struct ReadsFiles;

impl Guest for ReadsFiles {
    fn price(_req: JobRequest, _state: PricingState) -> Result<PriceDecision, PolicyError> {
        let secret = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        Ok(PriceDecision::Refuse(secret))
    }
}

export!(ReadsFiles);
