//! Garbage collection through `ownerReferences`, with Kubernetes' three propagation policies.
//!
//! - **Background** (the default): when an owner is gone, each dependent whose owners are all
//!   gone is deleted (in turn taking its own dependents); a dependent with another live owner
//!   only loses the dangling reference.
//! - **Foreground** (`propagationPolicy: Foreground`, the `foregroundDeletion` finalizer):
//!   the owner stays, marked for deletion, while its dependents are deleted in the foreground
//!   too; when none is left, the finalizer goes and with it the owner.
//! - **Orphan** (`propagationPolicy: Orphan`, the `orphan` finalizer): the dependents lose
//!   their reference to the owner and stay; then the finalizer goes.
//!
//! The collector follows the whole datastore's revision log: a deletion event names an owner
//! that is gone; an object written with one of the two finalizers while being deleted asks
//! for the foreground or orphan treatment. Dependents are found by scanning the owner's
//! namespace (every namespace for cluster-scoped owners), skipping objects whose stored bytes
//! do not contain the owner's uid before decoding them. A sweep at start and every
//! [`crate::runtime::RESYNC`] catches what happened while the server was down.

use std::time::Duration;

use cairn_store::{EventKind, StoreError};
use serde_json::{json, Value};

use crate::client::{Client, Res};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

const COMPONENT: &str = "garbage-collector";

