//! The agent's HTTPS health server: `/readyz`, `/livez`, `/healthz`, `/version`, and a
//! Kubernetes `Status` 404 for everything else. The server role serves the whole Kubernetes API
//! (`cairn_apiserver`) instead; this goes when the agent serves the kubelet API.
//!
//! [`routes`] turns a request into a response without I/O, [`serve`] owns sockets and
//! connections; the TLS configuration comes from [`crate::pki::tls`]. Request bodies are
//! ignored.

pub mod routes;
pub mod status;
pub mod version;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use routes::Router;

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is requested, open connections get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting, asks open
/// connections to close (HTTP/2 GOAWAY, HTTP/1.1 after the current response) and waits for
/// them up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let router = Arc::new(router);
    let graceful = GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    eprintln!("cairn: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return; // failed or stalled handshakes are the client's problem
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = router.respond(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}
