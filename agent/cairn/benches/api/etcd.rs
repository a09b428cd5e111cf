//! The same write and watch workload against a real etcd (Debian's etcd-server, installed by
//! `make deps`) through its JSON gateway, for the ratio the API table prints. Creates are
//! transactions that put a key only if it does not exist, as kube-apiserver writes them;
//! values are the JSON a ConfigMap is stored as. etcd runs with its defaults (it syncs
//! every commit to disk, like Cairn's datastore).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{percentile, CONCURRENT_CLIENTS, CONCURRENT_CREATES, SINGLE_CREATES};
use super::{WATCHED_CREATES, WATCHERS};

/// What the etcd run measured.
pub struct Figures {
    pub creates_1: f64,
    pub creates_16: f64,
    pub watch_p50: Duration,
    pub watch_p99: Duration,
}

struct Etcd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn start() -> Result<Etcd, String> {
    let dir = std::env::temp_dir().join(format!("cairn-bench-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, peer) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--name", "bench", "--log-level", "error"])
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("etcd: {e} (make deps installs etcd-server)"))?;
    Ok(Etcd { child, dir, port })
}

async fn connect(port: u16) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn post(send: &mut SendRequest<Full<Bytes>>, path: &str, body: &Value) -> Value {
    let req = Request::post(format!("http://127.0.0.1{path}"))
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// A put-if-absent of `key`, as kube-apiserver creates objects.
async fn create(send: &mut SendRequest<Full<Bytes>>, key: &str) {
    let value = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": key, "labels": {"bench": "api"}},
        "data": {"payload": "x".repeat(64)},
    })
    .to_string();
    let txn = json!({
        "compare": [{"key": b64(key), "target": "CREATE", "create_revision": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(&value)}}],
    });
    let answer = post(send, "/v3/kv/txn", &txn).await;
    assert_eq!(answer["succeeded"], true, "etcd txn: {answer}");
}

pub async fn measure() -> Result<Figures, String> {
    let etcd = start()?;
    let port = etcd.port;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let mut probe = connect(port).await;
            if post(&mut probe, "/v3/kv/range", &json!({"key": b64("probe")})).await["header"]
                .is_object()
            {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err("etcd did not start within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut one = connect(port).await;
    let start = Instant::now();
    for i in 0..SINGLE_CREATES {
        create(&mut one, &format!("/registry/configmaps/bench/single-{i}")).await;
    }
    let creates_1 = SINGLE_CREATES as f64 / start.elapsed().as_secs_f64();

    let mut clients = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        clients.push(connect(port).await);
    }
    let per = CONCURRENT_CREATES / CONCURRENT_CLIENTS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut send) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                create(
                    &mut send,
                    &format!("/registry/configmaps/bench/multi-{c}-{i}"),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let creates_16 = CONCURRENT_CREATES as f64 / start.elapsed().as_secs_f64();

    // Watchers: one HTTP/1.1 connection each (the gateway streams one watch per request).
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let prefix = "/registry/configmaps/watched/";
    for _ in 0..WATCHERS {
        let mut send = connect(port).await;
        let tx = seen_tx.clone();
        let watch = json!({"create_request": {"key": b64(prefix), "range_end": b64("/registry/configmaps/watched0")}});
        tokio::spawn(async move {
            let req = Request::post("http://127.0.0.1/v3/watch")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::from(watch.to_string())))
                .unwrap();
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                // The gateway writes one JSON object per message, each followed by a newline.
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    for event in message["result"]["events"].as_array().into_iter().flatten() {
                        let key = event["kv"]["key"].as_str().unwrap_or_default();
                        let key = base64::engine::general_purpose::STANDARD
                            .decode(key)
                            .unwrap_or_default();
                        let _ =
                            tx.send((String::from_utf8_lossy(&key).into_owned(), Instant::now()));
                    }
                }
            }
        });
    }
    drop(seen_tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(WATCHERS * WATCHED_CREATES);
    for i in 0..WATCHED_CREATES {
        let key = format!("{prefix}w-{i}");
        sent.insert(key.clone(), Instant::now());
        create(&mut one, &key).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Ok((key, at)) = seen_rx.try_recv() {
            latencies.push(at - sent[&key]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() < WATCHERS * WATCHED_CREATES && Instant::now() < deadline {
        if let Ok(Some((key, at))) =
            tokio::time::timeout(Duration::from_secs(1), seen_rx.recv()).await
        {
            latencies.push(at - sent[&key]);
        }
    }
    if latencies.len() < WATCHERS * WATCHED_CREATES {
        return Err(format!(
            "etcd watch: {} of {} deliveries",
            latencies.len(),
            WATCHERS * WATCHED_CREATES
        ));
    }
    latencies.sort();
    drop(etcd);
    Ok(Figures {
        creates_1,
        creates_16,
        watch_p50: percentile(&latencies, 0.5),
        watch_p99: percentile(&latencies, 0.99),
    })
}
