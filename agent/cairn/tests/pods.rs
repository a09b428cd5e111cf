//! Pods really run: a `cairn server` with its own worker on this machine (as root), the test
//! images imported from `DATA/agent/images/`, pods applied with the real kubectl and their
//! containers checked on the node: exit codes and termination messages, the downward API and
//! ConfigMaps, restarts with back-off, a missing image and a missing ConfigMap reported as
//! the kubelet does, deletion removing containers and cgroups, and `kubectl top`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{kubectl_path, temp_data_dir, test_images, Kubectl, Server};

const WAIT: Duration = Duration::from_secs(60);

fn json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k.run(&all)).unwrap()
}

fn wait_for(k: &Kubectl, pod: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, out, _) = k.try_run(&["get", "pod", pod, "-o", "json"]);
        if ok {
            let v: Value = serde_json::from_str(&out).unwrap();
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "pod {pod}: timed out waiting for {what}: {:#}",
                v["status"]
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "pod {pod}: timed out waiting for {what}: {out}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn waiting_reason(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn mount_cgroup2(dir: &Path) -> PathBuf {
    let root = dir.join("cgroup");
    fs::create_dir_all(&root).unwrap();
    nix::mount::mount(
        Some("cgroup2"),
        &root,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting cgroup2 (the test needs root)");
    root
}

#[test]
fn pods_run_report_and_go_away() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir("pods");
    let images = dir.join("agent/images");
    fs::create_dir_all(&images).unwrap();
    for name in ["busybox.oci.tar", "httpd.oci.tar"] {
        fs::copy(test_images().join(name), images.join(name)).unwrap();
    }
    let cgroups = mount_cgroup2(&dir);
    let server = Server::start_with(&dir, &["--cgroup-root", cgroups.to_str().unwrap()]);
    server.wait_line("imported cairn.local/test/busybox:latest", WAIT);
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    let manifests = dir.join("pods.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello from a configmap}
---
apiVersion: v1
kind: Pod
metadata: {name: once, labels: {app: once}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'echo "$POD_NAME $GREETING $(uname -m) $(hostname) $(cat /config/greeting)" > /dev/termination-log; echo one; sleep 1; echo two >&2; sleep 1; echo three; exit 3']
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: GREETING
      valueFrom: {configMapKeyRef: {name: settings, key: greeting}}
    volumeMounts: [{name: config, mountPath: /config}]
  volumes:
  - name: config
    configMap: {name: settings}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sleep, "3600"]
    resources: {limits: {memory: 32Mi, cpu: 250m}}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'echo crashing; exit 1']
    terminationMessagePolicy: FallbackToLogsOnError
---
apiVersion: v1
kind: Pod
metadata: {name: missing-image}
spec:
  containers:
  - name: main
    image: cairn.local/test/nope:latest
