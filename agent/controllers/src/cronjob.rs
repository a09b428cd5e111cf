//! The CronJob controller: starts a Job at each scheduled time, as Kubernetes' does.
//!
//! On each pass it reads the CronJob and its Jobs, records the running ones in
//! `status.active` and the newest success in `status.lastSuccessfulTime`, deletes finished
//! Jobs beyond `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` (oldest first), and, if a
//! scheduled time has passed since `status.lastScheduleTime` (or the CronJob's creation),
//! starts a Job for the newest such time, honouring `suspend`, `startingDeadlineSeconds` and
//! `concurrencyPolicy` (`Allow`, `Forbid`: wait until the running Job ends, `Replace`: delete
//! it first). Jobs are named `<cronjob>-<minutes since the epoch of the scheduled time>`, so
//! a repeated pass finds the Job it already made instead of making another. Then it asks to
//! be called again at the next scheduled time.

use std::time::Duration;

use cairn_apiserver::schedule::Schedule;
use cairn_apiserver::ApiError;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::client::{Client, Res};
use crate::events;
use crate::job::JOBS;
use crate::runtime::{controller_ref, is_controlled_by, owner_key};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const CRON_JOBS: Res = Res::named("batch", "cronjobs");

/// Annotation on each Job: the scheduled time it was started for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// More missed times than this since the last run are not counted one by one (Kubernetes'
/// limit); the newest is run and an event says so.
const MISSED_LIMIT: usize = 100;

pub struct CronJobs;

