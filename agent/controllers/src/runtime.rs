//! Running a controller: watch what it watches, turn events into keys, reconcile each key on
//! the blocking pool, one at a time, with retries.
//!
//! The shape is client-go's workqueue without informer caches: a watch per watched resource
//! (from the datastore's revision log, re-listed on start, on compaction and every resync
//! period) feeds a de-duplicating queue of `namespace/name` keys; one worker takes keys in
//! order and calls [`Controller::reconcile`], which reads the current state through the
//! [`Client`] and moves it one step towards the desired state. A failed reconcile is retried
//! with back-off; a reconcile may ask to be called again later (minReadySeconds, deadlines).
//! No object cache: reads go to SQLite's page cache, so a controller costs a few kB of memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cairn_store::{EventKind, StoreError};
use serde_json::Value;
use tokio::sync::Notify;

use crate::client::{Client, Res};

/// What a controller reconciles: a namespace ("" for cluster-scoped) and a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Key {
        Key {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of an object (its namespace and name).
    pub fn of(object: &Value) -> Key {
        let meta = &object["metadata"];
        Key::new(
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
        )
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One watched resource and the keys an object of it concerns (its own key for the primary
/// resource; the owner's for owned objects).
pub struct Watched {
    pub resource: Res,
    pub keys: fn(&Value) -> Vec<Key>,
}

/// What a successful reconcile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Look again after this long (time-based conditions).
    After(Duration),
}

/// A controller: small, re-entrant, reading the world fresh on every call.
pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The primary resource first: a resync re-queues every object of it.
    fn watches(&self) -> Vec<Watched>;
    /// Move `key`'s object one step towards what it asks for. Must be safe to call any number
    /// of times, including for objects that no longer exist.
    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String>;
}

/// Keys waiting to be reconciled, each at most once.
#[derive(Default)]
struct Queue {
    inner: Mutex<(VecDeque<Key>, HashSet<Key>)>,
    ready: Notify,
}

impl Queue {
    fn push(&self, key: Key) {
        let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if q.1.insert(key.clone()) {
            q.0.push_back(key);
            self.ready.notify_one();
        }
    }

    async fn pop(&self) -> Key {
        loop {
            {
                let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(key) = q.0.pop_front() {
                    q.1.remove(&key);
                    return key;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// How often every primary object is reconciled even without events.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Runs `controller` until the task is dropped.
pub async fn run(client: Client, controller: Arc<dyn Controller>, resync: Duration) {
    let queue = Arc::new(Queue::default());
    for (i, watched) in controller.watches().into_iter().enumerate() {
        let primary = i == 0;
        tokio::spawn(watch(
            client.clone(),
            controller.name(),
            watched,
            queue.clone(),
            primary.then_some(resync),
        ));
    }
    let mut failures: HashMap<Key, u32> = HashMap::new();
    loop {
        let key = queue.pop().await;
        let (c, ctl, k) = (client.clone(), controller.clone(), key.clone());
        let result = tokio::task::spawn_blocking(move || ctl.reconcile(&c, &k))
            .await
            .unwrap_or_else(|e| Err(format!("reconcile panicked: {e}")));
        let later = match result {
            Ok(Outcome::Done) => {
                failures.remove(&key);
                None
            }
            Ok(Outcome::After(d)) => {
                failures.remove(&key);
                Some(d)
            }
            Err(e) => {
                let n = failures.entry(key.clone()).or_insert(0);
                *n += 1;
                let delay = Duration::from_millis(100u64 << (*n).min(9));
                eprintln!(
                    "cairn: {}: {key}: {e} (retry in {} ms)",
                    controller.name(),
                    delay.as_millis()
                );
                Some(delay)
            }
        };
        if let Some(delay) = later {
            let queue = queue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                queue.push(key);
            });
        }
    }
}

/// Feeds `queue` with the keys of `watched`'s objects: all of them at the start (and at every
/// `resync`, for the primary resource), then those of every change.
async fn watch(
    client: Client,
    controller: &'static str,
    watched: Watched,
    queue: Arc<Queue>,
    resync: Option<Duration>,
) {
    let Some(prefix) = client.prefix(watched.resource) else {
        eprintln!("cairn: {controller}: {:?} is not served", watched.resource);
        return;
    };
    let store = client.api().store.clone();
    loop {
        // List, then watch from the list's revision: no change is missed in between.
        let listed = {
            let store = store.clone();
            let prefix = prefix.clone();
            tokio::task::spawn_blocking(move || store.list(&prefix, None, 0, None)).await
        };
        let page = match listed {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                eprintln!("cairn: {controller}: listing {prefix}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        for kv in &page.items {
            if let Ok(object) = serde_json::from_slice::<Value>(&kv.value) {
                (watched.keys)(&object)
                    .into_iter()
                    .for_each(|k| queue.push(k));
            }
        }
        let mut events = match store.watch(&prefix, page.revision) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("cairn: {controller}: watching {prefix}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let deadline = resync.map(|d| tokio::time::Instant::now() + d);
        loop {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, events.recv()).await {
                    Ok(next) => next,
                    // Resync: list again.
                    Err(_) => break,
                },
                None => events.recv().await,
            };
            match next {
                Ok(Some(event)) => {
                    for bytes in std::iter::once(&event.value).chain(event.prev_value.as_ref()) {
                        if let Ok(object) = serde_json::from_slice::<Value>(bytes) {
                            (watched.keys)(&object)
                                .into_iter()
                                .for_each(|k| queue.push(k));
                        }
                        if event.kind == EventKind::Delete {
                            break;
                        }
                    }
                }
                // The store is closing.
                Ok(None) => return,
                Err(StoreError::Compacted { .. }) => break,
                Err(e) => {
                    eprintln!("cairn: {controller}: watch {prefix}: {e}");
                    break;
                }
            }
        }
    }
}

/// The key of an object's controlling owner of `kind`, if any.
pub fn owner_key(object: &Value, kind: &str) -> Vec<Key> {
    controller_of(object)
        .filter(|o| o["kind"] == kind)
        .map(|o| {
            Key::new(
                object["metadata"]["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
            )
        })
        .into_iter()
        .collect()
}

/// The owner reference marked `controller: true`.
pub fn controller_of(object: &Value) -> Option<&Value> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == Value::Bool(true))
}

/// An owner reference to `owner` that makes it the controller.
pub fn controller_ref(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether `object` is controlled by `owner` (same uid).
pub fn is_controlled_by(object: &Value, owner: &Value) -> bool {
    controller_of(object).is_some_and(|o| o["uid"] == owner["metadata"]["uid"])
}
