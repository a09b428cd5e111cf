//! `cairn-init`: the PID 1 of a Cairn node.
//!
//! One static binary plays two parts (docs/design.md is the contract):
//!
//! * **Stage 1**, `/init` in the initramfs: mount `/dev /proc /sys`, load the modules listed
//!   in `/etc/cairn/modules` in `modules.dep` order, pick the A/B slot (`cairn.slot=`, else
//!   the first slot entry on the boot partition, see `cairn-slots`, else `a`), wait for the partition labelled
//!   `cairn-<slot>`, mount it read-only (squashfs, then erofs), move the pseudo filesystems
//!   over, free the initramfs and exec `/sbin/init` there with `CAIRN_STAGE=2`. A network
//!   boot carries its root in the initramfs (`/cairn/rootfs.squashfs`, mounted through a
//!   loop device) and its seed as `/boot/cairn` (kept on a tmpfs at the new root's `/boot`).
//! * **Stage 2**, `/sbin/init` of the read-only root: mount `/run /tmp`, cgroup2, `/dev/pts`,
//!   `/dev/shm`; mount `/boot`; render the node config with `cairn config render`; grow,
//!   check or format and mount the ext4 data partition at `/var`; set the hostname; bring up
//!   the network (static or a built-in DHCP client); then supervise `cairn <role>` (restart
//!   with back-off), reap zombies, and turn signals and the power button into an orderly
//!   poweroff or reboot.
//! * **`cairn-init load-modules FILE`**: loads the modules FILE lists, with their
//!   dependencies; `cairn`'s kubelet runs it for the pod network's bridge and nftables
//!   modules, which the board ships but stage 1 does not load; see `modules.rs`.
//!
//! Design: std + nix only, no async runtime and no YAML. Signals are blocked and read from a
//! signalfd in one poll loop; helper programs and `cairn` start with an empty signal mask
//! (`sys::command`; `std::process::Command` would pass the blocked mask on). Pure logic (command line, `modules.dep` order, config lines,
//! GPT and CRC32, DHCP packets, back-off, input events) is unit-tested on the host; the raw
//! ioctls (`BLKPG`, `EXT4_IOC_RESIZE_FS`, interface and route ioctls) and all `unsafe` live
//! in `sys.rs`. Any error that stops the boot prints `cairn-init: FATAL: <reason>` and reboots
//! after 10 s unless `cairn.stay=1`; a panic goes the same way (the release profile aborts on
//! panic, which for PID 1 would be a kernel panic). Run by hand, it prints help and exits 2.
//!
//! Size (release, static glibc, opt-level z, LTO, stripped): aarch64 1,124,480 bytes, armv7
//! 898,964, s390x 1,337,408; over the 1 MiB goal on 64-bit targets. A static glibc "hello
//! world" built the same way is already 928 KB on aarch64: glibc is ~510 KB and std's
//! backtrace symbolizer (gimli, addr2line, miniz) ~125 KB, which only a musl target or
//! nightly `build-std` with `panic_immediate_abort` would remove. Init's own code is ~60 KB.
//!
//! Current limitations:
//! * IPv4 only: no DHCPv6 (the kernel still does SLAAC); DHCP has no option overload or
//!   relay support, renews in the REBINDING form, keeps using an expired address while it
//!   looks for a server, and its retries block the loop for up to 4 s.
//! * One supervised service; its output goes to the console, not to a log file.
//! * A missing or unmountable data partition is fatal, except on boards whose board file
//!   says `data_fallback=tmpfs` (network-booted ones), where a missing one means a tmpfs.
//! * The power button devices are rescanned every 30 s, so a late driver can miss a press.
//! * Mount and syscall sequences are not behind a test seam; they are exercised by booting.
//! * Boards without a battery-backed clock rely on `/etc/e2fsck.conf`
//!   (`broken_system_clock = 1`, from overlays/common) so that `e2fsck -p` does not
//!   "repair" superblock times from the future on every boot.

#[macro_use]
mod log;

mod blockdev;
mod clock;
mod cmdline;
mod config;
mod data;
mod dhcp;
mod error;
mod gpt;
mod mbr;
mod modules;
mod mounts;
mod net;
mod power;
mod shutdown;
mod stage1;
mod stage2;
mod supervisor;
mod sys;

use std::ffi::OsStr;
use std::io::Write;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::Duration;

use nix::sys::reboot::{reboot, RebootMode};
use nix::time::{clock_gettime, ClockId};

use crate::cmdline::Cmdline;

