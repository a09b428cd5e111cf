//! The DaemonSet controller: one pod of the template on every node that fits it.
//!
//! A node fits when the template's `nodeSelector`, required node affinity and tolerations
//! (plus the tolerations Kubernetes gives every daemon pod: not-ready, unreachable,
//! pressure, unschedulable) admit it; cordoned nodes keep their daemons. Each pod is pinned to
//! its node with a required `matchFields` node affinity on `metadata.name` and left to the
//! scheduler, as Kubernetes does. Pods on nodes that no longer fit, and duplicates on one
//! node, are deleted; a node whose daemon pod is still terminating gets its replacement once
//! that pod is gone. A changed template rolls out with `RollingUpdate`: at most
//! `maxUnavailable` (default 1) outdated pods are deleted at a time, and only while the
//! updated ones are available; with `OnDelete` a pod is replaced only when someone deletes
//! it. Pods carry the template hash in `controller-revision-hash`; templates are kept as
//! ControllerRevisions ([`crate::revisions`]) for `kubectl rollout history/undo`.
//!
//! Not done: `maxSurge`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{Client, Res, NODES, PODS};
use crate::events;
use crate::runtime::{is_controlled_by, owner_key, Controller, Key, Outcome, Watched};

pub const DAEMON_SETS: Res = Res::named("apps", "daemonsets");

/// The label holding the template hash a pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The key that means "every DaemonSet" (a node changed).
const ALL: &str = "*";

pub struct DaemonSets;

