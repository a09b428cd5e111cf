//! The pod subresources that are actions: `binding` (a scheduler puts a pod on a node) and
//! `eviction` (`kubectl drain`: delete the pod unless its PodDisruptionBudget forbids it).
//!
//! Eviction computes the budget when asked, from the pods the budget selects (no disruption
//! controller keeps `status.disruptionsAllowed` yet): healthy pods are those whose `Ready`
//! condition is `True`; `minAvailable` or `maxUnavailable` (a number or a percentage of the
//! selected pods, rounded up) gives how many must stay healthy. A Ready pod is evicted only
//! if one more may go; a pod that is not Ready, only if the budget is met without it
//! (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default). Blocked evictions answer
//! `429 TooManyRequests`, which kubectl drain retries.
//!
//! Deleting a pod a node runs is graceful ([`grace_period`]): the pod turns `Terminating`
//! (`deletionTimestamp` = now + grace, `deletionGracePeriodSeconds`), its kubelet stops the
//! containers (SIGTERM, SIGKILL at the deadline) and then deletes it for good with grace 0.

use serde_json::{json, Value};

use super::write::parse_body_as;
use super::{decode_object, encode_object, subject, target, Api, Reply};
use crate::error::{success, ApiError};
use crate::request::{Action, BodyFormat, Options, Subresource, Verb};
use crate::resources;
use crate::selector::LabelSelector;

