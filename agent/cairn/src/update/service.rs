//! The updater over HTTPS: how `cairnctl upgrade` reaches a node. Served by the API server
//! next to the Kubernetes API (an [`Extension`] under `/cairn/`), admins only:
//!
//! | request | what it does |
//! |---|---|
//! | `GET /cairn/v1/nodes` | `{"items": [Report]}`: the nodes served here (this one) |
//! | `GET /cairn/v1/nodes/NAME/update` | the node's [`Report`](super::Report) (slots, last update, staged upload) |
//! | `PUT /cairn/v1/nodes/NAME/update/bundle` | appends bytes to the staged bundle: `Content-Range: bytes START-END/SIZE`, `Cairn-Bundle-Sha256: HEX`; `409` when `START` is not where the staged bytes end (the `GET` says where) |
//! | `POST /cairn/v1/nodes/NAME/update/apply` | `{"sha256": HEX, "allowDowngrade": false, "reboot": true}`: verifies and installs the staged bundle, streaming progress as JSON lines, then reboots into the trial; with `"url": "https://..."` (and optionally `"caCert": PEM`) the node first fetches the bundle itself ([`fetch`]) |
//!
//! One upload or apply runs at a time; a second gets `409`.
//!
//! A server with agents updates them the same way, one address for all: requests for another
//! node are passed on to that node's kubelet port (found from its Node, with the API
//! server's kubelet-client certificate, like `kubectl logs`), where the agent serves its own
//! `UpdateService` ([`Relay`]), and `GET /cairn/v1/nodes` lists every node that answers.
//! The server checks that the caller is an admin; the kubelet serves only the API server.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use cairn_apiserver::server::{channel_body, json_response, ApiBody};
use cairn_apiserver::{auth::User, ApiError, Extension, ExtensionFuture, RequestBody};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};

use super::fetch;
use super::staging::{StageError, Staging, Upload};
use super::{Node, UpdateError};
use crate::client::Client;

/// Group allowed to update nodes (the admin kubeconfig's).
pub const ADMIN_GROUP: &str = "system:masters";
/// Header naming the bundle an upload carries.
pub const SHA256_HEADER: &str = "cairn-bundle-sha256";

/// Bytes gathered from the connection before each write to the data partition.
const WRITE_CHUNK: usize = 1 << 20;

/// The node's update endpoints (cheap to clone: one shared state).
#[derive(Clone)]
pub struct UpdateService(Arc<Inner>);

struct Inner {
    name: String,
    node: Node,
    staging: Staging,
    busy: Arc<Mutex<()>>,
    reboot: Arc<dyn Fn() + Send + Sync>,
    /// This node's API (loopback, admin): to drain the node before its reboot.
    api: Option<Client>,
    /// On a server: the way to the other nodes' update endpoints.
    relay: Option<Relay>,
}

/// How a server reaches the update endpoints of its other nodes: their kubelets, found
/// from their Node objects (read with the server's own admin client).
#[derive(Clone)]
pub struct Relay {
    pub api: Client,
    pub kubelets: crate::nodeproxy::KubeletProxy,
}

/// Headers of an update request that matter to the node.
const FORWARDED_HEADERS: [&str; 3] = ["content-type", "content-range", SHA256_HEADER];

