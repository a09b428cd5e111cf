//! The Deployment controller: one ReplicaSet per pod template, rolled from the old ones to the
//! new one as the strategy says.
//!
//! - The template's hash (FNV-1a of its canonical JSON, in Kubernetes' safe alphabet) names
//!   the new ReplicaSet (`<deployment>-<hash>`) and becomes its `pod-template-hash` label and
//!   selector term, so the ReplicaSets never fight over pods.
//! - `RollingUpdate`: the new ReplicaSet grows while all of them together stay within
//!   `replicas + maxSurge`; old ones shrink (unhealthy pods first) while at least
//!   `replicas - maxUnavailable` pods stay available. `Recreate`: old ones go to zero and
//!   their pods away before the new one grows.
//! - Every ReplicaSet carries `deployment.kubernetes.io/revision`; a template that matches an
//!   old ReplicaSet (`kubectl rollout undo`) brings that one back under the next revision.
//!   Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` (10) are deleted.
//! - `spec.paused` stops rollouts (scaling still happens); the status carries the counts and
//!   the `Available` and `Progressing` conditions `kubectl rollout status` reads, including
//!   `ProgressDeadlineExceeded` after `progressDeadlineSeconds` without progress.

use std::time::Duration;

use cairn_apiserver::selector::LabelSelector;
use serde_json::{json, Value};

use crate::client::{Client, DEPLOYMENTS, REPLICA_SETS};
use crate::events;
use crate::replicaset::{adopt_into, write_status};
use crate::runtime::{controller_of, controller_ref, is_controlled_by, owner_key};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

pub struct Deployments;

impl Controller for Deployments {
    fn name(&self) -> &'static str {
        "deployment-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: DEPLOYMENTS,
                keys: |d| vec![Key::of(d)],
            },
            Watched {
                resource: REPLICA_SETS,
                keys: |rs| owner_key(rs, "Deployment"),
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(d) = client
            .get(DEPLOYMENTS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if d["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        Rollout::new(client, d, self.name())?.run()
    }
}

/// One reconcile of one Deployment.
struct Rollout<'a> {
    client: &'a Client,
    component: &'static str,
    d: Value,
    ns: String,
    desired: i64,
    /// The ReplicaSet of the current template, once it exists.
    new: Option<Value>,
    /// The others, oldest revision first.
    old: Vec<Value>,
}

