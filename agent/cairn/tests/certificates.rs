//! Certificates change under a running `cairn server`: `cairn certificate rotate` gets new
//! leaves served and written into the kubeconfig without a restart; `rotate-ca` makes the
//! server exit to load the new CA, after which old credentials are refused. Checked with the
//! real kubectl and openssl (both installed by `make deps`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{cairn, temp_data_dir, Server};

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// SHA-256 fingerprint of the certificate the server presents.
fn served(port: u16) -> String {
    sh(&format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    ))
}

fn on_disk(path: &Path) -> String {
    sh(&format!(
        "openssl x509 -noout -fingerprint -sha256 -in {}",
        path.display()
    ))
}

fn kubectl(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .arg("--kubeconfig")
        .arg(config)
        .args(args)
        .output()
        .expect("kubectl (make deps installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn certificates_rotate_under_a_running_server() {
    let dir = temp_data_dir("certificates");
    let data = dir.to_str().unwrap();
    let fast = [("CAIRN_CERT_CHECK_SECONDS", "1")];
    let server = Server::start_role_env("server", &dir, &["--disable-agent"], &fast);
    let tls = dir.join("server/tls");
    let config = dir.join("admin.kubeconfig");
    let first = served(server.port);
    assert!(
        first.contains("Fingerprint"),
        "openssl saw no certificate: {first:?}"
    );
    assert_eq!(first, on_disk(&tls.join("serving.crt")));

    let (ok, out, err) = cairn(&["certificate", "check", "--data-dir", data]);
    assert!(ok, "{err}");
    for name in ["ca ", "serving ", "admin "] {
        assert!(out.contains(name) && out.contains("days left"), "{out}");
    }

    // rotate: new leaves, served and in the kubeconfig, no restart.
    let kubeconfig_before = std::fs::read_to_string(&config).unwrap();
    let (ok, out, err) = cairn(&["certificate", "rotate", "--data-dir", data]);
    assert!(ok && out.contains("serving.crt removed"), "{out}{err}");
    wait_for("the rewritten kubeconfig", || {
        std::fs::read_to_string(&config).unwrap() != kubeconfig_before
    });
    let second = served(server.port);
    assert_ne!(second, first);
    assert_eq!(second, on_disk(&tls.join("serving.crt")));
    let (ok, text) = kubectl(&config, &["get", "namespaces"]);
    assert!(ok && text.contains("kube-system"), "{text}");

    // rotate-ca wants a confirmation, and changes nothing without it.
    let ca_before = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let (ok, _, err) = cairn(&["certificate", "rotate-ca", "--data-dir", data]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(
        std::fs::read_to_string(tls.join("ca.crt")).unwrap(),
        ca_before
    );
    let old_config = dir.join("old.kubeconfig");
    std::fs::copy(&config, &old_config).unwrap();
    let token_before = std::fs::read_to_string(dir.join("server/node-token")).unwrap();

    let (ok, out, err) = cairn(&["certificate", "rotate-ca", "--yes", "--data-dir", data]);
    assert!(ok && out.contains("ca.key moved"), "{out}{err}");
    // The server leaves by itself to load the new CA (init would start it again).
    let mut server = server;
    let mut status = None;
    wait_for("the server to exit", || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    drop(server);

    let server = Server::start_with(&dir, &["--disable-agent"]);
    assert!(tls.join("ca.crt.old").exists());
    assert_ne!(
        std::fs::read_to_string(tls.join("ca.crt")).unwrap(),
        ca_before
    );
    let (ok, text) = kubectl(&old_config, &["get", "namespaces"]);
    assert!(!ok, "the old CA's kubeconfig must be refused: {text}");
    let (ok, text) = kubectl(&config, &["get", "namespaces"]);
    assert!(ok, "{text}");
    let token_after = std::fs::read_to_string(dir.join("server/node-token")).unwrap();
    assert_ne!(token_after, token_before, "the join token pins the new CA");
    assert_eq!(
        token_after.rsplit("::").next(),
        token_before.rsplit("::").next(),
        "and keeps its secret"
    );
    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}
