//! Pulling from a real registry: Debian's `docker-registry` (distribution 2.8), started
//! here on a free loopback port with a temporary config, TLS certificate and storage, the
//! test images pushed into it with skopeo.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_images::{Credentials, Error, Platform, PullOptions, Store};
use common::*;
use rustls::pki_types::pem::PemObject as _;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry process, killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    /// PEM of the CA that signed the registry's certificate (`None` for plain HTTP).
    ca_pem: Option<String>,
    creds: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cairn test registry CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// How a test registry authenticates.
enum Auth<'a> {
    None,
    /// htpasswd file with one user.
    Basic(&'a str, &'a str),
    /// Bearer tokens from a token service: its realm URL and the certificate (PEM) its
    /// signatures are checked with, and the user that pushes.
    Token {
        realm: String,
        signer_pem: String,
        user: (&'a str, &'a str),
        /// The CA of the token service's TLS certificate, trusted along with the registry's.
        service_ca: String,
    },
}

impl Registry {
    fn start(tls: bool, auth: Auth<'_>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry (ci/install-deps.sh does)"
        );
        let dir = TempDir::new("registry");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cairn-test-secret\n",
            dir.path().join("data").display()
        );
        let mut ca_pem = None;
        if tls {
            let (ca, cert, key) = certificates();
            fs::write(dir.path().join("cert.pem"), cert).unwrap();
            fs::write(dir.path().join("key.pem"), key).unwrap();
            fs::create_dir(dir.path().join("certs")).unwrap();
            fs::write(dir.path().join("certs/ca.crt"), &ca).unwrap();
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            );
            ca_pem = Some(ca);
        }
        let mut creds = None;
        if let Auth::Token {
            realm,
            signer_pem,
            user,
            service_ca,
        } = &auth
        {
            let ca = ca_pem.as_mut().expect("token auth over TLS");
            ca.push_str(service_ca);
            fs::write(dir.path().join("certs/ca.crt"), &*ca).unwrap();
            fs::write(dir.path().join("token-signer.pem"), signer_pem).unwrap();
            config += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                dir.path().join("token-signer.pem").display()
            );
            creds = Some(*user);
        }
        if let Auth::Basic(user, password) = auth {
            creds = Some((user, password));
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apt-get install apache2-utils)");
            assert!(out.status.success());
            fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: cairn-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let mut registry = Registry {
            child,
            port,
            dir,
            ca_pem,
            creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", registry.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes an OCI archive (every platform) as `host/repo:tag` with skopeo.
    fn push(&self, archive: &Path, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--all"]);
        if self.ca_pem.is_some() {
            cmd.arg("--dest-cert-dir")
                .arg(self.dir.path().join("certs"));
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci-archive:{}", archive.display()));
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo push of {}: {}\nregistry log: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn ca(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref().map(str::as_bytes)
    }
}

/// The digest of the top-level entry of an OCI archive's index.json.
fn archive_index_digest(archive: &Path) -> String {
    let mut a = tar::Archive::new(fs::File::open(archive).unwrap());
    for entry in a.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("index.json") {
            let v: serde_json::Value = serde_json::from_reader(entry).unwrap();
            return v["manifests"][0]["digest"].as_str().unwrap().to_owned();
        }
    }
    panic!("no index.json in {}", archive.display());
}

fn store(tmp: &TempDir) -> (Store, PathBuf) {
    let root = tmp.path().join("store");
    (Store::open(&root, Platform::host()).unwrap(), root)
}

#[test]
fn pull_over_tls_by_tag_and_digest() {
    require_root();
    let images = test_images();
    let registry = Registry::start(true, Auth::None);
    let busybox_archive = images.join("busybox.oci.tar");
    registry.push(&busybox_archive, "test/busybox:latest");
    registry.push(&images.join("httpd.oci.tar"), "test/httpd:1.0");
    let tmp = TempDir::new("pull");
    let (store, root) = store(&tmp);
    let host = registry.host();

    let busybox = store
        .pull(&format!("{host}/test/busybox:latest"), None, registry.ca())
        .unwrap();
    assert_eq!(busybox.reference, format!("{host}/test/busybox:latest"));
    assert_eq!(
        busybox.digest,
        archive_index_digest(&busybox_archive),
        "the multi-arch index, as pushed"
    );
    assert_eq!(busybox.config.cmd, ["sh"]);
    let bin = busybox.layers[0].join("bin/busybox");
    assert!(bin.is_file());
    let out = Command::new(&bin)
        .args(["echo", "pulled"])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout, b"pulled\n",
        "the host platform's busybox was chosen"
    );
    assert_eq!(
        store.resolve(&format!("{host}/test/busybox")).unwrap().id,
        busybox.id
    );
    // Compressed layers are not kept; only this platform's manifest and config are.
    assert_eq!(names(&root.join("blobs/sha256")).len(), 3);

    // By digest: stored under the digest reference, nothing downloaded twice.
    let layers_before = names(&root.join("layers"));
    let pinned = format!("{host}/test/busybox@{}", busybox.digest);
    let by_digest = store.pull(&pinned, None, registry.ca()).unwrap();
    assert_eq!(by_digest.reference, pinned);
    assert_eq!(by_digest.id, busybox.id);
    assert_eq!(names(&root.join("layers")), layers_before);

    // A second image sharing the base layer.
    let httpd = store
        .pull(&format!("{host}/test/httpd:1.0"), None, registry.ca())
        .unwrap();
    assert_eq!(httpd.layers[0], busybox.layers[0]);
    assert!(httpd.layers[1].join("www/index.html").is_file());
    let before = store.list().unwrap();
    assert_eq!(before.len(), 2);

    // A missing image names the registry; an untrusted certificate fails the handshake.
    match store.pull(&format!("{host}/test/nothing:latest"), None, registry.ca()) {
        Err(e @ Error::NotInRegistry { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&host) && msg.contains("test/nothing:latest"),
                "{msg}"
            );
        }
        other => panic!("missing image: {other:?}"),
    }
    match store.pull(
        &format!("{host}/test/busybox:nosuchtag"),
        None,
        registry.ca(),
    ) {
        Err(Error::NotInRegistry { .. }) => {}
        other => panic!("missing tag: {other:?}"),
    }
    match store.pull(&format!("{host}/test/busybox:latest"), None, None) {
        Err(e @ Error::Registry { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("TLS") && msg.contains(&host), "{msg}");
        }
        other => panic!("untrusted: {other:?}"),
    }
    let bad_digest = format!("{host}/test/busybox@sha256:{}", "0".repeat(64));
    assert!(matches!(
        store.pull(&bad_digest, None, registry.ca()),
        Err(Error::NotInRegistry { .. })
    ));
    assert_eq!(store.list().unwrap(), before, "failed pulls change nothing");
    assert!(names(&root.join("tmp")).is_empty());
}

