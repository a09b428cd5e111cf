//! Handler tests against `MemoryStore`.

use std::sync::Arc;

use cairn_store::MemoryStore;
use http::Method;
use serde_json::{json, Value};

use super::*;
use crate::request::{parse_parts, ApiRequest};

fn api() -> Api {
    Api::new(Arc::new(MemoryStore::new()))
}

fn call(
    api: &Api,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Value,
) -> Result<Reply, ApiError> {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    call_raw(api, method, uri, content_type, &bytes)
}

/// [`call`] with the body's bytes as they are (too large, or not JSON at all).
fn call_raw(
    api: &Api,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", content_type.parse().unwrap());
    let method: Method = method.parse().unwrap();
    let ApiRequest::Resource(action) =
        parse_parts(&method, uri.path(), uri.query(), &headers, &api.catalog())?
    else {
        panic!("not a resource request");
    };
    api.handle(&action, body)
}

fn ok(api: &Api, method: &str, uri: &str, body: Value) -> Value {
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    call(api, method, uri, ct, body)
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
        .body
}

fn err(api: &Api, method: &str, uri: &str, body: Value) -> (u16, String) {
    let e = call(api, method, uri, "application/json", body).unwrap_err();
    (e.code_reason().0, e.to_string())
}

fn with_ns(name: &str) -> Api {
    let api = api();
    ok(
        &api,
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": name}}),
    );
    api
}

#[test]
fn create_sets_metadata_and_requires_namespace() {
    let api = api();
    let (code, msg) = err(
        &api,
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        json!({"metadata": {"name": "a"}}),
    );
    assert_eq!(code, 404);
    assert!(msg.contains("kubectl create namespace dev"), "{msg}");
    let ns = ok(
        &api,
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "dev"}}),
    );
    assert_eq!(ns["kind"], "Namespace");
    let cm = ok(
        &api,
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        json!({"metadata": {"generateName": "cfg-"}, "data": {"k": "v"}}),
    );
    let meta = &cm["metadata"];
    assert!(meta["name"].as_str().unwrap().starts_with("cfg-"));
    assert_eq!(meta["namespace"], "dev");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(cm["apiVersion"], "v1");
    let rv: u64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv > 0);
    let got = ok(
        &api,
        "GET",
        &format!(
            "/api/v1/namespaces/dev/configmaps/{}",
            meta["name"].as_str().unwrap()
        ),
        Value::Null,
    );
    assert_eq!(got, cm);
    // Duplicates, bad names, mismatched namespaces, dry run.
    let dup = json!({"metadata": {"name": cm["metadata"]["name"]}});
    assert_eq!(
        err(&api, "POST", "/api/v1/namespaces/dev/configmaps", dup).0,
        409
    );
    assert_eq!(
        err(
            &api,
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            json!({"metadata": {"name": "Bad_Name"}})
        )
        .0,
        422
    );
    assert_eq!(
        err(
            &api,
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            json!({"metadata": {"name": "x", "namespace": "other"}})
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &api,
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            json!({"kind": "Secret", "metadata": {"name": "x"}})
        )
        .0,
        400
    );
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/dev/secrets?dryRun=All",
        json!({"metadata": {"name": "s"}}),
    );
    assert_eq!(
        err(&api, "GET", "/api/v1/namespaces/dev/secrets/s", Value::Null).0,
        404
    );
}

#[test]
fn update_is_optimistic() {
    let api = with_ns("d");
    let cm = ok(
        &api,
        "POST",
        "/api/v1/namespaces/d/configmaps",
        json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
    );
    let mut next = cm.clone();
    next["data"]["k"] = json!("2");
    let updated = ok(&api, "PUT", "/api/v1/namespaces/d/configmaps/a", next);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["metadata"]["uid"], cm["metadata"]["uid"]);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        cm["metadata"]["resourceVersion"]
    );
    // The stale version loses.
    let mut stale = cm.clone();
    stale["data"]["k"] = json!("3");
    let (code, msg) = err(&api, "PUT", "/api/v1/namespaces/d/configmaps/a", stale);
    assert_eq!(code, 409);
    assert!(msg.contains("the object has been modified"), "{msg}");
    // No change, no write.
    let same = ok(
        &api,
        "PUT",
        "/api/v1/namespaces/d/configmaps/a",
        updated.clone(),
    );
    assert_eq!(
        same["metadata"]["resourceVersion"],
        updated["metadata"]["resourceVersion"]
    );
    assert_eq!(
        err(
            &api,
            "PUT",
            "/api/v1/namespaces/d/configmaps/zz",
            json!({"metadata": {"name": "zz"}})
        )
        .0,
        404
    );
    assert_eq!(
        err(
            &api,
            "PUT",
            "/api/v1/namespaces/d/configmaps/a",
            json!({"metadata": {"name": "b"}})
        )
        .0,
        400
    );
}

