//! `meta.k8s.io/v1 Table` answers for `kubectl get`: per-kind columns, like kube-apiserver's
//! printers. Rows carry `PartialObjectMetadata` (kubectl's `--show-labels` reads it).

use serde_json::{json, Value};

use crate::meta::{age, meta_str};
use crate::resources::Resource;

/// Column name and type (`string`, `integer`, `date`).
type Column = (&'static str, &'static str);

fn columns(resource: &Resource) -> Vec<Column> {
    match resource.kind {
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
        _ => vec![("Name", "string"), ("Age", "string")],
    }
}

fn count(v: &Value) -> Value {
    json!(v.as_object().map_or(0, serde_json::Map::len))
}

fn cells(resource: &Resource, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(meta_str(obj, "name"));
    let created = age(meta_str(obj, "creationTimestamp"), now);
    match resource.kind {
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
    let defs: Vec<Value> = columns(resource)
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": if i > 4 { 1 } else { 0 }})
        })
        .collect();
    let mut metadata = json!({});
    for field in ["resourceVersion", "continue"] {
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
        let list = json!({"metadata": {"resourceVersion": "9"}, "items": [
            {"metadata": {"name": "a", "creationTimestamp": "2025-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}}
        ]});
        let t = to_table(find("", "v1", "configmaps").unwrap(), &list);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        assert_eq!(t["columnDefinitions"][1]["name"], "Data");
        assert_eq!(t["rows"][0]["cells"][0], "a");
        assert_eq!(t["rows"][0]["cells"][1], 2);
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "a");
    }
}
