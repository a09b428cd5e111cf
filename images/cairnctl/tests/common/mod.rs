//! Helpers shared by the QEMU test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairnctl::qemu::{self, Stop, Vm, VmOptions};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A loopback port nothing listens on (for QEMU's forwarded API port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A built board: its config and `out/<board>` (which must hold `disk.img`).
pub fn built_board(board_name: &str) -> (cairnctl::board::Board, PathBuf) {
    let repo = repo();
    let board = cairnctl::board::load(&repo.join("board-configs"), board_name).unwrap();
    let out = repo.join("out").join(board_name);
    assert!(
        out.join("disk.img").is_file(),
        "{}/disk.img is missing: run `make image BOARD={board_name}` (make test does)",
        out.display()
    );
    (board, out)
}

/// The real kubectl with `kubeconfig`: its stdout. A failure panics with what `context` says
/// (the guests' console tails). Several emulated machines share two cores in CI: a guest can
/// stall past kubectl's HTTP/2 health check, so such a failure is retried once (every command
/// the tests run this way is idempotent or a read).
pub fn kubectl(kubeconfig: &Path, args: &[&str], context: impl Fn() -> String) -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let run = || {
        Command::new(&bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {bin} ({e}): `make deps` installs kubectl"))
    };
    let mut out = run();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && transient_kubectl_error(&stderr) {
        eprintln!("kubectl {args:?}: {} (retrying once)", stderr.trim());
        std::thread::sleep(Duration::from_secs(5));
        out = run();
    }
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether kubectl failed only because an emulated guest stalled past its HTTP/2 health
/// check or TLS handshake (several emulated machines share two cores in CI): worth one retry
/// of a command that is idempotent or a read.
fn transient_kubectl_error(stderr: &str) -> bool {
    [
        "client connection lost",
        "TLS handshake timeout",
        "connection reset",
    ]
    .iter()
    .any(|t| stderr.contains(t))
}

/// Runs this build's `cairnctl` in the repository; its stdout. A failure panics with stderr.
pub fn cairnctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairnctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the image at `version` from the same device binaries and bundles it, as
/// `make bundle BOARD=.. VERSION=..` does (without rebuilding the binaries).
pub fn make_bundle(board: &str, version: &str, break_health: bool) -> PathBuf {
    let repo = repo();
    let dir = repo.join("out").join(board).join("update-test");
    let image = dir.join(format!("v{version}"));
    let bundle = dir.join(format!("v{version}.cairnb"));
    let run = |args: &[&str]| drop(cairnctl(args));
    run(&[
        "build",
        "--board",
        board,
        "--image-version",
        version,
        "--out",
        image.to_str().unwrap(),
        "--quiet",
        "--no-disk-archive",
    ]);
    let mut args = vec![
        "bundle",
        "--board",
        board,
        "--image-dir",
        image.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ];
    if break_health {
        args.push("--break-health");
    }
    run(&args);
    bundle
}

/// Keeps a node running the way `make qemu` does: QEMU is relaunched on the same disk
/// whenever the guest reboots, and when the test kills it (a power cut).
pub struct KeptVm {
    pub o: VmOptions,
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    /// How many times QEMU was launched (a reboot or a power cut launches it again).
    pub launches: Arc<AtomicUsize>,
    keeper: Option<JoinHandle<()>>,
}

impl KeptVm {
    pub fn start(o: VmOptions) -> KeptVm {
        qemu::prepare(&o).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let kill = Arc::new(AtomicBool::new(false));
        let launches = Arc::new(AtomicUsize::new(0));
        let (s, k, l, opts) = (stop.clone(), kill.clone(), launches.clone(), o.clone());
        let keeper = std::thread::spawn(move || loop {
            let mut vm = Vm::launch(&opts).unwrap();
            l.fetch_add(1, Ordering::SeqCst);
            let stopped = loop {
                if s.load(Ordering::SeqCst) {
                    vm.kill();
                    return;
                }
                if k.swap(false, Ordering::SeqCst) {
                    vm.kill();
                    break Stop::Other("killed".into());
                }
                if let Some(st) = vm.wait(Duration::from_millis(100)).unwrap() {
                    break st;
                }
            };
            match stopped {
                Stop::GuestReset | Stop::Other(_) => continue,
                Stop::GuestShutdown => return,
            }
        });
        KeptVm {
            o,
            stop,
            kill,
            launches,
            keeper: Some(keeper),
        }
    }

    pub fn console(&self) -> String {
        qemu::read_lossy(&self.o.console_log())
    }

    pub fn console_len(&self) -> usize {
        self.console().len()
    }

    /// Waits for `marker` in the console after `from`; returns the offset after it.
    pub fn wait_for(&self, marker: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if let Some(i) = text.get(from..).and_then(|t| t.find(marker)) {
                return from + i + marker.len();
            }
            assert!(
                Instant::now() < deadline,
                "no `{marker}` within {timeout:?}; console:\n{}",
                qemu::tail(&text, 50)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Cuts the power: QEMU is killed and launched again.
    pub fn power_cut(&self) {
        let before = self.launches.load(Ordering::SeqCst);
        self.kill.store(true, Ordering::SeqCst);
        while self.launches.load(Ordering::SeqCst) == before {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KeptVm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

/// The real kubectl against a VM's admin kubeconfig; a failure shows the console tail.
pub fn vm_kubectl(vm: &Vm, o: &VmOptions, args: &[&str]) -> String {
    kubectl(&o.kubeconfig(), args, || {
        format!("console:\n{}", qemu::tail(&vm.console_text(), 30))
    })
}

/// Polls `kubectl args` on a VM until `done` holds for its output, for up to `within`.
pub fn vm_kubectl_until(
    vm: &Vm,
    o: &VmOptions,
    args: &[&str],
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = vm_kubectl(vm, o, args);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} never got there: {out}\nconsole:\n{}",
            qemu::tail(&vm.console_text(), 40)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
