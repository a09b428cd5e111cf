//! Startup, liveness and readiness probes of a running container: exec (a command in the
//! container), HTTP GET and TCP connect (made from inside the pod's network namespace, to the
//! pod's address or loopback, so they reach the container however the pod is networked).
//!
//! A prober task per running container runs its probes on their schedules and tells the pod's
//! worker what it concluded ([`Verdict`]): started, ready or not, each failed try (for the
//! `Unhealthy` event), and a failure past the threshold that must restart the container.
//! Liveness and readiness wait for the startup probe to succeed, as in Kubernetes.

use std::fs::File;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use cairn_runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }

    /// As events say it: "Liveness probe failed: ...".
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Handler {
    Exec(Vec<String>),
    Http {
        https: bool,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub kind: Kind,
    handler: Handler,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

impl Probes {
    /// The probes of container spec `c`; a probe that cannot be run (gRPC, a port name the
    /// container does not declare) is an error naming it.
    pub fn parse(c: &Value) -> Result<Probes, String> {
        Ok(Probes {
            startup: Probe::parse(c, Kind::Startup)?,
            liveness: Probe::parse(c, Kind::Liveness)?,
            readiness: Probe::parse(c, Kind::Readiness)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }
}

impl Probe {
    fn parse(c: &Value, kind: Kind) -> Result<Option<Probe>, String> {
        let p = &c[kind.field()];
        if !p.is_object() {
            return Ok(None);
        }
        let what = |m: &str| format!("{}: {m}", kind.field());
        let port = |v: &Value| -> Result<u16, String> {
            if let Some(n) = v.as_u64() {
                return u16::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| what(&format!("port {n} is out of range")));
            }
            let name = v.as_str().unwrap_or_default();
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| what(&format!("the container has no port named {name:?}")))
        };
        let host = |v: &Value| v.as_str().filter(|h| !h.is_empty()).map(str::to_owned);
        let handler = if let Some(cmd) = p["exec"]["command"].as_array() {
            let cmd: Vec<String> = cmd
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            if cmd.is_empty() {
                return Err(what("exec needs a command"));
            }
            Handler::Exec(cmd)
        } else if p["httpGet"].is_object() {
            let h = &p["httpGet"];
            let mut path = h["path"].as_str().unwrap_or("/").to_owned();
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            Handler::Http {
                https: h["scheme"].as_str() == Some("HTTPS"),
                host: host(&h["host"]),
                port: port(&h["port"])?,
                path,
                headers: h["httpHeaders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|kv| {
                        Some((
                            kv["name"].as_str()?.to_owned(),
                            kv["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect(),
            }
        } else if p["tcpSocket"].is_object() {
            Handler::Tcp {
                host: host(&p["tcpSocket"]["host"]),
                port: port(&p["tcpSocket"]["port"])?,
            }
        } else if p["grpc"].is_object() {
            return Err(what("gRPC probes are not supported by this kubelet"));
        } else {
            return Err(what("needs exec, httpGet or tcpSocket"));
        };
        let secs = |field: &str, default: u64, min: u64| {
            Duration::from_secs(p[field].as_u64().unwrap_or(default).max(min))
        };
        let count = |field: &str, default: u64| {
            p[field]
                .as_u64()
                .unwrap_or(default)
                .clamp(1, u32::MAX as u64) as u32
        };
        Ok(Some(Probe {
            kind,
            handler,
            initial_delay: secs("initialDelaySeconds", 0, 0),
            period: secs("periodSeconds", 10, 1),
            timeout: secs("timeoutSeconds", 1, 1),
            // Liveness and startup probes must succeed once (the API insists on 1).
            success_threshold: if kind == Kind::Readiness {
                count("successThreshold", 1)
            } else {
                1
            },
            failure_threshold: count("failureThreshold", 3),
        }))
    }
}

/// What a prober tells the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The startup probe succeeded (or there is none).
    Started,
    /// The readiness probe crossed a threshold.
    Ready(bool),
    /// One try failed (an `Unhealthy` event).
    Unhealthy(Kind, String),
    /// A startup or liveness probe failed `failureThreshold` times in a row: the container
    /// must be killed and restarted as its restart policy says.
    Failed(Kind, String),
}

/// Where a container is reached.
#[derive(Clone)]
pub struct Target {
    pub runtime: Runtime,
    pub id: String,
    /// The pod's network namespace (`None`: the node's network).
    pub netns: Option<PathBuf>,
    /// The address probes connect to when they name no host.
    pub address: String,
}

/// Runs `probes` against the container until it stops running, a liveness or startup probe
/// fails for good, or the worker goes away.
pub async fn run<T: Clone + Send + 'static>(
    target: Target,
    probes: Probes,
    tag: T,
    tx: mpsc::UnboundedSender<(T, Verdict)>,
) {
    let started = Instant::now();
    let send = |v: Verdict| tx.send((tag.clone(), v)).is_ok();
    if let Some(p) = &probes.startup {
        if !run_one(&target, p, started, &send).await {
            return;
        }
    }
    if !send(Verdict::Started) {
        return;
    }
    let liveness = async {
        if let Some(p) = &probes.liveness {
            run_one(&target, p, started, &send).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let readiness = async {
        match &probes.readiness {
            Some(p) => {
                run_one(&target, p, started, &send).await;
            }
            None => {
                send(Verdict::Ready(true));
                std::future::pending::<()>().await;
            }
        }
    };
    // A probe loop ends only with the container (or its failure): the first to stop stops
    // the other. Without probes left to run this waits until the worker drops it.
    tokio::select! {
        () = liveness => {}
        () = readiness => {}
    }
}

/// Runs one probe on its schedule. A startup probe returns `true` once it succeeds; the
/// others run until the container ends (`false`) or, for liveness, fails for good.
async fn run_one(
    target: &Target,
    probe: &Probe,
    started: Instant,
    send: &impl Fn(Verdict) -> bool,
) -> bool {
    tokio::time::sleep_until(started + probe.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut ready: Option<bool> = None;
    loop {
        if !target.runtime.running(&target.id) {
            return false;
        }
        let outcome = check(target, probe).await;
        if !target.runtime.running(&target.id) {
            return false;
        }
        match outcome {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= probe.success_threshold {
                    match probe.kind {
                        Kind::Startup => return true,
                        Kind::Readiness if ready != Some(true) => {
                            ready = Some(true);
                            if !send(Verdict::Ready(true)) {
                                return false;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(message) => {
                successes = 0;
                failures += 1;
                if !send(Verdict::Unhealthy(probe.kind, message.clone())) {
                    return false;
                }
                if failures >= probe.failure_threshold {
                    match probe.kind {
                        Kind::Readiness => {
                            if ready != Some(false) {
                                ready = Some(false);
                                if !send(Verdict::Ready(false)) {
                                    return false;
                                }
                            }
                        }
                        kind => {
                            send(Verdict::Failed(kind, message));
                            return false;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}

/// One try of `probe`: `Err` says why it failed, in the words Kubernetes uses.
async fn check(target: &Target, probe: &Probe) -> Result<(), String> {
    match &probe.handler {
        Handler::Exec(cmd) => exec(target, cmd, probe.timeout).await,
        Handler::Tcp { host, port } => {
            let host = host.clone().unwrap_or_else(|| target.address.clone());
            connect_in(target.netns.clone(), host, *port, probe.timeout)
                .await
                .map(drop)
        }
        Handler::Http {
            https,
            host,
            port,
            path,
            headers,
        } => {
            let host = host.clone().unwrap_or_else(|| target.address.clone());
            let work = http_get(target, *https, host, *port, path, headers, probe.timeout);
            match tokio::time::timeout(probe.timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "Get \"{}://{}:{port}{path}\": context deadline exceeded",
                    if *https { "https" } else { "http" },
                    target.address
                )),
            }
        }
    }
}

async fn exec(target: &Target, cmd: &[String], timeout: Duration) -> Result<(), String> {
    let mut command = target
        .runtime
        .exec_command(&target.id, cmd, false)
        .map_err(|e| e.to_string())?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("command {cmd:?} timed out")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text = text.trim();
            Err(if text.is_empty() {
                format!(
                    "command {cmd:?} exited with {}",
                    out.status.code().unwrap_or(-1)
                )
            } else {
                text.chars().take(1024).collect()
            })
        }
    }
}

/// A TCP connection to `host:port` made from inside `netns` (on a thread of its own, which
/// alone enters the namespace; the socket stays in it).
pub(super) async fn connect_in(
    netns: Option<PathBuf>,
    host: String,
    port: u16,
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<std::net::TcpStream, String> {
            if let Some(ns) = &netns {
                let file = File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering the pod's network: {e}"))?;
            }
            let addr: SocketAddr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?
                .next()
                .ok_or_else(|| format!("dial tcp {host}:{port}: no address"))?;
            std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("dial tcp {addr}: connect: {}", os_error(&e)))
        })();
        let _ = tx.send(result);
    });
    rx.await
        .unwrap_or_else(|_| Err("the probe's thread ended".into()))
}

/// An OS error as people read it ("connection refused"), without Rust's "(os error 111)".
fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// `GET path` on `host:port` (TLS unverified, as Kubernetes does); 200–399 is a success.
async fn http_get(
    target: &Target,
    https: bool,
    host: String,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let tcp = connect_in(target.netns.clone(), host.clone(), port, timeout).await?;
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
    let failed = |e: &dyn std::fmt::Display| format!("Get \"{url}\": {e}");
    let mut req = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .header("user-agent", "kube-probe/1.35")
        .header("accept", "*/*")
        .header("connection", "close");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| failed(&e))?;
    let status = if https {
        let tls = crate::client::unverified_tls(None).map_err(|e| failed(&e))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("localhost").unwrap());
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| failed(&e))?;
        send(hyper_util::rt::TokioIo::new(stream), req).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await
    }
    .map_err(|e| failed(&e))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

async fn send<I>(io: I, req: hyper::Request<Empty<Bytes>>) -> Result<u16, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probes_parse_with_kubernetes_defaults_and_named_ports() {
        let c = json!({
            "ports": [{"name": "web", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "healthz", "port": "web"}},
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2, "successThreshold": 2},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/up"]}, "failureThreshold": 30},
        });
        let p = Probes::parse(&c).unwrap();
        let l = p.liveness.unwrap();
        assert_eq!(
            l.handler,
            Handler::Http {
                https: false,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(l.period, Duration::from_secs(10));
        assert_eq!(l.timeout, Duration::from_secs(1));
        assert_eq!(l.failure_threshold, 3);
        let r = p.readiness.unwrap();
        assert_eq!(r.success_threshold, 2);
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(p.startup.unwrap().failure_threshold, 30);
        assert!(Probes::parse(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn probes_that_cannot_run_are_named() {
        let e = Probes::parse(&json!({"livenessProbe": {"grpc": {"port": 9000}}})).unwrap_err();
        assert!(e.contains("livenessProbe") && e.contains("gRPC"), "{e}");
        let e =
            Probes::parse(&json!({"readinessProbe": {"tcpSocket": {"port": "db"}}})).unwrap_err();
        assert!(e.contains("no port named \"db\""), "{e}");
    }
}
