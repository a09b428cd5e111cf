//! The HTTPS layer: accepts TLS connections, authenticates each request, parses it, runs the
//! handler and writes the answer. HTTP/1.1 and HTTP/2 (ALPN); the caller owns the certificates
//! and passes a rustls `ServerConfig` whose client verifier trusts the cluster CA.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, TokenAuthenticator, User};
use crate::authz::Attributes;

use crate::error::ApiError;
use crate::handlers::watch::{self, WatchConfig};
use crate::handlers::Api;
use crate::metrics::{Metrics, RequestLabels, WatchGuard};
use crate::request::{self, Action, ApiRequest, BodyFormat, Subresource, Verb};
use crate::{discovery, openapi, version};

/// Every response body: a whole document or a watch stream.
pub type ApiBody = BoxBody<Bytes, Infallible>;

const JSON: &str = "application/json";

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is requested, open connections get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the server needs to answer requests.
#[derive(Clone)]
pub struct Server {
    pub api: Api,
    pub watch: WatchConfig,
    /// Serves the paths under its prefix (authenticated users only), outside the resource API.
    pub extension: Option<Arc<dyn Extension>>,
    /// Counted for every request, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The cluster CA (PEM), served at `/cacerts` to everyone.
    pub cacerts: Option<Arc<str>>,
    /// The server join token's credential (`server:<secret>`), accepted as a bearer token of
    /// a bootstrapper like `cairn token create`'s tokens.
    pub server_token: Option<Arc<str>>,
    /// Reaches kubelets for `pods/<name>/log`, the streams and the metrics API; `None` answers
    /// those with 503.
    pub node_proxy: Option<Arc<dyn crate::nodeproxy::NodeProxy>>,
}

impl Server {
    /// A server for `api` with default watch settings, no extension and fresh metrics.
    pub fn new(api: Api) -> Server {
        let metrics = Arc::new(Metrics::new(api.store.clone()));
        Server {
            api,
            watch: WatchConfig::default(),
            extension: None,
            metrics,
            cacerts: None,
            server_token: None,
            node_proxy: None,
        }
    }
}

/// A request body as an [`Extension`] sees it: streamed, whatever the connection's body type.
pub type RequestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The future an [`Extension`] answers with.
pub type ExtensionFuture =
    Pin<Box<dyn Future<Output = Result<Response<ApiBody>, ApiError>> + Send>>;

/// Node-level endpoints served next to the Kubernetes API on the same port and with the same
/// authentication (the A/B updater's `/cairn/v1/...`). The body is handed over unread, so an
/// extension can stream uploads of any size.
pub trait Extension: Send + Sync {
    /// The path prefix it owns, such as `/cairn/`.
    fn prefix(&self) -> &'static str;
    /// Answers one request of an authenticated `user`.
    fn respond(&self, req: Request<RequestBody>, user: User) -> ExtensionFuture;
}

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The identity in the client certificate, if one was presented (and verified by TLS).
    pub cert_user: Option<User>,
}

