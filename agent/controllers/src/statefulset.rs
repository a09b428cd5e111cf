//! The StatefulSet controller: pods with stable names and their own claims, made and removed
//! in order.
//!
//! Pod `i` is `<set>-<i>` with hostname `<set>-<i>` under the set's `serviceName` subdomain,
//! labelled `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`. Each
//! `volumeClaimTemplates` entry gives it the claim `<template>-<set>-<i>`, made before the pod
//! and kept when the pod or the set goes (unless `persistentVolumeClaimRetentionPolicy
//! .whenDeleted` is `Delete`), so a replaced pod finds its data again.
//!
//! `OrderedReady` (the default) creates pod `i` only when pods `0..i` are Running and Ready,
//! removes surplus pods from the highest ordinal down, one at a time, and only while the rest
//! are healthy; `Parallel` creates and removes them all at once. A changed template rolls out
//! with `RollingUpdate` from the highest ordinal down to `partition`, one pod at a time, each
//! replaced only once the others are Ready; `OnDelete` waits for someone to delete a pod. A
//! pod that failed, or was deleted, is made again under the same name once the old one is gone.
//!
//! Templates are kept as ControllerRevisions ([`crate::revisions`]; `currentRevision` and
//! `updateRevision` name them) for `kubectl rollout history/undo`.
//!
//! Not done: `maxUnavailable`, the `whenScaled` retention policy, `minReadySeconds`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::client::{Client, Res, PODS};
use crate::events;
use crate::runtime::{
    controller_ref, is_controlled_by, owner_key, Controller, Key, Outcome, Watched,
};

pub const STATEFUL_SETS: Res = Res::named("apps", "statefulsets");
pub const CLAIMS: Res = Res::core("persistentvolumeclaims");

/// Labels every pod of a set carries.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSets;

