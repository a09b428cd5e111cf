//! Watches: newline-delimited JSON `WatchEvent`s streamed from a store watch.
//!
//! Without a `resourceVersion` (or with "0") the watch starts with a synthetic `ADDED` for every
//! matching object, as kube-apiserver does, then follows changes from that snapshot. With a
//! resourceVersion it resumes after it; one that was compacted yields a single `ERROR` event
//! with a 410 `Expired` Status, which tells clients to list again. Objects moving into or out
//! of a label selector arrive as `ADDED` / `DELETED`.
//!
//! `sendInitialEvents=true` (the streaming list kubectl 1.35 uses for `wait` and `get -w`)
//! always starts with the current objects (which satisfies `resourceVersionMatch=NotOlderThan`
//! for any resourceVersion the client can have seen) and marks their end with a `BOOKMARK`
//! annotated `k8s.io/initial-events-end: "true"`.

use std::time::Duration;

use cairn_store::{Event, EventKind, KeyValue, StoreError, Watch};
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{decode_object, Api};
use crate::error::ApiError;
use crate::request::Action;

/// Timing of watches; tests shorten it.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Send a BOOKMARK after this long without events (when the client allows bookmarks).
    pub bookmark_interval: Duration,
    /// End watches without `timeoutSeconds` after this long (clients re-watch).
    pub default_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            bookmark_interval: Duration::from_secs(60),
            default_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Initial objects, their snapshot revision and the store watch that follows it.
type Setup = (Vec<Value>, u64, Result<Watch, StoreError>);

/// Start a watch: returns the stream of encoded lines. Runs its blocking start-up (list, store
/// watch) on the blocking pool, then a task that ends when the client goes away.
pub async fn start(
    api: Api,
    action: Action,
    config: WatchConfig,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let initial_events_end = action.options.send_initial_events;
    let from = if initial_events_end {
        None
    } else {
        action.options.revision()?
    };
    let (tx, rx) = mpsc::channel(64);
    let setup_action = action.clone();
    let setup = tokio::task::spawn_blocking(move || -> Result<Setup, ApiError> {
        let prefix = setup_action
            .resource
            .prefix(setup_action.namespace.as_deref());
        match from {
            None => {
                let mut all = setup_action.clone();
                all.options.limit = 0;
                all.options.continue_token = None;
                // client-go's streaming list asks for NotOlderThan without a resourceVersion
                // (kube-apiserver allows that for watches): the current objects, as a list
                // without a match reads them.
                if all.options.resource_version_match
                    == Some(crate::request::ResourceVersionMatch::NotOlderThan)
                    && initial_events_end
                {
                    all.options.resource_version_match = None;
                }
                let page = api.list_items(&all)?;
                let rev = page.revision;
                Ok((page.items, rev, api.store.watch(&prefix, rev)))
            }
            Some(rev) => Ok((Vec::new(), rev, api.store.watch(&prefix, rev))),
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("watch set-up failed: {e}")))??;
    let (initial, start_rev, watch) = setup;
    tokio::spawn(async move {
        let mut stream = Stream {
            tx,
            action,
            last_rev: start_rev,
        };
        for obj in initial {
            if !stream.send("ADDED", obj).await {
                return;
            }
        }
        if initial_events_end && !stream.initial_events_end().await {
            return;
        }
        match watch {
            Ok(watch) => stream.follow(watch, config).await,
            Err(e) => stream.error(e).await,
        }
    });
    Ok(rx)
}

struct Stream {
    tx: mpsc::Sender<Bytes>,
    action: Action,
    last_rev: u64,
}

impl Stream {
    async fn follow(&mut self, mut watch: Watch, config: WatchConfig) {
        let timeout = self
            .action
            .options
            .timeout_seconds
            .map_or(config.default_timeout, Duration::from_secs);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let bookmark = tokio::time::sleep(config.bookmark_interval);
            tokio::select! {
                () = &mut deadline => return,
                () = self.tx.closed() => return,
                () = bookmark, if self.action.options.allow_watch_bookmarks => {
                    if !self.bookmark().await {
                        return;
                    }
                }
                event = watch.recv() => match event {
                    Ok(Some(event)) => {
                        if !self.event(event).await {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => return self.error(e).await,
                },
            }
        }
    }

    /// Translate one store event; false once the client is gone.
    async fn event(&mut self, event: Event) -> bool {
        self.last_rev = event.mod_revision;
        let Ok(obj) = decode_object(&KeyValue {
            key: event.key.clone(),
            value: event.value.clone(),
            mod_revision: event.mod_revision,
            create_revision: event.create_revision,
        }) else {
            return true;
        };
        let opts = &self.action.options;
        let selected = |o: &Value| {
            opts.label_selector.matches_object(o) && opts.field_selector.matches_object(o)
        };
        let was = event
            .prev_value
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .is_some_and(|o| selected(&o));
        let is = selected(&obj);
        let kind = match (event.kind, was, is) {
            (EventKind::Delete, true, _) => "DELETED",
            (EventKind::Put, false, true) => "ADDED",
            (EventKind::Put, true, true) => "MODIFIED",
            (EventKind::Put, true, false) => "DELETED",
            _ => return true,
        };
        self.send(kind, obj).await
    }

    async fn bookmark(&mut self) -> bool {
        self.bookmark_with(None).await
    }

    /// The bookmark that ends the initial events of a streaming list.
    async fn initial_events_end(&mut self) -> bool {
        self.bookmark_with(Some(json!({"k8s.io/initial-events-end": "true"})))
            .await
    }

    async fn bookmark_with(&mut self, annotations: Option<Value>) -> bool {
        let r = self.action.resource;
        let mut obj = json!({
            "kind": r.kind,
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": self.last_rev.to_string()},
        });
        if let Some(annotations) = annotations {
            obj["metadata"]["annotations"] = annotations;
        }
        self.line(json!({"type": "BOOKMARK", "object": obj})).await
    }

    async fn error(&mut self, err: StoreError) {
        let status = ApiError::from(err).status();
        let status = serde_json::to_value(status).unwrap_or(Value::Null);
        self.line(json!({"type": "ERROR", "object": status})).await;
    }

    async fn send(&mut self, kind: &str, mut obj: Value) -> bool {
        crate::crd::set_api_version(self.action.resource, &mut obj);
        let obj = if self.action.as_table {
            crate::table::to_table(self.action.resource, &obj)
        } else {
            obj
        };
        self.line(json!({"type": kind, "object": obj})).await
    }

    async fn line(&mut self, value: Value) -> bool {
        let mut bytes = serde_json::to_vec(&value).expect("JSON values serialise");
        bytes.push(b'\n');
        self.tx.send(Bytes::from(bytes)).await.is_ok()
    }
}