#[test]
fn pull_with_basic_auth() {
    require_root();
    let images = test_images();
    let registry = Registry::start(true, Auth::Basic("cairn", "s3cret"));
    registry.push(&images.join("busybox.oci.tar"), "private/busybox:latest");
    let tmp = TempDir::new("auth");
    let (store, _) = store(&tmp);
    let reference = format!("{}/private/busybox:latest", registry.host());

    match store.pull(&reference, None, registry.ca()) {
        Err(e @ Error::Unauthorized { .. }) => {
            assert!(e.to_string().contains("wants credentials"), "{e}")
        }
        other => panic!("no credentials: {other:?}"),
    }
    let wrong = Credentials {
        username: "cairn".into(),
        password: "wrong".into(),
    };
    match store.pull(&reference, Some(&wrong), registry.ca()) {
        Err(e @ Error::Unauthorized { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("refused") && msg.contains(&registry.host()),
                "{msg}"
            );
            assert!(
                !msg.contains("wrong"),
                "the password is not in the message: {msg}"
            );
        }
        other => panic!("wrong credentials: {other:?}"),
    }
    assert!(store.list().unwrap().is_empty());
    let right = Credentials {
        username: "cairn".into(),
        password: "s3cret".into(),
    };
    let image = store.pull(&reference, Some(&right), registry.ca()).unwrap();
    assert!(image.layers[0].join("bin/busybox").is_file());
    assert!(
        !format!("{right:?}").contains("s3cret"),
        "Debug hides the password"
    );
}

