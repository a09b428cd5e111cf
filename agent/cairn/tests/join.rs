//! Agents joining a real `cairn server` with join tokens, checked with the real kubectl: the
//! CA pin, TLS bootstrapping through CertificateSigningRequests, registration of the Node
//! and its Lease, unique node names with the administrator's way to re-admit a machine,
//! refused tokens, and what a node's certificate may then do (the node authorizer).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{cairn, kubectl_path, temp_data_dir, Kubectl, Server};

const JOIN: Duration = Duration::from_secs(30);

fn agent(dir: &Path, name: &str, server: &Server, token: &str) -> Server {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("node.yaml"), format!("hostname: {name}\n")).unwrap();
    let url = format!("https://127.0.0.1:{}", server.port);
    Server::start_role("agent", dir, &["--server", &url, "--token", token])
}

fn json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k.run(&all)).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + JOIN;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs an agent that must give up: its exit status and stderr.
fn refused_agent(dir: &Path, server: &Server, token: &str) -> (bool, String) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("node.yaml"), "hostname: refused\n").unwrap();
    let url = format!("https://127.0.0.1:{}", server.port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .arg("--node-config")
        .arg(dir.join("node.yaml"))
        .args(["--https-listen-port", "0", "--bind-address", "127.0.0.1"])
        .args(["--server", &url, "--token", token])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + JOIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("an agent with a bad token kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn agents_join_with_tokens() {
    let dir = temp_data_dir("join");
    let server_dir = dir.join("server-node");
    fs::create_dir_all(&server_dir).unwrap();
    let server = Server::start_with(&server_dir, &["--disable-agent"]);
    let k = Kubectl {
        bin: kubectl_path(),
        config: server_dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    let server_token = fs::read_to_string(server_dir.join("server/node-token")).unwrap();
    let server_token = server_token.trim();

    // With the server token: a certificate through a CSR, then the Node and its Lease.
    let a_dir = dir.join("a");
    let a = agent(&a_dir, "edge-a", &server, server_token);
    a.wait_line("joined https://127.0.0.1:", JOIN);
    a.wait_line("registered node edge-a", JOIN);
    let node = json(&k, &["get", "node", "edge-a"]);
    let key_id = node["metadata"]["annotations"]["cairn.dev/node-key-sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(key_id.len(), 64);
    assert!(node["metadata"]["labels"]
        .get("node-role.kubernetes.io/control-plane")
        .is_none());
    let lease = json(&k, &["get", "lease", "-n", "kube-node-lease", "edge-a"]);
    assert_eq!(lease["spec"]["holderIdentity"], "edge-a");
    let csrs = k.run(&["get", "csr"]);
    let row = csrs
        .lines()
        .find(|l| l.contains("system:bootstrap:server"))
        .unwrap();
    assert!(
        row.contains("kubernetes.io/kube-apiserver-client-kubelet"),
        "{csrs}"
    );
    assert!(row.contains("Approved,Issued"), "{csrs}");
    let creds = a_dir.join("agent/client");
    let mode = fs::metadata(creds.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let issued = fs::read_to_string(creds.join("node.crt")).unwrap();
    assert!(issued.starts_with("-----BEGIN CERTIFICATE-----"));

    // A restart uses the certificate it has: no new request.
    assert!(a.stop().success());
    let before = k.run(&["get", "csr", "-o", "name"]).lines().count();
    let a = agent(&a_dir, "edge-a", &server, server_token);
    a.wait_line("node edge-a: using its certificate in", JOIN);
    assert_eq!(k.run(&["get", "csr", "-o", "name"]).lines().count(), before);
    assert_eq!(fs::read_to_string(creds.join("node.crt")).unwrap(), issued);

    // With a bootstrap token from `cairn token create`.
    let data = server_dir.to_str().unwrap();
    let (ok, out, err) = cairn(&["token", "create", "--data-dir", data, "--ttl", "1h"]);
    assert!(ok, "{err}");
    let b = agent(&dir.join("b"), "edge-b", &server, out.trim());
    b.wait_line("registered node edge-b", JOIN);
    let id = out
        .trim()
        .rsplit("::")
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let requestors = k.run(&["get", "csr", "-o", "jsonpath={.items[*].spec.username}"]);
    assert!(
        requestors.contains(&format!("system:bootstrap:{id}")),
        "{requestors}"
    );

    // The node's own certificate: its Node yes, another node's no.
    let as_node = |args: &[&str]| {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg(format!("--server=https://127.0.0.1:{}", server.port))
            .arg(format!(
                "--certificate-authority={}",
                creds.join("ca.crt").display()
            ))
            .arg(format!(
                "--client-certificate={}",
                creds.join("node.crt").display()
            ))
            .arg(format!("--client-key={}", creds.join("node.key").display()))
            .args(args);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = as_node(&["label", "node", "edge-a", "rack=3"]);
    assert!(ok, "{err}");
    let (ok, err) = as_node(&["label", "node", "edge-b", "rack=3"]);
    assert!(!ok);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );

    // Another machine asking for a taken name waits, with the reason, until an admin
    // approves its request; then it is that node.
    let c = agent(&dir.join("c"), "edge-a", &server, server_token);
    let line = c.wait_line("waiting for approval", JOIN);
    assert!(line.contains("registered to another machine"), "{line}");
    let csr = line
        .split("kubectl certificate approve ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_owned();
    let pending = json(&k, &["get", "csr", &csr]);
    assert_eq!(pending["status"]["conditions"][0]["type"], "NameInUse");
    assert!(pending["status"].get("certificate").is_none());
    assert!(a.stop().success());
    // Approving needs the approval subresource and the signer's `approve` verb.
    k.run(&[
        "create",
        "clusterrole",
        "csr-approver",
        "--verb=get,list,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ]);
    k.run(&[
        "create",
        "clusterrolebinding",
        "csr-approver",
        "--clusterrole=csr-approver",
        "--user=alice",
    ]);
    let (ok, _, err) = k.try_run(&["--as=alice", "certificate", "approve", &csr]);
    assert!(!ok);
    assert!(err.contains("cannot approve resource \"signers\""), "{err}");
    let role = dir.join("signer-approver.yaml");
    fs::write(
        &role,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
         metadata: {name: kubelet-signer-approver}\n\
         rules: [{apiGroups: [certificates.k8s.io], resources: [signers], verbs: [approve],\
         resourceNames: [kubernetes.io/kube-apiserver-client-kubelet]}]\n",
    )
    .unwrap();
    k.run(&["apply", "-f", role.to_str().unwrap()]);
    k.run(&[
        "create",
        "clusterrolebinding",
        "kubelet-signer-approver",
        "--clusterrole=kubelet-signer-approver",
        "--user=alice",
    ]);
    k.run(&["--as=alice", "certificate", "approve", &csr]);
    c.wait_line("joined https://127.0.0.1:", JOIN);
    wait_until("the Node to carry the new machine's key", || {
        let node = json(&k, &["get", "node", "edge-a"]);
        let now = node["metadata"]["annotations"]["cairn.dev/node-key-sha256"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        !now.is_empty() && now != key_id
    });

    // Tokens that do not fit are refused with the reason, and the agent gives up.
    let wrong_secret = format!("{}::server:0123456789abcdef", &server_token[..67]);
    let (ok, err) = refused_agent(&dir.join("d"), &server, &wrong_secret);
    assert!(!ok);
    assert!(err.contains("the server refused the join token"), "{err}");
    let other_ca = format!("K10{}::server:secret", "ab".repeat(32));
    let (ok, err) = refused_agent(&dir.join("e"), &server, &other_ca);
    assert!(!ok);
    assert!(err.contains("but the join token pins abab"), "{err}");
    assert!(
        !dir.join("e/agent/client/ca.crt").exists(),
        "an unpinned CA was kept"
    );

    drop((b, c));
    assert!(server.stop().success());
    fs::remove_dir_all(&dir).unwrap();
}
