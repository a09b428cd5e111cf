//! The HTTP layer: reads a request, parses it, runs the handler and writes the answer.
//! Plain HTTP/1.1 and HTTP/2 (prior knowledge) on a `TcpListener`; TLS is added by the caller
//! later (the `cairn` binary already owns certificates).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::handlers::watch::{self, WatchConfig};
use crate::handlers::Api;
use crate::request::{self, ApiRequest, Verb};
use crate::{discovery, version};

/// Every response body: a whole document or a watch stream.
pub type ApiBody = BoxBody<Bytes, Infallible>;

const JSON: &str = "application/json";

/// What the server needs to answer requests.
#[derive(Clone)]
pub struct Server {
    pub api: Api,
    pub watch: WatchConfig,
}

impl Server {
    /// Answer one request.
    pub async fn respond<B>(&self, req: Request<B>) -> Response<ApiBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.try_respond(req).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err),
        }
    }

    async fn try_respond<B>(&self, req: Request<B>) -> Result<Response<ApiBody>, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let parsed = request::parse(&req)?;
        match parsed {
            ApiRequest::Health => Ok(whole(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok".to_vec(),
            )),
            ApiRequest::Version => Ok(json(
                200,
                &serde_json::to_value(version::VersionInfo::current()).unwrap_or_default(),
            )),
            ApiRequest::Discovery(d) => {
                let (doc, aggregated) = discovery::document(&d)?;
                let mut resp = json(200, &doc);
                if aggregated {
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                    );
                }
                Ok(resp)
            }
            ApiRequest::Resource(action) if action.verb == Verb::Watch => {
                let rx = watch::start(self.api.clone(), action, self.watch).await?;
                let mut resp = Response::new(ChannelBody { rx }.boxed());
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
                Ok(resp)
            }
            ApiRequest::Resource(action) => {
                let limit = crate::handlers::MAX_BODY;
                let body = Limited::new(req.into_body(), limit)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            ApiError::TooLarge { limit }
                        } else {
                            ApiError::BadRequest(format!("reading the request body failed: {e}"))
                        }
                    })?
                    .to_bytes();
                let api = self.api.clone();
                let reply = tokio::task::spawn_blocking(move || api.handle(&action, &body))
                    .await
                    .map_err(|e| ApiError::Internal(format!("handler failed: {e}")))??;
                Ok(json(reply.code, &reply.body))
            }
        }
    }
}

/// Serve plain HTTP on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, server: Server, shutdown: impl Future<Output = ()>) {
    let server = Arc::new(server);
    let http = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.respond(req).await) }
            });
            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
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

/// An error as a `Status` response.
pub fn error_response(err: &ApiError) -> Response<ApiBody> {
    let status = err.status();
    json(
        status.code,
        &serde_json::to_value(&status).expect("Status serialises"),
    )
}

/// A streamed body fed by a watch task.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
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
