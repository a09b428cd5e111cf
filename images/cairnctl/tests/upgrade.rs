//! `cairnctl upgrade` against the real node endpoint (`cairn::update::service` in the real
//! API server over TLS), with files standing in for the node's partitions and a TCP proxy
//! that drops the connection in the middle of the upload. The same path runs on QEMU nodes
//! in `boot.rs`'s update test.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::update::fixture::{noise, Fixture};
use cairn::update::service::UpdateService;
use cairn_bundle::SigningKey;
use cairn_slots::{Slot, SlotState, Status};
use cairnctl::upgrade::{self, Options, Outcome, Source};

const SLOT: usize = 4 << 20;
const ROOTFS: usize = 3 << 20;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairnctl-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(tag: &str) -> Fixture {
    Fixture::new(temp_dir(tag), SLOT)
}

fn bundle(f: &Fixture, version: &str) -> (PathBuf, Vec<u8>) {
    let rootfs = noise(ROOTFS, 0x9e37_79b9_7f4a_7c15);
    (f.bundle(version, &rootfs, "console=ttyS0"), rootfs)
}

/// The API server with the update endpoint of `node`, on a loopback port.
struct NodeServer {
    port: u16,
    reboots: Arc<AtomicUsize>,
    /// A kubeconfig for the server's own port.
    kubeconfig: String,
    dir: PathBuf,
    api: cairn_apiserver::Api,
}

fn serve(f: &Fixture) -> NodeServer {
    let tls_dir = f.dir.join("tls");
    let names = cairn::pki::ServingNames::new(Some("edge-1"), []);
    let (certs, _) = cairn::pki::ensure(&tls_dir, &names, SystemTime::now()).unwrap();
    let tls = cairn::pki::tls::server_config(&certs).unwrap();
    let store = cairn_store::SqliteStore::open(f.dir.join("state.db"), Default::default()).unwrap();
    let api = cairn_apiserver::Api::new(Arc::new(store));
    let reboots = Arc::new(AtomicUsize::new(0));
    let counter = reboots.clone();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let admin = Some((
        certs.admin.cert.clone().into_bytes(),
        certs.admin.key.clone().into_bytes(),
    ));
    // As `cairn server` wires it: the node drains itself through its own API.
    let service = UpdateService::new(
        "edge-1",
        f.node.clone(),
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        Some(cairn::client::Client::new(&url, &certs.ca_cert, admin, None).unwrap()),
    );
    let mut server = cairn_apiserver::Server::new(api.clone());
    server.extension = Some(Arc::new(service));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            cairn_apiserver::serve(listener, tls, server, std::future::pending()).await;
        });
    });
    NodeServer {
        port,
        reboots,
        kubeconfig: cairn::kubeconfig::render(&format!("https://127.0.0.1:{port}"), &certs),
        dir: f.dir.clone(),
        api,
    }
}

/// Forwards connections to `to`, cutting the first one that carries more than `cut_after`
/// bytes towards the server.
fn flaky_proxy(to: u16, cut_after: u64) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let cut2 = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, to))) else {
                continue;
            };
            let cut = cut2.clone();
            let sent = Arc::new(AtomicU64::new(0));
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            let closer = (s_write.try_clone().unwrap(), c_read.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if total > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        // The network goes away in the middle of the upload.
                        let _ = closer.0.shutdown(std::net::Shutdown::Both);
                        let _ = closer.1.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, cut)
}

/// Slot b holds what it held `before` and the node did not reboot: a refusal wrote nothing.
fn assert_untouched(f: &Fixture, srv: &NodeServer, before: &[u8]) {
    assert_eq!(
        fs::read(&f.node.slot_b).unwrap(),
        before,
        "slot b untouched"
    );
    assert_eq!(srv.reboots.load(Ordering::SeqCst), 0, "no reboot");
}

/// A kubeconfig that reaches the server through `port` (itself or a proxy).
fn kubeconfig_for(srv: &NodeServer, port: u16) -> PathBuf {
    let text = srv.kubeconfig.replace(
        &format!("https://127.0.0.1:{}", srv.port),
        &format!("https://127.0.0.1:{port}"),
    );
    let p = srv.dir.join(format!("kubeconfig-{port}"));
    fs::write(&p, text).unwrap();
    p
}

