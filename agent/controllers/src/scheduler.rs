//! The scheduler: binds each pending pod to a node that can run it.
//!
//! Filters, as kube-scheduler's default plugins: the node is Ready and schedulable (or the
//! pod tolerates `node.kubernetes.io/unschedulable`); `nodeSelector` and required node
//! affinity match its labels; every `NoSchedule`/`NoExecute` taint is tolerated; the pod's
//! CPU and memory requests fit in what is allocatable minus what bound pods request, and the
//! node has room for another pod; required pod anti-affinity on `kubernetes.io/hostname`
//! finds no matching pod there. Among the nodes left, the score prefers fewer pods of the
//! same owner (spreading replicas), more free resources, and preferred node affinity terms.
//! A pod no node fits gets a `FailedScheduling` event naming why, and its `PodScheduled`
//! condition says `Unschedulable`; it is tried again when pods or nodes change, and every
//! [`RETRY`].
//!
//! Scheduling runs in batches: any change queues one key, and a pass places every pending
//! pod with one read of nodes and pods, accounting for each placement as it goes.

use std::collections::{BTreeMap, HashMap};

use cairn_apiserver::request::Subresource;
use cairn_apiserver::selector::LabelSelector;
use serde_json::{json, Value};

use crate::client::{Client, NODES, PODS};
use crate::events;
use crate::runtime::{controller_of, Controller, Key, Outcome, Watched};

pub const NAME: &str = "default-scheduler";

/// How soon pods that fit nowhere are tried again (besides on every node or pod change).
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Scheduler;

fn batch_key() -> Vec<Key> {
    vec![Key::new("", "*")]
}

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: PODS,
                // Pending pods need placing; a pod that ends frees room (a pod deleted
                // outright is caught by the retry of pods that did not fit).
                keys: |pod| {
                    if !bound(pod) || !crate::pods::is_active(pod) {
                        batch_key()
                    } else {
                        Vec::new()
                    }
                },
            },
            Watched {
                resource: NODES,
                keys: |_| batch_key(),
            },
        ]
    }

    fn reconcile(&self, client: &Client, _key: &Key) -> Result<Outcome, String> {
        let nodes = client.list(NODES, "").map_err(|e| e.to_string())?;
        let pods = client.list(PODS, "").map_err(|e| e.to_string())?;
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for pod in pods
            .iter()
            .filter(|p| bound(p) && crate::pods::is_active(p))
        {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
            usage.entry(node).or_default().add(pod);
        }
        let mut pending: Vec<&Value> = pods
            .iter()
            .filter(|p| !bound(p) && crate::pods::is_active(p) && ours(p))
            .collect();
        // Higher priority first, then oldest first.
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(p["spec"]["priority"].as_i64().unwrap_or(0)),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        });
        let mut waiting = false;
        for pod in pending {
            match place(pod, &nodes, &usage, &pods) {
                Ok(node) => {
                    bind(client, pod, &node)?;
                    usage.entry(node).or_default().add(pod);
                }
                Err(why) => {
                    unschedulable(client, pod, nodes.len(), &why)?;
                    waiting = true;
                }
            }
        }
        Ok(if waiting {
            Outcome::After(RETRY)
        } else {
            Outcome::Done
        })
    }
}

fn bound(pod: &Value) -> bool {
    pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
}

fn ours(pod: &Value) -> bool {
    matches!(
        pod["spec"]["schedulerName"].as_str(),
        None | Some("") | Some(NAME)
    )
}

/// What the pods bound to a node request.
#[derive(Debug, Default, Clone)]
struct Usage {
    cpu: f64,
    memory: f64,
    pods: u64,
    /// Pods per controlling owner uid (spreading).
    by_owner: HashMap<String, u64>,
}

impl Usage {
    fn add(&mut self, pod: &Value) {
        let (cpu, memory) = requests(pod);
        self.cpu += cpu;
        self.memory += memory;
        self.pods += 1;
        if let Some(owner) = controller_of(pod).and_then(|o| o["uid"].as_str()) {
            *self.by_owner.entry(owner.to_owned()).or_default() += 1;
        }
    }
}

