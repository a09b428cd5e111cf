//! A small HTTPS client for the Kubernetes API, configured from a kubeconfig: what `cairn
//! token` (and later the agent) use to talk to a server.
//!
//! One request per connection (HTTP/1.1), JSON in and out, rustls with only the kubeconfig's
//! CA trusted. Kubeconfigs with embedded data (`certificate-authority-data`,
//! `client-certificate-data`/`client-key-data`, or `token`) are understood, which is what
//! `cairn server` writes; file references and exec plugins are refused with a clear error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::pki;

/// How long connecting and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    /// The TLS handshake failed on what the peer presented (an untrusted or wrong
    /// certificate): trying again does not help.
    #[error("connecting to {url}: TLS: {message}")]
    Tls { url: String, message: String },
    #[error("{method} {path}: {message}")]
    Request {
        method: Method,
        path: String,
        message: String,
    },
    /// The server answered with a failure `Status`.
    #[error("{method} {path}: {code}: {message}")]
    Status {
        method: Method,
        path: String,
        code: StatusCode,
        message: String,
    },
}

/// The parts of a kubeconfig this client reads.
#[derive(Debug, Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct UserEntry {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// An API client for one server.
#[derive(Clone)]
pub struct Client {
    /// `https://host:port`, no trailing slash.
    url: String,
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
    token: Option<String>,
    ca_pem: String,
}

impl Client {
    /// A client for the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Client, ClientError> {
        let err = |message: String| ClientError::Kubeconfig {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: Kubeconfig = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .ok_or_else(|| err(format!("no context {:?}", config.current_context)))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| err(format!("no cluster {:?}", context.value.cluster)))?;
        let user = config
            .users
            .iter()
            .find(|u| u.name == context.value.user)
            .map(|u| &u.value);
        let decode = |what: &str, data: &str| {
            STANDARD
                .decode(data.trim())
                .map_err(|e| err(format!("{what}: {e}")))
        };
        let ca = cluster
            .value
            .ca_data
            .as_deref()
            .ok_or_else(|| err("the cluster has no certificate-authority-data".into()))?;
        let ca = String::from_utf8(decode("certificate-authority-data", ca)?)
            .map_err(|_| err("certificate-authority-data is not PEM".into()))?;
        let identity = match user {
            Some(UserEntry {
                cert_data: Some(cert),
                key_data: Some(key),
                ..
            }) => Some((
                decode("client-certificate-data", cert)?,
                decode("client-key-data", key)?,
            )),
            _ => None,
        };
        let token = user.and_then(|u| u.token.clone());
        Client::new(&cluster.value.server, &ca, identity, token).map_err(err)
    }

    /// A client for `url` trusting `ca_pem`, with an optional client certificate and key (PEM)
    /// and an optional bearer token.
    pub fn new(
        url: &str,
        ca_pem: &str,
        identity: Option<(Vec<u8>, Vec<u8>)>,
        token: Option<String>,
    ) -> Result<Client, String> {
        let (rest, host, port) = split_url(url)?;
        let roots = pki::roots(ca_pem)?;
        let builder = ClientConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let tls = with_identity(builder, identity)?;
        Ok(Client {
            url: format!("https://{rest}"),
            host,
            port,
            tls: Arc::new(tls),
            token,
            ca_pem: ca_pem.to_owned(),
        })
    }

    /// A client for `url` that accepts whatever certificate the server presents: only for
    /// fetching `/cacerts`, whose answer the caller then checks against a pinned hash.
    pub fn unverified(url: &str) -> Result<Client, String> {
        Client::any_server(url, None)
    }

    /// A client for a kubelet at `url`: presents `identity` (certificate and key, PEM) and
    /// accepts the kubelet's self-made serving certificate (see [`crate::nodeproxy`]).
    pub fn to_kubelet(url: &str, identity: (Vec<u8>, Vec<u8>)) -> Result<Client, String> {
        Client::any_server(url, Some(identity))
    }

    /// A client that does not verify the server's certificate, with an optional client
    /// certificate and key (PEM).
    fn any_server(url: &str, identity: Option<(Vec<u8>, Vec<u8>)>) -> Result<Client, String> {
        let (rest, host, port) = split_url(url)?;
        Ok(Client {
            url: format!("https://{rest}"),
            host,
            port,
            tls: Arc::new(unverified_tls(identity)?),
            token: None,
            ca_pem: String::new(),
        })
    }

    /// GET of `path`: the status and the raw body (for answers that are not JSON).
    pub async fn get_raw(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(&Method::GET, path, None))
            .await
            .map_err(|_| ClientError::Request {
                method: Method::GET,
                path: path.to_owned(),
                message: format!("no answer within {REQUEST_TIMEOUT:?}"),
            })?
    }

    /// The CA certificate (PEM) this client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request; a 2xx answer's JSON body, or the failure `Status` message as an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let req_err = |message: String| ClientError::Request {
            method: method.clone(),
            path: path.to_owned(),
            message,
        };
        let (code, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, self.send(&method, path, body))
            .await
            .map_err(|_| req_err(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                req_err(format!(
                    "{code}: the answer is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            })?
        };
        if code.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Status {
                method,
                path: path.to_owned(),
                code,
                message: value["message"].as_str().unwrap_or("").to_owned(),
            })
        }
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = Vec::new();
        if body.is_some() {
            // A PATCH body is a JSON merge patch (pod status, Node labels).
            let kind = if *method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            headers.push(("content-type", kind.to_owned()));
        }
        let resp = self
            .call(
                method.clone(),
                path,
                &headers,
                Full::new(Bytes::from(payload)),
            )
            .await?;
        let code = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Request {
                method: method.clone(),
                path: path.to_owned(),
                message: e.to_string(),
            })?
            .to_bytes();
        Ok((code, bytes))
    }

    /// Sends one request with any body and extra `headers`; the answer as it arrives, whatever
    /// its status (streamed bodies such as uploads and progress lines). No overall timeout.
    pub async fn call<B>(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: B,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let connect_err = |message: String| ClientError::Connect {
            url: self.url.clone(),
            message,
        };
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| connect_err(e.to_string()))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    let rejected = e
                        .get_ref()
                        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
                    if rejected {
                        ClientError::Tls {
                            url: self.url.clone(),
                            message: e.to_string(),
                        }
                    } else {
                        connect_err(e.to_string())
                    }
                })
        })
        .await
        .map_err(|_| connect_err(format!("timed out after {CONNECT_TIMEOUT:?}")))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // With upgrades: a `101` answer hands the connection to `hyper::upgrade::on`.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("accept", "application/json")
            .header("user-agent", concat!("cairn/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(body).map_err(|e| connect_err(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request {
                method,
                path: path.to_owned(),
                message: e.to_string(),
            })
    }
}

