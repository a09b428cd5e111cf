//! `cairn server` as init runs it: real process, real TLS, real signals.
//!
//! Starts the binary on 127.0.0.1 with an ephemeral port and a temporary data dir, talks to it
//! with a rustls client that trusts only the generated CA, stops it with SIGTERM, and starts it
//! again to check that the certificates are reused.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

mod common;
use common::{temp_data_dir, Server};

fn tls_dir(data: &Path) -> PathBuf {
    data.join("server/tls")
}

fn client_config(data: &Path, alpn: &[&[u8]], client_cert: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(tls_dir(data).join("ca.crt")).unwrap())
        .unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = if client_cert {
        let cert = CertificateDer::from_pem_file(tls_dir(data).join("admin.crt")).unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_dir(data).join("admin.key")).unwrap();
        builder.with_client_auth_cert(vec![cert], key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn connect(port: u16, config: Arc<ClientConfig>, name: &str) -> (ClientConnection, TcpStream) {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("TLS handshake");
    }
    (conn, sock)
}

/// One HTTP/1.1 GET; returns (status code, content type, body).
fn get(port: u16, config: Arc<ClientConfig>, name: &str, path: &str) -> (u16, String, String) {
    request(port, config, name, "GET", path, &[], b"")
}

/// One HTTP/1.1 request with extra `headers` and a `body`; returns (status code, content
/// type, body).
fn request(
    port: u16,
    config: Arc<ClientConfig>,
    name: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let (mut conn, mut sock) = connect(port, config, name);
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n");
    for (header, value) in headers {
        head.push_str(&format!("{header}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("reading {path}: {e}"),
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (code, content_type, body.to_owned())
}

fn read_tls_files(data: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "ca.crt",
        "ca.key",
        "serving.crt",
        "serving.key",
        "admin.crt",
        "admin.key",
    ]
    .iter()
    .map(|f| (f.to_string(), fs::read(tls_dir(data).join(f)).unwrap()))
    .collect()
}

#[test]
fn serves_https_and_reuses_certificates() {
    let data = temp_data_dir("serve");
    fs::write(data.join("node.yaml"), "hostname: test-node\n").unwrap();
    let server = Server::start(&data);
    let line = server.ready.trim_end();
    let rest = line
        .strip_prefix("cairn: ready uptime_ms=")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (uptime, rss) = rest.split_once(" init_rss_kb=").unwrap();
    assert!(
        uptime.parse::<u64>().is_ok() && rss.parse::<u64>().is_ok(),
        "{line:?}"
    );

    let port = server.port;
    let anonymous = client_config(&data, &[], false);
    for name in ["localhost", "127.0.0.1", "test-node", "kubernetes.default"] {
        let (code, ct, body) = get(port, anonymous.clone(), name, "/readyz");
        assert_eq!(
            (code, ct.as_str(), body.as_str()),
            (200, "text/plain; charset=utf-8", "ok"),
            "{name}"
        );
    }
    let (code, _, body) = get(port, anonymous.clone(), "localhost", "/livez?verbose");
    assert_eq!((code, body.as_str()), (200, "ok"));

    let (code, ct, body) = get(port, anonymous.clone(), "localhost", "/version");
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("35"))
    );
    assert!(v["gitVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.35.0+cairn-"));

    // Anonymous clients get health and version only.
    let (code, ct, body) = get(port, anonymous.clone(), "localhost", "/api/v1/namespaces");
    assert_eq!((code, ct.as_str()), (401, "application/json"));
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);

    // The admin certificate reads the API; the system namespaces exist.
    let admin = client_config(&data, &[], true);
    let (code, _, body) = get(port, admin.clone(), "localhost", "/api/v1/namespaces");
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let token = fs::read_to_string(data.join("server/node-token")).unwrap();
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );

    // The admin client certificate is accepted; ALPN offers HTTP/2.
    let admin = client_config(&data, &[b"h2", b"http/1.1"], true);
    let (conn, _sock) = connect(port, admin, "localhost");
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    drop(conn);

    // An unrelated name is refused by the client's certificate check.
    let name = ServerName::try_from("example.com").unwrap();
    let mut conn = ClientConnection::new(client_config(&data, &[], false), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut handshake = Ok((0, 0));
    while conn.is_handshaking() && handshake.is_ok() {
        handshake = conn.complete_io(&mut sock);
    }
    assert!(handshake.is_err(), "certificate accepted for example.com");

    let kubeconfig = fs::read_to_string(data.join("admin.kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: https://127.0.0.1:{port}\n")),
        "{kubeconfig}"
    );
    let before = read_tls_files(&data);
    let written = fs::metadata(data.join("admin.kubeconfig"))
        .unwrap()
        .modified()
        .unwrap();
    // Where the start went, step by step, before the ready line.
    let steps = server.wait_line("cairn: steps_ms ", Duration::from_secs(10));
    for step in ["tls=", "datastore=", "listen="] {
        assert!(steps.contains(step), "{steps}");
    }

    assert!(
        server.stop().success(),
        "cairn exited with an error after SIGTERM"
    );

    // The same port again: the kubeconfigs are as they were and are not written again.
    let server = Server::start_with(&data, &["--https-listen-port", &port.to_string()]);
    assert!(
        server
            .log
            .iter()
            .any(|l| l.ends_with(": ca reused, serving reused, admin reused")),
        "{:?}",
        server.log
    );
    for _ in ["server/cred/admin.kubeconfig", "--write-kubeconfig's"] {
        let line = server.wait_line(" is up to date", Duration::from_secs(10));
        assert!(line.starts_with("cairn: kubeconfig "), "{line}");
    }
    assert_eq!(
        fs::metadata(data.join("admin.kubeconfig"))
            .unwrap()
            .modified()
            .unwrap(),
        written
    );
    let (code, _, _) = get(
        server.port,
        client_config(&data, &[], false),
        "localhost",
        "/healthz",
    );
    assert_eq!(code, 200);
    assert_eq!(
        read_tls_files(&data),
        before,
        "certificates changed on restart"
    );
    assert!(server.stop().success());
    fs::remove_dir_all(&data).unwrap();
}

