//! The container runtime on this machine, for real: namespaces, the overlay root, the shim,
//! logs and exits, with `cairn container-shim` as the shim. Needs root (as the kubelet does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_runtime::{cgroup, logs, netns, ContainerSpec, Mount, Runtime};

mod common;

/// The busybox test image's layer, imported into a store of this test's own.
fn layer() -> PathBuf {
    static LAYER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYER
        .get_or_init(|| {
            let dir = common::temp_data_dir("runtime-store");
            let store = cairn_images::Store::open(&dir, cairn_images::Platform::host()).unwrap();
            store
                .import_archive(&common::test_images().join("busybox.oci.tar"))
                .unwrap();
            let image = store.resolve("cairn.local/test/busybox:latest").unwrap();
            assert_eq!(image.layers.len(), 1);
            image.layers[0].clone()
        })
        .clone()
}

fn spec(dir: &Path, id: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        id: id.to_owned(),
        layers: vec![layer()],
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into(), "GREETING=hello".into()],
        cwd: "/work".into(),
        uid: 0,
        gid: 0,
        supplementary_gids: vec![],
        hostname: "pod-a".into(),
        mounts: vec![],
        netns: None,
        cgroup: None,
        log: dir.join("logs").join(format!("{id}.log")),
        log_max_bytes: 1 << 20,
        readonly_rootfs: false,
        stdin: false,
    }
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::new(
        &dir.join("containers"),
        Path::new(env!("CARGO_BIN_EXE_cairn")),
        None,
    )
    .unwrap()
}

fn log_text(path: &Path) -> String {
    let records = logs::read(path, &logs::ReadOptions::default()).unwrap();
    String::from_utf8(logs::render(&records, &logs::ReadOptions::default())).unwrap()
}

#[tokio::test]
async fn a_container_runs_in_its_own_namespaces_and_its_output_and_exit_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let netns_path = tmp.path().join("netns/pod-a");
    netns::create(&netns_path).unwrap();
    assert!(netns::exists(&netns_path));
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in"), "from the node\n").unwrap();

    let mut s = spec(
        tmp.path(),
        "c1",
        &[
            "sh",
            "-c",
            "echo pid=$$ host=$(hostname) cwd=$(pwd) $GREETING; cat /data/in; \
             echo out > /data/out; ls /sys/class/net; echo oops >&2; exit 3",
        ],
    );
    s.netns = Some(netns_path.clone());
    s.mounts.push(Mount {
        source: shared.clone(),
        target: "/data".into(),
        readonly: false,
    });
    let (started, shim) = rt.start(&s).await.unwrap();
    assert!(started.pid > 1);
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait("c1", Some(shim)))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 3, "{exit:?}");
    assert!(exit.start_error.is_none());
    let text = log_text(&s.log);
    assert!(
        text.contains("pid=1 host=pod-a cwd=/work hello\n"),
        "{text}"
    );
    assert!(text.contains("from the node\n"), "{text}");
    // Only the pod's own loopback: not the node's interfaces.
    assert!(text.contains("lo\n") && !text.contains("eth0"), "{text}");
    assert!(text.contains("oops\n"));
    assert_eq!(
        std::fs::read_to_string(shared.join("out")).unwrap(),
        "out\n"
    );
    // Nothing of the container is left mounted on the node.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.dir("c1").display().to_string()),
        "{mounts}"
    );

    rt.remove("c1").unwrap();
    assert!(!rt.dir("c1").exists());
    netns::remove(&netns_path).unwrap();
    assert!(!netns_path.exists());
}

#[tokio::test]
async fn a_missing_program_is_a_start_error_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let s = spec(tmp.path(), "c2", &["no-such-program"]);
    let err = rt.start(&s).await.unwrap_err().to_string();
    assert!(
        err.contains("\"no-such-program\": executable file not found in $PATH"),
        "{err}"
    );
    let exit = rt.exit("c2").unwrap();
    assert_eq!(exit.exit_code, 128);
    assert!(exit.start_error.unwrap().contains("no-such-program"));
}

