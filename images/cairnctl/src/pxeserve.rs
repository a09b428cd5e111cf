//! `cairnctl pxe serve DIR`: serves a network-boot directory (see [`crate::pxe`]) over HTTP
//! for iPXE and over TFTP for the first stage (a NIC's PXE firmware loading iPXE, or QEMU's
//! built-in iPXE fetching `boot.ipxe`). Read-only; only files under DIR; every request is
//! logged with the device's address, and a device refused for want of a config is named.
//!
//! HTTP is hyper; TFTP is the `async-tftp` crate (RFC 1350 with the block-size, timeout and
//! transfer-size options iPXE and PXE ROMs use). DHCP stays with the network's DHCP server
//! (docs/design.md, "Network boot", has a dnsmasq example).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;

use crate::pxe;

type Body = BoxBody<Bytes, Infallible>;

/// Serves until interrupted.
pub fn serve(dir: &Path, listen: IpAddr, http_port: u16, tftp_port: u16) -> Result<()> {
    if !dir.join(pxe::SCRIPT).is_file() {
        bail!(
            "{} has no {}: give the output of `make image BOARD=pxe-...`",
            dir.display(),
            pxe::SCRIPT
        );
    }
    let dir = dir.canonicalize()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let http = tokio::net::TcpListener::bind((listen, http_port))
            .await
            .with_context(|| format!("HTTP on {listen}:{http_port}"))?;
        let http_addr = http.local_addr()?;
        eprintln!(
            "cairnctl: serving {} over HTTP at http://{http_addr}/{}",
            dir.display(),
            pxe::SCRIPT
        );
        if tftp_port != 0 {
            let tftpd = async_tftp::server::TftpServerBuilder::with_dir_ro(&dir)
                .context("TFTP")?
                .bind(SocketAddr::new(listen, tftp_port))
                .build()
                .await
                .with_context(|| {
                    format!(
                        "TFTP on {listen}:{tftp_port} (port 69 needs root or CAP_NET_BIND_SERVICE)"
                    )
                })?;
            eprintln!("cairnctl: and over TFTP at {listen}:{tftp_port}");
            tokio::spawn(async move {
                if let Err(e) = tftpd.serve().await {
                    eprintln!("cairnctl: TFTP server stopped: {e}");
                }
            });
        }
        print_dhcp_hint(http_addr);
        loop {
            let (stream, peer) = http.accept().await?;
            let dir = dir.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let dir = dir.clone();
                    async move { Ok::<_, Infallible>(answer(&dir, peer, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    })
}

fn print_dhcp_hint(http: SocketAddr) {
    eprintln!(
        "cairnctl: point the DHCP server at it: PXE firmware gets an iPXE binary over TFTP \
         (undionly.kpxe or ipxe.efi from Debian's `ipxe`), iPXE gets http://{http}/{}",
        pxe::SCRIPT
    );
}

/// The file under `dir` a request path names, if it is a plain relative path.
pub fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    ok.then(|| dir.join(rel))
}

async fn answer(
    dir: &Path,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return status(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    }
    let Some(file) = resolve(dir, &path).filter(|f| f.is_file()) else {
        eprintln!("cairnctl: {peer} GET {path}: 404{}", why_missing(&path));
        return status(StatusCode::NOT_FOUND, "no such file\n");
    };
    let mut f = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cairnctl: {peer} GET {path}: 500 ({e})");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    eprintln!("cairnctl: {peer} GET {path}: 200 ({len} bytes)");
    let builder = Response::builder()
        .header("content-length", len)
        .header("content-type", "application/octet-stream");
    if head {
        return builder.body(Full::new(Bytes::new()).boxed()).unwrap();
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send_data(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    builder.body(body.boxed()).unwrap()
}

/// What a missing node config means for the device asking.
fn why_missing(path: &str) -> String {
    let name = path.trim_start_matches('/');
    match name
        .strip_prefix(pxe::NODES)
        .and_then(|n| n.strip_prefix('/'))
        .and_then(|n| n.strip_suffix(".cpio"))
    {
        Some(pxe::DEFAULT) => " (no default node config: the device is refused)".into(),
        Some(mac) => format!(
            " (no config for device {}: it asks for the default)",
            mac.replace('-', ":")
        ),
        None => String::new(),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_dir() {
        let d = Path::new("/srv/pxe");
        assert_eq!(resolve(d, "/boot.ipxe"), Some(d.join("boot.ipxe")));
        assert_eq!(
            resolve(d, "/nodes/52-54-00-12-34-56.cpio"),
            Some(d.join("nodes/52-54-00-12-34-56.cpio"))
        );
        for bad in [
            "/",
            "/../etc/passwd",
            "/nodes/../../x",
            "/a//b",
            "/a/./b",
            "/a\\..\\b",
        ] {
            assert_eq!(resolve(d, bad), None, "{bad}");
        }
    }

    #[test]
    fn missing_configs_are_explained() {
        assert!(why_missing("/nodes/default.cpio").contains("refused"));
        assert!(why_missing("/nodes/52-54-00-12-34-56.cpio").contains("52:54:00:12:34:56"));
        assert_eq!(why_missing("/vmlinuz"), "");
    }
}