#[test]
fn patches() {
    let api = with_ns("d");
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/d/configmaps",
        json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "1"}}),
    );
    let m = ok(
        &api,
        "PATCH",
        "/api/v1/namespaces/d/configmaps/a",
        json!({"metadata": {"labels": {"x": null, "y": "2"}}}),
    );
    assert_eq!(m["metadata"]["labels"], json!({"y": "2"}));
    let j = call(
        &api,
        "PATCH",
        "/api/v1/namespaces/d/configmaps/a",
        "application/json-patch+json",
        json!([{"op": "add", "path": "/data/n", "value": "v"}]),
    )
    .unwrap()
    .body;
    assert_eq!(j["data"], json!({"k": "1", "n": "v"}));
    let s = call(
        &api,
        "PATCH",
        "/api/v1/namespaces/d/configmaps/a",
        "application/strategic-merge-patch+json",
        json!({"data": {"k": null}}),
    )
    .unwrap()
    .body;
    assert_eq!(s["data"], json!({"n": "v"}));
    // A stale resourceVersion in the patch is a precondition that fails.
    let e = call(
        &api,
        "PATCH",
        "/api/v1/namespaces/d/configmaps/a",
        "application/merge-patch+json",
        json!({"metadata": {"resourceVersion": "1"}}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 409);
    let e = call(
        &api,
        "PATCH",
        "/api/v1/namespaces/d/configmaps/nope",
        "application/merge-patch+json",
        json!({}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 404);
}

/// A request body over [`MAX_BODY`] is refused, whatever the verb, with Kubernetes' 413 `Status`;
/// nothing is written and the next request is served as usual.
#[test]
fn oversized_bodies_are_refused_with_413() {
    let api = with_ns("d");
    let uri = "/api/v1/namespaces/d/configmaps";
    let cm = ok(
        &api,
        "POST",
        uri,
        json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
    );
    let big = |name: &str| {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"k": "x".repeat(MAX_BODY)},
        }))
        .unwrap()
    };
    for (method, uri, content_type, body) in [
        ("POST", uri.to_owned(), "application/json", big("big")),
        ("PUT", format!("{uri}/a"), "application/json", big("a")),
        (
            "PATCH",
            format!("{uri}/a"),
            "application/merge-patch+json",
            big("a"),
        ),
        (
            "PATCH",
            format!("{uri}/a"),
            "application/strategic-merge-patch+json",
            big("a"),
        ),
        (
            "PATCH",
            format!("{uri}/a?fieldManager=me"),
            "application/apply-patch+yaml",
            big("a"),
        ),
    ] {
        let e = call_raw(&api, method, &uri, content_type, &body).unwrap_err();
        let status = serde_json::to_value(e.status()).unwrap();
        assert_eq!(status["kind"], "Status", "{method} {content_type}");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 413, "{method} {content_type}: {status}");
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("3145728"), "{message}");
    }
    // Nothing was written, and normal requests go on.
    assert_eq!(err(&api, "GET", &format!("{uri}/big"), Value::Null).0, 404);
    let got = ok(&api, "GET", &format!("{uri}/a"), Value::Null);
    assert_eq!(got, cm);
    let patched = ok(
        &api,
        "PATCH",
        &format!("{uri}/a"),
        json!({"data": {"k": "2"}}),
    );
    assert_eq!(patched["data"]["k"], "2");
    ok(&api, "POST", uri, json!({"metadata": {"name": "small"}}));
}

/// Bodies that do not parse are a 400 saying where they broke, and write nothing.
#[test]
fn malformed_bodies_are_bad_requests_and_store_nothing() {
    let api = with_ns("d");
    let uri = "/api/v1/namespaces/d/configmaps";
    let cm = ok(
        &api,
        "POST",
        uri,
        json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
    );
    let before = api.store.current_revision().unwrap();
    let truncated = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"#;
    for (method, uri, content_type, body, want) in [
        (
            "POST",
            uri.to_owned(),
            "application/json",
            &truncated[..],
            "the request body is not valid JSON: EOF while parsing an object at line 1 column 55",
        ),
        (
            "PUT",
            format!("{uri}/a"),
            "application/json",
            &truncated[..],
            "the request body is not valid JSON: EOF while parsing an object at line 1 column 55",
        ),
        (
            "PATCH",
            format!("{uri}/a"),
            "application/merge-patch+json",
            br#"{"data": {"k": "2""#,
            "the patch is not valid JSON: EOF while parsing an object at line 1 column 18",
        ),
        (
            "PATCH",
            format!("{uri}/a"),
            "application/json-patch+json",
            br#"[{"op": "replace", "path": "/data/k", "value": }]"#,
            "the patch is not valid JSON: expected value at line 1 column 48",
        ),
        (
            "PATCH",
            format!("{uri}/b?fieldManager=me"),
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
            "the apply configuration is not valid YAML or JSON: ",
        ),
    ] {
        let e = call_raw(&api, method, &uri, content_type, body).unwrap_err();
        let status = serde_json::to_value(e.status()).unwrap();
        assert_eq!(status["kind"], "Status", "{method} {content_type}");
        assert_eq!(
            (&status["code"], &status["reason"]),
            (&json!(400), &json!("BadRequest")),
            "{method} {content_type}: {status}"
        );
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with(want),
            "{method} {content_type}: {message}"
        );
        assert!(message.contains(" line "), "{message}");
    }
    assert_eq!(
        api.store.current_revision().unwrap(),
        before,
        "a write happened"
    );
    assert_eq!(ok(&api, "GET", &format!("{uri}/a"), Value::Null), cm);
    assert_eq!(err(&api, "GET", &format!("{uri}/b"), Value::Null).0, 404);
}

