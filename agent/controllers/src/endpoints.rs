//! Endpoints and EndpointSlices for Services: the addresses of the pods a Service selects.
//!
//! For every Service with a selector, the pods it selects that have an IP become the
//! Service's `Endpoints` (ready ones under `addresses`, others under `notReadyAddresses`) and
//! one `EndpointSlice` (`<service>-<hash>`, labelled `kubernetes.io/service-name`, owned by
//! the Service, with `ready`/`serving`/`terminating` conditions). Ports are the Service's,
//! with named `targetPort`s resolved against each pod's container ports (pods that resolve
//! a port differently land in their own subset). Services without a selector keep the
//! Endpoints their users write. A deleted Service's Endpoints are deleted with it (its slice
//! goes through the garbage collector).

use std::collections::BTreeMap;

use cairn_apiserver::selector::LabelSelector;
use serde_json::{json, Value};

use crate::client::{Client, Res, PODS};
use crate::runtime::{controller_ref, Controller, Key, Outcome, Watched};

pub const SERVICES: Res = Res::core("services");
pub const ENDPOINTS: Res = Res::core("endpoints");
pub const ENDPOINT_SLICES: Res = Res::named("discovery.k8s.io", "endpointslices");

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

pub struct Endpoints;

impl Controller for Endpoints {
    fn name(&self) -> &'static str {
        "endpoint-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: SERVICES,
                keys: |svc| vec![Key::of(svc)],
            },
            Watched {
                resource: PODS,
                // Any service of the namespace may select it.
                keys: |pod| {
                    vec![Key::new(
                        pod["metadata"]["namespace"].as_str().unwrap_or(""),
                        "*",
                    )]
                },
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        if key.name == "*" {
            let services = client
                .list(SERVICES, &key.namespace)
                .map_err(|e| e.to_string())?;
            let pods = client
                .list(PODS, &key.namespace)
                .map_err(|e| e.to_string())?;
            for svc in services.iter().filter(|s| has_selector(s)) {
                sync(client, svc, &pods)?;
            }
            return Ok(Outcome::Done);
        }
        match client
            .get(SERVICES, &key.namespace, &key.name)
            .map_err(|e| e.to_string())?
        {
            Some(svc) if has_selector(&svc) => {
                let pods = client
                    .list(PODS, &key.namespace)
                    .map_err(|e| e.to_string())?;
                sync(client, &svc, &pods)?;
            }
            Some(_) => {}
            None => client
                .delete(ENDPOINTS, &key.namespace, &key.name, None)
                .map_err(|e| e.to_string())?,
        }
        Ok(Outcome::Done)
    }
}

fn has_selector(svc: &Value) -> bool {
    svc["spec"]["selector"]
        .as_object()
        .is_some_and(|s| !s.is_empty())
}

/// One pod's endpoint: address, readiness and resolved ports.
struct Found<'a> {
    pod: &'a Value,
    ip: &'a str,
    ready: bool,
    terminating: bool,
    ports: Vec<Value>,
}

fn sync(client: &Client, svc: &Value, pods: &[Value]) -> Result<(), String> {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let selector_json = json!({"matchLabels": svc["spec"]["selector"]});
    let selector = LabelSelector::from_json(&selector_json).map_err(|e| e.0)?;
    let mut found: Vec<Found> = Vec::new();
    for pod in pods {
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        if ip.is_empty()
            || !selector.matches_object(pod)
            || matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
        {
            continue;
        }
        found.push(Found {
            pod,
            ip,
            ready: crate::pods::ready_since(pod).is_some(),
            terminating: pod["metadata"].get("deletionTimestamp").is_some(),
            ports: ports_for(svc, pod),
        });
    }
    found.sort_by(|a, b| a.ip.cmp(b.ip));
    write_endpoints(client, svc, ns, name, &found)?;
    write_slice(client, svc, ns, name, &found)
}

/// The Service's ports for `pod`: `targetPort` resolved (a name through the pod's ports).
fn ports_for(svc: &Value, pod: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
        let target = &p["targetPort"];
        let port = match target {
            Value::Number(n) => n.as_i64(),
            Value::String(named) => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|cp| cp["name"] == named.as_str())
                .and_then(|cp| cp["containerPort"].as_i64()),
            _ => p["port"].as_i64(),
        };
        let Some(port) = port else { continue };
        let mut entry = json!({"port": port, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
        if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
            entry["name"] = json!(n);
        }
        out.push(entry);
    }
    out
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"], "uid": pod["metadata"]["uid"]})
}