/// How long a node has to say how it is when the server lists them all.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Relay {
    async fn node(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        use crate::client::ClientError;
        self.api
            .request(Method::GET, &format!("/api/v1/nodes/{name}"), None)
            .await
            .map_err(|e| match e {
                ClientError::Status { code, .. } if code.as_u16() == 404 => ApiError::Other {
                    code: 404,
                    reason: "NotFound",
                    message: format!("node {name:?} not found"),
                },
                e => internal(e),
            })
    }

    /// `req` (for node `name`) to that node's kubelet; its answer as it comes.
    async fn forward(
        &self,
        name: &str,
        parts: hyper::http::request::Parts,
        body: RequestBody,
    ) -> Result<Response<ApiBody>, ApiError> {
        let node = self.node(name).await?;
        let headers: Vec<(&str, String)> = FORWARDED_HEADERS
            .iter()
            .filter_map(|h| Some((*h, parts.headers.get(*h)?.to_str().ok()?.to_owned())))
            .collect();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        self.kubelets
            .forward(&node, parts.method, &path, &headers, body)
            .await
    }

    /// The reports of every node but `except` that answers in time.
    async fn reports(&self, except: &str) -> Vec<serde_json::Value> {
        let Ok(list) = self.api.request(Method::GET, "/api/v1/nodes", None).await else {
            return Vec::new();
        };
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .filter(|n| *n != except)
            .map(str::to_owned)
            .collect();
        let asks = names.iter().map(|name| async move {
            let ask = async {
                let parts = Request::get(format!("/cairn/v1/nodes/{name}/update"))
                    .body(())
                    .expect("a valid request")
                    .into_parts()
                    .0;
                let empty = http_body_util::Empty::<Bytes>::new()
                    .map_err(|e| match e {})
                    .boxed_unsync();
                let resp = self.forward(name, parts, empty).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                serde_json::from_slice::<serde_json::Value>(&body).ok()
            };
            // A node that does not answer (not A/B, rebooting, gone) is not offered.
            tokio::time::timeout(REPORT_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The body of `POST .../update/apply`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    pub sha256: String,
    #[serde(default)]
    pub allow_downgrade: bool,
    #[serde(default = "yes")]
    pub reboot: bool,
    /// Fetch the bundle from this `https://` URL first (resuming what is staged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A CA (PEM) to trust for `url` besides the system's CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

fn yes() -> bool {
    true
}

impl UpdateService {
    /// Serves `node`, called `name` in paths; `reboot` runs after a successful apply, after
    /// draining the node through `drain` (this node's API) when given.
    pub fn new(
        name: &str,
        node: Node,
        reboot: Arc<dyn Fn() + Send + Sync>,
        drain: Option<Client>,
    ) -> UpdateService {
        UpdateService(Arc::new(Inner {
            name: name.into(),
            staging: Staging::new(node.incoming()),
            node,
            busy: Arc::new(Mutex::new(())),
            reboot,
            api: drain,
            relay: None,
        }))
    }

    /// The same, also passing requests for other nodes on to them (a server's).
    pub fn with_relay(self, relay: Relay) -> UpdateService {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|_| panic!("configured before use"));
        UpdateService(Arc::new(Inner {
            relay: Some(relay),
            ..inner
        }))
    }

    async fn route(
        self,
        req: Request<RequestBody>,
        user: User,
    ) -> Result<Response<ApiBody>, ApiError> {
        let this = &self.0;
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        if !user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return Err(ApiError::Forbidden(format!(
                "forbidden: user {:?} may not update nodes (needs group {ADMIN_GROUP})",
                user.name
            )));
        }
        if path == "/cairn/v1/nodes" && parts.method == Method::GET {
            // The nodes this endpoint updates: itself, and the others that answer.
            let report = this.node.report(&this.name).map_err(internal)?;
            let mut items = vec![serde_json::to_value(report).expect("serialises")];
            if let Some(relay) = &this.relay {
                items.extend(relay.reports(&this.name).await);
            }
            return Ok(json_response(200, &serde_json::json!({ "items": items })));
        }
        let rest = path
            .strip_prefix("/cairn/v1/nodes/")
            .ok_or_else(|| ApiError::PathNotFound { path: path.clone() })?;
        let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
        if name != this.name {
            return match &this.relay {
                Some(relay) => {
                    let name = name.to_owned();
                    relay.forward(&name, parts, body).await
                }
                None => Err(ApiError::Other {
                    code: 404,
                    reason: "NotFound",
                    message: format!(
                        "node {name:?} is not served here: this node updates itself (node {:?})",
                        this.name
                    ),
                }),
            };
        }
        match (&parts.method, action) {
            (&Method::GET, "update") => {
                let report = this.node.report(&this.name).map_err(internal)?;
                Ok(json_response(
                    200,
                    &serde_json::to_value(report).expect("serialises"),
                ))
            }
            (&Method::PUT, "update/bundle") => this.upload(&parts.headers, body).await,
            (&Method::POST, "update/apply") => this.apply(body).await,
            (m, "update" | "update/bundle" | "update/apply") => Err(ApiError::MethodNotAllowed {
                method: m.to_string(),
                path,
            }),
            _ => Err(ApiError::PathNotFound { path }),
        }
    }
}

impl Inner {
    fn try_busy(&self) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
        self.busy
            .clone()
            .try_lock_owned()
            .map_err(|_| ApiError::Other {
                code: 409,
                reason: "Conflict",
                message: "another upload or update is in progress on this node".into(),
            })
    }

    async fn upload(
        &self,
        headers: &hyper::HeaderMap,
        mut body: RequestBody,
    ) -> Result<Response<ApiBody>, ApiError> {
        let _busy = self.try_busy()?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| ApiError::BadRequest(format!("missing header {name}")))
        };
        let sha = header(SHA256_HEADER)?;
        let (start, end, size) = parse_content_range(&header("content-range")?)?;
        let upload = Upload::new(&sha, size).map_err(stage_error)?;
        let staging = self.staging.clone();
        let up = upload.clone();
        let mut file = blocking(move || staging.begin(&up, start))
            .await?
            .map_err(stage_error)?;

        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut got: u64 = 0;
        let expected = end + 1 - start;
        let mut dropped = None;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    dropped = Some(e.to_string());
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    got += data.len() as u64;
                    if got > expected {
                        return Err(ApiError::BadRequest(format!(
                            "the body is longer than Content-Range {start}-{end} says"
                        )));
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() >= WRITE_CHUNK {
                        (file, buf) = write_chunk(file, buf).await?;
                    }
                }
            }
        }
        // Keep what arrived, also from a dropped connection: the client resumes after it.
        (file, _) = write_chunk(file, buf).await?;
        blocking(move || file.sync_all())
            .await?
            .map_err(|e| internal(format!("syncing the staged bundle: {e}")))?;
        if let Some(e) = dropped {
            eprintln!(
                "cairn: update: upload interrupted after {} bytes: {e}",
                start + got
            );
            return Err(ApiError::BadRequest(format!(
                "the upload was interrupted: {e}"
            )));
        }
        let staging = self.staging.clone();
        let state = blocking(move || staging.finish(&upload))
            .await?
            .map_err(stage_error)?;
        if state.complete {
            eprintln!(
                "cairn: update: received bundle {} ({} bytes)",
                &state.upload.sha256[..12],
                state.upload.size
            );
        }
        Ok(json_response(
            200,
            &serde_json::to_value(&state).expect("serialises"),
        ))
    }

    async fn apply(&self, mut body: RequestBody) -> Result<Response<ApiBody>, ApiError> {
        let busy = self.try_busy()?;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadRequest(format!("reading the request: {e}")))?;
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
            }
            if text.len() > 64 << 10 {
                return Err(ApiError::TooLarge { limit: 64 << 10 });
            }
        }
        let body = text;
        let ask: ApplyRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the apply request: {e}")))?;
        if ask.url.is_none() && self.staging.complete(&ask.sha256).is_none() {
            return Err(ApiError::Other {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "no complete upload of bundle {} on this node: upload it first, or give its url",
                    ask.sha256
                ),
            });
        }
        if let Some(url) = &ask.url {
            fetch::HttpsUrl::parse(url).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let job = Job {
            node: self.node.clone(),
            staging: self.staging.clone(),
            reboot: self.reboot.clone(),
            name: self.name.clone(),
            api: self.api.clone(),
            tx,
        };
        // Runs to its end even if the client goes away: a download or an install is not
        // left half done because a laptop closed its lid.
        tokio::spawn(job.run(ask, busy));
        let mut resp = Response::new(channel_body(rx));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(resp)
    }
}

