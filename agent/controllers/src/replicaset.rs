//! The ReplicaSet controller: keeps `spec.replicas` active pods made from the template.
//!
//! Pods a ReplicaSet controls carry an owner reference to it (`controller: true`); matching
//! pods without a controller are adopted, controlled pods that stopped matching are released.
//! Active pods are those neither terminated (`Succeeded`/`Failed`) nor being deleted. Too
//! few: pods are created (`generateName` `<rs>-`); too many: the least useful go first
//! (unscheduled, then pending, then not ready, then the newest), as kube-controller-manager
//! ranks them. The status counts replicas, fully labelled, ready and available ones
//! (available: ready for `minReadySeconds`).

use std::time::Duration;

use cairn_apiserver::selector::LabelSelector;
use serde_json::{json, Value};

use crate::client::{Client, PODS, REPLICA_SETS};
use crate::events;
use crate::pods::{self, PodState};
use crate::runtime::{controller_of, controller_ref, is_controlled_by, owner_key};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub struct ReplicaSets;

impl Controller for ReplicaSets {
    fn name(&self) -> &'static str {
        "replicaset-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: REPLICA_SETS,
                keys: |rs| vec![Key::of(rs)],
            },
            Watched {
                resource: PODS,
                keys: |pod| owner_key(pod, "ReplicaSet"),
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(rs) = client
            .get(REPLICA_SETS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if rs["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        let selector = LabelSelector::from_json(&rs["spec"]["selector"])
            .map_err(|e| format!("spec.selector: {}", e.0))?;
        let all = client
            .list(PODS, &key.namespace)
            .map_err(|e| e.to_string())?;
        let mut owned = Vec::new();
        for pod in all {
            let matches = !selector.0.is_empty() && selector.matches_object(&pod);
            let mine = is_controlled_by(&pod, &rs);
            if mine && !matches {
                release(client, &pod)?;
            } else if mine {
                owned.push(pod);
            } else if matches
                && controller_of(&pod).is_none()
                && pod["metadata"].get("deletionTimestamp").is_none()
            {
                owned.push(adopt(client, &rs, pod)?);
            }
        }
        let mut active: Vec<Value> = owned.into_iter().filter(pods::is_active).collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if active.len() < want {
            let n = want - active.len();
            for _ in 0..n {
                let pod = client
                    .create(PODS, &key.namespace, &pods::from_template(&rs))
                    .map_err(|e| format!("creating a pod: {e}"))?;
                events::record(
                    client,
                    &rs,
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "Created pod: {}",
                        pod["metadata"]["name"].as_str().unwrap_or("")
                    ),
                    self.name(),
                );
                active.push(pod);
            }
        } else if active.len() > want {
            // The least useful first.
            active.sort_by_key(pods::deletion_rank);
            for pod in active.drain(..active.len() - want) {
                let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let precondition = json!({"preconditions": {"uid": pod["metadata"]["uid"]}});
                client
                    .delete(PODS, &key.namespace, &name, Some(&precondition))
                    .map_err(|e| format!("deleting pod {name}: {e}"))?;
                events::record(
                    client,
                    &rs,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                    self.name(),
                );
            }
        }
        let min_ready = Duration::from_secs(rs["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
        let now = jiff::Timestamp::now();
        let template_labels = rs["spec"]["template"]["metadata"]["labels"].clone();
        let mut ready = 0;
        let mut available = 0;
        let mut labelled = 0;
        let mut recheck = None;
        for pod in &active {
            match pods::state(pod, min_ready, now) {
                PodState::Available => {
                    ready += 1;
                    available += 1;
                }
                PodState::ReadyFor(left) => {
                    ready += 1;
                    recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
                }
                PodState::NotReady => {}
            }
            let labels = &pod["metadata"]["labels"];
            if template_labels
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| &labels[k] == v)
            {
                labelled += 1;
            }
        }
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": labelled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs["metadata"]["generation"],
        });
        write_status(client, REPLICA_SETS, rs, status)?;
        Ok(recheck.map_or(Outcome::Done, |d| {
            Outcome::After(d + Duration::from_millis(100))
        }))
    }
}

/// Makes `owner` the controller of `object` (which has none).
pub fn adopt_into(object: &mut Value, owner: &Value) {
    let refs = &mut object["metadata"]["ownerReferences"];
    if !refs.is_array() {
        *refs = json!([]);
    }
    if let Some(list) = refs.as_array_mut() {
        list.push(controller_ref(owner));
    }
}

fn adopt(client: &Client, rs: &Value, mut pod: Value) -> Result<Value, String> {
    adopt_into(&mut pod, rs);
    let ns = rs["metadata"]["namespace"].as_str().unwrap_or("");
    client
        .update(PODS, ns, &pod)
        .map_err(|e| format!("adopting a pod: {e}"))
}

/// Removes the controller reference from a pod that no longer matches.
fn release(client: &Client, pod: &Value) -> Result<(), String> {
    let mut pod = pod.clone();
    if let Some(list) = pod["metadata"]["ownerReferences"].as_array_mut() {
        list.retain(|o| o["controller"] != Value::Bool(true));
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    client
        .update(PODS, &ns, &pod)
        .map(drop)
        .map_err(|e| format!("releasing a pod: {e}"))
}

/// Writes `status` into `object` through `/status` if it changed.
pub fn write_status(
    client: &Client,
    res: crate::client::Res,
    mut object: Value,
    status: Value,
) -> Result<(), String> {
    let mut merged = object["status"].clone();
    if !merged.is_object() {
        merged = json!({});
    }
    for (k, v) in status.as_object().into_iter().flatten() {
        merged[k] = v.clone();
    }
    if merged == object["status"] {
        return Ok(());
    }
    object["status"] = merged;
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    client
        .update_status(res, &ns, &object)
        .map(drop)
        .map_err(|e| format!("writing the status: {e}"))
}
