//! The resource metrics API, `metrics.k8s.io/v1beta1` (`kubectl top`), served by the API
//! server itself from its nodes' kubelets, where Kubernetes has metrics-server behind the
//! aggregation layer.
//!
//! `nodes` (NodeMetrics) and `pods` (PodMetrics, namespaced) answer `get` and `list`, with
//! label selectors and the `metadata.name`/`metadata.namespace` field selectors, as JSON or
//! as a `Table` (`kubectl get pods.metrics.k8s.io`). Each request reads the Nodes or Pods
//! from the store, asks every kubelet concerned for its [`Summary`] ([`KUBELET_PATH`],
//! through the [`NodeProxy`]) all at once, each within [`NODE_TIMEOUT`], and leaves out
//! what a node does not answer, as metrics-server leaves out nodes it could not scrape. As
//! metrics-server answers: an object that does not exist is a 404 of `pods`/`nodes`; one that
//! exists without figures (not running, its node silent) a 404 of `podmetrics`/`nodemetrics`.
//!
//! Nothing is kept here and nothing runs between requests: each kubelet keeps its previous
//! counters and turns them into CPU rates over the window since (`cairn::kubelet::stats`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Subject};
use crate::handlers::{decode_object, Api};
use crate::nodeproxy::NodeProxy;
use crate::request::{Action, Options, Verb};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";
/// Where a kubelet serves its [`Summary`].
pub const KUBELET_PATH: &str = "/stats/resource";
/// How long a kubelet may take to answer (it may wait a second for a first CPU reading).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a kubelet answers at [`KUBELET_PATH`]: the node's and its running containers' usage,
/// CPU averaged over one window ending at `time`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The end of the window, as Kubernetes writes times (RFC 3339, seconds).
    pub time: String,
    pub window_nanos: u64,
    pub node: Usage,
    pub pods: Vec<PodUsage>,
}

/// One figure per resource; `None` where the node cannot tell (no memory controller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_nano_cores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_working_set_bytes: Option<u64>,
}

impl Usage {
    /// The metrics API's `usage` map: `{"cpu": "1234n", "memory": "5Mi"}`, with the known
    /// figures only.
    fn to_json(self) -> Value {
        let mut usage = Map::new();
        if let Some(cpu) = self.cpu_nano_cores {
            usage.insert("cpu".into(), json!(cpu_quantity(cpu)));
        }
        if let Some(memory) = self.memory_working_set_bytes {
            usage.insert("memory".into(), json!(memory_quantity(memory)));
        }
        Value::Object(usage)
    }

    /// The sum of `all` (a figure is known when any part knows it).
    fn sum<'a>(all: impl Iterator<Item = &'a Usage>) -> Usage {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        all.fold(Usage::default(), |total, u| Usage {
            cpu_nano_cores: add(total.cpu_nano_cores, u.cpu_nano_cores),
            memory_working_set_bytes: add(
                total.memory_working_set_bytes,
                u.memory_working_set_bytes,
            ),
        })
    }
}

/// The running containers of one pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub uid: String,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// Whether `action` is one of this API's (the server routes it here, not to the store).
pub fn serves(action: &Action) -> bool {
    action.resource.group == GROUP
}

/// Answers a `get` or `list` of `nodes` or `pods` of the metrics API.
pub async fn respond(
    api: Api,
    proxy: Arc<dyn NodeProxy>,
    action: &Action,
) -> Result<Value, ApiError> {
    let targets = {
        let action = action.clone();
        tokio::task::spawn_blocking(move || targets(&api, &action))
            .await
            .map_err(|e| ApiError::Internal(format!("reading the metrics' objects: {e}")))??
    };
    let summaries = fetch(proxy, targets.kubelets).await;
    let pods = action.resource.plural == "pods";
    let items: Vec<Item> = targets
        .objects
        .iter()
        .filter_map(|o| {
            if pods {
                pod_item(o, &summaries)
            } else {
                node_item(o, &summaries)
            }
        })
        .collect();
    answer(action, items)
}

/// The objects asked about and the kubelets to ask.
struct Targets {
    objects: Vec<Value>,
    kubelets: Vec<Kubelet>,
}

struct Kubelet {
    node: String,
    address: String,
    port: u16,
}