impl<'a> Rollout<'a> {
    fn new(client: &'a Client, d: Value, component: &'static str) -> Result<Rollout<'a>, String> {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        let selector = LabelSelector::from_json(&d["spec"]["selector"])
            .map_err(|e| format!("spec.selector: {}", e.0))?;
        let mut mine = Vec::new();
        for mut rs in client.list(REPLICA_SETS, &ns).map_err(|e| e.to_string())? {
            let matches = !selector.0.is_empty() && selector.matches_object(&rs);
            if is_controlled_by(&rs, &d) && matches {
                mine.push(rs);
            } else if matches
                && controller_of(&rs).is_none()
                && rs["metadata"].get("deletionTimestamp").is_none()
            {
                adopt_into(&mut rs, &d);
                mine.push(
                    client
                        .update(REPLICA_SETS, &ns, &rs)
                        .map_err(|e| format!("adopting a replica set: {e}"))?,
                );
            }
        }
        let template = &d["spec"]["template"];
        let (new, mut old): (Vec<Value>, Vec<Value>) = mine
            .into_iter()
            .partition(|rs| same_template(&rs["spec"]["template"], template));
        old.sort_by_key(revision);
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        Ok(Rollout {
            client,
            component,
            ns,
            desired,
            new: new.into_iter().next(),
            old,
            d,
        })
    }

    fn run(mut self) -> Result<Outcome, String> {
        let paused = self.d["spec"]["paused"] == Value::Bool(true);
        if !paused {
            self.ensure_new()?;
            if self.d["spec"]["strategy"]["type"] == "Recreate" {
                self.recreate()?;
            } else {
                self.rolling()?;
            }
            self.cleanup()?;
        } else if let (Some(new), true) = (self.new.clone(), self.old.iter().all(|o| spec(o) == 0))
        {
            // Paused, but scaling still applies to a finished rollout.
            if spec(&new) != self.desired {
                self.scale(new, self.desired)?;
            }
        }
        self.status(paused)
    }

    /// Creates the ReplicaSet of the current template, or gives a returning one (rollback)
    /// the next revision.
    fn ensure_new(&mut self) -> Result<(), String> {
        let next = self.old.iter().map(revision).max().unwrap_or(0) + 1;
        if let Some(new) = &self.new {
            // An old template again (`rollout undo`): its ReplicaSet is the newest revision.
            if revision(new) < next {
                let mut rs = new.clone();
                rs["metadata"]["annotations"][REVISION] = json!(next.to_string());
                copy_change_cause(&self.d, &mut rs);
                self.new = Some(self.update(rs)?);
            }
            return Ok(());
        }
        let template = &self.d["spec"]["template"];
        let hash = template_hash(template);
        let name = format!(
            "{}-{hash}",
            self.d["metadata"]["name"].as_str().unwrap_or("")
        );
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = self.d["spec"]["selector"].clone();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let surge = self.surge_unavailable().0;
        let old_total: i64 = self.old.iter().map(spec).sum();
        let replicas = if self.old.is_empty() {
            self.desired
        } else if self.d["spec"]["strategy"]["type"] == "Recreate" {
            0
        } else {
            (self.desired + surge - old_total).clamp(0, self.desired)
        };
        let mut rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": rs_template["metadata"]["labels"],
                "annotations": {REVISION: next.to_string()},
                "ownerReferences": [controller_ref(&self.d)],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": self.d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector,
                "template": rs_template,
            },
        });
        copy_change_cause(&self.d, &mut rs);
        let created = match self.client.create(REPLICA_SETS, &self.ns, &rs) {
            Ok(created) => created,
            Err(cairn_apiserver::ApiError::AlreadyExists(_)) => {
                return Err(format!(
                    "replica set {name} exists but is not this deployment's template; retrying"
                ))
            }
            Err(e) => return Err(format!("creating replica set {name}: {e}")),
        };
        events::record(
            self.client,
            &self.d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled up replica set {name} from 0 to {replicas}"),
            self.component,
        );
        self.new = Some(created);
        Ok(())
    }

    /// `maxSurge` and `maxUnavailable` as numbers (surge rounds up, unavailable down; both
    /// zero would block, so unavailable is then 1).
    fn surge_unavailable(&self) -> (i64, i64) {
        let ru = &self.d["spec"]["strategy"]["rollingUpdate"];
        let surge = int_or_percent(&ru["maxSurge"], self.desired, true).unwrap_or(
            // 25%, rounded up.
            (self.desired * 25 + 99) / 100,
        );
        let unavailable = int_or_percent(&ru["maxUnavailable"], self.desired, false)
            .unwrap_or(self.desired * 25 / 100);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    fn rolling(&mut self) -> Result<(), String> {
        let Some(new) = self.new.clone() else {
            return Ok(());
        };
        let (surge, unavailable) = self.surge_unavailable();
        // Grow (or shrink) the new ReplicaSet within the surge.
        let total: i64 = self.old.iter().map(spec).sum::<i64>() + spec(&new);
        let target = if spec(&new) > self.desired {
            self.desired
        } else {
            (spec(&new) + (self.desired + surge - total).max(0)).min(self.desired)
        };
        let new = if target != spec(&new) {
            self.scale(new, target)?
        } else {
            new
        };
        // Shrink the old ones while enough pods stay available.
        let min_available = self.desired - unavailable;
        let total: i64 = self.old.iter().map(spec).sum::<i64>() + spec(&new);
        let new_unavailable = (spec(&new) - available(&new)).max(0);
        let mut budget = total - min_available - new_unavailable;
        let mut old = std::mem::take(&mut self.old);
        // Unhealthy old pods first: they count for nothing.
        for rs in old.iter_mut() {
            let unhealthy = (spec(rs) - available(rs)).max(0).min(budget.max(0));
            if unhealthy > 0 {
                let to = spec(rs) - unhealthy;
                *rs = self.scale(rs.clone(), to)?;
                budget -= unhealthy;
            }
        }
        let mut available_total: i64 = old
            .iter()
            .map(|rs| available(rs).min(spec(rs)))
            .sum::<i64>()
            + available(&new);
        for rs in old.iter_mut() {
            let can = (available_total - min_available).min(spec(rs));
            if can > 0 {
                let to = spec(rs) - can;
                *rs = self.scale(rs.clone(), to)?;
                available_total -= can;
            }
        }
        self.old = old;
        self.new = Some(new);
        Ok(())
    }

    fn recreate(&mut self) -> Result<(), String> {
        let mut old = std::mem::take(&mut self.old);
        for rs in old.iter_mut() {
            if spec(rs) > 0 {
                *rs = self.scale(rs.clone(), 0)?;
            }
        }
        let pods_left = old
            .iter()
            .any(|rs| rs["status"]["replicas"].as_i64().unwrap_or(0) > 0);
        self.old = old;
        if let Some(new) = self.new.clone() {
            if !pods_left && spec(&new) != self.desired {
                self.new = Some(self.scale(new, self.desired)?);
            }
        }
        Ok(())
    }

    /// Deletes old, empty ReplicaSets beyond the history limit.
    fn cleanup(&mut self) -> Result<(), String> {
        let limit = self.d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0) as usize;
        let empty: Vec<&Value> = self
            .old
            .iter()
            .filter(|rs| spec(rs) == 0 && rs["status"]["replicas"].as_i64().unwrap_or(0) == 0)
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        let doomed: Vec<String> = empty[..empty.len() - limit]
            .iter()
            .map(|rs| rs["metadata"]["name"].as_str().unwrap_or("").to_owned())
            .collect();
        for name in &doomed {
            self.client
                .delete(REPLICA_SETS, &self.ns, name, None)
                .map_err(|e| format!("deleting old replica set {name}: {e}"))?;
        }
        self.old
            .retain(|rs| !doomed.iter().any(|n| rs["metadata"]["name"] == n.as_str()));
        Ok(())
    }

    fn scale(&self, mut rs: Value, to: i64) -> Result<Value, String> {
        let from = spec(&rs);
        rs["spec"]["replicas"] = json!(to);
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            json!(self.desired.to_string());
        let name = rs["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let updated = self.update(rs)?;
        let way = if to > from { "up" } else { "down" };
        events::record(
            self.client,
            &self.d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {way} replica set {name} from {from} to {to}"),
            self.component,
        );
        Ok(updated)
    }

    fn update(&self, rs: Value) -> Result<Value, String> {
        self.client
            .update(REPLICA_SETS, &self.ns, &rs)
            .map_err(|e| format!("updating replica set {}: {e}", rs["metadata"]["name"]))
    }

    fn status(mut self, paused: bool) -> Result<Outcome, String> {
        // The Deployment names its current revision too (`kubectl rollout undo` patches it).
        if let Some(rev) = self.new.as_ref().map(|rs| revision(rs).to_string()) {
            if self.d["metadata"]["annotations"][REVISION] != rev.as_str() {
                let mut d = self.d.clone();
                d["metadata"]["annotations"][REVISION] = json!(rev);
                self.d = self
                    .client
                    .update(DEPLOYMENTS, &self.ns, &d)
                    .map_err(|e| format!("annotating the revision: {e}"))?;
            }
        }
        let all: Vec<&Value> = self.new.iter().chain(&self.old).collect();
        let sum = |field: &str| -> i64 {
            all.iter()
                .map(|rs| rs["status"][field].as_i64().unwrap_or(0))
                .sum()
        };
        let replicas = sum("replicas");
        let ready = sum("readyReplicas");
        let available_now = sum("availableReplicas");
        let updated = self
            .new
            .as_ref()
            .map_or(0, |rs| rs["status"]["replicas"].as_i64().unwrap_or(0));
        let (_, unavailable) = self.surge_unavailable();
        let min_available = self.desired - unavailable;
        let new_name = self
            .new
            .as_ref()
            .and_then(|rs| rs["metadata"]["name"].as_str())
            .unwrap_or("")
            .to_owned();
        let complete = updated == self.desired
            && replicas == updated
            && available_now >= self.desired
            && self.new.as_ref().is_some_and(|rs| {
                rs["status"]["observedGeneration"] == rs["metadata"]["generation"]
            });
        let now = cairn_apiserver::meta::now();
        let old_conditions = self.d["status"]["conditions"].clone();
        let counts_changed = [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ]
        .iter()
        .zip([replicas, updated, ready, available_now])
        .any(|(f, v)| self.d["status"][f].as_i64() != Some(v));
        let available_condition = if available_now >= min_available {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_owned(),
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".to_owned(),
            )
        };
        let deadline = Duration::from_secs(
            self.d["spec"]["progressDeadlineSeconds"]
                .as_u64()
                .unwrap_or(600),
        );
        let mut recheck = None;
        let progressing = if paused {
            (
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".to_owned(),
            )
        } else if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else {
            let last_progress = condition(&old_conditions, "Progressing")
                .filter(|_| !counts_changed)
                .and_then(|c| c["lastUpdateTime"].as_str())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let stalled_for = last_progress.map_or(Duration::ZERO, |t| {
                Duration::from_secs(
                    (jiff::Timestamp::now().as_second() - t.as_second()).max(0) as u64
                )
            });
            match deadline.checked_sub(stalled_for) {
                Some(left) if !left.is_zero() => {
                    recheck = Some(left);
                    (
                        "True",
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{new_name}\" is progressing."),
                    )
                }
                _ => (
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                ),
            }
        };
        let conditions = json!([
            merge_condition(
                &old_conditions,
                "Available",
                available_condition,
                &now,
                false
            ),
            merge_condition(
                &old_conditions,
                "Progressing",
                progressing,
                &now,
                counts_changed
            ),
        ]);
        let status = json!({
            "observedGeneration": self.d["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available_now,
            "unavailableReplicas": (replicas.max(self.desired) - available_now).max(0),
            "conditions": conditions,
        });
        write_status(self.client, DEPLOYMENTS, self.d, status)?;
        Ok(recheck.map_or(Outcome::Done, Outcome::After))
    }
}

