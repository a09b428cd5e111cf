//! Watches: replay from the log, then live events from a broadcast channel, without gaps.
//!
//! The writer publishes each committed batch (events with consecutive revisions) while holding
//! the [`Hub`] lock, and a watch subscribes while holding it too. So a new watch's receiver gets
//! exactly the events after the revision it read under the lock, and it replays the events up
//! to that revision from the log. If the receiver lags (the broadcast buffer overflowed), the
//! watch re-reads the missed revisions from the log and drops live events it already has.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::{Event, Revision, StoreError};

/// Events of one commit, with consecutive revisions.
pub(crate) type Batch = Arc<[Event]>;

/// Read access to the log, for replaying events.
pub(crate) trait LogSource: Send + Sync {
    /// Events for keys starting with `prefix` with `after < revision <= upto`, in revision
    /// order; `Compacted` if `after` is older than the compacted revision.
    fn events(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Vec<Event>, StoreError>;
}

/// The publication point: the newest published revision and the live channel.
pub(crate) struct Hub {
    state: Mutex<HubState>,
}

struct HubState {
    revision: Revision,
    sender: Option<broadcast::Sender<Batch>>,
}

impl Hub {
    pub fn new(revision: Revision, capacity: usize) -> Hub {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Hub {
            state: Mutex::new(HubState {
                revision,
                sender: Some(sender),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock cannot leave the state half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The newest published revision.
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Record that everything up to `revision` is committed and send its events to watchers.
    pub fn publish(&self, revision: Revision, events: Vec<Event>) {
        let mut state = self.lock();
        state.revision = revision;
        if let (Some(sender), false) = (&state.sender, events.is_empty()) {
            // An error only means there are no watchers.
            let _ = sender.send(events.into());
        }
    }

    /// Stop live delivery: watches end after the events already sent.
    pub fn close(&self) {
        self.lock().sender = None;
    }

    fn subscribe(&self) -> Result<(Revision, broadcast::Receiver<Batch>), StoreError> {
        let state = self.lock();
        let sender = state.sender.as_ref().ok_or(StoreError::Closed)?;
        Ok((state.revision, sender.subscribe()))
    }
}

/// A stream of events for keys under a prefix, in revision order. Dropping it stops the watch.
pub struct Watch {
    prefix: String,
    /// Every event up to this revision is queued, delivered or filtered out.
    position: Revision,
    queue: VecDeque<Event>,
    receiver: broadcast::Receiver<Batch>,
    hub: Arc<Hub>,
    source: Arc<dyn LogSource>,
}

impl Watch {
    pub(crate) fn start(
        hub: Arc<Hub>,
        source: Arc<dyn LogSource>,
        prefix: &str,
        from_rev: Revision,
    ) -> Result<Watch, StoreError> {
        let (current, receiver) = hub.subscribe()?;
        let queue = if from_rev < current {
            source.events(prefix, from_rev, current)?.into()
        } else {
            VecDeque::new()
        };
        Ok(Watch {
            prefix: prefix.to_owned(),
            position: current.max(from_rev),
            queue,
            receiver,
            hub,
            source,
        })
    }

    /// The next event; `Ok(None)` once the store is closed. Cancel-safe. `Err(Compacted)` if the
    /// watch fell behind and the events it missed were compacted: re-list and watch again.
    pub async fn recv(&mut self) -> Result<Option<Event>, StoreError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            let received = self.receiver.recv().await;
            if !self.absorb(received)? {
                return Ok(None);
            }
        }
    }

    /// Like [`Watch::recv`], blocking the thread. Panics inside an async runtime.
    pub fn blocking_recv(&mut self) -> Result<Option<Event>, StoreError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            let received = self.receiver.blocking_recv();
            if !self.absorb(received)? {
                return Ok(None);
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, StoreError> {
        use broadcast::error::TryRecvError;
        while self.queue.is_empty() {
            let received = match self.receiver.try_recv() {
                Ok(batch) => Ok(batch),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            };
            if !self.absorb(received)? {
                return Ok(None);
            }
        }
        Ok(self.queue.pop_front())
    }

    /// Queue the matching events of a received batch; false when the channel is closed.
    fn absorb(&mut self, received: Result<Batch, RecvError>) -> Result<bool, StoreError> {
        match received {
            Ok(batch) => {
                let first = batch.first().map_or(0, |event| event.mod_revision);
                if first > self.position + 1 {
                    // Revisions are consecutive, so this is a gap: read it from the log.
                    self.resync()?;
                }
                for event in batch.iter() {
                    if event.mod_revision > self.position {
                        self.position = event.mod_revision;
                        if event.key.starts_with(&self.prefix) {
                            self.queue.push_back(event.clone());
                        }
                    }
                }
                Ok(true)
            }
            Err(RecvError::Lagged(_)) => {
                self.resync()?;
                Ok(true)
            }
            Err(RecvError::Closed) => Ok(false),
        }
    }

    /// Read every published event after `position` from the log.
    fn resync(&mut self) -> Result<(), StoreError> {
        let upto = self.hub.revision();
        if upto > self.position {
            let events = self.source.events(&self.prefix, self.position, upto)?;
            self.queue.extend(events);
            self.position = upto;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("position", &self.position)
            .field("queued", &self.queue.len())
            .finish()
    }
}
