//! The liveness ledger (`plinth-liveness/1`): every `liveness.interval_s` the agent
//! appends a signed, hash-chained entry to the `liveness_entries` table, and answers
//! checkers' probes with a signature over the chain head (see
//! [`plinth_attestation::liveness`] for the format and what verification proves).
//!
//! Crash safety is the receipts' pattern: each entry is built from the head read inside
//! the transaction that inserts it, so a crash leaves the ledger at the last committed
//! entry. A probe's nonce is committed to `liveness_pending` before the answer leaves, and
//! the next entry takes the pending nonces in its own transaction, so an answered probe is
//! recorded even across a crash.
//!
//! The first entry of a run after an earlier one is a `gap` entry: the previous run ended
//! with a `stop` entry or a clean end in the store's run record (`stopped`), or without
//! either (`unclean`: crash, SIGKILL, power), or on another boot (`reboot`, from the boot
//! id). Within a boot the entries' wall time never runs backwards: when the wall clock
//! steps back, the entry's time is derived from the boot clock instead (and logged).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_attestation::liveness::{
    Anchor, Entry, EntryKind, GENESIS_HASH, GapCause, GapInfo, GpuSummary, Health, LIVENESS_FORMAT,
    MAX_ANCHORS_PER_ENTRY, NetSample, PROBE_FORMAT, PluginHash, ProbeAnswer, nonce_is_valid,
};
use rusqlite::{OptionalExtension, params};

use crate::identity::NodeIdentity;
use crate::store::{Migration, Store};

pub mod clock;
pub mod facts;
pub mod net;

pub use clock::{LivenessClock, SystemClock, TestClock};

/// The liveness tables. Kept as its own constant so the lead can order it among the
/// other subsystems' migrations (see [`crate::migrations`]).
pub const LIVENESS_MIGRATION: Migration = Migration {
    version: 5,
    name: "liveness ledger and pending probe anchors",
    sql: "
    CREATE TABLE liveness_entries (
        seq      INTEGER PRIMARY KEY NOT NULL,
        wall_ms  INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        hash     TEXT NOT NULL,
        body     TEXT NOT NULL
    );
    CREATE INDEX liveness_entries_wall ON liveness_entries(wall_ms);
    CREATE TABLE liveness_pending (
        nonce    TEXT PRIMARY KEY NOT NULL,
        head_seq INTEGER NOT NULL,
        wall_ms  INTEGER NOT NULL
    );
",
};

/// Errors of the liveness ledger.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    /// The database failed.
    #[error("liveness ledger database error")]
    Database(#[from] rusqlite::Error),
    /// An entry or answer could not be built.
    #[error("cannot build a liveness record")]
    Record(#[from] plinth_attestation::liveness::LivenessError),
    /// A stored entry does not parse.
    #[error("stored liveness entry {seq} is unreadable")]
    Stored {
        /// Its seq.
        seq: u64,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// JSON could not be produced.
    #[error("cannot serialise a liveness entry")]
    Json(#[source] serde_json::Error),
    /// A probe nonce is not acceptable.
    #[error("nonce {nonce:?} is not 16 to 64 bytes of lowercase hex")]
    BadNonce {
        /// The nonce given.
        nonce: String,
    },
    /// The nonce is already waiting to be recorded.
    #[error("nonce {nonce} was already answered")]
    DuplicateNonce {
        /// The nonce.
        nonce: String,
    },
    /// Too many probes since the last entry.
    #[error(
        "{MAX_ANCHORS_PER_ENTRY} probes are already waiting for the next entry; try again after it"
    )]
    RateLimited,
}

/// What the health summary reads besides the store.
#[derive(Clone, Default)]
pub struct HealthSources {
    /// The GPU module, read at each entry for GPUs total, healthy and drained (`None`:
    /// none counted).
    pub gpus: Option<Arc<crate::gpu::GpuService>>,
    /// Active policy plugins.
    pub plugins: Option<Arc<crate::plugins::PluginService>>,
}

impl std::fmt::Debug for HealthSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthSources")
            .field("gpus", &self.gpus.as_ref().map(|gpus| gpus.summary()))
            .field("plugins", &self.plugins.is_some())
            .finish()
    }
}

