//! The agent's durable state in SQLite.
//!
//! One database file under the state directory, in WAL mode, stamped with plinth's
//! `application_id` and versioned by the `schema_migrations` table. At open the store
//! refuses — and never modifies — a file that is not a plinth database, fails
//! `PRAGMA integrity_check`, or carries a schema version newer than this build knows.
//! Pending migrations are applied one transaction each, so a crash mid-upgrade leaves the
//! database at the last completed version.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

/// `PRAGMA application_id` of plinth databases: "plnt" in ASCII.
pub const APPLICATION_ID: i32 = 0x706c_6e74;

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version reached after applying it; versions start at 1 and have no gaps.
    pub version: u32,
    /// Short name, recorded in `schema_migrations`.
    pub name: &'static str,
    /// SQL statements to run, in one transaction.
    pub sql: &'static str,
}

/// The store's own migration (schema version 1): node metadata and agent runs. The other
/// tables belong to the subsystems that use them; [`crate::migrations`] lists them all.
pub const BASE_MIGRATION: Migration = Migration {
    version: 1,
    name: "agent runs and node metadata",
    sql: "
    CREATE TABLE node_meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    CREATE TABLE agent_runs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        version    TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        ended_at   TEXT,
        outcome    TEXT
    );
",
};

/// Errors opening or using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database directory could not be created.
    #[error("cannot create state directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open the file.
    #[error("cannot open database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is damaged or is not a SQLite database; it was left untouched.
    #[error(
        "database {path} is corrupt ({detail}); it was left untouched: restore it from a backup or move it aside"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// The file is a SQLite database of some other program.
    #[error("{path} is not a plinth database (application_id {found:#x})")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The application id found.
        found: i32,
    },
    /// The schema was written by a newer plinth; downgrades are refused.
    #[error(
        "database {path} has schema version {found}, newer than the {known} this plinth knows; upgrade plinth or restore a backup"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// A migration failed; the database stays at the previous version.
    #[error("migration to schema version {version} ({name}) failed")]
    Migrate {
        /// The version that failed.
        version: u32,
        /// Its name.
        name: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database query failed: {what}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
}

/// Health facts reported by `GET /v1/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreHealth {
    /// The database file.
    pub path: PathBuf,
    /// Its schema version.
    pub schema_version: u32,
    /// Result of the integrity check at open (`ok` or SQLite's findings).
    pub integrity: String,
    /// SQLite journal mode (`wal`).
    pub journal_mode: String,
}

/// What the store learned about the previous agent run at open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PreviousRun {
    /// No earlier run is recorded: this is the first start.
    None,
    /// The previous run shut down cleanly.
    Clean,
    /// The previous run ended without recording it (crash, SIGKILL, power loss).
    Unclean {
        /// When that run started.
        started_at: String,
    },
}

/// The agent's SQLite store, shareable across threads.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    connection: Mutex<Connection>,
    health: StoreHealth,
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies the pending ones of
    /// `migrations` (versions 1, 2, ... without gaps; the agent passes
    /// [`crate::migrations::MIGRATIONS`]). A database newer than the last of them is
    /// refused.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<Self, StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let existed = path.exists();
        let flags = if existed {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let connection =
            Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let corrupt = |source: rusqlite::Error| StoreError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        };
        // Everything up to the migrations only reads, so a bad file is never modified.
        let integrity = integrity_check(&connection).map_err(corrupt)?;
        if integrity != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: integrity,
            });
        }
        let application_id: i32 = connection
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(corrupt)?;
        let has_tables: bool = connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table')",
                [],
                |row| row.get(0),
            )
            .map_err(corrupt)?;
        if application_id != APPLICATION_ID && (application_id != 0 || has_tables) {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                found: application_id,
            });
        }
        let current = current_version(&connection).map_err(corrupt)?;
        let known = migrations.last().map_or(0, |migration| migration.version);
        if current > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: current,
                known,
            });
        }

        let query =
            |what: &'static str| move |source: rusqlite::Error| StoreError::Query { what, source };
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(query("enable WAL"))?;
        connection
            .execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA foreign_keys = ON;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    INTEGER PRIMARY KEY NOT NULL,
                     name       TEXT NOT NULL,
                     applied_at TEXT NOT NULL
                 );"
            ))
            .map_err(query("prepare schema_migrations"))?;
        let mut connection = connection;
        for migration in migrations.iter().filter(|m| m.version > current) {
            apply(&mut connection, migration)?;
        }
        let schema_version = current_version(&connection).map_err(query("read version"))?;
        Ok(Self {
            path: path.to_owned(),
            health: StoreHealth {
                path: path.to_owned(),
                schema_version,
                integrity,
                journal_mode,
            },
            connection: Mutex::new(connection),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Health facts gathered at open.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Locks the connection for a sequence of statements.
    ///
    /// A poisoned lock (a thread panicked while holding it) is recovered: SQLite keeps
    /// its own consistency through transactions.
    pub fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the start of an agent run and reports how the previous one ended.
    pub fn begin_run(&self, version: &str) -> Result<(i64, PreviousRun), StoreError> {
        let connection = self.connection();
        let previous: Option<(String, Option<String>)> = connection
            .query_row(
                "SELECT started_at, ended_at FROM agent_runs ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                what: "read previous run",
                source,
            })?;
        let previous = match previous {
            None => PreviousRun::None,
            Some((_, Some(_))) => PreviousRun::Clean,
            Some((started_at, None)) => PreviousRun::Unclean { started_at },
        };
        connection
            .execute(
                "INSERT INTO agent_runs (started_at, version, pid) VALUES (?1, ?2, ?3)",
                rusqlite::params![now_rfc3339(), version, std::process::id()],
            )
            .map_err(|source| StoreError::Query {
                what: "record run start",
                source,
            })?;
        Ok((connection.last_insert_rowid(), previous))
    }

    /// Records the end of the run started by [`Store::begin_run`].
    pub fn end_run(&self, run_id: i64, outcome: &str) -> Result<(), StoreError> {
        self.connection()
            .execute(
                "UPDATE agent_runs SET ended_at = ?1, outcome = ?2 WHERE id = ?3",
                rusqlite::params![now_rfc3339(), outcome, run_id],
            )
            .map_err(|source| StoreError::Query {
                what: "record run end",
                source,
            })?;
        Ok(())
    }
}