---
apiVersion: v1
kind: Pod
metadata: {name: missing-config}
spec:
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    env:
    - name: X
      valueFrom: {configMapKeyRef: {name: nope, key: k}}
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);

    // A container that ran and failed: exit code, message written by the container.
    let once = wait_for(&k, "once", "phase Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &once["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{t}");
    assert_eq!(t["reason"], "Error");
    let arch = std::env::consts::ARCH;
    assert_eq!(
        t["message"],
        format!("once hello from a configmap {arch} once hello from a configmap\n")
    );
    assert!(t["containerID"].as_str().unwrap().starts_with("cairn://"));
    assert!(once["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap()
        .contains("@sha256:"));

    // Its output through the API server and the node's kubelet, as kubectl shows it (stdout
    // and stderr are two pipes: the sleeps keep their lines in order).
    assert_eq!(k.run(&["logs", "once"]), "one\ntwo\nthree\n");
    assert_eq!(k.run(&["logs", "once", "--tail=1"]), "three\n");
    assert_eq!(k.run(&["logs", "-f", "once"]), "one\ntwo\nthree\n");
    let stamped = k.run(&["logs", "once", "--timestamps"]);
    let first = stamped.lines().next().unwrap();
    assert!(
        first.ends_with(" one") && first.starts_with("20"),
        "{stamped}"
    );
    let (ok, _, err) = k.try_run(&["logs", "missing-config"]);
    assert!(!ok && err.contains("is waiting to start"), "{err}");

    // A running container: its process, directory and cgroup exist on the node.
    let sleeper = wait_for(&k, "sleeper", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let uid = sleeper["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(sleeper["status"]["containerStatuses"][0]["ready"], true);
    let pod_cgroup = cgroups.join("kubepods").join(format!("pod{uid}"));
    let container = dir.join("agent/containers").join(format!("{uid}_main_0"));
    assert!(container.is_dir());
    let procs = fs::read_to_string(pod_cgroup.join(format!("{uid}_main_0/cgroup.procs"))).unwrap();
    let pid = procs
        .lines()
        .next()
        .expect("the container's process is in its cgroup");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x003600\x00");
    let table = k.run(&["get", "pod", "sleeper"]);
    assert!(
        table.contains("1/1") && table.contains("Running"),
        "{table}"
    );

    // A crashing container is restarted, then backs off; its last words are kept.
    let crash = wait_for(&k, "crash", "CrashLoopBackOff", |p| {
        waiting_reason(p) == "CrashLoopBackOff"
    });
    let status = &crash["status"]["containerStatuses"][0];
    assert!(status["restartCount"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(status["lastState"]["terminated"]["message"], "crashing\n");
    assert_eq!(k.run(&["logs", "crash", "--previous"]), "crashing\n");

    // Bad input is a reason on the pod, and nothing else is disturbed.
    let missing = wait_for(&k, "missing-image", "ErrImagePull", |p| {
        matches!(
            waiting_reason(p).as_str(),
            "ErrImagePull" | "ImagePullBackOff"
        )
    });
    let message = missing["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("Failed to pull image \"cairn.local/test/nope:latest\""),
        "{message}"
    );
    let config = wait_for(&k, "missing-config", "CreateContainerConfigError", |p| {
        waiting_reason(p) == "CreateContainerConfigError"
    });
    let message = config["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert_eq!(message, "ConfigMap \"nope\" not found");
    assert_eq!(
        json(&k, &["get", "pod", "sleeper"])["status"]["phase"],
        "Running"
    );

    // Deletion: sleep ignores SIGTERM as PID 1, so it is killed after its 2 s grace period;
    // meanwhile the pod is Terminating. Its container, cgroup and pod directory go, then
    // the kubelet deletes the pod for good.
    let deleted_at = Instant::now();
    k.run(&["delete", "pod", "sleeper", "--wait=false"]);
    let terminating = json(&k, &["get", "pod", "sleeper"]);
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 2);
    assert!(
        process_alive(pid),
        "the container must get its grace period"
    );
    k.run(&["wait", "--for=delete", "pod/sleeper", "--timeout=60s"]);
    assert!(
        deleted_at.elapsed() >= Duration::from_millis(1500),
        "gone after {:?}, before its grace period",
        deleted_at.elapsed()
    );
    let deadline = Instant::now() + WAIT;
    while container.exists() || pod_cgroup.exists() || dir.join("agent/pods").join(&uid).exists() {
        assert!(
            Instant::now() < deadline,
            "the deleted pod's container and cgroup stay"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        fs::read(format!("/proc/{pid}/cmdline")).is_err(),
        "the container's process is still there"
    );
    k.run(&["delete", "pod", "--all", "--wait=false"]);
    drop(server);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

fn process_alive(pid: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The node's pod network: the server gives the Node a pod range, the kubelet a bridge and
/// every pod its own address from it; a pod reaches another's HTTP server at its address;
/// `hostNetwork` pods keep the node's; deleted pods free their addresses.
#[test]
fn pods_get_addresses_of_the_nodes_range_and_reach_each_other() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir("podnet");
    let images = dir.join("agent/images");
    fs::create_dir_all(&images).unwrap();
    for name in ["busybox.oci.tar", "httpd.oci.tar"] {
        fs::copy(test_images().join(name), images.join(name)).unwrap();
    }
    let cgroups = common::mount_cgroup2(&dir);
    let server = Server::start_with(&dir, &["--cgroup-root", cgroups.to_str().unwrap()]);
    let (_, cluster) = common::pod_network_for(&dir);
    server.wait_line("pod network up", WAIT);
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    let node = json(&k, &["get", "node", "test-node"]);
    let range = node["spec"]["podCIDR"].as_str().unwrap().to_owned();
    assert_eq!(node["spec"]["podCIDRs"], serde_json::json!([range]));
    let cluster_prefix = cluster.trim_end_matches(".0.0/16");
    assert_eq!(
        range,
        format!("{cluster_prefix}.0.0/24"),
        "the first /24 of {cluster}"
    );
    let in_range = |ip: &str| {
        ip.starts_with(&format!("{cluster_prefix}.0.")) && ip != format!("{cluster_prefix}.0.1")
    };

    let manifests = dir.join("net.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: httpd, image: cairn.local/test/httpd:latest}
---
apiVersion: v1
kind: Pod
metadata: {name: on-host}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: cairn.local/test/busybox:latest, command: [sleep, "3600"]}
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);
    let web = wait_for(&k, "web", "Running", |p| p["status"]["phase"] == "Running");
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_owned();
    assert!(in_range(&web_ip), "{web_ip} in {range}");
    assert_eq!(web["status"]["podIPs"], serde_json::json!([{"ip": web_ip}]));
    let on_host = wait_for(&k, "on-host", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(on_host["status"]["podIP"], on_host["status"]["hostIP"]);

    // A second pod fetches the page over the pod network (retrying while httpd starts).
    let fetch = format!(
        "i=0; while [ $i -lt 30 ]; do wget -q -O- http://{web_ip}:8080/ && exit 0; i=$((i+1)); sleep 1; done; exit 1"
    );
    let client = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "wget", "image": "cairn.local/test/busybox:latest",
            "command": ["sh", "-c", fetch],
        }]},
    });
    let client_file = dir.join("client.json");
    fs::write(&client_file, client.to_string()).unwrap();
    k.run(&["apply", "-f", client_file.to_str().unwrap()]);
    let done = wait_for(&k, "client", "it to end", |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    let client_ip = done["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "wget from {client_ip} to {web_ip}:8080 failed: {}",
        k.run(&["logs", "client"])
    );
    assert_eq!(k.run(&["logs", "client"]), "<h1>Cairn test httpd</h1>\n");
    assert!(in_range(&client_ip), "{client_ip}");
    assert_ne!(client_ip, web_ip);

    // Deleted pods free their addresses (one file per address under DATA/agent/net).
    let held = |ip: &str| dir.join("agent/net").join(ip).exists();
    assert!(held(&web_ip) && held(&client_ip));
    k.run(&["delete", "pod", "--all", "--timeout=60s"]);
    let deadline = Instant::now() + WAIT;
    while held(&web_ip) || held(&client_ip) {
        assert!(
            Instant::now() < deadline,
            "the deleted pods keep their addresses"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    containers_gone(&dir);
    drop(server);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

/// Waits until the kubelet has removed every container (they outlive `cairn`, so a test
/// that stops its server earlier leaves them running).
fn containers_gone(dir: &Path) {
    let deadline = Instant::now() + WAIT;
    while fs::read_dir(dir.join("agent/containers")).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            Instant::now() < deadline,
            "the deleted pods' containers stay"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node whose pod network cannot be made says so on its pods instead of leaving them
/// pending without a word; `hostNetwork` pods run regardless.
#[test]
fn pods_say_why_when_the_network_cannot_be_made() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir("nonet");
    let images = dir.join("agent/images");
    fs::create_dir_all(&images).unwrap();
    fs::copy(
        test_images().join("busybox.oci.tar"),
        images.join("busybox.oci.tar"),
    )
    .unwrap();
    let cgroups = common::mount_cgroup2(&dir);
    // `lo` is no bridge: the setup fails, and is tried again later.
    let server = Server::start_role_env(
        "server",
        &dir,
        &["--cgroup-root", cgroups.to_str().unwrap()],
        &[("CAIRN_POD_BRIDGE", "lo")],
    );
    server.wait_line("setting up the pod network (lo)", WAIT);
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    let manifests = dir.join("pods.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stranded}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: cairn.local/test/busybox:latest, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: on-host}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: cairn.local/test/busybox:latest, command: [sleep, "3600"]}
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);
    let condition = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodReadyToStartContainers")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let stranded = wait_for(&k, "stranded", "NetworkNotReady", |p| {
        condition(p)["reason"] == "NetworkNotReady"
    });
    let c = condition(&stranded);
    assert_eq!(c["status"], "False");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("network is not ready")
            && message.contains("an interface named lo exists and is not a bridge"),
        "{message}"
    );
    assert_eq!(waiting_reason(&stranded), "ContainerCreating");
    assert_eq!(stranded["status"]["phase"], "Pending");
    wait_for(&k, "on-host", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    k.run(&["delete", "pod", "--all", "--timeout=60s"]);
    containers_gone(&dir);
    drop(server);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

/// `kubectl top` as its users print it: `(header → cell)` per row, retried until `ready` is
/// content with the rows (the first figures of a new container may take a moment).
fn top(
    k: &Kubectl,
    args: &[&str],
    ready: impl Fn(&[HashMap<String, String>]) -> bool,
) -> Vec<HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = vec!["top"];
    all.extend(args);
    loop {
        let (ok, out, err) = k.try_run(&all);
        let mut lines = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let header = lines.next().unwrap_or_default();
        let rows: Vec<HashMap<String, String>> = lines
            .map(|cells| {
                header
                    .iter()
                    .zip(cells)
                    .map(|(h, c)| (h.to_string(), c.to_owned()))
                    .collect()
            })
            .collect();
        if ok && ready(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {all:?}: {ok} {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Millicores from `kubectl top`'s `12m`.
fn millicores(cell: &str) -> u64 {
    cell.strip_suffix('m').unwrap_or(cell).parse().unwrap()
}

/// `kubectl top node` and `kubectl top pod` through the metrics API: the node's figures from
/// `/proc`, a pod's per container from its cgroups (CPU only on this host: its memory
/// controller is on cgroup v1), selectors, namespaces, RBAC and the errors kubectl shows.
#[test]
fn kubectl_top_shows_the_node_and_its_pods() {
    let (dir, server, k, cgroups) = common::worker("top");
    let manifests = dir.join("top.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: quiet}
---
apiVersion: v1
kind: Pod
metadata: {name: busy, labels: {app: busy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  # A few percent of a core, all the time.
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'while :; do i=0; while [ $i -lt 500 ]; do i=$((i+1)); done; sleep 0.05; done']
  - {name: idle, image: cairn.local/test/busybox:latest, command: [sleep, "3600"]}
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);
    wait_for(&k, "busy", "both containers running", |p| {
        p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|c| c["state"]["running"].is_object()))
    });

    let nodes = top(&k, &["node"], |rows| !rows.is_empty());
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node = &nodes[0];
    assert_eq!(node["NAME"], "test-node");
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let cpu = millicores(&node["CPU(cores)"]);
    assert!(cpu > 0 && cpu <= cores * 1000, "{node:?}");
    let memory = node["MEMORY(bytes)"].strip_suffix("Mi").unwrap();
    assert!(memory.parse::<u64>().unwrap() > 0, "{node:?}");
    assert!(
        node["CPU(%)"].ends_with('%') && node["MEMORY(%)"].ends_with('%'),
        "{node:?}"
    );

    let busy = |rows: &[HashMap<String, String>]| rows.iter().any(|r| r["NAME"] == "busy");
    let pods = top(&k, &["pod"], busy);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let cpu = millicores(&pods[0]["CPU(cores)"]);
    assert!((1..1000).contains(&cpu), "the busy loop: {pods:?}");
    let containers = top(&k, &["pod", "busy", "--containers"], |rows| rows.len() == 2);
    // kubectl sorts them by name.
    let names: Vec<&str> = containers.iter().map(|r| r["NAME"].as_str()).collect();
    assert_eq!(names, ["idle", "main"]);
    assert!(containers.iter().all(|r| r["POD"] == "busy"));
    assert!(
        millicores(&containers[1]["CPU(cores)"]) >= 1,
        "{containers:?}"
    );
    assert!(
        millicores(&containers[0]["CPU(cores)"]) < 10,
        "sleeping: {containers:?}"
    );
    assert_eq!(top(&k, &["pod", "-l", "app=busy"], busy).len(), 1);
    let everywhere = top(&k, &["pod", "--all-namespaces"], busy);
    assert!(
        everywhere.iter().all(|r| r["NAMESPACE"] == "default"),
        "{everywhere:?}"
    );

    // Nothing to show, or nothing there: as kubectl says it against metrics-server.
    let (ok, out, err) = k.try_run(&["top", "pod", "-n", "quiet"]);
    assert!(ok && out.is_empty(), "{out}{err}");
    assert!(
        err.contains("No resources found in quiet namespace."),
        "{err}"
    );
    let (ok, _, err) = k.try_run(&["top", "pod", "-l", "app=nothing"]);
    assert!(
        ok && err.contains("No resources found in default namespace."),
        "{err}"
    );
    let (ok, _, err) = k.try_run(&["top", "pod", "nosuch"]);
    assert!(
        !ok && err.contains(r#"(NotFound): pods "nosuch" not found"#),
        "{err}"
    );

    // The API as other clients read it.
    let raw =
        |path: &str| -> Value { serde_json::from_str(&k.run(&["get", "--raw", path])).unwrap() };
    let one = raw("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy");
    assert_eq!(one["kind"], "PodMetrics");
    assert_eq!(one["metadata"]["labels"]["app"], "busy");
    assert!(one["window"].as_str().unwrap().ends_with('s'), "{one}");
    assert!(one["timestamp"].as_str().unwrap().ends_with('Z'), "{one}");
    assert_eq!(one["containers"][0]["name"], "main", "in the pod's order");
    assert!(one["containers"][0]["usage"]["cpu"].is_string(), "{one}");
    let list = raw("/apis/metrics.k8s.io/v1beta1/nodes");
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["items"][0]["metadata"]["name"], "test-node");
    let resources = k.run(&["api-resources", "--api-group=metrics.k8s.io", "-o", "name"]);
    assert_eq!(
        resources.split_whitespace().collect::<Vec<_>>(),
        ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]
    );
    let table = k.run(&["get", "pods.metrics.k8s.io"]);
    assert!(
        table.starts_with("NAME") && table.contains("busy"),
        "{table}"
    );

    // `view` lets a user see its namespace's pods' figures; nodes take a cluster-wide grant.
    k.run(&[
        "create",
        "rolebinding",
        "jane-views",
        "--clusterrole=view",
        "--user=jane",
    ]);
    let as_jane = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--as=jane");
        k.try_run(&all)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !as_jane(&["top", "pod"]).0 {
        assert!(Instant::now() < deadline, "{:?}", as_jane(&["top", "pod"]));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, _, err) = as_jane(&["top", "node"]);
    assert!(!ok && err.contains("Forbidden"), "{err}");

    k.run(&["delete", "pod", "--all", "--timeout=60s"]);
    containers_gone(&dir);
    drop(server);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}
