//! The in-memory store: a `Vec` log and a `BTreeMap` key index behind one mutex.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::op::{apply, Row};
use crate::watch::{Hub, LogSource};
use crate::{Event, KeyValue, ListPage, Revision, Store, StoreError, Watch, WriteOp};

/// Broadcast buffer of a memory store, in commits (one write each).
const WATCH_CAPACITY: usize = 1024;

/// A [`Store`] kept in memory, for tests. Same semantics as [`crate::SqliteStore`], no durability.
pub struct MemoryStore {
    log: Arc<MemoryLog>,
    hub: Arc<Hub>,
}

struct MemoryLog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Rows in revision order.
    rows: Vec<Row>,
    /// Revisions of each key's rows, oldest first.
    keys: BTreeMap<String, Vec<Revision>>,
    revision: Revision,
    compacted: Revision,
}

impl State {
    fn row(&self, rev: Revision) -> &Row {
        let index = self.rows.partition_point(|row| row.rev < rev);
        &self.rows[index]
    }

    /// The key's newest row at `at`.
    fn row_at(&self, key: &str, at: Revision) -> Option<&Row> {
        let revs = self.keys.get(key)?;
        let count = revs.partition_point(|&rev| rev <= at);
        count.checked_sub(1).map(|i| self.row(revs[i]))
    }

    fn check_readable(&self, rev: Revision) -> Result<(), StoreError> {
        if rev < self.compacted {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        if rev > self.revision {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// Drop each row superseded at `target`, and tombstones up to it (see `sqlite::schema`).
    fn compact(&mut self, target: Revision) {
        let start = self.rows.partition_point(|row| row.rev <= self.compacted);
        let end = self.rows.partition_point(|row| row.rev <= target);
        let mut doomed = HashSet::new();
        for row in &self.rows[start..end] {
            doomed.insert(row.prev_revision);
            if row.deleted {
                doomed.insert(row.rev);
            }
        }
        self.rows.retain(|row| !doomed.contains(&row.rev));
        self.keys.retain(|_, revs| {
            revs.retain(|rev| !doomed.contains(rev));
            !revs.is_empty()
        });
        self.compacted = target;
    }
}

impl MemoryLog {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Writes validate before they mutate, so a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl LogSource for MemoryLog {
    fn events(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        let state = self.lock();
        if after < state.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: state.compacted,
            });
        }
        let start = state.rows.partition_point(|row| row.rev <= after);
        let events = state.rows[start..]
            .iter()
            .take_while(|row| row.rev <= upto)
            .filter(|row| row.key.starts_with(prefix))
            .map(|row| row.clone().into_event())
            .collect();
        Ok(events)
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> MemoryStore {
        MemoryStore::with_watch_capacity(WATCH_CAPACITY)
    }

    /// An empty store whose watchers buffer `capacity` events before re-reading the log.
    pub fn with_watch_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            log: Arc::new(MemoryLog {
                state: Mutex::default(),
            }),
            hub: Arc::new(Hub::new(0, capacity)),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}

impl Store for MemoryStore {
    fn write(&self, op: WriteOp) -> Result<Revision, StoreError> {
        let mut state = self.log.lock();
        let rev = state.revision + 1;
        let latest = state.row_at(op.key(), rev);
        let row = apply(op, latest, rev)?;
        state.keys.entry(row.key.clone()).or_default().push(rev);
        state.rows.push(row.clone());
        state.revision = rev;
        // Publishing under the state lock keeps events in revision order.
        self.hub.publish(rev, vec![row.into_event()]);
        Ok(rev)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let state = self.log.lock();
        Ok(state
            .row_at(key, state.revision)
            .cloned()
            .and_then(Row::into_key_value))
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_rev: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        let state = self.log.lock();
        let at = at_rev.unwrap_or(state.revision);
        state.check_readable(at)?;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut page = ListPage {
            items: Vec::new(),
            revision: at,
            more: false,
        };
        let keys = state.keys.range::<str, _>((lower, Bound::Unbounded));
        for (key, _) in keys.take_while(|(key, _)| key.starts_with(prefix)) {
            if let Some(item) = state.row_at(key, at).cloned().and_then(Row::into_key_value) {
                if limit > 0 && page.items.len() == limit {
                    page.more = true;
                    break;
                }
                page.items.push(item);
            }
        }
        Ok(page)
    }

    fn watch(&self, prefix: &str, from_rev: Revision) -> Result<Watch, StoreError> {
        Watch::start(self.hub.clone(), self.log.clone(), prefix, from_rev)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.log.lock().revision)
    }

    fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.log.lock().compacted)
    }

    fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        let mut state = self.log.lock();
        if rev > state.revision {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: state.revision,
            });
        }
        if rev > state.compacted {
            state.compact(rev);
        }
        Ok(())
    }
}
