//! The Job controller: runs pods until `completions` of them succeed, at most `parallelism`
//! at a time, and gives up after `backoffLimit` failures or `activeDeadlineSeconds`.
//!
//! Pods are made from the template (`generateName` `<job>-`) and controlled by the Job; the
//! API server gives every Job the `batch.kubernetes.io/controller-uid` selector and labels
//! (`validate.rs`), so `kubectl logs job/NAME` finds them. Finished pods stay (their logs are
//! the job's output). When the job is done the status gets `Complete` (or `Failed` with
//! `BackoffLimitExceeded` / `DeadlineExceeded`, and its running pods are deleted) and a
//! `completionTime`; `suspend: true` deletes running pods and starts none.
//!
//! `completionMode: Indexed` gives each pod an index (`0..completions`, in the
//! `batch.kubernetes.io/job-completion-index` annotation and label, the `JOB_COMPLETION_INDEX`
//! variable and the hostname `<job>-<index>`); the Job is complete when every index has
//! succeeded once (`status.completedIndexes`, e.g. `0-2,4`). A finished Job with
//! `ttlSecondsAfterFinished` is deleted (with its pods) that long after it finished, as
//! Kubernetes' TTL-after-finished controller does.
//!
//! Not done: pod failure policies, `backoffLimitPerIndex`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{Client, Res, PODS};
use crate::events;
use crate::runtime::{is_controlled_by, owner_key};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const JOBS: Res = Res::named("batch", "jobs");

pub struct Jobs;

impl Controller for Jobs {
    fn name(&self) -> &'static str {
        "job-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: JOBS,
                keys: |job| vec![Key::of(job)],
            },
            Watched {
                resource: PODS,
                keys: |pod| owner_key(pod, "Job"),
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(job) = client
            .get(JOBS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if job["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        if outcome(&job).is_some() {
            return expire(client, &job);
        }
        let pods: Vec<Value> = client
            .list(PODS, &key.namespace)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| is_controlled_by(p, &job))
            .collect();
        let phase = |p: &Value| p["status"]["phase"].as_str().unwrap_or("").to_owned();
        let indexed = job["spec"]["completionMode"] == "Indexed";
        // Indexed: each index counts once, however many of its pods succeeded.
        let done_indexes: std::collections::BTreeSet<i64> = pods
            .iter()
            .filter(|p| phase(p) == "Succeeded")
            .filter_map(index_of)
            .collect();
        let succeeded = if indexed {
            done_indexes.len() as i64
        } else {
            pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64
        };
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let active: Vec<&Value> = pods.iter().filter(|p| crate::pods::is_active(p)).collect();
        let spec = &job["spec"];
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
        let completions = spec["completions"].as_i64();
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let suspended = spec["suspend"] == Value::Bool(true);
        let now = jiff::Timestamp::now();
        let stamp = cairn_apiserver::meta::now();
        let started = job["status"]["startTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());

        // Done, one way or the other?
        let complete = match completions {
            Some(n) => succeeded >= n,
            // Work-queue jobs: one success, and nothing left running.
            None => succeeded > 0 && active.is_empty(),
        };
        let deadline = spec["activeDeadlineSeconds"]
            .as_i64()
            .and_then(|s| started.map(|t| t.as_second() + s));
        let failure = if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if deadline.is_some_and(|d| now.as_second() >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        if complete || failure.is_some() {
            if failure.is_some() {
                delete_pods(client, &active)?;
            }
            let (type_, reason, message) = match failure {
                Some((reason, message)) => ("Failed", reason, message),
                None => ("Complete", "", ""),
            };
            let mut condition = json!({"type": type_, "status": "True",
                "lastProbeTime": stamp, "lastTransitionTime": stamp});
            if !reason.is_empty() {
                condition["reason"] = json!(reason);
                condition["message"] = json!(message);
            }
            let mut status = json!({
                "active": 0, "ready": 0, "succeeded": succeeded, "failed": failed,
                "conditions": [condition],
            });
            if failure.is_none() {
                status["completionTime"] = json!(stamp);
            }
            if indexed {
                status["completedIndexes"] = json!(ranges(&done_indexes));
            }
            crate::replicaset::write_status(client, JOBS, job.clone(), status)?;
            let event = match failure {
                Some((reason, message)) => ("Warning", reason, message.to_owned()),
                None => ("Normal", "Completed", "Job completed".to_owned()),
            };
            events::record(client, &job, event.0, event.1, &event.2, self.name());
            return match client.get(JOBS, &key.namespace, &key.name) {
                Ok(Some(job)) => expire(client, &job),
                _ => Ok(Outcome::Done),
            };
        }

        // Start pods up to the parallelism, never more than the completions still needed.
        let mut running = active.len() as i64;
        if suspended {
            delete_pods(client, &active)?;
            running = 0;
        } else {
            let wanted = match completions {
                Some(n) => parallelism.min(n - succeeded),
                None => parallelism,
            };
            // Indexed: the lowest indexes neither done nor running.
            let running_indexes: std::collections::BTreeSet<i64> =
                active.iter().filter_map(|p| index_of(p)).collect();
            let mut free = (0..completions.unwrap_or(0))
                .filter(|i| !done_indexes.contains(i) && !running_indexes.contains(i));
            while running < wanted {
                let mut pod = crate::pods::from_template(&job);
                if indexed {
                    let Some(index) = free.next() else { break };
                    with_index(&mut pod, &key.name, index);
                }
                let pod = client
                    .create(PODS, &key.namespace, &pod)
                    .map_err(|e| format!("creating a pod: {e}"))?;
                events::record(
                    client,
                    &job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "Created pod: {}",
                        pod["metadata"]["name"].as_str().unwrap_or("")
                    ),
                    self.name(),
                );
                running += 1;
            }
        }
        let ready = active
            .iter()
            .filter(|p| crate::pods::ready_since(p).is_some())
            .count();
        let mut status = json!({
            "active": running, "ready": ready, "succeeded": succeeded, "failed": failed,
        });
        if indexed {
            status["completedIndexes"] = json!(ranges(&done_indexes));
        }
        if started.is_none() && !suspended {
            status["startTime"] = json!(stamp);
        }
        crate::replicaset::write_status(client, JOBS, job, status)?;
        // A deadline is a time to look again.
        Ok(deadline.map_or(Outcome::Done, |d| {
            Outcome::After(Duration::from_secs((d - now.as_second()).max(1) as u64))
        }))
    }
}

