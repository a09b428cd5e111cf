//! Bundles the node fetches itself from an HTTPS URL (`cairnctl upgrade --url`), into the
//! same staging area uploads use ([`super::staging`]): a dropped connection, a server error
//! or a restart of the node resumes with a `Range` request from where the staged file ends.
//! A server that ignores `Range` (answers 200) is read again from the start.
//!
//! The URL is trusted through the system's CA bundle (Debian's `ca-certificates`, in every
//! image) plus an optional CA the request brings (a bundle server with a private CA). The
//! bundle's sha256 is given with the URL and checked before anything is installed; the
//! bundle's own signature is checked again by [`super::apply`].

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use super::staging::{StageError, Staged, Staging, Upload};
use crate::client::Client;

/// Where the image keeps the CA certificates it trusts for HTTPS.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Attempts (each resuming where the last stopped) before the download gives up.
pub const ATTEMPTS: u32 = 8;
const MAX_REDIRECTS: usize = 5;
/// Bytes gathered before each write to the data partition.
const WRITE_CHUNK: usize = 1 << 20;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Stage(#[from] StageError),
    #[error("{url}: {message}")]
    Server { url: String, message: String },
    #[error("giving up after {ATTEMPTS} attempts, {received} of {size} bytes staged: {last}")]
    GaveUp {
        received: u64,
        size: u64,
        last: String,
    },
}

/// An `https://host[:port]/path` URL split into the origin a [`Client`] connects to and the
/// path it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    pub origin: String,
    pub path: String,
}

impl HttpsUrl {
    pub fn parse(url: &str) -> Result<HttpsUrl, FetchError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            FetchError::Url(format!(
                "{url:?}: the node fetches bundles over https:// only"
            ))
        })?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = host.is_empty()
            || host.contains('@')
            || url.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad {
            return Err(FetchError::Url(format!(
                "{url:?} is not an https://host[:port]/path URL"
            )));
        }
        let path = path.split('#').next().unwrap_or("/");
        Ok(HttpsUrl {
            origin: format!("https://{host}"),
            path: path.to_owned(),
        })
    }

    /// A `Location` header resolved against this URL (absolute, or a path on this origin).
    fn redirect(&self, location: &str) -> Result<HttpsUrl, FetchError> {
        if location.starts_with('/') {
            return HttpsUrl::parse(&format!("{}{location}", self.origin));
        }
        HttpsUrl::parse(location)
    }
}

/// What the node trusts for bundle URLs: the system CA bundle and `extra` (PEM), if any.
pub fn trusted_roots(system_bundle: &str, extra: Option<&str>) -> Result<String, FetchError> {
    let mut pem = std::fs::read_to_string(system_bundle).unwrap_or_default();
    if let Some(extra) = extra {
        pem.push('\n');
        pem.push_str(extra);
    }
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(FetchError::Url(format!(
            "no CA certificates to check the server with ({system_bundle} is missing and the request names no CA)"
        )));
    }
    Ok(pem)
}

/// Downloads `url` into `staging` as the bundle `sha256`, resuming what is staged already.
/// `progress` gets a line now and then. Returns the complete, digest-checked staged bundle.
pub async fn fetch(
    staging: &Staging,
    url: &str,
    sha256: &str,
    roots_pem: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Staged, FetchError> {
    let start_url = HttpsUrl::parse(url)?;
    let sha256 = Upload::new(sha256, 0)?.sha256;
    let mut last_error = String::new();
    let mut size = 0;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
        }
        let staged = staging.state().filter(|s| s.upload.sha256 == sha256);
        if let Some(s) = staged.as_ref().filter(|s| s.complete) {
            return Ok(s.clone());
        }
        match once(staging, &start_url, &sha256, staged, roots_pem, progress).await {
            Ok(Step::Done(s)) => return Ok(s),
            Ok(Step::Retry { size: n, why }) => {
                size = n;
                progress(format!("download interrupted ({why}); resuming"));
                last_error = why;
            }
            // A refusal, a bad URL or a full data partition does not get better by retrying.
            Err(e) => return Err(e),
        }
    }
    let received = staging.state().map_or(0, |s| s.received);
    Err(FetchError::GaveUp {
        received,
        size,
        last: last_error,
    })
}

enum Step {
    Done(Staged),
    /// A transient failure; `size` is the bundle's size if the server said it.
    Retry {
        size: u64,
        why: String,
    },
}

