//! The metrics API against a memory store and kubelets that answer from a table.

use std::sync::Arc;

use cairn_store::{MemoryStore, Store};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::nodeproxy::StreamRequest;
use crate::request::{parse_parts, ApiRequest};
use crate::server::ExtensionFuture;

/// Kubelets by address: a summary, or a refusal (a node that is down).
struct Kubelets(HashMap<String, Option<Summary>>);

impl NodeProxy for Kubelets {
    fn get(&self, address: String, port: u16, path: String) -> ExtensionFuture {
        assert_eq!((port, path.as_str()), (10250, KUBELET_PATH));
        let answer = self.0.get(&address).cloned().flatten();
        Box::pin(async move {
            let summary = answer.ok_or_else(|| ApiError::Other {
                code: 502,
                reason: "BadGateway",
                message: format!("the kubelet at {address}: connection refused"),
            })?;
            let body = serde_json::to_vec(&summary).unwrap();
            Ok(hyper::Response::new(Full::new(Bytes::from(body)).boxed()))
        })
    }

    fn upgrade(&self, _: String, _: u16, _: String, _: StreamRequest) -> ExtensionFuture {
        unreachable!("the metrics API does not stream")
    }
}

fn put(store: &dyn Store, key: String, object: Value) {
    store
        .create(&key, &serde_json::to_vec(&object).unwrap())
        .unwrap();
}

fn node(store: &dyn Store, name: &str, address: &str) {
    let nodes = crate::resources::find("", "v1", "nodes").unwrap();
    put(
        store,
        nodes.key(None, name),
        json!({"metadata": {"name": name, "labels": {"zone": name}},
               "status": {"addresses": [{"type": "InternalIP", "address": address}]}}),
    );
}

fn pod(store: &dyn Store, ns: &str, name: &str, node: &str, containers: &[&str]) {
    let pods = crate::resources::find("", "v1", "pods").unwrap();
    let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
    put(
        store,
        pods.key(Some(ns), name),
        json!({"metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                            "labels": {"app": name}},
               "spec": {"nodeName": node, "containers": containers}}),
    );
}

fn usage(cpu: u64, memory: Option<u64>) -> Usage {
    Usage {
        cpu_nano_cores: Some(cpu),
        memory_working_set_bytes: memory,
    }
}

/// n1 answers (pods a and x run there, b does not), n2 is down and runs c; d is not bound.
fn cluster() -> (Api, Arc<dyn NodeProxy>) {
    let api = Api::new(Arc::new(MemoryStore::new()));
    let store = &*api.store;
    node(store, "n1", "10.0.0.1");
    node(store, "n2", "10.0.0.2");
    pod(store, "default", "a", "n1", &["web", "sidecar"]);
    pod(store, "default", "b", "n1", &["web"]);
    pod(store, "default", "c", "n2", &["web"]);
    pod(store, "other", "x", "n1", &["main"]);
    pod(store, "default", "d", "", &["web"]);
    let container = |name: &str, u: Usage| ContainerUsage {
        name: name.into(),
        usage: u,
    };
    let n1 = Summary {
        time: "2025-06-01T10:00:00Z".into(),
        window_nanos: 1_500_000_000,
        node: usage(250_000_000, Some(64 << 20)),
        pods: vec![
            PodUsage {
                uid: "uid-a".into(),
                // Not in the spec's order: answers follow the spec.
                containers: vec![
                    container("sidecar", usage(1_000_000, Some(4 << 20))),
                    container("web", usage(2_500_000, None)),
                ],
            },
            PodUsage {
                uid: "uid-x".into(),
                containers: vec![container("main", usage(0, Some(1536 << 10)))],
            },
            // A pod deleted meanwhile: its uid matches no pod.
            PodUsage {
                uid: "uid-gone".into(),
                containers: vec![container("web", usage(1, Some(1)))],
            },
        ],
    };
    let kubelets = Kubelets(HashMap::from([
        ("10.0.0.1".to_owned(), Some(n1)),
        ("10.0.0.2".to_owned(), None),
    ]));
    (api, Arc::new(kubelets))
}

async fn get(api: &Api, proxy: &Arc<dyn NodeProxy>, uri: &str) -> Result<Value, ApiError> {
    get_as(api, proxy, uri, "application/json").await
}

