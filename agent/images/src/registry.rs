//! Pulling images from a registry (the distribution HTTP API v2).
//!
//! Blocking calls over a private single-thread tokio runtime and hyper's HTTP/1.1 client,
//! one connection per request, TLS by rustls (ring) trusting the system CA bundle plus an
//! optional CA. Authentication answers the registry's `WWW-Authenticate` challenge: a
//! Bearer token from the realm it names (anonymous, or with Basic credentials), or Basic
//! credentials directly. Layers stream from the response body through the hashers into the
//! unpacker; nothing holds a whole layer in memory.
//!
//! The runtime is created per pull: call these functions from a blocking thread
//! (`tokio::task::spawn_blocking`), not from inside an async task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT,
    WWW_AUTHENTICATE,
};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::oci::Descriptor;
use crate::reference::{is_digest, Reference};
use crate::store::{plan, record_plans, store_plans, verify_blob, BlobSource, MAX_DOCUMENT};
use crate::stream::sha256_digest;
use crate::{Error, Image, Store};

/// Where Debian (and every Cairn image) keeps the CA certificates it trusts.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The registry behind `docker.io` references.
const DOCKER_HUB: &str = "registry-1.docker.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a response's headers or for the next piece of its body.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;
const USER_AGENT_VALUE: &str = concat!("cairn/", env!("CARGO_PKG_VERSION"));
/// Every manifest kind the store reads, for `Accept`.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions<'a> {
    /// Credentials, for Basic auth or to get a Bearer token.
    pub credentials: Option<&'a Credentials>,
    /// A CA (PEM, one or more certificates) trusted in addition to the system bundle.
    pub ca_pem: Option<&'a [u8]>,
    /// Plain HTTP instead of HTTPS. Only for registries configured as insecure: nothing
    /// on the wire is protected (digests still are checked).
    pub plain_http: bool,
}

impl Store {
    /// Pulls `reference` over HTTPS for the node's platform and returns it as
    /// [`Store::resolve`] would. See [`Store::pull_with`].
    pub fn pull(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Image, Error> {
        self.pull_with(
            reference,
            &PullOptions {
                credentials: auth,
                ca_pem,
                plain_http: false,
            },
        )
    }

    /// Pulls `reference` (tag or digest): its index or manifest, the node platform's
    /// manifest and config, and the layers not in the store yet, each verified by digest
    /// while it streams into the unpacker. Stored under the normalised reference
    /// (`registry/repo:tag`, or `registry/repo@sha256:...` when pulled by digest).
    /// All or nothing, like an import. The store's writer lock is held while the layers
    /// download, so imports and other pulls wait; [`Store::resolve`] does not.
    pub fn pull_with(&self, reference: &str, options: &PullOptions<'_>) -> Result<Image, Error> {
        let parsed = Reference::parse(reference)?;
        let key = parsed.to_string();
        let mut client = Client::new(&parsed, options)?;
        let (bytes, media_type) = client.manifest(parsed.manifest_ref(), &key)?;
        let top = Descriptor {
            media_type,
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        if let Some(pinned) = &parsed.digest {
            if pinned != &top.digest {
                return Err(Error::DigestMismatch {
                    what: format!("{key}: manifest from {}", client.registry),
                    expected: pinned.clone(),
                    actual: top.digest,
                });
            }
        }
        let mut source = RegistryBlobs {
            client: &mut client,
            fetched: HashMap::from([(top.digest.clone(), bytes)]),
        };
        let plan = plan(self.platform(), &mut source, &key, &top)?;

        let mut txn = self.begin()?;
        let mut seen = HashSet::new();
        let mut new_layers = HashSet::new();
        for (diff_id, desc) in plan.diff_ids.iter().zip(&plan.layers) {
            if txn.has_layer(diff_id) || !seen.insert(diff_id.clone()) {
                continue;
            }
            let what = format!("{key}: layer {}", desc.digest);
            let registry = client.registry.clone();
            let mut body = client.blob(&desc.digest, &what)?;
            let bad = |reason: String| Error::Registry {
                registry: registry.clone(),
                message: reason,
            };
            txn.receive_layer(diff_id, Some(desc), &what, &mut body, &bad)?;
            new_layers.insert(diff_id.clone());
        }
        let plans = vec![plan];
        store_plans(&mut txn, &plans)?;
        record_plans(&mut txn, plans, &new_layers);
        txn.commit()?;
        self.resolve(&key)
    }
}

/// Index, manifest and config blobs from the registry.
struct RegistryBlobs<'c> {
    client: &'c mut Client,
    fetched: HashMap<String, Vec<u8>>,
}

impl BlobSource for RegistryBlobs<'_> {
    fn fetch(&mut self, desc: &Descriptor, what: &str, manifest: bool) -> Result<Vec<u8>, Error> {
        let bytes = match self.fetched.remove(&desc.digest) {
            Some(bytes) => bytes,
            None if manifest => self.client.manifest(&desc.digest, what)?.0,
            None => {
                let mut body = self.client.blob(&desc.digest, what)?;
                let mut bytes = Vec::new();
                (&mut body)
                    .take(MAX_DOCUMENT + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.client.error(format!("{what}: {e}")))?;
                bytes
            }
        };
        verify_blob(
            desc,
            &format!("{what} from {}", self.client.registry),
            &bytes,
        )?;
        Ok(bytes)
    }
}