#[test]
fn lists_select_and_page() {
    let api = with_ns("d");
    for (i, app) in ["web", "db", "web", "cache", "web"].iter().enumerate() {
        ok(
            &api,
            "POST",
            "/api/v1/namespaces/d/configmaps",
            json!({"metadata": {"name": format!("c{i}"), "labels": {"app": app}}}),
        );
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ok(&api, "GET", "/api/v1/configmaps", Value::Null);
    assert_eq!(all["kind"], "ConfigMapList");
    assert_eq!(names(&all).len(), 5);
    let web = ok(
        &api,
        "GET",
        "/api/v1/namespaces/d/configmaps?labelSelector=app%3Dweb",
        Value::Null,
    );
    assert_eq!(names(&web), ["c0", "c2", "c4"]);
    let notin = ok(
        &api,
        "GET",
        "/api/v1/configmaps?labelSelector=app%20notin%20(web)",
        Value::Null,
    );
    assert_eq!(names(&notin), ["c1", "c3"]);
    let field = ok(
        &api,
        "GET",
        "/api/v1/configmaps?fieldSelector=metadata.name%3Dc3",
        Value::Null,
    );
    assert_eq!(names(&field), ["c3"]);
    // Pages of 2 web objects at one snapshot, unaffected by a later write.
    let p1 = ok(
        &api,
        "GET",
        "/api/v1/namespaces/d/configmaps?labelSelector=app%3Dweb&limit=2",
        Value::Null,
    );
    assert_eq!(names(&p1), ["c0", "c2"]);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_owned();
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/d/configmaps",
        json!({"metadata": {"name": "c9", "labels": {"app": "web"}}}),
    );
    let p2 = ok(
        &api,
        "GET",
        &format!(
            "/api/v1/namespaces/d/configmaps?labelSelector=app%3Dweb&limit=2&continue={token}"
        ),
        Value::Null,
    );
    assert_eq!(names(&p2), ["c4"]);
    assert!(p2["metadata"].get("continue").is_none());
    assert!(
        p1["metadata"].get("remainingItemCount").is_none(),
        "not with a selector"
    );
    // Without selectors the later pages' size is known: 4 more after the first 2 of 6.
    let q1 = ok(
        &api,
        "GET",
        "/api/v1/namespaces/d/configmaps?limit=2",
        Value::Null,
    );
    assert_eq!(names(&q1), ["c0", "c1"]);
    assert_eq!(q1["metadata"]["remainingItemCount"], 4);
    let token = q1["metadata"]["continue"].as_str().unwrap().to_owned();
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/d/configmaps",
        json!({"metadata": {"name": "c8"}}),
    );
    let q2 = ok(
        &api,
        "GET",
        &format!("/api/v1/namespaces/d/configmaps?limit=3&continue={token}"),
        Value::Null,
    );
    assert_eq!(names(&q2), ["c2", "c3", "c4"]);
    assert_eq!(
        q2["metadata"]["remainingItemCount"], 1,
        "the snapshot's, not c8"
    );
    let q3 = ok(
        &api,
        "GET",
        &format!(
            "/api/v1/namespaces/d/configmaps?limit=3&continue={}",
            q2["metadata"]["continue"].as_str().unwrap()
        ),
        Value::Null,
    );
    assert_eq!(names(&q3), ["c9"]);
    assert!(q3["metadata"].get("remainingItemCount").is_none());
    assert_eq!(
        p2["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
    assert_eq!(
        err(&api, "GET", "/api/v1/configmaps?continue=zz", Value::Null).0,
        400
    );
}

#[test]
fn deletes() {
    let api = with_ns("d");
    ok(
        &api,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/d/leases",
        json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}),
    );
    let gone = ok(
        &api,
        "DELETE",
        "/apis/coordination.k8s.io/v1/namespaces/d/leases/l",
        Value::Null,
    );
    assert_eq!(gone["spec"]["holderIdentity"], "me");
    let (code, msg) = err(
        &api,
        "DELETE",
        "/apis/coordination.k8s.io/v1/namespaces/d/leases/l",
        Value::Null,
    );
    assert_eq!(
        (code, msg.as_str()),
        (404, "leases.coordination.k8s.io \"l\" not found")
    );
    for n in ["a", "b"] {
        ok(
            &api,
            "POST",
            "/api/v1/namespaces/d/secrets",
            json!({"metadata": {"name": n, "labels": {"n": n}}, "stringData": {"k": "v"}}),
        );
    }
    let deleted = ok(
        &api,
        "DELETE",
        "/api/v1/namespaces/d/secrets?labelSelector=n%3Da",
        Value::Null,
    );
    assert_eq!(deleted["items"].as_array().unwrap().len(), 1);
    let left = ok(&api, "GET", "/api/v1/namespaces/d/secrets", Value::Null);
    assert_eq!(left["items"][0]["metadata"]["name"], "b");
    assert_eq!(left["items"][0]["data"]["k"], "dg==");
    // Preconditions.
    let (code, _) = err(
        &api,
        "DELETE",
        "/api/v1/namespaces/d/secrets/b",
        json!({"preconditions": {"uid": "nope"}}),
    );
    assert_eq!(code, 409);
    // Deleting the namespace takes its objects along.
    ok(&api, "DELETE", "/api/v1/namespaces/d", Value::Null);
    assert!(ok(&api, "GET", "/api/v1/secrets", Value::Null)["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn finalizers_hold_a_deletion_until_the_last_one_goes() {
    let api = with_ns("f");
    let cm = "/api/v1/namespaces/f/configmaps/held";
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/f/configmaps",
        json!({"metadata": {"name": "held", "finalizers": ["a.example/x", "b.example/y"],
               "deletionTimestamp": "2020-01-01T00:00:00Z"}}),
    );
    let created = ok(&api, "GET", cm, Value::Null);
    assert!(
        created["metadata"].get("deletionTimestamp").is_none(),
        "clients cannot set it"
    );
    let marked = ok(&api, "DELETE", cm, Value::Null);
    let at = marked["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    // Still there; a second delete changes nothing.
    let again = ok(&api, "DELETE", cm, Value::Null);
    assert_eq!(again["metadata"]["deletionTimestamp"], at.as_str());
    assert_eq!(
        again["metadata"]["resourceVersion"],
        marked["metadata"]["resourceVersion"]
    );
    // No new finalizers once deleting; the timestamp cannot be changed or removed.
    let (code, msg) = err_patch(
        &api,
        cm,
        json!({"metadata": {"finalizers": ["a.example/x", "b.example/y", "c.example/z"]}}),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("no new finalizers"), "{msg}");
    ok(
        &api,
        "PATCH",
        cm,
        json!({"metadata": {"finalizers": ["b.example/y"], "deletionTimestamp": null}}),
    );
    let one_left = ok(&api, "GET", cm, Value::Null);
    assert_eq!(one_left["metadata"]["deletionTimestamp"], at.as_str());
    assert_eq!(one_left["metadata"]["finalizers"], json!(["b.example/y"]));
    // Removing the last finalizer deletes it.
    ok(&api, "PATCH", cm, json!({"metadata": {"finalizers": null}}));
    let (code, _) = err(&api, "GET", cm, Value::Null);
    assert_eq!(code, 404);

    // deletecollection marks what has finalizers and deletes the rest.
    for (name, finalizers) in [("x", json!(["a.example/x"])), ("y", json!([]))] {
        ok(
            &api,
            "POST",
            "/api/v1/namespaces/f/configmaps",
            json!({"metadata": {"name": name, "finalizers": finalizers}}),
        );
    }
    let deleted = ok(
        &api,
        "DELETE",
        "/api/v1/namespaces/f/configmaps",
        Value::Null,
    );
    assert_eq!(deleted["items"].as_array().unwrap().len(), 2);
    let left = ok(&api, "GET", "/api/v1/namespaces/f/configmaps", Value::Null);
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    assert_eq!(left["items"][0]["metadata"]["name"], "x");
    assert!(left["items"][0]["metadata"]["deletionTimestamp"].is_string());
}

fn pod(api: &Api, name: &str, labels: Value, ready: bool) {
    ok(
        api,
        "POST",
        "/api/v1/namespaces/p/pods",
        json!({"metadata": {"name": name, "labels": labels},
               "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    );
    let status = if ready { "True" } else { "False" };
    ok(
        api,
        "PATCH",
        &format!("/api/v1/namespaces/p/pods/{name}/status"),
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}}),
    );
}

#[test]
fn binding_puts_a_pod_on_a_node_once() {
    let api = with_ns("p");
    pod(&api, "web", json!({"app": "web"}), false);
    let uri = "/api/v1/namespaces/p/pods/web/binding";
    let bind = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "web"}, "target": {"kind": "Node", "name": node}})
    };
    let reply = call(&api, "POST", uri, "application/json", bind("edge-1")).unwrap();
    assert_eq!(
        (reply.code, reply.body["status"].as_str()),
        (201, Some("Success"))
    );
    let got = ok(&api, "GET", "/api/v1/namespaces/p/pods/web", Value::Null);
    assert_eq!(got["spec"]["nodeName"], "edge-1");
    let (code, msg) = err(&api, "POST", uri, bind("edge-2"));
    assert_eq!(code, 409, "{msg}");
    assert!(msg.contains("already assigned to node \"edge-1\""), "{msg}");
    let (code, _) = err(
        &api,
        "POST",
        "/api/v1/namespaces/p/pods/nope/binding",
        bind("edge-1"),
    );
    assert_eq!(code, 404);
    let (code, msg) = err(&api, "POST", uri, json!({"target": {}}));
    assert_eq!(code, 422, "{msg}");
    let (code, _) = err(&api, "GET", uri, Value::Null);
    assert_eq!(code, 405);
}

