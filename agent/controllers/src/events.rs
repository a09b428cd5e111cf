//! Events for what controllers do (`kubectl describe` shows them). An Event that cannot be
//! written is logged and otherwise ignored: it never fails the work it reports.

use serde_json::{json, Value};

use crate::client::{Client, EVENTS};

/// Records a `core/v1` Event about `object`.
pub fn record(
    client: &Client,
    object: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let meta = &object["metadata"];
    let namespace = meta["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": format!("{}.", meta["name"].as_str().unwrap_or("object")),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    if let Err(e) = client.create(EVENTS, namespace, &event) {
        eprintln!(
            "cairn: {component}: event {reason} for {}: {e}",
            meta["name"]
        );
    }
}