async fn get_as(
    api: &Api,
    proxy: &Arc<dyn NodeProxy>,
    uri: &str,
    accept: &str,
) -> Result<Value, ApiError> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("accept", accept.parse().unwrap());
    let parsed = parse_parts(
        &http::Method::GET,
        uri.path(),
        uri.query(),
        &headers,
        &api.catalog(),
    )?;
    let ApiRequest::Resource(action) = parsed else {
        panic!("{uri}: not a resource request");
    };
    assert!(serves(&action));
    respond(api.clone(), proxy.clone(), &action).await
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn nodes_that_answer_are_listed() {
    let (api, proxy) = cluster();
    let list = get(&api, &proxy, "/apis/metrics.k8s.io/v1beta1/nodes")
        .await
        .unwrap();
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(names(&list), ["n1"], "n2 does not answer: left out");
    let n1 = &list["items"][0];
    assert_eq!(n1["usage"], json!({"cpu": "250m", "memory": "64Mi"}));
    assert_eq!(n1["window"], "1.5s");
    assert_eq!(n1["timestamp"], "2025-06-01T10:00:00Z");
    assert_eq!(n1["metadata"]["labels"], json!({"zone": "n1"}));
    assert!(n1["metadata"]["creationTimestamp"].is_string());

    let one = get(&api, &proxy, "/apis/metrics.k8s.io/v1beta1/nodes/n1")
        .await
        .unwrap();
    assert_eq!(
        (one["kind"].as_str(), one["metadata"]["name"].as_str()),
        (Some("NodeMetrics"), Some("n1"))
    );
    let selected = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=zone%3Dn2",
    )
    .await
    .unwrap();
    assert_eq!(selected["items"], json!([]));

    let silent = get(&api, &proxy, "/apis/metrics.k8s.io/v1beta1/nodes/n2").await;
    assert_eq!(
        silent.unwrap_err().to_string(),
        "nodemetrics.metrics.k8s.io \"n2\" not found"
    );
    let missing = get(&api, &proxy, "/apis/metrics.k8s.io/v1beta1/nodes/n9").await;
    let missing = missing.unwrap_err();
    assert_eq!(missing.code_reason(), (404, "NotFound"));
    assert_eq!(missing.to_string(), "nodes \"n9\" not found");
}

#[tokio::test]
async fn pods_with_running_containers_are_listed() {
    let (api, proxy) = cluster();
    let list = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
    )
    .await
    .unwrap();
    assert_eq!(list["kind"], "PodMetricsList");
    // b runs nothing, c's node is down, d is on no node.
    assert_eq!(names(&list), ["a"]);
    let a = &list["items"][0];
    assert_eq!(a["metadata"]["namespace"], "default");
    assert_eq!(a["metadata"]["labels"], json!({"app": "a"}));
    assert_eq!(a["window"], "1.5s");
    assert_eq!(
        a["containers"],
        json!([
            {"name": "web", "usage": {"cpu": "2500u"}},
            {"name": "sidecar", "usage": {"cpu": "1m", "memory": "4Mi"}},
        ])
    );

    let all = get(&api, &proxy, "/apis/metrics.k8s.io/v1beta1/pods")
        .await
        .unwrap();
    assert_eq!(names(&all), ["a", "x"]);
    assert_eq!(
        all["items"][1]["containers"][0]["usage"],
        json!({"cpu": "0", "memory": "1536Ki"})
    );
    let selected = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%20in%20(x,b)",
    )
    .await
    .unwrap();
    assert_eq!(names(&selected), ["x"]);
    let by_field = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?fieldSelector=metadata.name%3Db",
    )
    .await
    .unwrap();
    assert_eq!(by_field["items"], json!([]));
    let empty = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/namespaces/empty/pods",
    )
    .await
    .unwrap();
    assert_eq!(empty["items"], json!([]));

    let one = get(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/a",
    )
    .await
    .unwrap();
    assert_eq!(one["kind"], "PodMetrics");
    assert_eq!(one["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(one["containers"][0]["name"], "web");
    for (pod, message) in [
        ("b", "podmetrics.metrics.k8s.io \"default/b\" not found"),
        ("c", "podmetrics.metrics.k8s.io \"default/c\" not found"),
        ("nosuch", "pods \"nosuch\" not found"),
    ] {
        let uri = format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}");
        let e = get(&api, &proxy, &uri).await.unwrap_err();
        assert_eq!(e.code_reason(), (404, "NotFound"), "{pod}");
        assert_eq!(e.to_string(), message);
    }
}

