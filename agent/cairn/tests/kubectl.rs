//! The real kubectl (v1.35, installed by `make deps`; `KUBECTL` overrides the path) and the
//! Python `kubernetes` client against the real `cairn server` over TLS with its SQLite store:
//! the admin kubeconfig the server writes, bootstrap tokens from `cairn token`, a restart
//! that keeps the data.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{cairn, kubectl_path, temp_data_dir, Kubectl, Server};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn kubectl_end_to_end() {
    let bin = kubectl_path();
    let dir = temp_data_dir("kubectl");
    let server = Server::start_with(&dir, &["--disable-agent"]);
    let config = dir.join("admin.kubeconfig");
    let k = Kubectl {
        bin: bin.clone(),
        config: config.clone(),
        extra: vec!["--namespace".into(), "demo".into()],
    };

    assert!(k.run(&["version", "-o", "json"]).contains("v1.35.0+cairn"));
    let admin = k.run(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(admin, "admin");

    // apply: create, then change and re-apply (GET + strategic merge PATCH).
    let ns = dir.join("ns.yaml");
    write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
    );
    assert!(k
        .run(&["apply", "-f", ns.to_str().unwrap()])
        .contains("namespace/demo created"));
    let cm = dir.join("cm.yaml");
    write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels: {tier: web}\ndata:\n  x: \"1\"\n");
    assert!(k
        .run(&["apply", "-f", cm.to_str().unwrap()])
        .contains("configmap/app created"));
    write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels: {tier: web}\ndata:\n  x: \"2\"\n  z: \"3\"\n");
    assert!(k
        .run(&["apply", "-f", cm.to_str().unwrap()])
        .contains("configmap/app configured"));
    let json: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert_eq!(json["data"], serde_json::json!({"x": "2", "z": "3"}));
    assert!(
        json["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert!(k
        .run(&["get", "configmap", "app", "-o", "yaml"])
        .contains("tier: web"));

    assert!(k
        .run(&["label", "cm", "app", "env=prod"])
        .contains("labeled"));
    assert!(k
        .run(&["annotate", "cm", "app", "note=hi"])
        .contains("annotated"));
    let table = k.run(&["get", "cm", "-l", "env=prod", "--show-labels"]);
    assert!(
        table.contains("DATA") && table.contains("env=prod,tier=web"),
        "{table}"
    );
    assert!(k.run(&["get", "ns"]).contains("Active"));

    // A short watch sees the patch.
    let mut watch = k
        .cmd(&["get", "cm", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    k.run(&[
        "patch",
        "cm",
        "app",
        "--type",
        "merge",
        "-p",
        "{\"data\":{\"w\":\"1\"}}",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    watch.kill().unwrap();
    let mut seen = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = watch.wait();
    assert!(
        seen.matches("configmap/app").count() >= 2,
        "watch output: {seen}"
    );

    // OpenAPI v3: kubectl leaves validation to the server, which names unknown fields.
    let bad = dir.join("bad.yaml");
    write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labelz: {a: b}\ndatax:\n  x: \"1\"\n");
    let (ok, _, err) = k.try_run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("unknown field \"datax\"")
            && err.contains("unknown field \"metadata.labelz\""),
        "{err}"
    );
    let (ok, _, err) = k.try_run(&["get", "cm", "bad"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = k.try_run(&["create", "--validate=warn", "-f", bad.to_str().unwrap()]);
    assert!(ok && err.contains("unknown field \"datax\""), "{err}");
    let stored: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "cm", "bad", "-o", "json"])).unwrap();
    assert!(
        stored.get("datax").is_none(),
        "unknown fields are dropped: {stored}"
    );
    let explain = k.run(&["explain", "configmap.data"]);
    assert!(
        explain.contains("KIND:       ConfigMap")
            && explain.contains("FIELD: data <map[string]string>"),
        "{explain}"
    );
    // wait (a streaming-list watch), describe (events by field selector), diff (dry-run patch).
    let waited = k.run(&[
        "wait",
        "--for=jsonpath={.data.x}=2",
        "cm/app",
        "--timeout=20s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    let described = k.run(&["describe", "cm", "app"]);
    assert!(
        described.contains("Name:") && described.contains("app") && described.contains("Events:"),
        "{described}"
    );
    write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels: {tier: web}\ndata:\n  x: \"9\"\n  z: \"3\"\n");
    let out = k
        .cmd(&["diff", "-f", cm.to_str().unwrap()])
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kubectl diff exits 1 on differences: {diff}"
    );
    assert!(
        diff.contains("-  x: \"2\"") && diff.contains("+  x: \"9\""),
        "{diff}"
    );
    let unchanged: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert_eq!(unchanged["data"]["x"], "2", "diff must not write");

    let versions = k.run(&["api-versions"]);
    assert!(
        versions.contains("coordination.k8s.io/v1") && versions.contains("v1"),
        "{versions}"
    );

    // Workloads: apply a Deployment, scale it through /scale, read the usual columns.
    let deploy = dir.join("deploy.yaml");
    write(
        &deploy,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: registry.example/web:1\n",
    );
    assert!(k
        .run(&["apply", "-f", deploy.to_str().unwrap()])
        .contains("deployment.apps/web created"));
    assert!(k
        .run(&["scale", "deployment/web", "--replicas=3"])
        .contains("scaled"));
    let replicas = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "3");
    let wide = k.run(&["get", "deployments", "-o", "wide"]);
    assert!(
        wide.contains("READY")
            && wide.contains("UP-TO-DATE")
            && wide.contains("0/3")
            && wide.contains("registry.example/web:1"),
        "{wide}"
    );
    // Strategic merge: kubectl patch (its default type) merges containers by name.
    k.run(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"edge"}]}]}}}}"#,
    ]);
    let container = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value}"]);
    assert_eq!(container, "registry.example/web:1 edge");
    // kubectl apply: add a sidecar, then take it away again (a `$patch: delete` element).
    let with_sidecar = std::fs::read_to_string(&deploy).unwrap().replace(
        "        image: registry.example/web:1\n",
        "        image: registry.example/web:2\n      - name: sidecar\n        image: registry.example/sidecar:1\n",
    );
    write(&deploy, &with_sidecar);
    k.run(&["apply", "-f", deploy.to_str().unwrap()]);
    let names = k.run(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert_eq!(names, "web sidecar");
    let without = with_sidecar.replace(
        "      - name: sidecar\n        image: registry.example/sidecar:1\n",
        "",
    );
    write(&deploy, &without);
    k.run(&["apply", "-f", deploy.to_str().unwrap()]);
    let after = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].image} {.spec.template.spec.containers[0].env[0].value}"]);
    assert_eq!(
        after, "registry.example/web:2 edge",
        "the patched env survives re-apply"
    );

    let all = k.run(&["get", "all"]);
    assert!(all.contains("deployment.apps/web"), "{all}");
    let (ok, _, err) = k.try_run(&["get", "deploy", "web", "--subresource=status", "-o", "name"]);
    assert!(ok, "{err}");

    let resources = k.run(&["api-resources"]);
    for r in [
        "configmaps",
        "deployments",
        "nodes",
        "clusterrolebindings",
        "leases",
        "serviceaccounts",
        "coordination.k8s.io/v1",
    ] {
        assert!(resources.contains(r), "{resources}");
    }
    assert!(k.run(&["delete", "cm", "app"]).contains("deleted"));
    let (ok, _, err) = k.try_run(&["get", "cm", "app"]);
    assert!(!ok && err.contains("configmaps \"app\" not found"), "{err}");

    tokens(&bin, &dir, &server);
    service_account_tokens(&bin, &dir, &k);
    rbac(&k);
    bad_input(&k, &dir);

    // A restart keeps the data (SQLite on disk) and the revision counter.
    k.run(&["create", "-f", cm.to_str().unwrap()]);
    let before: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert!(server.stop().success());
    let server = Server::start_with(&dir, &["--disable-agent"]);
    let after: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert_eq!(before, after);
    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One file with good and bad objects: each bad one is refused with its reason, the good
