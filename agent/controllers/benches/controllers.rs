//! `cargo bench -p cairn-controllers --bench controllers` (part of `make bench`): the
//! scheduler and controllers over the API server's handlers and a SQLite datastore on disk,
//! in this process. Prints one table:
//!
//! - scheduling throughput: 1,000 pending pods onto 100 Ready nodes, pods bound per second
//!   (one batch; every binding and its `Scheduled` Event is a datastore write);
//! - a Deployment of 100 replicas, from its create to all 100 pods bound, with every
//!   controller and the scheduler running as in `cairn server`;
//! - controller memory at 10,000 objects: the peak RSS growth while the ReplicaSet controller,
//!   the scheduler and the garbage collector each go over 10,000 pods.
//!
//! Target from the brief: ≥ 500 pods/s scheduled on a 2-core machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_apiserver::Api;
use cairn_controllers::client::{Client, DEPLOYMENTS, NAMESPACES, NODES, PODS, REPLICA_SETS};
use cairn_controllers::runtime::{Controller, Key};
use cairn_store::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};

fn client(dir: &std::path::Path, name: &str) -> Client {
    let store = SqliteStore::open(dir.join(name), SqliteOptions::default()).unwrap();
    let client = Client::new(Api::new(Arc::new(store)));
    client
        .create(NAMESPACES, "", &json!({"metadata": {"name": "bench"}}))
        .unwrap();
    client
}

fn nodes(client: &Client, n: usize) {
    for i in 0..n {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i:03}")}});
        let mut node = client.create(NODES, "", &node).unwrap();
        node["status"] = json!({
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        client.update_status(NODES, "", &node).unwrap();
    }
}

fn pod(name: &str, owner: Option<&Value>) -> Value {
    let mut pod = json!({"metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
    if let Some(owner) = owner {
        pod["metadata"]["ownerReferences"] =
            json!([cairn_controllers::runtime::controller_ref(owner)]);
    }
    pod
}

fn bound(client: &Client) -> usize {
    client
        .list(PODS, "bench")
        .unwrap()
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .count()
}

/// (VmRSS, VmHWM) of this process, KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // Scheduling throughput.
    let c = client(dir.path(), "schedule.db");
    nodes(&c, 100);
    for i in 0..1_000 {
        c.create(PODS, "bench", &pod(&format!("p-{i:04}"), None))
            .unwrap();
    }
    let start = Instant::now();
    cairn_controllers::scheduler::Scheduler
        .reconcile(&c, &Key::new("", "*"))
        .unwrap();
    let took = start.elapsed();
    assert_eq!(bound(&c), 1_000, "every pod placed");
    rows.push((
        "scheduling: 1,000 pods onto 100 nodes".into(),
        format!("{:.0} pods/s", 1_000.0 / took.as_secs_f64()),
        "≥ 500 pods/s".into(),
    ));

    // A Deployment of 100 replicas with everything running.
    let c = client(dir.path(), "deploy.db");
    nodes(&c, 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = c.api().clone();
    runtime.block_on(async move {
        cairn_controllers::spawn(
            api,
            cairn_controllers::Parts {
                controllers: true,
                scheduler: true,
                cluster_cidr: None,
            },
            None,
        );
    });
    std::thread::sleep(Duration::from_millis(200));
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    });
    let start = Instant::now();
    c.create(DEPLOYMENTS, "bench", &deployment).unwrap();
    while bound(&c) < 100 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the deployment did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rows.push((
        "deployment of 100 replicas: create → all bound".into(),
        format!("{:.2} s", start.elapsed().as_secs_f64()),
        "".into(),
    ));
    drop(runtime);

    // Memory at 10,000 objects.
    let c = client(dir.path(), "memory.db");
    nodes(&c, 100);
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "big", "namespace": "bench"},
        "spec": {"replicas": 10_000, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    });
    let rs = c.create(REPLICA_SETS, "bench", &rs).unwrap();
    for i in 0..10_000 {
        c.create(PODS, "bench", &pod(&format!("m-{i:05}"), Some(&rs)))
            .unwrap();
    }
    let (before, _) = memory();
    reset_peak();
    cairn_controllers::replicaset::ReplicaSets
        .reconcile(&c, &Key::new("bench", "big"))
        .unwrap();
    cairn_controllers::scheduler::Scheduler
        .reconcile(&c, &Key::new("", "*"))
        .unwrap();
    cairn_controllers::gc::sweep(&c).unwrap();
    let (_, peak) = memory();
    rows.push((
        "controllers over 10,000 pods: peak RSS growth".into(),
        format!("{:.1} MiB", peak.saturating_sub(before) as f64 / 1024.0),
        "".into(),
    ));

    println!();
    println!("| {:<48} | {:>16} | {:>12} |", "measure", "value", "target");
    println!("|{:-<50}|{:-<18}|{:-<14}|", "", "", "");
    for (what, value, target) in rows {
        println!("| {what:<48} | {value:>16} | {target:>12} |");
    }
}