fn write_endpoints(
    client: &Client,
    svc: &Value,
    ns: &str,
    name: &str,
    found: &[Found],
) -> Result<(), String> {
    // Pods resolving the ports alike share a subset.
    #[derive(Default)]
    struct Subset {
        ready: Vec<Value>,
        not_ready: Vec<Value>,
        ports: Vec<Value>,
    }
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    for f in found.iter().filter(|f| !f.terminating) {
        let key = serde_json::to_string(&f.ports).unwrap_or_default();
        let entry = subsets.entry(key).or_insert_with(|| Subset {
            ports: f.ports.clone(),
            ..Subset::default()
        });
        let mut address = json!({"ip": f.ip, "targetRef": target_ref(f.pod)});
        if let Some(node) = f.pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            address["nodeName"] = json!(node);
        }
        if f.ready {
            entry.ready.push(address);
        } else {
            entry.not_ready.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|subset| {
            let mut s = json!({"ports": subset.ports});
            if !subset.ready.is_empty() {
                s["addresses"] = json!(subset.ready);
            }
            if !subset.not_ready.is_empty() {
                s["notReadyAddresses"] = json!(subset.not_ready);
            }
            s
        })
        .collect();
    let labels = svc["metadata"]["labels"].clone();
    match client.get(ENDPOINTS, ns, name).map_err(|e| e.to_string())? {
        Some(mut current) => {
            let wanted_subsets = json!(subsets);
            let same_subsets = current["subsets"] == wanted_subsets
                || (subsets.is_empty() && current["subsets"].is_null());
            if same_subsets && current["metadata"]["labels"] == labels {
                return Ok(());
            }
            current["subsets"] = wanted_subsets;
            current["metadata"]["labels"] = labels;
            client
                .update(ENDPOINTS, ns, &current)
                .map(drop)
                .map_err(|e| format!("updating endpoints {ns}/{name}: {e}"))
        }
        None => {
            let endpoints = json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "subsets": subsets,
            });
            match client.create(ENDPOINTS, ns, &endpoints) {
                Ok(_) | Err(cairn_apiserver::ApiError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(format!("creating endpoints {ns}/{name}: {e}")),
            }
        }
    }
}

fn write_slice(
    client: &Client,
    svc: &Value,
    ns: &str,
    name: &str,
    found: &[Found],
) -> Result<(), String> {
    let endpoints: Vec<Value> = found
        .iter()
        .map(|f| {
            let mut e = json!({
                "addresses": [f.ip],
                "conditions": {"ready": f.ready && !f.terminating, "serving": f.ready, "terminating": f.terminating},
                "targetRef": target_ref(f.pod),
            });
            if let Some(node) = f.pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                e["nodeName"] = json!(node);
            }
            e
        })
        .collect();
    let ports = found
        .first()
        .map_or_else(|| ports_for(svc, &Value::Null), |f| f.ports.clone());
    let slice_name = format!("{name}-{}", crate::deployment::template_hash(&json!(name)));
    let mut labels = svc["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[SERVICE_NAME] = json!(name);
    labels[MANAGED_BY] = json!(MANAGER);
    let wanted = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": ns, "labels": labels,
                     "ownerReferences": [controller_ref(svc)]},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    });
    match client
        .get(ENDPOINT_SLICES, ns, &slice_name)
        .map_err(|e| e.to_string())?
    {
        Some(mut current) => {
            let same = ["endpoints", "ports", "addressType"].iter().all(|f| {
                current[f] == wanted[f] || (current[f].is_null() && wanted[f] == json!([]))
            }) && current["metadata"]["labels"] == wanted["metadata"]["labels"]
                && current["metadata"]["ownerReferences"] == wanted["metadata"]["ownerReferences"];
            if same {
                return Ok(());
            }
            for f in ["endpoints", "ports", "addressType"] {
                current[f] = wanted[f].clone();
            }
            current["metadata"]["labels"] = wanted["metadata"]["labels"].clone();
            current["metadata"]["ownerReferences"] = wanted["metadata"]["ownerReferences"].clone();
            client
                .update(ENDPOINT_SLICES, ns, &current)
                .map(drop)
                .map_err(|e| format!("updating endpointslice {ns}/{slice_name}: {e}"))
        }
        None => match client.create(ENDPOINT_SLICES, ns, &wanted) {
            Ok(_) | Err(cairn_apiserver::ApiError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(format!("creating endpointslice {ns}/{slice_name}: {e}")),
        },
    }
}
