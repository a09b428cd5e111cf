//! The kubelet's HTTPS endpoint (port 10250 by default), reached by the API server for
//! `kubectl logs`, `exec` and `attach` ([`streams`]). Clients must present a certificate of the cluster CA, and only the API
//! server's (`kube-apiserver-kubelet-client`, or a `system:masters` member) is served.
//!
//! `GET /containerLogs/<namespace>/<pod>/<container>` with the query `kubectl logs` sends:
//! `follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`.
//! `/exec/<namespace>/<pod>/<container>` and `/attach/...` upgrade to WebSocket streams;
//! `/portForward/<namespace>/<pod>` to SPDY ([`portforward`]). `GET /stats/resource` answers
//! the node's and its containers' usage for `kubectl top` ([`super::stats`]). On an agent
//! booted from an A/B image, `/cairn/v1/nodes/<name>/update...` are its update endpoints
//! ([`crate::update::service`]), for the API server to pass `cairnctl upgrade` on to.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_runtime::logs::{self, ReadOptions};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{portforward, streams, Shared};

/// Who may read logs: the API server's kubelet-client identity.
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves `listener` until the process ends. `ca_pem` verifies client certificates.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    ca_pem: &str,
    names: Vec<String>,
) -> Result<(), String> {
    let tls = tls_config(ca_pem, names)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| cairn_apiserver::auth::user_from_certificate(der).ok());
            let allowed = user.as_ref().is_some_and(|u| {
                u.name == APISERVER_CLIENT || u.groups.iter().any(|g| g == "system:masters")
            });
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(text(
                            StatusCode::FORBIDDEN,
                            "Forbidden: only the API server reads from this kubelet\n".into(),
                        ));
                    }
                    Ok(respond(&shared, req).await)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}

fn tls_config(ca_pem: &str, names: Vec<String>) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = crate::pki::provider();
    let roots = crate::pki::roots(ca_pem).map_err(|e| format!("the cluster CA: {e:?}"))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    // A serving certificate of its own, made at each start: the API server does not verify
    // kubelet serving certificates (docs/decisions.md).
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(names)
        .map_err(|e| e.to_string())?
        .self_signed(&key)
        .map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn respond(shared: &Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "healthz"] => text(StatusCode::OK, "ok".into()),
        ["", "containerLogs", ns, pod, container] => {
            match container_logs(shared, ns, pod, container, &query) {
                Ok(resp) => resp,
                Err((code, message)) => text(code, message),
            }
        }
        ["", "exec", ns, pod, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            streams::exec(shared, req, &ns, &pod, &container)
                .await
                .unwrap_or_else(|(code, message)| text(code, message))
        }
        ["", "attach", ns, pod, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            streams::attach(shared, req, &ns, &pod, &container)
                .await
                .unwrap_or_else(|(code, message)| text(code, message))
        }
        ["", "cairn", ..] => match &shared.updates {
            // The API server passes on requests of admins it has checked (`cairnctl upgrade`).
            Some(updates) => {
                let user = cairn_apiserver::auth::User {
                    name: APISERVER_CLIENT.into(),
                    groups: vec![crate::update::service::ADMIN_GROUP.into()],
                };
                let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
                use cairn_apiserver::Extension as _;
                match updates.respond(req, user).await {
                    Ok(resp) => resp,
                    Err(e) => cairn_apiserver::server::error_response(&e),
                }
            }
            None => text(
                StatusCode::NOT_FOUND,
                "this node does not take updates (it was not booted from an A/B image)\n".into(),
            ),
        },
        ["", "stats", "resource"] => super::stats::respond(&shared.stats, &shared.runtime).await,
        ["", "portForward", ns, pod] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            portforward::serve(shared, req, &ns, &pod)
                .await
                .unwrap_or_else(|(code, message)| text(code, message))
        }
        _ => text(StatusCode::NOT_FOUND, format!("{path}: not found\n")),
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn flag(query: &str, key: &str) -> bool {
    matches!(param(query, key), Some("true" | "1"))
}

/// The uid of the newest pod named `ns/pod` this node has run (its log directory is
/// `<namespace>_<name>_<uid>`).
pub(super) fn pod_uid(shared: &Shared, ns: &str, pod: &str) -> Option<String> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(&shared.logs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.file_name().to_string_lossy()[prefix.len()..].to_owned())
}

