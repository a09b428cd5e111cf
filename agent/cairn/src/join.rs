//! Joining a cluster with a server URL and a join token: kubelet TLS bootstrapping, with the
//! CA pinned by the token as K3s does it.
//!
//! 1. **Trust.** The server's `/cacerts` is fetched without trusting anything yet, and must
//!    hash to the token's pin; from then on only that CA is trusted (kept in
//!    `DATA/agent/tls/ca.crt`).
//! 2. **Identity.** The node's key (`node.key`, ECDSA P-256) is made once and kept on the data
//!    partition: the same machine keeps its identity across restarts and reinstalls that
//!    keep the data. Its SHA-256 goes on the Node, so the server can tell the machine that
//!    holds a name from another one asking for it.
//! 3. **Certificate.** With the token as its credential the node files a
//!    CertificateSigningRequest for `CN=system:node:<name>, O=system:nodes`; the server's
//!    approver and signer answer it (or an administrator does, with `kubectl certificate
//!    approve`), and `node.crt` is what the node then uses for everything.
//!
//! A node that already holds a valid certificate for this CA and name skips straight to it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hyper::{Method, StatusCode};
use serde_json::json;
use thiserror::Error;

use crate::client::{Client, ClientError};
use crate::pki;
use crate::token::JoinToken;

/// How often a pending request is looked at.
const POLL: Duration = Duration::from_secs(1);
/// A certificate closer than this to its end is replaced by a new request.
pub const RENEW_BEFORE: Duration = pki::RENEW_BEFORE;

#[derive(Debug, Error)]
pub enum JoinError {
    #[error(
        "the server at {url} has CA sha256 {got}, but the join token pins {want}: wrong \
             server, or a token from another cluster"
    )]
    CaMismatch {
        url: String,
        got: String,
        want: String,
    },
    #[error(
        "the server refused the join token ({0}): check the token, or make a new one on \
             the server with `cairn token create`"
    )]
    TokenRefused(String),
    #[error("certificatesigningrequest {name} was denied: {message}")]
    Denied { name: String, message: String },
    #[error("certificatesigningrequest {name} failed: {message}")]
    Failed { name: String, message: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Where a joined node keeps its credentials (`DATA/agent/tls`).
pub struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    pub fn new(dir: &Path) -> Credentials {
        Credentials {
            dir: dir.to_path_buf(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn read(&self, name: &str) -> Result<Option<String>, JoinError> {
        pki::files::read_optional(&self.path(name)).map_err(|e| self.err(name, e))
    }
    fn write(&self, name: &str, text: &str, mode: u32) -> Result<(), JoinError> {
        pki::files::create_private_dir(&self.dir).map_err(|e| self.err(".", e))?;
        pki::write_atomic(&self.path(name), text.as_bytes(), mode).map_err(|e| self.err(name, e))
    }
    fn err(&self, name: &str, e: impl std::fmt::Display) -> JoinError {
        JoinError::File {
            path: self.path(name),
            message: e.to_string(),
        }
    }
}

/// A joined node: its client of the server, and its key's SHA-256.
pub struct Joined {
    pub client: Client,
    pub key_id: String,
}

/// Joins `server` as node `name` with `token`, printing progress on stderr.
pub async fn join(
    server: &str,
    token: &JoinToken,
    name: &str,
    creds: &Credentials,
) -> Result<Joined, JoinError> {
    let ca = trusted_ca(server, token, creds).await?;
    let key = match creds.read("node.key")? {
        Some(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| creds.err("node.key", e))?,
        None => new_key(creds)?,
    };
    let key_id = key_id(&key);
    let key_pem = key.serialize_pem();
    if let Some(cert) = creds.read("node.crt")? {
        let pair = pki::PemPair {
            cert: cert.clone(),
            key: key_pem.clone(),
        };
        let valid = pki::client_ok(&ca, &pair, SystemTime::now(), RENEW_BEFORE).is_ok();
        if valid && certificate_user(&cert).as_deref() == Some(&*format!("system:node:{name}")) {
            let client = Client::new(
                server,
                &ca,
                Some((cert.into_bytes(), key_pem.into_bytes())),
                None,
            )
            .map_err(|e| creds.err("node.crt", e))?;
            eprintln!(
                "cairn: node {name}: using its certificate in {}",
                creds.dir.display()
            );
            return Ok(Joined { client, key_id });
        }
    }
    let bootstrap = Client::new(server, &ca, None, Some(token.credential.clone()))
        .map_err(|e| creds.err("ca.crt", e))?;
    let (key, cert) = match request_certificate(&bootstrap, name, &key).await {
        // A refused request is final for its key: the next attempt comes with a new one.
        Err(e @ (JoinError::Denied { .. } | JoinError::Failed { .. })) => {
            new_key(creds)?;
            return Err(e);
        }
        other => (key, other?),
    };
    creds.write("node.crt", &cert, 0o644)?;
    let client = Client::new(
        server,
        &ca,
        Some((cert.into_bytes(), key.serialize_pem().into_bytes())),
        None,
    )
    .map_err(|e| creds.err("node.crt", e))?;
    eprintln!("cairn: joined {server} as node {name}");
    Ok(Joined { client, key_id })
}

/// The user a PEM client certificate names (its common name).
fn certificate_user(pem: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    cairn_apiserver::auth::user_from_certificate(&der)
        .ok()
        .map(|u| u.name)
}

fn new_key(creds: &Credentials) -> Result<rcgen::KeyPair, JoinError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| creds.err("node.key", e))?;
    creds.write("node.key", &key.serialize_pem(), 0o600)?;
    Ok(key)
}

/// Hex SHA-256 of the public key (what the CSR approver compares).
pub fn key_id(key: &rcgen::KeyPair) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.public_key_raw())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CA the token pins: the stored copy if it still matches, else the server's
/// `/cacerts`, checked against the pin.
async fn trusted_ca(
    server: &str,
    token: &JoinToken,
    creds: &Credentials,
) -> Result<String, JoinError> {
    if let Some(ca) = creds.read("ca.crt")? {
        if token.pins(&ca) {
            return Ok(ca);
        }
    }
    let probe = Client::unverified(server).map_err(|e| {
        JoinError::Client(ClientError::Connect {
            url: server.to_owned(),
            message: e,
        })
    })?;
    let (code, body) = probe.get_raw("/cacerts").await?;
    if code != StatusCode::OK {
        return Err(JoinError::Client(ClientError::Status {
            method: Method::GET,
            path: "/cacerts".into(),
            code,
            message: "the server does not publish its CA; is it a Cairn server?".into(),
        }));
    }
    let ca = String::from_utf8_lossy(&body).into_owned();
    if !token.pins(&ca) {
        return Err(JoinError::CaMismatch {
            url: server.to_owned(),
            got: crate::token::ca_hash(&ca),
            want: token.ca_hash.clone(),
        });
    }
    creds.write("ca.crt", &ca, 0o644)?;
    Ok(ca)
}