impl Server {
    /// Answer one request from `peer`.
    pub async fn respond<B>(&self, req: Request<B>, peer: &Peer) -> Response<ApiBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let mut labels = RequestLabels {
            verb: req.method().as_str().to_owned(),
            ..Default::default()
        };
        let resp = match self.try_respond(req, peer, &mut labels).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err),
        };
        self.metrics
            .observe(&labels, resp.status().as_u16(), started.elapsed());
        resp
    }

    /// The request's user: the client certificate's, else the bearer token's, else `None`
    /// (anonymous). A bearer token that does not authenticate is a 401, logged with its reason.
    fn authenticate<B>(&self, req: &Request<B>, peer: &Peer) -> Result<Option<User>, ApiError> {
        if let Some(user) = &peer.cert_user {
            return Ok(Some(user.clone()));
        }
        let Some(header) = req.headers().get(AUTHORIZATION) else {
            return Ok(None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let result = match token {
            Some(token) => TokenAuthenticator::new(self.api.store.clone(), self.api.token_signer())
                .with_server_token(self.server_token.clone())
                .authenticate(token, SystemTime::now()),
            None => Err(auth::AuthError::MalformedToken),
        };
        result.map(Some).map_err(|reason| {
            eprintln!(
                "cairn: apiserver: 401 for {} {} {}: {reason}",
                peer.addr,
                req.method(),
                req.uri().path()
            );
            ApiError::Unauthorized
        })
    }

    async fn try_respond<B>(
        &self,
        req: Request<B>,
        peer: &Peer,
        labels: &mut RequestLabels,
    ) -> Result<Response<ApiBody>, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let user = match self.authenticate(&req, peer)? {
            Some(user) => Some(self.impersonated(user, req.headers()).await?),
            None => None,
        };
        if let Some(ext) = &self.extension {
            if req.uri().path().starts_with(ext.prefix()) {
                let user = user.ok_or(ApiError::Unauthorized)?;
                let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
                return ext.respond(req, user).await;
            }
        }
        let snapshot = self.api.catalog();
        let catalog = &*snapshot;
        let parsed = request::parse(&req, catalog)?;
        if let ApiRequest::Resource(action) = &parsed {
            *labels = RequestLabels {
                verb: request::verb_name(action.verb).to_ascii_uppercase(),
                group: action.resource.group.to_owned(),
                resource: action.resource.plural.to_owned(),
                subresource: action.subresource.map_or("", Subresource::name).to_owned(),
            };
        }
        let public = matches!(
            parsed,
            ApiRequest::Health | ApiRequest::Version | ApiRequest::CaCerts
        );
        let mut parsed = parsed;
        match &user {
            None if !public => return Err(ApiError::Unauthorized),
            // Health and version are everyone's, signed in or not.
            None => {}
            Some(_) if public => {}
            Some(user) => {
                let attrs = match &parsed {
                    ApiRequest::Resource(action) => Attributes::from_action(action),
                    ApiRequest::SelfSubjectReview => Attributes::resource(
                        "create",
                        "authentication.k8s.io",
                        "selfsubjectreviews",
                        None,
                        None,
                    ),
                    ApiRequest::AccessReview { review, namespace } => Attributes::resource(
                        "create",
                        "authorization.k8s.io",
                        review.plural(),
                        namespace.as_deref(),
                        None,
                    ),
                    _ => Attributes::path(req.method(), req.uri().path()),
                };
                self.authorize(user, attrs).await?;
                if let ApiRequest::Resource(action) = &mut parsed {
                    action.user = Some(Arc::new(user.clone()));
                }
            }
        }
        match parsed {
            ApiRequest::Health => Ok(whole(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok".to_vec(),
            )),
            ApiRequest::CaCerts => match &self.cacerts {
                Some(pem) => Ok(whole(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    pem.as_bytes().to_vec(),
                )),
                None => Err(ApiError::PathNotFound {
                    path: "/cacerts".into(),
                }),
            },
            ApiRequest::Version => Ok(json(
                200,
                &serde_json::to_value(version::VersionInfo::current()).unwrap_or_default(),
            )),
            ApiRequest::Discovery(d) => {
                let (doc, aggregated) = discovery::document(&d, catalog)?;
                let mut resp = json(200, &doc);
                if aggregated {
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                    );
                }
                Ok(resp)
            }
            ApiRequest::SelfSubjectReview => {
                let user = user.unwrap_or_else(|| unreachable!("anonymous requests stop above"));
                Ok(json(
                    201,
                    &serde_json::json!({
                        "kind": "SelfSubjectReview",
                        "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": null},
                        "status": {"userInfo": {"username": user.name, "groups": user.groups}},
                    }),
                ))
            }
            ApiRequest::AccessReview { review, namespace } => {
                let user = user.unwrap_or_else(|| unreachable!("anonymous requests stop above"));
                let protobuf = req
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.contains("protobuf"));
                let mut body = read_body(req.into_body()).await?;
                if protobuf {
                    let json =
                        crate::protobuf::decode(&body, ("authorization.k8s.io/v1", review.kind()))?;
                    body = Bytes::from(json.to_string());
                }
                let api = self.api.clone();
                let answer = tokio::task::spawn_blocking(move || {
                    api.authorizer()
                        .review(&user, review, namespace.as_deref(), &body)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("access review failed: {e}")))??;
                Ok(json(201, &answer))
            }
            ApiRequest::OpenApiV2 { json: true } => Ok(json(200, &openapi::v2(catalog))),
            ApiRequest::OpenApiV2 { json: false } => Err(ApiError::Other {
                code: 406,
                reason: "NotAcceptable",
                message:
                    "/openapi/v2 is served as application/json only; kubectl reads /openapi/v3"
                        .into(),
            }),
            ApiRequest::OpenApiV3(None) => Ok(json(200, &openapi::index(catalog))),
            ApiRequest::OpenApiV3(Some(path)) => {
                let parts: Vec<&str> = path.split('/').collect();
                let doc = match parts.as_slice() {
                    ["api", version] => openapi::group_version(catalog, "", version),
                    ["apis", group, version] => openapi::group_version(catalog, group, version),
                    _ => None,
                };
                doc.map(|d| json(200, &d))
                    .ok_or_else(|| ApiError::PathNotFound {
                        path: format!("/openapi/v3/{path}"),
                    })
            }
            ApiRequest::Metrics => Ok(whole(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                self.metrics.render().into_bytes(),
            )),
            ApiRequest::Resource(action) if action.subresource == Some(Subresource::Log) => {
                let query = req.uri().query().map(str::to_owned);
                crate::nodeproxy::pod_log(
                    self.api.store.clone(),
                    self.kubelets()?,
                    &action,
                    query.as_deref(),
                )
                .await
            }
            ApiRequest::Resource(action)
                if action.subresource.is_some_and(Subresource::is_stream) =>
            {
                let mut req = req;
                let stream = crate::nodeproxy::StreamRequest {
                    method: req.method().clone(),
                    headers: req.headers().clone(),
                    query: req.uri().query().map(str::to_owned),
                    on_upgrade: hyper::upgrade::on(&mut req),
                };
                crate::nodeproxy::pod_stream(
                    self.api.store.clone(),
                    self.kubelets()?,
                    &action,
                    stream,
                )
                .await
            }
            ApiRequest::Resource(action) if crate::resource_metrics::serves(&action) => {
                let proxy = self.kubelets()?;
                let body =
                    crate::resource_metrics::respond(self.api.clone(), proxy, &action).await?;
                Ok(json(200, &body))
            }
            ApiRequest::Resource(action) if action.verb == Verb::Watch => {
                let rx = watch::start(self.api.clone(), action, self.watch).await?;
                let open = self.metrics.watch_opened(labels);
                let mut resp = Response::new(
                    ChannelBody {
                        rx,
                        _open: Some(open),
                    }
                    .boxed(),
                );
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
                Ok(resp)
            }
            ApiRequest::Resource(action) => {
                let body = read_body(req.into_body()).await?;
                let api = self.api.clone();
                let reply = tokio::task::spawn_blocking(move || {
                    let body = match action.body {
                        BodyFormat::Json => body,
                        BodyFormat::Protobuf => protobuf_as_json(&action, &body)?,
                    };
                    api.handle(&action, &body)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("handler failed: {e}")))??;
                let mut resp = json(reply.code, &reply.body);
                for warning in &reply.warnings {
                    let text = format!("299 - {}", serde_json::Value::from(warning.as_str()));
                    if let Ok(value) = HeaderValue::from_str(&text) {
                        resp.headers_mut().append(http::header::WARNING, value);
                    }
                }
                Ok(resp)
            }
        }
    }
}

