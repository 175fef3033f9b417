//! The network API's tables: quotes by (client, quote id) and leases by (client, lease
//! id), so that both are idempotent by client-supplied id and a quote is used once.

use crate::store::Migration;

/// The migration that adds the quotes and leases tables (schema version 7).
pub const MIGRATION: Migration = Migration {
    version: 7,
    name: "network api quotes and leases",
    sql: "
    CREATE TABLE api_quotes (
        client         TEXT NOT NULL,
        quote_id       TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        body           TEXT NOT NULL,
        expires_at_ms  INTEGER NOT NULL,
        lease_id       TEXT,
        PRIMARY KEY (client, quote_id)
    );
    CREATE TABLE api_leases (
        client         TEXT NOT NULL,
        lease_id       TEXT NOT NULL,
        quote_id       TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        job_id         TEXT NOT NULL,
        answer         TEXT NOT NULL,
        PRIMARY KEY (client, lease_id)
    );
",
};