/// A node with its API server, the system namespaces, an admin client, a 0.2.0 bundle, a
/// runtime for the client, and a publisher of the node's Node object.
struct Cluster {
    f: Fixture,
    srv: NodeServer,
    bundle: PathBuf,
    kubeconfig: PathBuf,
    client: cairn::client::Client,
    rt: tokio::runtime::Runtime,
    publisher: cairn::node_status::Publisher,
}

impl Cluster {
    fn new(tag: &str) -> Cluster {
        let f = fixture(tag);
        let (bundle, _) = bundle(&f, "0.2.0");
        let srv = serve(&f);
        let kubeconfig = kubeconfig_for(&srv, srv.port);
        cairn_apiserver::bootstrap::ensure_system_namespaces(&srv.api).unwrap();
        let client = cairn::client::Client::from_kubeconfig(&kubeconfig).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let publisher = Cluster::publisher(&f, &client);
        Cluster {
            f,
            srv,
            bundle,
            kubeconfig,
            client,
            rt,
            publisher,
        }
    }

    /// A publisher as `cairn server` starts one for this node.
    fn publisher(f: &Fixture, client: &cairn::client::Client) -> cairn::node_status::Publisher {
        let version = f.node.release().unwrap().version;
        let facts = cairn::node_status::Facts::gather(
            "edge-1",
            cairn_config::Role::Server,
            &version,
            Default::default(),
        );
        cairn::node_status::Publisher::new(client.clone(), facts, Some(f.node.clone()))
    }

    fn sync(&mut self) {
        self.rt.block_on(self.publisher.sync()).unwrap();
    }

    fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, cairn::client::ClientError> {
        self.rt
            .block_on(self.client.request(method, path, body.as_ref()))
    }

    fn get(&self, path: &str) -> serde_json::Value {
        self.call(hyper::Method::GET, path, None).unwrap()
    }

    fn upgrade(&self) -> Outcome {
        upgrade::run(&options(self.kubeconfig.clone(), &self.bundle)).unwrap()
    }
}

fn options(kubeconfig: PathBuf, bundle: &Path) -> Options {
    Options {
        kubeconfig,
        node: None,
        source: Source::File(bundle.to_path_buf()),
        allow_downgrade: false,
        no_wait: true,
        timeout: Duration::from_secs(30),
        upload_only: false,
    }
}

#[test]
fn upload_resumes_after_a_dropped_connection_and_installs_the_slot() {
    let f = fixture("upgrade");
    let (bundle, rootfs) = bundle(&f, "0.2.0");
    let srv = serve(&f);
    let (proxy, cut) = flaky_proxy(srv.port, (ROOTFS / 2) as u64);

    let outcome = upgrade::run(&options(kubeconfig_for(&srv, proxy), &bundle)).unwrap();
    assert_eq!(outcome, Outcome::Pending);
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy never dropped the connection"
    );
    // The node reboots just after its answer has gone out.
    for _ in 0..50 {
        if srv.reboots.load(Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        srv.reboots.load(Ordering::SeqCst),
        1,
        "one reboot into the trial"
    );

    let slot_b = fs::read(&f.node.slot_b).unwrap();
    assert_eq!(
        &slot_b[..ROOTFS],
        &rootfs[..],
        "slot b holds the new root filesystem"
    );
    let st = Status::read(&f.node.entries(), Slot::A).unwrap();
    assert!(matches!(st.other_state, SlotState::Trial(_)), "{st:?}");
    assert_eq!(st.other_version.as_deref(), Some("0.2.0"));
    let last = f.node.last().unwrap();
    assert_eq!(
        (last.result.as_str(), last.to_version.as_str()),
        ("pending", "0.2.0")
    );
    assert!(
        !f.node.incoming().join("bundle").exists(),
        "the staged bundle is removed once installed"
    );
    fs::remove_dir_all(&f.dir).unwrap();
}

