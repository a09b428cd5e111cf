//! A pod's `status` from what the kubelet knows of its containers: phase, conditions and
//! container statuses, in the shapes kubectl prints.

use serde_json::{json, Map, Value};

/// What one container is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { id: String, started_at: String },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub id: String,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
}

/// One container's status as the pod worker keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: u32,
    pub ready: bool,
    /// Running and past its startup probe.
    pub started: bool,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            restarts: 0,
            ready: false,
            started: false,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started && matches!(self.state, State::Running { .. }),
            "state": state_json(&self.state),
            "lastState": self.last.as_ref().map(|t| json!({"terminated": terminated_json(t)})).unwrap_or(json!({})),
        });
        let id = match &self.state {
            State::Running { id, .. } => Some(id),
            State::Terminated(t) => Some(&t.id),
            State::Waiting { .. } => None,
        };
        if let Some(id) = id {
            v["containerID"] = json!(format!("cairn://{id}"));
        }
        v
    }
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
        State::Running { started_at, .. } => json!({"running": {"startedAt": seconds(started_at)}}),
        State::Terminated(t) => json!({"terminated": terminated_json(t)}),
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": seconds(&t.finished_at),
        "containerID": format!("cairn://{}", t.id),
    });
    if let Some(s) = &t.started_at {
        v["startedAt"] = json!(seconds(s));
    }
    if let Some(sig) = t.signal {
        v["signal"] = json!(sig);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

/// API times have whole seconds: `2026-11-22T12:00:00.123456789Z` → `2026-11-22T12:00:00Z`.
pub fn seconds(t: &str) -> String {
    match (t.find('.'), t.ends_with('Z')) {
        (Some(dot), true) => format!("{}Z", &t[..dot]),
        _ => t.to_owned(),
    }
}

/// Everything that goes into the status besides the containers.
pub struct Pod<'a> {
    pub restart_policy: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: &'a str,
    /// All init containers completed.
    pub initialized: bool,
    /// The sandbox could not be made (volumes, namespace): the reason.
    pub failure: Option<(&'a str, &'a str)>,
}