#[test]
fn plain_http_only_when_allowed() {
    require_root();
    let images = test_images();
    let registry = Registry::start(false, Auth::None);
    registry.push(&images.join("busybox.oci.tar"), "test/busybox:latest");
    let tmp = TempDir::new("http");
    let (store, _) = store(&tmp);
    let reference = format!("{}/test/busybox:latest", registry.host());
    match store.pull(&reference, None, None) {
        Err(e @ Error::Registry { .. }) => assert!(e.to_string().contains("TLS"), "{e}"),
        other => panic!("https to a plain registry: {other:?}"),
    }
    let options = PullOptions {
        plain_http: true,
        ..Default::default()
    };
    let image = store.pull_with(&reference, &options).unwrap();
    assert_eq!(image.config.cmd, ["sh"]);
}

const TOKEN_SERVICE: &str = "cairn-test";
const TOKEN_ISSUER: &str = "cairn-test-issuer";

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A token service like Docker Hub's: HTTPS, Basic credentials in, an ES256 JWT out whose
/// certificate (`x5c`) the registry trusts. Returns its realm URL, its TLS CA and the
/// signer's certificate (for the registry's `rootcertbundle`). Runs until the process ends.
fn token_service(user: &'static str, password: &'static str) -> (String, String, String) {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::sync::Arc;

    let (ca, cert, key) = certificates();
    let signer_key = rcgen::KeyPair::generate().unwrap();
    let mut signer = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    signer
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cairn test token signer");
    let signer_cert = signer.self_signed(&signer_key).unwrap();
    let signer_pem = signer_cert.pem();
    let signer_der = signer_cert.der().to_vec();
    let rng = ring::rand::SystemRandom::new();
    let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &signer_key.serialize_der(),
        &rng,
    )
    .unwrap();

    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut reader = BufReader::new(&mut tls);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut authorization = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authorization = Some(v.trim().to_owned());
                    }
                }
            }
            drop(reader);
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let mut service = String::new();
            let mut access = Vec::new();
            for pair in query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v);
                match k {
                    "service" => service = v,
                    "scope" => {
                        // repository:<name>:<actions>
                        let mut parts = v.splitn(3, ':');
                        let (kind, name, actions) = (
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                        );
                        access.push(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                    }
                    _ => {}
                }
            }
            let (status, body) = if authorization.as_deref() != Some(basic.as_str()) {
                ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad or missing credentials"}]}"#.to_owned())
            } else if service != TOKEN_SERVICE {
                (
                    "400 Bad Request",
                    format!(
                        r#"{{"errors":[{{"code":"DENIED","message":"unknown service {service}"}}]}}"#
                    ),
                )
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let x5c = {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(&signer_der)
                };
                let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("t{now}"),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let signature = signing.sign(&rng, signing_input.as_bytes()).unwrap();
                let jwt = format!("{signing_input}.{}", b64url(signature.as_ref()));
                (
                    "200 OK",
                    serde_json::json!({"token": jwt, "expires_in": 300}).to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (format!("https://127.0.0.1:{port}/token"), ca, signer_pem)
}

#[test]
fn pull_with_bearer_tokens() {
    require_root();
    let images = test_images();
    let (realm, service_ca, signer_pem) = token_service("cairn", "t0ken-pass");
    let registry = Registry::start(
        true,
        Auth::Token {
            realm: realm.clone(),
            signer_pem,
            user: ("cairn", "t0ken-pass"),
            service_ca,
        },
    );
    registry.push(&images.join("busybox.oci.tar"), "private/busybox:latest");
    let tmp = TempDir::new("token");
    let (store, _) = store(&tmp);
    let reference = format!("{}/private/busybox:latest", registry.host());

    match store.pull(&reference, None, registry.ca()) {
        Err(e @ Error::Unauthorized { .. }) => assert!(
            e.to_string().contains("token service wants credentials"),
            "{e}"
        ),
        other => panic!("no credentials: {other:?}"),
    }
    let wrong = Credentials {
        username: "cairn".into(),
        password: "nope".into(),
    };
    match store.pull(&reference, Some(&wrong), registry.ca()) {
        Err(e @ Error::Unauthorized { .. }) => assert!(e.to_string().contains("refused"), "{e}"),
        other => panic!("wrong credentials: {other:?}"),
    }
    let right = Credentials {
        username: "cairn".into(),
        password: "t0ken-pass".into(),
    };
    let image = store.pull(&reference, Some(&right), registry.ca()).unwrap();
    assert!(image.layers[0].join("bin/busybox").is_file());
    assert_eq!(image.config.cmd, ["sh"]);
}