/// The ledger's GPU summary from the GPU module's (lost GPUs count as drained there).
pub fn gpu_summary(gpus: Option<&crate::gpu::GpuService>) -> GpuSummary {
    let Some(gpus) = gpus else {
        return GpuSummary::default();
    };
    let summary = gpus.summary();
    GpuSummary {
        total: summary.total as u64,
        healthy: summary.healthy as u64,
        drained: summary.drained as u64,
    }
}

/// The ledger writer of one agent run.
#[derive(Debug)]
pub struct LivenessService {
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
    clock: Arc<dyn LivenessClock>,
    run_id: u64,
    interval_s: u64,
    sources: HealthSources,
    /// Latest network-quality measurements, written into the next entries.
    net: Mutex<Vec<NetSample>>,
    /// Set by [`LivenessService::stop`]; no entry follows the stop entry.
    stopped: Mutex<bool>,
}

struct Head {
    seq: u64,
    hash: String,
    entry: Option<Entry>,
}

fn read_head(conn: &rusqlite::Connection) -> Result<Head, LivenessError> {
    let row: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT seq, hash, body FROM liveness_entries ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    match row {
        None => Ok(Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            entry: None,
        }),
        Some((seq, hash, body)) => {
            let entry = serde_json::from_str(&body).map_err(|source| LivenessError::Stored {
                seq: seq as u64,
                source,
            })?;
            Ok(Head {
                seq: seq as u64,
                hash,
                entry: Some(entry),
            })
        }
    }
}

impl LivenessService {
    /// A writer for run `run_id` (the store's run record) that appends nothing yet.
    pub fn new(
        store: Arc<Store>,
        identity: Arc<NodeIdentity>,
        clock: Arc<dyn LivenessClock>,
        run_id: i64,
        interval_s: u64,
        sources: HealthSources,
    ) -> Self {
        Self {
            store,
            identity,
            clock,
            run_id: run_id.max(0) as u64,
            interval_s: interval_s.max(1),
            sources,
            net: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
        }
    }

