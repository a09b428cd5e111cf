//! The API server's way to its nodes' kubelets (`cairn_apiserver::nodeproxy`): HTTPS with the
//! `kube-apiserver-kubelet-client` certificate of the cluster CA, made at each start.
//!
//! The kubelet's serving certificate is not verified (it is self-signed; Kubernetes' API
//! server does the same unless `--kubelet-certificate-authority` is set): the kubelet, which
//! holds the logs, is what checks who asks.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_apiserver::{nodeproxy::NodeProxy, ApiError, ExtensionFuture};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Response};

use crate::client::Client;
use crate::pki::PemPair;

pub struct KubeletProxy {
    identity: PemPair,
}

impl KubeletProxy {
    pub fn new(identity: PemPair) -> KubeletProxy {
        KubeletProxy { identity }
    }
}

impl NodeProxy for KubeletProxy {
    fn get(&self, address: String, port: u16, path: String) -> ExtensionFuture {
        let identity = (
            self.identity.cert.as_bytes().to_vec(),
            self.identity.key.as_bytes().to_vec(),
        );
        Box::pin(async move {
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
            let resp = client
                .call(Method::GET, &path, &[], Empty::<Bytes>::new())
                .await
                .map_err(|e| gateway(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let message = String::from_utf8_lossy(&body).trim().to_owned();
                return Err(match status.as_u16() {
                    400 => ApiError::BadRequest(message),
                    403 => ApiError::Forbidden(message),
                    code => ApiError::Other {
                        code,
                        reason: "InternalError",
                        message,
                    },
                });
            }
            let content_type = resp.headers().get("content-type").cloned();
            let mut out = Response::new(EndOnError(resp.into_body()).boxed());
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
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