#[test]
fn tampered_and_foreign_bundles_are_refused_before_the_slot_is_touched() {
    let f = fixture("upgrade-bad");
    let (good, _) = bundle(&f, "0.2.0");
    let srv = serve(&f);
    let kubeconfig = kubeconfig_for(&srv, srv.port);
    let before = fs::read(&f.node.slot_b).unwrap();

    // One flipped byte in the middle of the root filesystem payload.
    let mut bytes = fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let tampered = f.dir.join("tampered.cairnb");
    fs::write(&tampered, &bytes).unwrap();
    let err = upgrade::run(&options(kubeconfig.clone(), &tampered))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256") || err.contains("tampered"), "{err}");

    // Signed by a key the node does not trust.
    let stranger = SigningKey::generate().unwrap();
    let foreign = f.bundle_signed(&stranger, "0.3.0", b"rootfs", "console=ttyS0");
    let err = upgrade::run(&options(kubeconfig.clone(), &foreign))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signed by key"), "{err}");

    // Truncated: the upload is complete as far as its size goes, the bundle is not.
    let truncated = f.dir.join("truncated.cairnb");
    fs::write(&truncated, &fs::read(&good).unwrap()[..mid]).unwrap();
    let err = upgrade::run(&options(kubeconfig, &truncated))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") || err.contains("cut short"),
        "{err}"
    );

    assert_untouched(&f, &srv, &before);
    let st = Status::read(&f.node.entries(), Slot::A).unwrap();
    assert_eq!(st.other_state, SlotState::Empty);
    assert!(
        f.node.incoming().join("upload.json").metadata().is_err(),
        "refused bundles are not kept"
    );
    fs::remove_dir_all(&f.dir).unwrap();
}

/// The Node the server publishes follows the update: pending after the upload, then (as the
/// gate records a rollback at the next start) a False `OSUpdate` condition with the reason,
/// the annotations, and one Warning Event however often the publisher runs.
#[test]
fn node_object_shows_the_update_and_the_rollback() {
    let mut c = Cluster::new("upgrade-node");
    assert_eq!(c.upgrade(), Outcome::Pending);
    let version = c.f.node.release().unwrap().version;
    let update_condition = |node: &serde_json::Value| {
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "OSUpdate")
            .cloned()
            .unwrap()
    };

    c.sync();
    let node = c.get("/api/v1/nodes/edge-1");
    assert_eq!(
        node["status"]["nodeInfo"]["osImage"],
        format!("Cairn {version}")
    );
    assert_eq!(node["metadata"]["labels"]["update.cairn.dev/slot"], "a");
    assert_eq!(
        node["metadata"]["annotations"]["update.cairn.dev/other-slot"],
        "b: Cairn 0.2.0 (trial)"
    );
    let pending = update_condition(&node);
    assert_eq!(pending["status"], "Unknown");
    assert_eq!(pending["reason"], "UpdatePending");

    // What the health gate records when the node comes back on slot a.
    let reason = "not healthy within 300s: connection refused";
    c.f.node
        .amend_record(|r| {
            r.result = "rolled-back".into();
            r.reason = Some(reason.into());
        })
        .unwrap();
    for _ in 0..3 {
        c.sync();
    }
    let node = c.get("/api/v1/nodes/edge-1");
    let rolled = update_condition(&node);
    assert_eq!(rolled["status"], "False");
    assert_eq!(rolled["reason"], "UpdateRolledBack");
    assert!(
        rolled["message"].as_str().unwrap().ends_with(reason),
        "{rolled}"
    );
    assert!(
        node["metadata"]["annotations"]["update.cairn.dev/last-update"]
            .as_str()
            .unwrap()
            .starts_with("rolled-back")
    );
    let events =
        c.get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dedge-1");
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "UpdateRolledBack");
    assert!(events[0]["message"].as_str().unwrap().ends_with(reason));
    // A restarted publisher does not post it again.
    c.publisher = Cluster::publisher(&c.f, &c.client);
    c.sync();
    let events = c.get("/api/v1/namespaces/default/events");
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    fs::remove_dir_all(&c.f.dir).unwrap();
}

/// A real HTTPS file server (hyper over rustls) for one file, with `Range` support. The first
/// response is cut after `cut_after` bytes (a dropped connection); every request's `Range`
/// header is recorded.
struct FileServer {
    port: u16,
    ca: String,
    ranges: Arc<std::sync::Mutex<Vec<String>>>,
}

