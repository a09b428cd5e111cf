//! The agent's HTTPS health server: `/readyz`, `/livez`, `/healthz`, `/version`, and a
//! Kubernetes `Status` 404 for everything else. The server role serves the whole Kubernetes API
//! (`cairn_apiserver`) instead; this goes when the agent serves the kubelet API.
//!
//! [`routes`] turns a request into a response without I/O; [`serve`] hands it to the
//! connection loop shared with the API server (`cairn_apiserver::serve_https`); the TLS
//! configuration comes from [`crate::pki::tls`]. Request bodies are ignored.

pub mod routes;
pub mod status;
pub mod version;

use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use rustls::ServerConfig;
use tokio::net::TcpListener;

pub use routes::Router;

/// Serves the health routes over HTTPS on `listener` until `shutdown` completes, with the
/// connection handling (and graceful shutdown) the API server uses.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let router = Arc::new(router);
    let handler = move |req: Request<Incoming>, _peer| {
        let resp = router.respond(req.method(), req.uri().path());
        async move { resp.map(BodyExt::boxed) }
    };
    cairn_apiserver::serve_https(listener, tls, handler, shutdown).await;
}