impl Server {
    /// The user the request acts as (`Impersonate-*` headers), checked off the async threads
    /// when the check may read the store.
    async fn impersonated(&self, user: User, headers: &http::HeaderMap) -> Result<User, ApiError> {
        if !headers.contains_key("impersonate-user") && !headers.contains_key("impersonate-group") {
            return Ok(user);
        }
        let api = self.api.clone();
        let headers = headers.clone();
        tokio::task::spawn_blocking(move || api.authorizer().impersonate(user, &headers))
            .await
            .map_err(|e| ApiError::Internal(format!("impersonation check failed: {e}")))?
    }

    /// `Ok` when `user` may do what `attrs` asks. Members of `system:masters` are answered at
    /// once; other checks may read the store and run off the async threads.
    /// The way to the nodes' kubelets (`logs`, `exec`, ...).
    fn kubelets(&self) -> Result<Arc<dyn crate::nodeproxy::NodeProxy>, ApiError> {
        self.node_proxy.clone().ok_or(ApiError::Other {
            code: 503,
            reason: "ServiceUnavailable",
            message: "this server does not reach kubelets".into(),
        })
    }

    async fn authorize(&self, user: &User, attrs: Attributes) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == crate::authz::MASTERS) {
            return Ok(());
        }
        let api = self.api.clone();
        let user = user.clone();
        tokio::task::spawn_blocking(move || api.authorizer().authorize(&user, &attrs))
            .await
            .map_err(|e| ApiError::Internal(format!("authorization failed: {e}")))?
    }
}