fn integrity_check(connection: &Connection) -> Result<String, rusqlite::Error> {
    let mut statement = connection.prepare("PRAGMA integrity_check")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let findings = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(findings.join("; "))
}

fn current_version(connection: &Connection) -> Result<u32, rusqlite::Error> {
    let exists: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )
}

fn apply(connection: &mut Connection, migration: &Migration) -> Result<(), StoreError> {
    let fail = |source| StoreError::Migrate {
        version: migration.version,
        name: migration.name,
        source,
    };
    let transaction = connection.transaction().map_err(fail)?;
    transaction.execute_batch(migration.sql).map_err(fail)?;
    transaction
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![migration.version, migration.name, now_rfc3339()],
        )
        .map_err(fail)?;
    transaction.commit().map_err(fail)?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied database migration"
    );
    Ok(())
}

/// The current UTC time as RFC 3339, the format every stored timestamp uses.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[Migration] = &[BASE_MIGRATION];
    const BASE_VERSION: u32 = 1;

    fn digest(path: &Path) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap())
            .as_ref()
            .to_vec()
    }

    #[test]
    fn fresh_database_is_migrated_to_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/plinth.db");
        let store = Store::open(&path, BASE).unwrap();
        assert_eq!(store.health().schema_version, BASE_VERSION);
        assert_eq!(store.health().integrity, "ok");
        assert_eq!(store.health().journal_mode, "wal");
        let id: i32 = store
            .connection()
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
    }

    #[test]
    fn existing_database_gets_only_pending_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        let first = [Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        }];
        let store = Store::open(&path, &first).unwrap();
        store
            .connection()
            .execute("INSERT INTO a (x) VALUES (42)", [])
            .unwrap();
        drop(store);
        let both = [
            first[0],
            Migration {
                version: 2,
                name: "two",
                sql: "ALTER TABLE a ADD COLUMN y TEXT DEFAULT 'new';",
            },
        ];
        let store = Store::open(&path, &both).unwrap();
        assert_eq!(store.health().schema_version, 2);
        let (x, y): (i64, String) = store
            .connection()
            .query_row("SELECT x, y FROM a", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((x, y.as_str()), (42, "new"), "data kept across migration");
        let applied: i64 = store
            .connection()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(applied, 2);
        // Reopening with the same list applies nothing more.
        drop(store);
        assert_eq!(
            Store::open(&path, &both).unwrap().health().schema_version,
            2
        );
    }

    #[test]
    fn failed_migration_keeps_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        let good = Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        };
        Store::open(&path, &[good]).unwrap();
        let bad = Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE b (y INTEGER); SELECT * FROM no_such_table;",
        };
        let err = Store::open(&path, &[good, bad]).unwrap_err();
        assert!(
            matches!(err, StoreError::Migrate { version: 2, .. }),
            "{err}"
        );
        let store = Store::open(&path, &[good]).unwrap();
        assert_eq!(store.health().schema_version, 1);
        let b_exists: bool = store
            .connection()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'b')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(!b_exists, "the failed migration was rolled back");
    }

    #[test]
    fn garbage_file_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        let before = digest(&path);
        let err = Store::open(&path, BASE).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("plinth.db"));
        assert_eq!(digest(&path), before);
    }

    #[test]
    fn damaged_pages_are_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        {
            let store = Store::open(&path, BASE).unwrap();
            let connection = store.connection();
            connection
                .execute_batch(
                    "CREATE TABLE filler (x TEXT);
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                     INSERT INTO filler SELECT hex(randomblob(64)) FROM n;
                     CREATE INDEX filler_x ON filler (x);
                     PRAGMA wal_checkpoint(TRUNCATE);",
                )
                .unwrap();
        }
        // Overwrite a stretch in the middle of the file: b-tree pages, not the header.
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        for byte in &mut bytes[middle..middle + 4096] {
            *byte = 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let before = digest(&path);
        let err = Store::open(&path, BASE).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(digest(&path), before, "a corrupt database is never written");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        let mut future = BASE.to_vec();
        future.push(Migration {
            version: BASE_VERSION + 1,
            name: "from the future",
            sql: "CREATE TABLE future (x INTEGER);",
        });
        Store::open(&path, &future).unwrap();
        let before = digest(&path);
        let err = Store::open(&path, BASE).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, known, .. } if found == known + 1),
            "{err}"
        );
        assert_eq!(digest(&path), before);
    }

    #[test]
    fn foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER);")
            .unwrap();
        let err = Store::open(&path, BASE).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    }

    #[test]
    fn runs_record_unclean_shutdowns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.db");
        let store = Store::open(&path, BASE).unwrap();
        let (first, previous) = store.begin_run("1").unwrap();
        assert_eq!(previous, PreviousRun::None);
        store.end_run(first, "clean").unwrap();
        let (_, previous) = store.begin_run("1").unwrap();
        assert_eq!(previous, PreviousRun::Clean);
        // The second run never ends: the next start sees it as unclean.
        let (_, previous) = store.begin_run("1").unwrap();
        assert!(matches!(previous, PreviousRun::Unclean { .. }));
    }
}