#[test]
fn evictions_respect_the_disruption_budget() {
    let api = with_ns("p");
    for (name, ready) in [("a", true), ("b", true), ("c", false)] {
        pod(&api, name, json!({"app": "web"}), ready);
    }
    pod(&api, "other", json!({"app": "db"}), true);
    ok(
        &api,
        "POST",
        "/apis/policy/v1/namespaces/p/poddisruptionbudgets",
        json!({"metadata": {"name": "web"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    let evict = |name: &str| {
        call(
            &api,
            "POST",
            &format!("/api/v1/namespaces/p/pods/{name}/eviction"),
            "application/json",
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}),
        )
    };
    // Two of three healthy, one must stay: one Ready pod may go, then no more.
    assert_eq!(evict("a").unwrap().code, 201);
    let e = evict("b").unwrap_err();
    assert_eq!(e.code_reason(), (429, "TooManyRequests"));
    assert!(
        e.to_string().contains("needs 1 healthy pods and has 1"),
        "{e}"
    );
    // The unready pod may go: the budget is met without it. Unbudgeted pods always may.
    assert_eq!(evict("c").unwrap().code, 201);
    assert_eq!(evict("other").unwrap().code, 201);
    let left = ok(&api, "GET", "/api/v1/namespaces/p/pods", Value::Null);
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    // A percentage: maxUnavailable 50% of one pod rounds up to one, so b may go.
    ok(
        &api,
        "PATCH",
        "/apis/policy/v1/namespaces/p/poddisruptionbudgets/web",
        json!({"spec": {"minAvailable": null, "maxUnavailable": "50%"}}),
    );
    assert_eq!(evict("b").unwrap().code, 201);
    assert_eq!(evict("b").unwrap_err().code_reason().0, 404);
    let e = call(
        &api,
        "POST",
        "/api/v1/namespaces/p/pods/x/eviction",
        "application/json",
        json!({"kind": "Eviction", "apiVersion": "policy/v1", "metadata": {"name": "y"}}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 400, "{e}");
}

#[test]
fn pods_on_a_node_are_deleted_gracefully() {
    let api = with_ns("p");
    let pods = "/api/v1/namespaces/p/pods";
    let on_node = |name: &str, extra: Value| {
        let mut spec = json!({"nodeName": "edge-1", "containers": [{"name": "c", "image": "i"}]});
        json_patch::merge(&mut spec, &extra);
        ok(
            &api,
            "POST",
            pods,
            json!({"metadata": {"name": name}, "spec": spec}),
        )
    };
    let gone = |name: &str| {
        call(
            &api,
            "GET",
            &format!("{pods}/{name}"),
            "application/json",
            Value::Null,
        )
        .is_err_and(|e| e.code_reason().0 == 404)
    };
    let web = on_node("web", json!({"terminationGracePeriodSeconds": 20}));
    let uid = web["metadata"]["uid"].as_str().unwrap().to_owned();
    let deleted = ok(&api, "DELETE", &format!("{pods}/web"), Value::Null);
    assert_eq!(deleted["metadata"]["deletionGracePeriodSeconds"], 20);
    let deadline: jiff::Timestamp = deleted["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = deadline.as_second() - jiff::Timestamp::now().as_second();
    assert!((18..=21).contains(&ahead), "deadline {ahead} s ahead");
    // Terminating: still there, and the kubelet's status writes do not remove it.
    ok(
        &api,
        "PATCH",
        &format!("{pods}/web/status"),
        json!({"status": {"phase": "Running"}}),
    );
    assert!(!gone("web"));
    // Deleting again never lengthens the grace period, and may shorten it.
    let again = ok(
        &api,
        "DELETE",
        &format!("{pods}/web"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 60}),
    );
    assert_eq!(again["metadata"]["deletionGracePeriodSeconds"], 20);
    assert_eq!(
        again["metadata"]["deletionTimestamp"],
        deleted["metadata"]["deletionTimestamp"]
    );
    let shorter = ok(
        &api,
        "DELETE",
        &format!("{pods}/web?gracePeriodSeconds=5"),
        Value::Null,
    );
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    assert!(
        shorter["metadata"]["deletionTimestamp"].as_str()
            < deleted["metadata"]["deletionTimestamp"].as_str()
    );
    // The kubelet's final deletion: grace 0, for this pod only (uid precondition).
    let last = |uid: &str| {
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
               "preconditions": {"uid": uid}})
    };
    let (code, msg) = err(&api, "DELETE", &format!("{pods}/web"), last("someone-else"));
    assert_eq!(code, 409, "{msg}");
    ok(&api, "DELETE", &format!("{pods}/web"), last(&uid));
    assert!(gone("web"));
    let (code, _) = err(
        &api,
        "DELETE",
        &format!("{pods}/web?gracePeriodSeconds=x"),
        Value::Null,
    );
    assert_eq!(code, 400);

    // No node runs it: gone at once. Unscheduled, or finished.
    ok(
        &api,
        "POST",
        pods,
        json!({"metadata": {"name": "pending"},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    );
    ok(&api, "DELETE", &format!("{pods}/pending"), Value::Null);
    assert!(gone("pending"));
    on_node("done", json!({}));
    ok(
        &api,
        "PATCH",
        &format!("{pods}/done/status"),
        json!({"status": {"phase": "Succeeded"}}),
    );
    ok(&api, "DELETE", &format!("{pods}/done"), Value::Null);
    assert!(gone("done"));

    // Finalizers and a grace period: the kubelet's grace 0 leaves it to the finalizer.
    ok(
        &api,
        "POST",
        pods,
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]},
               "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "i"}]}}),
    );
    let held = ok(&api, "DELETE", &format!("{pods}/held"), Value::Null);
    assert_eq!(
        held["metadata"]["deletionGracePeriodSeconds"], 30,
        "the default"
    );
    let held = ok(
        &api,
        "DELETE",
        &format!("{pods}/held?gracePeriodSeconds=0"),
        Value::Null,
    );
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
    assert!(!gone("held"));
    ok(
        &api,
        "PATCH",
        &format!("{pods}/held"),
        json!({"metadata": {"finalizers": null}}),
    );
    assert!(gone("held"));

    // A collection: each pod by the same rules.
    on_node("a", json!({}));
    on_node("b", json!({}));
    let list = ok(&api, "DELETE", pods, Value::Null);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(!gone("a") && !gone("b"));
    ok(
        &api,
        "DELETE",
        &format!("{pods}?gracePeriodSeconds=0"),
        Value::Null,
    );
    assert!(gone("a") && gone("b"));

    // A namespace waits for its pods to stop; the last pod's final deletion ends it.
    on_node("last", json!({}));
    let ns = ok(&api, "DELETE", "/api/v1/namespaces/p", Value::Null);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let last_pod = ok(&api, "GET", &format!("{pods}/last"), Value::Null);
    assert_eq!(last_pod["metadata"]["deletionGracePeriodSeconds"], 30);
    ok(
        &api,
        "DELETE",
        &format!("{pods}/last?gracePeriodSeconds=0"),
        Value::Null,
    );
    assert_eq!(err(&api, "GET", "/api/v1/namespaces/p", Value::Null).0, 404);
}

fn err_patch(api: &Api, uri: &str, body: Value) -> (u16, String) {
    let e = call(api, "PATCH", uri, "application/merge-patch+json", body).unwrap_err();
    (e.code_reason().0, e.to_string())
}

#[test]
fn tables() {
    let api = with_ns("d");
    let uri: http::Uri = "/api/v1/namespaces".parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io"
            .parse()
            .unwrap(),
    );
    let Ok(ApiRequest::Resource(action)) =
        parse_parts(&Method::GET, uri.path(), None, &headers, &api.catalog())
    else {
        panic!()
    };
    let t = api.handle(&action, &[]).unwrap().body;
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"][0]["cells"][0], "d");
    assert_eq!(t["rows"][0]["cells"][1], "Active");
}

