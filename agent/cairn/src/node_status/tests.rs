use super::*;
use crate::update::SlotReport;

fn facts() -> Facts {
    Facts {
        name: "edge-1".into(),
        role: Role::Server,
        os_version: "1.2.0".into(),
        kubelet_version: "v1.35.0+cairn-1.2.0".into(),
        kernel: "6.1.0-28-arm64".into(),
        arch: "arm64".into(),
        boot_id: "b00t".into(),
        machine_id: String::new(),
        addresses: vec![Ipv4Addr::new(10, 0, 2, 15)],
        cpus: 4,
        memory_kib: 1_000_000,
        labels: [("site".to_owned(), "lab".to_owned())].into(),
        key_id: Some("ab".repeat(32)),
        kubelet_port: 10250,
        kubelet_status: KubeletStatus::default(),
    }
}

fn record(result: &str, reason: Option<&str>) -> Record {
    Record {
        result: result.into(),
        from_version: "1.1.0".into(),
        to_version: "1.2.0".into(),
        slot: "b".into(),
        reason: reason.map(str::to_owned),
        at: 1_700_000_000,
    }
}

fn report(last: Option<Record>) -> Report {
    Report {
        node: "edge-1".into(),
        version: "1.2.0".into(),
        board: "qemu-aarch64".into(),
        arch: "aarch64".into(),
        running: SlotReport {
            slot: "b".into(),
            state: "committed".into(),
            version: Some("1.2.0".into()),
        },
        other: SlotReport {
            slot: "a".into(),
            state: "committed".into(),
            version: Some("1.1.0".into()),
        },
        last,
        upload: None,
    }
}

fn condition_of<'a>(node: &'a Value, kind: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {node}"))
}

#[test]
fn node_carries_identity_and_update_state() {
    let node = facts().node(
        Some(&report(Some(record("committed", None)))),
        "2026-01-02T03:04:05Z",
    );
    let info = &node["status"]["nodeInfo"];
    assert_eq!(info["osImage"], "Cairn 1.2.0");
    assert_eq!(info["architecture"], "arm64");
    assert_eq!(info["kernelVersion"], "6.1.0-28-arm64");
    assert_eq!(info["kubeletVersion"], "v1.35.0+cairn-1.2.0");
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/arch"], "arm64");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    assert_eq!(labels["update.cairn.dev/slot"], "b");
    assert_eq!(labels["update.cairn.dev/version"], "1.2.0");
    assert_eq!(labels["site"], "lab");
    let ann = &node["metadata"]["annotations"];
    assert_eq!(
        ann["update.cairn.dev/other-slot"],
        "a: Cairn 1.1.0 (committed)"
    );
    assert_eq!(
        ann["update.cairn.dev/last-update"],
        "committed 1.1.0 -> 1.2.0 (slot b)"
    );
    assert_eq!(ann["cairn.dev/node-key-sha256"], "ab".repeat(32));
    assert_eq!(condition_of(&node, "Ready")["status"], "True");
    let up = condition_of(&node, "OSUpdate");
    assert_eq!(up["status"], "True");
    assert_eq!(up["reason"], "UpdateCommitted");
    assert_eq!(node["status"]["capacity"]["memory"], "1000000Ki");
    assert_eq!(node["status"]["capacity"]["cpu"], "4");
    assert_eq!(
        node["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.2.15"},
               {"type": "Hostname", "address": "edge-1"}])
    );
    // The typed Kubernetes Node accepts it (the API server decodes into it).
    let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(node).unwrap();
    assert_eq!(
        typed.status.unwrap().node_info.unwrap().os_image,
        "Cairn 1.2.0"
    );
}

#[test]
fn rollback_shows_as_a_false_condition_with_the_reason() {
    let rec = record(
        "rolled-back",
        Some("not healthy within 300s: connection refused"),
    );
    let node = facts().node(Some(&report(Some(rec))), "T0");
    let up = condition_of(&node, "OSUpdate");
    assert_eq!(up["status"], "False");
    assert_eq!(up["reason"], "UpdateRolledBack");
    assert!(
        up["message"]
            .as_str()
            .unwrap()
            .ends_with("not healthy within 300s: connection refused"),
        "{up}"
    );
    let pending = facts().node(Some(&report(Some(record("pending", None)))), "T0");
    assert_eq!(condition_of(&pending, "OSUpdate")["status"], "Unknown");
    let none = facts().node(Some(&report(None)), "T0");
    assert_eq!(condition_of(&none, "OSUpdate")["reason"], "NoUpdate");
}

