//! The job lifecycle as a type: [`JobState`] and the one place that decides which moves
//! between states are possible.
//!
//! ```text
//!  queued ──► preparing ──► running ──► succeeded | failed | cancelled | timed_out
//!    │  ▲         │
//!    │  └─────────┤ (recovery: a half-prepared job is queued again)
//!    │            └──► failed (preparation failed)
//!    └──► cancelled (cancelled before it started)
//! ```
//!
//! States serialise to the snake_case strings that the database and the admin API use.
//! Every state change in the database goes through [`apply`], which refuses an impossible
//! move and a row that is no longer in the state the caller saw.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors of the lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum JobStateError {
    /// A stored state string this build does not know.
    #[error("unknown job state {0:?}")]
    Unknown(String),
    /// A move the lifecycle does not allow.
    #[error("job {id}: impossible state change {from} -> {to}")]
    Impossible {
        /// Job id.
        id: String,
        /// State before.
        from: JobState,
        /// State asked for.
        to: JobState,
    },
    /// The row was not in the state the caller expected (changed meanwhile, or gone).
    #[error("job {id}: expected state {expected} for the change to {to}, but it was changed")]
    Stale {
        /// Job id.
        id: String,
        /// State the caller saw.
        expected: JobState,
        /// State asked for.
        to: JobState,
    },
    /// The database failed.
    #[error("cannot store the state of job {id}")]
    Db {
        /// Job id.
        id: String,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted and stored; waiting for the worker.
    Queued,
    /// The image is being imported and the bundle written.
    Preparing,
    /// A supervisor owns the container (or is about to).
    Running,
    /// Exited with status 0.
    Succeeded,
    /// Exited non-zero, was killed by a signal or the OOM killer, lost its supervisor, or
    /// could not be prepared.
    Failed,
    /// Cancelled by the tenant or the operator.
    Cancelled,
    /// Ran past its deadline.
    TimedOut,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Preparing,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    /// The string stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Preparing => "preparing",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    /// Whether the job has ended (no state follows).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Preparing)
                | (Queued, Cancelled)
                | (Preparing, Running)
                | (Preparing, Failed)
                | (Preparing, Queued)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, TimedOut)
        )
    }

    /// Whether a cancellation request is still meaningful.
    pub fn can_cancel(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = JobStateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| JobStateError::Unknown(text.to_owned()))
    }
}

impl rusqlite::types::FromSql for JobState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        text.parse()
            .map_err(|err| rusqlite::types::FromSqlError::Other(Box::new(err)))
    }
}

impl rusqlite::ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// Moves job `id` from `from` to `to` in the database, stamping `updated_at_ms` (and
/// `ended_at_ms` when `to` is terminal). Refuses a move the lifecycle does not allow and a
/// row that is no longer in `from`, so two writers can never both move one job.
pub fn apply(
    conn: &rusqlite::Connection,
    id: &str,
    from: JobState,
    to: JobState,
    now_ms: u64,
) -> Result<(), JobStateError> {
    if !from.can_transition_to(to) {
        return Err(JobStateError::Impossible {
            id: id.to_owned(),
            from,
            to,
        });
    }
    let ended = to.is_terminal().then_some(now_ms as i64);
    let changed = conn
        .execute(
            "UPDATE jobs SET state = ?3, updated_at_ms = ?4, ended_at_ms = COALESCE(?5, ended_at_ms)
             WHERE id = ?1 AND state = ?2",
            rusqlite::params![id, from, to, now_ms as i64, ended],
        )
        .map_err(|source| JobStateError::Db {
            id: id.to_owned(),
            source,
        })?;
    if changed != 1 {
        return Err(JobStateError::Stale {
            id: id.to_owned(),
            expected: from,
            to,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_serde() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert!(matches!(
            "running ".parse::<JobState>(),
            Err(JobStateError::Unknown(_))
        ));
    }

    #[test]
    fn queued_moves_only_to_preparing_or_cancelled() {
        let allowed: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|next| JobState::Queued.can_transition_to(*next))
            .collect();
        assert_eq!(allowed, [JobState::Preparing, JobState::Cancelled]);
        assert!(JobState::Queued.can_cancel());
    }

    #[test]
    fn preparing_moves_to_running_failed_or_back_to_queued() {
        let allowed: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|next| JobState::Preparing.can_transition_to(*next))
            .collect();
        assert_eq!(
            allowed,
            [JobState::Queued, JobState::Running, JobState::Failed]
        );
    }

    #[test]
    fn running_moves_only_to_an_end() {
        for next in JobState::ALL {
            assert_eq!(
                JobState::Running.can_transition_to(next),
                next.is_terminal(),
                "running -> {next}"
            );
        }
    }

    #[test]
    fn ended_states_are_final() {
        for state in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(!state.can_cancel());
            for next in JobState::ALL {
                assert!(!state.can_transition_to(next), "{state} -> {next}");
            }
        }
    }

    #[test]
    fn apply_refuses_impossible_and_stale_moves() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at_ms INTEGER, ended_at_ms INTEGER);
             INSERT INTO jobs (id, state) VALUES ('j1', 'queued');",
        )
        .unwrap();
        let err = apply(&conn, "j1", JobState::Queued, JobState::Running, 5).unwrap_err();
        assert!(matches!(err, JobStateError::Impossible { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "job j1: impossible state change queued -> running"
        );
        apply(&conn, "j1", JobState::Queued, JobState::Preparing, 5).unwrap();
        // A second writer that still believes the job is queued is refused.
        let err = apply(&conn, "j1", JobState::Queued, JobState::Cancelled, 6).unwrap_err();
        assert!(matches!(err, JobStateError::Stale { .. }), "{err}");
        apply(&conn, "j1", JobState::Preparing, JobState::Failed, 7).unwrap();
        let (state, ended): (JobState, Option<i64>) = conn
            .query_row("SELECT state, ended_at_ms FROM jobs", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((state, ended), (JobState::Failed, Some(7)));
    }
}