#[test]
fn status_and_scale_subresources() {
    let api = with_ns("d");
    let base = "/apis/apps/v1/namespaces/d/deployments";
    let deploy = json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    ok(&api, "POST", base, deploy);
    let item = format!("{base}/web");

    // The controller's view: only /status writes the status.
    let status = ok(&api, "PUT", &format!("{item}/status"), {
        let mut d = ok(&api, "GET", &item, Value::Null);
        d["status"] = json!({"replicas": 1, "readyReplicas": 1});
        d["spec"]["replicas"] = json!(9); // ignored: /status changes only the status
        d
    });
    assert_eq!(status["status"]["readyReplicas"], 1);
    assert_eq!(status["spec"]["replicas"], 1);
    let mut user = ok(&api, "GET", &item, Value::Null);
    user["status"] = json!({"readyReplicas": 7}); // ignored: a user write keeps the status
    user["metadata"]["labels"] = json!({"team": "a"});
    let after = ok(&api, "PUT", &item, user);
    assert_eq!(after["status"]["readyReplicas"], 1);
    assert_eq!(after["metadata"]["labels"]["team"], "a");

    // kubectl scale: GET and PATCH the Scale.
    let scale = ok(&api, "GET", &format!("{item}/scale"), Value::Null);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=web");
    let scaled = ok(
        &api,
        "PATCH",
        &format!("{item}/scale"),
        json!({"spec": {"replicas": 3}}),
    );
    assert_eq!(
        (scaled["kind"].as_str(), scaled["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(3))
    );
    let d = ok(&api, "GET", &item, Value::Null);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2, "scaling changes the spec");
    // A Scale PUT with the wrong kind is refused; subresources take get/update/patch only.
    let (code, msg) = err(
        &api,
        "PUT",
        &format!("{item}/scale"),
        json!({"kind": "Deployment", "spec": {"replicas": 1}}),
    );
    assert_eq!(code, 400, "{msg}");
    let (code, _) = err(&api, "DELETE", &format!("{item}/status"), Value::Null);
    assert_eq!(code, 405);
    let (code, _) = err(
        &api,
        "GET",
        "/api/v1/namespaces/d/configmaps/x/status",
        Value::Null,
    );
    assert_eq!(code, 404);
}

/// A stored `widgets.example.com` definition (`crd::tests::widget_definition`).
fn with_widgets(api: &Api) -> Value {
    let mut crd = crate::crd::tests::widget_definition();
    crd["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    ok(
        api,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/d/widgets";

#[test]
fn custom_resources_are_served_from_their_definition() {
    let api = with_ns("d");
    // Not served before the definition exists.
    let (code, _) = err(&api, "GET", WIDGETS, Value::Null);
    assert_eq!(code, 404);
    let crd = with_widgets(&api);
    assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
    assert_eq!(
        crd["status"]["conditions"][1]["lastTransitionTime"],
        crd["metadata"]["creationTimestamp"]
    );

    let w = ok(
        &api,
        "POST",
        WIDGETS,
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
               "spec": {"size": 2, "extra": 1}, "status": {"size": 9}}),
    );
    assert_eq!(w["spec"]["colour"], "red", "schema default applied");
    assert!(w["spec"].get("extra").is_none(), "unknown field pruned");
    let (code, msg) = err(
        &api,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Strict"),
        json!({"metadata": {"name": "b"}, "spec": {"size": 2, "extra": 1}}),
    );
    assert_eq!(code, 400);
    assert!(msg.contains("unknown field \"spec.extra\""), "{msg}");
    let (code, msg) = err(
        &api,
        "POST",
        WIDGETS,
        json!({"metadata": {"name": "b"}, "spec": {"size": 20}}),
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec.size in body should be less than or equal to 10"),
        "{msg}"
    );
    let (code, _) = err(
        &api,
        "POST",
        WIDGETS,
        json!({"kind": "Gadget", "metadata": {"name": "b"}, "spec": {"size": 1}}),
    );
    assert_eq!(code, 400, "the kind must be the definition's");

    // status and scale subresources at the definition's paths.
    let status = ok(
        &api,
        "PUT",
        &format!("{WIDGETS}/a/status"),
        json!({"metadata": {"name": "a"}, "spec": {"size": 7},
               "status": {"size": 2, "selector": "app=a", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    assert_eq!(status["spec"]["size"], 2, "a /status write keeps the spec");
    let scale = ok(&api, "GET", &format!("{WIDGETS}/a/scale"), Value::Null);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=a");
    ok(
        &api,
        "PUT",
        &format!("{WIDGETS}/a/scale"),
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "a", "namespace": "d"}, "spec": {"replicas": 5}}),
    );
    let w = ok(&api, "GET", &format!("{WIDGETS}/a"), Value::Null);
    assert_eq!(w["spec"]["size"], 5);
    assert_eq!(w["metadata"]["generation"], 2);

    // The other served version reads the same object.
    let beta = ok(
        &api,
        "GET",
        "/apis/example.com/v1beta1/namespaces/d/widgets/a",
        Value::Null,
    );
    assert_eq!(beta["apiVersion"], "example.com/v1beta1");
    assert_eq!(beta["spec"]["size"], 5);

    // kubectl's columns come from the definition.
    let resource = api.catalog().find("example.com", "v1", "widgets").unwrap();
    let table = crate::table::to_table(resource, &w);
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Size", "Ready", "Colour"]);
    assert_eq!(table["columnDefinitions"][3]["priority"], 1);
    assert_eq!(table["rows"][0]["cells"], json!(["a", 5, "True", "red"]));

    // Discovery and OpenAPI show the group; a new API over the same store serves it too.
    let catalog = api.catalog();
    let (groups, _) = crate::discovery::document(
        &crate::request::Discovery::Apis { aggregated: false },
        &catalog,
    )
    .unwrap();
    let group = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "example.com")
        .unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    let doc = crate::openapi::group_version(&catalog, "example.com", "v1").unwrap();
    assert!(doc["components"]["schemas"]["com.example.v1.Widget"].is_object());
    assert!(
        doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object()
    );
    assert!(crate::openapi::index(&catalog)["paths"]
        .get("apis/example.com/v1")
        .is_some());
    let again = Api::new(api.store.clone());
    assert!(again
        .catalog()
        .find("example.com", "v1", "widgets")
        .is_some());

    // Deleting the definition deletes its objects and stops serving them.
    ok(
        &api,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        Value::Null,
    );
    let (code, _) = err(&api, "GET", WIDGETS, Value::Null);
    assert_eq!(code, 404);
    with_widgets(&api);
    let list = ok(&api, "GET", WIDGETS, Value::Null);
    assert_eq!(
        list["items"],
        json!([]),
        "objects did not outlive their definition"
    );
}

#[test]
fn bad_definitions_change_nothing_and_namespaces_take_custom_objects_along() {
    let api = with_ns("d");
    let mut bad = crate::crd::tests::widget_definition();
    bad["spec"]["versions"][1]["storage"] = json!(true);
    let (code, msg) = err(
        &api,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        bad,
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("exactly one version marked as storage"),
        "{msg}"
    );
    assert!(api.catalog().custom().is_empty());

    with_widgets(&api);
    ok(
        &api,
        "POST",
        WIDGETS,
        json!({"metadata": {"name": "a"}, "spec": {"size": 1}}),
    );
    ok(&api, "DELETE", "/api/v1/namespaces/d", Value::Null);
    ok(
        &api,
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "d"}}),
    );
    let list = ok(&api, "GET", WIDGETS, Value::Null);
    assert_eq!(list["items"], json!([]));
}