/// A URL the client can fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    /// Host as in the URL (brackets kept for IPv6).
    host: String,
    port: u16,
    path_and_query: String,
}

impl Url {
    fn parse(s: &str) -> Result<Url, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{s:?}: not an http(s) URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{s:?}: no host"))?;
        Ok(Url {
            https,
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path_and_query: uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_owned()),
        })
    }

    /// `Location` relative to this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!(
                "{}:{location}",
                if self.https { "https" } else { "http" }
            ));
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path_and_query.split('?').next().unwrap_or("/");
            let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{location}")
        };
        Ok(Url {
            path_and_query: path,
            ..self.clone()
        })
    }

    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.host_port()
        )
    }

    fn host_port(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn same_origin(&self, other: &Url) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    url: Url,
}

/// A registry client for one repository.
struct Client {
    rt: tokio::runtime::Runtime,
    tls: TlsConnector,
    /// The registry as the reference names it (for messages).
    registry: String,
    base: Url,
    repository: String,
    credentials: Option<Credentials>,
    /// `Authorization` for the registry's own origin, once a challenge was answered.
    authorization: Option<String>,
}

impl Client {
    fn new(reference: &Reference, options: &PullOptions<'_>) -> Result<Client, Error> {
        let registry = reference.registry.clone();
        let error = |message: String| Error::Registry {
            registry: registry.clone(),
            message,
        };
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            DOCKER_HUB.to_owned()
        } else {
            registry.clone()
        };
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{host}/")).map_err(&error)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| error(format!("starting the HTTP client: {e}")))?;
        let tls = tls_config(options.ca_pem).map_err(&error)?;
        Ok(Client {
            rt,
            tls: TlsConnector::from(tls),
            registry,
            base,
            repository: reference.repository.clone(),
            credentials: options.credentials.cloned(),
            authorization: None,
        })
    }

    fn error(&self, message: String) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            message,
        }
    }

    /// A manifest (or index) by tag or digest: its bytes and media type.
    fn manifest(&mut self, reference: &str, what: &str) -> Result<(Vec<u8>, String), Error> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let resp = self.get(&path, Some(MANIFEST_TYPES))?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                let detail = self.error_text(resp);
                return Err(Error::NotInRegistry {
                    reference: what.to_owned(),
                    registry: self.registry.clone(),
                    detail,
                });
            }
            _ => return Err(self.status_error(what, resp)),
        }
        let media_type = resp
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let announced = resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = self.read_all(resp, MAX_DOCUMENT, what)?;
        let actual = sha256_digest(&bytes);
        let expected = announced
            .filter(|d| is_digest(d))
            .or_else(|| is_digest(reference).then(|| reference.to_owned()));
        if let Some(expected) = expected {
            if expected != actual {
                return Err(Error::DigestMismatch {
                    what: format!("{what}: manifest {reference} from {}", self.registry),
                    expected,
                    actual,
                });
            }
        }
        Ok((bytes, media_type))
    }

    /// A blob's body, to be read as it arrives.
    fn blob(&mut self, digest: &str, what: &str) -> Result<BodyReader<'_>, Error> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let resp = self.get(&path, None)?;
        if resp.status != StatusCode::OK {
            return Err(self.status_error(what, resp));
        }
        Ok(BodyReader {
            rt: &self.rt,
            body: resp.body,
            chunk: Bytes::new(),
        })
    }

    /// GET `path` on the registry, answering one authentication challenge and following
    /// redirects (credentials go to the registry's own origin only).
    fn get(&mut self, path: &str, accept: Option<&str>) -> Result<Response, Error> {
        let mut url = self.base.join(path).map_err(|e| self.error(e))?;
        let mut answered = false;
        let mut redirects = 0;
        loop {
            let auth = if url.same_origin(&self.base) {
                self.authorization.clone()
            } else {
                None
            };
            let resp = self.send(&url, accept, auth.as_deref())?;
            if resp.status == StatusCode::UNAUTHORIZED && url.same_origin(&self.base) && !answered {
                let challenge = resp
                    .headers
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let Some(challenge) = challenge else {
                    return Err(
                        self.unauthorized("401 without a WWW-Authenticate challenge".into())
                    );
                };
                self.answer(&challenge)?;
                answered = true;
                continue;
            }
            if resp.status == StatusCode::UNAUTHORIZED {
                let text = self.error_text(resp);
                let why = if self.credentials.is_some() {
                    "the credentials were refused"
                } else {
                    "the registry wants credentials"
                };
                return Err(self.unauthorized(format!("{why}: {text}")));
            }
            if resp.status.is_redirection() {
                let location = resp
                    .headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.error(format!("{} without Location", resp.status)))?;
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(
                        self.error(format!("more than {MAX_REDIRECTS} redirects for {path}"))
                    );
                }
                url = url.join(location).map_err(|e| self.error(e))?;
                continue;
            }
            return Ok(resp);
        }
    }

    fn unauthorized(&self, message: String) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            message,
        }
    }

    /// Sets `authorization` from a `WWW-Authenticate` challenge.
    fn answer(&mut self, challenge: &str) -> Result<(), Error> {
        let (scheme, params) = parse_challenge(challenge)
            .ok_or_else(|| self.unauthorized(format!("unreadable challenge {challenge:?}")))?;
        let basic = self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        });
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let basic = basic.ok_or_else(|| {
                    self.unauthorized("the registry wants credentials (Basic auth)".into())
                })?;
                self.authorization = Some(basic);
                Ok(())
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    self.unauthorized(format!("Bearer challenge without realm: {challenge:?}"))
                })?;
                let mut realm_url =
                    Url::parse(realm).map_err(|e| self.unauthorized(format!("token realm {e}")))?;
                // Credentials never go over plain HTTP for a registry reached over HTTPS.
                if self.base.https && !realm_url.https {
                    return Err(self.unauthorized(format!("token realm {realm} is not https")));
                }
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut query = Vec::new();
                if let Some(service) = params.get("service") {
                    query.push(format!("service={}", percent_encode(service)));
                }
                query.push(format!("scope={}", percent_encode(&scope)));
                let sep = if realm_url.path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                realm_url.path_and_query =
                    format!("{}{sep}{}", realm_url.path_and_query, query.join("&"));
                let resp = self.send(&realm_url, Some("application/json"), basic.as_deref())?;
                if resp.status == StatusCode::UNAUTHORIZED || resp.status == StatusCode::FORBIDDEN {
                    let text = self.error_text(resp);
                    let why = if basic.is_some() {
                        "the token service refused the credentials"
                    } else {
                        "the token service wants credentials"
                    };
                    return Err(self.unauthorized(format!("{why}: {text}")));
                }
                if resp.status != StatusCode::OK {
                    return Err(self.status_error("token request", resp));
                }
                let body = self.read_all(resp, 1 << 20, "token response")?;
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let token: Token = serde_json::from_slice(&body)
                    .map_err(|e| self.unauthorized(format!("token response: {e}")))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.unauthorized("the token response has no token".into()))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(self.unauthorized(format!("unsupported authentication scheme {other:?}"))),
        }
    }

    /// One request on a new connection; the response's body is left to read.
    fn send(&self, url: &Url, accept: Option<&str>, auth: Option<&str>) -> Result<Response, Error> {
        let what = format!("{}{}", url.origin(), url.path_and_query);
        let fut = async {
            let host = url.host.trim_start_matches('[').trim_end_matches(']');
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, url.port)))
                .await
                .map_err(|_| format!("connecting to {}: timed out", url.origin()))?
                .map_err(|e| format!("connecting to {}: {e}", url.origin()))?;
            let _ = tcp.set_nodelay(true);
            let mut request = Request::get(url.path_and_query.as_str())
                .header(HOST, url.host_port())
                .header(USER_AGENT, USER_AGENT_VALUE);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(auth) = auth {
                let mut value =
                    HeaderValue::from_str(auth).map_err(|e| format!("authorization: {e}"))?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("{what}: {e}"))?;
            let response = if url.https {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{}: {e}", url.host))?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
                    .await
                    .map_err(|_| format!("TLS handshake with {}: timed out", url.origin()))?
                    .map_err(|e| format!("TLS handshake with {}: {e}", url.origin()))?;
                roundtrip(TokioIo::new(tls), request).await
            } else {
                roundtrip(TokioIo::new(tcp), request).await
            };
            response.map_err(|e| format!("GET {what}: {e}"))
        };
        let response = self.rt.block_on(fut).map_err(|e| self.error(e))?;
        let (parts, body) = response.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            url: url.clone(),
        })
    }

    /// A whole (small) body.
    fn read_all(&self, resp: Response, limit: u64, what: &str) -> Result<Vec<u8>, Error> {
        let mut reader = BodyReader {
            rt: &self.rt,
            body: resp.body,
            chunk: Bytes::new(),
        };
        let mut bytes = Vec::new();
        (&mut reader)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(self.error(format!("{what}: larger than {limit} bytes")));
        }
        Ok(bytes)
    }

    /// The registry's error text from a failed response (its `errors[].message`, else the
    /// start of the body).
    fn error_text(&self, resp: Response) -> String {
        let status = resp.status;
        let body = self
            .read_all(resp, 64 * 1024, "error body")
            .unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let text = match serde_json::from_slice::<Errors>(&body) {
            Ok(e) if !e.errors.is_empty() => e
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned(),
        };
        if text.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {text}")
        }
    }

    fn status_error(&self, what: &str, resp: Response) -> Error {
        let url = format!("{}{}", resp.url.origin(), resp.url.path_and_query);
        let text = self.error_text(resp);
        self.error(format!("{what}: GET {url}: {text}"))
    }
}

