//! The API server's way to its nodes' kubelets (`cairn_apiserver::nodeproxy`): HTTPS with the
//! `kube-apiserver-kubelet-client` certificate of the cluster CA, made at each start. Streams
//! (`exec`, `attach`, `port-forward`) are upgraded on both sides and then copied both ways,
//! so the API server never needs to understand their protocol.
//!
//! The kubelet's serving certificate is not verified (it is self-signed; Kubernetes' API
//! server does the same unless `--kubelet-certificate-authority` is set): the kubelet, which
//! holds the logs, is what checks who asks.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_apiserver::nodeproxy::{NodeProxy, StreamRequest};
use cairn_apiserver::{ApiError, ExtensionFuture};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::client::Client;
use crate::pki::PemPair;

#[derive(Clone)]
pub struct KubeletProxy {
    identity: PemPair,
}

impl KubeletProxy {
    pub fn new(identity: PemPair) -> KubeletProxy {
        KubeletProxy { identity }
    }
}

/// Headers of an upgrade request passed on to the kubelet.
const UPGRADE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

impl KubeletProxy {
    /// Sends one request to the kubelet at `address:port`.
    async fn send<B>(
        &self,
        address: String,
        port: u16,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: B,
    ) -> Result<Response<Incoming>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let identity = (
            self.identity.cert.as_bytes().to_vec(),
            self.identity.key.as_bytes().to_vec(),
        );
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address
        };
        let url = format!("https://{host}:{port}");
        let gateway = |message: String| ApiError::Other {
            code: 502,
            reason: "BadGateway",
            message: format!("the kubelet at {url}: {message}"),
        };
        let client = Client::to_kubelet(&url, identity).map_err(gateway)?;
        client
            .call(method, path, headers, body)
            .await
            .map_err(|e| gateway(e.to_string()))
    }
}

impl KubeletProxy {
    /// Passes a request on to the kubelet of `node` (a Node object) and its answer back as
    /// it comes, status and body alike (node updates, [`crate::update::service`]).
    pub async fn forward(
        &self,
        node: &serde_json::Value,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: cairn_apiserver::RequestBody,
    ) -> Result<Response<cairn_apiserver::server::ApiBody>, ApiError> {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let (address, port) = cairn_apiserver::nodeproxy::kubelet_endpoint(node)
            .ok_or_else(|| ApiError::BadRequest(format!("node {name} has no address")))?;
        let resp = self
            .send(address, port, method, path, headers, body)
            .await?;
        let status = resp.status();
        let content_type = resp.headers().get("content-type").cloned();
        let mut out = Response::new(EndOnError(resp.into_body()).boxed());
        *out.status_mut() = status;
        if let Some(ct) = content_type {
            out.headers_mut().insert("content-type", ct);
        }
        Ok(out)
    }
}

/// The kubelet's refusal as the API error the client reads.
async fn refusal(resp: Response<Incoming>) -> ApiError {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    match status.as_u16() {
        400 => ApiError::BadRequest(message),
        403 => ApiError::Forbidden(message),
        code => ApiError::Other {
            code,
            reason: "InternalError",
            message,
        },
    }
}

impl NodeProxy for KubeletProxy {
    fn get(&self, address: String, port: u16, path: String) -> ExtensionFuture {
        let this = KubeletProxy {
            identity: self.identity.clone(),
        };
        Box::pin(async move {
            let resp = this
                .send(
                    address,
                    port,
                    Method::GET,
                    &path,
                    &[],
                    Empty::<Bytes>::new(),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(refusal(resp).await);
            }
            let content_type = resp.headers().get("content-type").cloned();
            let mut out = Response::new(EndOnError(resp.into_body()).boxed());
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            Ok(out)
        })
    }

    fn upgrade(
        &self,
        address: String,
        port: u16,
        path: String,
        req: StreamRequest,
    ) -> ExtensionFuture {
        let this = KubeletProxy {
            identity: self.identity.clone(),
        };
        Box::pin(async move {
            let headers: Vec<(&str, String)> = UPGRADE_HEADERS
                .iter()
                .flat_map(|name| {
                    req.headers
                        .get_all(*name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .map(|v| (*name, v.to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect();
            let mut resp = this
                .send(
                    address,
                    port,
                    req.method.clone(),
                    &path,
                    &headers,
                    Empty::<Bytes>::new(),
                )
                .await?;
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                return Err(refusal(resp).await);
            }
            let client_side = req.on_upgrade;
            let kubelet_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(client), Ok(kubelet)) = (client_side.await, kubelet_side.await) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(kubelet),
                )
                .await;
            });
            let mut out = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
            *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            for (name, value) in resp.headers() {
                out.headers_mut().append(name.clone(), value.clone());
            }
            Ok(out)
        })
    }
}

/// The kubelet's streamed body; a broken connection ends it (the client sees the log stop).
struct EndOnError(Incoming);

impl hyper::body::Body for EndOnError {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
