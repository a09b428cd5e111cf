//! `meta.k8s.io/v1 Table` answers for `kubectl get`: per-kind columns, like kube-apiserver's
//! printers. Rows carry `PartialObjectMetadata` (kubectl's `--show-labels` reads it).

use serde_json::{json, Value};

use crate::meta::{age, meta_str};
use crate::resources::Resource;

/// Column name and type (`string`, `integer`, `date`).
type Column = (&'static str, &'static str);

fn columns(resource: &Resource) -> Vec<Column> {
    if let Some(custom) = resource.custom {
        return custom_columns(custom)
            .into_iter()
            .map(|(name, kind, _)| (name, kind))
            .collect();
    }
    match resource.kind {
        "CustomResourceDefinition" => vec![("Name", "string"), ("Created At", "date")],
        "Namespace" => vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
        "ConfigMap" => vec![("Name", "string"), ("Data", "integer"), ("Age", "string")],
        "Secret" => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Data", "integer"),
            ("Age", "string"),
        ],
        "ServiceAccount" => vec![
            ("Name", "string"),
            ("Secrets", "integer"),
            ("Age", "string"),
        ],
        "Event" => vec![
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        "Lease" => vec![("Name", "string"), ("Holder", "string"), ("Age", "string")],
        "CertificateSigningRequest" => vec![
            ("Name", "string"),
            ("Age", "string"),
            ("SignerName", "string"),
            ("Requestor", "string"),
            ("RequestedDuration", "string"),
            ("Condition", "string"),
        ],
        "Node" => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Roles", "string"),
            ("Age", "string"),
            ("Version", "string"),
            ("Internal-IP", "string"),
            ("OS-Image", "string"),
            ("Kernel-Version", "string"),
        ],
        "Pod" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
            ("IP", "string"),
            ("Node", "string"),
        ],
        "Service" => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
            ("Age", "string"),
            ("Selector", "string"),
        ],
        "Deployment" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
            ("Containers", "string"),
            ("Images", "string"),
        ],
        "ReplicaSet" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Age", "string"),
            ("Containers", "string"),
            ("Images", "string"),
        ],
        "DaemonSet" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
        ],
        "StatefulSet" => vec![("Name", "string"), ("Ready", "string"), ("Age", "string")],
        "Job" => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Completions", "string"),
            ("Age", "string"),
        ],
        "CronJob" => vec![
            ("Name", "string"),
            ("Schedule", "string"),
            ("Suspend", "boolean"),
            ("Active", "integer"),
            ("Last Schedule", "string"),
            ("Age", "string"),
        ],
        "PersistentVolumeClaim" => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Volume", "string"),
            ("Capacity", "string"),
            ("StorageClass", "string"),
            ("Age", "string"),
        ],
        "StorageClass" => vec![
            ("Name", "string"),
            ("Provisioner", "string"),
            ("ReclaimPolicy", "string"),
            ("VolumeBindingMode", "string"),
            ("Age", "string"),
        ],
        _ => vec![("Name", "string"), ("Age", "string")],
    }
}

/// A custom resource's columns: Name, then its definition's printer columns (or Age), with
/// their priorities.
fn custom_columns(custom: &'static crate::crd::Custom) -> Vec<(&'static str, &'static str, i64)> {
    let mut out = vec![("Name", "string", 0)];
    if custom.columns.is_empty() {
        out.push(("Age", "date", 0));
    }
    out.extend(
        custom
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_.as_str(), c.priority)),
    );
    out
}

/// A custom resource's cells: each printer column's JSONPath, ages for dates, `<none>` for
/// nothing.
fn custom_cells(custom: &crate::crd::Custom, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut cells = vec![json!(meta_str(obj, "name"))];
    if custom.columns.is_empty() {
        cells.push(json!(age(meta_str(obj, "creationTimestamp"), now)));
    }
    for column in &custom.columns {
        let found = crate::crd::json_path(obj, &column.json_path);
        let cell = match found.as_slice() {
            [] => Value::Null,
            [Value::String(s)] if column.type_ == "date" => json!(age(s, now)),
            [one] => (*one).clone(),
            many => json!(many
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(",")),
        };
        cells.push(cell);
    }
    cells
}

/// Columns from this index on are shown by `-o wide` only.
fn wide_from(resource: &Resource) -> usize {
    match resource.kind {
        "Node" | "Pod" | "Deployment" | "ReplicaSet" => 5,
        "Service" => 6,
        _ => usize::MAX,
    }
}

fn text_or(v: &Value, default: &str) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!(default),
    }
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

