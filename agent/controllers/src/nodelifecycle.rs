//! Node lifecycle: a node that stops reporting is marked unknown, tainted, and its pods are
//! evicted once they no longer tolerate it, as Kubernetes' node lifecycle controller and taint
//! manager do.
//!
//! A node's last sign of life is the newest of its Lease's `renewTime` (in
//! `kube-node-lease`), its Ready condition's `lastHeartbeatTime` and its creation. After the
//! grace period without one, its conditions turn `Unknown` (`NodeStatusUnknown`, "Kubelet
//! stopped posting node status."). The Ready condition decides the taints: `Unknown` gives
//! `node.kubernetes.io/unreachable`, `False` gives `node.kubernetes.io/not-ready`, each as
//! `NoSchedule` and `NoExecute` (with `timeAdded`); `True` removes them. Pods bound to a node
//! with a `NoExecute` taint are deleted at once when they do not tolerate it, after their
//! `tolerationSeconds` when they do for a while (the API server gives every pod 300 s for both
//! taints, as kube-apiserver's DefaultTolerationSeconds does), and never when they tolerate it
//! without limit (DaemonSet pods).
//!
//! Evicted pods stay `Terminating` until their kubelet has stopped them; a node that never
//! comes back keeps them so until its Node is deleted, which deletes its pods at once (pod
//! garbage collection).
//!
//! The grace period is 90 s by default (a Cairn node renews its Lease every 30 s, for 90 s),
//! longer than Kubernetes' 40–50 s because a Lease write every 10 s costs flash wear.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::client::{Client, Res, NODES, PODS};
use crate::events;
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const LEASES: Res = Res::named("coordination.k8s.io", "leases");
/// Where node Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The default grace period.
pub const GRACE: Duration = Duration::from_secs(90);

/// Conditions that turn `Unknown` with Ready.
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The grace period: [`GRACE`], or `CAIRN_NODE_GRACE_SECONDS` (tests).
pub fn grace_from_env() -> Duration {
    std::env::var("CAIRN_NODE_GRACE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(GRACE, Duration::from_secs)
}

pub struct NodeLifecycle {
    /// How long a node may stay silent before it is unknown.
    pub grace: Duration,
}

impl Controller for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: NODES,
                keys: |node| {
                    vec![Key::new(
                        "",
                        node["metadata"]["name"].as_str().unwrap_or(""),
                    )]
                },
            },
            Watched {
                resource: LEASES,
                keys: |lease| {
                    if lease["metadata"]["namespace"] != LEASE_NAMESPACE {
                        return Vec::new();
                    }
                    vec![Key::new(
                        "",
                        lease["metadata"]["name"].as_str().unwrap_or(""),
                    )]
                },
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(mut node) = client
            .get(NODES, "", &key.name)
            .map_err(|e| e.to_string())?
        else {
            remove_orphans(client, &key.name)?;
            return Ok(Outcome::Done);
        };
        let now = Timestamp::now();
        let stamp = cairn_apiserver::meta::now();
        let lease = client
            .get(LEASES, LEASE_NAMESPACE, &key.name)
            .map_err(|e| e.to_string())?;
        let time = |v: &Value| v.as_str().and_then(|t| t.parse::<Timestamp>().ok());
        let last_seen = [
            lease.as_ref().and_then(|l| time(&l["spec"]["renewTime"])),
            condition(&node, "Ready").and_then(|c| time(&c["lastHeartbeatTime"])),
            time(&node["metadata"]["creationTimestamp"]),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        let silent = now.duration_since(last_seen).unsigned_abs();
        let mut wake = self
            .grace
            .checked_sub(silent)
            .map(|d| d + Duration::from_millis(100));

        // Silent too long: every condition becomes Unknown.
        let ready = condition(&node, "Ready").and_then(|c| c["status"].as_str().map(str::to_owned));
        if silent > self.grace && ready.as_deref() != Some("Unknown") {
            let mut conditions = node["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for kind in CONDITIONS {
                let unknown = json!({"type": kind, "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastTransitionTime": stamp,
                    "lastHeartbeatTime": last_seen.to_string()});
                match conditions.iter_mut().find(|c| c["type"] == kind) {
                    Some(c) => {
                        let heartbeat = c["lastHeartbeatTime"].clone();
                        *c = unknown;
                        if !heartbeat.is_null() {
                            c["lastHeartbeatTime"] = heartbeat;
                        }
                    }
                    None if kind == "Ready" => conditions.push(unknown),
                    None => {}
                }
            }
            node["status"]["conditions"] = json!(conditions);
            node = client
                .update_status(NODES, "", &node)
                .map_err(|e| format!("marking the node unknown: {e}"))?;
            events::record(
                client,
                &node,
                "Normal",
                "NodeNotReady",
                &format!("Node {} status is now: NodeNotReady", key.name),
                self.name(),
            );
        }

        // Taints follow Ready.
        let ready = condition(&node, "Ready").and_then(|c| c["status"].as_str().map(str::to_owned));
        let wanted = match ready.as_deref() {
            Some("True") => None,
            Some("False") => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        };
        let mut taints = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let before = taints.len();
        taints.retain(|t| {
            let ours = t["key"] == UNREACHABLE || t["key"] == NOT_READY;
            !ours || Some(t["key"].as_str().unwrap_or("")) == wanted
        });
        let mut changed = taints.len() != before;
        if let Some(key) = wanted {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints
                    .iter()
                    .any(|t| t["key"] == key && t["effect"] == effect)
                {
                    let mut taint = json!({"key": key, "effect": effect});
                    if effect == "NoExecute" {
                        taint["timeAdded"] = json!(stamp);
                    }
                    taints.push(taint);
                    changed = true;
                }
            }
        }
        if changed {
            node["spec"]["taints"] = if taints.is_empty() {
                Value::Null
            } else {
                json!(taints)
            };
            if node["spec"]["taints"].is_null() {
                if let Some(spec) = node["spec"].as_object_mut() {
                    spec.remove("taints");
                }
            }
            node = client
                .update(NODES, "", &node)
                .map_err(|e| format!("tainting the node: {e}"))?;
        }

        // Evict what no longer tolerates the node's NoExecute taints.
        let no_execute: Vec<Value> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["effect"] == "NoExecute")
            .cloned()
            .collect();
        if !no_execute.is_empty() {
            for pod in client.list(PODS, "").map_err(|e| e.to_string())? {
                if pod["spec"]["nodeName"] != key.name.as_str()
                    || pod["metadata"].get("deletionTimestamp").is_some()
                {
                    continue;
                }
                match eviction_due(&pod, &no_execute, now) {
                    Some(d) if d.is_zero() => evict(client, &pod, self.name())?,
                    Some(d) => wake = Some(wake.map_or(d, |w| w.min(d))),
                    None => {}
                }
            }
        }
        Ok(wake.map_or(Outcome::Done, Outcome::After))
    }
}

