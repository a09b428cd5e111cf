//! What controllers need to know about a pod: active, ready, available, and how expendable.

use std::time::Duration;

use serde_json::{json, Value};

/// Neither finished (`Succeeded`/`Failed`) nor being deleted.
pub fn is_active(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) && pod["metadata"].get("deletionTimestamp").is_none()
}

/// The pod's `Ready` condition, if `True`: since when.
pub fn ready_since(pod: &Value) -> Option<jiff::Timestamp> {
    let ready = pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    Some(
        ready["lastTransitionTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

/// How a pod counts towards a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    NotReady,
    /// Ready, but not yet for `minReadySeconds`: available after this long.
    ReadyFor(Duration),
    Available,
}

pub fn state(pod: &Value, min_ready: Duration, now: jiff::Timestamp) -> PodState {
    let Some(since) = ready_since(pod) else {
        return PodState::NotReady;
    };
    if min_ready.is_zero() {
        return PodState::Available;
    }
    let ready_for = Duration::from_secs((now.as_second() - since.as_second()).max(0) as u64);
    match min_ready.checked_sub(ready_for) {
        Some(left) if !left.is_zero() => PodState::ReadyFor(left),
        _ => PodState::Available,
    }
}

/// Sort key for scaling down: unscheduled, then pending, then not ready, then newest first.
pub fn deletion_rank(pod: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let running = pod["status"]["phase"] == "Running";
    let ready = ready_since(pod).is_some();
    let created = pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(ready),
        std::cmp::Reverse(created),
    )
}

/// A pod for `owner` (a ReplicaSet or Job): its template's metadata and spec, named
/// `<owner>-<random>`, controlled by it.
pub fn from_template(owner: &Value) -> Value {
    let template = &owner["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["generateName"] = json!(format!(
        "{}-",
        owner["metadata"]["name"].as_str().unwrap_or("")
    ));
    metadata["ownerReferences"] = json!([crate::runtime::controller_ref(owner)]);
    if let Some(m) = metadata.as_object_mut() {
        m.remove("name");
        m.remove("creationTimestamp");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}
