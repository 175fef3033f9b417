//! Hostile pricing plugin used by the host's containment tests. The operator config key
//! `mode` selects the misbehaviour: `loop`, `membomb`, `recursion`, `huge-output`, `trap`,
//! `garbage`, `log-flood`; anything else answers a fixed valid quote. When `only-tenant`
//! is set, it misbehaves only for that tenant: a plugin that passes the host's self-test
//! and turns hostile later, so containment must hold at call time too.

use plinth_plugin_sdk::pricing::{
    Guest, JobRequest, PolicyError, PriceDecision, PricingState, Quote,
};

struct Misbehave;

#[inline(never)]
fn recurse(depth: u64, sink: &mut [u64; 16]) -> u64 {
    let mut local = [depth; 16];
    for (slot, value) in local.iter_mut().zip(sink.iter()) {
        *slot = slot.wrapping_add(*value);
    }
    let below = recurse(depth + 1, &mut local);
    std::hint::black_box(below.wrapping_add(local[3]))
}

impl Guest for Misbehave {
    fn price(req: JobRequest, _state: PricingState) -> Result<PriceDecision, PolicyError> {
        let mut mode = plinth_plugin_sdk::config_get("mode").unwrap_or_default();
        if let Some(target) = plinth_plugin_sdk::config_get("only-tenant") {
            if target != req.tenant {
                mode.clear();
            }
        }
        match mode.as_str() {
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xA5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => {
                let mut seed = [1u64; 16];
                let depth = recurse(0, &mut seed);
                Ok(PriceDecision::Refuse(format!("{depth}")))
            }
            "huge-output" => Ok(PriceDecision::Refuse("x".repeat(4 << 20))),
            "trap" => {
                let divisor = std::hint::black_box(req.gpu_count.wrapping_sub(req.gpu_count));
                Ok(PriceDecision::Refuse(format!("{}", 1 / divisor)))
            }
            "garbage" => Ok(PriceDecision::Offer(Quote {
                price_micros: 1,
                currency: "\u{0}\u{7}not a currency code at all".to_string(),
                billable_s: 0,
                gpu_hour_micros: 0,
            })),
            "log-flood" => {
                plinth_plugin_sdk::init_logging();
                for line_idx in 0..2_000u32 {
                    plinth_plugin_sdk::log::info!("flood line {line_idx}");
                }
                Ok(PriceDecision::Refuse("flooded".to_string()))
            }
            _ => Ok(PriceDecision::Offer(Quote {
                price_micros: 42,
                currency: "USDC".to_string(),
                billable_s: 60,
                gpu_hour_micros: 2_520,
            })),
        }
    }
}

plinth_plugin_sdk::export_pricing!(Misbehave);
