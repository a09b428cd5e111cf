//! The writer thread: group commit and chunked compaction.
//!
//! Each turn of the loop takes the first queued request (waiting for one unless compaction is
//! in progress), drains up to `max_batch` more without waiting, applies every write in its own
//! savepoint inside one transaction, commits once (one fsync for the whole group), publishes the
//! committed events and then acknowledges each caller. Between batches it compacts at most one
//! chunk of revisions, so compaction never stalls writers for long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior};

use super::{schema, SqliteOptions};
use crate::op::{apply, Row};
use crate::watch::Hub;
use crate::{Revision, StoreError, WriteOp};

/// Called once with the outcome of a queued write, after it is durable (or has failed).
pub type Reply = Box<dyn FnOnce(Result<Revision, StoreError>) + Send>;

/// Revisions compacted per transaction.
const COMPACT_CHUNK: Revision = 2000;

pub(crate) enum Request {
    Write(WriteOp, Reply),
    Compact(Revision, SyncSender<Result<(), StoreError>>),
}

/// Counters shared with the store handle (see [`super::WriterStats`]).
#[derive(Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub rows: AtomicU64,
    pub compacted: AtomicU64,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub requests: Receiver<Request>,
    pub hub: Arc<Hub>,
    pub counters: Arc<Counters>,
    pub options: SqliteOptions,
    /// Newest committed revision.
    pub revision: Revision,
    pub compacted: Revision,
    pub rows: u64,
}

/// Compaction in progress: the target and the callers waiting for it.
#[derive(Default)]
struct Compaction {
    target: Revision,
    waiters: Vec<(Revision, SyncSender<Result<(), StoreError>>)>,
    next_periodic: Option<Instant>,
}

enum Next {
    Request(Request),
    Idle,
    Closed,
}

impl Writer {
    pub fn run(mut self) {
        let mut compaction = Compaction {
            target: self.compacted,
            waiters: Vec::new(),
            next_periodic: self
                .options
                .compact_interval
                .map(|every| Instant::now() + every),
        };
        loop {
            match self.next(&compaction) {
                Next::Request(first) => self.batch(first, &mut compaction),
                Next::Idle => {}
                Next::Closed => break,
            }
            self.schedule(&mut compaction);
            if compaction.target > self.compacted {
                self.compact_chunk(&mut compaction);
            }
        }
        for (_, waiter) in compaction.waiters {
            let _ = waiter.send(Err(StoreError::Closed));
        }
        self.hub.close();
    }

    fn next(&self, compaction: &Compaction) -> Next {
        if compaction.target > self.compacted {
            return match self.requests.try_recv() {
                Ok(request) => Next::Request(request),
                Err(TryRecvError::Empty) => Next::Idle,
                Err(TryRecvError::Disconnected) => Next::Closed,
            };
        }
        let Some(deadline) = compaction.next_periodic else {
            return self.requests.recv().map_or(Next::Closed, Next::Request);
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.requests.recv_timeout(wait) {
            Ok(request) => Next::Request(request),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Handle `first` and whatever else is queued, committing the writes as one group.
    fn batch(&mut self, first: Request, compaction: &mut Compaction) {
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::Write(op, reply) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Request::Compact(rev, waiter) => self.request_compaction(rev, waiter, compaction),
            }
            if ops.len() >= self.options.max_batch.max(1) {
                break;
            }
            next = self.requests.try_recv().ok();
        }
        if ops.is_empty() {
            return;
        }
        match self.commit(ops) {
            Ok((outcomes, revision)) => {
                let mut events = Vec::new();
                let mut results = Vec::with_capacity(outcomes.len());
                for outcome in outcomes {
                    results.push(outcome.map(|row| {
                        let rev = row.rev;
                        events.push(row.into_event());
                        rev
                    }));
                }
                self.rows += events.len() as u64;
                self.revision = revision;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .writes
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                self.counters.rows.store(self.rows, Ordering::Relaxed);
                // Publish before acknowledging: a caller that watches from its own revision
                // then never waits for an event that is still in flight.
                self.hub.publish(revision, events);
                for (reply, result) in replies.into_iter().zip(results) {
                    reply(result);
                }
            }
            Err(err) => {
                let message = err.to_string();
                for reply in replies {
                    reply(Err(StoreError::WriteFailed(message.clone())));
                }
            }
        }
    }

    /// Apply each op in a savepoint of one transaction; returns each outcome and the new
    /// revision. An `Err` means the transaction did not commit and nothing was written.
    #[allow(clippy::type_complexity)]
    fn commit(
        &mut self,
        ops: Vec<WriteOp>,
    ) -> Result<(Vec<Result<Row, StoreError>>, Revision), StoreError> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let savepoint = tx.savepoint()?;
            let outcome = schema::latest(&savepoint, op.key())
                .and_then(|latest| apply(op, latest.as_ref(), revision + 1))
                .and_then(|row| schema::insert(&savepoint, &row).map(|()| row));
            if outcome.is_ok() {
                savepoint.commit()?;
                revision += 1;
            }
            // A failed op's savepoint rolls back when dropped.
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok((outcomes, revision))
    }

    fn request_compaction(
        &self,
        rev: Revision,
        waiter: SyncSender<Result<(), StoreError>>,
        compaction: &mut Compaction,
    ) {
        if rev > self.revision {
            let _ = waiter.send(Err(StoreError::FutureRevision {
                requested: rev,
                current: self.revision,
            }));
        } else if rev <= self.compacted {
            let _ = waiter.send(Ok(()));
        } else {
            compaction.target = compaction.target.max(rev);
            compaction.waiters.push((rev, waiter));
        }
    }

    /// Start periodic or size-triggered compaction when it is due and none is running.
    fn schedule(&mut self, compaction: &mut Compaction) {
        let now = Instant::now();
        let periodic = compaction.next_periodic.is_some_and(|due| now >= due);
        if periodic {
            compaction.next_periodic = self.options.compact_interval.map(|every| now + every);
        }
        let oversized = self.rows > self.options.max_rows;
        if !(periodic || oversized) || compaction.target > self.compacted {
            return;
        }
        let mut target = self.revision.saturating_sub(self.options.retain_revisions);
        let unkept = self.revision - self.compacted;
        if oversized && target <= self.compacted && unkept >= self.options.retain_revisions / 10 {
            // The retention window alone exceeds the limit: keep only the live keys (every
            // tenth of the window, so that a log of live keys alone does not compact per batch).
            target = self.revision;
        }
        compaction.target = compaction.target.max(target);
    }

    /// Compact the next chunk towards the target in its own transaction.
    fn compact_chunk(&mut self, compaction: &mut Compaction) {
        let to = compaction.target.min(self.compacted + COMPACT_CHUNK);
        let result = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)
            .and_then(|tx| {
                let deleted = schema::compact(&tx, self.compacted, to)?;
                tx.commit()?;
                Ok(deleted)
            });
        match result {
            Ok(deleted) => {
                self.rows = self.rows.saturating_sub(deleted);
                self.compacted = to;
                self.counters.rows.store(self.rows, Ordering::Relaxed);
                self.counters.compacted.store(to, Ordering::Relaxed);
                compaction.waiters.retain(|(rev, waiter)| {
                    let done = *rev <= to;
                    if done {
                        let _ = waiter.send(Ok(()));
                    }
                    !done
                });
            }
            Err(err) => {
                // Give up on this target; a later request or timer starts again.
                compaction.target = self.compacted;
                let message = err.to_string();
                for (_, waiter) in compaction.waiters.drain(..) {
                    let _ = waiter.send(Err(StoreError::WriteFailed(message.clone())));
                }
            }
        }
    }
}