const VERSION: &str = match option_env!("CAIRN_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

const USAGE: &str = "\
cairn-init: the PID 1 of a Cairn node; it is started by the kernel, not by hand.

  stage 1  /init in the initramfs: mounts the slot's read-only root and switches to it
  stage 2  /sbin/init with CAIRN_STAGE=2: mounts /var, brings up the network, runs cairn

Kernel command line: cairn.slot=a|b  cairn.stay=1  cairn.cad=poweroff|reboot
Signals to PID 1: SIGTERM/SIGUSR2/SIGPWR power off, SIGUSR1 reboots, SIGINT = cairn.cad.

Usage: cairn-init --version
       cairn-init load-modules FILE   load the kernel modules FILE lists (one per line)
";

static CMDLINE: OnceLock<Cmdline> = OnceLock::new();

/// The kernel command line, read once `/proc` is mounted; warns about bad `cairn.*` values.
pub fn cmdline() -> Cmdline {
    CMDLINE
        .get_or_init(|| {
            let c = cmdline::load();
            for bad in &c.invalid {
                warn!("ignoring kernel parameter {bad}");
            }
            c
        })
        .clone()
}

/// Milliseconds since boot, including time suspended.
#[allow(clippy::useless_conversion)] // time_t and c_long are 32-bit on armv7
pub fn uptime_ms() -> i64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| i64::from(t.tv_sec()) * 1000 + i64::from(t.tv_nsec()) / 1_000_000)
        .unwrap_or(0)
}

/// Milliseconds spent in each step of a boot stage, for its `steps_ms` marker
/// (`cairnctl bench` shows where the time goes).
pub struct Steps {
    last: i64,
    done: Vec<(&'static str, i64)>,
}

impl Steps {
    /// Starts counting at `uptime` (the stage's start marker).
    pub fn since(uptime: i64) -> Steps {
        Steps {
            last: uptime,
            done: Vec::new(),
        }
    }

    /// Ends the step called `name`, which began where the previous one ended.
    pub fn end(&mut self, name: &'static str) {
        let now = uptime_ms();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// `name=ms` pairs in the order they were taken.
    pub fn summary(&self) -> String {
        let pairs: Vec<String> = self
            .done
            .iter()
            .map(|(n, ms)| format!("{n}={ms}"))
            .collect();
        pairs.join(" ")
    }
}

/// Stops the boot: `FATAL: <reason>`, then a reboot after 10 s, or with `cairn.stay=1` an
/// endless sleep. Never returns, never exits (PID 1 exiting panics the kernel).
pub fn fatal(reason: &str) -> ! {
    log::line(4, &format!("FATAL: {reason}"));
    let stay = CMDLINE.get().cloned().unwrap_or_else(cmdline::load).stay;
    nix::unistd::sync();
    if stay {
        log::line(
            4,
            "cairn.stay=1: staying up; fix the problem and power cycle",
        );
    } else {
        log::line(
            4,
            "rebooting in 10 s (cairn.stay=1 on the kernel command line stays instead)",
        );
        sleep(Duration::from_secs(10));
        nix::unistd::sync();
        let _ = reboot(RebootMode::RB_AUTOBOOT);
        log::line(4, "reboot(2) failed, staying");
    }
    loop {
        sleep(Duration::from_secs(3600));
    }
}

/// Stage 2 when the environment says so, or when `/` is not an initramfs (a boot without
/// one, e.g. `root=PARTLABEL=cairn-a`); stage 1 otherwise.
fn is_stage2() -> bool {
    if std::env::var_os("CAIRN_STAGE").as_deref() == Some(OsStr::new("2")) {
        return true;
    }
    !mounts::root_is_initramfs()
}

/// Static musl builds link GCC's unwinder (`libgcc_eh`) for std's backtrace code, and GCC
/// 12's looks frames up with glibc's `_dl_find_object`, which musl does not have. Init
/// aborts on panic and prints no backtraces: "no object" makes the unwinder stop at once.
#[cfg(target_env = "musl")]
#[no_mangle]
pub extern "C" fn _dl_find_object(
    _pc: *mut std::ffi::c_void,
    _result: *mut std::ffi::c_void,
) -> i32 {
    -1
}

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("--version")) {
        let _ = writeln!(std::io::stdout(), "cairn-init {VERSION}");
        std::process::exit(0);
    }
    // `cairn`'s kubelet has the pod network's modules loaded when it makes the network.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let [cmd, list] = args.as_slice() {
        if cmd == "load-modules" {
            log::open_kmsg();
            let list = list.to_string_lossy();
            std::process::exit(if modules::load_listed(&list) { 0 } else { 1 });
        }
    }
    if nix::unistd::getpid().as_raw() != 1 {
        let _ = std::io::stderr().write_all(USAGE.as_bytes());
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| fatal(&format!("panic: {info}"))));
    let result = if is_stage2() {
        stage2::run()
    } else {
        stage1::run()
    };
    match result {
        Err(e) => fatal(&e.to_string()),
        Ok(never) => match never {},
    }
}