impl Controller for DaemonSets {
    fn name(&self) -> &'static str {
        "daemonset-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: DAEMON_SETS,
                keys: |ds| vec![Key::of(ds)],
            },
            Watched {
                resource: PODS,
                keys: |pod| owner_key(pod, "DaemonSet"),
            },
            Watched {
                resource: NODES,
                keys: |_| vec![Key::new("", ALL)],
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        if key.name == ALL {
            let mut soonest: Option<Duration> = None;
            for ds in client.list(DAEMON_SETS, "").map_err(|e| e.to_string())? {
                if let Outcome::After(d) = self.reconcile(client, &Key::of(&ds))? {
                    soonest = Some(soonest.map_or(d, |s| s.min(d)));
                }
            }
            return Ok(soonest.map_or(Outcome::Done, Outcome::After));
        }
        let Some(ds) = client
            .get(DAEMON_SETS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if ds["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        let nodes = client.list(NODES, "").map_err(|e| e.to_string())?;
        let (pods, terminating): (Vec<Value>, Vec<Value>) = client
            .list(PODS, &key.namespace)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| is_controlled_by(p, &ds))
            .filter(|p| {
                crate::pods::is_active(p) || p["metadata"].get("deletionTimestamp").is_some()
            })
            .partition(|p| p["metadata"].get("deletionTimestamp").is_none());
        // A node whose daemon pod is still stopping gets its replacement once it is gone
        // (the two would share host ports and paths).
        let stopping: std::collections::BTreeSet<String> =
            terminating.iter().map(target_node).collect();
        let template = daemon_template(&ds);
        let hash = crate::deployment::template_hash(&ds["spec"]["template"]);
        let in_use: std::collections::BTreeSet<String> = pods
            .iter()
            .filter_map(|p| {
                p["metadata"]["labels"][REVISION_HASH]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        crate::revisions::record(client, &ds, &hash, &in_use)?;
        let min_ready = Duration::from_secs(ds["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
        let now = jiff::Timestamp::now();

        // The pods on each node ("" = not placed yet: the node is in their affinity).
        let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for pod in &pods {
            by_node.entry(target_node(pod)).or_default().push(pod);
        }
        let wanted: Vec<&str> = nodes
            .iter()
            .filter(|n| crate::scheduler::node_matches(&template["spec"], n).is_ok())
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();

        let mut delete: Vec<&Value> = Vec::new();
        let mut create: Vec<&str> = Vec::new();
        for (node, on_node) in &by_node {
            if !wanted.contains(&node.as_str()) {
                delete.extend(on_node.iter().copied());
            } else if on_node.len() > 1 {
                // Keep the oldest; the rest are duplicates.
                let mut sorted = on_node.clone();
                sorted.sort_by_key(|p| {
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                });
                delete.extend(sorted.into_iter().skip(1));
            }
        }
        for node in &wanted {
            if !by_node.contains_key(*node) && !stopping.contains(*node) {
                create.push(node);
            }
        }

        // Rolling update: replace outdated pods, at most maxUnavailable missing at a time.
        let rolling = ds["spec"]["updateStrategy"]["type"].as_str() != Some("OnDelete");
        let desired = wanted.len() as i64;
        let max_unavailable = crate::deployment::int_or_percent(
            &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            desired,
            false,
        )
        .unwrap_or(1)
        .max(1);
        let available = |p: &Value| {
            matches!(
                crate::pods::state(p, min_ready, now),
                crate::pods::PodState::Available
            )
        };
        let on_wanted: Vec<&Value> = wanted
            .iter()
            .filter_map(|n| by_node.get(*n).and_then(|ps| ps.first().copied()))
            .collect();
        let unavailable =
            (desired - on_wanted.iter().filter(|p| available(p)).count() as i64).max(0);
        if rolling {
            let mut budget = max_unavailable - unavailable;
            // Unavailable outdated pods first: replacing them costs nothing.
            let mut outdated: Vec<&Value> = on_wanted
                .iter()
                .copied()
                .filter(|p| p["metadata"]["labels"][REVISION_HASH] != hash.as_str())
                .collect();
            outdated.sort_by_key(|p| available(p));
            for pod in outdated {
                if !available(pod) {
                    delete.push(pod);
                } else if budget > 0 {
                    delete.push(pod);
                    budget -= 1;
                }
            }
        }

        let ns = key.namespace.as_str();
        for pod in &delete {
            let name = pod["metadata"]["name"].as_str().unwrap_or("");
            client
                .delete_object(PODS, pod, None)
                .map_err(|e| format!("deleting pod {name}: {e}"))?;
            events::record(
                client,
                &ds,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {name}"),
                self.name(),
            );
        }
        for node in &create {
            let pod = pod_for(&ds, &template, &hash, node);
            let created = client
                .create(PODS, ns, &pod)
                .map_err(|e| format!("creating a pod for node {node}: {e}"))?;
            events::record(
                client,
                &ds,
                "Normal",
                "SuccessfulCreate",
                &format!(
                    "Created pod: {}",
                    created["metadata"]["name"].as_str().unwrap_or("")
                ),
                self.name(),
            );
        }

        // Status, from what is on the nodes now (pods just created count as scheduled).
        let current = wanted.iter().filter(|n| by_node.contains_key(**n)).count() as i64;
        let misscheduled = by_node
            .keys()
            .filter(|n| !n.is_empty() && !wanted.contains(&n.as_str()))
            .count();
        let ready = on_wanted
            .iter()
            .filter(|p| crate::pods::ready_since(p).is_some())
            .count() as i64;
        let available_now = on_wanted.iter().filter(|p| available(p)).count() as i64;
        let updated = on_wanted
            .iter()
            .filter(|p| p["metadata"]["labels"][REVISION_HASH] == hash.as_str())
            .count() as i64
            + create.len() as i64;
        let status = json!({
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current + create.len() as i64,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available_now,
            "numberUnavailable": desired - available_now,
            "updatedNumberScheduled": updated,
            "observedGeneration": ds["metadata"]["generation"],
        });
        crate::replicaset::write_status(client, DAEMON_SETS, ds.clone(), status)?;
        // minReadySeconds: look again when a ready pod becomes available.
        Ok(if min_ready.is_zero() || available_now == ready {
            Outcome::Done
        } else {
            Outcome::After(Duration::from_secs(1).max(min_ready / 4))
        })
    }
}

/// The node a daemon pod is for: where it is bound, else the name in its node affinity.
fn target_node(pod: &Value) -> String {
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return node.to_owned();
    }
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["matchFields"].as_array().into_iter().flatten())
        .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
        .and_then(|f| f["values"][0].as_str())
        .unwrap_or("")
        .to_owned()
}

/// The template with the tolerations every daemon pod gets.
fn daemon_template(ds: &Value) -> Value {
    let mut template = ds["spec"]["template"].clone();
    let mut tolerations = template["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut add = |key: &str, effect: &str| {
        if !tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if template["spec"]["hostNetwork"] == Value::Bool(true) {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    template["spec"]["tolerations"] = json!(tolerations);
    template
}

/// The pod for `node`, pinned to it by node affinity.
fn pod_for(ds: &Value, template: &Value, hash: &str, node: &str) -> Value {
    let mut owner = ds.clone();
    owner["spec"]["template"] = template.clone();
    let mut pod = crate::pods::from_template(&owner);
    pod["metadata"]["labels"][REVISION_HASH] = json!(hash);
    let pin =
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let affinity = &mut pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    match affinity.as_array_mut() {
        // Every term must also pin the node (terms are ORed).
        Some(terms) if !terms.is_empty() => {
            for term in terms.iter_mut() {
                term["matchFields"] = pin["matchFields"].clone();
            }
        }
        _ => *affinity = json!([pin]),
    }
    pod
}
