//! The `scale` subresource: an `autoscaling/v1 Scale` view of a workload's `spec.replicas`
//! (what `kubectl scale` and autoscalers read and write). Custom resources say where their
//! replicas and selector are (`subresources.scale` of their definition).

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::Resource;

/// The Scale of a Deployment, ReplicaSet, StatefulSet or custom resource.
pub fn to_scale(resource: &Resource, obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata[field] = v.clone();
        }
    }
    let (spec_replicas, status_replicas, selector) =
        match resource.custom.and_then(|c| c.scale.as_ref()) {
            Some(paths) => {
                let at = |path: &str| crate::crd::json_path(obj, path).first().copied().cloned();
                (
                    at(&paths.spec_replicas)
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0),
                    at(&paths.status_replicas)
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0),
                    paths
                        .label_selector
                        .as_deref()
                        .and_then(at)
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                )
            }
            None => (
                obj["spec"]["replicas"].as_i64().unwrap_or(1),
                obj["status"]["replicas"].as_i64().unwrap_or(0),
                selector_string(&obj["spec"]["selector"]),
            ),
        };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": spec_replicas},
        "status": {
            "replicas": status_replicas,
            "selector": selector,
        },
    })
}

/// `old` with `spec.replicas` (or the custom resource's replicas path) taken from `scale`.
pub fn apply(resource: &Resource, old: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = &scale["spec"]["replicas"];
    let n = match replicas {
        Value::Null => 0,
        v => v
            .as_i64()
            .filter(|n| *n >= 0 && *n <= i64::from(i32::MAX))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "spec.replicas: Invalid value: {v}: must be a non-negative 32-bit integer"
                ))
            })?,
    };
    let mut obj = old.clone();
    let path = match resource.custom.and_then(|c| c.scale.as_ref()) {
        Some(paths) => paths.spec_replicas.as_str(),
        None => ".spec.replicas",
    };
    // A plain field path (`.spec.replicas`): definitions are checked to point under `.spec`.
    let mut at = &mut obj;
    for field in path.split('.').filter(|f| !f.is_empty()) {
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[field];
    }
    *at = json!(n);
    Ok(obj)
}

/// A label selector as the `key=value,key in (a,b)` text Scale carries.
fn selector_string(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let deploy = json!({
            "metadata": {"name": "web", "namespace": "d", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 1},
        });
        let deployments = crate::resources::find("apps", "v1", "deployments").unwrap();
        let scale = to_scale(deployments, &deploy);
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["replicas"], 1);
        assert_eq!(scale["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
        assert!(scale["metadata"].get("labels").is_none());
        let bigger = apply(deployments, &deploy, &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(bigger["spec"]["replicas"], 5);
        assert_eq!(bigger["spec"]["selector"], deploy["spec"]["selector"]);
        assert!(apply(deployments, &deploy, &json!({"spec": {"replicas": -1}})).is_err());
    }
}