/// one is created, and nothing of the bad ones is left behind.
fn bad_input(k: &Kubectl, dir: &Path) {
    let file = dir.join("mixed.yaml");
    write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\ndata: {a: b}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: crooked}\nspec:\n  \
         selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: two}}\n    \
         spec: {containers: [{name: c, image: busybox}]}\n---\n\
         apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {name: gizmos.example.com}\nspec:\n  group: example.com\n  \
         names: {plural: gizmos, singular: gizmo, kind: Gizmo}\n  scope: Namespaced\n  \
         versions:\n  - name: v1\n    served: true\n    storage: true\n    \
         schema: {openAPIV3Schema: {type: banana}}\n",
    );
    let (ok, _, err) = k.try_run(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    assert!(err.contains("gizmos.example.com"), "{err}");
    assert_eq!(
        k.run(&["get", "cm", "fine", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    let (ok, _, _) = k.try_run(&["get", "deployment", "crooked"]);
    assert!(!ok, "a refused Deployment exists");
    let (ok, _, _) = k.try_run(&["get", "crd", "gizmos.example.com"]);
    assert!(!ok, "a refused definition exists");
}

fn get_json(k: &Kubectl, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["get"];
    args.extend(what);
    args.extend(["-o", "json"]);
    serde_json::from_str(&k.run(&args)).unwrap()
}

/// kubectl's typed commands (`create namespace|configmap|secret|deployment|...`, the pod
/// deletions of `drain`) send protobuf bodies; what they create must be what they asked for.
#[test]
fn typed_commands_send_protobuf_and_work() {
    let dir = temp_data_dir("kubectl-typed");
    let server = Server::start_with(&dir, &["--disable-agent"]);
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec!["--namespace".into(), "typed".into()],
    };

    // -v=8 logs the request headers: the body really is protobuf.
    let (ok, out, err) = k.try_run(&["create", "namespace", "typed", "-v=8"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl did not send protobuf:\n{err}"
    );
    assert_eq!(get_json(&k, &["ns", "typed"])["status"]["phase"], "Active");

    k.run(&[
        "create",
        "configmap",
        "app",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    assert_eq!(
        get_json(&k, &["cm", "app"])["data"],
        serde_json::json!({"a": "1", "b": "two"})
    );
    k.run(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
    ]);
    let secret = get_json(&k, &["secret", "db"]);
    assert_eq!(secret["data"]["password"], "czNjcmV0", "{secret}");
    assert_eq!(secret["type"], "Opaque");

    k.run(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1",
        "--replicas=0",
        "--port=8080",
    ]);
    let deploy = get_json(&k, &["deploy", "web"]);
    assert_eq!(
        deploy["spec"]["replicas"], 0,
        "replicas: 0 survives: {deploy}"
    );
    assert_eq!(deploy["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/web:1");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert!(deploy["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(k.run(&["get", "deploy", "web"]).contains("0/0"));

    k.run(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = get_json(&k, &["svc", "web"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    k.run(&["create", "serviceaccount", "robot"]);
    k.run(&[
        "create",
        "job",
        "once",
        "--image=registry.example/tool:1",
        "--",
        "echo",
        "hi",
    ]);
    let job = get_json(&k, &["job", "once"]);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    k.run(&[
        "create",
        "cronjob",
        "tick",
        "--image=registry.example/tool:1",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ]);
    assert_eq!(
        get_json(&k, &["cronjob", "tick"])["spec"]["schedule"],
        "*/5 * * * *"
    );
    k.run(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    k.run(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--serviceaccount=typed:robot",
    ]);
    let binding = get_json(&k, &["rolebinding", "reader"]);
    assert_eq!(binding["subjects"][0]["name"], "robot");
    assert_eq!(binding["roleRef"]["name"], "reader");
    k.run(&[
        "create",
        "clusterrole",
        "typed-nodes",
        "--verb=get",
        "--resource=nodes",
    ]);
    k.run(&[
        "create",
        "clusterrolebinding",
        "typed-nodes",
        "--clusterrole=typed-nodes",
        "--user=alice",
    ]);
    k.run(&[
        "create",
        "priorityclass",
        "typed-high",
        "--value=1000",
        "--description=edge",
    ]);
    assert_eq!(
        get_json(&k, &["priorityclass", "typed-high"])["value"],
        1000
    );
    k.run(&[
        "create",
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--min-available=50%",
    ]);
    assert_eq!(get_json(&k, &["pdb", "web"])["spec"]["minAvailable"], "50%");
    k.run(&["create", "ingress", "web", "--rule=edge.example/*=web:80"]);
    let ingress = get_json(&k, &["ingress", "web"]);
    assert_eq!(ingress["spec"]["rules"][0]["host"], "edge.example");

    // A typed create of something that exists answers with the usual error.
    let (ok, _, err) = k.try_run(&["create", "configmap", "app"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    // Finalizers: kubectl delete waits until the last one is removed.
    k.run(&[
        "patch",
        "cm",
        "app",
        "-p",
        r#"{"metadata":{"finalizers":["cairn.test/hold"]}}"#,
    ]);
    let mut delete = k
        .cmd(&["delete", "cm", "app", "--timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut marked = String::new();
    for _ in 0..50 {
        marked = k.run(&[
            "get",
            "cm",
            "app",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        if !marked.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!marked.is_empty(), "delete did not mark the object");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        delete.try_wait().unwrap().is_none(),
        "kubectl delete must wait for the finalizer"
    );
    k.run(&[
        "patch",
        "cm",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let out = delete.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("deleted"),
        "{out:?}"
    );
    let (ok, _, err) = k.try_run(&["get", "cm", "app"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // drain deletes pods with the typed client: a protobuf DeleteOptions body. No kubelet
    // runs typed-node to stop them, so these pods ask for no grace period.
    let node = dir.join("node.yaml");
    write(
        &node,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: typed-node\n",
    );
    k.run(&["apply", "-f", node.to_str().unwrap()]);
    let pod = dir.join("pod.yaml");
    write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\nspec:\n  nodeName: typed-node\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: registry.example/tool:1\n");
    k.run(&["apply", "-f", pod.to_str().unwrap()]);
    let drained = k.run(&[
        "drain",
        "typed-node",
        "--disable-eviction",
        "--force",
        "--timeout=30s",
    ]);
    assert!(drained.contains("drained"), "{drained}");
    let (ok, _, err) = k.try_run(&["get", "pod", "lonely"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // Without --disable-eviction drain evicts (protobuf policy/v1 Eviction), and a
    // PodDisruptionBudget holds it back until it allows the disruption.
    write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: guarded\n  labels: {app: guarded}\nspec:\n  nodeName: typed-node\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: registry.example/tool:1\n");
    k.run(&["apply", "-f", pod.to_str().unwrap()]);
    k.run(&[
        "create",
        "pdb",
        "guard",
        "--selector=app=guarded",
        "--min-available=1",
    ]);
    let (ok, _, err) = k.try_run(&["drain", "typed-node", "--force", "--timeout=4s"]);
    assert!(!ok && err.contains("disruption budget"), "{err}");
    k.run(&["get", "pod", "guarded"]);
    k.run(&["patch", "pdb", "guard", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/minAvailable"},{"op":"add","path":"/spec/maxUnavailable","value":1}]"#]);
    let drained = k.run(&["drain", "typed-node", "--force", "--timeout=30s"]);
    assert!(
        drained.contains("evicted") && drained.contains("drained"),
        "{drained}"
    );
    let (ok, _, err) = k.try_run(&["get", "pod", "guarded"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // A pod a node runs is deleted gracefully: Terminating until its kubelet has stopped it
    // (none runs typed-node here), and `--force --grace-period=0` removes it at once.
    write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  nodeName: typed-node\n  terminationGracePeriodSeconds: 45\n  containers:\n  - name: c\n    image: registry.example/tool:1\n");
    k.run(&["apply", "-f", pod.to_str().unwrap()]);
    k.run(&["delete", "pod", "slow", "--wait=false"]);
    let listed = k.run(&["get", "pod", "slow", "--no-headers"]);
    assert!(listed.contains("Terminating"), "{listed}");
    let grace = k.run(&[
        "get",
        "pod",
        "slow",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(grace.trim(), "45");
    let forced = k.run(&["delete", "pod", "slow", "--force", "--grace-period=0"]);
    assert!(forced.contains("force deleted"), "{forced}");
    let (ok, _, err) = k.try_run(&["get", "pod", "slow"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // /metrics counted all of that; anonymous callers get no metrics.
    let metrics = k.run(&["get", "--raw", "/metrics"]);
    for want in [
        r#"apiserver_request_total{verb="CREATE",group="apps",resource="deployments",subresource="",code="201"} 1"#,
        r#"apiserver_request_total{verb="CREATE",group="",resource="configmaps",subresource="",code="409"} 1"#,
        r#"cairn_certificate_expiration_timestamp_seconds{certificate="serving"}"#,
        "cairn_store_writes_total ",
        "apiserver_storage_size_bytes ",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    let admin = std::fs::read_to_string(dir.join("admin.kubeconfig")).unwrap();
    let url = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    // curl (make deps installs it): kubectl would prompt for a password here.
    let code = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{url}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "401");

    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Python `kubernetes` client (Debian's python3-kubernetes, installed by `make deps`;
/// `CAIRN_PYTHON` overrides the interpreter): create, list, watch, patch, scale, errors.
#[test]
fn python_client_lists_watches_and_creates() {
    let python = std::env::var("CAIRN_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{python} cannot import kubernetes: `make deps` installs python3-kubernetes"
    );
    let dir = temp_data_dir("python-client");
    let server = Server::start_with(&dir, &["--disable-agent"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.join("admin.kubeconfig"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        seen["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{seen}"
    );
    assert_eq!(seen["listed"], serde_json::json!(["one"]));
    assert_eq!(
        seen["watched"],
        serde_json::json!([["ADDED", "two"]]),
        "{seen}"
    );
    assert_eq!(
        seen["pages"],
        serde_json::json!([["one"], 1, ["two"], null]),
        "limit/continue with remainingItemCount"
    );
    assert_eq!(seen["patched"], serde_json::json!({"k": "w"}));
    assert_eq!(seen["replicas"], 4);
    assert_eq!(seen["missing"], serde_json::json!([404, "NotFound"]));
    assert_eq!(seen["duplicate"], serde_json::json!([409, "AlreadyExists"]));
    assert_eq!(seen["after_delete"], serde_json::json!(["two"]));
    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cairn token create/list/delete`, and kubectl authenticating with the tokens.
fn tokens(bin: &Path, dir: &Path, server: &Server) {
    let data = dir.to_str().unwrap();
    let (ok, out, err) = cairn(&[
        "token",
        "create",
        "--data-dir",
        data,
        "--ttl",
        "1h",
        "--description",
        "rack 3",
    ]);
    assert!(ok, "{err}");
    let join = out.trim();
    let (prefix, bare) = join.split_once("::").unwrap();
    assert_eq!(prefix.len(), 3 + 64, "{join}");
    let ca = std::fs::read(dir.join("server/tls/ca.crt")).unwrap();
    let hash = sha256_hex(&ca);
    assert_eq!(&prefix[3..], hash, "the token pins the CA");

    // kubectl with only the CA and the token: no client certificate.
    let token_config = dir.join("token.kubeconfig");
    let ca_path = dir.join("server/tls/ca.crt");
    write(
        &token_config,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{}\", certificate-authority: {}}}}}]\n\
             users: [{{name: u, user: {{}}}}]\n\
             contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
            server.port,
            ca_path.display()
        ),
    );
    let with = |token: &str| Kubectl {
        bin: bin.to_owned(),
        config: token_config.clone(),
        extra: vec![format!("--token={token}")],
    };
    // Both forms authenticate; RBAC grants a bootstrap token nothing but the join.
    for token in [bare, join] {
        let (ok, _, err) = with(token).try_run(&["get", "ns", "kube-system"]);
        assert!(
            !ok && err.contains(&format!(
                "namespaces \"kube-system\" is forbidden: User \"system:bootstrap:{}\" cannot get \
                 resource \"namespaces\"",
                &bare[..6]
            )),
            "{err}"
        );
    }
    assert_eq!(
        with(bare)
            .run(&["auth", "can-i", "create", "selfsubjectaccessreviews"])
            .trim(),
        "yes"
    );
    let (ok, out, _) = with(bare).try_run(&["auth", "can-i", "list", "pods"]);
    assert!(!ok && out.trim() == "no", "{out}");

    let (ok, _, err) = with("abcdef.0123456789abcdef").try_run(&["get", "ns"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let whoami = with(bare).run(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(
        whoami.starts_with(&format!("system:bootstrap:{} ", &bare[..6]))
            && whoami.contains("system:bootstrappers"),
        "{whoami}"
    );
    // (Anonymous requests are checked at the HTTP level in tests/serve.rs: kubectl itself
    // prompts for a user name when a kubeconfig user has no credentials.)

    let (ok, list, err) = cairn(&["token", "list", "--data-dir", data]);
    let id = &bare[..6];
    assert!(
        ok && list.contains(id) && list.contains("rack 3"),
        "{list}{err}"
    );

    // An expired token is refused.
    let (ok, short, err) = cairn(&["token", "create", "--data-dir", data, "--ttl", "1s"]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(2100));
    let (ok, _, err) = with(short.trim()).try_run(&["get", "ns"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let (_, list, _) = cairn(&["token", "list", "--data-dir", data]);
    assert!(list.contains("expired"), "{list}");

    // Deleting revokes.
    let (ok, out, err) = cairn(&["token", "delete", "--data-dir", data, id]);
    assert!(ok && out.contains("deleted"), "{err}");
    let (ok, _, err) = with(bare).try_run(&["get", "ns"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let (ok, _, err) = cairn(&["token", "delete", "--data-dir", data, "zzzzzz"]);
    assert!(!ok && err.contains("not found"), "{err}");
}

/// `kubectl create token`: a service account's token authenticates as the account until
/// the account is deleted; a bound token dies with its Secret.
fn service_account_tokens(bin: &Path, dir: &Path, admin: &Kubectl) {
    admin.run(&["create", "serviceaccount", "bot"]);
    let token = admin.run(&["create", "token", "bot", "--duration=15m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let with = |token: &str| Kubectl {
        bin: bin.to_owned(),
        config: dir.join("token.kubeconfig"),
        extra: vec![format!("--token={token}")],
    };
    let whoami = with(token).run(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert!(
        whoami.starts_with("system:serviceaccount:demo:bot ")
            && whoami.contains("system:serviceaccounts:demo"),
        "{whoami}"
    );
    // Authenticated, but allowed nothing until a binding says so.
    let (ok, _, err) = with(token).try_run(&["get", "sa", "bot", "-n", "demo"]);
    assert!(!ok && err.contains("(Forbidden)"), "{err}");
    admin.run(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=demo:bot",
    ]);
    assert!(with(token)
        .run(&["get", "sa", "bot", "-n", "demo", "-o", "name"])
        .contains("serviceaccount/bot"));
    let (ok, _, err) = admin.try_run(&["create", "token", "bot", "--duration=1m"]);
    assert!(!ok && err.contains("less than 10 minutes"), "{err}");
    let (ok, _, err) = admin.try_run(&["create", "token", "nobody"]);
    assert!(
        !ok && err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );

    // Bound to a Secret: gone with it.
    admin.run(&[
        "create",
        "secret",
        "generic",
        "anchor",
        "--from-literal=k=v",
    ]);
    let bound = admin.run(&[
        "create",
        "token",
        "bot",
        "--bound-object-kind=Secret",
        "--bound-object-name=anchor",
    ]);
    with(bound.trim()).run(&["get", "ns", "demo"]);
    admin.run(&["delete", "secret", "anchor"]);
    let (ok, _, err) = with(bound.trim()).try_run(&["get", "ns", "demo"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");

    // A tampered token is refused; deleting the account revokes its tokens.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let (ok, _, err) = with(&forged).try_run(&["get", "ns"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    admin.run(&["delete", "serviceaccount", "bot"]);
    let (ok, _, err) = with(token).try_run(&["get", "ns"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

/// RBAC through kubectl: `auth can-i` (also `--list` and `--as`), impersonation, bindings
/// taking effect at once, escalation refused, and the node authorizer.
fn rbac(admin: &Kubectl) {
    let can_i = |args: &[&str]| -> (bool, String) {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let (ok, out, _) = admin.try_run(&all);
        (ok, out.trim().to_owned())
    };
    assert_eq!(
        can_i(&["*", "*"]),
        (true, "yes".to_owned()),
        "the admin may do anything"
    );
    let alice = ["--as=alice", "-n", "demo"];
    assert_eq!(
        can_i(&["list", "pods", alice[0], alice[1], alice[2]]),
        (false, "no".into())
    );
    let (ok, _, err) = admin.try_run(&["get", "pods", alice[0], alice[1], alice[2]]);
    assert!(
        !ok && err.contains(
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" \
             in the namespace \"demo\""
        ),
        "{err}"
    );
    admin.run(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    for (verb, what, want) in [
        ("list", "pods", true),
        ("create", "deployments.apps", true),
        ("get", "secrets", true),
        ("create", "roles.rbac.authorization.k8s.io", false),
        ("list", "nodes", false),
    ] {
        let (ok, out) = can_i(&[verb, what, alice[0], alice[1], alice[2]]);
        assert_eq!(ok, want, "alice {verb} {what}: {out}");
    }
    assert!(
        !can_i(&["list", "pods", "--as=alice", "-n", "default"]).0,
        "only in demo"
    );
    let list = admin.run(&["auth", "can-i", "--list", alice[0], alice[1], alice[2]]);
    assert!(
        list.contains("deployments.apps") && list.contains("selfsubjectaccessreviews"),
        "{list}"
    );
    admin.run(&[
        "create",
        "configmap",
        "alice-was-here",
        alice[0],
        alice[1],
        alice[2],
    ]);

    // Alice (edit) may not touch RBAC; as an admin of demo she still cannot grant more than
    // she holds.
    let escalate = [
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=cluster-admin",
        "--user=alice",
        alice[0],
        alice[1],
        alice[2],
    ];
    let (ok, _, err) = admin.try_run(&escalate);
    assert!(
        !ok && err.contains("cannot create resource \"rolebindings\""),
        "{err}"
    );
    admin.run(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
    ]);
    let (ok, _, err) = admin.try_run(&escalate);
    assert!(!ok && err.contains("not currently held"), "{err}");
    let (ok, _, err) = admin.try_run(&[
        "create",
        "role",
        "node-reader",
        "--verb=list",
        "--resource=nodes",
        alice[0],
        alice[1],
        alice[2],
    ]);
    assert!(!ok && err.contains("not currently held"), "{err}");
    admin.run(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        alice[0],
        alice[1],
        alice[2],
    ]);
    // A service account, impersonated: its groups come with it.
    let bot = ["--as=system:serviceaccount:demo:bot", "-n", "demo"];
    assert!(can_i(&["list", "configmaps", bot[0], bot[1], bot[2]]).0);
    assert!(!can_i(&["list", "configmaps", bot[0], "-n", "default"]).0);

    // Deleting the bindings revokes at once.
    admin.run(&["delete", "rolebinding", "alice-edit", "alice-admin"]);
    assert!(!can_i(&["list", "pods", alice[0], alice[1], alice[2]]).0);

    // A node reads only the secrets its pods use.
    admin.run(&[
        "create",
        "secret",
        "generic",
        "n1-secret",
        "--from-literal=k=v",
    ]);
    admin.run(&[
        "create",
        "secret",
        "generic",
        "other-secret",
        "--from-literal=k=v",
    ]);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-n1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
          "envFrom": [{"secretRef": {"name": "n1-secret"}}]}]}}"#;
    let path = std::env::temp_dir().join(format!("cairn-rbac-pod-{}.json", std::process::id()));
    write(&path, pod);
    admin.run(&["create", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let node = ["--as=system:node:n1", "--as-group=system:nodes"];
    let get = |name: &str| admin.try_run(&["get", "secret", name, node[0], node[1], "-o", "name"]);
    let (ok, out, err) = get("n1-secret");
    assert!(ok && out.contains("secret/n1-secret"), "{err}");
    let (ok, _, err) = get("other-secret");
    assert!(
        !ok && err.contains("no relationship found between node 'n1' and this object"),
        "{err}"
    );
    // It changes only its own Node.
    for name in ["n1", "n2"] {
        let path =
            std::env::temp_dir().join(format!("cairn-rbac-{name}-{}.json", std::process::id()));
        write(
            &path,
            &format!(r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}"}}}}"#),
        );
        admin.run(&["create", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
    }
    admin.run(&["label", "node", "n1", "rack=3", node[0], node[1]]);
    let (ok, _, err) = admin.try_run(&["label", "node", "n2", "rack=3", node[0], node[1]]);
    assert!(!ok && err.contains("(Forbidden)"), "{err}");
    admin.run(&["delete", "node", "n1", "n2"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A server that is also a worker registers its Node: what `kubectl get nodes` shows, the
/// node config's labels, Ready; a restart updates the same Node. `--disable-agent` registers none.
#[test]
fn server_registers_its_node() {
    let bin = kubectl_path();
    let dir = temp_data_dir("node-registration");
    write(
        &dir.join("node.yaml"),
        "hostname: edge-7\nlabels: {site: lab}\n",
    );
    let k = Kubectl {
        bin,
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    let server = Server::start(&dir);
    let node = wait_for_node(&k, "edge-7");
    let uid = node["metadata"]["uid"].clone();
    let info = &node["status"]["nodeInfo"];
    assert_eq!(
        info["osImage"],
        format!("Cairn {}", env!("CARGO_PKG_VERSION"))
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(info["architecture"], arch);
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["site"], "lab");
    assert_eq!(labels["kubernetes.io/hostname"], "edge-7");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    assert!(
        labels.get("update.cairn.dev/slot").is_none(),
        "not an A/B node"
    );
    // The server's worker joined like any agent: a node certificate from a CSR, its key on
    // the Node.
    let key = node["metadata"]["annotations"]["cairn.dev/node-key-sha256"]
        .as_str()
        .unwrap();
    assert_eq!(key.len(), 64);
    let requestors = k.run(&["get", "csr", "-o", "jsonpath={.items[*].spec.username}"]);
    assert_eq!(requestors.trim(), "system:bootstrap:server");
    assert!(dir.join("agent/client/node.crt").is_file());
    assert!(node["status"]["capacity"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));

    // The columns kubectl users know.
    let table = k.run(&["get", "nodes", "-o", "wide"]);
    let row = table.lines().find(|l| l.starts_with("edge-7")).unwrap();
    for want in ["Ready", "control-plane", "v1.35.0+cairn-", "Cairn "] {
        assert!(row.contains(want), "{want} missing: {table}");
    }
    assert!(k
        .run(&["get", "nodes", "-l", "site=lab", "-o", "name"])
        .contains("node/edge-7"));
    let lease = k.run(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "edge-7",
        "-o",
        "json",
    ]);
    let lease: serde_json::Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "edge-7");

    // A restart with a new label updates the same Node.
    assert!(server.stop().success());
    write(
        &dir.join("node.yaml"),
        "hostname: edge-7\nlabels: {site: lab2}\n",
    );
    let server = Server::start(&dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let node = wait_for_node(&k, "edge-7");
        if node["metadata"]["labels"]["site"] == "lab2" {
            assert_eq!(node["metadata"]["uid"], uid, "the same Node object");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "label not updated: {node}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.stop().success());

    // Only the control plane: no Node for this server.
    let other = temp_data_dir("node-registration-disabled");
    write(&other.join("node.yaml"), "hostname: edge-8\n");
    let server = Server::start_with(&other, &["--disable-agent"]);
    let k8 = Kubectl {
        config: other.join("admin.kubeconfig"),
        ..k
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(k8.run(&["get", "nodes", "-o", "name"]).trim(), "");
    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// The Node `name` once it exists (within 20 s).
fn wait_for_node(k: &Kubectl, name: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = k.try_run(&["get", "node", name, "-o", "json"]);
        if ok {
            return serde_json::from_str(&out).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {name} not registered: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