#[test]
fn nodes_without_slots_have_no_update_state() {
    let mut f = facts();
    f.role = Role::Agent;
    let node = f.node(None, "T0");
    assert!(node["metadata"]["labels"]
        .get("update.cairn.dev/slot")
        .is_none());
    assert!(node["metadata"]["labels"]
        .get("node-role.kubernetes.io/control-plane")
        .is_none());
    assert_eq!(node["status"]["conditions"].as_array().unwrap().len(), 1);
}

#[test]
fn plan_writes_only_what_changed() {
    let f = facts();
    let first = f.node(Some(&report(None)), "T0");
    assert_eq!(plan(None, first.clone(), true), Plan::Create(first.clone()));
    // As stored: the server added its metadata.
    let mut stored = first.clone();
    stored["metadata"]["uid"] = json!("u-1");
    stored["metadata"]["resourceVersion"] = json!("7");

    // Nothing but the clock moved: no write, unless a heartbeat is due.
    let later = f.node(Some(&report(None)), "T1");
    assert_eq!(
        plan(Some(&stored), later.clone(), false),
        Plan::Update {
            object: None,
            status: None
        }
    );
    let Plan::Update {
        object: None,
        status: Some(beat),
    } = plan(Some(&stored), later, true)
    else {
        panic!("a heartbeat writes the status only")
    };
    let ready = condition_of(&beat, "Ready");
    assert_eq!(ready["lastHeartbeatTime"], "T1");
    assert_eq!(
        ready["lastTransitionTime"], "T0",
        "status unchanged: transition kept"
    );
    assert_eq!(beat["metadata"]["uid"], "u-1");

    // An update rolled back: new annotation (object write) and a new OSUpdate status.
    let rolled = record("rolled-back", Some("boom"));
    let Plan::Update {
        object: Some(obj),
        status: Some(st),
    } = plan(
        Some(&stored),
        f.node(Some(&report(Some(rolled))), "T2"),
        false,
    )
    else {
        panic!("metadata and status both changed")
    };
    assert!(
        obj["metadata"]["annotations"]["update.cairn.dev/last-update"]
            .as_str()
            .unwrap()
            .starts_with("rolled-back")
    );
    assert_eq!(obj["metadata"]["resourceVersion"], "7");
    let up = condition_of(&st, "OSUpdate");
    assert_eq!(
        up["lastTransitionTime"], "T2",
        "True -> False is a transition"
    );
    assert_eq!(condition_of(&st, "Ready")["lastTransitionTime"], "T0");
}

#[test]
fn events_for_finished_updates_only() {
    assert!(update_event("edge-1", &record("pending", None), "T").is_none());
    let ok = update_event("edge-1", &record("committed", None), "T").unwrap();
    assert_eq!(ok["type"], "Normal");
    assert_eq!(ok["reason"], "UpdateCommitted");
    assert_eq!(ok["metadata"]["name"], "edge-1.update-1700000000");
    let bad = update_event(
        "edge-1",
        &record("rolled-back", Some("boom")),
        "2026-01-02T03:04:05Z",
    )
    .unwrap();
    assert_eq!(bad["type"], "Warning");
    assert_eq!(bad["reason"], "UpdateRolledBack");
    assert_eq!(bad["involvedObject"]["kind"], "Node");
    assert_eq!(bad["involvedObject"]["name"], "edge-1");
    assert!(bad["message"].as_str().unwrap().ends_with(": boom"));
    let typed: k8s_openapi::api::core::v1::Event = serde_json::from_value(bad).unwrap();
    assert_eq!(typed.count, Some(1));
}

#[test]
fn label_values_are_sanitised() {
    assert_eq!(label_value("1.2.0"), "1.2.0");
    assert_eq!(label_value("1.2.0+build 5"), "1.2.0_build_5");
    assert_eq!(label_value("-x-"), "x");
    assert_eq!(label_value(&"9".repeat(80)).len(), 63);
}