#[test]
fn service_account_tokens_authenticate_until_their_objects_go() {
    use crate::auth::TokenAuthenticator;
    use crate::serviceaccount::TokenSigner;
    use std::time::SystemTime;

    let signer = TokenSigner::from_pem(&crate::serviceaccount::tests::key_pem()).unwrap();
    let api = with_ns("p").with_token_signer(signer);
    let authn = TokenAuthenticator::new(api.store.clone(), api.token_signer());
    let token_uri = "/api/v1/namespaces/p/serviceaccounts/bot/token";
    let request = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let (code, _) = err(&api, "POST", token_uri, request(json!({})));
    assert_eq!(code, 404, "no such service account");
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/p/serviceaccounts",
        json!({"metadata": {"name": "bot"}}),
    );

    let answer = ok(&api, "POST", token_uri, request(json!({})));
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    assert_eq!(
        answer["spec"]["audiences"],
        json!([crate::serviceaccount::ISSUER])
    );
    assert!(answer["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let token = answer["status"]["token"].as_str().unwrap().to_owned();
    let user = authn.authenticate(&token, SystemTime::now()).unwrap();
    assert_eq!(user.name, "system:serviceaccount:p:bot");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:p",
            "system:authenticated"
        ]
    );

    // A token for another audience is not one for this API.
    let vault = ok(
        &api,
        "POST",
        token_uri,
        request(json!({"audiences": ["vault"]})),
    );
    assert!(authn
        .authenticate(
            vault["status"]["token"].as_str().unwrap(),
            SystemTime::now()
        )
        .is_err());
    let (code, msg) = err(
        &api,
        "POST",
        token_uri,
        request(json!({"expirationSeconds": 60})),
    );
    assert_eq!(code, 422);
    assert!(msg.contains("less than 10 minutes"), "{msg}");

    // Bound to a pod: refused for a missing pod or a stale uid; dies with the pod.
    let bound = |uid: &str| {
        request(
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid}}),
        )
    };
    let (code, _) = err(&api, "POST", token_uri, bound(""));
    assert_eq!(code, 404);
    pod(&api, "p", json!({}), true);
    let (code, msg) = err(&api, "POST", token_uri, bound("stale"));
    assert_eq!(code, 409, "{msg}");
    let pod_token = ok(&api, "POST", token_uri, bound(""))["status"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    authn.authenticate(&pod_token, SystemTime::now()).unwrap();
    ok(&api, "DELETE", "/api/v1/namespaces/p/pods/p", Value::Null);
    let e = authn
        .authenticate(&pod_token, SystemTime::now())
        .unwrap_err();
    assert!(e.to_string().contains("pods \"p\""), "{e}");

    // Deleting the service account revokes its tokens, and a re-created one (new uid) does
    // not bring them back.
    ok(
        &api,
        "DELETE",
        "/api/v1/namespaces/p/serviceaccounts/bot",
        Value::Null,
    );
    assert!(authn.authenticate(&token, SystemTime::now()).is_err());
    ok(
        &api,
        "POST",
        "/api/v1/namespaces/p/serviceaccounts",
        json!({"metadata": {"name": "bot"}}),
    );
    assert!(authn.authenticate(&token, SystemTime::now()).is_err());

    // A server without a key issues none and accepts none.
    let keyless = with_ns("p");
    ok(
        &keyless,
        "POST",
        "/api/v1/namespaces/p/serviceaccounts",
        json!({"metadata": {"name": "bot"}}),
    );
    let (code, _) = err(&keyless, "POST", token_uri, request(json!({})));
    assert_eq!(code, 503);
    assert!(TokenAuthenticator::new(keyless.store.clone(), None)
        .authenticate(&token, SystemTime::now())
        .is_err());
}