/// `https://host[:port][/]` as (host:port text, host, port).
fn split_url(url: &str) -> Result<(String, String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {url:?} is not an https:// URL"))?
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("server {url:?}: bad port"))?,
        ),
        _ => (rest, 443),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((rest.to_owned(), host, port))
}

/// Accepts any server certificate (signatures are still checked, so the handshake itself is
/// sound); see [`Client::unverified`].
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Finishes a TLS client configuration with a client certificate and key (PEM), if given.
/// TLS that accepts any server certificate, with an optional client certificate and key
/// (PEM): for kubelets, and for HTTPS probes, which Kubernetes does not verify either.
pub fn unverified_tls(identity: Option<(Vec<u8>, Vec<u8>)>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(pki::provider())));
    with_identity(builder, identity)
}

fn with_identity(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<ClientConfig, String> {
    match identity {
        Some((cert, key)) => {
            let cert = CertificateDer::from_pem_slice(&cert).map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(vec![cert], key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubeconfig_cairn_writes() {
        let pki = crate::pki::tests::fresh_pki();
        let dir = std::env::temp_dir().join(format!("cairn-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            crate::kubeconfig::render("https://127.0.0.1:6443", &pki),
        )
        .unwrap();
        let client = Client::from_kubeconfig(&path).unwrap();
        assert_eq!(client.url(), "https://127.0.0.1:6443");
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 6443));

        std::fs::write(&path, "current-context: nope\n").unwrap();
        let err = Client::from_kubeconfig(&path).err().unwrap().to_string();
        assert!(err.contains("no context \"nope\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn urls() {
        let pki = crate::pki::tests::fresh_pki();
        let c = Client::new("https://[::1]:7443/", &pki.ca_cert, None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 7443));
        let c = Client::new("https://edge-1", &pki.ca_cert, None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("edge-1", 443));
        assert!(Client::new("http://edge-1", &pki.ca_cert, None, None).is_err());
    }
}