/// The Nodes or Pods `action` names or selects (a missing one is the core resource's 404)
/// and the kubelets of their nodes.
fn targets(api: &Api, action: &Action) -> Result<Targets, ApiError> {
    let plural = action.resource.plural;
    let core = crate::resources::find("", "v1", plural).expect("nodes and pods are built in");
    let objects = match &action.name {
        Some(name) => {
            let kv = api
                .store
                .get(&core.key(action.namespace.as_deref(), name))?
                .ok_or_else(|| {
                    ApiError::NotFound(Subject {
                        group: String::new(),
                        kind: plural.to_owned(),
                        name: name.clone(),
                    })
                })?;
            vec![decode_object(&kv)?]
        }
        None => {
            let list = Action {
                verb: Verb::List,
                resource: core,
                namespace: action.namespace.clone(),
                name: None,
                options: Options {
                    label_selector: action.options.label_selector.clone(),
                    field_selector: action.options.field_selector.clone(),
                    ..Options::default()
                },
                as_table: false,
                subresource: None,
                body: Default::default(),
                user: None,
            };
            api.list_items(&list)?.items
        }
    };
    let nodes: Vec<Value> = if plural == "nodes" {
        objects.clone()
    } else {
        let mut names: Vec<&str> = objects
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut nodes = Vec::new();
        for name in names {
            nodes.extend(crate::nodeproxy::stored(&*api.store, "nodes", None, name)?);
        }
        nodes
    };
    let kubelets = nodes
        .iter()
        .filter_map(|node| {
            let (address, port) = crate::nodeproxy::kubelet_endpoint(node)?;
            Some(Kubelet {
                node: node["metadata"]["name"].as_str()?.to_owned(),
                address,
                port,
            })
        })
        .collect();
    Ok(Targets { objects, kubelets })
}

/// Every kubelet's summary, asked all at once; those that fail or are late are left out
/// (and logged).
async fn fetch(proxy: Arc<dyn NodeProxy>, kubelets: Vec<Kubelet>) -> HashMap<String, Summary> {
    let tasks: Vec<_> = kubelets
        .into_iter()
        .map(|k| {
            let proxy = proxy.clone();
            let task = tokio::spawn(async move {
                let answer = tokio::time::timeout(
                    NODE_TIMEOUT,
                    proxy.get(k.address, k.port, KUBELET_PATH.to_owned()),
                )
                .await
                .map_err(|_| format!("no answer within {} s", NODE_TIMEOUT.as_secs()))?
                .map_err(|e| e.to_string())?;
                let body = answer
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                serde_json::from_slice::<Summary>(&body)
                    .map_err(|e| format!("unreadable answer: {e}"))
            });
            (k.node, task)
        })
        .collect();
    let mut out = HashMap::new();
    for (node, task) in tasks {
        match task.await {
            Ok(Ok(summary)) => {
                out.insert(node, summary);
            }
            Ok(Err(e)) => eprintln!("cairn: apiserver: metrics of node {node}: {e}"),
            Err(e) => eprintln!("cairn: apiserver: metrics of node {node}: {e}"),
        }
    }
    out
}

/// One NodeMetrics or PodMetrics before it is written out.
struct Item {
    metadata: Value,
    time: String,
    window_nanos: u64,
    figures: Figures,
}

enum Figures {
    Node(Usage),
    /// Each running container's, by name.
    Pod(Vec<(String, Usage)>),
}

fn metadata(object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut out = json!({"name": meta["name"], "creationTimestamp": crate::meta::now()});
    if let Some(ns) = meta.get("namespace") {
        out["namespace"] = ns.clone();
    }
    if let Some(labels) = meta
        .get("labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
    {
        out["labels"] = labels.clone();
    }
    out
}

fn node_item(node: &Value, summaries: &HashMap<String, Summary>) -> Option<Item> {
    let summary = summaries.get(node["metadata"]["name"].as_str()?)?;
    Some(Item {
        metadata: metadata(node),
        time: summary.time.clone(),
        window_nanos: summary.window_nanos,
        figures: Figures::Node(summary.node),
    })
}

/// The pod's running containers in the order its spec lists them; `None` when none runs.
fn pod_item(pod: &Value, summaries: &HashMap<String, Summary>) -> Option<Item> {
    let summary = summaries.get(pod["spec"]["nodeName"].as_str()?)?;
    let uid = pod["metadata"]["uid"].as_str()?;
    let found = summary.pods.iter().find(|p| p.uid == uid)?;
    let order: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut containers: Vec<(String, Usage)> = found
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.usage))
        .collect();
    containers.sort_by_key(|(name, _)| order.iter().position(|n| n == name));
    if containers.is_empty() {
        return None;
    }
    Some(Item {
        metadata: metadata(pod),
        time: summary.time.clone(),
        window_nanos: summary.window_nanos,
        figures: Figures::Pod(containers),
    })
}