/// One apply: fetch (if asked), install, drain, answer in JSON lines on `tx`, reboot.
struct Job {
    node: Node,
    staging: Staging,
    reboot: Arc<dyn Fn() + Send + Sync>,
    name: String,
    api: Option<Client>,
    tx: mpsc::Sender<Bytes>,
}

fn line(v: &serde_json::Value) -> Bytes {
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

impl Job {
    async fn run(self, ask: ApplyRequest, busy: tokio::sync::OwnedMutexGuard<()>) {
        if let Some(url) = ask.url.as_deref() {
            if self.staging.complete(&ask.sha256).is_none() {
                let tx = self.tx.clone();
                let mut progress = move |p: String| {
                    eprintln!("cairn: update: {p}");
                    // Progress is for the eyes only: a slow reader loses lines, not the download.
                    let _ = tx.try_send(line(&serde_json::json!({ "progress": p })));
                };
                let fetched =
                    match fetch::trusted_roots(fetch::SYSTEM_CA_BUNDLE, ask.ca_cert.as_deref()) {
                        Ok(roots) => {
                            fetch::fetch(&self.staging, url, &ask.sha256, &roots, &mut progress)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                if let Err(e) = fetched {
                    eprintln!("cairn: update: fetching {url}: {e}");
                    let v = serde_json::json!({
                        "error": format!("fetching {url}: {e}"),
                        "kind": "failed",
                    });
                    let _ = self.tx.send(line(&v)).await;
                    return;
                }
            }
        }
        let Some(path) = self.staging.complete(&ask.sha256) else {
            let v = serde_json::json!({"error": "the staged bundle went away", "kind": "failed"});
            let _ = self.tx.send(line(&v)).await;
            return;
        };
        let installed = tokio::task::spawn_blocking(move || {
            let version = self.install(&ask, &path);
            (self, ask, version)
        })
        .await;
        if let Ok((job, ask, Some(version))) = installed {
            job.finish(&ask, version, busy).await;
        }
    }

    /// Verifies and writes the staged bundle (blocking); the installed version, or `None`
    /// after the error line went out.
    fn install(&self, ask: &ApplyRequest, path: &std::path::Path) -> Option<String> {
        let send = |v: serde_json::Value| {
            let _ = self.tx.blocking_send(line(&v));
        };
        eprintln!("cairn: update: applying bundle {}", &ask.sha256[..12]);
        let result = super::apply(&self.node, path, ask.allow_downgrade, &mut |line| {
            eprintln!("cairn: update: {line}");
            send(serde_json::json!({ "progress": line }));
        });
        match result {
            Ok(manifest) => {
                if let Err(e) = self.staging.clear() {
                    eprintln!("cairn: update: removing the staged bundle: {e}");
                }
                Some(manifest.version)
            }
            Err(e) => {
                eprintln!("cairn: update: {e}");
                let kind = match e {
                    UpdateError::Bundle(_) | UpdateError::Refused(_) => "refused",
                    UpdateError::Io { .. } => "failed",
                };
                if kind == "refused" {
                    // It will never be accepted: give the space back.
                    if let Err(e) = self.staging.clear() {
                        eprintln!("cairn: update: removing the staged bundle: {e}");
                    }
                }
                send(serde_json::json!({ "error": e.to_string(), "kind": kind }));
                None
            }
        }
    }

    /// After a successful install: drain the node if it is about to reboot, answer, reboot.
    async fn finish(
        self,
        ask: &ApplyRequest,
        version: String,
        busy: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let progress = |p: String| {
            eprintln!("cairn: update: {p}");
            let _ = self
                .tx
                .try_send(line(&serde_json::json!({ "progress": p })));
        };
        if let Some(api) = self.api.as_ref().filter(|_| ask.reboot) {
            progress(crate::node_status::drain_before_reboot(api, &self.name).await);
        }
        let report = self.node.report(&self.name).ok();
        let v = serde_json::json!({
            "result": "pending",
            "version": version,
            "slot": self.node.running.other().to_string(),
            "reboot": ask.reboot,
            "report": report,
        });
        let _ = self.tx.send(line(&v)).await;
        let Job { tx, reboot, .. } = self;
        drop(tx);
        drop(busy);
        if ask.reboot {
            // Let the answer reach the client before the node goes down.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            reboot();
        }
    }
}

impl Extension for UpdateService {
    fn prefix(&self) -> &'static str {
        "/cairn/"
    }

    fn respond(&self, req: Request<RequestBody>, user: User) -> ExtensionFuture {
        Box::pin(self.clone().route(req, user))
    }
}

/// `bytes START-END/SIZE`, END inclusive (so a request carries at least one byte).
pub fn parse_content_range(v: &str) -> Result<(u64, u64, u64), ApiError> {
    let bad = || ApiError::BadRequest(format!("Content-Range {v:?} is not `bytes START-END/SIZE`"));
    let rest = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, size) = rest.split_once('/').ok_or_else(bad)?;
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let (a, b, size): (u64, u64, u64) = (
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
        size.parse().map_err(|_| bad())?,
    );
    if a > b || b >= size {
        return Err(bad());
    }
    Ok((a, b, size))
}

async fn write_chunk(mut file: File, buf: Vec<u8>) -> Result<(File, Vec<u8>), ApiError> {
    if buf.is_empty() {
        return Ok((file, buf));
    }
    blocking(move || {
        let r = file.write_all(&buf);
        let mut buf = buf;
        buf.clear();
        r.map(|()| (file, buf))
    })
    .await?
    .map_err(|e| {
        stage_error(StageError::Io {
            what: "writing the staged bundle".into(),
            source: e,
        })
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("update task: {e}")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn stage_error(e: StageError) -> ApiError {
    let (code, reason) = match &e {
        StageError::BadRequest(_) => (400, "BadRequest"),
        StageError::Offset { .. } => (409, "Conflict"),
        StageError::NoSpace { .. } => (507, "InsufficientStorage"),
        StageError::Digest { .. } => (422, "Invalid"),
        StageError::Io { source, .. } if source.raw_os_error() == Some(28) => {
            (507, "InsufficientStorage")
        }
        StageError::Io { .. } => (500, "InternalError"),
    };
    ApiError::Other {
        code,
        reason,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/100").unwrap(), (0, 99, 100));
        assert_eq!(parse_content_range("bytes 40-40/41").unwrap(), (40, 40, 41));
        for bad in [
            "bytes 0-100/100",
            "bytes 5-4/10",
            "bytes */100",
            "0-9/10",
            "bytes 0-9",
            "bytes a-9/10",
        ] {
            let err = parse_content_range(bad).unwrap_err().to_string();
            assert!(err.contains("START-END/SIZE"), "{bad}: {err}");
        }
    }
}