/// Files (or finds) the request for `key` and waits for its certificate.
async fn request_certificate(
    client: &Client,
    name: &str,
    key: &rcgen::KeyPair,
) -> Result<String, JoinError> {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let pem = params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(|e| JoinError::File {
            path: "node.key".into(),
            message: e.to_string(),
        })?;
    // One request per key: a restart finds the request it filed before.
    let csr_name = format!("node-csr-{}", &key_id(key)[..20]);
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    });
    match client.request(Method::POST, csrs, Some(&body)).await {
        Ok(_) => {
            eprintln!("cairn: asked for a node certificate: certificatesigningrequest {csr_name}")
        }
        Err(ClientError::Status { code, .. }) if code == StatusCode::CONFLICT => {}
        Err(ClientError::Status { code, message, .. }) if code == StatusCode::UNAUTHORIZED => {
            return Err(JoinError::TokenRefused(if message.is_empty() {
                "401 Unauthorized".into()
            } else {
                message
            }))
        }
        Err(e) => return Err(e.into()),
    }
    let path = format!("{csrs}/{csr_name}");
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let csr = client.request(Method::GET, &path, None).await?;
        if let Some(cert) = csr["status"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
        {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(cert)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| JoinError::Failed {
                    name: csr_name.clone(),
                    message: "status.certificate is not a base64 PEM certificate".into(),
                })?;
            return Ok(pem);
        }
        let condition = |kind: &str| -> Option<String> {
            csr["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == kind)
                .map(|c| c["message"].as_str().unwrap_or("").to_owned())
        };
        if let Some(message) = condition("Denied") {
            return Err(JoinError::Denied {
                name: csr_name,
                message,
            });
        }
        if let Some(message) = condition("Failed") {
            return Err(JoinError::Failed {
                name: csr_name,
                message,
            });
        }
        let waiting = match condition("NameInUse") {
            Some(message) => format!("waiting for approval: {message}"),
            None if started.elapsed() > Duration::from_secs(10) => format!(
                "waiting for certificatesigningrequest {csr_name} to be approved and signed \
                 (kubectl certificate approve {csr_name})"
            ),
            None => String::new(),
        };
        if !waiting.is_empty() && waiting != said {
            eprintln!("cairn: {waiting}");
            said = waiting;
        }
        tokio::time::sleep(POLL).await;
    }
}
