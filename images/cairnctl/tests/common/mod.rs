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
        KeptVm::start_prepared(o)
    }

    /// [`KeptVm::start`] on a node disk `qemu::prepare` made already (and a test changed).
    pub fn start_prepared(o: VmOptions) -> KeptVm {
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

/// Leaves on the FAT32 partition `label` of `disk` what a power cut in the middle of writing
/// a boot file leaves: a chain of clusters no directory entry owns, whose last link points far
/// past the end of the FAT (in both FAT copies), and the dirty bit Linux set when it mounted
/// the partition writable.
pub fn damage_fat(disk: &Path, label: &str) {
    use std::os::unix::fs::FileExt;
    let (offset, _) = cairnctl::disk::find_partition(disk, label).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, offset).unwrap();
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]));
    let (bps, spc, reserved, fats) = (u16_at(11), u64::from(bs[13]), u16_at(14), u64::from(bs[16]));
    let (total, fat_sectors) = (u32_at(32), u32_at(36));
    assert!(fat_sectors > 0 && u16_at(22) == 0, "{label} is not FAT32");
    assert_eq!(bs[0x41] & 1, 0, "dirty before the damage");
    f.write_all_at(&[bs[0x41] | 1], offset + 0x41).unwrap();
    let clusters = (total - reserved - fats * fat_sectors) / spc;
    // The last two data clusters: free on a boot partition that is far from full.
    let (first, second) = (clusters, clusters + 1);
    for i in 0..fats {
        let fat = offset + (reserved + i * fat_sectors) * bps;
        for (cluster, value) in [(first, second as u32), (second, 0x00FF_FFF0)] {
            let mut old = [0u8; 4];
            f.read_exact_at(&mut old, fat + 4 * cluster).unwrap();
            assert_eq!(
                u32::from_le_bytes(old) & 0x0FFF_FFFF,
                0,
                "cluster {cluster} in use"
            );
            f.write_all_at(&value.to_le_bytes(), fat + 4 * cluster)
                .unwrap();
        }
    }
}

/// `fsck.fat -n` of the partition `label` of `disk` (copied out to `scratch`, as fsck.fat
/// takes no offset): true when it finds nothing to repair.
pub fn fat_clean(disk: &Path, label: &str, scratch: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let (offset, size) = cairnctl::disk::find_partition(disk, label).unwrap();
    let mut bytes = vec![0u8; size as usize];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut bytes, offset)
        .unwrap();
    std::fs::write(scratch, &bytes).unwrap();
    let out = std::process::Command::new("/usr/sbin/fsck.fat")
        .arg("-n")
        .arg(scratch)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(scratch);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    out.status.success()
}