/// Container names and images of a pod template, comma-separated.
fn containers(spec: &Value) -> (Value, Value) {
    let list = spec["containers"].as_array().cloned().unwrap_or_default();
    let join = |field: &str| {
        list.iter()
            .filter_map(|c| c[field].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    (json!(join("name")), json!(join("image")))
}

fn node_status(obj: &Value) -> String {
    let ready = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_owned(),
        Some(false) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if obj["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(obj: &Value) -> String {
    let roles: Vec<&str> = obj["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn pod_status(obj: &Value) -> String {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    let waiting = obj["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| {
            c["state"]["waiting"]["reason"]
                .as_str()
                .or_else(|| c["state"]["terminated"]["reason"].as_str())
        });
    waiting
        .or_else(|| obj["status"]["reason"].as_str())
        .or_else(|| obj["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_owned()
}

fn service_ports(obj: &Value) -> String {
    let ports: Vec<String> = obj["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// kubectl's CONDITION column: the conditions joined with commas, or Pending; Issued once
/// a certificate is there.
fn csr_condition(obj: &Value) -> String {
    let mut parts: Vec<String> = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str().map(str::to_owned))
        .collect();
    if parts.is_empty() {
        parts.push("Pending".into());
    }
    if obj["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
    {
        parts.push("Issued".into());
    }
    parts.join(",")
}

fn count(v: &Value) -> Value {
    json!(v.as_object().map_or(0, serde_json::Map::len))
}

fn cells(resource: &Resource, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    if let Some(custom) = resource.custom {
        return custom_cells(custom, obj, now);
    }
    let name = json!(meta_str(obj, "name"));
    let created = age(meta_str(obj, "creationTimestamp"), now);
    match resource.kind {
        "CustomResourceDefinition" => vec![name, json!(meta_str(obj, "creationTimestamp"))],
        "Namespace" => vec![name, obj["status"]["phase"].clone(), json!(created)],
        "ConfigMap" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(created)]
        }
        "Secret" => vec![
            name,
            obj["type"].clone(),
            count(&obj["data"]),
            json!(created),
        ],
        "ServiceAccount" => {
            let n = obj["secrets"].as_array().map_or(0, Vec::len);
            vec![name, json!(n), json!(created)]
        }
        "Event" => {
            let last = ["lastTimestamp", "eventTime"]
                .iter()
                .find_map(|f| obj[*f].as_str())
                .unwrap_or(meta_str(obj, "creationTimestamp"));
            let involved = &obj["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or("").to_lowercase(),
                involved["name"].as_str().unwrap_or("")
            );
            vec![
                json!(age(last, now)),
                obj["type"].clone(),
                obj["reason"].clone(),
                json!(object),
                obj["message"].clone(),
            ]
        }
        "Lease" => vec![name, obj["spec"]["holderIdentity"].clone(), json!(created)],
        "CertificateSigningRequest" => {
            let spec = &obj["spec"];
            let duration = spec["expirationSeconds"]
                .as_i64()
                .map_or("<none>".to_owned(), crate::meta::human_duration);
            vec![
                name,
                json!(created),
                spec["signerName"].clone(),
                spec["username"].clone(),
                json!(duration),
                json!(csr_condition(obj)),
            ]
        }
        "Node" => {
            let addresses = obj["status"]["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let internal = addresses
                .iter()
                .find(|a| a["type"] == "InternalIP")
                .map_or(json!("<none>"), |a| a["address"].clone());
            let info = &obj["status"]["nodeInfo"];
            vec![
                name,
                json!(node_status(obj)),
                json!(node_roles(obj)),
                json!(created),
                text_or(&info["kubeletVersion"], ""),
                internal,
                text_or(&info["osImage"], "<unknown>"),
                text_or(&info["kernelVersion"], "<unknown>"),
            ]
        }
        "Pod" => {
            let statuses = obj["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
                json!(created),
                text_or(&obj["status"]["podIP"], "<none>"),
                text_or(&obj["spec"]["nodeName"], "<none>"),
            ]
        }
        "Service" => {
            let external = obj["spec"]["externalIPs"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            let selector = obj["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                text_or(&obj["spec"]["type"], "ClusterIP"),
                text_or(&obj["spec"]["clusterIP"], "<none>"),
                json!(external),
                json!(service_ports(obj)),
                json!(created),
                json!(selector),
            ]
        }
        "Deployment" | "ReplicaSet" => {
            let st = &obj["status"];
            let (names, images) = containers(&obj["spec"]["template"]["spec"]);
            let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            if resource.kind == "Deployment" {
                let ready = st["readyReplicas"].as_i64().unwrap_or(0);
                vec![
                    name,
                    json!(format!("{ready}/{desired}")),
                    int(&st["updatedReplicas"]),
                    int(&st["availableReplicas"]),
                    json!(created),
                    names,
                    images,
                ]
            } else {
                vec![
                    name,
                    json!(desired),
                    int(&st["replicas"]),
                    int(&st["readyReplicas"]),
                    json!(created),
                    names,
                    images,
                ]
            }
        }
        "DaemonSet" => {
            let st = &obj["status"];
            vec![
                name,
                int(&st["desiredNumberScheduled"]),
                int(&st["currentNumberScheduled"]),
                int(&st["numberReady"]),
                int(&st["updatedNumberScheduled"]),
                int(&st["numberAvailable"]),
                json!(created),
            ]
        }
        "StatefulSet" => {
            let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
            let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![name, json!(format!("{ready}/{desired}")), json!(created)]
        }
        "Job" => {
            let st = &obj["status"];
            let conditions = st["conditions"].as_array().cloned().unwrap_or_default();
            let has = |t: &str| {
                conditions
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = obj["spec"]["completions"].as_i64().unwrap_or(1);
            let succeeded = st["succeeded"].as_i64().unwrap_or(0);
            vec![
                name,
                json!(status),
                json!(format!("{succeeded}/{completions}")),
                json!(created),
            ]
        }
        "CronJob" => {
            let last = obj["status"]["lastScheduleTime"]
                .as_str()
                .map_or_else(|| "<none>".to_owned(), |t| age(t, now));
            vec![
                name,
                obj["spec"]["schedule"].clone(),
                json!(obj["spec"]["suspend"].as_bool().unwrap_or(false)),
                json!(obj["status"]["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                json!(created),
            ]
        }
        "PersistentVolumeClaim" => vec![
            name,
            text_or(&obj["status"]["phase"], "Pending"),
            text_or(&obj["spec"]["volumeName"], ""),
            text_or(&obj["status"]["capacity"]["storage"], ""),
            text_or(&obj["spec"]["storageClassName"], "<unset>"),
            json!(created),
        ],
        "StorageClass" => vec![
            name,
            obj["provisioner"].clone(),
            text_or(&obj["reclaimPolicy"], "Delete"),
            text_or(&obj["volumeBindingMode"], "Immediate"),
            json!(created),
        ],
        _ => vec![name, json!(created)],
    }
}

/// A Table for a list (or a single object).
pub fn to_table(resource: &Resource, body: &Value) -> Value {
    let now = jiff::Timestamp::now();
    let objects: Vec<&Value> = match body["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![body],
    };
    let rows: Vec<Value> = objects.iter().map(|obj| row(resource, obj, now)).collect();
    let wide = wide_from(resource);
    let priorities: Vec<i64> = match resource.custom {
        Some(custom) => custom_columns(custom).into_iter().map(|c| c.2).collect(),
        None => Vec::new(),
    };
    let defs: Vec<Value> = columns(resource)
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let format = if name == "Name" { "name" } else { "" };
            let priority = priorities
                .get(i)
                .copied()
                .unwrap_or(i64::from(i >= wide));
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let mut metadata = json!({});
    for field in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = body["metadata"].get(field) {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn row(resource: &Resource, obj: &Value, now: jiff::Timestamp) -> Value {
    json!({
        "cells": cells(resource, obj, now),
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"].clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn configmap_table() {
        let list = json!({"metadata": {"resourceVersion": "9", "continue": "c", "remainingItemCount": 3}, "items": [
            {"metadata": {"name": "a", "creationTimestamp": "2025-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}}
        ]});
        let t = to_table(find("", "v1", "configmaps").unwrap(), &list);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        assert_eq!(t["metadata"]["continue"], "c");
        assert_eq!(t["metadata"]["remainingItemCount"], 3);
        assert_eq!(t["columnDefinitions"][1]["name"], "Data");
        assert_eq!(t["rows"][0]["cells"][0], "a");
        assert_eq!(t["rows"][0]["cells"][1], 2);
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "a");
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        let obj = json!({"metadata": {"name": "x"}, "spec": {}, "status": {}});
        for r in crate::resources::RESOURCES {
            assert_eq!(
                cells(r, &obj, jiff::Timestamp::now()).len(),
                columns(r).len(),
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn pod_and_node_rows() {
        let pod = json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        });
        let t = to_table(find("", "v1", "pods").unwrap(), &pod);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "true"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.35.0+cairn-0.1.0"}},
        });
        let t = to_table(find("", "v1", "nodes").unwrap(), &node);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.35.0+cairn-0.1.0");
    }
}
