//! Shared by the integration tests: the real `cairn server` process on 127.0.0.1.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub ready: String,
    /// stderr up to the "listening on" line.
    pub log: Vec<String>,
    /// The stderr lines after it, as they come.
    pub stderr: mpsc::Receiver<String>,
    /// The pod bridge of its kubelet (taken down when the server is dropped).
    pub bridge: String,
}

/// A pod bridge and cluster range of their own for every data dir a test process starts
/// `cairn` on (the same again when it restarts on it), so kubelets of tests running side by
/// side never share a bridge or a gateway address: `ct<pid>-<n>` and `100.<64+n>.0.0/16`.
pub fn pod_network_for(data: &Path) -> (String, String) {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    let n = match dirs.iter().position(|d| d == data) {
        Some(n) => n,
        None => {
            dirs.push(data.to_owned());
            dirs.len() - 1
        }
    };
    (
        format!("ct{}-{n}", std::process::id() % 100_000),
        format!("100.{}.0.0/16", 64 + n % 64),
    )
}

impl Server {
    /// `cairn server` on 127.0.0.1, port 0, data in `data`, node config `data/node.yaml`,
    /// kubeconfig `data/admin.kubeconfig`.
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        Server::start_role("server", data, extra)
    }

    /// `cairn ROLE` (server or agent) as [`Server::start`] describes.
    pub fn start_role(role: &str, data: &Path, extra: &[&str]) -> Server {
        Server::start_role_env(role, data, extra, &[])
    }

    /// [`Server::start_role`] with extra environment variables.
    pub fn start_role_env(role: &str, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        if !data.join("node.yaml").exists() {
            fs::write(data.join("node.yaml"), "hostname: test-node\n").unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.arg(role)
            .arg("--data-dir")
            .arg(data)
            .args(["--bind-address", "127.0.0.1"])
            .args(["--kubelet-port", "0"])
            .arg("--node-config")
            .arg(data.join("node.yaml"));
        if !extra.contains(&"--https-listen-port") {
            cmd.args(["--https-listen-port", "0"]);
        }
        if role == "server" {
            cmd.arg("--write-kubeconfig")
                .arg(data.join("admin.kubeconfig"));
        }
        let (bridge, cluster_cidr) = pod_network_for(data);
        if role == "server" && !extra.contains(&"--cluster-cidr") {
            cmd.args(["--cluster-cidr", &cluster_cidr]);
        }
        cmd.env("CAIRN_POD_BRIDGE", &bridge);
        let mut child = cmd
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let (tx, stderr) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                eprintln!("[cairn] {line}");
                let _ = tx.send(line);
            }
        });
        let mut port = None;
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while port.is_none() {
            let line = stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("cairn did not report its address");
            port = line
                .strip_prefix("cairn: listening on https://127.0.0.1:")
                .map(|p| p.parse().unwrap());
            log.push(line);
        }
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        Server {
            child,
            port: port.unwrap(),
            ready,
            log,
            stderr,
            bridge,
        }
    }

    /// The next stderr line containing `needle`, within `timeout`; panics with what came
    /// instead.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no stderr line with {needle:?}; got:\n{}", seen.join("\n")),
            }
        }
    }

    /// SIGTERM, then the exit status within two seconds.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("cairn did not exit within 2 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if nix::unistd::geteuid().is_root() {
            let _ = cairn_net::teardown(&self.bridge, cairn_net::TABLE);
        }
    }
}

/// Kills what a test's `cairn` leaves running under its data dir `dir`: the container shims,
/// which outlive `cairn` by design (a restarted node finds its containers), and the
/// containers they started. For the end of a test that does not delete its pods.
pub fn stop_containers_under(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let pids = || -> Vec<i32> {
        fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let shims: Vec<i32> = pids()
        .into_iter()
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"container-shim"[..])
                && args
                    .get(2)
                    .is_some_and(|a| Path::new(std::ffi::OsStr::from_bytes(a)).starts_with(dir))
        })
        .collect();
    // A container is its shim's child and the first process of its own PID namespace:
    // killing it ends everything in the container.
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let containers: Vec<i32> = pids()
        .into_iter()
        .filter(|pid| parent_of(*pid).is_some_and(|p| shims.contains(&p)))
        .collect();
    for pid in containers.into_iter().chain(shims) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Runs the `cairn` binary once: (success, stdout, stderr).
pub fn cairn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), s(&out.stdout), s(&out.stderr))
}

/// A fresh directory for one test.
pub fn temp_data_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-{tag}-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real kubectl (`KUBECTL` overrides the path).
pub fn kubectl_path() -> PathBuf {
    let path = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let ok = Command::new(&path)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{path} not found or not working: `make deps` installs kubectl"
    );
    PathBuf::from(path)
}

/// kubectl with a kubeconfig and arguments for every command.
pub struct Kubectl {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// Extra arguments before every command (credentials).
    pub extra: Vec<String>,
}

impl Kubectl {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.config)
            .args(&self.extra)
            .args(args);
        c
    }

    /// Run; returns (success, stdout, stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd(args).output().expect("run kubectl");
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), s(&out.stdout), s(&out.stderr))
    }

    pub fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }
}

/// `busybox.oci.tar` and `httpd.oci.tar` for every architecture: from `CAIRN_TEST_IMAGES`
/// (what `make unit-test` builds), else built here with `cairnctl test-images` (the
/// registry tests push other architectures than this machine's).
pub fn test_images() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_TEST_IMAGES") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-images-all");
    if !dir.join("busybox.oci.tar").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "-q", "-p", "cairnctl", "--", "test-images", "-o"])
            .arg(&dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .status()
            .unwrap();
        assert!(status.success(), "cairnctl test-images failed");
    }
    dir
}

/// A cgroup2 hierarchy of the test's own under `dir` (the kubelet's `--cgroup-root`); the
/// caller unmounts it. Needs root.
pub fn mount_cgroup2(dir: &Path) -> PathBuf {
    let root = dir.join("cgroup");
    std::fs::create_dir_all(&root).unwrap();
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

/// A `cairn server` with its own worker on this machine (as root), the test images imported
/// and a cgroup2 of the test's own: its data directory, the server (its kubelet ready for
/// pods), a kubectl for it and the cgroup mount (the caller unmounts it).
pub fn worker(tag: &str) -> (PathBuf, Server, Kubectl, PathBuf) {
    worker_with(tag, |_| {})
}

/// [`worker`], with `prepare` run on the data directory before the server starts.
pub fn worker_with(tag: &str, prepare: impl FnOnce(&Path)) -> (PathBuf, Server, Kubectl, PathBuf) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir(tag);
    let images = dir.join("agent/images");
    fs::create_dir_all(&images).unwrap();
    for name in ["busybox.oci.tar", "httpd.oci.tar"] {
        fs::copy(test_images().join(name), images.join(name)).unwrap();
    }
    prepare(&dir);
    let cgroups = mount_cgroup2(&dir);
    let server = Server::start_with(&dir, &["--cgroup-root", cgroups.to_str().unwrap()]);
    // Images are imported before the kubelet takes pods.
    server.wait_line("running pods of node", Duration::from_secs(60));
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };
    (dir, server, k, cgroups)
}