/// `Complete` or `Failed` once a Job has finished.
pub fn outcome(job: &Value) -> Option<&str> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| {
            matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
        })
        .and_then(|c| c["type"].as_str())
}

fn delete_pods(client: &Client, pods: &[&Value]) -> Result<(), String> {
    for pod in pods {
        client
            .delete_object(PODS, pod, None)
            .map_err(|e| format!("deleting pod {}: {e}", pod["metadata"]["name"]))?;
    }
    Ok(())
}

/// Annotation (and label) holding an indexed pod's completion index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn index_of(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][INDEX].as_str()?.parse().ok()
}

/// Makes `pod` the one for completion index `index` of Job `job`.
fn with_index(pod: &mut Value, job: &str, index: i64) {
    let text = index.to_string();
    pod["metadata"]["annotations"][INDEX] = json!(text);
    pod["metadata"]["labels"][INDEX] = json!(text);
    pod["metadata"]["generateName"] = json!(format!("{job}-{index}-"));
    pod["spec"]["hostname"] = json!(format!("{job}-{index}"));
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let env = &mut c["env"];
            if !env.is_array() {
                *env = json!([]);
            }
            if let Some(env) = env.as_array_mut() {
                env.retain(|e| e["name"] != "JOB_COMPLETION_INDEX");
                env.push(json!({"name": "JOB_COMPLETION_INDEX", "value": text}));
            }
        }
    }
}

/// `0-2,4,6-7`: Kubernetes' form of a set of indexes.
fn ranges(indexes: &std::collections::BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// A finished Job with `ttlSecondsAfterFinished`: deleted (pods too) once that has passed
/// since it finished; otherwise a time to look again.
fn expire(client: &Client, job: &Value) -> Result<Outcome, String> {
    let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
        return Ok(Outcome::Done);
    };
    let finished_at = job["status"]["completionTime"]
        .as_str()
        .or_else(|| {
            job["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Failed" && c["status"] == "True")?["lastTransitionTime"]
                .as_str()
        })
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let left = finished_at.as_second() + ttl.max(0) - jiff::Timestamp::now().as_second();
    if left > 0 {
        return Ok(Outcome::After(Duration::from_secs(left as u64)));
    }
    client
        .delete_object(JOBS, job, Some("Background"))
        .map(|()| Outcome::Done)
        .map_err(|e| format!("deleting the expired job: {e}"))
}