    /// The interval between entries.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s)
    }

    /// Appends the run's first entry: `start` on an empty ledger, else a `gap` entry
    /// saying how the previous run ended.
    pub fn begin(&self) -> Result<Entry, LivenessError> {
        self.append(None)
    }

    /// Appends a periodic entry.
    pub fn tick(&self) -> Result<Option<Entry>, LivenessError> {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if *stopped {
            return Ok(None);
        }
        self.append(Some(EntryKind::Tick)).map(Some)
    }

    /// Appends the run's `stop` entry (a clean shutdown); later ticks write nothing.
    pub fn stop(&self) -> Result<Option<Entry>, LivenessError> {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if *stopped {
            return Ok(None);
        }
        *stopped = true;
        self.append(Some(EntryKind::Stop)).map(Some)
    }

    /// Replaces the network-quality measurements the next entries carry.
    pub fn set_net(&self, samples: Vec<NetSample>) {
        *self.net.lock().unwrap_or_else(|p| p.into_inner()) = samples;
    }

    /// The network-quality measurements the entries carry now.
    pub fn net(&self) -> Vec<NetSample> {
        self.net.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn health(&self, conn: &rusqlite::Connection) -> Result<Health, LivenessError> {
        let running_jobs: i64 = conn.query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'running'",
            [],
            |row| row.get(0),
        )?;
        let mut plugins: Vec<PluginHash> = self
            .sources
            .plugins
            .as_ref()
            .map(|service| {
                service
                    .list()
                    .into_iter()
                    .map(|status| PluginHash {
                        kind: status.info.kind.as_str().to_owned(),
                        name: status.info.name,
                        sha256: status.info.wasm_sha256,
                    })
                    .collect()
            })
            .unwrap_or_default();
        plugins.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(Health {
            store: self.store.health().integrity.clone(),
            gpus: gpu_summary(self.sources.gpus.as_deref()),
            running_jobs: running_jobs.max(0) as u64,
            plugins,
        })
    }

    /// How the run that wrote `last` ended, seen from this run.
    fn gap_cause(
        &self,
        conn: &rusqlite::Connection,
        last: &Entry,
        boot_id: &str,
    ) -> Result<GapCause, LivenessError> {
        if last.boot_id != boot_id {
            return Ok(GapCause::Reboot);
        }
        if last.kind == EntryKind::Stop {
            return Ok(GapCause::Stopped);
        }
        let outcome: Option<Option<String>> = conn
            .query_row(
                "SELECT outcome FROM agent_runs WHERE id = ?1",
                [last.run_id as i64],
                |row| row.get(0),
            )
            .optional()?;
        Ok(match outcome.flatten().as_deref() {
            Some("clean") => GapCause::Stopped,
            _ => GapCause::Unclean,
        })
    }

    /// Builds, signs and commits the next entry; `kind` `None` means the run's first.
    fn append(&self, kind: Option<EntryKind>) -> Result<Entry, LivenessError> {
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let head = read_head(&tx)?;
        let boot_id = self.clock.boot_id();
        let boot_ms = self.clock.boot_ms();
        let mut wall_ms = self.clock.wall_ms();
        let pending = {
            let mut statement = tx.prepare(
                "SELECT nonce, head_seq, wall_ms FROM liveness_pending ORDER BY wall_ms, nonce",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(Anchor {
                    nonce: row.get(0)?,
                    head_seq: row.get::<_, i64>(1)? as u64,
                    wall_ms: row.get::<_, i64>(2)? as u64,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        if let Some(last) = &head.entry
            && last.boot_id == boot_id
            && wall_ms < last.wall_ms
        {
            let derived = last.wall_ms + boot_ms.saturating_sub(last.boot_ms);
            tracing::warn!(
                wall_ms,
                previous_wall_ms = last.wall_ms,
                derived_wall_ms = derived,
                "the wall clock went back; this liveness entry's time is derived from the boot clock"
            );
            wall_ms = derived;
        }
        // The entry comes after every answer it records.
        wall_ms = pending.iter().map(|a| a.wall_ms).fold(wall_ms, u64::max);
        let (kind, gap) = match (kind, &head.entry) {
            (Some(kind), _) => (kind, None),
            (None, None) => (EntryKind::Start, None),
            (None, Some(last)) => {
                let cause = self.gap_cause(&tx, last, &boot_id)?;
                let gap = GapInfo {
                    cause,
                    previous_seq: last.seq,
                    previous_wall_ms: last.wall_ms,
                    length_ms: wall_ms.saturating_sub(last.wall_ms),
                };
                (EntryKind::Gap, Some(gap))
            }
        };
        let mut entry = Entry {
            format: LIVENESS_FORMAT.to_owned(),
            seq: 0,
            prev_hash: String::new(),
            kind,
            wall_ms,
            boot_ms,
            boot_id,
            run_id: self.run_id,
            interval_s: self.interval_s,
            health: self.health(&tx)?,
            anchors: pending,
            gap,
            net: self.net(),
            node_key: self.identity.public_key_hex(),
            signature: String::new(),
        };
        let previous = head.entry.as_ref().map(|_| (head.seq, head.hash.as_str()));
        let hash = entry.seal(previous, |bytes| self.identity.sign(bytes))?;
        let body = serde_json::to_string(&entry).map_err(LivenessError::Json)?;
        tx.execute(
            "INSERT INTO liveness_entries (seq, wall_ms, kind, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                entry.seq as i64,
                entry.wall_ms as i64,
                kind_name(kind),
                hash,
                body
            ],
        )?;
        tx.execute("DELETE FROM liveness_pending", [])?;
        tx.commit()?;
        Ok(entry)
    }

    /// Answers a checker's probe: the node's signature over the nonce, the chain head and
    /// the time. The nonce is committed before the answer is returned and recorded in the
    /// next entry.
    pub fn probe(&self, nonce: &str) -> Result<ProbeAnswer, LivenessError> {
        if !nonce_is_valid(nonce) {
            return Err(LivenessError::BadNonce {
                nonce: nonce.to_owned(),
            });
        }
        let mut conn = self.store.connection();
        let tx = conn.transaction()?;
        let n_pending: i64 = tx.query_row("SELECT COUNT(*) FROM liveness_pending", [], |row| {
            row.get(0)
        })?;
        if n_pending as usize >= MAX_ANCHORS_PER_ENTRY {
            return Err(LivenessError::RateLimited);
        }
        let head = read_head(&tx)?;
        let head_wall = head.entry.as_ref().map_or(0, |e| e.wall_ms);
        let wall_ms = self.clock.wall_ms().max(head_wall);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO liveness_pending (nonce, head_seq, wall_ms) VALUES (?1, ?2, ?3)",
            params![nonce, head.seq as i64, wall_ms as i64],
        )?;
        if inserted == 0 {
            return Err(LivenessError::DuplicateNonce {
                nonce: nonce.to_owned(),
            });
        }
        let mut answer = ProbeAnswer {
            format: PROBE_FORMAT.to_owned(),
            nonce: nonce.to_owned(),
            head_seq: head.seq,
            head_hash: head.hash,
            wall_ms,
            node_key: self.identity.public_key_hex(),
            signature: String::new(),
        };
        answer.sign_with(|bytes| self.identity.sign(bytes))?;
        tx.commit()?;
        Ok(answer)
    }

    /// The entries written between `from_ms` and `to_ms` (inclusive) as JSON lines.
    pub fn export(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Vec<u8>, LivenessError> {
        export(&self.store, from_ms, to_ms)
    }

    /// The sequence number of the ledger's head (0 before the first entry).
    pub fn head_seq(&self) -> u64 {
        read_head(&self.store.connection()).map_or(0, |head| head.seq)
    }

    /// The agent run writing the ledger (the store's run record).
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Entries written between `from_ms` and `to_ms`, parsed (for reporting plugins).
    pub fn entries(&self, from_ms: u64, to_ms: u64) -> Result<Vec<Entry>, LivenessError> {
        let text = self.export(Some(from_ms), Some(to_ms))?;
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line)
                    .map_err(|source| LivenessError::Stored { seq: 0, source })
            })
            .collect()
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Start => "start",
        EntryKind::Tick => "tick",
        EntryKind::Stop => "stop",
        EntryKind::Gap => "gap",
    }
}