#[test]
fn lease_is_renewed_in_place() {
    let new = lease("edge-1", None, "2026-01-02T03:04:05.000001Z");
    assert_eq!(new["metadata"]["namespace"], "kube-node-lease");
    assert_eq!(new["spec"]["holderIdentity"], "edge-1");
    let mut stored = new.clone();
    stored["metadata"]["resourceVersion"] = json!("9");
    let renewed = lease("edge-1", Some(&stored), "2026-01-02T03:04:35.000001Z");
    assert_eq!(renewed["metadata"]["resourceVersion"], "9");
    assert_eq!(renewed["spec"]["renewTime"], "2026-01-02T03:04:35.000001Z");
    let typed: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(renewed).unwrap();
    assert_eq!(typed.spec.unwrap().lease_duration_seconds, Some(90));
}

#[test]
fn plan_keeps_labels_and_annotations_set_by_others() {
    let f = facts();
    let mut stored = f.node(Some(&report(Some(record("committed", None)))), "T0");
    stored["metadata"]["labels"]["team"] = json!("ops");
    stored["metadata"]["annotations"]["note"] = json!("rack 3");
    // Not on an A/B node any more (say): the update.cairn.dev keys go, the others stay.
    let Plan::Update {
        object: Some(obj), ..
    } = plan(Some(&stored), f.node(None, "T1"), false)
    else {
        panic!("the update labels must go")
    };
    let labels = obj["metadata"]["labels"].as_object().unwrap();
    assert_eq!(labels["team"], "ops");
    assert_eq!(labels["site"], "lab");
    assert!(
        !labels.keys().any(|k| k.starts_with(OWNED_PREFIX)),
        "{labels:?}"
    );
    assert_eq!(obj["metadata"]["annotations"]["note"], "rack 3");
    assert!(obj["metadata"]["annotations"]
        .get("update.cairn.dev/last-update")
        .is_none());
}

#[test]
fn kubelet_images_and_disk_pressure_are_written_when_they_change() {
    let f = facts();
    // Before the kubelet has looked: neither.
    let node = f.node(None, "T0");
    assert!(node["status"].get("images").is_none());
    assert!(node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["type"] != "DiskPressure"));

    // The kubelet shares its value with the publisher's copy of the facts.
    let kubelet = f.kubelet_status.clone();
    kubelet.set_disk_pressure(false);
    assert!(kubelet.set_images(vec![
        NodeImage {
            names: vec![
                "cairn.local/test/httpd@sha256:aa".into(),
                "cairn.local/test/httpd:latest".into(),
            ],
            size_bytes: 2000,
        },
        NodeImage {
            names: vec!["cairn.local/test/busybox:latest".into()],
            size_bytes: 1000,
        },
    ]));
    let first = f.node(None, "2026-01-02T03:04:05Z");
    assert_eq!(
        first["status"]["images"],
        json!([
            {"names": ["cairn.local/test/httpd@sha256:aa", "cairn.local/test/httpd:latest"], "sizeBytes": 2000},
            {"names": ["cairn.local/test/busybox:latest"], "sizeBytes": 1000},
        ])
    );
    let dp = condition_of(&first, "DiskPressure");
    assert_eq!(
        (&dp["status"], &dp["reason"], &dp["message"]),
        (
            &json!("False"),
            &json!("KubeletHasNoDiskPressure"),
            &json!("kubelet has no disk pressure")
        )
    );
    let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(first.clone()).unwrap();
    assert_eq!(
        typed.status.unwrap().images.unwrap()[1].size_bytes,
        Some(1000)
    );
    let mut stored = first;
    stored["metadata"]["resourceVersion"] = json!("3");

    // The same images again: no write.
    assert!(!kubelet.set_images(kubelet.get().images));
    assert_eq!(
        plan(Some(&stored), f.node(None, "T1"), false),
        Plan::Update {
            object: None,
            status: None
        }
    );
    // Pressure turns: the status is written, with a new transition time.
    kubelet.set_disk_pressure(true);
    let Plan::Update {
        object: None,
        status: Some(st),
    } = plan(Some(&stored), f.node(None, "T2"), false)
    else {
        panic!("the condition changed")
    };
    let dp = condition_of(&st, "DiskPressure");
    assert_eq!(dp["status"], "True");
    assert_eq!(dp["reason"], "KubeletHasDiskPressure");
    assert_eq!(dp["lastTransitionTime"], "T2");
    assert_eq!(
        condition_of(&st, "Ready")["lastTransitionTime"],
        "2026-01-02T03:04:05Z"
    );
}