/// The whole `status` object, keeping conditions' transition times from `old`.
pub fn build(pod: &Pod, init: &[Container], app: &[Container], old: &Value, now: &str) -> Value {
    let phase = phase(pod, init, app);
    let all_ready = !app.is_empty() && app.iter().all(|c| c.ready);
    let unready: Vec<&str> = app
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let not_ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    let done = matches!(phase, "Succeeded" | "Failed");
    let conditions = [
        (
            "PodReadyToStartContainers",
            pod.failure.is_none() && !done,
            pod.failure
                .map(|(reason, message)| (reason, message.to_owned())),
        ),
        (
            "Initialized",
            pod.initialized,
            (!pod.initialized).then(|| {
                (
                    "ContainersNotInitialized",
                    "containers with incomplete status".to_owned(),
                )
            }),
        ),
        (
            "Ready",
            all_ready,
            (!all_ready).then(|| {
                (
                    if done {
                        "PodCompleted"
                    } else {
                        "ContainersNotReady"
                    },
                    not_ready_msg.clone(),
                )
            }),
        ),
        (
            "ContainersReady",
            all_ready,
            (!all_ready).then(|| {
                (
                    if done {
                        "PodCompleted"
                    } else {
                        "ContainersNotReady"
                    },
                    not_ready_msg.clone(),
                )
            }),
        ),
        ("PodScheduled", true, None),
    ];
    let old_conditions = old["conditions"].as_array().cloned().unwrap_or_default();
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|(kind, ok, why)| {
            let status = if *ok { "True" } else { "False" };
            let since = old_conditions
                .iter()
                .find(|c| c["type"] == *kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now);
            let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some((reason, message)) = why {
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            c
        })
        .collect();
    let mut status = Map::new();
    status.insert("phase".into(), json!(phase));
    status.insert("conditions".into(), json!(conditions));
    status.insert("hostIP".into(), json!(pod.host_ip));
    status.insert("hostIPs".into(), json!([{"ip": pod.host_ip}]));
    if let Some(ip) = pod.pod_ip {
        status.insert("podIP".into(), json!(ip));
        status.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    status.insert(
        "startTime".into(),
        json!(old["startTime"].as_str().unwrap_or(pod.start_time)),
    );
    status.insert("qosClass".into(), old["qosClass"].clone());
    if !init.is_empty() {
        status.insert(
            "initContainerStatuses".into(),
            json!(init.iter().map(Container::json).collect::<Vec<_>>()),
        );
    }
    status.insert(
        "containerStatuses".into(),
        json!(app.iter().map(Container::json).collect::<Vec<_>>()),
    );
    if let Some((reason, message)) = pod.failure {
        status.insert("reason".into(), json!(reason));
        status.insert("message".into(), json!(message));
    }
    if status["qosClass"].is_null() {
        status.remove("qosClass");
    }
    Value::Object(status)
}

/// The pod phase from its containers and restart policy.
pub fn phase(pod: &Pod, init: &[Container], app: &[Container]) -> &'static str {
    let never = pod.restart_policy == "Never";
    let failed_init = init
        .iter()
        .any(|c| matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
    if never && failed_init {
        return "Failed";
    }
    if !pod.initialized {
        return "Pending";
    }
    let terminated = |c: &Container| matches!(c.state, State::Terminated(_));
    let running = |c: &Container| matches!(c.state, State::Running { .. });
    let ever_started = |c: &Container| running(c) || terminated(c) || c.last.is_some();
    if app.iter().any(running) {
        return "Running";
    }
    if !app.is_empty() && app.iter().all(terminated) {
        let all_ok = app.iter().all(Container::succeeded);
        return match pod.restart_policy {
            "Always" => "Running",
            "OnFailure" if all_ok => "Succeeded",
            "OnFailure" => "Running",
            _ if all_ok => "Succeeded",
            _ => "Failed",
        };
    }
    if app.iter().all(ever_started) && !app.is_empty() && pod.restart_policy != "Never" {
        // Waiting to be restarted (back-off).
        return "Running";
    }
    "Pending"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(name: &str, code: i32) -> Container {
        let mut c = Container::new(name, "busybox");
        c.state = State::Terminated(Terminated {
            id: format!("{name}-0"),
            exit_code: code,
            signal: None,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: Some("2026-11-22T10:00:00.5Z".into()),
            finished_at: "2026-11-22T10:00:01.25Z".into(),
        });
        c
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let pod = |policy| Pod {
            restart_policy: policy,
            host_ip: "10.0.0.1",
            pod_ip: None,
            start_time: "t",
            initialized: true,
            failure: None,
        };
        assert_eq!(phase(&pod("Never"), &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            phase(&pod("Never"), &[], &[exited("a", 0), exited("b", 1)]),
            "Failed"
        );
        assert_eq!(
            phase(&pod("OnFailure"), &[], &[exited("a", 0)]),
            "Succeeded"
        );
        assert_eq!(phase(&pod("Always"), &[], &[exited("a", 0)]), "Running");
        let mut running = Container::new("a", "busybox");
        running.state = State::Running {
            id: "a-0".into(),
            started_at: "x".into(),
        };
        assert_eq!(
            phase(&pod("Never"), &[], &[running, exited("b", 1)]),
            "Running"
        );
        assert_eq!(
            phase(&pod("Always"), &[], &[Container::new("a", "b")]),
            "Pending"
        );
        let failed_init = [exited("init", 2)];
        let mut p = pod("Never");
        p.initialized = false;
        assert_eq!(
            phase(&p, &failed_init, &[Container::new("a", "b")]),
            "Failed"
        );
    }

    #[test]
    fn status_has_kubectls_shapes_and_keeps_transition_times() {
        let pod = Pod {
            restart_policy: "Never",
            host_ip: "10.0.0.1",
            pod_ip: Some("10.42.0.2"),
            start_time: "2026-11-22T10:00:00Z",
            initialized: true,
            failure: None,
        };
        let old = json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-22T09:00:00Z"}]});
        let s = build(&pod, &[], &[exited("a", 3)], &old, "2026-11-22T10:00:05Z");
        assert_eq!(s["phase"], "Failed");
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 3);
        assert_eq!(t["reason"], "Error");
        assert_eq!(t["startedAt"], "2026-11-22T10:00:00Z");
        assert_eq!(s["containerStatuses"][0]["containerID"], "cairn://a-0");
        let scheduled = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .unwrap();
        assert_eq!(scheduled["lastTransitionTime"], "2026-11-22T09:00:00Z");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "PodCompleted");
        assert_eq!(s["podIP"], "10.42.0.2");
    }

    #[test]
    fn a_sandbox_failure_is_the_reason_of_its_condition_and_of_the_pod() {
        let pod = Pod {
            restart_policy: "Always",
            host_ip: "10.0.0.1",
            pod_ip: None,
            start_time: "2026-11-22T10:00:00Z",
            initialized: true,
            failure: Some(("NetworkNotReady", "network is not ready: no pod range yet")),
        };
        let s = build(&pod, &[], &[Container::new("a", "b")], &json!({}), "t");
        let sandbox = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodReadyToStartContainers")
            .unwrap();
        assert_eq!(sandbox["status"], "False");
        assert_eq!(sandbox["reason"], "NetworkNotReady");
        assert_eq!(sandbox["message"], "network is not ready: no pod range yet");
        assert_eq!(s["reason"], "NetworkNotReady");
        assert_eq!(s["phase"], "Pending");
        assert!(s.get("podIP").is_none());
    }
}
