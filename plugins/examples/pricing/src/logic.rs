//! Pricing logic of the example pricing plugin, in plain Rust with no dependencies.
//!
//! The plugin (`lib.rs`) converts the WIT types into these and back; the host's
//! benchmark includes this very file to price natively with identical logic.

/// One class of GPUs (same model and memory), as far as pricing cares.
#[derive(Debug, Clone)]
pub struct ClassView<'a> {
    /// Model name.
    pub model: &'a str,
    /// Memory per device in MiB.
    pub memory_mib: u64,
    /// Devices neither drained nor allocated.
    pub free: u32,
}

/// The request, as far as pricing cares.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// GPUs wanted.
    pub gpu_count: u32,
    /// Wanted model, if any (case-insensitive substring match).
    pub gpu_model: Option<&'a str>,
    /// Minimum memory per GPU in MiB.
    pub min_gpu_memory_mib: u64,
    /// Expected duration in seconds.
    pub duration_s: u64,
    /// Highest acceptable total price in micro-units.
    pub max_price_micros: Option<u64>,
}

/// Operator settings of the pricing policy.
#[derive(Debug, Clone)]
pub struct PricingConfig {
    /// (model substring, micro-units per GPU-hour), first match wins.
    pub model_rates: Vec<(String, u64)>,
    /// Rate for models not in `model_rates`.
    pub default_rate: u64,
    /// Extra micro-units per GiB of device memory per hour.
    pub per_gib_hour: u64,
    /// Host utilisation (percent) from which the surcharge applies.
    pub surcharge_threshold_pct: u8,
    /// Surcharge in percent.
    pub surcharge_pct: u64,
    /// Minimum billable time in seconds.
    pub min_billable_s: u64,
    /// Lowest GPU-hour rate (micro-units) the operator accepts from a tenant's offer.
    pub floor_gpu_hour: u64,
    /// Currency code.
    pub currency: String,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            model_rates: vec![
                ("h200".to_string(), 3_200_000),
                ("h100".to_string(), 2_500_000),
                ("a100".to_string(), 1_400_000),
                ("l40s".to_string(), 900_000),
                ("rtx 4090".to_string(), 400_000),
            ],
            default_rate: 600_000,
            per_gib_hour: 5_000,
            surcharge_threshold_pct: 75,
            surcharge_pct: 20,
            min_billable_s: 600,
            floor_gpu_hour: 300_000,
            currency: "USDC".to_string(),
        }
    }
}

impl PricingConfig {
    /// Read settings through `get` (the plugin passes the host's config-get). Keys:
    /// `rate.<model>`, `rate.default`, `per-gib-hour`, `surcharge.threshold-pct`,
    /// `surcharge.pct`, `min-billable-s`, `floor-gpu-hour`, `currency`; `keys` lists every
    /// configured key so that `rate.<model>` entries can be found.
    pub fn from_lookup(
        keys: &[String],
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<PricingConfig, String> {
        fn num<T: core::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            key: &str,
            default: T,
        ) -> Result<T, String> {
            match get(key) {
                None => Ok(default),
                Some(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| format!("config key {key}: cannot parse {text:?}")),
            }
        }
        let mut config = PricingConfig::default();
        for key in keys {
            if let Some(model) = key.strip_prefix("rate.") {
                if model == "default" {
                    continue;
                }
                let rate = num(&get, key, 0u64)?;
                config
                    .model_rates
                    .insert(0, (model.to_ascii_lowercase(), rate));
            }
        }
        config.default_rate = num(&get, "rate.default", config.default_rate)?;
        config.per_gib_hour = num(&get, "per-gib-hour", config.per_gib_hour)?;
        config.surcharge_threshold_pct = num(
            &get,
            "surcharge.threshold-pct",
            config.surcharge_threshold_pct,
        )?;
        config.surcharge_pct = num(&get, "surcharge.pct", config.surcharge_pct)?;
        config.min_billable_s = num(&get, "min-billable-s", config.min_billable_s)?;
        config.floor_gpu_hour = num(&get, "floor-gpu-hour", config.floor_gpu_hour)?;
        if let Some(currency) = get("currency") {
            config.currency = currency;
        }
        Ok(config)
    }

    fn model_rate(&self, model: &str) -> u64 {
        self.model_rates
            .iter()
            .find(|(needle, _)| contains_ignore_ascii_case(model, needle))
            .map(|(_, rate)| *rate)
            .unwrap_or(self.default_rate)
    }
}

/// Whether `haystack` contains `needle`, ignoring ASCII case, without allocating.
pub fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// A priced offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Total price, micro-units.
    pub price_micros: u64,
    /// Billed seconds.
    pub billable_s: u64,
    /// Price of one GPU-hour after surcharge, micro-units.
    pub gpu_hour_micros: u64,
}

/// Result of pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bid this.
    Offer(Offer),
    /// Do not bid, because.
    Refuse(String),
}

/// Price a request. `Err` means the input made no sense.
pub fn price(
    config: &PricingConfig,
    request: &RequestView<'_>,
    classes: &[ClassView<'_>],
    host_utilisation_pct: u8,
) -> Result<Decision, String> {
    if request.gpu_count == 0 {
        return Err("gpu-count is 0".to_string());
    }
    let mut chosen: Option<&ClassView<'_>> = None;
    let mut n_free = 0u32;
    for class in classes {
        if class.free == 0 || class.memory_mib < request.min_gpu_memory_mib {
            continue;
        }
        if let Some(wanted) = request.gpu_model
            && !contains_ignore_ascii_case(class.model, wanted)
        {
            continue;
        }
        n_free += class.free;
        if chosen.is_none() {
            chosen = Some(class);
        }
    }
    let Some(gpu) = chosen.filter(|_| n_free >= request.gpu_count) else {
        return Ok(Decision::Refuse(format!(
            "only {n_free} matching free gpus, {} wanted",
            request.gpu_count
        )));
    };
    let memory_gib = gpu.memory_mib / 1024;
    let mut gpu_hour = config.model_rate(gpu.model) + memory_gib * config.per_gib_hour;
    if host_utilisation_pct >= config.surcharge_threshold_pct {
        gpu_hour += gpu_hour * config.surcharge_pct / 100;
    }
    let billable_s = request.duration_s.max(config.min_billable_s);
    let total = u128::from(gpu_hour) * u128::from(request.gpu_count) * u128::from(billable_s);
    let price = total.div_ceil(3600);
    let Ok(price_micros) = u64::try_from(price) else {
        return Ok(Decision::Refuse("price overflows u64".to_string()));
    };
    if let Some(max_price) = request.max_price_micros {
        let offered_rate =
            u128::from(max_price) * 3600 / (u128::from(request.gpu_count) * u128::from(billable_s));
        if offered_rate < u128::from(config.floor_gpu_hour) {
            return Ok(Decision::Refuse(format!(
                "offer of {offered_rate} per gpu-hour is below the floor of {}",
                config.floor_gpu_hour
            )));
        }
        if max_price < price_micros {
            return Ok(Decision::Refuse(format!(
                "max price {max_price} is below the quote {price_micros}"
            )));
        }
    }
    Ok(Decision::Offer(Offer {
        price_micros,
        billable_s,
        gpu_hour_micros: gpu_hour,
    }))
}
