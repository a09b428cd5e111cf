//! Controllers and the scheduler with the real kubectl against the real `cairn server`: two
//! registered nodes whose pods a stand-in kubelet (this test, over the API) reports Running
//! and Ready, as the worker will once it runs containers. Deployments roll out, scale, roll
//! back, restart, pause; replicas spread; a Service gets their addresses; cordoned nodes get
//! nothing; deletions cascade as asked; an unschedulable pod says why; a Job completes; a
//! manifest dropped into the server's directory is applied, and deleted with its file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{kubectl_path, temp_data_dir, Kubectl, Server};

/// Reports pods bound to `nodes` Running and Ready, and finishes their deletions, until `stop`.
fn kubelet(kubeconfig: std::path::PathBuf, nodes: Vec<String>, stop: Arc<AtomicBool>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = cairn::client::Client::from_kubeconfig(&kubeconfig).unwrap();
        let mut next_ip = 0u32;
        let mut renewed = Instant::now() - Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) {
            // Heartbeats: each node's Lease, every second (the server's grace is short here).
            if renewed.elapsed() >= Duration::from_secs(1) {
                renewed = Instant::now();
                for node in &nodes {
                    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
                    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
                    match client.request(hyper::Method::GET, &path, None).await {
                        Ok(mut lease) => {
                            lease["spec"]["renewTime"] = json!(now);
                            let _ = client.request(hyper::Method::PUT, &path, Some(&lease)).await;
                        }
                        Err(_) => {
                            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": {"name": node},
                                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
                            let _ = client
                                .request(
                                    hyper::Method::POST,
                                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                    Some(&lease),
                                )
                                .await;
                        }
                    }
                }
            }
            if let Ok(list) = client
                .request(hyper::Method::GET, "/api/v1/pods", None)
                .await
            {
                for mut pod in list["items"].as_array().cloned().unwrap_or_default() {
                    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
                    if !nodes.iter().any(|n| n == node) {
                        continue;
                    }
                    let path = format!(
                        "/api/v1/namespaces/{}/pods/{}",
                        pod["metadata"]["namespace"].as_str().unwrap(),
                        pod["metadata"]["name"].as_str().unwrap()
                    );
                    if pod["metadata"].get("deletionTimestamp").is_some() {
                        // Its containers stop at once here: the final deletion, as the
                        // kubelet does it.
                        let options = json!({"gracePeriodSeconds": 0,
                            "preconditions": {"uid": pod["metadata"]["uid"]}});
                        let _ = client.request(hyper::Method::DELETE, &path, Some(&options)).await;
                        continue;
                    }
                    if pod["status"]["phase"] == "Running" {
                        continue;
                    }
                    let now = jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string();
                    next_ip += 1;
                    let ip = format!("10.42.{}.{}", next_ip / 250, next_ip % 250 + 2);
                    pod["status"] = json!({"phase": "Running", "podIP": ip, "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]});
                    // A Job's container runs to completion.
                    let of_job = pod["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| r["kind"] == "Job"));
                    if of_job {
                        pod["status"] = json!({"phase": "Succeeded", "podIP": ip});
                    }
                    let path = format!("{path}/status");
                    let _ = client.request(hyper::Method::PUT, &path, Some(&pod)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

fn register_node(k: &Kubectl, name: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    let mut child = k
        .cmd(&["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(node.to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let status = json!({"status": {
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    k.run(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k.run(&all)).unwrap()
}

fn pod_images(k: &Kubectl) -> Vec<String> {
    let pods = json_of(k, &["get", "pods", "-l", "app=web"]);
    let mut images: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    images.sort();
    images
}

fn rollout(k: &Kubectl) {
    k.run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
}

#[test]
fn deployments_with_kubectl() {
    let dir = temp_data_dir("workloads");
    let server = Server::start_role_env(
        "server",
        &dir,
        &["--disable-agent"],
        &[
            ("CAIRN_MANIFESTS_SECONDS", "1"),
            ("CAIRN_NODE_GRACE_SECONDS", "6"),
        ],
    );
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec!["--namespace".into(), "shop".into()],
    };
    for n in ["n1", "n2"] {
        register_node(&k, n);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = {
        let (config, stop) = (dir.join("admin.kubeconfig"), stop.clone());
        std::thread::spawn(move || kubelet(config, vec!["n1".into(), "n2".into()], stop))
    };

    // A manifest dropped into the server's manifests directory is applied; removed, its
    // objects go.
    let manifest = dir.join("server/manifests/settings.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: kube-system\ndata:\n  mode: edge\n",
    )
    .unwrap();
    let settings = |k: &Kubectl| {
        k.try_run(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.mode}",
        ])
    };
    wait_for("the manifest's ConfigMap", || settings(&k).1 == "edge");
    std::fs::remove_file(&manifest).unwrap();
    wait_for("the manifest's ConfigMap to go", || !settings(&k).0);

    k.run(&["create", "namespace", "shop"]);
    wait_for("the default service account", || {
        k.try_run(&["get", "serviceaccount", "default"]).0
    });

    // Create: three replicas, spread over both nodes.
    k.run(&[
        "create",
        "deployment",
        "web",
        "--image=web:1",
        "--replicas=3",
    ]);
    rollout(&k);
    let pods = json_of(&k, &["get", "pods", "-l", "app=web"]);
    let nodes: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.contains(&"n1") && nodes.contains(&"n2"), "{nodes:?}");
    let table = k.run(&["get", "deployment", "web"]);
    assert!(table.lines().nth(1).unwrap().contains("3/3"), "{table}");

    // A Service over them: Endpoints and an EndpointSlice with their addresses.
    k.run(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let ip = k.run(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        ip.starts_with("10.43."),
        "a cluster IP from the service range: {ip}"
    );
    let kubernetes = k.run(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(kubernetes, "10.43.0.1");
    wait_for("endpoints", || {
        k.run(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .split_whitespace()
        .count()
            == 3
    });
    let slices = json_of(
        &k,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    );
    assert_eq!(
        slices["items"][0]["endpoints"].as_array().unwrap().len(),
        3,
        "{slices}"
    );
    assert_eq!(slices["items"][0]["ports"][0]["port"], 8080);

    // Scale, new image, history, undo, restart.
    k.run(&["scale", "deployment", "web", "--replicas=4"]);
    rollout(&k);
    assert_eq!(pod_images(&k), ["web:1"; 4]);
    k.run(&["set", "image", "deployment/web", "web=web:2"]);
    rollout(&k);
    wait_for("old pods to go", || pod_images(&k) == ["web:2"; 4]);
    let history = k.run(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    k.run(&["rollout", "undo", "deployment/web"]);
    rollout(&k);
    wait_for("the rollback", || pod_images(&k) == ["web:1"; 4]);
    let revisions = k.run(&["rollout", "history", "deployment/web"]);
    assert!(revisions.contains("3 "), "{revisions}");
    let before = json_of(&k, &["get", "replicasets"])["items"]
        .as_array()
        .unwrap()
        .len();
    k.run(&["rollout", "restart", "deployment/web"]);
    rollout(&k);
    let after = json_of(&k, &["get", "replicasets"])["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1, "a restart is a new template");

    // Paused: a new image waits for resume.
    k.run(&["rollout", "pause", "deployment/web"]);
    k.run(&["set", "image", "deployment/web", "web=web:3"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !pod_images(&k).contains(&"web:3".to_owned()),
        "rolled while paused"
    );
    k.run(&["rollout", "resume", "deployment/web"]);
    rollout(&k);
    wait_for("the resumed rollout", || pod_images(&k) == ["web:3"; 4]);

    // A cordoned node gets no new pods.
    k.run(&["cordon", "n2"]);
    k.run(&["scale", "deployment", "web", "--replicas=8"]);
    rollout(&k);
    let on_n2 = |k: &Kubectl| {
        json_of(k, &["get", "pods", "-l", "app=web"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "n2")
            .count()
    };
    assert!(on_n2(&k) <= 2, "new pods went to the cordoned node");
    k.run(&["uncordon", "n2"]);

    // An unschedulable pod says why.
    k.run(&[
        "run",
        "lost",
        "--image=x",
        "--overrides",
        r#"{"spec":{"nodeSelector":{"disk":"ssd"}}}"#,
    ]);
    wait_for("FailedScheduling", || {
        k.run(&["describe", "pod", "lost"]).contains(
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector",
        )
    });

    // A Job runs its pod to completion.
    k.run(&["create", "job", "once", "--image=x"]);
    k.run(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert_eq!(
        k.run(&["get", "job", "once", "-o", "jsonpath={.status.succeeded}"]),
        "1"
    );

    // A node that stops reporting turns Unknown, is tainted unreachable, and its pods go
    // once their toleration runs out (the kubelet above never renews n3's Lease).
    register_node(&k, "n3");
    let path = dir.join("on-n3.json");
    std::fs::write(
        &path,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-n3"},
               "spec": {"nodeName": "n3", "containers": [{"name": "c", "image": "x"}],
                        "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                         "effect": "NoExecute", "tolerationSeconds": 2}]}})
        .to_string(),
    )
    .unwrap();
    k.run(&["create", "-f", path.to_str().unwrap()]);
    k.run(&[
        "wait",
        "--for=condition=Ready=Unknown",
        "node/n3",
        "--timeout=30s",
    ]);
    let taints = k.run(&["get", "node", "n3", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // Evicted: Terminating, since no kubelet is there to stop it, until n3 is deleted.
    wait_for("on-n3 Terminating", || {
        k.run(&["get", "pod", "on-n3", "--no-headers"])
            .contains("Terminating")
    });
    let n1 = k.run(&["get", "node", "n1", "-o", "jsonpath={.spec.taints}"]);
    assert!(
        n1.is_empty(),
        "a node with a fresh Lease stays untainted: {n1}"
    );
    k.run(&["delete", "node", "n3"]);
    k.run(&["wait", "--for=delete", "pod/on-n3", "--timeout=30s"]);

    // A StatefulSet comes up in order with a claim per pod; a DaemonSet puts one pod on each
    // node; both roll out a new image.
    let sets = dir.join("sets.yaml");
    let manifest = |image: &str| {
        format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  replicas: 2\n  serviceName: db\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      containers: [{{name: db, image: {image}}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {{requests: {{storage: 1Gi}}}}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {{app: agent}}\n  template:\n    metadata:\n      labels: {{app: agent}}\n    spec:\n      containers: [{{name: agent, image: {image}}}]\n"
    )
    };
    std::fs::write(&sets, manifest("v1")).unwrap();
    k.run(&["apply", "-f", sets.to_str().unwrap()]);
    k.run(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    k.run(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let claims = k.run(&["get", "pvc", "-o", "name"]);
    assert!(
        claims.contains("data-db-0") && claims.contains("data-db-1"),
        "{claims}"
    );
    let on = k.run(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let mut on: Vec<&str> = on.split_whitespace().collect();
    on.sort();
    assert_eq!(on, ["n1", "n2"]);
    std::fs::write(&sets, manifest("v2")).unwrap();
    k.run(&["apply", "-f", sets.to_str().unwrap()]);
    k.run(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    k.run(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let images = k.run(&[
        "get",
        "pods",
        "-l",
        "app in (db,agent)",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(
        images.split_whitespace().filter(|i| *i == "v2").count(),
        4,
        "{images}"
    );
    // Both keep their template history; undo goes back to v1.
    for set in ["statefulset/db", "daemonset/agent"] {
        let history = k.run(&["rollout", "history", set]);
        assert!(
            history.contains("\n1 ") && history.contains("\n2 "),
            "{set}: {history}"
        );
        k.run(&["rollout", "undo", set]);
        k.run(&["rollout", "status", set, "--timeout=60s"]);
    }
    wait_for("the undo to reach every pod", || {
        let images = k.run(&[
            "get",
            "pods",
            "-l",
            "app in (db,agent)",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        images.split_whitespace().filter(|i| *i == "v1").count() == 4
    });
    let history = k.run(&["rollout", "history", "daemonset/agent"]);
    assert!(
        history.contains("\n3 ") && !history.contains("\n1 "),
        "v1 is now revision 3: {history}"
    );
    k.run(&["scale", "statefulset", "db", "--replicas=1"]);
    wait_for("db-1 to go", || {
        !k.run(&["get", "pods", "-o", "name"]).contains("pod/db-1")
    });
    k.run(&["delete", "-f", sets.to_str().unwrap()]);

    // A CronJob fires on its schedule (the next minute boundary) and its Job completes;
    // `create job --from` runs its template now.
    k.run(&[
        "create",
        "cronjob",
        "tick",
        "--image=x",
        "--schedule=* * * * *",
    ]);
    k.run(&["create", "job", "tick-now", "--from=cronjob/tick"]);
    k.run(&[
        "wait",
        "--for=condition=complete",
        "job/tick-now",
        "--timeout=60s",
    ]);
    let start = Instant::now();
    let scheduled = loop {
        let at = k.run(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ]);
        if !at.is_empty() {
            break at;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the CronJob did not fire within 90 s:\n{}",
            k.run(&["describe", "cronjob", "tick"])
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        scheduled.ends_with(":00Z"),
        "a minute boundary: {scheduled}"
    );
    let minutes = scheduled.parse::<jiff::Timestamp>().unwrap().as_second() / 60;
    let fired = format!("job/tick-{minutes}");
    k.run(&["wait", "--for=condition=complete", &fired, "--timeout=60s"]);
    let table = k.run(&["get", "cronjob", "tick"]);
    assert!(
        table.contains("LAST SCHEDULE") && table.contains("* * * * *"),
        "{table}"
    );
    let events = k.run(&["get", "events", "--field-selector=involvedObject.name=tick"]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    k.run(&["delete", "cronjob", "tick"]);

    // Deletion: orphan keeps the replica sets; foreground waits for the pods; background
    // (the default) takes everything afterwards.
    k.run(&["delete", "deployment", "web", "--cascade=orphan"]);
    let rss = json_of(&k, &["get", "replicasets"]);
    let names: Vec<String> = rss["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rs| rs["spec"]["replicas"].as_i64() > Some(0))
        .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 1, "{rss}");
    assert!(rss["items"][0]["metadata"]
        .get("ownerReferences")
        .is_none_or(|r| r.as_array().unwrap().is_empty()));
    k.run(&[
        "delete",
        "replicaset",
        &names[0],
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    let left = json_of(&k, &["get", "pods", "-l", "app=web"]);
    assert!(
        left["items"].as_array().unwrap().is_empty(),
        "foreground deletion returned before the pods went"
    );
    k.run(&[
        "create",
        "deployment",
        "api",
        "--image=api:1",
        "--replicas=2",
    ]);
    k.run(&["rollout", "status", "deployment/api", "--timeout=60s"]);
    k.run(&["delete", "deployment", "api"]);
    wait_for("background deletion of the pods", || {
        json_of(&k, &["get", "pods", "-l", "app=api"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert!(
        json_of(&k, &["get", "replicasets", "-l", "app=api"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    stop.store(true, Ordering::SeqCst);
    kubelet.join().unwrap();
    server.stop();
}