async fn roundtrip<T>(
    io: TokioIo<T>,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| "no response: timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// A response body as a blocking reader (each read drives the runtime until data arrives).
struct BodyReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    body: Incoming,
    chunk: Bytes,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let frame = self
                .rt
                .block_on(async { tokio::time::timeout(IDLE_TIMEOUT, self.body.frame()).await })
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the registry stopped sending")
                })?;
            match frame {
                None => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

/// TLS settings: the system CA bundle (when present) plus `ca_pem`.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if let Ok(bundle) = std::fs::read(SYSTEM_CA_BUNDLE) {
        let certs = CertificateDer::pem_slice_iter(&bundle).flatten();
        let _ = roots.add_parsable_certificates(certs);
    }
    if let Some(pem) = ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the registry CA: {e}"))?;
        if certs.is_empty() {
            return Err("the registry CA has no PEM certificate".into());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("the registry CA: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA to trust: {SYSTEM_CA_BUNDLE} is missing and no registry CA was given"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `Bearer realm="...",service="...",scope="..."` → scheme and parameters.
fn parse_challenge(header: &str) -> Option<(String, BTreeMap<String, String>)> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(' ') {
        Some((s, r)) => (s, r.trim()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, c)) = chars.next() {
                            value.push(c);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_owned(), params))
}