impl Controller for StatefulSets {
    fn name(&self) -> &'static str {
        "statefulset-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: STATEFUL_SETS,
                keys: |sts| vec![Key::of(sts)],
            },
            Watched {
                resource: PODS,
                keys: |pod| owner_key(pod, "StatefulSet"),
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(sts) = client
            .get(STATEFUL_SETS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if sts["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        let ns = key.namespace.as_str();
        let spec = &sts["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let parallel = spec["podManagementPolicy"].as_str() == Some("Parallel");
        let hash = crate::deployment::template_hash(&spec["template"]);
        let update_revision = format!("{}-{hash}", key.name);

        // The set's pods by ordinal.
        let prefix = format!("{}-", key.name);
        let mut pods: BTreeMap<usize, Value> = BTreeMap::new();
        for pod in client.list(PODS, ns).map_err(|e| e.to_string())? {
            if !is_controlled_by(&pod, &sts) {
                continue;
            }
            let ordinal = pod["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|o| o.parse::<usize>().ok());
            if let Some(ordinal) = ordinal {
                pods.insert(ordinal, pod);
            }
        }
        let terminating = |p: &Value| p["metadata"].get("deletionTimestamp").is_some();
        let healthy = |p: &Value| {
            !terminating(p)
                && p["status"]["phase"] == "Running"
                && crate::pods::ready_since(p).is_some()
        };
        let revision_of = |p: &Value| {
            p["metadata"]["labels"][crate::daemonset::REVISION_HASH]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };

        let in_use: std::collections::BTreeSet<String> = pods.values().map(&revision_of).collect();
        crate::revisions::record(client, &sts, &hash, &in_use)?;

        // Failed or finished pods are deleted, to be made again.
        for pod in pods.values() {
            if !terminating(pod) && !crate::pods::is_active(pod) {
                self.delete_pod(client, &sts, pod)?;
            }
        }
        let pods: BTreeMap<usize, Value> = pods
            .into_iter()
            .filter(|(_, p)| crate::pods::is_active(p) || terminating(p))
            .collect();

        // Create the missing pods in order (OrderedReady: one, once its predecessors are healthy).
        let mut blocked = false;
        for ordinal in 0..replicas {
            match pods.get(&ordinal) {
                Some(pod) => {
                    if !parallel && !healthy(pod) {
                        blocked = true;
                        break;
                    }
                }
                None => {
                    self.create_pod(client, &sts, ordinal, &hash)?;
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
            }
        }

        // Surplus pods go from the highest ordinal down.
        let surplus: Vec<&Value> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
        if parallel {
            for pod in surplus.iter().filter(|p| !terminating(p)) {
                self.delete_pod(client, &sts, pod)?;
            }
        } else if !blocked {
            let all_healthy = pods.range(..replicas).all(|(_, p)| healthy(p));
            if let Some(pod) = surplus.first() {
                if all_healthy && !surplus.iter().any(|p| terminating(p)) {
                    self.delete_pod(client, &sts, pod)?;
                }
                blocked = true;
            }
        }

        // Rolling update: the highest outdated ordinal at or above the partition, one at a time.
        let rolling = spec["updateStrategy"]["type"].as_str() != Some("OnDelete");
        let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_u64()
            .unwrap_or(0) as usize;
        let settled = pods.range(..replicas).count() == replicas
            && pods.range(..replicas).all(|(_, p)| healthy(p));
        if rolling && !blocked && settled {
            if let Some((_, pod)) = pods
                .range(partition..replicas)
                .rev()
                .find(|(_, p)| revision_of(p) != hash)
            {
                self.delete_pod(client, &sts, pod)?;
            }
        }

        // Status.
        let live: Vec<&Value> = pods
            .range(..replicas)
            .map(|(_, p)| p)
            .filter(|p| !terminating(p))
            .collect();
        let ready = live.iter().filter(|p| healthy(p)).count();
        let updated = live.iter().filter(|p| revision_of(p) == hash).count();
        let mut current_revision = sts["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&update_revision)
            .to_owned();
        if updated == replicas && ready == replicas {
            current_revision = update_revision.clone();
        }
        let current_hash = current_revision.rsplit('-').next().unwrap_or("").to_owned();
        let current = live
            .iter()
            .filter(|p| revision_of(p) == current_hash)
            .count();
        let status = json!({
            "replicas": live.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "observedGeneration": sts["metadata"]["generation"],
            "collisionCount": 0,
        });
        crate::replicaset::write_status(client, STATEFUL_SETS, sts, status)?;
        Ok(Outcome::Done)
    }
}

impl StatefulSets {
    fn create_pod(
        &self,
        client: &Client,
        sts: &Value,
        ordinal: usize,
        hash: &str,
    ) -> Result<(), String> {
        let set = sts["metadata"]["name"].as_str().unwrap_or_default();
        let name = format!("{set}-{ordinal}");
        let mut pod = crate::pods::from_template(sts);
        if let Some(m) = pod["metadata"].as_object_mut() {
            m.remove("generateName");
        }
        pod["metadata"]["name"] = json!(name);
        let labels = &mut pod["metadata"]["labels"];
        labels[POD_NAME_LABEL] = json!(name);
        labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
        labels[crate::daemonset::REVISION_HASH] = json!(hash);
        pod["spec"]["hostname"] = json!(name);
        if let Some(service) = sts["spec"]["serviceName"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            pod["spec"]["subdomain"] = json!(service);
        }
        for template in sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let volume = template["metadata"]["name"].as_str().unwrap_or_default();
            let claim = format!("{volume}-{name}");
            self.ensure_claim(client, sts, template, &claim)?;
            let mut volumes = pod["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            volumes.retain(|v| v["name"] != volume);
            volumes.push(json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}}));
            pod["spec"]["volumes"] = json!(volumes);
        }
        // AlreadyExists: the old pod of that name is still going.
        self.create_reported(client, sts, PODS, &pod, &format!("Pod {name}"))
    }

    /// Makes the claim `name` from `template` unless it exists.
    fn ensure_claim(
        &self,
        client: &Client,
        sts: &Value,
        template: &Value,
        name: &str,
    ) -> Result<(), String> {
        let ns = sts["metadata"]["namespace"].as_str().unwrap_or_default();
        if client
            .get(CLAIMS, ns, name)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(());
        }
        let mut metadata = template["metadata"].clone();
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(ns);
        for (k, v) in sts["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            metadata["labels"][k] = v.clone();
        }
        if sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
            let mut owner = controller_ref(sts);
            owner["controller"] = json!(false);
            metadata["ownerReferences"] = json!([owner]);
        }
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": metadata, "spec": template["spec"]});
        self.create_reported(client, sts, CLAIMS, &claim, &format!("Claim {name}"))
    }

    /// Creates `object` (`what`: "Pod web-0") with an event either way, as Kubernetes' set
    /// controller reports; one that already exists is left alone.
    fn create_reported(
        &self,
        client: &Client,
        sts: &Value,
        res: Res,
        object: &Value,
        what: &str,
    ) -> Result<(), String> {
        let ns = sts["metadata"]["namespace"].as_str().unwrap_or_default();
        let set = sts["metadata"]["name"].as_str().unwrap_or_default();
        let (kind, reason, message) = match client.create(res, ns, object) {
            Ok(_) => (
                "Normal",
                "SuccessfulCreate",
                format!("create {what} in StatefulSet {set} successful"),
            ),
            Err(cairn_apiserver::ApiError::AlreadyExists(_)) => return Ok(()),
            Err(e) => (
                "Warning",
                "FailedCreate",
                format!("create {what} in StatefulSet {set} failed error: {e}"),
            ),
        };
        events::record(client, sts, kind, reason, &message, self.name());
        if kind == "Warning" {
            return Err(message);
        }
        Ok(())
    }

    fn delete_pod(&self, client: &Client, sts: &Value, pod: &Value) -> Result<(), String> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        client
            .delete_object(PODS, pod, None)
            .map_err(|e| format!("deleting pod {name}: {e}"))?;
        events::record(
            client,
            sts,
            "Normal",
            "SuccessfulDelete",
            &format!(
                "delete Pod {name} in StatefulSet {} successful",
                sts["metadata"]["name"].as_str().unwrap_or_default()
            ),
            self.name(),
        );
        Ok(())
    }
}
