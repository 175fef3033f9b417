//! Drain state in SQLite (migration 4): which GPUs are withdrawn, why and by whom, the
//! log of every drain and undrain, and the notices given to jobs holding a drained GPU. Keyed by uuid, so a GPU keeps its state across
//! restarts even when its index changes.

use rusqlite::{OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{Migration, Store, now_rfc3339};

/// Migration 4: the `gpu_drains` state, the `gpu_drain_log` and `gpu_job_notices`.
pub const MIGRATION: Migration = Migration {
    version: 4,
    name: "gpu drain state",
    sql: "CREATE TABLE gpu_drains (
            uuid       TEXT PRIMARY KEY,
            gpu_index  INTEGER NOT NULL,
            reason     TEXT NOT NULL,
            source     TEXT NOT NULL CHECK (source IN ('policy', 'operator', 'burn-in')),
            drained_at TEXT NOT NULL
        );
        CREATE TABLE gpu_drain_log (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid      TEXT NOT NULL,
            gpu_index INTEGER NOT NULL,
            action    TEXT NOT NULL CHECK (action IN ('drain', 'undrain')),
            reason    TEXT NOT NULL,
            source    TEXT NOT NULL CHECK (source IN ('policy', 'operator', 'burn-in')),
            at        TEXT NOT NULL
        );
        CREATE TABLE gpu_job_notices (
            id     INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            uuid   TEXT NOT NULL,
            reason TEXT NOT NULL,
            at     TEXT NOT NULL
        );",
};

/// Errors of the drain store.
#[derive(Debug, Error)]
pub enum DrainError {
    /// The database refused a statement.
    #[error("cannot {action} the GPU drain state")]
    Database {
        /// What was being done.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

/// Who drained or undrained a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainSource {
    /// The health policy (an XID, ECC errors, a lost GPU).
    Policy,
    /// `plinthctl gpus drain|undrain`.
    Operator,
    /// A burn-in challenge.
    BurnIn,
}

impl DrainSource {
    /// The database's and the API's string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Operator => "operator",
            Self::BurnIn => "burn-in",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "operator" => Self::Operator,
            "burn-in" => Self::BurnIn,
            _ => Self::Policy,
        }
    }
}

/// A drained GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Why.
    pub reason: String,
    /// Who.
    pub source: DrainSource,
    /// When (RFC 3339).
    pub drained_at: String,
}

fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> DrainError {
    move |source| DrainError::Database { action, source }
}

/// Marks a GPU drained (keeping the first reason when it already is); records it in the
/// log. Returns false when it was already drained.
pub fn drain(
    store: &Store,
    uuid: &str,
    index: u32,
    reason: &str,
    source: DrainSource,
) -> Result<bool, DrainError> {
    let mut connection = store.connection();
    let transaction = connection.transaction().map_err(db("begin draining"))?;
    let now = now_rfc3339();
    let inserted = transaction
        .execute(
            "INSERT INTO gpu_drains (uuid, gpu_index, reason, source, drained_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (uuid) DO NOTHING",
            params![uuid, index, reason, source.as_str(), now],
        )
        .map_err(db("record a drain in"))?;
    if inserted == 1 {
        transaction
            .execute(
                "INSERT INTO gpu_drain_log (uuid, gpu_index, action, reason, source, at)
                 VALUES (?1, ?2, 'drain', ?3, ?4, ?5)",
                params![uuid, index, reason, source.as_str(), now],
            )
            .map_err(db("log a drain in"))?;
    }
    transaction.commit().map_err(db("commit"))?;
    Ok(inserted == 1)
}

/// Returns a GPU to service; records who and why. Returns false when it was not drained.
pub fn undrain(
    store: &Store,
    uuid: &str,
    index: u32,
    reason: &str,
    source: DrainSource,
) -> Result<bool, DrainError> {
    let mut connection = store.connection();
    let transaction = connection.transaction().map_err(db("begin undraining"))?;
    let removed = transaction
        .execute("DELETE FROM gpu_drains WHERE uuid = ?1", params![uuid])
        .map_err(db("remove a drain from"))?;
    if removed == 1 {
        transaction
            .execute(
                "INSERT INTO gpu_drain_log (uuid, gpu_index, action, reason, source, at)
                 VALUES (?1, ?2, 'undrain', ?3, ?4, ?5)",
                params![uuid, index, reason, source.as_str(), now_rfc3339()],
            )
            .map_err(db("log an undrain in"))?;
    }
    transaction.commit().map_err(db("commit"))?;
    Ok(removed == 1)
}

/// The drain of one GPU, if it is drained.
pub fn get(store: &Store, uuid: &str) -> Result<Option<Drain>, DrainError> {
    store
        .connection()
        .query_row(
            "SELECT reason, source, drained_at FROM gpu_drains WHERE uuid = ?1",
            params![uuid],
            |row| {
                Ok(Drain {
                    reason: row.get(0)?,
                    source: DrainSource::parse(&row.get::<_, String>(1)?),
                    drained_at: row.get(2)?,
                })
            },
        )
        .optional()
        .map_err(db("read"))
}

/// One entry of the drain log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainLogEntry {
    /// The GPU.
    pub uuid: String,
    /// `drain` or `undrain`.
    pub action: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub source: DrainSource,
    /// When (RFC 3339).
    pub at: String,
}

/// The drain log of one GPU, oldest first.
pub fn log(store: &Store, uuid: &str) -> Result<Vec<DrainLogEntry>, DrainError> {
    let connection = store.connection();
    let mut statement = connection
        .prepare(
            "SELECT uuid, action, reason, source, at FROM gpu_drain_log WHERE uuid = ?1 ORDER BY id",
        )
        .map_err(db("read the log of"))?;
    let rows = statement
        .query_map(params![uuid], |row| {
            Ok(DrainLogEntry {
                uuid: row.get(0)?,
                action: row.get(1)?,
                reason: row.get(2)?,
                source: DrainSource::parse(&row.get::<_, String>(3)?),
                at: row.get(4)?,
            })
        })
        .map_err(db("read the log of"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(db("read the log of"))
}
