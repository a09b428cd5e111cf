//! The Cairn datastore: a revision-log key-value store for Kubernetes objects.
//!
//! **Purpose.** The `cairn` API server keeps every Kubernetes object here, under keys such as
//! `/registry/pods/default/nginx`, with the object's serialised bytes as an opaque value. The
//! store supplies what the Kubernetes API needs from etcd: a global revision counter
//! (`resourceVersion`), optimistic concurrency (update only if unchanged since revision N),
//! consistent paginated lists at a fixed revision (`limit` / `continue`), and watches that resume
//! from a revision, with `410 Gone` once that revision has been compacted away.
//!
//! **Design.** Like K3s' kine, every write appends one row to a log whose row id *is* the
//! revision; a key's current value is its newest row, and a delete appends a tombstone. The
//! [`Store`] trait has two implementations that pass the same conformance tests
//! (`tests/conformance`):
//! - [`SqliteStore`]: one SQLite table in WAL mode with `synchronous=FULL`. A UNIQUE
//!   `(name, prev_revision)` index makes "update if unchanged" atomic even against another
//!   writer. A single writer thread does **group commit**: callers queue requests on a channel,
//!   the thread drains what is queued, applies each request in its own savepoint inside one
//!   transaction, commits (one fsync), publishes the events to watchers and only then
//!   acknowledges each caller. Readers use a small pool of their own connections, so reads
//!   never wait for the writer. Compaction runs in the writer thread in chunks between batches:
//!   periodically (keep the last [`SqliteOptions::retain_revisions`] revisions) and whenever the
//!   log exceeds [`SqliteOptions::max_rows`].
//! - [`MemoryStore`]: a `Vec` log and a `BTreeMap` key index behind a mutex, for fast controller
//!   tests.
//!
//! The trait is **synchronous**: SQLite and rusqlite are blocking, a sync trait stays
//! dyn-compatible (`Arc<dyn Store>`) without boxed futures or extra crates, and controllers' tests
//! can call it without a runtime. The tokio API server calls reads and writes through
//! `spawn_blocking` (reads take microseconds; a write waits for the group's fsync, which is what
//! the blocking pool is for), or [`SqliteStore::write_async`] to await a write without a blocking
//! thread. Watches are long-lived, so [`Watch`] is consumed asynchronously ([`Watch::recv`]) or
//! from a thread ([`Watch::blocking_recv`]); live events travel on a `tokio::sync::broadcast`
//! channel.
//!
//! **Guarantees.** A write is acknowledged only after its transaction is committed with an fsync
//! (SQLite), so it survives a crash or power loss (`tests/crash.rs` kills a writer process with
//! SIGKILL and checks every acknowledged key). Revisions are strictly increasing and every write
//! gets a distinct one; concurrent updates of one key based on the same revision have exactly one
//! winner. A list at revision R (R ≥ the compacted revision) is an exact snapshot at R whatever
//! was written since. A watch delivers every matching event with revision > `from_rev`, in
//! revision order, first from the log and then live, without gaps or duplicates; if it falls so
//! far behind that the events it missed were compacted, it ends with [`StoreError::Compacted`].
//! Compaction never removes a live key's newest row.
//!
//! **Limitations.** One process owns a database file; nothing enforces it yet. (A second
//! writer process would be serialised by SQLite's lock and its conflicting rows rejected by the
//! primary key or the unique index, so data stays consistent, but each process's watchers and
//! revision counter would miss the other's writes.) Values are held in memory whole; there are no
//! leases (TTLs) or multi-key transactions. Compaction frees pages for reuse but does not shrink
//! the file (no VACUUM). When the live keys alone exceed `max_rows`, size-triggered compaction
//! falls back to compacting up to the current revision, so watchers and list pages older than
//! that get `Compacted`. A watch that lagged behind the broadcast buffer re-reads the missed
//! events from the log inside [`Watch::recv`], a short blocking read.

mod error;
mod memory;
mod op;
mod sqlite;
mod watch;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use sqlite::{Reply, SqliteOptions, SqliteStore, WriterStats};
pub use watch::Watch;

/// A store revision (Kubernetes `resourceVersion`). Revision 0 means "before any write".
pub type Revision = u64;

/// The current state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that produced this value.
    pub mod_revision: Revision,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
}

