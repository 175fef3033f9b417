//! The worker's steps: start queued jobs, watch running ones, end them with their final
//! receipt, and make the state consistent after a start (recovery). Every state change
//! goes through [`state::apply`](super::state::apply).

use plinth_attestation::receipt::ReceiptImage;
use plinth_jobs::engine::{EngineError, JobState as SupervisedState};
use plinth_jobs::image::ImportProgress;
use plinth_jobs::protocol::{EndReason, JobResult, now_ms};
use plinth_jobs::spec::ImageSource;
use plinth_toolbox::error_chain;
use rusqlite::params;

use super::receipts::Period;
use super::state::{self, JobState};
use super::{JobManager, JobsError, schema};

/// The terminal state a supervisor's result means.
pub fn state_of(result: &JobResult) -> JobState {
    match result.reason {
        EndReason::Exited if result.exit_code == Some(0) => JobState::Succeeded,
        EndReason::TimedOut => JobState::TimedOut,
        EndReason::Cancelled => JobState::Cancelled,
        _ => JobState::Failed,
    }
}

fn reason_text(result: &JobResult) -> String {
    let reason = serde_json::to_value(result.reason)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    match &result.error {
        Some(error) => format!("{reason}: {error}"),
        None => reason,
    }
}

fn progress_text(progress: &ImportProgress) -> String {
    progress.to_string()
}