/// The log file of `container` (the previous attempt's with `previous`) and the id of the
/// container that writes it.
pub(super) fn find_log(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String), (StatusCode, String)> {
    let prefix = format!("{ns}_{pod}_");
    let pod_dir =
        pod_uid(shared, ns, pod).map(|uid| shared.logs_dir.join(format!("{prefix}{uid}")));
    let waiting = || {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        )
    };
    let dir = pod_dir.ok_or_else(waiting)?.join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    attempts.sort_unstable();
    let attempt = match (attempts.last(), previous) {
        (None, _) => return Err(waiting()),
        (Some(&n), false) => n,
        (Some(&n), true) if n > 0 && attempts.contains(&(n - 1)) => n - 1,
        (Some(_), true) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            ))
        }
    };
    let uid = dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy()[prefix.len()..].to_owned())
        .unwrap_or_default();
    Ok((
        dir.join(format!("{attempt}.log")),
        format!("{uid}_{container}_{attempt}"),
    ))
}

fn container_logs(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<Response<Body>, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let (path, id) = find_log(shared, ns, pod, container, flag(query, "previous"))?;
    let number = |key: &str| -> Result<Option<i64>, (StatusCode, String)> {
        param(query, key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("{key}: not a number: {v}")))
            })
            .transpose()
    };
    let since = match (number("sinceSeconds")?, param(query, "sinceTime")) {
        (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
        (None, Some(t)) => {
            let t = cairn_apiserver::request::decode(t).map_err(|e| bad(e.to_string()))?;
            Some(
                t.parse::<jiff::Timestamp>()
                    .map_err(|e| bad(format!("sinceTime: {e}")))?,
            )
        }
        (None, None) => None,
    };
    let opts = ReadOptions {
        tail_lines: number("tailLines")?.map(|n| n.max(0) as usize),
        since,
        timestamps: flag(query, "timestamps"),
        limit_bytes: number("limitBytes")?.map(|n| n.max(0) as usize),
    };
    let records = logs::read(&path, &opts).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", path.display()),
        )
    })?;
    let first = logs::render(&records, &opts);
    if !flag(query, "follow") {
        return Ok(text(
            StatusCode::OK,
            String::from_utf8_lossy(&first).into_owned(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let shared = shared.clone();
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        follow(&shared, &path, &id, opts.timestamps, tx).await;
    });
    let mut resp = Response::new(ChannelBody(rx).boxed());
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// Sends what is appended to the log until the container has ended and everything is read,
/// or the client goes away.
async fn follow(shared: &Shared, path: &Path, id: &str, timestamps: bool, tx: mpsc::Sender<Bytes>) {
    let opts = ReadOptions {
        timestamps,
        ..Default::default()
    };
    let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (records_tx, mut records) = mpsc::channel(4);
    let tail = tail(shared, path, id, offset, records_tx);
    let send = async {
        while let Some(batch) = records.recv().await {
            if tx
                .send(Bytes::from(logs::render(&batch, &opts)))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = tail => {}
        () = send => {}
    }
}

/// Sends the records appended to the container's log after `offset`, in batches, until the
/// container has ended and everything is read, or the receiver goes away.
pub(super) async fn tail(
    shared: &Shared,
    path: &Path,
    id: &str,
    mut offset: u64,
    tx: mpsc::Sender<Vec<logs::Record>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let ended = shared.runtime.exit(id).is_some() || !shared.runtime.dir(id).exists();
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            // Rotated: the new file starts from the beginning.
            offset = 0;
        }
        if len > offset {
            let mut buf = Vec::new();
            if let Ok(mut f) = std::fs::File::open(path) {
                let _ = f.seek(SeekFrom::Start(offset));
                let _ = f.take(len - offset).read_to_end(&mut buf);
            }
            offset += buf.len() as u64;
            pending.extend_from_slice(&buf);
            let mut records = Vec::new();
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if let Some(r) = logs::parse_record(&line) {
                    records.push(r);
                }
            }
            if !records.is_empty() && tx.send(records).await.is_err() {
                return;
            }
            continue;
        }
        if ended || tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