#[tokio::test]
async fn a_running_container_is_stopped_by_signal_and_its_cgroup_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let cg_root = tmp.path().join("cgroup");
    std::fs::create_dir_all(&cg_root).unwrap();
    nix::mount::mount(
        Some("cgroup2"),
        &cg_root,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let hierarchy = cgroup::Hierarchy::at(&cg_root).unwrap();
    let rt = Runtime::new(
        &tmp.path().join("containers"),
        Path::new(env!("CARGO_BIN_EXE_cairn")),
        Some(hierarchy.clone()),
    )
    .unwrap();
    let pod = hierarchy
        .pod("uid-1", &cgroup::Resources::default())
        .unwrap();
    let cg = hierarchy
        .container(&pod, "c3", &cgroup::Resources::default())
        .unwrap();
    let mut s = spec(
        tmp.path(),
        "c3",
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo up; sleep 1000 & wait",
        ],
    );
    s.cgroup = Some(cg.clone());
    let (started, shim) = rt.start(&s).await.unwrap();
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == started.pid.to_string()),
        "{procs}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.signal("c3", nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait("c3", Some(shim)))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert!(log_text(&s.log).contains("up\nbye\n"));
    rt.remove("c3").unwrap();
    assert!(!cg.exists());
    cgroup::remove_pod(&pod).unwrap();
    assert!(!pod.exists());
    nix::mount::umount2(&cg_root, nix::mount::MntFlags::MNT_DETACH).unwrap();
}

#[tokio::test]
async fn exec_runs_a_command_inside_the_running_container() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = spec(
        tmp.path(),
        "c4",
        &["sh", "-c", "echo marker > /tmp/inside; exec sleep 60"],
    );
    s.uid = 1000;
    s.gid = 1000;
    let (_, shim) = rt.start(&s).await.unwrap();
    // The container writes its marker as it starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A pipe in, pipes out: same filesystem, PID namespace, hostname, user and environment.
    let mut cmd = rt
        .exec_command(
            "c4",
            &[
                "sh".into(),
                "-c".into(),
                "read line; echo got=$line; cat /tmp/inside; echo host=$(hostname) \
                 uid=$(id -u) cwd=$(pwd) $GREETING; ps -o pid,comm | grep -c sleep; \
                 echo err >&2; exit 7"
                    .into(),
            ],
            false,
        )
        .unwrap();
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout} {:?}", out.stderr);
    assert!(stdout.contains("got=typed\n"), "{stdout}");
    assert!(stdout.contains("marker\n"), "{stdout}");
    assert!(
        stdout.contains("host=pod-a uid=1000 cwd=/work hello\n"),
        "{stdout}"
    );
    // The container's sleep is visible: the command shares its PID namespace.
    assert!(stdout.contains("\n1\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // A command the image does not have: 127 and the reason.
    let mut cmd = rt.exec_command("c4", &["nosuch".into()], false).unwrap();
    cmd.stderr(std::process::Stdio::piped());
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"nosuch\": executable file not found in $PATH"),
        "{err}"
    );

    rt.signal("c4", nix::sys::signal::Signal::SIGKILL).unwrap();
    rt.wait("c4", Some(shim)).await;
    // An ended container takes no commands.
    assert!(matches!(
        rt.exec_command("c4", &["true".into()], false),
        Err(cairn_runtime::Error::NotRunning(_))
    ));
    rt.remove("c4").unwrap();
}

#[tokio::test]
async fn a_container_with_stdin_reads_what_is_written_to_its_fifo() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = spec(
        tmp.path(),
        "c5",
        &["sh", "-c", "while read l; do echo echo:$l; done"],
    );
    s.stdin = true;
    let (_, shim) = rt.start(&s).await.unwrap();
    let fifo = rt.stdin_path("c5").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = log_text(&s.log);
        if text.contains("echo:two") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text, "echo:one\necho:two\n");
    // Writers closing never ends the container's input.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rt.running("c5"));
    rt.signal("c5", nix::sys::signal::Signal::SIGKILL).unwrap();
    rt.wait("c5", Some(shim)).await;
    rt.remove("c5").unwrap();
}

#[tokio::test]
async fn exec_with_a_terminal_of_the_container_and_its_window_size() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let s = spec(tmp.path(), "c6", &["sleep", "60"]);
    let (_, shim) = rt.start(&s).await.unwrap();
    let mut cmd = rt
        .exec_command(
            "c6",
            &[
                "sh".into(),
                "-c".into(),
                "sleep 0.5; tty; stty size; read l; echo got:$l".into(),
            ],
            true,
        )
        .unwrap();
    // Window sizes go in on fd 3.
    let (size_r, size_w) = nix::unistd::pipe().unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&size_r);
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::dup2(raw, 3)?;
            Ok(())
        });
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(size_r);
    std::fs::File::from(size_w).write_all(b"100 40\n").unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // The container's own devpts names the terminal.
    assert!(text.contains("/dev/pts/0\r\n"), "{text}");
    assert!(text.contains("40 100\r\n"), "{text}");
    assert!(text.contains("got:typed\r\n"), "{text}");
    rt.signal("c6", nix::sys::signal::Signal::SIGKILL).unwrap();
    rt.wait("c6", Some(shim)).await;
    rt.remove("c6").unwrap();
}
