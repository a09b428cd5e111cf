//! The SQLite schema and every statement the store runs.
//!
//! `kv` is the revision log: one row per write, `id` = revision. Names are stored as BLOBs so
//! that a prefix is the byte range `[prefix, prefix || 0xFF)` (0xFF never occurs in UTF-8).
//! Compaction to revision C keeps, for every key, its newest row at C unless that is a
//! tombstone: it deletes the rows named by the `prev_revision` of rows up to C (each row
//! supersedes exactly its `prev_revision`) and the tombstones up to C.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row as SqlRow};

use crate::op::{prefix_end, Row};
use crate::{Event, KeyValue, Revision, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name BLOB NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kv_name_prev_revision ON kv (name, prev_revision);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 1), ('compact_revision', 0);
";

const COLUMNS: &str =
    "id, name, created, deleted, create_revision, prev_revision, value, old_value";

/// Open a connection with the store's settings; the writer also creates the schema.
pub fn open(path: &Path, busy_timeout: Duration, writer: bool) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    // WAL: readers never block the writer. FULL: every commit fsyncs the WAL, so an
    // acknowledged write survives power loss.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Format(format!(
            "journal mode is {mode}, not wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    if writer {
        conn.execute_batch(SCHEMA)?;
        let version: i64 =
            conn.query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
                r.get(0)
            })?;
        if version != 1 {
            return Err(StoreError::Format(format!(
                "unknown schema version {version}"
            )));
        }
    } else {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

fn rev(value: i64) -> Revision {
    value.max(0) as Revision
}

fn row_from_sql(r: &SqlRow<'_>) -> rusqlite::Result<Row> {
    let name: Vec<u8> = r.get(1)?;
    let key = String::from_utf8(name).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, err.into())
    })?;
    Ok(Row {
        rev: rev(r.get(0)?),
        key,
        created: r.get(2)?,
        deleted: r.get(3)?,
        create_revision: rev(r.get(4)?),
        prev_revision: rev(r.get(5)?),
        value: r.get(6)?,
        old_value: r.get(7)?,
    })
}

/// The newest revision ever written (revisions of compacted rows are never reused).
pub fn current_revision(conn: &Connection) -> Result<Revision, StoreError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'kv'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let max: Option<i64> = conn.query_row("SELECT MAX(id) FROM kv", [], |r| r.get(0))?;
    Ok(rev(seq.unwrap_or(0).max(max.unwrap_or(0))).max(compacted_revision(conn)?))
}

pub fn compacted_revision(conn: &Connection) -> Result<Revision, StoreError> {
    let value: i64 = conn.query_row(
        "SELECT value FROM meta WHERE name = 'compact_revision'",
        [],
        |r| r.get(0),
    )?;
    Ok(rev(value))
}

pub fn count_rows(conn: &Connection) -> Result<u64, StoreError> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))?;
    Ok(rev(count))
}

/// The key's newest row, tombstone or not.
pub fn latest(conn: &Connection, key: &str) -> Result<Option<Row>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1");
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row([key.as_bytes()], row_from_sql).optional()?)
}

pub fn insert(conn: &Connection, row: &Row) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO kv ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.execute(params![
        row.rev as i64,
        row.key.as_bytes(),
        row.created,
        row.deleted,
        row.create_revision as i64,
        row.prev_revision as i64,
        row.value,
        row.old_value,
    ])?;
    Ok(())
}

/// The rows [`list`] and [`count`] read: each live key's newest row as of revision `?4`,
/// for keys in `[?1, ?2)` (a prefix's range) after `?3`.
const LIVE_AT: &str = "id IN (
         SELECT MAX(id) FROM kv
         WHERE name >= ?1 AND name < ?2 AND name > ?3 AND id <= ?4 GROUP BY name)
     AND deleted = 0";

/// Keys under `prefix` after `start_after` as of revision `at`; up to `limit + 1` items.
pub fn list(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    at: Revision,
) -> Result<Vec<KeyValue>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM kv WHERE {LIVE_AT} ORDER BY name LIMIT ?5");
    let mut stmt = conn.prepare_cached(&sql)?;
    let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
    let after = start_after.unwrap_or("").as_bytes();
    let rows = stmt.query_map(
        params![
            prefix.as_bytes(),
            prefix_end(prefix),
            after,
            at as i64,
            fetch
        ],
        row_from_sql,
    )?;
    let mut items = Vec::new();
    for row in rows {
        items.extend(row?.into_key_value());
    }
    Ok(items)
}

/// How many live keys under `prefix` after `start_after` there were at revision `at`.
pub fn count(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    at: Revision,
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT COUNT(*) FROM kv WHERE {LIVE_AT}"))?;
    let after = start_after.unwrap_or("").as_bytes();
    let n: i64 = stmt.query_row(
        params![prefix.as_bytes(), prefix_end(prefix), after, at as i64],
        |row| row.get(0),
    )?;
    Ok(n as u64)
}

/// Events under `prefix` with `after < revision <= upto`, in revision order.
pub fn events(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM kv WHERE id > ?1 AND id <= ?2 AND name >= ?3 AND name < ?4
         ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            after as i64,
            upto as i64,
            prefix.as_bytes(),
            prefix_end(prefix)
        ],
        row_from_sql,
    )?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row?.into_event());
    }
    Ok(events)
}

/// Compact `(from, to]`: see the module docs. Returns the number of rows deleted.
pub fn compact(conn: &Connection, from: Revision, to: Revision) -> Result<u64, StoreError> {
    let (from, to) = (from as i64, to as i64);
    // The IN list is computed before any row is deleted.
    let deleted = conn.execute(
        "DELETE FROM kv WHERE id IN (
             SELECT prev_revision FROM kv WHERE id > ?1 AND id <= ?2
             UNION ALL SELECT id FROM kv WHERE id > ?1 AND id <= ?2 AND deleted = 1)",
        params![from, to],
    )?;
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compact_revision'",
        params![to],
    )?;
    Ok(deleted as u64)
}
