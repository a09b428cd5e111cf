//! `cargo bench -p cairn --bench api` (part of `make bench`): the API server under load, on
//! this machine, over real TLS into its SQLite datastore on disk.
//!
//! Starts the release `cairn server` (its node registration on, as on a device) in a
//! temporary data dir and drives it with HTTP/2 clients that keep their connections, as
//! client-go does. Prints one table: creates per second with 1 and with 16 concurrent
//! clients (ConfigMaps of ~100 bytes; 10,000 in all), watch delivery latency p50/p99 with 100
//! watchers (200 creates 5 ms apart, each seen by every watcher: 20,000 deliveries, timed
//! from the moment the create is sent), list latency at
//! 10,000 objects (whole, and the first page of 500), the server's RSS idle and at 10,000
//! objects, and bytes written to disk per minute when idle (from `/proc/PID/io`, over
//! `IDLE_SECONDS`). Targets from the brief: ≥ 1,000 creates/s with 16 clients, watch p99
//! ≤ 50 ms, idle RSS ≤ 48 MiB, idle writes ≤ 4 KiB/s. Then the same creates and watches
//! against a real etcd (`api/etcd.rs`) and the ratios.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::sync::mpsc;

#[path = "api/etcd.rs"]
mod etcd;

pub(crate) const SINGLE_CREATES: usize = 2_000;
pub(crate) const CONCURRENT_CLIENTS: usize = 16;
pub(crate) const CONCURRENT_CREATES: usize = 8_000;
pub(crate) const WATCHERS: usize = 100;
pub(crate) const WATCHED_CREATES: usize = 200;
const IDLE_SECONDS: u64 = 60;

