//! The agent database's schema: every migration this build knows, in order, gathered from
//! the subsystems that own the tables. The store applies what it is given and imports no
//! subsystem, so adding a table never makes the store depend on its user.

use crate::store::{self, Migration};

/// Every migration of the agent's database, in order. Append only: never edit a released
/// one.
pub const MIGRATIONS: &[Migration] = &[
    store::BASE_MIGRATION,
    crate::jobs::schema::MIGRATION,
    crate::jobs::schema::IMAGE_MIGRATION,
    crate::gpu::drain::MIGRATION,
    crate::liveness::LIVENESS_MIGRATION,
    crate::jobs::schema::QUOTE_MIGRATION,
    crate::netapi::store::MIGRATION,
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
        assert_eq!(latest_version() as usize, MIGRATIONS.len());
    }

    #[test]
    fn the_agent_schema_opens_and_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(&dir.path().join("plinth.db"), MIGRATIONS).unwrap();
        assert_eq!(store.health().schema_version, latest_version());
    }
}