#[tokio::test]
async fn tables_sum_a_pods_containers() {
    let (api, proxy) = cluster();
    let table = get_as(
        &api,
        &proxy,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .await
    .unwrap();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "cpu", "memory", "Window"]);
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["a", "3500u", "4Mi", "1.5s"])
    );
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "a");
}

#[test]
fn the_metrics_api_is_read_only_and_discoverable() {
    let catalog = crate::resources::Catalog::default();
    let headers = http::HeaderMap::new();
    let parse = |method: &http::Method, path: &str, query: Option<&str>| {
        parse_parts(method, path, query, &headers, &catalog)
    };
    let pods = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    assert_eq!(
        parse(&http::Method::GET, pods, Some("watch=true"))
            .unwrap_err()
            .code_reason()
            .0,
        405
    );
    assert_eq!(
        parse(&http::Method::POST, pods, None)
            .unwrap_err()
            .code_reason()
            .0,
        405
    );
    let e = parse(
        &http::Method::GET,
        pods,
        Some("fieldSelector=spec.nodeName%3Dn1"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("field label not supported"), "{e}");
    // The core group keeps its own `pods` and `nodes`.
    let core = parse(&http::Method::GET, "/api/v1/namespaces/default/pods", None).unwrap();
    let ApiRequest::Resource(action) = core else {
        panic!()
    };
    assert!(!serves(&action));

    let (group, _) =
        crate::discovery::document(&crate::request::Discovery::Group(GROUP.into()), &catalog)
            .unwrap();
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let (resources, _) = crate::discovery::document(
        &crate::request::Discovery::GroupVersion {
            group: GROUP.into(),
            version: "v1beta1".into(),
        },
        &catalog,
    )
    .unwrap();
    assert_eq!(
        resources["resources"],
        json!([
            {"name": "nodes", "singularName": "nodemetrics", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "podmetrics", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ])
    );
}

#[test]
fn quantities_and_durations_print_as_kubernetes_prints_them() {
    assert_eq!(cpu_quantity(0), "0");
    assert_eq!(cpu_quantity(1_234_567), "1234567n");
    assert_eq!(cpu_quantity(2_500_000), "2500u");
    assert_eq!(cpu_quantity(250_000_000), "250m");
    assert_eq!(cpu_quantity(1_500_000_000), "1500m");
    assert_eq!(cpu_quantity(2_000_000_000), "2");
    assert_eq!(memory_quantity(0), "0");
    assert_eq!(memory_quantity(1000), "1000");
    assert_eq!(memory_quantity(4096), "4Ki");
    assert_eq!(memory_quantity(1536 << 10), "1536Ki");
    assert_eq!(memory_quantity(64 << 20), "64Mi");
    assert_eq!(memory_quantity(3 << 30), "3Gi");
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(999), "999ns");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(500_000_000), "500ms");
    assert_eq!(go_duration(1_000_000_000), "1s");
    assert_eq!(go_duration(1_002_345_000), "1.002345s");
    assert_eq!(go_duration(20_035_000_000), "20.035s");
    assert_eq!(go_duration(60_500_000_000), "1m0.5s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    // What a kubelet sends arrives as it was sent.
    let summary = Summary {
        time: "2025-06-01T10:00:00Z".into(),
        window_nanos: 1,
        node: usage(5, None),
        pods: vec![PodUsage {
            uid: "u".into(),
            containers: vec![ContainerUsage {
                name: "c".into(),
                usage: usage(1, Some(2)),
            }],
        }],
    };
    let wire = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        wire,
        json!({"time": "2025-06-01T10:00:00Z", "windowNanos": 1, "node": {"cpuNanoCores": 5},
               "pods": [{"uid": "u", "containers": [{"name": "c", "cpuNanoCores": 1, "memoryWorkingSetBytes": 2}]}]})
    );
    assert_eq!(serde_json::from_value::<Summary>(wire).unwrap(), summary);
}