struct ServerProcess {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn start_server() -> ServerProcess {
    let data = std::env::temp_dir().join(format!("cairn-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node.yaml"), "hostname: bench-node\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "server",
            "--https-listen-port",
            "0",
            "--bind-address",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--node-config")
        .arg(data.join("node.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn server");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("cairn: listening on https://127.0.0.1:") {
                let _ = tx.send(port.parse::<u16>().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("cairn server did not start");
    ServerProcess { child, port, data }
}

/// `VmRSS` of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `write_bytes` of `/proc/PID/io`: what reached the block layer.
fn written_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One HTTP/2 connection with the admin certificate.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Full<Bytes>>,
}

fn tls_config(tls_dir: &Path) -> Arc<rustls::ClientConfig> {
    let read = |name: &str| std::fs::read(tls_dir.join(name)).unwrap();
    let ca = String::from_utf8(read("ca.crt")).unwrap();
    let roots = cairn::pki::roots(&ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(cairn::pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(&read("admin.crt")).unwrap()],
            PrivateKeyDer::from_pem_slice(&read("admin.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn connect(port: u16, tls: Arc<rustls::ClientConfig>) -> Conn {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    Conn { send }
}

impl Conn {
    async fn call(&mut self, method: Method, path: &str, body: Option<&Value>) -> (u16, Bytes) {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn create(&mut self, ns: &str, name: &str) {
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"bench": "api"}},
            "data": {"payload": "x".repeat(64)},
        });
        let (code, bytes) = self
            .call(
                Method::POST,
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(&body),
            )
            .await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&bytes));
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let server = start_server();
    let pid = server.child.id();
    let tls = tls_config(&server.data.join("server/tls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let (mut creates_1, mut creates_16, mut watch_p99) = (0.0, 0.0, Duration::ZERO);
    let mut etcd_failed = None;
    rt.block_on(async {
        let port = server.port;
        let mut admin = connect(port, tls.clone()).await;
        // Let start-up settle (node registration, first lease), then measure idle.
        tokio::time::sleep(Duration::from_secs(5)).await;
        rows.push((
            "server RSS idle".into(),
            format!("{} MiB", rss_kib(pid) / 1024),
            "≤ 48 MiB".into(),
        ));
        let before = written_bytes(pid);
        let idle_start = Instant::now();
        tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
        let idle_rate = (written_bytes(pid) - before) as f64 / idle_start.elapsed().as_secs_f64();
        rows.push((
            format!("disk writes idle, per minute ({IDLE_SECONDS} s)"),
            format!(
                "{:.1} KiB ({:.0} B/s)",
                idle_rate * 60.0 / 1024.0,
                idle_rate
            ),
            "≤ 4 KiB/s".into(),
        ));
        for ns in ["bench", "watched"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            admin
                .call(Method::POST, "/api/v1/namespaces", Some(&body))
                .await;
        }

        // Creates, one client.
        let start = Instant::now();
        for i in 0..SINGLE_CREATES {
            admin.create("bench", &format!("single-{i}")).await;
        }
        let rate = SINGLE_CREATES as f64 / start.elapsed().as_secs_f64();
        creates_1 = rate;
        rows.push((
            "creates/s, 1 client".into(),
            format!("{rate:.0}"),
            String::new(),
        ));

        // Creates, 16 clients on their own connections.
        let mut conns = Vec::new();
        for _ in 0..CONCURRENT_CLIENTS {
            conns.push(connect(port, tls.clone()).await);
        }
        let start = Instant::now();
        let per = CONCURRENT_CREATES / CONCURRENT_CLIENTS;
        let mut tasks = Vec::new();
        for (c, mut conn) in conns.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    conn.create("bench", &format!("multi-{c}-{i}")).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rate = CONCURRENT_CREATES as f64 / start.elapsed().as_secs_f64();
        creates_16 = rate;
        rows.push((
            format!("creates/s, {CONCURRENT_CLIENTS} clients"),
            format!("{rate:.0}"),
            "≥ 1,000".into(),
        ));

        // Lists at 10,000 objects.
        let total = SINGLE_CREATES + CONCURRENT_CREATES;
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let (code, bytes) = admin
                .call(Method::GET, "/api/v1/namespaces/bench/configmaps", None)
                .await;
            times.push(start.elapsed());
            assert_eq!(code, 200);
            let list: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(list["items"].as_array().unwrap().len(), total);
        }
        times.sort();
        rows.push((
            format!("list {total} objects (median of 5)"),
            format!("{} ms", ms(times[2])),
            String::new(),
        ));
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let (code, _) = admin
                .call(
                    Method::GET,
                    "/api/v1/namespaces/bench/configmaps?limit=500",
                    None,
                )
                .await;
            times.push(start.elapsed());
            assert_eq!(code, 200);
        }
        times.sort();
        rows.push((
            "list first 500 of them (median of 5)".into(),
            format!("{} ms", ms(times[2])),
            String::new(),
        ));
        rows.push((
            format!("server RSS at {total} objects"),
            format!("{} MiB", rss_kib(pid) / 1024),
            String::new(),
        ));

        // Watch latency: 100 watchers on 10 connections, 200 creates.
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Instant)>();
        let mut watch_conns = Vec::new();
        for _ in 0..10 {
            watch_conns.push(connect(port, tls.clone()).await);
        }
        let (code, bytes) = admin
            .call(Method::GET, "/api/v1/namespaces/watched/configmaps", None)
            .await;
        assert_eq!(code, 200);
        let rv = serde_json::from_slice::<Value>(&bytes).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        for w in 0..WATCHERS {
            let mut conn = watch_conns[w % watch_conns.len()].clone();
            let tx = seen_tx.clone();
            let path =
                format!("/api/v1/namespaces/watched/configmaps?watch=1&resourceVersion={rv}");
            tokio::spawn(async move {
                let req = Request::builder()
                    .uri(format!("https://localhost{path}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                conn.send.ready().await.unwrap();
                let resp = conn.send.send_request(req).await.unwrap();
                let mut body = resp.into_body();
                let mut buf = Vec::new();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    buf.extend_from_slice(data);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let event: Value = serde_json::from_slice(&line).unwrap();
                        if event["type"] == "ADDED" {
                            let name = event["object"]["metadata"]["name"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            let _ = tx.send((name, Instant::now()));
                        }
                    }
                }
            });
        }
        drop(seen_tx);
        // Let every watch reach the server before the first create.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::with_capacity(WATCHERS * WATCHED_CREATES);
        for i in 0..WATCHED_CREATES {
            let name = format!("w-{i}");
            sent.insert(name.clone(), Instant::now());
            admin.create("watched", &name).await;
            // Spread the creates out so the figure is delivery latency, not queueing.
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok((name, at)) = seen_rx.try_recv() {
                latencies.push(at - sent[&name]);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while latencies.len() < WATCHERS * WATCHED_CREATES && Instant::now() < deadline {
            if let Ok(Some((name, at))) =
                tokio::time::timeout(Duration::from_secs(1), seen_rx.recv()).await
            {
                latencies.push(at - sent[&name]);
            }
        }
        assert_eq!(
            latencies.len(),
            WATCHERS * WATCHED_CREATES,
            "deliveries missing"
        );
        latencies.sort();
        watch_p99 = percentile(&latencies, 0.99);
        rows.push((
            format!("watch delivery p50 / p99 ({WATCHERS} watchers)"),
            format!(
                "{} / {} ms",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99))
            ),
            "p99 ≤ 50 ms".into(),
        ));
    });
    drop(server);
    // The same writes and watches against etcd, for scale.
    match rt.block_on(etcd::measure()) {
        Ok(e) => {
            rows.push((
                "etcd creates/s, 1 client".into(),
                format!("{:.0}", e.creates_1),
                String::new(),
            ));
            rows.push((
                format!("etcd creates/s, {CONCURRENT_CLIENTS} clients"),
                format!("{:.0}", e.creates_16),
                String::new(),
            ));
            rows.push((
                format!("etcd watch delivery p50 / p99 ({WATCHERS} watchers)"),
                format!("{} / {} ms", ms(e.watch_p50), ms(e.watch_p99)),
                String::new(),
            ));
            rows.push((
                "cairn / etcd: creates 1, 16 clients; watch p99".into(),
                format!(
                    "{:.2}, {:.2}; {:.2}",
                    creates_1 / e.creates_1,
                    creates_16 / e.creates_16,
                    watch_p99.as_secs_f64() / e.watch_p99.as_secs_f64().max(1e-9)
                ),
                String::new(),
            ));
        }
        Err(e) => {
            rows.push((
                "etcd comparison".into(),
                "FAILED (below)".into(),
                String::new(),
            ));
            etcd_failed = Some(e);
        }
    }
    println!(
        "API server: release `cairn server` on 127.0.0.1, TLS, SQLite on disk, HTTP/2 clients"
    );
    println!("| {:<48} | {:>20} | {:>12} |", "measure", "value", "target");
    println!("|{:-<50}|{:-<22}|{:-<14}|", "", "", "");
    for (what, value, target) in rows {
        println!("| {what:<48} | {value:>20} | {target:>12} |");
    }
    if let Some(e) = etcd_failed {
        eprintln!("api bench: the etcd comparison failed: {e} (`make deps` installs etcd-server)");
        std::process::exit(1);
    }
}