/// Percent-encoding for a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry \"x\" Realm""#).unwrap();
        assert_eq!(scheme, "Basic");
        assert_eq!(p["realm"], r#"Registry "x" Realm"#);
        let (_, p) = parse_challenge("Bearer realm=https://a/t, service=s").unwrap();
        assert_eq!(
            (p["realm"].as_str(), p["service"].as_str()),
            ("https://a/t", "s")
        );
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn urls() {
        let base = Url::parse("https://127.0.0.1:5000/").unwrap();
        assert_eq!(
            (base.host.as_str(), base.port, base.https),
            ("127.0.0.1", 5000, true)
        );
        let blob = base.join("/v2/x/blobs/sha256:ab").unwrap();
        assert_eq!(blob.path_and_query, "/v2/x/blobs/sha256:ab");
        assert!(blob.same_origin(&base));
        let cdn = blob.join("https://cdn.example/blob?sig=1").unwrap();
        assert!(!cdn.same_origin(&base));
        assert_eq!(
            (cdn.port, cdn.path_and_query.as_str()),
            (443, "/blob?sig=1")
        );
        assert_eq!(
            blob.join("other").unwrap().path_and_query,
            "/v2/x/blobs/other"
        );
        assert_eq!(Url::parse("http://[::1]:80/").unwrap().host_port(), "[::1]");
        assert!(Url::parse("ftp://x/").is_err());
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
