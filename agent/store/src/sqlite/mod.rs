//! The SQLite store: a writer thread for group commit, a pool of reader connections.

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::watch::{Hub, LogSource};
use crate::{Event, ListPage, Revision, Store, StoreError, StoreMetrics, Watch, WriteOp};
pub use writer::Reply;
use writer::{Counters, Request, Writer};

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 4;

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Revisions of history kept by periodic compaction (Kubernetes watches and list pages
    /// older than this get 410 Gone). Default 1000.
    pub retain_revisions: u64,
    /// Log rows above which compaction runs at once. Default 100 000.
    pub max_rows: u64,
    /// How often to compact (`None`: only on size or [`Store::compact`]). Default 5 minutes.
    pub compact_interval: Option<Duration>,
    /// Most writes committed in one transaction. Default 1024.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers block. Default 4096.
    pub queue_capacity: usize,
    /// Commits buffered per watcher before it must re-read from the log. Default 1024.
    pub watch_capacity: usize,
    /// How long a connection waits for a lock held by another connection. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            retain_revisions: 1000,
            max_rows: 100_000,
            compact_interval: Some(Duration::from_secs(300)),
            max_batch: 1024,
            queue_capacity: 4096,
            watch_capacity: 1024,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// What the writer has done since the store was opened (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed for writes (`writes / commits` is the mean group size).
    pub commits: u64,
    /// Writes applied.
    pub writes: u64,
    /// Rows in the log now.
    pub rows: u64,
    /// The compacted revision.
    pub compacted: Revision,
}

/// A [`Store`] in one SQLite database file. See the crate docs.
pub struct SqliteStore {
    requests: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    hub: Arc<Hub>,
    counters: Arc<Counters>,
}

impl SqliteStore {
    /// Open (or create) the database at `path` and start its writer thread.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let conn = schema::open(path, options.busy_timeout, true)?;
        let revision = schema::current_revision(&conn)?;
        let compacted = schema::compacted_revision(&conn)?;
        let rows = schema::count_rows(&conn)?;
        let hub = Arc::new(Hub::new(revision, options.watch_capacity));
        let counters = Arc::new(Counters::default());
        counters.rows.store(rows, Ordering::Relaxed);
        counters.compacted.store(compacted, Ordering::Relaxed);
        let (requests, receiver) = sync_channel(options.queue_capacity.max(1));
        let readers = Arc::new(Readers {
            path: path.to_owned(),
            busy_timeout: options.busy_timeout,
            idle: Mutex::new(Vec::new()),
        });
        let writer = Writer {
            conn,
            requests: receiver,
            hub: hub.clone(),
            counters: counters.clone(),
            options,
            revision,
            compacted,
            rows,
        };
        let writer = std::thread::Builder::new()
            .name("cairn-store-writer".into())
            .spawn(move || writer.run())?;
        Ok(SqliteStore {
            requests: Some(requests),
            writer: Some(writer),
            readers,
            hub,
            counters,
        })
    }

    /// Queue a write; `reply` is called from the writer thread once it is durable or failed,
    /// so it must not block (send on a channel). Blocks while
    /// [`SqliteOptions::queue_capacity`] writes are already waiting. A benchmark can drive the
    /// writer through this with any number of writes in flight.
    pub fn submit(&self, op: WriteOp, reply: Reply) -> Result<(), StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(Request::Write(op, reply))
            .map_err(|_| StoreError::Closed)
    }

    /// [`Store::write`] for async callers: waits for the commit without holding a thread
    /// (queuing blocks only while the queue is full).
    pub async fn write_async(&self, op: WriteOp) -> Result<Revision, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.submit(
            op,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        )?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Counters of the writer thread.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            rows: self.counters.rows.load(Ordering::Relaxed),
            compacted: self.counters.compacted.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SqliteStore {
    /// Let the writer finish the queued writes, then close the database.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store for SqliteStore {
    fn metrics(&self) -> Option<StoreMetrics> {
        let stats = self.stats();
        let db = &self.readers.path;
        let size_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut path = db.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).ok()
            })
            .map(|m| m.len())
            .sum();
        Some(StoreMetrics {
            writes: stats.writes,
            commits: stats.commits,
            rows: stats.rows,
            size_bytes,
        })
    }

    fn write(&self, op: WriteOp) -> Result<Revision, StoreError> {
        let (done, wait) = sync_channel(1);
        self.submit(
            op,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        )?;
        wait.recv().map_err(|_| StoreError::Closed)?
    }

    fn get(&self, key: &str) -> Result<Option<crate::KeyValue>, StoreError> {
        self.readers.with(|conn| {
            let latest = schema::latest(conn, key)?;
            Ok(latest.and_then(|row| row.into_key_value()))
        })
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_rev: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        let current = self.readable(at_rev)?;
        self.readers.with(|conn| {
            let snapshot = conn.unchecked_transaction()?;
            let at = snapshot_revision(&snapshot, at_rev, current)?;
            let mut items = schema::list(&snapshot, prefix, start_after, limit, at)?;
            let more = limit > 0 && items.len() > limit;
            items.truncate(if limit > 0 { limit } else { items.len() });
            Ok(ListPage {
                items,
                revision: at,
                more,
            })
        })
    }

    fn count(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        at_rev: Option<Revision>,
    ) -> Result<u64, StoreError> {
        let current = self.readable(at_rev)?;
        self.readers.with(|conn| {
            let snapshot = conn.unchecked_transaction()?;
            let at = snapshot_revision(&snapshot, at_rev, current)?;
            schema::count(&snapshot, prefix, start_after, at)
        })
    }

    fn watch(&self, prefix: &str, from_rev: Revision) -> Result<Watch, StoreError> {
        Watch::start(self.hub.clone(), self.readers.clone(), prefix, from_rev)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.hub.revision())
    }

    fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.counters.compacted.load(Ordering::Relaxed))
    }

    fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        let (done, wait) = sync_channel(1);
        requests
            .send(Request::Compact(rev, done))
            .map_err(|_| StoreError::Closed)?;
        wait.recv().map_err(|_| StoreError::Closed)?
    }
}

impl SqliteStore {
    /// The current revision, refusing a read at a revision not reached yet.
    fn readable(&self, at_rev: Option<Revision>) -> Result<Revision, StoreError> {
        let current = self.hub.revision();
        match at_rev.filter(|&rev| rev > current) {
            Some(requested) => Err(StoreError::FutureRevision { requested, current }),
            None => Ok(current),
        }
    }
}

/// The revision a read in `snapshot` is made at: `at_rev` (refused once compacted), else
/// `current`.
fn snapshot_revision(
    snapshot: &rusqlite::Transaction<'_>,
    at_rev: Option<Revision>,
    current: Revision,
) -> Result<Revision, StoreError> {
    let compacted = schema::compacted_revision(snapshot)?;
    match at_rev {
        Some(requested) if requested < compacted => Err(StoreError::Compacted {
            requested,
            compacted,
        }),
        Some(requested) => Ok(requested),
        // Compaction never passes a committed revision, so the snapshot has it all.
        None => Ok(current.max(compacted)),
    }
}

/// Read-only connections, opened on demand and reused.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => schema::open(&self.path, self.busy_timeout, false)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }
}

impl LogSource for Readers {
    fn events(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let snapshot = conn.unchecked_transaction()?;
            let compacted = schema::compacted_revision(&snapshot)?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted,
                });
            }
            schema::events(&snapshot, prefix, after, upto)
        })
    }
}