/// Runs the collector until the runtime stops.
pub async fn run(client: Client) {
    let store = client.api().store.clone();
    loop {
        let start = match store.current_revision() {
            Ok(rev) => rev,
            Err(e) => {
                eprintln!("cairn: {COMPONENT}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        blocking(&client, sweep).await;
        let mut events = match store.watch("/registry/", start) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("cairn: {COMPONENT}: watch: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let resync = tokio::time::Instant::now() + crate::runtime::RESYNC;
        loop {
            let event = match tokio::time::timeout_at(resync, events.recv()).await {
                Err(_) => break,
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => return,
                Ok(Err(StoreError::Compacted { .. })) => break,
                Ok(Err(e)) => {
                    eprintln!("cairn: {COMPONENT}: watch: {e}");
                    break;
                }
            };
            let interesting = match event.kind {
                EventKind::Delete => true,
                EventKind::Put => {
                    contains(&event.value, FOREGROUND.as_bytes())
                        || contains(&event.value, b"\"orphan\"")
                }
            };
            if !interesting {
                continue;
            }
            let Ok(object) = serde_json::from_slice::<Value>(&event.value) else {
                continue;
            };
            let deleted = event.kind == EventKind::Delete;
            blocking(&client, move |c| {
                if deleted {
                    collect(c, &object)?;
                    waiting_owners(c, &object)
                } else {
                    finalize(c, &object)
                }
            })
            .await;
        }
    }
}

async fn blocking(
    client: &Client,
    work: impl FnOnce(&Client) -> Result<(), String> + Send + 'static,
) {
    let c = client.clone();
    match tokio::task::spawn_blocking(move || work(&c)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cairn: {COMPONENT}: {e}"),
        Err(e) => eprintln!("cairn: {COMPONENT}: {e}"),
    }
}

/// Looks at every object once: dependents of missing owners go; owners waiting on the
/// foreground or orphan finalizers get their turn.
pub fn sweep(client: &Client) -> Result<(), String> {
    for resource in client.api().catalog().iter() {
        if !resource.verbs.contains(&"list") {
            continue;
        }
        let page = client
            .api()
            .store
            .list(&resource.prefix(None), None, 0, None)
            .map_err(|e| e.to_string())?;
        for kv in page.items {
            if !contains(&kv.value, b"ownerReferences")
                && !contains(&kv.value, b"deletionTimestamp")
            {
                continue;
            }
            let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if object["metadata"].get("deletionTimestamp").is_some() {
                finalize(client, &object)?;
            }
            let (live, dead): (Vec<Value>, Vec<Value>) = owner_refs(&object)
                .into_iter()
                .partition(|r| owner_exists(client, &object, r));
            if dead.is_empty() {
                continue;
            }
            if live.is_empty() {
                delete_dependent(client, &object, false)?;
                continue;
            }
            let mut object = object;
            object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            for reference in &dead {
                let uid = reference["uid"].as_str().unwrap_or("");
                if let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
            }
            let uid = dead[0]["uid"].as_str().unwrap_or("").to_owned();
            drop_reference(client, object, &uid)?;
        }
    }
    Ok(())
}

/// `owner` was deleted: its dependents follow, or lose the reference if another owner lives.
pub fn collect(client: &Client, owner: &Value) -> Result<(), String> {
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("");
    if uid.is_empty() {
        return Ok(());
    }
    for dependent in dependents(client, owner)? {
        let live: Vec<Value> = owner_refs(&dependent)
            .into_iter()
            .filter(|r| r["uid"] != uid && owner_exists(client, &dependent, r))
            .collect();
        if live.is_empty() {
            delete_dependent(client, &dependent, false)?;
        } else {
            drop_reference(client, dependent, uid)?;
        }
    }
    Ok(())
}

/// A dependent is gone: an owner waiting in the foreground for its dependents may be done.
fn waiting_owners(client: &Client, dependent: &Value) -> Result<(), String> {
    let namespace = dependent["metadata"]["namespace"].as_str().unwrap_or("");
    for reference in owner_refs(dependent) {
        let Some(res) = resource_of(client, &reference) else {
            continue;
        };
        let name = reference["name"].as_str().unwrap_or("");
        if let Some(owner) = client
            .get(res, namespace, name)
            .map_err(|e| e.to_string())?
        {
            if owner["metadata"]["uid"] == reference["uid"]
                && finalizers(&owner).iter().any(|f| f == FOREGROUND)
            {
                finalize(client, &owner)?;
            }
        }
    }
    Ok(())
}

/// An owner being deleted with the foreground or orphan finalizer: do what it asks and, when
/// done, remove the finalizer.
pub fn finalize(client: &Client, owner: &Value) -> Result<(), String> {
    if owner["metadata"].get("deletionTimestamp").is_none() {
        return Ok(());
    }
    let finalizers = finalizers(owner);
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    if finalizers.iter().any(|f| f == ORPHAN) {
        for dependent in dependents(client, owner)? {
            drop_reference(client, dependent, &uid)?;
        }
        return remove_finalizer(client, owner, ORPHAN);
    }
    if finalizers.iter().any(|f| f == FOREGROUND) {
        let left = dependents(client, owner)?;
        for dependent in &left {
            if dependent["metadata"].get("deletionTimestamp").is_none() {
                delete_dependent(client, dependent, true)?;
            }
        }
        // Deleting them may have removed them already.
        if dependents(client, owner)?.is_empty() {
            return remove_finalizer(client, owner, FOREGROUND);
        }
    }
    Ok(())
}

/// Objects that name `owner` (by uid) among their owners.
fn dependents(client: &Client, owner: &Value) -> Result<Vec<Value>, String> {
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("");
    let namespace = owner["metadata"]["namespace"].as_str().unwrap_or("");
    let catalog = client.api().catalog();
    let mut out = Vec::new();
    for resource in catalog.iter() {
        if !resource.verbs.contains(&"list") || (!namespace.is_empty() && !resource.namespaced) {
            continue;
        }
        let prefix = if namespace.is_empty() {
            resource.prefix(None)
        } else {
            resource.prefix(Some(namespace))
        };
        let page = client
            .api()
            .store
            .list(&prefix, None, 0, None)
            .map_err(|e| e.to_string())?;
        for kv in page.items {
            if !contains(&kv.value, uid.as_bytes()) {
                continue;
            }
            let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if owner_refs(&object).iter().any(|r| r["uid"] == uid) {
                let mut object = object;
                object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                out.push(object);
            }
        }
    }
    Ok(out)
}

fn owner_refs(object: &Value) -> Vec<Value> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// The served resource of `apiVersion` and `kind` (of an object or an owner reference).
fn resource_of(client: &Client, of: &Value) -> Option<Res> {
    client
        .resource_of(
            of["apiVersion"].as_str().unwrap_or(""),
            of["kind"].as_str().unwrap_or(""),
        )
        .map(|(res, _)| res)
}

/// Whether the owner `reference` of `dependent` exists with that uid.
fn owner_exists(client: &Client, dependent: &Value, reference: &Value) -> bool {
    let Some(res) = resource_of(client, reference) else {
        // An owner of a kind nobody serves cannot be checked: keep the dependent.
        return true;
    };
    let namespace = dependent["metadata"]["namespace"].as_str().unwrap_or("");
    let name = reference["name"].as_str().unwrap_or("");
    match client.get(res, namespace, name) {
        Ok(Some(owner)) => owner["metadata"]["uid"] == reference["uid"],
        Ok(None) => false,
        Err(_) => true,
    }
}

fn delete_dependent(client: &Client, dependent: &Value, foreground: bool) -> Result<(), String> {
    let Some(res) = resource_of(client, dependent) else {
        return Ok(());
    };
    let meta = &dependent["metadata"];
    let mut options = json!({"preconditions": {"uid": meta["uid"]}});
    if foreground {
        options["propagationPolicy"] = json!("Foreground");
    }
    match client.delete(
        res,
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or(""),
        Some(&options),
    ) {
        // Replaced by a new object of the same name meanwhile: not ours.
        Ok(()) | Err(cairn_apiserver::ApiError::Conflict { .. }) => Ok(()),
        Err(e) => Err(format!(
            "deleting {} {}: {e}",
            dependent["kind"], meta["name"]
        )),
    }
}

fn drop_reference(client: &Client, mut dependent: Value, uid: &str) -> Result<(), String> {
    let Some(res) = resource_of(client, &dependent) else {
        return Ok(());
    };
    if let Some(refs) = dependent["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"] != uid);
    }
    let ns = dependent["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match client.update(res, &ns, &dependent) {
        Ok(_) | Err(cairn_apiserver::ApiError::NotFound(_)) => Ok(()),
        Err(e) => Err(format!(
            "releasing {} {}: {e}",
            dependent["kind"], dependent["metadata"]["name"]
        )),
    }
}

fn remove_finalizer(client: &Client, owner: &Value, finalizer: &str) -> Result<(), String> {
    let Some(res) = resource_of(client, owner) else {
        return Ok(());
    };
    let meta = &owner["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("");
    let name = meta["name"].as_str().unwrap_or("");
    // Fresh copy: the event's may be stale.
    let Some(mut current) = client.get(res, ns, name).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if current["metadata"]["uid"] != meta["uid"] {
        return Ok(());
    }
    if let Some(list) = current["metadata"]["finalizers"].as_array_mut() {
        list.retain(|f| f != finalizer);
    }
    match client.update(res, ns, &current) {
        Ok(_) | Err(cairn_apiserver::ApiError::NotFound(_)) => Ok(()),
        Err(e) => Err(format!("removing the {finalizer} finalizer of {name}: {e}")),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
