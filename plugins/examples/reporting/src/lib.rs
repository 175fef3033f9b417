//! Example reporting plugin: hourly aggregation per tenant. Each usage interval is split
//! at hour boundaries (UTC); per tenant and hour the report carries `gpu-seconds`,
//! `charged-micros` (prorated by time, remainders kept so totals are exact), `jobs`
//! (distinct job ids) and `mean-utilisation-pct` (weighted by GPU-seconds). For every
//! hour the report covers, a record with key `liveness` carries what the host's
//! liveness ledger proves about that hour (WIT 0.1.2 `liveness.summary`): `entries`,
//! `covered-s`, `uptime-s`, `availability-ppm` (uptime per million seconds of the
//! hour), `drained-gpu-s`, `outages`, `longest-outage-s`, `outage-s.<cause>` for each
//! cause present and `head-seq`; hours the host has no summary for get none.

use std::collections::{BTreeMap, BTreeSet};

use plinth_plugin_sdk::reporting::{
    Guest, LivenessSummary, OutageCause, PolicyError, ReportRecord, UsageRecord, liveness_summary,
};

struct HourlyPerTenant;

#[derive(Default)]
struct Bucket {
    gpu_seconds: u64,
    charged_micros: u64,
    utilisation_weighted: u128,
    jobs: BTreeSet<String>,
}

const HOUR: u64 = 3600;

fn cause_name(cause: OutageCause) -> &'static str {
    match cause {
        OutageCause::Stopped => "stopped",
        OutageCause::Unclean => "unclean",
        OutageCause::Reboot => "reboot",
        OutageCause::Missed => "missed",
        OutageCause::NoEvidence => "no-evidence",
    }
}

/// The `liveness` record of one hour.
fn liveness_record(summary: &LivenessSummary) -> ReportRecord {
    let period = summary.period_end_s.saturating_sub(summary.period_start_s);
    let availability_ppm = if period == 0 {
        0
    } else {
        (u128::from(summary.uptime_s) * 1_000_000 / u128::from(period)) as u64
    };
    let mut by_cause: BTreeMap<&'static str, u64> = BTreeMap::new();
    for outage in &summary.outages {
        *by_cause.entry(cause_name(outage.cause)).or_default() += outage.length_s;
    }
    let mut values = vec![
        ("entries".to_string(), summary.entries),
        ("covered-s".to_string(), summary.covered_s),
        ("uptime-s".to_string(), summary.uptime_s),
        ("availability-ppm".to_string(), availability_ppm),
        ("drained-gpu-s".to_string(), summary.drained_gpu_s),
        ("outages".to_string(), summary.outages.len() as u64),
        (
            "longest-outage-s".to_string(),
            summary
                .outages
                .iter()
                .map(|outage| outage.length_s)
                .max()
                .unwrap_or(0),
        ),
    ];
    values.extend(
        by_cause
            .into_iter()
            .map(|(cause, seconds)| (format!("outage-s.{cause}"), seconds)),
    );
    values.push(("head-seq".to_string(), summary.head_seq));
    ReportRecord {
        key: "liveness".to_string(),
        period_start_s: summary.period_start_s,
        period_end_s: summary.period_end_s,
        values,
    }
}

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
        let hours: BTreeSet<u64> = buckets.keys().map(|(_, hour_start)| *hour_start).collect();
        let mut report: Vec<ReportRecord> = buckets
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
            .collect();
        report.extend(
            hours
                .into_iter()
                .filter_map(|hour_start| liveness_summary(hour_start, hour_start + HOUR))
                .map(|summary| liveness_record(&summary)),
        );
        Ok(report)
    }
}

plinth_plugin_sdk::export_reporting!(HourlyPerTenant);
