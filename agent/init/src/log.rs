//! Console and kernel-log output. Every line starts with `cairn-init: ` (the markers in
//! docs/design.md) and goes to stdout (the kernel console) and, once it is open, to
//! `/dev/kmsg` so it also lands in `dmesg`.
//!
//! Nothing here may panic: `print!` panics when the console write fails, so lines are written
//! with `write_all` and errors are dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

pub const PREFIX: &str = "cairn-init: ";

static KMSG: Mutex<Option<File>> = Mutex::new(None);

/// Opens `/dev/kmsg` for writing (close-on-exec). Called again after a switch of root is
/// harmless: the previous handle is replaced.
pub fn open_kmsg() {
    if let Ok(file) = OpenOptions::new().write(true).open("/dev/kmsg") {
        if let Ok(mut guard) = KMSG.lock() {
            *guard = Some(file);
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open, pointing missing ones at `/dev/console`. The kernel
/// opens the console for init only when the initramfs has a `/dev/console` node.
pub fn ensure_console() {
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    let closed = |fd: RawFd| {
        let r = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
        r == -1 && Errno::last() == Errno::EBADF
    };
    let missing: Vec<RawFd> = (0..3).filter(|&fd| closed(fd)).collect();
    if missing.is_empty() {
        return;
    }
    let Ok(console) = open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    ) else {
        return;
    };
    for m in missing {
        if m != console.as_raw_fd() {
            // SAFETY: `m` is not open (checked above), so nothing else owns the number; the
            // copy stays open for the life of the process.
            if let Ok(copy) = unsafe { nix::unistd::dup2_raw(&console, m) } {
                let _ = copy.into_raw_fd();
            }
        }
    }
    if console.as_raw_fd() <= 2 {
        // It is one of 0-2 itself: keep it open.
        let _ = console.into_raw_fd();
    }
}

/// Writes one line at kernel log level `level` (6 = info, 4 = warning, 2 = critical).
pub fn line(level: u8, msg: &str) {
    let text = format!("{PREFIX}{msg}\n");
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    // try_lock: a panic hook running while the lock is held must not deadlock.
    if let Ok(mut guard) = KMSG.try_lock() {
        if let Some(kmsg) = guard.as_mut() {
            let _ = kmsg.write_all(format!("<{level}>{text}").as_bytes());
        }
    }
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line(6, &format!($($arg)*)) };
}
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::line(4, &format!("warning: {}", format!($($arg)*))) };
}