/// A bearer token that does not authenticate is a 401 `Status` for the client and a line
/// with the reason (never the secret) in the server's log.
#[test]
fn a_wrong_bearer_token_is_refused_and_logged() {
    let data = temp_data_dir("bearer");
    let server = Server::start(&data);
    let anonymous = client_config(&data, &[], false);
    let secret = "0123456789abcdef";
    let bearer = format!("Bearer abcdef.{secret}");
    let (code, ct, body) = request(
        server.port,
        anonymous,
        "localhost",
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!((code, ct.as_str()), (401, "application/json"), "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&status["kind"], &status["reason"], &status["code"]),
        (
            &serde_json::json!("Status"),
            &serde_json::json!("Unauthorized"),
            &serde_json::json!(401)
        )
    );
    let line = server.wait_line("cairn: apiserver: 401 for ", Duration::from_secs(10));
    assert!(line.contains("127.0.0.1:"), "{line}");
    assert!(
        line.ends_with(" GET /api/v1/namespaces: bootstrap token abcdef: no such token"),
        "{line}"
    );
    assert!(!line.contains(secret), "{line}");
    assert!(server.stop().success());
    fs::remove_dir_all(&data).unwrap();
}

/// A body over the 3 MiB limit gets Kubernetes' 413 `Status` over a real connection, and the
/// server answers the next request.
#[test]
fn an_oversized_body_gets_413_and_the_server_goes_on() {
    let data = temp_data_dir("oversized");
    let server = Server::start(&data);
    let admin = client_config(&data, &[], true);
    let limit = 3 * 1024 * 1024;
    let head = r#"{"metadata":{"name":"big"},"data":{"k":""#;
    let tail = r#""}}"#;
    let body = format!(
        "{head}{}{tail}",
        "x".repeat(limit + 1 - head.len() - tail.len())
    );
    let (code, ct, answer) = request(
        server.port,
        admin.clone(),
        "localhost",
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!((code, ct.as_str()), (413, "application/json"), "{answer}");
    let status: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 413);
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(&limit.to_string()), "{message}");
    let (code, _, answer) = request(
        server.port,
        admin,
        "localhost",
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"small"}}"#,
    );
    assert_eq!(code, 201, "{answer}");
    assert!(server.stop().success());
    fs::remove_dir_all(&data).unwrap();
}

/// The agent serves health and version (and a 404 `Status` for the API it does not have)
/// through the same connection loop.
#[test]
fn agent_serves_health() {
    let data = temp_data_dir("agent");
    // A server nobody answers on: the agent keeps trying to join, and serves meanwhile.
    let token = format!("K10{}::server:secret", "0".repeat(64));
    let agent = Server::start_role(
        "agent",
        &data,
        &["--server", "https://127.0.0.1:1", "--token", &token],
    );
    let config = |data: &Path| {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(data.join("agent/tls/ca.crt")).unwrap())
            .unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    let (code, _, body) = get(agent.port, config(&data), "localhost", "/readyz");
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _, body) = get(agent.port, config(&data), "localhost", "/api/v1/namespaces");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"reason\":\"NotFound\""), "{body}");
    assert!(agent.stop().success());
    fs::remove_dir_all(&data).unwrap();
}