fn file_server(dir: &Path, file: PathBuf, cut_after: usize) -> FileServer {
    use hyper::body::{Bytes, Frame};

    let names = cairn::pki::ServingNames::new(Some("localhost"), [Ipv4Addr::LOCALHOST.into()]);
    let (certs, _) = cairn::pki::ensure(&dir.join("files-tls"), &names, SystemTime::now()).unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(cairn::pki::tls::server_config(&certs).unwrap());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ranges.clone();
    let cut = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(stream) = tls.accept(tcp).await else {
                    continue;
                };
                let (file, seen, cut) = (file.clone(), seen.clone(), cut.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let data = fs::read(&file).unwrap();
                    let range = req
                        .headers()
                        .get("range")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push(range.clone().unwrap_or_default());
                    let total = data.len();
                    let mut resp = hyper::Response::builder();
                    let start = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                        Some(r) => {
                            let start: usize = r.trim_end_matches('-').parse().unwrap();
                            resp = resp.status(206).header(
                                "content-range",
                                format!("bytes {start}-{}/{total}", total - 1),
                            );
                            start
                        }
                        None => 0,
                    };
                    let body = data[start..].to_vec();
                    resp = resp.header("content-length", body.len().to_string());
                    let first = !cut.swap(true, Ordering::SeqCst);
                    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = if first {
                        // Half the file, then the connection breaks.
                        vec![
                            Ok(Frame::data(Bytes::from(body[..cut_after].to_vec()))),
                            Err(std::io::Error::other("cut")),
                        ]
                    } else {
                        vec![Ok(Frame::data(Bytes::from(body)))]
                    };
                    let body = Frames(frames.into());
                    async move { Ok::<_, std::convert::Infallible>(resp.body(body).unwrap()) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    FileServer {
        port,
        ca: certs.ca_cert.clone(),
        ranges,
    }
}

/// A body of frames that are all ready (the last may be an error: a broken connection).
struct Frames(
    std::collections::VecDeque<Result<hyper::body::Frame<hyper::body::Bytes>, std::io::Error>>,
);

impl hyper::body::Body for Frames {
    type Data = hyper::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front())
    }
}

fn url_options(kubeconfig: PathBuf, url: String, sha256: &str, ca: Option<String>) -> Options {
    Options {
        source: Source::Url {
            url,
            sha256: sha256.into(),
            ca,
        },
        ..options(kubeconfig, Path::new("unused"))
    }
}