/// One request (following redirects): appends what arrives to the staged file.
async fn once(
    staging: &Staging,
    start_url: &HttpsUrl,
    sha256: &str,
    staged: Option<Staged>,
    roots_pem: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Step, FetchError> {
    let offset = staged.as_ref().map_or(0, |s| s.received);
    let retry = |why: String| {
        Ok(Step::Retry {
            size: staged.as_ref().map_or(0, |s| s.upload.size),
            why,
        })
    };
    let mut url = start_url.clone();
    let mut redirects = 0;
    let resp = loop {
        let client = Client::new(&url.origin, roots_pem, None, None).map_err(FetchError::Url)?;
        let mut headers = vec![("accept", "application/octet-stream".to_owned())];
        if offset > 0 {
            headers.push(("range", format!("bytes={offset}-")));
        }
        let resp = match client
            .call(Method::GET, &url.path, &headers, Empty::<Bytes>::new())
            .await
        {
            Ok(r) => r,
            Err(e @ crate::client::ClientError::Tls { .. }) => {
                return Err(server(
                    &url,
                    format!("{e} (a private CA? `cairnctl upgrade --url-ca FILE`)"),
                ));
            }
            Err(e) => return retry(e.to_string()),
        };
        let code = resp.status();
        if code.is_redirection() {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| server(&url, format!("{code} without a Location")))?;
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(server(&url, format!("more than {MAX_REDIRECTS} redirects")));
            }
            url = url.redirect(location)?;
            continue;
        }
        break resp;
    };
    let code = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // Where the body starts and how large the whole bundle is.
    let (start, size) = match code {
        StatusCode::OK => {
            let len = header("content-length")
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or_else(|| {
                    server(
                        &url,
                        "no Content-Length: cannot check the free space".into(),
                    )
                })?;
            (0, len)
        }
        StatusCode::PARTIAL_CONTENT => {
            let range = header("content-range").unwrap_or_default();
            let (a, _, total) = super::service::parse_content_range(&range)
                .map_err(|_| server(&url, format!("206 with Content-Range {range:?}")))?;
            (a, total)
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // The staged file is as long as the server's (complete), or longer (another file).
            if let Some(s) = &staged {
                let s = finish(staging, s.upload.clone()).await?;
                if s.complete {
                    return Ok(Step::Done(s));
                }
            }
            staging.clear()?;
            return retry(format!(
                "{}: the server refused bytes from {offset}",
                url.path
            ));
        }
        c if c.is_server_error() || c == StatusCode::TOO_MANY_REQUESTS => {
            return retry(format!("{}: {c}", url.path));
        }
        c => return Err(server(&url, format!("answered {c}"))),
    };
    if start != offset && start != 0 {
        return Err(server(
            &url,
            format!("asked for bytes from {offset}, got them from {start}"),
        ));
    }
    let upload = Upload::new(sha256, size)?;
    if staged.as_ref().is_some_and(|s| s.upload.size != size) {
        // Same digest, another size: what was staged cannot be this bundle.
        staging.clear()?;
    }
    if start == 0 && offset > 0 {
        progress("the server does not resume downloads; starting again".into());
        staging.clear()?;
    }
    let mut file = staging.begin(&upload, start)?;
    if start == 0 {
        progress(format!(
            "downloading {} ({:.1} MiB)",
            start_url.path.rsplit('/').next().unwrap_or(""),
            size as f64 / (1 << 20) as f64
        ));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut at = start;
    let mut shown = start;
    let mut dropped = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                dropped = Some(e.to_string());
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if at + (buf.len() + data.len()) as u64 > size {
            return Err(server(
                &url,
                format!("sent more than the {size} bytes it announced"),
            ));
        }
        buf.extend_from_slice(&data);
        if buf.len() >= WRITE_CHUNK {
            at += buf.len() as u64;
            (file, buf) = write_chunk(file, buf).await?;
            if at - shown >= 8 << 20 {
                shown = at;
                progress(format!(
                    "downloaded {:.1} of {:.1} MiB",
                    at as f64 / (1 << 20) as f64,
                    size as f64 / (1 << 20) as f64
                ));
            }
        }
    }
    at += buf.len() as u64;
    (file, _) = write_chunk(file, buf).await?;
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| stage_io("syncing the staged bundle", std::io::Error::other(e)))?
        .map_err(|e| stage_io("syncing the staged bundle", e))?;
    if let Some(e) = dropped {
        return retry(format!("connection lost after {at} of {size} bytes: {e}"));
    }
    if at < size {
        return retry(format!("the body ended after {at} of {size} bytes"));
    }
    Ok(Step::Done(finish(staging, upload).await?))
}

/// [`Staging::finish`] (which hashes the whole staged file) off the runtime thread, which
/// also serves the API.
async fn finish(staging: &Staging, upload: Upload) -> Result<Staged, FetchError> {
    let staging = staging.clone();
    let s = tokio::task::spawn_blocking(move || staging.finish(&upload))
        .await
        .map_err(|e| stage_io("checking the bundle", std::io::Error::other(e)))??;
    Ok(s)
}

fn server(url: &HttpsUrl, message: String) -> FetchError {
    FetchError::Server {
        url: format!("{}{}", url.origin, url.path),
        message,
    }
}

fn stage_io(what: &str, source: std::io::Error) -> FetchError {
    FetchError::Stage(StageError::Io {
        what: what.into(),
        source,
    })
}

async fn write_chunk(mut file: File, buf: Vec<u8>) -> Result<(File, Vec<u8>), FetchError> {
    tokio::task::spawn_blocking(move || {
        file.write_all(&buf)?;
        let mut buf = buf;
        buf.clear();
        Ok::<_, std::io::Error>((file, buf))
    })
    .await
    .map_err(|e| stage_io("writing the staged bundle", std::io::Error::other(e)))?
    .map_err(|e| stage_io("writing the staged bundle", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://example.com:8443/b/update.cairnb?x=1").unwrap();
        assert_eq!(u.origin, "https://example.com:8443");
        assert_eq!(u.path, "/b/update.cairnb?x=1");
        assert_eq!(HttpsUrl::parse("https://h").unwrap().path, "/");
        for bad in [
            "http://h/x",
            "ftp://h",
            "https:///x",
            "https://u@h/x",
            "https://h/a b",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
        let r = u.redirect("/other").unwrap();
        assert_eq!(
            (r.origin.as_str(), r.path.as_str()),
            ("https://example.com:8443", "/other")
        );
        let r = u.redirect("https://cdn.example.net/o").unwrap();
        assert_eq!(r.origin, "https://cdn.example.net");
        assert!(u.redirect("http://cdn.example.net/o").is_err());
    }

    #[test]
    fn roots_need_a_certificate() {
        let err = trusted_roots("/nonexistent", None).unwrap_err().to_string();
        assert!(err.contains("no CA certificates"), "{err}");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(trusted_roots("/nonexistent", Some(pem)).is_ok());
    }
}