impl Api {
    /// `POST pods/<name>/binding`: sets `spec.nodeName` once.
    pub(super) fn bind(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let (api_version, kind) = Subresource::Binding.body_kind().expect("a body kind");
        let binding = parse_body_as(body, kind, api_version)?;
        let (ns, name) = target(action);
        let node = binding["target"]["name"].as_str().unwrap_or_default();
        if node.is_empty() {
            return Err(invalid_binding(name, "target.name: Required value"));
        }
        if !matches!(
            binding["target"]["kind"].as_str(),
            None | Some("") | Some("Node")
        ) {
            return Err(invalid_binding(
                name,
                "target.kind: Unsupported value: only Node",
            ));
        }
        let who = subject(action.resource, name);
        let key = action.resource.key(ns, name);
        let current = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::NotFound(who.clone()))?;
        let mut pod = decode_object(&current)?;
        if let Some(on) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                subject: who,
                message: format!("pod {name} is already assigned to node \"{on}\""),
            });
        }
        if pod["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::Conflict {
                subject: who,
                message: format!("pod {name} is being deleted, cannot be assigned to a host"),
            });
        }
        pod["spec"]["nodeName"] = json!(node);
        if !action.options.dry_run {
            self.store
                .update(&key, &encode_object(&pod), current.mod_revision)
                .map_err(|e| ApiError::from_store(e, &who))?;
        }
        Ok(Reply::with_code(201, created(&who)))
    }

    /// `POST pods/<name>/eviction`: deletes the pod (with the eviction's `deleteOptions`) if
    /// its disruption budget allows.
    pub(super) fn evict(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let (api_version, kind) = Subresource::Eviction.body_kind().expect("a body kind");
        let eviction = parse_body_as(body, kind, api_version)?;
        let (ns, name) = target(action);
        let named = eviction["metadata"]["name"].as_str().unwrap_or_default();
        if !named.is_empty() && named != name {
            return Err(ApiError::BadRequest(format!(
                "name in URL does not match name in Eviction object ({named} != {name})"
            )));
        }
        let who = subject(action.resource, name);
        let current = self
            .store
            .get(&action.resource.key(ns, name))?
            .ok_or_else(|| ApiError::NotFound(who.clone()))?;
        let pod = decode_object(&current)?;
        // A pod already on its way out, or one that has finished, takes no budget.
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        );
        if pod["metadata"].get("deletionTimestamp").is_none() && !finished {
            self.check_budget(ns.unwrap_or_default(), &pod)?;
        }
        if action.options.dry_run {
            return Ok(Reply::with_code(201, created(&who)));
        }
        let delete = Action {
            verb: Verb::Delete,
            options: Options::default(),
            subresource: None,
            body: BodyFormat::Json,
            ..action.clone()
        };
        let options = match eviction.get("deleteOptions") {
            Some(opts) if opts.is_object() => opts.to_string().into_bytes(),
            _ => Vec::new(),
        };
        self.delete(&delete, &options)?;
        Ok(Reply::with_code(201, created(&who)))
    }

    /// Fails with 429 if evicting `pod` would break the PodDisruptionBudget that selects it.
    fn check_budget(&self, namespace: &str, pod: &Value) -> Result<(), ApiError> {
        let pdbs = resources::find("policy", "v1", "poddisruptionbudgets")
            .expect("poddisruptionbudgets are served");
        let pods = resources::find("", "v1", "pods").expect("pods are served");
        let mut matching = Vec::new();
        for kv in self
            .store
            .list(&pdbs.prefix(Some(namespace)), None, 0, None)?
            .items
        {
            let pdb = decode_object(&kv)?;
            let Some(selector) = pdb["spec"].get("selector").filter(|s| s.is_object()) else {
                continue; // a budget without a selector selects nothing
            };
            let selector = LabelSelector::from_json(selector).map_err(|e| {
                ApiError::Internal(format!(
                    "PodDisruptionBudget {}: {e}",
                    pdb["metadata"]["name"]
                ))
            })?;
            if selector.matches_object(pod) {
                matching.push((pdb, selector));
            }
        }
        let (pdb, selector) = match matching.len() {
            0 => return Ok(()),
            1 => matching.remove(0),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction \
                     subresource does not support."
                        .into(),
                ))
            }
        };
        let selected: Vec<Value> = self
            .store
            .list(&pods.prefix(Some(namespace)), None, 0, None)?
            .items
            .iter()
            .map(decode_object)
            .collect::<Result<_, _>>()?;
        let selected: Vec<&Value> = selected
            .iter()
            .filter(|p| {
                selector.matches_object(p) && p["metadata"].get("deletionTimestamp").is_none()
            })
            .collect();
        let expected = selected.len() as i64;
        let healthy = selected.iter().filter(|p| ready(p)).count() as i64;
        let scaled = |v: &Value| -> i64 {
            match v {
                Value::String(s) => s
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .map_or(0, |p| (p * expected + 99) / 100),
                other => other.as_i64().unwrap_or(0),
            }
        };
        let spec = &pdb["spec"];
        let desired = if let Some(min) = spec.get("minAvailable") {
            scaled(min)
        } else if let Some(max) = spec.get("maxUnavailable") {
            (expected - scaled(max)).max(0)
        } else {
            expected // policy/v1 defaults to minAvailable 100%
        };
        let allowed = if ready(pod) {
            healthy - desired >= 1
        } else {
            healthy >= desired
        };
        if allowed {
            return Ok(());
        }
        let budget = pdb["metadata"]["name"].as_str().unwrap_or_default();
        Err(ApiError::Other {
            code: 429,
            reason: "TooManyRequests",
            message: format!(
                "Cannot evict pod as it would violate the pod's disruption budget. The \
                 disruption budget {budget} needs {desired} healthy pods and has {healthy} \
                 currently"
            ),
        })
    }
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn invalid_binding(name: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        subject: crate::error::Subject {
            group: String::new(),
            kind: "Binding".into(),
            name: name.to_owned(),
        },
        message: message.to_owned(),
    }
}

/// The `Status` a created binding or eviction answers with.
fn created(who: &crate::error::Subject) -> Value {
    let mut status = success(who);
    status["code"] = json!(201);
    status
}

/// How long a deleted pod has to stop, as kube-apiserver decides it: a pod no node runs
/// (unscheduled, or finished) goes at once; otherwise the deletion's own grace period (a
/// negative one counts as 1 s), else `spec.terminationGracePeriodSeconds`, else 30 s.
pub(super) fn grace_period(pod: &Value, asked: Option<i64>) -> i64 {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    match asked {
        Some(g) if g < 0 => 1,
        Some(g) => g,
        None => pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30)
            .max(0),
    }
}
