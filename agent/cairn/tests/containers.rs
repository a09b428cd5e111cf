//! Containers as users reach and watch them, for real: a `cairn server` with its own worker on
//! this machine (as root) and the real kubectl. `kubectl exec` and `attach` as WebSocket
//! streams through the API server to the kubelet; `kubectl port-forward` (SPDY tunnelled in a
//! WebSocket); liveness, readiness and startup probes
//! (exec, HTTP, TCP) with their restarts, conditions and events; images pulled from a real
//! registry (Debian's `docker-registry` over TLS with a password, pushed to by skopeo) with
//! the pod's pull secret. (OOM kills are checked in the QEMU boot tests: this host's memory
//! controller is not on cgroup v2.)

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{kubectl_path, temp_data_dir, test_images, worker, worker_with, Kubectl};

const WAIT: Duration = Duration::from_secs(60);

fn wait_running(k: &Kubectl, pod: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, phase, _) = k.try_run(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if phase == "Running" {
            return;
        }
        assert!(Instant::now() < deadline, "pod {pod} is {phase:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs kubectl with `input` on its stdin: (exit code, stdout, stderr).
fn with_input(k: &Kubectl, args: &[&str], input: &str) -> (Option<i32>, String, String) {
    let mut child = k
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), s(&out.stdout), s(&out.stderr))
}