/// Whether an event wrote or removed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change in the revision log, as delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// Put: the new value. Delete: the value the key had when it was deleted.
    pub value: Vec<u8>,
    /// The value before this event: `None` for a create, the old value for an update or delete.
    pub prev_value: Option<Vec<u8>>,
    /// The event's revision.
    pub mod_revision: Revision,
    /// The revision at which the key was created.
    pub create_revision: Revision,
}

/// A write request, as queued to a store's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create a key that does not exist (fails with `AlreadyExists`).
    Create { key: String, value: Vec<u8> },
    /// Replace the value of a key whose current revision is `expected_mod_revision`.
    Update {
        key: String,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    },
    /// Delete a key, if `expected_mod_revision` is given only when it is still current.
    Delete {
        key: String,
        expected_mod_revision: Option<Revision>,
    },
}

impl WriteOp {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in byte order, as they were at `revision`.
    pub items: Vec<KeyValue>,
    /// The revision of the snapshot: pass it as `at_rev` for the next page.
    pub revision: Revision,
    /// True when more keys follow the last item (continue with `start_after` = last key).
    pub more: bool,
}

/// What a store reports for monitoring ([`Store::metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Writes applied since the store was opened.
    pub writes: u64,
    /// Transactions committed for them (several writes share one under group commit).
    pub commits: u64,
    /// Rows in the revision log.
    pub rows: u64,
    /// Bytes on disk (database and write-ahead log).
    pub size_bytes: u64,
}

/// A revision-log key-value store. See the crate docs for the guarantees.
pub trait Store: Send + Sync {
    /// Apply one write and return its revision.
    fn write(&self, op: WriteOp) -> Result<Revision, StoreError>;

    /// The current value of `key`, or `None` if it does not exist.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix` and greater than `start_after`, in byte order, as of
    /// `at_rev` (default: the current revision). `limit` 0 means no limit.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_rev: Option<Revision>,
    ) -> Result<ListPage, StoreError>;

    /// How many keys [`Store::list`] with the same arguments and no limit would return.
    /// Backends with a cheaper way than listing override it.
    fn count(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        at_rev: Option<Revision>,
    ) -> Result<u64, StoreError> {
        Ok(self.list(prefix, start_after, 0, at_rev)?.items.len() as u64)
    }

    /// Events for keys starting with `prefix` with revision > `from_rev`: first those in the
    /// log, then live ones. Fails with `Compacted` if `from_rev` is older than the compaction.
    fn watch(&self, prefix: &str, from_rev: Revision) -> Result<Watch, StoreError>;

    /// The revision of the newest write.
    fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The revision the log has been compacted to: reads and watches before it fail.
    fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// Discard history up to `rev`, keeping each live key's newest row. Idempotent.
    fn compact(&self, rev: Revision) -> Result<(), StoreError>;

    /// Figures for `/metrics`; `None` when the backend keeps none.
    fn metrics(&self) -> Option<StoreMetrics> {
        None
    }

    /// Create `key`; fails with `AlreadyExists` if it exists.
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.write(WriteOp::Create {
            key: key.to_owned(),
            value: value.to_vec(),
        })
    }

    /// Update `key` if its current revision is `expected_mod_revision`; fails with `Conflict`
    /// if it changed since, `NotFound` if it does not exist.
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        self.write(WriteOp::Update {
            key: key.to_owned(),
            value: value.to_vec(),
            expected_mod_revision,
        })
    }

    /// Delete `key` (if given, only if its current revision is `expected_mod_revision`).
    fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.write(WriteOp::Delete {
            key: key.to_owned(),
            expected_mod_revision,
        })
    }
}

/// Shared handles are stores too (`Arc<dyn Store>`, `Arc<SqliteStore>`).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn write(&self, op: WriteOp) -> Result<Revision, StoreError> {
        (**self).write(op)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        (**self).get(key)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_rev: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        (**self).list(prefix, start_after, limit, at_rev)
    }

    fn count(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        at_rev: Option<Revision>,
    ) -> Result<u64, StoreError> {
        (**self).count(prefix, start_after, at_rev)
    }

    fn watch(&self, prefix: &str, from_rev: Revision) -> Result<Watch, StoreError> {
        (**self).watch(prefix, from_rev)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        (**self).current_revision()
    }

    fn compacted_revision(&self) -> Result<Revision, StoreError> {
        (**self).compacted_revision()
    }

    fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        (**self).compact(rev)
    }

    fn metrics(&self) -> Option<StoreMetrics> {
        (**self).metrics()
    }
}
