//! `sparkwing-schema` owns the database schemas of Sparkwing: the SQL
//! migrations (as files under `schema/sqlite/` and `schema/outbox/`, embedded at compile time),
//! the `sparkwing_schema_version` table that records which ones ran, applying
//! the missing ones atomically, and the version-skew refusal.
//!
//! It knows nothing about pipelines, profiles or remotes.
//!
//! # Layout
//! - [`SQLITE_MIGRATIONS`]: the ordered, append-only list for local `state.db`;
//!   [`OUTBOX_MIGRATIONS`] for `outbox.db`.
//! - [`migrate_sqlite`]: bring a connection up to [`SQLITE_VERSION`], under a
//!   write lock so that concurrent processes migrate exactly once.
//! - [`SchemaError`]: including [`SchemaError::Skew`], whose text is the
//!   product specification's.
//! - [`fault`]: [`StorageFault`], a failure of one of sparkwing's own files
//!   (disk full, damaged, not writable) with the file and the fix.

pub mod fault;

pub use fault::{Problem, StorageFault};

use std::fmt;

use rusqlite::{Connection, TransactionBehavior};

/// One migration: the version it brings the database to and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The SQLite migrations, oldest first. Append only: never edit a released one.
pub const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_run_targets.sql",
        sql: include_str!("../sqlite/0002_run_targets.sql"),
    },
    Migration {
        version: 3,
        name: "0003_boundaries.sql",
        sql: include_str!("../sqlite/0003_boundaries.sql"),
    },
    Migration {
        version: 4,
        name: "0004_cache_origin.sql",
        sql: include_str!("../sqlite/0004_cache_origin.sql"),
    },
    Migration {
        version: 5,
        name: "0005_cache_last_used.sql",
        sql: include_str!("../sqlite/0005_cache_last_used.sql"),
    },
    Migration {
        version: 6,
        name: "0006_cache_chunks.sql",
        sql: include_str!("../sqlite/0006_cache_chunks.sql"),
    },
];

/// The schema version this binary expects of `state.db`.
pub const SQLITE_VERSION: u32 = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.len() - 1].version;

/// The migrations of `outbox.db`, oldest first. Append only.
pub const OUTBOX_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_outbox.sql",
        sql: include_str!("../outbox/0001_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "0002_streams.sql",
        sql: include_str!("../outbox/0002_streams.sql"),
    },
    Migration {
        version: 3,
        name: "0003_drop_ready_index.sql",
        sql: include_str!("../outbox/0003_drop_ready_index.sql"),
    },
    Migration {
        version: 4,
        name: "0004_stream_high.sql",
        sql: include_str!("../outbox/0004_stream_high.sql"),
    },
    Migration {
        version: 5,
        name: "0005_identity.sql",
        sql: include_str!("../outbox/0005_identity.sql"),
    },
];

/// Brings `outbox.db` to the version this binary expects (see [`migrate_sqlite`]).
pub fn migrate_outbox(conn: &mut Connection) -> Result<u32, SchemaError> {
    migrate_sqlite_with(conn, OUTBOX_MIGRATIONS)
}

/// Why a database could not be brought to the expected version.
#[derive(Debug)]
#[non_exhaustive]
pub enum SchemaError {
    /// The database is newer than this binary.
    Skew { found: u32, expected: u32 },
    /// A migration or the version table failed.
    Sql {
        what: String,
        source: rusqlite::Error,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Skew { found, expected } => write!(
                f,
                "sparkwing: database is at schema version {found}; this binary expects {expected}. \
                 Upgrade sparkwing or restore the database to a matching version."
            ),
            SchemaError::Sql { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for SchemaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchemaError::Sql { source, .. } => Some(source),
            SchemaError::Skew { .. } => None,
        }
    }
}