#[test]
fn lists_honour_resource_version_and_match() {
    let api = with_ns("d");
    let uri = "/api/v1/namespaces/d/configmaps";
    let first = ok(
        &api,
        "POST",
        uri,
        json!({"metadata": {"name": "a"}, "data": {"v": "1"}}),
    );
    let r1 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &api,
        "PATCH",
        &format!("{uri}/a"),
        json!({"data": {"v": "2"}}),
    );
    let value = |list: &Value| list["items"][0]["data"]["v"].clone();

    let exact = ok(
        &api,
        "GET",
        &format!("{uri}?resourceVersion={r1}&resourceVersionMatch=Exact"),
        Value::Null,
    );
    assert_eq!(value(&exact), "1", "the list as it was at {r1}");
    assert_eq!(exact["metadata"]["resourceVersion"], r1);
    for query in [
        format!("resourceVersion={r1}&resourceVersionMatch=NotOlderThan"),
        format!("resourceVersion={r1}"),
        "resourceVersion=0".to_owned(),
    ] {
        let list = ok(&api, "GET", &format!("{uri}?{query}"), Value::Null);
        assert_eq!(value(&list), "2", "{query}: not older than {r1} is now");
    }

    let (code, msg) = err(
        &api,
        "GET",
        &format!("{uri}?resourceVersion=999999"),
        Value::Null,
    );
    assert_eq!(code, 504, "{msg}");
    assert!(
        msg.starts_with("Too large resource version: 999999"),
        "{msg}"
    );
    for (query, want) in [
        (
            "resourceVersionMatch=Exact",
            "unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersion=1&resourceVersionMatch=Newest",
            "expected Exact or NotOlderThan",
        ),
    ] {
        let (code, msg) = err(&api, "GET", &format!("{uri}?{query}"), Value::Null);
        assert_eq!(code, 400, "{query}");
        assert!(msg.contains(want), "{query}: {msg}");
    }
    ok(&api, "POST", uri, json!({"metadata": {"name": "b"}}));
    let page = ok(&api, "GET", &format!("{uri}?limit=1"), Value::Null);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let (code, msg) = err(
        &api,
        "GET",
        &format!("{uri}?limit=1&continue={token}&resourceVersion={r1}"),
        Value::Null,
    );
    assert_eq!(code, 400, "{msg}");

    let now = api.store.current_revision().unwrap();
    api.store.compact(now).unwrap();
    let (code, _) = err(
        &api,
        "GET",
        &format!("{uri}?resourceVersion={r1}&resourceVersionMatch=Exact"),
        Value::Null,
    );
    assert_eq!(code, 410, "compacted away");
}

#[test]
fn a_namespace_goes_when_its_contents_finalizers_are_done() {
    let api = with_ns("t");
    let cms = "/api/v1/namespaces/t/configmaps";
    ok(&api, "POST", cms, json!({"metadata": {"name": "plain"}}));
    ok(
        &api,
        "POST",
        cms,
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    );
    let ns = ok(&api, "DELETE", "/api/v1/namespaces/t", Value::Null);
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    let left = ok(&api, "GET", cms, Value::Null);
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["held"], "plain objects go at once, held ones stay");
    assert!(left["items"][0]["metadata"]["deletionTimestamp"].is_string());
    let (code, msg) = err(&api, "POST", cms, json!({"metadata": {"name": "new"}}));
    assert_eq!(code, 403);
    assert!(msg.contains("because it is being terminated"), "{msg}");
    // Deleting it again changes nothing while the finalizer holds.
    ok(&api, "DELETE", "/api/v1/namespaces/t", Value::Null);
    ok(&api, "GET", "/api/v1/namespaces/t", Value::Null);

    // The last finalizer removed: the object goes, and with it the namespace.
    ok(
        &api,
        "PATCH",
        &format!("{cms}/held"),
        json!({"metadata": {"finalizers": null}}),
    );
    let (code, _) = err(&api, "GET", "/api/v1/namespaces/t", Value::Null);
    assert_eq!(code, 404);

    // A namespace with a finalizer of its own waits for it too, contents gone or not.
    ok(
        &api,
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "own", "finalizers": ["example.com/ns"]}}),
    );
    ok(&api, "DELETE", "/api/v1/namespaces/own", Value::Null);
    ok(&api, "GET", "/api/v1/namespaces/own", Value::Null);
    ok(
        &api,
        "PATCH",
        "/api/v1/namespaces/own",
        json!({"metadata": {"finalizers": null}}),
    );
    let (code, _) = err(&api, "GET", "/api/v1/namespaces/own", Value::Null);
    assert_eq!(code, 404);
}

fn apply_as(api: &Api, manager: &str, force: bool, body: Value) -> Result<Reply, ApiError> {
    let uri = format!(
        "/apis/apps/v1/namespaces/d/deployments/web?fieldManager={manager}{}",
        if force { "&force=true" } else { "" }
    );
    call(api, "PATCH", &uri, "application/apply-patch+yaml", body)
}

