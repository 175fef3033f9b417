//! Built-in policies the agent uses when no plugin is installed for a kind, or when the
//! installed plugin fails a call. Deliberately simple and conservative.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    HostState, JobRequest, PriceDecision, PricingState, Quote, ReportRecord, ScheduleDecision,
    UsageRecord,
};

/// Settings of the built-in policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Flat price of one GPU-hour in micro-units.
    pub gpu_hour_micros: u64,
    /// Minimum billable seconds.
    pub min_billable_s: u64,
    /// Currency code.
    pub currency: String,
    /// Retry hint when no GPUs are free, seconds.
    pub defer_s: u32,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            gpu_hour_micros: 2_000_000,
            min_billable_s: 600,
            currency: "USDC".to_string(),
            defer_s: 60,
        }
    }
}

fn usable(request: &JobRequest, gpu: &crate::Gpu) -> bool {
    !gpu.drained
        && gpu.memory_mib >= request.min_gpu_memory_mib
        && request.gpu_model.as_ref().is_none_or(|wanted| {
            gpu.model
                .to_ascii_lowercase()
                .contains(&wanted.to_ascii_lowercase())
        })
}

/// Flat-rate pricing: refuse when the host cannot run the request now or the tenant's
/// maximum is below the price. The policy prices GPU time only: a CPU-only request is
/// offered at 0, as its receipts will charge ([`period_price`] of no GPUs).
pub fn price(config: &FallbackConfig, request: &JobRequest, state: &PricingState) -> PriceDecision {
    if request.gpu_count == 0 {
        return PriceDecision::Offer(Quote {
            price_micros: 0,
            currency: config.currency.clone(),
            billable_s: request.duration_s.max(config.min_billable_s),
            gpu_hour_micros: config.gpu_hour_micros,
        });
    }
    let n_free: u64 = state
        .classes
        .iter()
        .filter(|class| {
            class.memory_mib >= request.min_gpu_memory_mib
                && request.gpu_model.as_ref().is_none_or(|wanted| {
                    class
                        .model
                        .to_ascii_lowercase()
                        .contains(&wanted.to_ascii_lowercase())
                })
        })
        .map(|class| u64::from(class.free))
        .sum();
    if n_free < u64::from(request.gpu_count) {
        return PriceDecision::Refuse(format!(
            "built-in policy: {n_free} matching free gpus, {} wanted",
            request.gpu_count
        ));
    }
    let billable_s = request.duration_s.max(config.min_billable_s);
    let total =
        u128::from(config.gpu_hour_micros) * u128::from(request.gpu_count) * u128::from(billable_s);
    let price_micros = u64::try_from(total.div_ceil(3600)).unwrap_or(u64::MAX);
    if request
        .max_price_micros
        .is_some_and(|max| max < price_micros)
    {
        return PriceDecision::Refuse(format!("built-in policy: max price below {price_micros}"));
    }
    PriceDecision::Offer(Quote {
        price_micros,
        currency: config.currency.clone(),
        billable_s,
        gpu_hour_micros: config.gpu_hour_micros,
    })
}

/// Name and version of the built-in pricing policy, part of what [`pricing_sha256`] hashes.
pub const PRICING_POLICY_NAME: &str = "plinth-builtin-pricing/3";

/// The built-in rate applied to a metered period, for usage receipts: `gpu_hour_micros`
/// per GPU-hour of wall time, rounded up to a whole micro-unit. A job without GPUs costs
/// nothing under the built-in policy (its quote is 0 too). The quote's `min_billable_s` applies to quotes, not to periods.
pub fn period_price(config: &FallbackConfig, n_gpus: u64, wall_ms: u64) -> u64 {
    u128::from(config.gpu_hour_micros)
        .checked_mul(u128::from(n_gpus))
        .and_then(|rate| rate.checked_mul(u128::from(wall_ms)))
        .and_then(|total| u64::try_from(total.div_ceil(3_600_000)).ok())
        .unwrap_or(u64::MAX)
}

/// SHA-256 (hex) that identifies the built-in pricing policy with these settings: what a
/// receipt names as the policy that priced it, where a plugin would name its package.
pub fn pricing_sha256(config: &FallbackConfig) -> String {
    let text = format!(
        "{PRICING_POLICY_NAME} gpu_hour_micros={} min_billable_s={} currency={}",
        config.gpu_hour_micros, config.min_billable_s, config.currency
    );
    crate::package::sha256_hex(text.as_bytes())
}