/// A request body, whole, up to [`crate::handlers::MAX_BODY`].
async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = crate::handlers::MAX_BODY;
    Ok(Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge { limit }
            } else {
                ApiError::BadRequest(format!("reading the request body failed: {e}"))
            }
        })?
        .to_bytes())
}

/// A protobuf body as the JSON the handlers read. Without a `typeMeta` in the envelope the
/// body is taken to be what the URL expects: the resource's kind, its subresource's (`Scale`,
/// `Binding`, `Eviction`), or `DeleteOptions` for deletes.
fn protobuf_as_json(action: &Action, body: &[u8]) -> Result<Bytes, ApiError> {
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    let api_version = action.resource.api_version();
    let expected = match (
        action.verb,
        action.subresource.and_then(Subresource::body_kind),
    ) {
        (Verb::Delete | Verb::DeleteCollection, _) => ("meta.k8s.io/v1", "DeleteOptions"),
        (_, Some(kind)) => kind,
        _ => (api_version.as_str(), action.resource.kind),
    };
    let json = crate::protobuf::decode(body, expected)?;
    Ok(Bytes::from(serde_json::to_vec(&json).map_err(|e| {
        ApiError::Internal(format!("re-encoding a protobuf body: {e}"))
    })?))
}

/// Serve the Kubernetes API over HTTPS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Server,
    shutdown: impl Future<Output = ()>,
) {
    let server = Arc::new(server);
    let handler = move |req: Request<Incoming>, peer: Arc<Peer>| {
        let server = server.clone();
        async move { server.respond(req, &peer).await }
    };
    serve_https(listener, tls, handler, shutdown).await;
}

/// The HTTPS connection loop every cairn endpoint uses: TLS handshake (bounded by
/// [`HANDSHAKE_TIMEOUT`]), the client certificate's identity, HTTP/1.1 or HTTP/2 by ALPN (with
/// upgrades, for exec and port-forward later), and `handler` for each request. When
/// `shutdown` completes it stops accepting, asks open connections to close (HTTP/2 GOAWAY,
/// HTTP/1.1 after the current response) and waits for them up to [`DRAIN_TIMEOUT`].
pub async fn serve_https<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ApiBody>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    eprintln!("cairn: https: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return; // failed or stalled handshakes are the client's problem
            };
            let cert_user = match stream.get_ref().1.peer_certificates() {
                Some([leaf, ..]) => match auth::user_from_certificate(leaf) {
                    Ok(user) => Some(user),
                    Err(e) => {
                        eprintln!("cairn: https: {addr}: {e}");
                        None
                    }
                },
                _ => None,
            };
            let peer = Arc::new(Peer { addr, cert_user });
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = handler(req, peer.clone());
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

fn whole(code: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<ApiBody> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(code: u16, value: &serde_json::Value) -> Response<ApiBody> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    whole(
        code,
        JSON,
        serde_json::to_vec(value).expect("JSON values serialise"),
    )
}

/// A whole JSON body with `code`.
pub fn json_response(code: u16, value: &serde_json::Value) -> Response<ApiBody> {
    json(code, value)
}

/// An error as a `Status` response.
pub fn error_response(err: &ApiError) -> Response<ApiBody> {
    let status = err.status();
    json(
        status.code,
        &serde_json::to_value(&status).expect("Status serialises"),
    )
}

/// A response body streamed from `rx` until its senders are gone (watches, progress lines).
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> ApiBody {
    ChannelBody { rx, _open: None }.boxed()
}

/// A streamed body fed by a watch task.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    /// Counts a watch as open while its body lives.
    _open: Option<WatchGuard>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests;
