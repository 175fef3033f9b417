//! {{name}}: a reporting policy for plinth. One report record per tenant, sorted by
//! tenant, over the period its usage records cover: `gpu-seconds`, `charged-micros` and
//! the number of usage `records`.

use std::collections::BTreeMap;

use plinth_plugin_sdk::reporting::{Guest, PolicyError, ReportRecord, UsageRecord};

struct Plugin;

#[derive(Default)]
struct Totals {
    start_s: u64,
    end_s: u64,
    gpu_seconds: u64,
    charged_micros: u64,
    records: u64,
}

impl Guest for Plugin {
    fn report(records: Vec<UsageRecord>) -> Result<Vec<ReportRecord>, PolicyError> {
        plinth_plugin_sdk::init_logging();
        let mut tenants: BTreeMap<String, Totals> = BTreeMap::new();
        for record in &records {
            if record.end_s < record.start_s {
                return Err(PolicyError::InvalidInput(format!(
                    "job {}: end {} before start {}",
                    record.job_id, record.end_s, record.start_s
                )));
            }
            let totals = tenants.entry(record.tenant.clone()).or_insert(Totals {
                start_s: record.start_s,
                end_s: record.end_s,
                ..Totals::default()
            });
            totals.start_s = totals.start_s.min(record.start_s);
            totals.end_s = totals.end_s.max(record.end_s);
            totals.gpu_seconds = totals.gpu_seconds.saturating_add(
                (record.end_s - record.start_s).saturating_mul(u64::from(record.gpu_count)),
            );
            totals.charged_micros = totals.charged_micros.saturating_add(record.charged_micros);
            totals.records += 1;
        }
        Ok(tenants
            .into_iter()
            .map(|(tenant, totals)| ReportRecord {
                key: tenant,
                period_start_s: totals.start_s,
                period_end_s: totals.end_s,
                values: vec![
                    ("gpu-seconds".to_string(), totals.gpu_seconds),
                    ("charged-micros".to_string(), totals.charged_micros),
                    ("records".to_string(), totals.records),
                ],
            })
            .collect())
    }
}

plinth_plugin_sdk::export_reporting!(Plugin);
