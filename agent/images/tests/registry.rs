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

impl Registry {
    fn start(tls: bool, creds: Option<(&str, &str)>) -> Registry {
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
        if let Some((user, password)) = creds {
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
    let registry = Registry::start(true, None);
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
    let registry = Registry::start(true, Some(("cairn", "s3cret")));
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
    let registry = Registry::start(false, None);
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
