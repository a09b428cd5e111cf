//! `kubectl exec` and `kubectl attach` for real: a `cairn server` with its own worker on this
//! machine (as root), the real kubectl talking WebSocket streams through the API server to the
//! kubelet, commands run inside the pod's container.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{kubectl_path, temp_data_dir, test_images, Kubectl, Server};

const WAIT: Duration = Duration::from_secs(60);

fn mount_cgroup2(dir: &Path) -> PathBuf {
    let root = dir.join("cgroup");
    fs::create_dir_all(&root).unwrap();
    nix::mount::mount(
        Some("cgroup2"),
        &root,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting cgroup2 (the test needs root)");
    root
}

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

#[test]
fn exec_and_attach_reach_the_container() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir("streams");
    let images = dir.join("agent/images");
    fs::create_dir_all(&images).unwrap();
    fs::copy(
        test_images().join("busybox.oci.tar"),
        images.join("busybox.oci.tar"),
    )
    .unwrap();
    let cgroups = mount_cgroup2(&dir);
    let server = Server::start_with(&dir, &["--cgroup-root", cgroups.to_str().unwrap()]);
    server.wait_line("imported cairn.local/test/busybox:latest", WAIT);
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
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
    assert!(
        err.contains("command terminated with exit code 3"),
        "{err}"
    );
    let status = k
        .cmd(&["exec", "shell", "--", "sh", "-c", "exit 42"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));

    // stdin, to its end.
    let (code, out, err) = with_input(
        &k,
        &["exec", "-i", "shell", "--", "sh", "-c", "tr a-z A-Z; echo done"],
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
    assert!(
        err.contains("executable file not found in $PATH"),
        "{err}"
    );
    let (ok, _, err) = k.try_run(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(!ok);
    assert!(err.contains("container nope is not valid for pod shell"), "{err}");

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
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
}
