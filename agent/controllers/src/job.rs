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
//! Not done: indexed completion mode, pod failure policies, `ttlSecondsAfterFinished`.

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
        if job["metadata"].get("deletionTimestamp").is_some() || finished(&job) {
            return Ok(Outcome::Done);
        }
        let pods: Vec<Value> = client
            .list(PODS, &key.namespace)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| is_controlled_by(p, &job))
            .collect();
        let phase = |p: &Value| p["status"]["phase"].as_str().unwrap_or("").to_owned();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
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
            crate::replicaset::write_status(client, JOBS, job.clone(), status)?;
            let event = match failure {
                Some((reason, message)) => ("Warning", reason, message.to_owned()),
                None => ("Normal", "Completed", "Job completed".to_owned()),
            };
            events::record(client, &job, event.0, event.1, &event.2, self.name());
            return Ok(Outcome::Done);
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
            while running < wanted {
                let pod = client
                    .create(PODS, &key.namespace, &crate::pods::from_template(&job))
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

fn finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True")
}

fn delete_pods(client: &Client, pods: &[&Value]) -> Result<(), String> {
    for pod in pods {
        let meta = &pod["metadata"];
        let options = json!({"preconditions": {"uid": meta["uid"]}});
        client
            .delete(
                PODS,
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or(""),
                Some(&options),
            )
            .map_err(|e| format!("deleting pod {}: {e}", meta["name"]))?;
    }
    Ok(())
}
