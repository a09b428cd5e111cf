//! The HTTP layer as a client sees it: [`Server::respond`] on requests built in memory, with a
//! `MemoryStore` behind it.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::MemoryStore;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::*;

/// A server over an empty store with the namespace `default`.
async fn server() -> Server {
    let server = Server::new(Api::new(Arc::new(MemoryStore::new())));
    let ns = json!({"metadata": {"name": "default"}});
    let (code, body) = call(&server, "POST", "/api/v1/namespaces", ns).await;
    assert_eq!(code, 201, "{body}");
    server
}

/// A client with a certificate of `system:masters`.
fn admin() -> Peer {
    Peer {
        addr: "127.0.0.1:50000".parse().unwrap(),
        cert_user: Some(User {
            name: "admin".into(),
            groups: vec![crate::authz::MASTERS.into()],
        }),
    }
}

async fn send(
    server: &Server,
    method: &str,
    uri: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ApiBody> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .unwrap();
    server.respond(req, &admin()).await
}

/// A whole answer: its code and JSON body.
async fn call(server: &Server, method: &str, uri: &str, body: Value) -> (u16, Value) {
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        JSON
    };
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    read(send(server, method, uri, content_type, bytes).await).await
}

async fn read(resp: Response<ApiBody>) -> (u16, Value) {
    let code = resp.status().as_u16();
    assert_eq!(resp.headers()[CONTENT_TYPE], JSON);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap())
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The events of a watch response, one JSON line each.
struct Events {
    body: ApiBody,
    buf: Vec<u8>,
}

impl Events {
    fn of(resp: Response<ApiBody>) -> Events {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], JSON);
        Events {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event (`None`: the stream ended), or `Err` when none came `within`.
    async fn within(&mut self, within: Duration) -> Result<Option<Value>, ()> {
        let next = async {
            loop {
                if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    return Some(serde_json::from_slice(&line).unwrap());
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(never)) => match never {},
                    None => return None,
                }
            }
        };
        tokio::time::timeout(within, next).await.map_err(|_| ())
    }

    /// The next event, which must come within a few seconds.
    async fn next(&mut self) -> Value {
        self.within(Duration::from_secs(5))
            .await
            .expect("no event within 5 s")
            .expect("the watch ended")
    }
}

/// Bodies over [`crate::handlers::MAX_BODY`] are cut off while they are read: 413 with
/// Kubernetes' `RequestEntityTooLarge` Status for creates, updates and patches alike, and the
/// server answers the next request as usual.
#[tokio::test]
async fn oversized_bodies_get_a_413_status_and_the_server_goes_on() {
    let server = server().await;
    let uri = "/api/v1/namespaces/default/configmaps";
    let (code, cm) = call(&server, "POST", uri, json!({"metadata": {"name": "a"}})).await;
    assert_eq!(code, 201, "{cm}");
    // `size` bytes of JSON that would otherwise be accepted.
    let sized = |name: &str, size: usize| {
        let head = format!(r#"{{"metadata":{{"name":"{name}"}},"data":{{"k":""#);
        let tail = r#""}}"#;
        let pad = "x".repeat(size - head.len() - tail.len());
        format!("{head}{pad}{tail}").into_bytes()
    };
    let big = |name: &str| sized(name, crate::handlers::MAX_BODY + 1);
    for (method, uri, content_type) in [
        ("POST", uri.to_owned(), JSON),
        ("PUT", format!("{uri}/a"), JSON),
        ("PATCH", format!("{uri}/a"), "application/merge-patch+json"),
        (
            "PATCH",
            format!("{uri}/a?fieldManager=me"),
            "application/apply-patch+yaml",
        ),
    ] {
        let name = if method == "POST" { "big" } else { "a" };
        let resp = send(&server, method, &uri, content_type, big(name)).await;
        let (code, status) = read(resp).await;
        assert_eq!(code, 413, "{method} {content_type}: {status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 413);
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("limit of 3145728 bytes"), "{message}");
    }
    let (code, _) = call(&server, "GET", &format!("{uri}/big"), Value::Null).await;
    assert_eq!(code, 404);
    let (code, got) = call(&server, "GET", &format!("{uri}/a"), Value::Null).await;
    assert_eq!((code, &got), (200, &cm));
    let (code, patched) = call(
        &server,
        "PATCH",
        &format!("{uri}/a"),
        json!({"data": {"k": "v"}}),
    )
    .await;
    assert_eq!((code, &patched["data"]["k"]), (200, &json!("v")));
    // A body of exactly the limit is read (and then judged on what it holds).
    let exact = sized("b", crate::handlers::MAX_BODY);
    let (code, status) = read(send(&server, "POST", uri, JSON, exact).await).await;
    assert_ne!(code, 413, "{status}");
}

/// A watch from a resourceVersion that was compacted away starts (200) and then says so with
/// one `ERROR` event holding a 410 `Expired` Status, as kube-apiserver does; clients list
/// again. A watch from the compaction point itself still follows.
#[tokio::test]
async fn a_watch_from_a_compacted_revision_gets_an_expired_error_event() {
    let server = server().await;
    let uri = "/api/v1/namespaces/default/configmaps";
    let (_, first) = call(&server, "POST", uri, json!({"metadata": {"name": "a"}})).await;
    for v in ["1", "2"] {
        let patch = json!({"data": {"v": v}});
        let (code, _) = call(&server, "PATCH", &format!("{uri}/a"), patch).await;
        assert_eq!(code, 200);
    }
    let store = &server.api.store;
    let now = store.current_revision().unwrap();
    store.compact(now).unwrap();

    let old = rv(&first);
    let resp = send(
        &server,
        "GET",
        &format!("{uri}?watch=true&resourceVersion={old}"),
        JSON,
        Bytes::new(),
    )
    .await;
    let mut events = Events::of(resp);
    let event = events.next().await;
    assert_eq!(event["type"], "ERROR", "{event}");
    let status = &event["object"];
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    let message = status["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "too old resource version: {old} ({now}); list again and watch from the list's \
             resourceVersion"
        )
    );
    assert_eq!(
        events.within(Duration::from_secs(5)).await,
        Ok(None),
        "the watch ends after its error"
    );

    let resp = send(
        &server,
        "GET",
        &format!("{uri}?watch=true&resourceVersion={now}"),
        JSON,
        Bytes::new(),
    )
    .await;
    let mut events = Events::of(resp);
    let (code, _) = call(&server, "POST", uri, json!({"metadata": {"name": "b"}})).await;
    assert_eq!(code, 201);
    let event = events.next().await;
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "b");
}

