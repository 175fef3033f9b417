//! Example pricing plugin: price per GPU-hour by GPU model and memory, a surcharge when
//! the host is busy, a minimum billable time, and refusal of offers below a floor.
//!
//! Operator configuration (all optional): `rate.<model>` (micro-units per GPU-hour,
//! matched as a case-insensitive substring of the model name), `rate.default`,
//! `per-gib-hour`, `surcharge.threshold-pct`, `surcharge.pct`, `min-billable-s`,
//! `floor-gpu-hour`, `currency`.

pub mod logic;

mod plugin {
    use std::sync::OnceLock;

    use plinth_plugin_sdk::pricing::{
        Guest, JobRequest, PolicyError, PriceDecision, PricingState, Quote,
    };

    use crate::logic::{self, ClassView, PricingConfig, RequestView};

    struct ExamplePricing;

    impl Guest for ExamplePricing {
        fn price(req: JobRequest, state: PricingState) -> Result<PriceDecision, PolicyError> {
            plinth_plugin_sdk::init_logging();
            // The configuration is read-only for the life of an instance: parse it once.
            static CONFIG: OnceLock<Result<PricingConfig, String>> = OnceLock::new();
            let config = CONFIG
                .get_or_init(|| {
                    let keys = plinth_plugin_sdk::config_keys();
                    PricingConfig::from_lookup(&keys, plinth_plugin_sdk::config_get)
                })
                .as_ref()
                .map_err(|reason| PolicyError::BadConfig(reason.clone()))?;
            let classes: Vec<ClassView<'_>> = state
                .classes
                .iter()
                .map(|class| ClassView {
                    model: &class.model,
                    memory_mib: class.memory_mib,
                    free: class.free,
                })
                .collect();
            let request = RequestView {
                gpu_count: req.gpu_count,
                gpu_model: req.gpu_model.as_deref(),
                min_gpu_memory_mib: req.min_gpu_memory_mib,
                duration_s: req.duration_s,
                max_price_micros: req.max_price_micros,
            };
            match logic::price(config, &request, &classes, state.utilisation_pct) {
                Err(reason) => Err(PolicyError::InvalidInput(reason)),
                Ok(logic::Decision::Refuse(reason)) => {
                    plinth_plugin_sdk::log::debug!("refusing {}: {reason}", req.request_id);
                    Ok(PriceDecision::Refuse(reason))
                }
                Ok(logic::Decision::Offer(offer)) => Ok(PriceDecision::Offer(Quote {
                    price_micros: offer.price_micros,
                    currency: config.currency.clone(),
                    billable_s: offer.billable_s,
                    gpu_hour_micros: offer.gpu_hour_micros,
                })),
            }
        }
    }

    plinth_plugin_sdk::export_pricing!(ExamplePricing);
}
