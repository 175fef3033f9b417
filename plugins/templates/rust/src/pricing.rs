//! {{name}}: a pricing policy for plinth. A flat rate per GPU-hour (config `rate`,
//! micro-units, default 2000000) times the GPUs and the hours asked for, rounded up to a
//! micro-unit; refused when the host has too few free GPUs of the wanted model and
//! memory, or when the tenant's maximum price is below the quote.

use plinth_plugin_sdk::pricing::{
    Guest, JobRequest, PolicyError, PriceDecision, PricingState, Quote,
};

struct Plugin;

fn matches_model(model: &str, wanted: Option<&str>) -> bool {
    wanted.is_none_or(|wanted| {
        model
            .to_ascii_lowercase()
            .contains(&wanted.to_ascii_lowercase())
    })
}

impl Guest for Plugin {
    fn price(req: JobRequest, state: PricingState) -> Result<PriceDecision, PolicyError> {
        plinth_plugin_sdk::init_logging();
        let rate: u64 = plinth_plugin_sdk::config_parse("rate", 2_000_000)
            .map_err(PolicyError::BadConfig)?;
        let currency =
            plinth_plugin_sdk::config_get("currency").unwrap_or_else(|| "USDC".to_string());
        if req.gpu_count == 0 {
            return Err(PolicyError::InvalidInput("gpu-count is 0".to_string()));
        }
        let free: u32 = state
            .classes
            .iter()
            .filter(|class| class.memory_mib >= req.min_gpu_memory_mib)
            .filter(|class| matches_model(&class.model, req.gpu_model.as_deref()))
            .map(|class| class.free)
            .sum();
        if free < req.gpu_count {
            let reason = format!("only {free} free gpus, {} wanted", req.gpu_count);
            plinth_plugin_sdk::log::debug!("refusing {}: {reason}", req.request_id);
            return Ok(PriceDecision::Refuse(reason));
        }
        let total = u128::from(rate) * u128::from(req.gpu_count) * u128::from(req.duration_s);
        let Ok(price_micros) = u64::try_from(total.div_ceil(3600)) else {
            return Ok(PriceDecision::Refuse("price overflows u64".to_string()));
        };
        if let Some(max_price) = req.max_price_micros
            && max_price < price_micros
        {
            return Ok(PriceDecision::Refuse(format!(
                "max price {max_price} is below the quote {price_micros}"
            )));
        }
        plinth_plugin_sdk::log::info!("quoting {price_micros} for {}", req.request_id);
        Ok(PriceDecision::Offer(Quote {
            price_micros,
            currency,
            billable_s: req.duration_s,
            gpu_hour_micros: rate,
        }))
    }
}

plinth_plugin_sdk::export_pricing!(Plugin);