/// With `allowWatchBookmarks=true` a quiet watch gets a `BOOKMARK` every interval, carrying the
/// resourceVersion it has reached; without it, none. `sendInitialEvents=true` ends the
/// current objects with a bookmark annotated `k8s.io/initial-events-end`.
#[tokio::test]
async fn bookmarks_carry_the_resource_version_reached() {
    let mut server = server().await;
    let interval = Duration::from_millis(200);
    server.watch.bookmark_interval = interval;
    let uri = "/api/v1/namespaces/default/configmaps";
    let (_, a) = call(&server, "POST", uri, json!({"metadata": {"name": "a"}})).await;
    let watch = |query: &str| {
        let uri = format!("{uri}?watch=true&{query}");
        let server = &server;
        async move { Events::of(send(server, "GET", &uri, JSON, Bytes::new()).await) }
    };

    let started = std::time::Instant::now();
    let mut bookmarked = watch(&format!(
        "allowWatchBookmarks=true&resourceVersion={}",
        rv(&a)
    ))
    .await;
    let mut plain = watch(&format!("resourceVersion={}", rv(&a))).await;
    let event = bookmarked.next().await;
    assert!(started.elapsed() >= interval, "{:?}", started.elapsed());
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    assert_eq!(
        event["object"],
        json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv(&a)}})
    );
    let (code, b) = call(&server, "POST", uri, json!({"metadata": {"name": "b"}})).await;
    assert_eq!(code, 201);
    // (More bookmarks of the same revision may come first on a slow machine.)
    let mut event = bookmarked.next().await;
    while event["type"] == "BOOKMARK" && event["object"]["metadata"]["resourceVersion"] == rv(&a) {
        event = bookmarked.next().await;
    }
    assert_eq!(
        (&event["type"], &event["object"]["metadata"]["name"]),
        (&json!("ADDED"), &json!("b"))
    );
    let event = bookmarked.next().await;
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], rv(&b));

    // Without bookmarks allowed: the change, then nothing.
    let event = plain.next().await;
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(
        plain.within(interval * 3).await,
        Err(()),
        "a bookmark came unasked"
    );

    let mut streaming =
        watch("sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
            .await;
    for name in ["a", "b"] {
        let event = streaming.next().await;
        assert_eq!(event["type"], "ADDED", "{event}");
        assert_eq!(event["object"]["metadata"]["name"], name);
    }
    let event = streaming.next().await;
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    let meta = &event["object"]["metadata"];
    assert_eq!(meta["resourceVersion"], rv(&b));
    assert_eq!(
        meta["annotations"],
        json!({"k8s.io/initial-events-end": "true"})
    );
    let event = streaming.next().await;
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], rv(&b));
    assert!(
        event["object"]["metadata"].get("annotations").is_none(),
        "{event}"
    );
}
