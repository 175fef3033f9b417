//! The job manager's tables: the schema migration that creates them, and the mapping of a
//! `jobs` row to a [`JobInfo`].

use rusqlite::OptionalExtension;

use super::JobsError;
use super::state::JobState;
use super::types::JobInfo;
use crate::store::Migration;

/// The migration that adds the jobs and receipts tables (schema version 2).
pub const MIGRATION: Migration = Migration {
    version: 2,
    name: "jobs and receipts",
    sql: "
    CREATE TABLE jobs (
        id               TEXT PRIMARY KEY NOT NULL,
        tenant           TEXT NOT NULL,
        lease_id         TEXT NOT NULL,
        spec             TEXT NOT NULL,
        gpu_devices      TEXT NOT NULL,
        state            TEXT NOT NULL,
        reason           TEXT,
        exit_code        INTEGER,
        signal           INTEGER,
        created_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL,
        started_at_ms    INTEGER,
        ended_at_ms      INTEGER,
        billed_until_ms  INTEGER,
        billed_cpu_ns    INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        usage            TEXT
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE receipts (
        seq    INTEGER PRIMARY KEY NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        kind   TEXT NOT NULL,
        hash   TEXT NOT NULL,
        body   TEXT NOT NULL
    );
",
};

/// The migration that records the image each job ran (schema version 3): its manifest
/// digest, registry reference and verified signer, as the JSON of a receipt's `image`.
pub const IMAGE_MIGRATION: Migration = Migration {
    version: 3,
    name: "jobs image provenance",
    sql: "ALTER TABLE jobs ADD COLUMN image TEXT;",
};

/// The migration that records the signed quote a job was leased under (schema version
/// 6): the quote's id and its terms (a [`super::QuotedTerms`] as JSON), which price the
/// job's receipts. Jobs submitted on the admin socket have neither.
pub const QUOTE_MIGRATION: Migration = Migration {
    version: 6,
    name: "jobs quoted terms",
    sql: "ALTER TABLE jobs ADD COLUMN quote_id TEXT;
          ALTER TABLE jobs ADD COLUMN terms TEXT;",
};

/// The columns [`row_to_raw`] reads, in order.
const SELECT: &str =
    "SELECT id, tenant, lease_id, spec, gpu_devices, state, reason, exit_code, signal,
        created_at_ms, started_at_ms, ended_at_ms, billed_until_ms, usage, image FROM jobs";

/// A jobs row as read, before its JSON columns are decoded.
struct RawJob {
    id: String,
    tenant: String,
    lease_id: String,
    spec: String,
    gpu_devices: String,
    state: JobState,
    reason: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
    billed_until_ms: Option<i64>,
    usage: Option<String>,
    image: Option<String>,
}

fn row_to_raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        tenant: row.get(1)?,
        lease_id: row.get(2)?,
        spec: row.get(3)?,
        gpu_devices: row.get(4)?,
        state: row.get(5)?,
        reason: row.get(6)?,
        exit_code: row.get(7)?,
        signal: row.get(8)?,
        created_at_ms: row.get(9)?,
        started_at_ms: row.get(10)?,
        ended_at_ms: row.get(11)?,
        billed_until_ms: row.get(12)?,
        usage: row.get(13)?,
        image: row.get(14)?,
    })
}

fn finish(raw: RawJob) -> Result<JobInfo, JobsError> {
    let to_u64 = |value: Option<i64>| value.map(|value| value as u64);
    Ok(JobInfo {
        id: raw.id,
        tenant: raw.tenant,
        lease_id: raw.lease_id,
        state: raw.state,
        reason: raw.reason,
        exit_code: raw.exit_code,
        signal: raw.signal,
        created_at_ms: raw.created_at_ms as u64,
        started_at_ms: to_u64(raw.started_at_ms),
        ended_at_ms: to_u64(raw.ended_at_ms),
        billed_until_ms: to_u64(raw.billed_until_ms),
        usage: raw
            .usage
            .map(|usage| serde_json::from_str(&usage))
            .transpose()?,
        image: raw
            .image
            .map(|image| serde_json::from_str(&image))
            .transpose()?,
        spec: serde_json::from_str(&raw.spec)?,
        gpu_devices: serde_json::from_str(&raw.gpu_devices)?,
    })
}

/// One job, or [`JobsError::NotFound`].
pub fn get(conn: &rusqlite::Connection, id: &str) -> Result<JobInfo, JobsError> {
    let raw = conn
        .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row_to_raw)
        .optional()?
        .ok_or_else(|| JobsError::NotFound { id: id.to_owned() })?;
    finish(raw)
}

/// All jobs, newest first.
pub fn list(conn: &rusqlite::Connection) -> Result<Vec<JobInfo>, JobsError> {
    let mut statement = conn.prepare(&format!("{SELECT} ORDER BY created_at_ms DESC, id"))?;
    let raws = statement
        .query_map([], row_to_raw)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(finish).collect()
}

/// Ids of the jobs in `state`, oldest first, with their cancellation flag.
pub fn ids_in(
    conn: &rusqlite::Connection,
    state: JobState,
) -> Result<Vec<(String, bool)>, JobsError> {
    let mut statement = conn.prepare(
        "SELECT id, cancel_requested FROM jobs WHERE state = ?1 ORDER BY created_at_ms, id",
    )?;
    let rows = statement.query_map([state], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? != 0)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// How many jobs the store holds in each state (every state, zero included).
pub fn count_by_state(conn: &rusqlite::Connection) -> Result<Vec<(JobState, u64)>, JobsError> {
    let mut statement = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, JobState>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|state| (*state, 0)).collect();
    for row in rows {
        let (state, n_jobs) = row?;
        if let Some(slot) = counts.iter_mut().find(|(known, _)| *known == state) {
            slot.1 = n_jobs.max(0) as u64;
        }
    }
    Ok(counts)
}