/// A server with its worker, the test images imported: its data directory, the server, a
/// kubectl for it, and the cgroup2 mount its pods use.
#[test]
fn exec_and_attach_reach_the_container() {
    let (dir, server, k, cgroups) = worker("streams");
    let manifests = dir.join("pods.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'echo ready > /tmp/state; exec sleep 3600']
    workingDir: /srv
---
apiVersion: v1
kind: Pod
metadata: {name: listener}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'read line; echo heard:$line; echo bye >&2']
    stdin: true
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);
    wait_running(&k, "shell");

    // The architecture, from inside the container, through the API server and the kubelet.
    let host_arch = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(k.run(&["exec", "shell", "--", "uname", "-m"]), host_arch);

    // The container's filesystem, working directory and PID namespace.
    let out = k.run(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "cat /tmp/state; pwd; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert_eq!(out, "ready\n/srv\nsleep 3600 ");

    // stdout and stderr apart; the exit code becomes kubectl's.
    let (ok, out, err) = k.try_run(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert!(!ok);
    assert_eq!(out, "to-out\n");
    assert!(err.contains("to-err\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    let status = k
        .cmd(&["exec", "shell", "--", "sh", "-c", "exit 42"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));

    // stdin, to its end.
    let (code, out, err) = with_input(
        &k,
        &[
            "exec",
            "-i",
            "shell",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ],
        "hello from the host\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "HELLO FROM THE HOST\ndone\n");

    // A terminal: kubectl needs one of its own, which `script` gives it.
    let command = format!(
        "{} --kubeconfig {} exec -it shell -- sh -c 'tty; echo $TERM'",
        kubectl_path().display(),
        dir.join("admin.kubeconfig").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("xterm"), "{text}");

    // A command the image lacks, and a container the pod lacks.
    let (ok, _, err) = k.try_run(&["exec", "shell", "--", "no-such-command"]);
    assert!(!ok);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    let (ok, _, err) = k.try_run(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(!ok);
    assert!(
        err.contains("container nope is not valid for pod shell"),
        "{err}"
    );

    // Attach: what is typed reaches the container's stdin; what it prints comes back.
    wait_running(&k, "listener");
    let mut attach = k
        .cmd(&["attach", "-i", "listener"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = attach.stdin.take().unwrap();
    let stdout = attach.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("heard:"))
    });
    // kubectl connects before the line is typed: give it a moment, then type.
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(b"over\n").unwrap();
    stdin.flush().unwrap();
    let heard = reader.join().unwrap();
    assert_eq!(heard.as_deref(), Some("heard:over"));
    let status = attach.wait().unwrap();
    assert!(status.success(), "{status:?}");

    k.run(&["delete", "pod", "shell", "listener", "--wait=false"]);
    drop(server);
    common::stop_containers_under(&dir);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

/// `GET /` on `127.0.0.1:port`: the response, or why there was none.
fn http_get(port: u16) -> Result<String, String> {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Starts `kubectl port-forward pod/POD :PORT...`; returns it and the local port of each.
/// `websocket: false` makes kubectl use plain SPDY, as kubectl before 1.31 does.
fn port_forward(
    k: &Kubectl,
    pod: &str,
    ports: &[u16],
    websocket: bool,
) -> (std::process::Child, Vec<u16>) {
    let mut args = vec!["port-forward".to_owned(), format!("pod/{pod}")];
    args.extend(ports.iter().map(|p| format!(":{p}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = k
        .cmd(&args)
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websocket.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = Vec::new();
    for &port in ports {
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| {
                l.starts_with("Forwarding from 127.0.0.1:") && l.ends_with(&format!("-> {port}"))
            })
            .unwrap_or_else(|| panic!("kubectl port-forward did not forward {port}"));
        let addr = line.split_whitespace().nth(2).unwrap();
        local.push(addr.rsplit(':').next().unwrap().parse().unwrap());
    }
    // kubectl prints a line per connection; keep reading so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, local)
}

#[test]
fn port_forward_reaches_the_pods_ports() {
    let (dir, server, k, cgroups) = worker("portforward");
    let manifest = dir.join("web.yaml");
    fs::write(
        &manifest,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: cairn.local/test/httpd:latest
  - name: local
    image: cairn.local/test/busybox:latest
    # Listens on the pod's loopback only: port-forward reaches it, the pod network does not.
    command: [sh, -c, 'mkdir -p /srv && echo local-only > /srv/index.html && exec httpd -f -p 127.0.0.1:9090 -h /srv']
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_running(&k, "web");

    let (mut pf, local) = port_forward(&k, "web", &[8080, 9090], true);
    // Serially, each connection a new pair of streams on the same SPDY session...
    for _ in 0..3 {
        let page = http_get(local[0]).unwrap();
        assert!(
            page.starts_with("HTTP/1.") && page.contains(" 200 OK"),
            "{page}"
        );
        assert!(page.contains("Cairn"), "{page}");
    }
    let page = http_get(local[1]).unwrap();
    assert!(page.contains("local-only"), "{page}");
    // ...and side by side.
    let parallel: Vec<_> = (0..8)
        .map(|i| {
            let port = local[i % 2];
            std::thread::spawn(move || http_get(port))
        })
        .collect();
    for (i, t) in parallel.into_iter().enumerate() {
        let page = t.join().unwrap().unwrap();
        let want = if i % 2 == 0 { "Cairn" } else { "local-only" };
        assert!(page.contains(want), "connection {i}: {page}");
    }
    pf.kill().unwrap();
    pf.wait().unwrap();

    // The same over plain SPDY.
    let (mut pf, local) = port_forward(&k, "web", &[9090], false);
    assert!(http_get(local[0]).unwrap().contains("local-only"));
    pf.kill().unwrap();
    pf.wait().unwrap();

    // A port nobody listens on: the connection closes and kubectl says why.
    let (mut pf, local) = port_forward(&k, "web", &[7777], true);
    let answer = http_get(local[0]);
    assert!(!answer.as_ref().is_ok_and(|a| !a.is_empty()), "{answer:?}");
    let mut stderr = pf.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pf.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = pf.kill();
    pf.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    assert!(
        err.contains("error forwarding port 7777 to pod default/web"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");

    // A pod that is not there.
    let (ok, _, err) = k.try_run(&["port-forward", "pod/nope", ":8080"]);
    assert!(!ok);
    assert!(err.contains("pods \"nope\" not found"), "{err}");

    k.run(&["delete", "pod", "web", "--wait=false"]);
    drop(server);
    common::stop_containers_under(&dir);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

fn pod_json(k: &Kubectl, pod: &str) -> serde_json::Value {
    serde_json::from_str(&k.run(&["get", "pod", pod, "-o", "json"])).unwrap()
}

/// Waits until `done` holds for the pod; the last state seen on timeout.
fn wait_pod(k: &Kubectl, pod: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = pod_json(k, pod);
        if done(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod}: timed out waiting for {what}: {:#}",
            v["status"]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn condition(pod: &serde_json::Value, kind: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn events_of(k: &Kubectl, pod: &str) -> String {
    k.run(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

#[test]
fn probes_restart_containers_and_gate_readiness() {
    let (dir, server, k, cgroups) = worker("probes");
    let manifests = dir.join("probes.yaml");
    fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600']
    livenessProbe:
      exec: {command: [cat, /tmp/healthy]}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: cairn.local/test/httpd:latest
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: never-ready}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sleep, "3600"]
    readinessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: slow-start}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'sleep 2; touch /tmp/up; exec sleep 3600']
    startupProbe:
      exec: {command: [cat, /tmp/up]}
      periodSeconds: 1
      failureThreshold: 20
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);

    // The startup probe holds `started` and readiness back until it passes.
    wait_running(&k, "slow-start");
    let early = pod_json(&k, "slow-start");
    assert_eq!(early["status"]["containerStatuses"][0]["started"], false);
    assert_eq!(early["status"]["containerStatuses"][0]["ready"], false);
    wait_pod(&k, "slow-start", "started and ready", |p| {
        let c = &p["status"]["containerStatuses"][0];
        c["started"] == true && c["ready"] == true && condition(p, "Ready") == "True"
    });

    // HTTP readiness and TCP liveness on a named port of a real server.
    wait_pod(&k, "web", "Ready", |p| condition(p, "Ready") == "True");
    assert_eq!(
        pod_json(&k, "web")["status"]["containerStatuses"][0]["restartCount"],
        0
    );

    // Nothing listens on 9999: running, never ready, the reason in the events.
    wait_running(&k, "never-ready");
    wait_pod(&k, "never-ready", "Unhealthy events", |_| {
        events_of(&k, "never-ready").contains("Readiness probe failed: dial tcp")
    });
    let p = pod_json(&k, "never-ready");
    assert_eq!(condition(&p, "Ready"), "False");
    assert_eq!(condition(&p, "ContainersReady"), "False");
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);

    // Liveness fails once the file is gone: killed and restarted, and said so.
    wait_pod(&k, "liveness", "a restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    let events = events_of(&k, "liveness");
    assert!(
        events.contains("Liveness probe failed: cat: can't open '/tmp/healthy'"),
        "{events}"
    );
    assert!(
        events.contains("Container main failed liveness probe, will be restarted"),
        "{events}"
    );

    k.run(&["delete", "pod", "--all", "--wait=false"]);
    drop(server);
    common::stop_containers_under(&dir);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}

/// Debian's `docker-registry` on a free port of 127.0.0.1, over TLS with a certificate of a CA
/// of its own and one htpasswd user; killed when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(dir: &Path, user: &str, password: &str) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "apt-get install docker-registry (ci/install-deps.sh does)"
        );
        fs::create_dir_all(dir.join("certs")).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test registry CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        fs::write(dir.join("certs/ca.crt"), ca.pem()).unwrap();
        fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let htpasswd = std::process::Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apt-get install apache2-utils)");
        fs::write(dir.join("htpasswd"), htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {d}/data\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test\n  tls:\n    certificate: {d}/cert.pem\n    key: {d}/key.pem\n\
                 auth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes every platform of `archive`, or with `only_arch` that one platform alone
    /// (a single-architecture image).
    fn push(&self, archive: &Path, repo_tag: &str, creds: &str, only_arch: Option<&str>) {
        let mut copy = std::process::Command::new("skopeo");
        copy.args(["copy", "-q"]);
        match only_arch {
            Some(arch) => copy.args(["--override-arch", arch]),
            None => copy.arg("--all"),
        };
        let out = copy
            .args(["--dest-creds", creds, "--dest-cert-dir"])
            .arg(self.dir.join("certs"))
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn waiting(p: &serde_json::Value) -> (String, String) {
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or_default().to_owned(),
        w["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn images_are_pulled_with_the_pods_pull_secret() {
    let tmp = temp_data_dir("registry");
    let registry = Registry::start(&tmp, "puller", "s3cret");
    registry.push(
        &test_images().join("busybox.oci.tar"),
        "private/busybox:1.0",
        "puller:s3cret",
        None,
    );
    // An image for another architecture than this machine's only.
    let foreign = if cfg!(target_arch = "s390x") {
        "arm64"
    } else {
        "s390x"
    };
    registry.push(
        &test_images().join("busybox.oci.tar"),
        "private/foreign:1.0",
        "puller:s3cret",
        Some(foreign),
    );
    let host = registry.host();
    // The node trusts the registry's CA through its registry settings.
    let (dir, server, k, cgroups) = worker_with("pulls", |data| {
        fs::write(
            data.join("agent/registries.yaml"),
            format!(
                "\"{host}\":\n  ca_file: {}\n",
                tmp.join("certs/ca.crt").display()
            ),
        )
        .unwrap();
    });
    k.run(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={host}"),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
    let manifests = dir.join("pulls.yaml");
    fs::write(
        &manifests,
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: pulled}}
spec:
  restartPolicy: Never
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - name: main
    image: {host}/private/busybox:1.0
    command: [sh, -c, 'echo pulled and ran']
---
apiVersion: v1
kind: Pod
metadata: {{name: no-secret}}
spec:
  containers:
  - name: main
    image: {host}/private/busybox:1.0
    imagePullPolicy: Always
---
apiVersion: v1
kind: Pod
metadata: {{name: foreign}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - name: main
    image: {host}/private/foreign:1.0
---
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  containers:
  - name: main
    image: {host}/private/other:1.0
    imagePullPolicy: Never
"#
        ),
    )
    .unwrap();
    k.run(&["apply", "-f", manifests.to_str().unwrap()]);

    wait_pod(&k, "pulled", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(k.run(&["logs", "pulled"]), "pulled and ran\n");
    let events = events_of(&k, "pulled");
    assert!(
        events.contains(&format!(
            "Successfully pulled image \"{host}/private/busybox:1.0\""
        )),
        "{events}"
    );

    // `Always` without credentials: refused by the registry, said so (the copy pulled for the
    // other pod is not used: only an unreachable registry falls back to it).
    wait_pod(&k, "no-secret", "a pull error", |p| {
        matches!(waiting(p).0.as_str(), "ErrImagePull" | "ImagePullBackOff")
    });
    let (_, message) = waiting(&pod_json(&k, "no-secret"));
    assert!(message.contains("authentication failed"), "{message}");

    // Another architecture's image: a pull error that says so.
    wait_pod(&k, "foreign", "a pull error", |p| {
        matches!(waiting(p).0.as_str(), "ErrImagePull" | "ImagePullBackOff")
    });
    let (_, message) = waiting(&pod_json(&k, "foreign"));
    assert!(
        message.contains("no image for") && message.contains(foreign),
        "{message}"
    );

    wait_pod(&k, "never", "ErrImageNeverPull", |p| {
        waiting(p).0 == "ErrImageNeverPull"
    });
    let (_, message) = waiting(&pod_json(&k, "never"));
    assert!(
        message.contains("is not present with pull policy of Never"),
        "{message}"
    );

    k.run(&["delete", "pod", "--all", "--wait=false"]);
    drop(server);
    common::stop_containers_under(&dir);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}