fn sql(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SchemaError {
    let what = what.into();
    move |source| SchemaError::Sql { what, source }
}

/// Switches a connection's database to WAL. A fresh database needs an
/// exclusive lock for that, and with many processes opening it at once
/// SQLite can report busy without waiting on the busy timeout; retry then.
pub fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut tries = 0;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e)
                if tries < 1000
                    && matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The version recorded in `sparkwing_schema_version`, or 0 for a database
/// that has none yet.
pub fn sqlite_version(conn: &Connection) -> Result<u32, SchemaError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sparkwing_schema_version')",
            [],
            |r| r.get(0),
        )
        .map_err(sql("reading the schema version"))?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM sparkwing_schema_version",
        [],
        |r| r.get(0),
    )
    .map_err(sql("reading the schema version"))
}

/// Applies every missing migration in one `BEGIN IMMEDIATE` transaction and
/// returns the resulting version.
///
/// The immediate transaction takes SQLite's write lock before reading the
/// version, so of several processes opening a fresh database at once exactly
/// one migrates and the others see its result (they wait on the busy
/// timeout the caller configured). A database at a higher version than
/// [`SQLITE_VERSION`] is refused with [`SchemaError::Skew`] and left as it is.
pub fn migrate_sqlite(conn: &mut Connection) -> Result<u32, SchemaError> {
    migrate_sqlite_with(conn, SQLITE_MIGRATIONS)
}

/// [`migrate_sqlite`] with an explicit migration list (for tests).
pub fn migrate_sqlite_with(
    conn: &mut Connection,
    migrations: &[Migration],
) -> Result<u32, SchemaError> {
    let expected = migrations.last().map_or(0, |m| m.version);
    // Fast path without the write lock: the common case is "up to date".
    let current = sqlite_version(conn)?;
    if current == expected {
        return Ok(current);
    }
    if current > expected {
        return Err(SchemaError::Skew {
            found: current,
            expected,
        });
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("locking state.db to migrate it"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS sparkwing_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(sql("creating sparkwing_schema_version"))?;
    let current = sqlite_version(&tx)?;
    if current > expected {
        return Err(SchemaError::Skew {
            found: current,
            expected,
        });
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.sql)
            .map_err(sql(format!("applying migration {}", m.name)))?;
        tx.execute(
            "INSERT INTO sparkwing_schema_version (version, applied_at)
             VALUES (?1, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
            [m.version],
        )
        .map_err(sql(format!("recording migration {}", m.name)))?;
    }
    tx.commit().map_err(sql("committing the migrations"))?;
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_migrates_and_records_every_version() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate_sqlite(&mut c).unwrap(), SQLITE_VERSION);
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM sparkwing_schema_version", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n as usize, SQLITE_MIGRATIONS.len());
        // Idempotent.
        assert_eq!(migrate_sqlite(&mut c).unwrap(), SQLITE_VERSION);
    }

    #[test]
    fn newer_database_is_refused_with_the_spec_text() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut c).unwrap();
        c.execute(
            "INSERT INTO sparkwing_schema_version VALUES (?1, 0)",
            [SQLITE_VERSION + 4],
        )
        .unwrap();
        let err = migrate_sqlite(&mut c).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "sparkwing: database is at schema version {}; this binary expects {}. \
                 Upgrade sparkwing or restore the database to a matching version.",
                SQLITE_VERSION + 4,
                SQLITE_VERSION
            )
        );
    }

    #[test]
    fn a_failing_migration_leaves_nothing_behind() {
        let bad = [
            Migration {
                version: 1,
                name: "good",
                sql: "CREATE TABLE a (x)",
            },
            Migration {
                version: 2,
                name: "bad",
                sql: "CREATE TABLE b (x); NOT SQL",
            },
        ];
        let mut c = Connection::open_in_memory().unwrap();
        assert!(migrate_sqlite_with(&mut c, &bad).is_err());
        assert_eq!(sqlite_version(&c).unwrap(), 0);
        let tables: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('a', 'b')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }
}