/// The pod's CPU (cores) and memory (bytes) requests: the sum over its containers, or the
/// largest init container's if that is more.
fn requests(pod: &Value) -> (f64, f64) {
    let sum = |list: &Value| -> (f64, f64) {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let r = &c["resources"]["requests"];
                (quantity(&r["cpu"]), quantity(&r["memory"]))
            })
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (cpu, memory) = sum(&pod["spec"]["containers"]);
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let r = &c["resources"]["requests"];
            (quantity(&r["cpu"]), quantity(&r["memory"]))
        })
        .fold((0.0f64, 0.0f64), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    (cpu.max(init.0), memory.max(init.1))
}

/// A Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as a number; 0 when absent or
/// unreadable (validation is the API's job).
pub fn quantity(v: &Value) -> f64 {
    if let Some(n) = v.as_f64() {
        return n;
    }
    let Some(s) = v.as_str().map(str::trim) else {
        return 0.0;
    };
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().map_or(0.0, |n| n * factor);
        }
    }
    s.parse().unwrap_or(0.0)
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The best node for `pod`, or why none fits (reasons counted per node, kube-style).
fn place(
    pod: &Value,
    nodes: &[Value],
    usage: &HashMap<String, Usage>,
    all_pods: &[Value],
) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, String)> = None;
    let (cpu, memory) = requests(pod);
    let owner = controller_of(pod)
        .and_then(|o| o["uid"].as_str())
        .unwrap_or("");
    for node in nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let used = usage.get(&name).cloned().unwrap_or_default();
        if let Err(reason) = fits(pod, node, &used, cpu, memory, all_pods) {
            *reasons.entry(reason).or_default() += 1;
            continue;
        }
        let alloc = &node["status"]["allocatable"];
        let free = |have: f64, used: f64| {
            if have > 0.0 {
                (have - used) / have
            } else {
                0.0
            }
        };
        let mut score = 10.0
            * (free(quantity(&alloc["cpu"]), used.cpu + cpu)
                + free(quantity(&alloc["memory"]), used.memory + memory));
        score -= 100.0 * used.by_owner.get(owner).copied().unwrap_or(0) as f64;
        score -= used.pods as f64;
        score += preferred_affinity(pod, node);
        if best
            .as_ref()
            .is_none_or(|(s, n)| score > *s || (score == *s && name < *n))
        {
            best = Some((score, name));
        }
    }
    match best {
        Some((_, name)) => Ok(name),
        None => Err(reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

fn fits(
    pod: &Value,
    node: &Value,
    used: &Usage,
    cpu: f64,
    memory: f64,
    all_pods: &[Value],
) -> Result<(), String> {
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Err("node(s) were not ready".into());
    }
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if node["spec"]["unschedulable"] == Value::Bool(true)
        && !tolerates(
            &tolerations,
            &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        return Err("node(s) were unschedulable".into());
    }
    node_matches(&pod["spec"], node)?;
    let alloc = &node["status"]["allocatable"];
    let max_pods = quantity(&alloc["pods"]);
    if max_pods > 0.0 && used.pods as f64 + 1.0 > max_pods {
        return Err("Too many pods".into());
    }
    if cpu > 0.0 && used.cpu + cpu > quantity(&alloc["cpu"]) + 1e-9 {
        return Err("Insufficient cpu".into());
    }
    if memory > 0.0 && used.memory + memory > quantity(&alloc["memory"]) {
        return Err("Insufficient memory".into());
    }
    let node_name = node["metadata"]["name"].as_str().unwrap_or("");
    for term in pod["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if term["topologyKey"] != "kubernetes.io/hostname" {
            continue;
        }
        let Ok(selector) = LabelSelector::from_json(&term["labelSelector"]) else {
            continue;
        };
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let clash = all_pods.iter().any(|other| {
            other["spec"]["nodeName"] == node_name
                && other["metadata"]["namespace"] == namespace
                && crate::pods::is_active(other)
                && selector.matches_object(other)
        });
        if clash {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    Ok(())
}

/// Whether a pod with `spec` may go on `node` by its labels, name and taints: `nodeSelector`,
/// required node affinity, and every `NoSchedule`/`NoExecute` taint tolerated. (The
/// scheduler adds readiness and resources; the DaemonSet controller uses this alone.)
pub fn node_matches(spec: &Value, node: &Value) -> Result<(), String> {
    let node_labels = labels(node);
    if let Some(selector) = spec["nodeSelector"].as_object() {
        if selector
            .iter()
            .any(|(k, v)| node_labels.get(k).map(String::as_str) != v.as_str())
        {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    let required = &spec["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    if let Some(terms) = required.as_array() {
        if !terms.iter().any(|t| term_matches(t, &node_labels, name)) {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        let hard = matches!(taint["effect"].as_str(), Some("NoSchedule" | "NoExecute"));
        if hard && !tolerates(&tolerations, taint) {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint["key"].as_str().unwrap_or(""),
                taint["value"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

/// A `nodeSelectorTerm`: every expression holds for the node's labels, every field
/// expression (`metadata.name`, what DaemonSet pods use) for its name.
fn term_matches(term: &Value, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let fields_ok = term["matchFields"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let in_values = values.contains(&node_name);
            match (e["key"].as_str(), e["operator"].as_str()) {
                (Some("metadata.name"), Some("In")) => in_values,
                (Some("metadata.name"), Some("NotIn")) => !in_values,
                _ => false,
            }
        });
    fields_ok
        && term["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let have = labels.get(key);
                match e["operator"].as_str().unwrap_or("") {
                    "In" => have.is_some_and(|v| values.contains(&v.as_str())),
                    "NotIn" => have.is_none_or(|v| !values.contains(&v.as_str())),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    "Gt" | "Lt" => {
                        let (Some(h), Some(w)) = (
                            have.and_then(|h| h.parse::<i64>().ok()),
                            values.first().and_then(|w| w.parse::<i64>().ok()),
                        ) else {
                            return false;
                        };
                        if e["operator"] == "Gt" {
                            h > w
                        } else {
                            h < w
                        }
                    }
                    _ => false,
                }
            })
}

/// Sum of the weights of the preferred node-affinity terms the node matches.
fn preferred_affinity(pod: &Value, node: &Value) -> f64 {
    let labels = labels(node);
    pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let name = node["metadata"]["name"].as_str().unwrap_or("");
            term_matches(&p["preference"], &labels, name)
        })
        .map(|p| p["weight"].as_f64().unwrap_or(0.0))
        .sum()
}

/// Whether one of `tolerations` tolerates `taint`.
pub fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = match t["key"].as_str().unwrap_or("") {
            "" => t["operator"] == "Exists",
            key => taint["key"] == key,
        };
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = match t["effect"].as_str().unwrap_or("") {
            "" => true,
            effect => taint["effect"] == effect,
        };
        key_ok && value_ok && effect_ok
    })
}

fn bind(client: &Client, pod: &Value, node: &str) -> Result<(), String> {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("");
    let name = meta["name"].as_str().unwrap_or("");
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match client.create_subresource(PODS, ns, name, Subresource::Binding, &binding) {
        Ok(_) => {}
        // Deleted or bound by someone else meanwhile.
        Err(
            cairn_apiserver::ApiError::NotFound(_) | cairn_apiserver::ApiError::Conflict { .. },
        ) => return Ok(()),
        Err(e) => return Err(format!("binding {ns}/{name} to {node}: {e}")),
    }
    events::record(
        client,
        pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to {node}"),
        NAME,
    );
    Ok(())
}

/// Says why `pod` fits nowhere: an event (once per distinct reason) and its `PodScheduled`
/// condition.
fn unschedulable(client: &Client, pod: &Value, nodes: usize, why: &str) -> Result<(), String> {
    let message = if nodes == 0 {
        "0/0 nodes are available: no nodes registered.".to_owned()
    } else {
        format!("0/{nodes} nodes are available: {why}.")
    };
    let current = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled");
    if current.is_some_and(|c| c["message"] == message.as_str()) {
        return Ok(());
    }
    let mut updated = pod.clone();
    let mut conditions: Vec<Value> = updated["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": cairn_apiserver::meta::now(),
    }));
    updated["status"]["conditions"] = json!(conditions);
    if updated["status"]["phase"].is_null() {
        updated["status"]["phase"] = json!("Pending");
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    match client.update_status(PODS, ns, &updated) {
        Ok(_)
        | Err(
            cairn_apiserver::ApiError::NotFound(_) | cairn_apiserver::ApiError::Conflict { .. },
        ) => {}
        Err(e) => return Err(format!("pod {ns}: {e}")),
    }
    events::record(client, pod, "Warning", "FailedScheduling", &message, NAME);
    Ok(())
}