impl Item {
    fn to_json(&self) -> Value {
        let mut out = json!({
            "metadata": self.metadata,
            "timestamp": self.time,
            "window": go_duration(self.window_nanos),
        });
        match &self.figures {
            Figures::Node(usage) => out["usage"] = usage.to_json(),
            Figures::Pod(containers) => {
                out["containers"] = containers
                    .iter()
                    .map(|(name, u)| json!({"name": name, "usage": u.to_json()}))
                    .collect();
            }
        }
        out
    }

    /// The node's usage, or the sum of the pod's containers'.
    fn total(&self) -> Usage {
        match &self.figures {
            Figures::Node(usage) => *usage,
            Figures::Pod(containers) => Usage::sum(containers.iter().map(|(_, u)| u)),
        }
    }
}

/// The object, list or Table `action` asks for.
fn answer(action: &Action, items: Vec<Item>) -> Result<Value, ApiError> {
    let kind = action.resource.kind;
    if let Some(name) = &action.name {
        if items.is_empty() {
            let name = match &action.namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => name.clone(),
            };
            return Err(ApiError::NotFound(Subject {
                group: GROUP.into(),
                kind: kind.to_ascii_lowercase(),
                name,
            }));
        }
    }
    if action.as_table {
        return Ok(table(&items));
    }
    let mut objects = items.iter().map(Item::to_json);
    if action.name.is_some() {
        let mut one = objects.next().unwrap_or_default();
        one["kind"] = json!(kind);
        one["apiVersion"] = json!(API_VERSION);
        return Ok(one);
    }
    Ok(json!({
        "kind": action.resource.list_kind(),
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": objects.collect::<Vec<_>>(),
    }))
}

/// metrics-server's table: name, CPU and memory (a pod's summed over its containers), window.
fn table(items: &[Item]) -> Value {
    let column = |name: &str, format: &str| json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0});
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let total = item.total();
            let show = |v: Option<String>| v.unwrap_or_else(|| "<unknown>".into());
            json!({
                "cells": [
                    item.metadata["name"],
                    show(total.cpu_nano_cores.map(cpu_quantity)),
                    show(total.memory_working_set_bytes.map(memory_quantity)),
                    go_duration(item.window_nanos),
                ],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.metadata,
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "name"),
            column("cpu", "quantity"),
            column("memory", "quantity"),
            column("Window", "duration"),
        ],
        "rows": rows,
    })
}

/// CPU in Kubernetes' canonical form, from nanocores: `1234567n`, `250m`, `1500m`, `2`.
pub fn cpu_quantity(nanos: u64) -> String {
    canonical(nanos, 1000, &["n", "u", "m", "", "k", "M", "G"])
}

/// Bytes in Kubernetes' canonical binary form: `64Mi`, `1536Ki`, `1000`.
pub fn memory_quantity(bytes: u64) -> String {
    canonical(bytes, 1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
}

/// `value` in the largest unit of `suffixes` (each `base` times the last) it is a whole
/// number of, as `resource.Quantity` prints itself.
fn canonical(value: u64, base: u64, suffixes: &[&str]) -> String {
    if value == 0 {
        return "0".into();
    }
    let (mut v, mut i) = (value, 0);
    while v % base == 0 && i + 1 < suffixes.len() {
        v /= base;
        i += 1;
    }
    format!("{v}{}", suffixes[i])
}

/// A duration as Go prints one (`metav1.Duration`): `1.002s`, `1m0.5s`, `500ms`.
pub fn go_duration(nanos: u64) -> String {
    const SECOND: u64 = 1_000_000_000;
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < SECOND {
        let (unit, scale) = match nanos {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let secs = nanos / SECOND;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&decimal(secs % 60 * SECOND + nanos % SECOND, SECOND));
    out.push('s');
    out
}

/// `value / scale` with the fraction's trailing zeros dropped (`scale` a power of ten).
fn decimal(value: u64, scale: u64) -> String {
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let width = scale.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
