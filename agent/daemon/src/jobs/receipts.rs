//! Receipts: the price of a metered period and the hash-chained, signed ledger in the
//! `receipts` table. A receipt is written in the same transaction as the job's billing
//! state (`billed_until_ms`, `billed_cpu_ns`), so a period is billed exactly once.
//!
//! A job leased through the network API is priced by its signed quote's terms (the
//! quoted GPU-hour rate, currency and the pricing plugin's SHA-256), and its receipts
//! carry the quote's id. Any other job is priced by the plugin host's built-in pricing
//! policy ([`plinth_plugin_host::fallback::period_price`]), named in each receipt by
//! [`plinth_plugin_host::fallback::pricing_sha256`].

use plinth_attestation::receipt::{
    GENESIS_HASH, RECEIPT_FORMAT, Receipt, ReceiptKind, ReceiptPrice, ReceiptUsage,
};
use plinth_jobs::meter::{GpuUsage, Usage};
use plinth_jobs::protocol::now_ms;
use plinth_plugin_host::fallback::{self, FallbackConfig};
use rusqlite::{OptionalExtension, params};

use super::types::{JobInfo, QuotedTerms};
use super::{JobManager, JobsError, schema};

/// A period to bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Interim (the job runs on) or final.
    pub kind: ReceiptKind,
    /// Start (unix ms).
    pub start_ms: u64,
    /// End (unix ms).
    pub end_ms: u64,
    /// CPU time used in the period.
    pub cpu_ns: u64,
}

impl JobManager {
    /// Issues an interim receipt when a running job's unbilled period has reached the
    /// receipt interval.
    pub(super) fn maybe_interim_receipt(
        &self,
        id: &str,
        started_at_ms: u64,
        usage: &Usage,
    ) -> Result<(), JobsError> {
        let now = now_ms();
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let (billed_until, billed_cpu): (Option<i64>, i64) = tx.query_row(
            "SELECT billed_until_ms, billed_cpu_ns FROM jobs WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let start = billed_until.map(|b| b as u64).unwrap_or(started_at_ms);
        if now < start + self.config.receipt_interval.as_millis() as u64 {
            return Ok(());
        }
        let job = schema::get(&tx, id)?;
        let period = Period {
            kind: ReceiptKind::Interim,
            start_ms: start,
            end_ms: now,
            cpu_ns: usage.cpu_ns.saturating_sub(billed_cpu as u64),
        };
        let receipt = self.append_receipt(&tx, &job, &period, usage)?;
        tx.execute(
            "UPDATE jobs SET billed_until_ms = ?2, billed_cpu_ns = ?3, started_at_ms = COALESCE(started_at_ms, ?4), updated_at_ms = ?2 WHERE id = ?1",
            params![id, now as i64, usage.cpu_ns as i64, started_at_ms as i64],
        )?;
        tx.commit()?;
        self.metrics.receipts_appended.inc();
        tracing::info!(job = %id, seq = receipt.seq, "interim receipt");
        Ok(())
    }

    /// Builds, signs and appends the next receipt of the ledger inside `tx`.
    pub(super) fn append_receipt(
        &self,
        tx: &rusqlite::Transaction<'_>,
        job: &JobInfo,
        period: &Period,
        usage: &Usage,
    ) -> Result<Receipt, JobsError> {
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (seq, prev_hash) = match last {
            Some((seq, hash)) => (seq as u64 + 1, hash),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let wall_ms = period.end_ms.saturating_sub(period.start_ms);
        let n_gpus = job.gpu_devices.len() as u64;
        let (gpu_ms, gpu_energy_mj, gpu_absent_reason) = match &usage.gpu {
            GpuUsage::Measured { gpus } => (
                Some(gpus.iter().map(|g| g.gpu_ms).sum()),
                Some(gpus.iter().map(|g| g.energy_mj).sum()),
                None,
            ),
            GpuUsage::Absent { reason } => (None, None, Some(reason.clone())),
        };
        let gpus = match &usage.gpu {
            GpuUsage::Measured { gpus } => Some(
                gpus.iter()
                    .map(|gpu| plinth_attestation::receipt::ReceiptGpu {
                        uuid: gpu.uuid.clone(),
                        gpu_ms: gpu.gpu_ms,
                        mean_sm_util_pct: gpu.utilisation_pct,
                        energy_j: gpu.energy_mj / 1000,
                    })
                    .collect(),
            ),
            GpuUsage::Absent { .. } => None,
        };
        let terms: Option<String> = tx
            .query_row("SELECT terms FROM jobs WHERE id = ?1", [&job.id], |row| {
                row.get(0)
            })
            .optional()?
            .flatten();
        let terms: Option<QuotedTerms> = terms
            .map(|terms| serde_json::from_str(&terms))
            .transpose()?;
        // A leased job is priced by its quote's terms; any other by the built-in policy.
        let (amount_micros, currency, pricing_policy_sha256, quote_id) = match terms {
            Some(terms) => {
                let quoted = FallbackConfig {
                    gpu_hour_micros: terms.gpu_hour_micros,
                    ..self.config.pricing.clone()
                };
                (
                    fallback::period_price(&quoted, n_gpus, wall_ms),
                    terms.currency,
                    terms.pricing_sha256,
                    Some(terms.quote_id),
                )
            }
            None => (
                fallback::period_price(&self.config.pricing, n_gpus, wall_ms),
                self.config.pricing.currency.clone(),
                fallback::pricing_sha256(&self.config.pricing),
                None,
            ),
        };
        let mut receipt = Receipt {
            format: RECEIPT_FORMAT.to_owned(),
            seq,
            prev_hash,
            job_id: job.id.clone(),
            lease_id: job.lease_id.clone(),
            tenant: job.tenant.clone(),
            kind: period.kind,
            period_start_ms: period.start_ms,
            period_end_ms: period.end_ms,
            usage: ReceiptUsage {
                wall_ms,
                cpu_ns: period.cpu_ns,
                peak_memory_bytes: usage.peak_memory_bytes,
                peak_pids: usage.peak_pids,
                gpu_ms,
                gpu_energy_mj,
                gpu_absent_reason,
                gpus,
            },
            price: ReceiptPrice {
                amount_micros,
                currency,
            },
            pricing_policy_sha256,
            node_key: self.identity.public_key_hex(),
            image: job.image.clone(),
            quote_id,
            signature: String::new(),
        };
        receipt.sign_with(|bytes| self.identity.sign(bytes))?;
        let hash = receipt.hash()?;
        let kind = match period.kind {
            ReceiptKind::Final => "final",
            ReceiptKind::Interim => "interim",
        };
        tx.execute(
            "INSERT INTO receipts (seq, job_id, kind, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                seq as i64,
                job.id,
                kind,
                hash,
                serde_json::to_string(&receipt)?
            ],
        )?;
        Ok(receipt)
    }

    /// The receipt ledger as JSON lines.
    pub fn export_receipts(&self) -> Result<Vec<u8>, JobsError> {
        let conn = self.store.connection();
        let mut statement = conn.prepare("SELECT body FROM receipts ORDER BY seq")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(row?.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }
}