/// The ledger (or the part written between `from_ms` and `to_ms`) as JSON lines.
pub fn export(
    store: &Store,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
) -> Result<Vec<u8>, LivenessError> {
    let conn = store.connection();
    let mut statement = conn.prepare(
        "SELECT body FROM liveness_entries WHERE wall_ms >= ?1 AND wall_ms <= ?2 ORDER BY seq",
    )?;
    let from = from_ms.map_or(0, |ms| ms.min(i64::MAX as u64) as i64);
    let to = to_ms.map_or(i64::MAX, |ms| ms.min(i64::MAX as u64) as i64);
    let rows = statement.query_map(params![from, to], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(row?.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// Starts the ledger of this run: appends its first entry and spawns the ticker. A ledger
/// that cannot be written is logged and leaves the agent running without one.
pub fn start(
    config: &crate::config::AgentConfig,
    store: Arc<Store>,
    identity: Arc<NodeIdentity>,
    run_id: i64,
    sources: HealthSources,
) -> Option<Arc<LivenessService>> {
    let service = Arc::new(LivenessService::new(
        store,
        identity,
        Arc::new(SystemClock),
        run_id,
        config.liveness.interval_s,
        sources,
    ));
    match service.begin() {
        Ok(entry) => {
            tracing::info!(seq = entry.seq, kind = kind_name(entry.kind), gap = ?entry.gap.as_ref().map(|g| (g.cause.as_str(), g.length_ms)), "liveness ledger started");
        }
        Err(err) => {
            tracing::error!(error = %crate::error_chain(&err), "cannot write the liveness ledger; running without one");
            return None;
        }
    }
    let ticker = service.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(ticker.interval());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let service = ticker.clone();
            match tokio::task::spawn_blocking(move || service.tick()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => break,
                Ok(Err(err)) => {
                    tracing::error!(error = %crate::error_chain(&err), "cannot append a liveness entry")
                }
                Err(join) => tracing::error!(error = %join, "liveness ticker failed"),
            }
        }
    });
    Some(service)
}

#[cfg(test)]
mod tests;