/// `cairnctl upgrade --url`: the node fetches the bundle over HTTPS itself, resumes with a
/// Range request after the server drops the connection halfway, and installs it. A wrong
/// digest, a missing file, an untrusted server and a plain-HTTP URL are refused with the slot
/// untouched.
#[test]
fn node_fetches_a_bundle_url_and_resumes_with_range_requests() {
    let f = fixture("upgrade-url");
    let (bundle, rootfs) = bundle(&f, "0.2.0");
    let sha = cairn::update::staging::sha256_file(&bundle).unwrap();
    let srv = serve(&f);
    let kubeconfig = kubeconfig_for(&srv, srv.port);
    let files = file_server(&f.dir, bundle.clone(), ROOTFS / 2);
    let url = format!("https://localhost:{}/bundles/update.cairnb", files.port);
    let before = fs::read(&f.node.slot_b).unwrap();

    // Refusals first: nothing may reach the slot.
    let untrusted = upgrade::run(&url_options(kubeconfig.clone(), url.clone(), &sha, None))
        .unwrap_err()
        .to_string();
    assert!(
        untrusted.contains("certificate") || untrusted.contains("Unknown"),
        "{untrusted}"
    );
    let plain = upgrade::run(&url_options(
        kubeconfig.clone(),
        url.replace("https://", "http://"),
        &sha,
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(plain.contains("https:// only"), "{plain}");
    assert_untouched(&f, &srv, &before);

    let ca = Some(files.ca.clone());
    let outcome = upgrade::run(&url_options(
        kubeconfig.clone(),
        url.clone(),
        &sha,
        ca.clone(),
    ))
    .unwrap();
    assert_eq!(outcome, Outcome::Pending);
    let ranges = files.ranges.lock().unwrap().clone();
    assert!(
        ranges
            .iter()
            .any(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "the download resumed with a Range request: {ranges:?}"
    );
    for _ in 0..50 {
        if srv.reboots.load(Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(srv.reboots.load(Ordering::SeqCst), 1);
    assert_eq!(&fs::read(&f.node.slot_b).unwrap()[..ROOTFS], &rootfs[..]);
    let last = f.node.last().unwrap();
    assert_eq!(
        (last.result.as_str(), last.to_version.as_str()),
        ("pending", "0.2.0")
    );
    assert!(!f.node.incoming().join("bundle").exists());
    fs::remove_dir_all(&f.dir).unwrap();
}

#[test]
fn bundle_urls_with_a_wrong_digest_or_no_file_are_refused() {
    let f = fixture("upgrade-url-bad");
    let (bundle, _) = bundle(&f, "0.2.0");
    let srv = serve(&f);
    let kubeconfig = kubeconfig_for(&srv, srv.port);
    // No cut: every response is whole.
    let files = file_server(&f.dir, bundle.clone(), usize::MAX);
    let ca = Some(files.ca.clone());
    let url = format!("https://localhost:{}/update.cairnb", files.port);
    let before = fs::read(&f.node.slot_b).unwrap();

    let wrong = "ab".repeat(32);
    let err = upgrade::run(&url_options(
        kubeconfig.clone(),
        url.clone(),
        &wrong,
        ca.clone(),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("sha256") && err.contains(&wrong), "{err}");
    assert!(
        f.node.incoming().join("bundle").metadata().is_err(),
        "a bundle with the wrong digest is not kept"
    );
    assert_untouched(&f, &srv, &before);
    fs::remove_dir_all(&f.dir).unwrap();
}

/// Before rebooting into the trial the node drains itself (cordon, evict its pods but
/// DaemonSet ones); once the update is over the publisher uncordons it, and only if the
/// update was what cordoned it.
#[test]
fn node_drains_before_the_reboot_and_is_uncordoned_after() {
    use cairn::node_status::CORDONED_FOR_UPDATE;
    use hyper::Method;
    use serde_json::json;

    let mut c = Cluster::new("upgrade-drain");
    c.sync();
    let pod = |name: &str, node: &str, daemon: bool| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "registry.example/app:1"}]},
        });
        if daemon {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "DaemonSet", "name": "agent", "uid": "d-1"}]);
        }
        p
    };
    for (name, node, daemon) in [
        ("web", "edge-1", false),
        ("agent-x", "edge-1", true),
        ("elsewhere", "edge-2", false),
    ] {
        let p = pod(name, node, daemon);
        c.call(Method::POST, "/api/v1/namespaces/default/pods", Some(p))
            .unwrap();
    }

    assert_eq!(c.upgrade(), Outcome::Pending);
    let node = c.get("/api/v1/nodes/edge-1");
    assert_eq!(node["spec"]["unschedulable"], true, "cordoned: {node}");
    assert_eq!(node["metadata"]["annotations"][CORDONED_FOR_UPDATE], "true");
    // No kubelet runs here to stop web: evicted, it stays Terminating (the drain waited for
    // its grace period and 2 s, then gave up).
    let left: Vec<String> = c.get("/api/v1/pods")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap();
            match p["metadata"]["deletionGracePeriodSeconds"].as_i64() {
                Some(g) => format!("{name} terminating {g}s"),
                None => name.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        left,
        ["agent-x", "elsewhere", "web terminating 1s"],
        "web evicted, the others kept"
    );
    let waited =
        c.rt.block_on(cairn::node_status::wait_stopped(&c.client, "edge-1"))
            .unwrap();
    assert_eq!(
        waited,
        "1 pod(s) still stopping after 3 s; rebooting anyway"
    );
    // Its kubelet's final deletion is what the wait looks for.
    c.call(
        Method::DELETE,
        "/api/v1/namespaces/default/pods/web",
        Some(json!({"gracePeriodSeconds": 0})),
    )
    .unwrap();
    let waited =
        c.rt.block_on(cairn::node_status::wait_stopped(&c.client, "edge-1"))
            .unwrap();
    assert!(waited.starts_with("its pods stopped"), "{waited}");

    // Still on trial: stays cordoned. Committed: uncordoned.
    c.sync();
    assert_eq!(c.get("/api/v1/nodes/edge-1")["spec"]["unschedulable"], true);
    c.f.node
        .amend_record(|r| r.result = "committed".into())
        .unwrap();
    c.sync();
    let node = c.get("/api/v1/nodes/edge-1");
    assert!(
        node["spec"]["unschedulable"].is_null(),
        "uncordoned: {node}"
    );
    assert!(node["metadata"]["annotations"][CORDONED_FOR_UPDATE].is_null());

    // A node an admin cordoned stays cordoned through an update.
    let mut cordoned = node.clone();
    cordoned["spec"]["unschedulable"] = json!(true);
    c.call(Method::PUT, "/api/v1/nodes/edge-1", Some(cordoned))
        .unwrap();
    let drained =
        c.rt.block_on(cairn::node_status::drain(&c.client, "edge-1"))
            .unwrap();
    assert!(drained.contains("already cordoned"), "{drained}");
    c.sync();
    let node = c.get("/api/v1/nodes/edge-1");
    assert_eq!(
        node["spec"]["unschedulable"], true,
        "the admin's cordon stays"
    );
    fs::remove_dir_all(&c.f.dir).unwrap();
}