/// Pod garbage collection for a Node that is gone: its pods are deleted at once (grace 0),
/// terminating or not, since no kubelet is left to stop them and finish their deletion.
fn remove_orphans(client: &Client, node: &str) -> Result<(), String> {
    for pod in client.list(PODS, "").map_err(|e| e.to_string())? {
        if pod["spec"]["nodeName"] != node {
            continue;
        }
        let meta = &pod["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default();
        let name = meta["name"].as_str().unwrap_or_default();
        let options = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}});
        match client.delete(PODS, ns, name, Some(&options)) {
            // Replaced meanwhile by a pod of the same name: not the orphan.
            Ok(()) | Err(cairn_apiserver::error::ApiError::Conflict { .. }) => {}
            Err(e) => {
                return Err(format!(
                    "deleting pod {ns}/{name} of deleted node {node}: {e}"
                ))
            }
        }
    }
    Ok(())
}

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// How long until `pod` must go because of `taints` (zero: now), `None` if never.
fn eviction_due(pod: &Value, taints: &[Value], now: Timestamp) -> Option<Duration> {
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut due: Option<Duration> = None;
    for taint in taints {
        let matching: Vec<&Value> = tolerations
            .iter()
            .filter(|t| crate::scheduler::tolerates(std::slice::from_ref(t), taint))
            .collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The most generous matching toleration counts; one without a limit is forever.
        if matching.iter().any(|t| t["tolerationSeconds"].is_null()) {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t["tolerationSeconds"].as_i64())
            .max()
            .unwrap_or(0)
            .max(0);
        let added = taint["timeAdded"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);
        let left = added.as_second() + seconds - now.as_second();
        let left = Duration::from_secs(left.max(0) as u64);
        due = Some(due.map_or(left, |d| d.min(left)));
    }
    due
}

fn evict(client: &Client, pod: &Value, by: &str) -> Result<(), String> {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let name = meta["name"].as_str().unwrap_or_default();
    events::record(
        client,
        pod,
        "Normal",
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
        by,
    );
    client
        .delete_object(PODS, pod, None)
        .map_err(|e| format!("evicting pod {ns}/{name}: {e}"))
}
