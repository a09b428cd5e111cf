//! Events for what controllers do (`kubectl describe` shows them). An Event that cannot be
//! written is logged and otherwise ignored: it never fails the work it reports. Events are
//! deleted an hour after they were last seen ([`TTL`], as kube-apiserver's default), so a
//! long-running node's datastore does not grow with them.

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
    let now = cairn_apiserver::meta::now();
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

/// How long Events are kept (kube-apiserver's `--event-ttl` default).
pub const TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes Events last seen more than `ttl` before `now`; returns how many.
pub fn expire(
    client: &Client,
    now: jiff::Timestamp,
    ttl: std::time::Duration,
) -> Result<usize, String> {
    let cutoff = now.as_second() - ttl.as_secs() as i64;
    let mut deleted = 0;
    for event in client.list(EVENTS, "").map_err(|e| e.to_string())? {
        let meta = &event["metadata"];
        let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|f| event[f].as_str())
            .or_else(|| meta["creationTimestamp"].as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if last.is_some_and(|t| t.as_second() < cutoff) {
            let options = json!({"preconditions": {"uid": meta["uid"]}});
            client
                .delete(
                    EVENTS,
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or(""),
                    Some(&options),
                )
                .map_err(|e| e.to_string())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Expires Events every ten minutes until the runtime stops.
pub async fn run_expiry(client: Client) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let c = client.clone();
        let result =
            tokio::task::spawn_blocking(move || expire(&c, jiff::Timestamp::now(), TTL)).await;
        if let Ok(Err(e)) = result {
            eprintln!("cairn: event-ttl: {e}");
        }
    }
}