fn web(replicas: i64, image: &str, extra_label: Option<&str>) -> Value {
    let mut labels = json!({"app": "web"});
    if let Some(l) = extra_label {
        labels[l] = json!("yes");
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() {
    let api = with_ns("d");
    // Creates, recording the manager's fields.
    let created = apply_as(&api, "alice", false, web(2, "web:1", Some("team"))).unwrap();
    assert_eq!(created.code, 201);
    let mf = &created.body["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "alice");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsV1"]["f:spec"]["f:replicas"], json!({}));

    // The same intent again changes nothing.
    let again = apply_as(&api, "alice", false, web(2, "web:1", Some("team"))).unwrap();
    assert_eq!(again.code, 200);

    // Bob applying another replica count conflicts with alice, naming the field.
    let e = apply_as(&api, "bob", false, web(5, "web:1", None)).unwrap_err();
    assert_eq!(e.code_reason().0, 409);
    let msg = e.to_string();
    assert!(
        msg.contains("Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"),
        "{msg}"
    );
    // Agreeing values are no conflict: bob now co-owns them.
    apply_as(&api, "bob", false, web(2, "web:1", None)).unwrap();
    // Forced, bob takes the field over.
    let forced = apply_as(&api, "bob", true, web(5, "web:1", None))
        .unwrap()
        .body;
    assert_eq!(forced["spec"]["replicas"], 5);
    let alice = forced["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "alice")
        .unwrap();
    assert!(
        alice["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{alice}"
    );

    // Alice drops her label from her intent (agreeing with bob on the replicas): the label
    // is removed, the replicas stay.
    let after = apply_as(&api, "alice", false, web(5, "web:1", None))
        .unwrap()
        .body;
    assert!(after["metadata"]["labels"].get("team").is_none(), "{after}");
    assert_eq!(after["spec"]["replicas"], 5);
    // Both stop naming the replicas: nobody owns them, so they go (and default again).
    for who in ["alice", "bob"] {
        let mut intent = web(5, "web:1", None);
        intent["spec"].as_object_mut().unwrap().remove("replicas");
        apply_as(&api, who, false, intent).unwrap();
    }
    let bare = ok(
        &api,
        "GET",
        "/apis/apps/v1/namespaces/d/deployments/web",
        Value::Null,
    );
    assert_ne!(bare["spec"]["replicas"], 5, "{bare}");

    // A keyed list merges by key: a second container from another manager stays.
    let mut side = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:1"}]}}}});
    apply_as(&api, "carol", false, side.clone()).unwrap();
    let both = ok(
        &api,
        "GET",
        "/apis/apps/v1/namespaces/d/deployments/web",
        Value::Null,
    );
    let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "side"]);
    // Carol withdraws her container: only it goes.
    side["spec"]["template"]["spec"]["containers"] = json!([]);
    apply_as(&api, "carol", false, side).unwrap();
    let one = ok(
        &api,
        "GET",
        "/apis/apps/v1/namespaces/d/deployments/web",
        Value::Null,
    );
    assert_eq!(
        one["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Bad requests.
    let uri = "/apis/apps/v1/namespaces/d/deployments/web";
    let e = call(
        &api,
        "PATCH",
        uri,
        "application/apply-patch+yaml",
        web(1, "x", None),
    )
    .unwrap_err();
    assert!(e.to_string().contains("fieldManager is required"), "{e}");
    let mut wrong = web(1, "x", None);
    wrong["kind"] = json!("StatefulSet");
    let e = apply_as(&api, "alice", false, wrong).unwrap_err();
    assert_eq!(e.code_reason().0, 400);
}

#[test]
fn services_get_cluster_ips_and_node_ports() {
    let api = with_ns("d");
    crate::bootstrap::ensure_system_namespaces(&api).unwrap();
    let uri = "/api/v1/namespaces/d/services";
    let svc = |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec});
    let ports = json!([{"port": 80}]);
    let a = ok(&api, "POST", uri, svc("a", json!({"ports": ports})));
    let ip: std::net::Ipv4Addr = a["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..2], [10, 43]);
    assert_ne!(ip, super::services::KUBERNETES_IP);
    assert_eq!(a["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(a["spec"]["type"], "ClusterIP");
    assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");

    let np = ok(
        &api,
        "POST",
        uri,
        svc(
            "np",
            json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}),
        ),
    );
    let port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port));
    assert_eq!(np["spec"]["ports"][1]["nodePort"], 30443);
    let headless = ok(
        &api,
        "POST",
        uri,
        svc("h", json!({"clusterIP": "None", "ports": ports})),
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let ext = ok(
        &api,
        "POST",
        uri,
        svc(
            "x",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
    );
    assert!(ext["spec"].get("clusterIP").is_none());

    for (name, spec, want) in [
        (
            "dup",
            json!({"clusterIP": ip.to_string(), "ports": ports}),
            "already allocated",
        ),
        (
            "far",
            json!({"clusterIP": "192.168.1.1", "ports": ports}),
            "not in the valid range",
        ),
        (
            "bad",
            json!({"clusterIP": "ten", "ports": ports}),
            "must be a valid IP",
        ),
        (
            "dupport",
            json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": 30443}]}),
            "already allocated",
        ),
        (
            "lowport",
            json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": 80}]}),
            "30000-32767",
        ),
    ] {
        let (code, msg) = err(&api, "POST", uri, svc(name, spec));
        assert_eq!(code, 422, "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }

    // Updates keep what they leave out, and may not change the address.
    let mut update = a.clone();
    update["spec"].as_object_mut().unwrap().remove("clusterIP");
    update["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let kept = ok(&api, "PUT", &format!("{uri}/a"), update);
    assert_eq!(kept["spec"]["clusterIP"], a["spec"]["clusterIP"]);
    let mut moved = kept.clone();
    moved["spec"]["clusterIP"] = json!("10.43.9.9");
    let (code, msg) = err(&api, "PUT", &format!("{uri}/a"), moved);
    assert_eq!(code, 422);
    assert!(msg.contains("field is immutable"), "{msg}");

    // The kubernetes Service takes the reserved first address, once.
    assert!(crate::bootstrap::ensure_kubernetes_service(&api, 6443).unwrap());
    assert!(!crate::bootstrap::ensure_kubernetes_service(&api, 6443).unwrap());
    let k = ok(
        &api,
        "GET",
        "/api/v1/namespaces/default/services/kubernetes",
        Value::Null,
    );
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(k["spec"]["ports"][0]["targetPort"], 6443);
}