/// First fit: the lowest-numbered free, usable GPUs; defer when they exist but are busy.
/// A CPU-only request (no GPU wanted) is admitted without one.
pub fn schedule(
    config: &FallbackConfig,
    request: &JobRequest,
    state: &HostState,
) -> ScheduleDecision {
    let wanted = request.gpu_count as usize;
    if wanted == 0 {
        return ScheduleDecision::Admit(Vec::new());
    }
    let n_usable = state.gpus.iter().filter(|gpu| usable(request, gpu)).count();
    if n_usable < wanted {
        return ScheduleDecision::Reject(format!(
            "built-in policy: {n_usable} usable gpus, {wanted} wanted"
        ));
    }
    let mut free: Vec<u32> = state
        .gpus
        .iter()
        .filter(|gpu| !gpu.allocated && usable(request, gpu))
        .map(|gpu| gpu.index)
        .collect();
    if free.len() < wanted {
        return ScheduleDecision::Defer(config.defer_s);
    }
    free.sort_unstable();
    free.truncate(wanted);
    ScheduleDecision::Admit(free)
}

/// Daily totals per tenant (by interval start), without splitting intervals.
pub fn report(records: &[UsageRecord]) -> Vec<ReportRecord> {
    let mut totals: BTreeMap<(String, u64), (u64, u64)> = BTreeMap::new();
    for record in records {
        let day = record.start_s - record.start_s % 86_400;
        let entry = totals.entry((record.tenant.clone(), day)).or_default();
        entry.0 += record.end_s.saturating_sub(record.start_s) * u64::from(record.gpu_count);
        entry.1 += record.charged_micros;
    }
    totals
        .into_iter()
        .map(|((tenant, day), (gpu_seconds, charged))| ReportRecord {
            key: tenant,
            period_start_s: day,
            period_end_s: day + 86_400,
            values: vec![
                ("gpu-seconds".to_string(), gpu_seconds),
                ("charged-micros".to_string(), charged),
            ],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gpu;

    fn gpu(index: u32, drained: bool, allocated: bool) -> Gpu {
        Gpu {
            index,
            uuid: format!("GPU-{index}"),
            model: "H100".to_string(),
            memory_mib: 81_920,
            numa_node: 0,
            nvlink_domain: 0,
            utilisation_pct: 0,
            drained,
            allocated,
        }
    }

    #[test]
    fn period_price_matches_the_quote_rate() {
        let config = FallbackConfig::default();
        // One GPU for an hour costs exactly the hourly rate; two for half an hour too.
        assert_eq!(period_price(&config, 1, 3_600_000), config.gpu_hour_micros);
        assert_eq!(period_price(&config, 2, 1_800_000), config.gpu_hour_micros);
        // Rounded up, never down; no GPUs, no charge.
        assert_eq!(period_price(&config, 1, 1), 1);
        assert_eq!(period_price(&config, 0, 3_600_000), 0);
        assert_eq!(
            period_price(&config, u64::MAX, u64::MAX),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn pricing_hash_changes_with_the_settings() {
        let config = FallbackConfig::default();
        let other = FallbackConfig {
            gpu_hour_micros: config.gpu_hour_micros + 1,
            ..config.clone()
        };
        assert_eq!(pricing_sha256(&config), pricing_sha256(&config.clone()));
        assert_ne!(pricing_sha256(&config), pricing_sha256(&other));
        assert_eq!(pricing_sha256(&config).len(), 64);
    }

    fn request(gpu_count: u32) -> JobRequest {
        JobRequest {
            request_id: "r".to_string(),
            tenant: "t".to_string(),
            gpu_count,
            gpu_model: None,
            min_gpu_memory_mib: 0,
            duration_s: 3600,
            max_price_micros: None,
        }
    }

    #[test]
    fn first_fit_skips_drained_and_defers_when_busy() {
        let state = HostState {
            gpus: vec![
                gpu(0, true, false),
                gpu(1, false, true),
                gpu(2, false, false),
            ],
            running_jobs: 1,
            utilisation_pct: 10,
        };
        let config = FallbackConfig::default();
        assert_eq!(
            schedule(&config, &request(1), &state),
            ScheduleDecision::Admit(vec![2])
        );
        assert_eq!(
            schedule(&config, &request(2), &state),
            ScheduleDecision::Defer(60)
        );
        assert!(matches!(
            schedule(&config, &request(3), &state),
            ScheduleDecision::Reject(_)
        ));
        match price(&config, &request(1), &crate::summarize(&state)) {
            PriceDecision::Offer(quote) => assert_eq!(quote.price_micros, 2_000_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn daily_report_sums_per_tenant() {
        let record = UsageRecord {
            job_id: "j".to_string(),
            tenant: "t".to_string(),
            start_s: 86_400 + 10,
            end_s: 86_400 + 110,
            gpu_count: 2,
            utilisation_pct: 50,
            charged_micros: 7,
        };
        let report = report(&[record.clone(), record]);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].values[0], ("gpu-seconds".to_string(), 400));
        assert_eq!(report[0].period_start_s, 86_400);
    }
}
