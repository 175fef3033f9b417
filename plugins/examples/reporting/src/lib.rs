//! Example reporting plugin: hourly aggregation per tenant. Each usage interval is split
//! at hour boundaries (UTC); per tenant and hour the report carries `gpu-seconds`,
//! `charged-micros` (prorated by time, remainders kept so totals are exact), `jobs`
//! (distinct job ids) and `mean-utilisation-pct` (weighted by GPU-seconds).

use std::collections::{BTreeMap, BTreeSet};

use plinth_plugin_sdk::reporting::{Guest, PolicyError, ReportRecord, UsageRecord};

struct HourlyPerTenant;

#[derive(Default)]
struct Bucket {
    gpu_seconds: u64,
    charged_micros: u64,
    utilisation_weighted: u128,
    jobs: BTreeSet<String>,
}

const HOUR: u64 = 3600;

impl Guest for HourlyPerTenant {
    fn report(records: Vec<UsageRecord>) -> Result<Vec<ReportRecord>, PolicyError> {
        let mut buckets: BTreeMap<(String, u64), Bucket> = BTreeMap::new();
        for record in &records {
            if record.end_s < record.start_s {
                return Err(PolicyError::InvalidInput(format!(
                    "job {}: end {} before start {}",
                    record.job_id, record.end_s, record.start_s
                )));
            }
            let duration = record.end_s - record.start_s;
            let mut charged_left = record.charged_micros;
            let mut cursor = record.start_s;
            while cursor < record.end_s || (duration == 0 && cursor == record.start_s) {
                let hour_start = cursor - cursor % HOUR;
                let piece_end = (hour_start + HOUR).min(record.end_s);
                let piece = piece_end - cursor;
                let is_last = piece_end >= record.end_s;
                let charged = if is_last || duration == 0 {
                    charged_left
                } else {
                    let share = (u128::from(record.charged_micros) * u128::from(piece)
                        / u128::from(duration)) as u64;
                    share.min(charged_left)
                };
                charged_left -= charged;
                let gpu_seconds = piece * u64::from(record.gpu_count);
                let bucket = buckets
                    .entry((record.tenant.clone(), hour_start))
                    .or_default();
                bucket.gpu_seconds += gpu_seconds;
                bucket.charged_micros += charged;
                bucket.utilisation_weighted +=
                    u128::from(gpu_seconds) * u128::from(record.utilisation_pct);
                bucket.jobs.insert(record.job_id.clone());
                if is_last {
                    break;
                }
                cursor = piece_end;
            }
        }
        Ok(buckets
            .into_iter()
            .map(|((tenant, hour_start), bucket)| {
                let mean_utilisation = if bucket.gpu_seconds == 0 {
                    0
                } else {
                    (bucket.utilisation_weighted / u128::from(bucket.gpu_seconds)) as u64
                };
                ReportRecord {
                    key: tenant,
                    period_start_s: hour_start,
                    period_end_s: hour_start + HOUR,
                    values: vec![
                        ("gpu-seconds".to_string(), bucket.gpu_seconds),
                        ("charged-micros".to_string(), bucket.charged_micros),
                        ("jobs".to_string(), bucket.jobs.len() as u64),
                        ("mean-utilisation-pct".to_string(), mean_utilisation),
                    ],
                }
            })
            .collect())
    }
}

plinth_plugin_sdk::export_reporting!(HourlyPerTenant);