fn spec(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn available(rs: &Value) -> i64 {
    rs["status"]["availableReplicas"].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> u64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn copy_change_cause(d: &Value, rs: &mut Value) {
    match d["metadata"]["annotations"][CHANGE_CAUSE].as_str() {
        Some(cause) => rs["metadata"]["annotations"][CHANGE_CAUSE] = json!(cause),
        None => {
            if let Some(a) = rs["metadata"]["annotations"].as_object_mut() {
                a.remove(CHANGE_CAUSE);
            }
        }
    }
}

fn condition<'c>(conditions: &'c Value, type_: &str) -> Option<&'c Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// A condition with its old timestamps kept where nothing changed: `lastTransitionTime`
/// moves with the status, `lastUpdateTime` with the reason, the message or `touched`.
fn merge_condition(
    old: &Value,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    now: &str,
    touched: bool,
) -> Value {
    let previous = condition(old, type_);
    let transition = previous
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let update = previous
        .filter(|c| {
            !touched
                && c["status"] == status
                && c["reason"] == reason
                && c["message"] == message.as_str()
        })
        .and_then(|c| c["lastUpdateTime"].as_str())
        .unwrap_or(now);
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "lastUpdateTime": update,
    })
}

/// `maxSurge`/`maxUnavailable`: a number, or a percentage of `of` rounded up or down.
pub fn int_or_percent(v: &Value, of: i64, round_up: bool) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n.max(0));
    }
    let p: i64 = v.as_str()?.strip_suffix('%')?.trim().parse().ok()?;
    let scaled = of * p.max(0);
    Some(if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    })
}

/// Whether a ReplicaSet's template is `template` (its `pod-template-hash` label aside).
fn same_template(rs_template: &Value, template: &Value) -> bool {
    let mut t = rs_template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    let normal = |v: &Value| {
        let mut v = v.clone();
        for empty in ["labels", "annotations"] {
            if v["metadata"][empty]
                .as_object()
                .is_some_and(|m| m.is_empty())
            {
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove(empty);
                }
            }
        }
        v
    };
    normal(&t) == normal(template)
}

/// The template's hash as Kubernetes spells it: FNV-1a (32 bits) of its canonical JSON, the
/// decimal digits mapped into the alphabet names are safe with.
pub fn template_hash(template: &Value) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let hash = bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    hash.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}
