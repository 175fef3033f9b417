//! Pricing plugin built against the frozen plinth:policy@0.1.0 WIT: the host (0.1.1)
//! must keep serving it. It quotes a flat 1 unit per GPU-second and logs through the
//! 0.1.0 host interface.

wit_bindgen::generate!({
    path: "../../../wit/frozen/0.1.0/policy.wit",
    world: "pricing-plugin",
    generate_all,
});

use exports::plinth::policy::pricing::{Guest, PriceDecision, Quote};
use plinth::policy::host::{self, Level};
use plinth::policy::types::{JobRequest, PolicyError, PricingState};

struct Compat;

impl Guest for Compat {
    fn price(req: JobRequest, _state: PricingState) -> Result<PriceDecision, PolicyError> {
        host::log(Level::Info, "compat plugin quoting", &[]);
        let seconds = req.duration_s * u64::from(req.gpu_count);
        Ok(PriceDecision::Offer(Quote {
            price_micros: seconds,
            currency: "USDC".to_string(),
            billable_s: req.duration_s,
            gpu_hour_micros: 3600,
        }))
    }
}

export!(Compat);
