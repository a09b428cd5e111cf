//! ControllerRevisions: the template history of DaemonSets and StatefulSets, as Kubernetes
//! keeps it, so `kubectl rollout history` lists it and `kubectl rollout undo` rolls back.
//!
//! Each distinct pod template of an owner is one `apps/v1 ControllerRevision` named
//! `<owner>-<template hash>`, labelled like the template plus `controller-revision-hash`,
//! controlled by the owner, whose `data` is the strategic merge patch that puts the template
//! back (`{"spec": {"template": {..., "$patch": "replace"}}}`: what kubectl applies on undo)
//! and whose `revision` numbers them. Going back to an older template renumbers its revision
//! as the newest, as Kubernetes does. Beyond `revisionHistoryLimit` (default 10) the oldest
//! revisions no live pod uses are deleted.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::client::{Client, Res};
use crate::runtime::{controller_ref, is_controlled_by};

pub const CONTROLLER_REVISIONS: Res = Res::named("apps", "controllerrevisions");

/// Records `owner`'s current template; returns its revision number. `in_use`: the template
/// hashes live pods still run (never pruned).
pub fn record(
    client: &Client,
    owner: &Value,
    hash: &str,
    in_use: &BTreeSet<String>,
) -> Result<i64, String> {
    let ns = owner["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = format!(
        "{}-{hash}",
        owner["metadata"]["name"].as_str().unwrap_or_default()
    );
    let mut revisions: Vec<Value> = client
        .list(CONTROLLER_REVISIONS, ns)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|r| is_controlled_by(r, owner))
        .collect();
    let newest = revisions
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .max()
        .unwrap_or(0);
    let number = match revisions
        .iter()
        .find(|r| r["metadata"]["name"] == name.as_str())
    {
        Some(r) if r["revision"].as_i64() == Some(newest) => newest,
        Some(r) => {
            // An older template is current again: it becomes the newest revision.
            let mut r = r.clone();
            r["revision"] = json!(newest + 1);
            client
                .update(CONTROLLER_REVISIONS, ns, &r)
                .map_err(|e| format!("renumbering revision {name}: {e}"))?;
            newest + 1
        }
        None => {
            let template = &owner["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[crate::daemonset::REVISION_HASH] = json!(hash);
            let mut data_template = template.clone();
            data_template["$patch"] = json!("replace");
            let mut metadata = json!({"name": name, "namespace": ns, "labels": labels,
                                      "ownerReferences": [controller_ref(owner)]});
            if let Some(cause) =
                owner["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str()
            {
                metadata["annotations"] = json!({"kubernetes.io/change-cause": cause});
            }
            let revision = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": metadata,
                "data": {"spec": {"template": data_template}},
                "revision": newest + 1});
            match client.create(CONTROLLER_REVISIONS, ns, &revision) {
                Ok(created) => revisions.push(created),
                Err(cairn_apiserver::ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(format!("recording revision {name}: {e}")),
            }
            newest + 1
        }
    };
    prune(client, owner, &mut revisions, &name, in_use)?;
    Ok(number)
}

/// Deletes the oldest revisions beyond the owner's history limit, keeping `current` and those
/// live pods use.
fn prune(
    client: &Client,
    owner: &Value,
    revisions: &mut [Value],
    current: &str,
    in_use: &BTreeSet<String>,
) -> Result<(), String> {
    let limit = owner["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let ns = owner["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut old: Vec<&Value> = revisions
        .iter()
        .filter(|r| r["metadata"]["name"] != current)
        .filter(|r| {
            let hash = r["metadata"]["labels"][crate::daemonset::REVISION_HASH]
                .as_str()
                .unwrap_or("");
            !in_use.contains(hash)
        })
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    let excess = old.len() - limit;
    for r in old.into_iter().take(excess) {
        let name = r["metadata"]["name"].as_str().unwrap_or_default();
        client
            .delete(CONTROLLER_REVISIONS, ns, name, None)
            .map_err(|e| format!("deleting old revision {name}: {e}"))?;
    }
    Ok(())
}