/// Only admins (`system:masters`) reach the update endpoints: a valid bootstrap token (an
/// agent joining) gets 403 for the report, the upload and the apply, and nothing is staged.
#[test]
fn non_admins_may_not_update_nodes() {
    use base64::Engine;
    use hyper::Method;
    use serde_json::json;

    let c = Cluster::new("upgrade-forbidden");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {"token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
                 "usage-bootstrap-authentication": b64("true")},
    });
    c.call(
        Method::POST,
        "/api/v1/namespaces/kube-system/secrets",
        Some(secret),
    )
    .unwrap();
    let (f, srv, rt, admin) = (&c.f, &c.srv, &c.rt, &c.client);
    let agent = cairn::client::Client::new(
        admin.url(),
        admin.ca_pem(),
        None,
        Some("abcdef.0123456789abcdef".into()),
    )
    .unwrap();
    // The token authenticates (the Kubernetes API answers it) ...
    rt.block_on(agent.request(Method::GET, "/version", None))
        .unwrap();
    // ... but may not touch updates.
    let sha = "ab".repeat(32);
    let upload = || {
        rt.block_on(agent.call(
            Method::PUT,
            "/cairn/v1/nodes/edge-1/update/bundle",
            &[
                ("content-range", "bytes 0-3/4".to_owned()),
                ("cairn-bundle-sha256", sha.clone()),
            ],
            http_body_util::Full::new(hyper::body::Bytes::from_static(b"CAIR")),
        ))
        .unwrap()
        .status()
    };
    assert_eq!(upload(), 403);
    for (method, path) in [
        (Method::GET, "/cairn/v1/nodes"),
        (Method::GET, "/cairn/v1/nodes/edge-1/update"),
        (Method::POST, "/cairn/v1/nodes/edge-1/update/apply"),
    ] {
        let body = json!({"sha256": sha});
        match rt.block_on(agent.request(method.clone(), path, Some(&body))) {
            Err(cairn::client::ClientError::Status { code, message, .. }) => {
                assert_eq!(code, 403, "{method} {path}");
                assert!(message.contains("system:masters"), "{message}");
            }
            other => panic!("{method} {path}: {other:?}"),
        }
    }
    assert!(f.node.incoming().join("upload.json").metadata().is_err());
    assert_eq!(srv.reboots.load(Ordering::SeqCst), 0);
    fs::remove_dir_all(&f.dir).unwrap();
}

/// `cairnctl upgrade --all` walks the nodes the server offers: a node already on the
/// bundle's version is reported current; a refusal stops the walk with the node named.
#[test]
fn upgrade_all_reports_each_node_and_stops_at_a_failure() {
    let mut c = Cluster::new("upgrade-all");
    c.sync();
    let same = c.f.bundle("0.1.0", b"rootfs", "console=ttyS0");
    let outcomes = upgrade::run_all(&Options {
        no_wait: false,
        ..options(c.kubeconfig.clone(), &same)
    })
    .unwrap();
    assert_eq!(outcomes, [("edge-1".to_string(), Outcome::Current)]);

    let stranger = SigningKey::generate().unwrap();
    let foreign =
        c.f.bundle_signed(&stranger, "0.3.0", b"rootfs", "console=ttyS0");
    let err = upgrade::run_all(&Options {
        no_wait: false,
        ..options(c.kubeconfig.clone(), &foreign)
    })
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.starts_with("stopped at node edge-1"), "{text}");
    assert!(text.contains("signed by key"), "{text}");
    assert!(upgrade::run_all(&options(c.kubeconfig.clone(), &foreign))
        .unwrap_err()
        .to_string()
        .contains("--no-wait"));
    fs::remove_dir_all(&c.f.dir).unwrap();
}