impl JobManager {
    /// Moves a job to a new state with a reason, in one checked step.
    fn move_to(
        &self,
        id: &str,
        from: JobState,
        to: JobState,
        reason: Option<&str>,
    ) -> Result<(), JobsError> {
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        state::apply(&tx, id, from, to, now_ms())?;
        tx.execute(
            "UPDATE jobs SET reason = ?2 WHERE id = ?1",
            params![id, reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Makes the state consistent after a start: half-prepared jobs are queued again.
    pub fn recover(&self) -> Result<(), JobsError> {
        let preparing = schema::ids_in(&self.store.connection(), JobState::Preparing)?;
        for (id, _) in preparing {
            if let Ok(dir) = self.engine.job_dir(&id)
                && dir.exists()
            {
                let _ = std::fs::remove_dir_all(&dir);
            }
            tracing::info!(job = %id, "re-queueing a job that was being prepared when the agent stopped");
            self.move_to(&id, JobState::Preparing, JobState::Queued, None)?;
        }
        Ok(())
    }

    /// One pass of the lifecycle: start queued jobs, watch running ones,
    /// issue due receipts. Called by the worker; says whether any job was queued or
    /// running (the worker then polls again soon, and otherwise sleeps until woken).
    pub fn tick(&self) -> Result<bool, JobsError> {
        let queued = schema::ids_in(&self.store.connection(), JobState::Queued)?;
        let running = schema::ids_in(&self.store.connection(), JobState::Running)?;
        let busy = !(queued.is_empty() && running.is_empty());
        // Running jobs first: watching is cheap and keeps cancellations and receipts on
        // time, while starting a job may import an image.
        for (id, cancel_requested) in running {
            if let Err(err) = self.watch_job(&id, cancel_requested) {
                tracing::error!(job = %id, error = %error_chain(&err), "watching a job failed");
            }
        }
        for (id, cancel_requested) in queued {
            if let Err(err) = self.start_job(&id, cancel_requested) {
                tracing::error!(job = %id, error = %error_chain(&err), "starting a job failed");
            }
        }
        Ok(busy)
    }

    fn start_job(&self, id: &str, cancel_requested: bool) -> Result<(), JobsError> {
        if cancel_requested {
            return self.move_to(
                id,
                JobState::Queued,
                JobState::Cancelled,
                Some("cancelled before start"),
            );
        }
        let job = self.get(id)?;
        self.move_to(id, JobState::Queued, JobState::Preparing, None)?;
        let prepared = self.engine.prepare_for(
            id,
            &job.spec,
            &job.gpu_devices,
            Some(&job.tenant),
            &mut |progress| {
                tracing::debug!(job = %id, ?progress, "image import");
                // Shown by `plinthctl jobs show` / `submit --wait` while preparing.
                let _ = self.store.connection().execute(
                    "UPDATE jobs SET reason = ?2 WHERE id = ?1 AND state = ?3",
                    params![id, progress_text(&progress), JobState::Preparing],
                );
            },
        );
        let record = match prepared {
            Ok(record) => record,
            Err(err) => {
                let reason = format!("preparation failed: {}", error_chain(&err));
                tracing::warn!(job = %id, %reason, "job refused");
                return self.move_to(id, JobState::Preparing, JobState::Failed, Some(&reason));
            }
        };
        let image = ReceiptImage {
            manifest_digest: record.image_id.clone(),
            reference: (job.spec.image.source == ImageSource::Registry)
                .then(|| job.spec.image.reference.clone())
                .flatten(),
            signer_key_sha256: record.image_signer.as_ref().map(|s| s.key_sha256.clone()),
            signer: record.image_signer.as_ref().map(|s| s.key.clone()),
        };
        self.store.connection().execute(
            "UPDATE jobs SET image = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&image)?],
        )?;
        self.move_to(id, JobState::Preparing, JobState::Running, None)?;
        self.engine.start(id)?;
        let waited_ms = now_ms().saturating_sub(job.created_at_ms);
        self.metrics
            .start_latency
            .observe(waited_ms as f64 / 1000.0);
        Ok(())
    }

    fn watch_job(&self, id: &str, cancel_requested: bool) -> Result<(), JobsError> {
        let supervised = match self.engine.state(id) {
            Ok(supervised) => supervised,
            Err(EngineError::NotFound { .. }) => {
                // Marked running but never prepared (cannot happen by the
                // ordering above, but a lost job directory must not hang it).
                return self.move_to(
                    id,
                    JobState::Running,
                    JobState::Failed,
                    Some("job directory is missing"),
                );
            }
            Err(err) => return Err(err.into()),
        };
        match supervised {
            SupervisedState::Prepared => {
                // The agent stopped between storing `running` and spawning.
                self.engine.start(id)?;
            }
            SupervisedState::Starting => {}
            SupervisedState::Running(live) => {
                if cancel_requested {
                    self.engine.cancel(id)?;
                }
                if let Some(live) = live
                    && let Some(started) = live.started_at_ms
                {
                    self.maybe_interim_receipt(id, started, &live.usage)?;
                }
            }
            SupervisedState::Finished(result) => self.finalize(id, &result)?,
            SupervisedState::Orphaned => {
                if let SupervisedState::Finished(result) = self.engine.recover(id)? {
                    self.finalize(id, &result)?;
                }
            }
        }
        Ok(())
    }

    /// Records the end of a job and its final receipt in one transaction.
    fn finalize(&self, id: &str, result: &JobResult) -> Result<(), JobsError> {
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let job = schema::get(&tx, id)?;
        if job.state.is_terminal() {
            return Ok(());
        }
        let billed_cpu: i64 = tx.query_row(
            "SELECT billed_cpu_ns FROM jobs WHERE id = ?1",
            [id],
            |row| row.get(0),
        )?;
        if let Some(started) = result.started_at_ms {
            let start = job.billed_until_ms.unwrap_or(started).max(started);
            let period = Period {
                kind: plinth_attestation::receipt::ReceiptKind::Final,
                start_ms: start,
                end_ms: result.ended_at_ms.max(start),
                cpu_ns: result.usage.cpu_ns.saturating_sub(billed_cpu as u64),
            };
            self.append_receipt(&tx, &job, &period, &result.usage)?;
        }
        let end_state = state_of(result);
        let receipt_appended = result.started_at_ms.is_some();
        state::apply(&tx, id, job.state, end_state, now_ms())?;
        tx.execute(
            "UPDATE jobs SET reason = ?2, exit_code = ?3, signal = ?4, started_at_ms = ?5,
                 ended_at_ms = ?6, billed_until_ms = ?6, usage = ?7 WHERE id = ?1",
            params![
                id,
                reason_text(result),
                result.exit_code,
                result.signal,
                result.started_at_ms.map(|v| v as i64),
                result.ended_at_ms as i64,
                serde_json::to_string(&result.usage)?,
            ],
        )?;
        tx.commit()?;
        if receipt_appended {
            self.metrics.receipts_appended.inc();
        }
        tracing::info!(job = %id, state = %end_state, "job ended");
        Ok(())
    }
}