impl Controller for CronJobs {
    fn name(&self) -> &'static str {
        "cronjob-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: CRON_JOBS,
                keys: |cj| vec![Key::of(cj)],
            },
            Watched {
                resource: JOBS,
                keys: |job| owner_key(job, "CronJob"),
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(cj) = client
            .get(CRON_JOBS, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if cj["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        let spec = &cj["spec"];
        let schedule = match Schedule::parse(
            spec["schedule"].as_str().unwrap_or_default(),
            spec["timeZone"].as_str(),
        ) {
            Ok(s) => s,
            Err(e) => {
                events::record(
                    client,
                    &cj,
                    "Warning",
                    "UnparseableSchedule",
                    &e,
                    self.name(),
                );
                return Ok(Outcome::Done);
            }
        };
        let now = Timestamp::now();
        let mut jobs: Vec<Value> = client
            .list(JOBS, &key.namespace)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|j| is_controlled_by(j, &cj))
            .collect();
        self.trim_history(client, &cj, &mut jobs)?;

        let mut active: Vec<Value> = jobs
            .iter()
            .filter(|j| crate::job::outcome(j).is_none())
            .cloned()
            .collect();
        let last_success = jobs
            .iter()
            .filter(|j| crate::job::outcome(j) == Some("Complete"))
            .filter_map(|j| j["status"]["completionTime"].as_str())
            .max()
            .map(str::to_owned);
        let mut last_schedule = cj["status"]["lastScheduleTime"].as_str().map(str::to_owned);
        let since = last_schedule
            .as_deref()
            .or(cj["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);

        if spec["suspend"] != Value::Bool(true) {
            let due = schedule.due_between(since, now, MISSED_LIMIT);
            if due.is_some_and(|(_, missed)| missed > MISSED_LIMIT) {
                events::record(
                    client,
                    &cj,
                    "Warning",
                    "TooManyMissedTimes",
                    &format!(
                        "too many missed start times (> {MISSED_LIMIT}); starting the newest. \
                         Set or lower .spec.startingDeadlineSeconds or check clock skew"
                    ),
                    self.name(),
                );
            }
            if let Some((due, _)) = due {
                if self.start(client, &cj, due, now, &mut active)? {
                    last_schedule = Some(due.to_string());
                }
            }
        }

        let refs: Vec<Value> = active.iter().map(job_ref).collect();
        let mut status = json!({
            "active": if refs.is_empty() { Value::Null } else { json!(refs) },
        });
        if let Some(t) = last_schedule {
            status["lastScheduleTime"] = json!(t);
        }
        if let Some(t) = last_success {
            status["lastSuccessfulTime"] = json!(t);
        }
        crate::replicaset::write_status(client, CRON_JOBS, cj, status)?;
        Ok(match schedule.next_after(now) {
            Some(next) => {
                let wait = next.duration_since(now).unsigned_abs();
                Outcome::After(wait + Duration::from_millis(100))
            }
            None => Outcome::Done,
        })
    }
}

impl CronJobs {
    /// Starts the Job for the scheduled time `due` if the policies allow; true when that Job
    /// exists now (started by this call or an earlier one).
    fn start(
        &self,
        client: &Client,
        cj: &Value,
        due: Timestamp,
        now: Timestamp,
        active: &mut Vec<Value>,
    ) -> Result<bool, String> {
        let spec = &cj["spec"];
        let ns = cj["metadata"]["namespace"].as_str().unwrap_or_default();
        if let Some(deadline) = spec["startingDeadlineSeconds"].as_i64() {
            if now.as_second() - due.as_second() > deadline {
                events::record(
                    client,
                    cj,
                    "Warning",
                    "MissSchedule",
                    &format!("Missed scheduled time to start a job: {due}"),
                    self.name(),
                );
                return Ok(false);
            }
        }
        let name = format!(
            "{}-{}",
            cj["metadata"]["name"].as_str().unwrap_or_default(),
            due.as_second() / 60
        );
        if active
            .iter()
            .any(|j| j["metadata"]["name"] == name.as_str())
        {
            return Ok(true);
        }
        match spec["concurrencyPolicy"].as_str().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => return Ok(false),
            "Replace" => {
                for job in active.drain(..) {
                    let job_name = job["metadata"]["name"].as_str().unwrap_or_default();
                    client
                        .delete_object(JOBS, &job, Some("Background"))
                        .map_err(|e| format!("deleting job {job_name}: {e}"))?;
                    events::record(
                        client,
                        cj,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted job {job_name}"),
                        self.name(),
                    );
                }
            }
            _ => {}
        }
        let template = &spec["jobTemplate"];
        let mut metadata = template["metadata"].clone();
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(ns);
        metadata["annotations"][SCHEDULED_AT] = json!(due.to_string());
        metadata["ownerReferences"] = json!([controller_ref(cj)]);
        if let Some(m) = metadata.as_object_mut() {
            m.remove("creationTimestamp");
            m.remove("generateName");
        }
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                         "spec": template["spec"]});
        let created = match client.create(JOBS, ns, &job) {
            Ok(created) => created,
            // Made on an earlier pass whose status write was lost.
            Err(ApiError::AlreadyExists(_)) => return Ok(true),
            Err(e) => {
                let message = format!("Error creating job: {e}");
                events::record(client, cj, "Warning", "FailedCreate", &message, self.name());
                return Err(message);
            }
        };
        events::record(
            client,
            cj,
            "Normal",
            "SuccessfulCreate",
            &format!("Created job {name}"),
            self.name(),
        );
        active.push(created);
        Ok(true)
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    fn trim_history(
        &self,
        client: &Client,
        cj: &Value,
        jobs: &mut Vec<Value>,
    ) -> Result<(), String> {
        let ns = cj["metadata"]["namespace"].as_str().unwrap_or_default();
        for (outcome, field, default) in [
            ("Complete", "successfulJobsHistoryLimit", 3),
            ("Failed", "failedJobsHistoryLimit", 1),
        ] {
            let limit = cj["spec"][field].as_i64().unwrap_or(default).max(0) as usize;
            let mut done: Vec<&Value> = jobs
                .iter()
                .filter(|j| crate::job::outcome(j) == Some(outcome))
                .collect();
            if done.len() <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                (
                    j["status"]["completionTime"]
                        .as_str()
                        .or(j["metadata"]["creationTimestamp"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    j["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            });
            let excess: Vec<String> = done[..done.len() - limit]
                .iter()
                .map(|j| {
                    j["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            for name in &excess {
                let options = json!({"propagationPolicy": "Background"});
                client
                    .delete(JOBS, ns, name, Some(&options))
                    .map_err(|e| format!("deleting old job {name}: {e}"))?;
                events::record(
                    client,
                    cj,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted job {name}"),
                    self.name(),
                );
            }
            jobs.retain(|j| !excess.iter().any(|n| j["metadata"]["name"] == n.as_str()));
        }
        Ok(())
    }
}

/// The `status.active` entry of a Job.
fn job_ref(job: &Value) -> Value {
    let m = &job["metadata"];
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": m["name"],
           "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"]})
}
