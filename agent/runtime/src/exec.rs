//! `cairn container-exec DIR [--tty] -- COMMAND...`: runs a command inside a running container
//! (`kubectl exec`, exec probes).
//!
//! A fresh, single-threaded process (the kubelet's own is multi-threaded, and `setns` into a
//! mount namespace is refused to a process sharing its filesystem context) that joins the
//! container's cgroup and its namespaces (IPC, UTS, network, PID, mount: after the last its
//! root is the container's), then forks so the command is inside the PID namespace too. The
//! command runs as the container's user, in its working directory, with its environment.
//!
//! Without `--tty` the caller's stdin, stdout and stderr are the command's. With `--tty` the
//! command gets a terminal of the container's own devpts (so `tty` names it, as in any
//! runtime) as its controlling terminal, and this process relays: stdin into the terminal,
//! the terminal's output to stdout, and window sizes read from fd 3 (`<cols> <rows>` lines,
//! when the caller passes one) onto the terminal.
//!
//! It exits with the command's status (128 + the signal that killed it), or [`CANNOT_RUN`] /
//! [`NOT_FOUND`] with the reason on stderr when the command could not be started.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{self, ForkResult, Pid};

use crate::shim::{become_user, execute, process_env};
use crate::spec::ContainerSpec;
use crate::{EXIT_FILE, PID_FILE, SPEC_FILE};

/// The subcommand of `cairn` that runs [`main`].
pub const SUBCOMMAND: &str = "container-exec";

/// Exit status when the command exists but could not be run (as shells and runc report it).
pub const CANNOT_RUN: i32 = 126;
/// Exit status when the command was not found in the container.
pub const NOT_FOUND: i32 = 127;

/// The namespaces joined, in order: the mount namespace last, since entering it changes the
/// root under which the others' `/proc` paths were opened.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs `command` in the container of `dir`; returns the exit status for the process.
pub fn main(dir: &Path, tty: bool, command: &[String]) -> i32 {
    match run(dir, tty, command) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "cairn: exec failed: {e}");
            CANNOT_RUN
        }
    }
}

fn context<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

fn run(dir: &Path, tty: bool, command: &[String]) -> io::Result<i32> {
    if command.is_empty() {
        return Err(io::Error::other("no command given"));
    }
    let spec_path = dir.join(SPEC_FILE);
    let spec: ContainerSpec =
        serde_json::from_slice(&fs::read(&spec_path).map_err(context(spec_path.display()))?)
            .map_err(context(spec_path.display()))?;
    if dir.join(EXIT_FILE).exists() {
        return Err(io::Error::other(format!(
            "container {} is not running",
            spec.id
        )));
    }
    let pid = fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok())
        .ok_or_else(|| io::Error::other(format!("container {} has not started", spec.id)))?;

    // Open every namespace first: each is a file under the node's /proc.
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = File::open(&path).map_err(|e| {
            io::Error::other(format!(
                "container {} is not running ({path}: {e})",
                spec.id
            ))
        })?;
        namespaces.push((file, flag, name));
    }
    if let Some(cg) = &spec.cgroup {
        let procs = cg.join("cgroup.procs");
        fs::write(&procs, "0").map_err(context(procs.display()))?;
    }
    for (file, flag, name) in &namespaces {
        setns(file.as_fd(), *flag).map_err(context(format!("joining the {name} namespace")))?;
    }
    drop(namespaces);
    let terminal = if tty {
        Some(open_terminal().map_err(context("a terminal in the container"))?)
    } else {
        None
    };

    // SAFETY: this process is single-threaded, so the child may do anything before exec.
    match unsafe { unistd::fork() }.map_err(context("fork"))? {
        ForkResult::Child => {
            let err = match &terminal {
                Some((master, slave)) => {
                    let _ = unistd::close(master.as_raw_fd());
                    child_terminal(slave).map_or_else(|e| e, |()| child(&spec, command, true))
                }
                None => child(&spec, command, false),
            };
            let code = if err.kind() == io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_RUN
            };
            let _ = writeln!(io::stderr(), "{err}");
            // SAFETY: leaves the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            if let Some((master, slave)) = terminal {
                drop(slave);
                if let Some(code) = relay(child, master) {
                    return Ok(code);
                }
            }
            Ok(wait(child))
        }
    }
}

/// A new terminal from the container's `/dev/ptmx`: its controlling side and the terminal.
fn open_terminal() -> io::Result<(PtyMaster, File)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(&name)
        .map_err(context(&name))?;
    Ok((master, slave))
}

/// In the child: the terminal becomes stdin, stdout, stderr and the controlling terminal of a
/// new session.
fn child_terminal(slave: &File) -> io::Result<()> {
    unistd::setsid().map_err(context("setsid"))?;
    for fd in 0..3 {
        unistd::dup2(slave.as_raw_fd(), fd).map_err(context("dup2"))?;
    }
    // SAFETY: TIOCSCTTY on stdin, which is now the terminal.
    let rc = unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) };
    if rc != 0 {
        return Err(context("making the terminal the controlling one")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Copies stdin into the terminal and its output to stdout, applies window sizes from fd 3,
/// until the terminal is closed by the command's side, or the command has ended and its
/// output is drained. Returns the command's exit status if it was reaped here.
fn relay(child: Pid, master: PtyMaster) -> Option<i32> {
    // SAFETY: fd 3, when open, is the caller's size channel, owned from here on.
    let control = nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_GETFD)
        .is_ok()
        .then(|| unsafe { File::from_raw_fd(3) });
    let stdin = io::stdin();
    let mut stdin_open = true;
    let mut buf = [0u8; 16 * 1024];
    let mut sizes = String::new();
    let mut status: Option<(i32, std::time::Instant)> = None;
    loop {
        if status.is_none() {
            status = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some((code, std::time::Instant::now())),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    Some((128 + sig as i32, std::time::Instant::now()))
                }
                _ => None,
            };
        }
        // Output still in the terminal after the command ended: a moment to drain it.
        if let Some((code, at)) = status {
            if at.elapsed() > std::time::Duration::from_millis(300) {
                return Some(code);
            }
        }
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let stdin_at = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let control_at = control.as_ref().map(|c| {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return status.map(|s| s.0),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            match unistd::read(master.as_raw_fd(), &mut buf) {
                // EIO: every process holding the terminal has closed it.
                Ok(0) | Err(_) => return status.map(|s| s.0),
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        return status.map(|s| s.0);
                    }
                }
            }
        }
        if stdin_at.is_some_and(|i| ready[i]) {
            match unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                        return status.map(|s| s.0);
                    }
                }
            }
        }
        if let (Some(i), Some(c)) = (control_at, &control) {
            if ready[i] {
                if let Ok(n @ 1..) = unistd::read(c.as_raw_fd(), &mut buf) {
                    sizes.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(nl) = sizes.find('\n') {
                        let line: String = sizes.drain(..=nl).collect();
                        set_size(&master, &line);
                    }
                }
            }
        }
    }
}

fn write_all(fd: std::os::fd::RawFd, mut data: &[u8]) -> nix::Result<()> {
    // SAFETY: `fd` is open for the whole call (the caller owns it).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `<cols> <rows>` onto the terminal.
fn set_size(master: &PtyMaster, line: &str) {
    let mut it = line.split_whitespace().map(|n| n.parse::<u16>());
    let (Some(Ok(cols)), Some(Ok(rows))) = (it.next(), it.next()) else {
        return;
    };
    let size = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe {
        nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ as _, &size);
    }
}

/// In the container's namespaces: become its user and exec (the command dies with this
/// process, which the kubelet kills when the client leaves).
fn child(spec: &ContainerSpec, command: &[String], tty: bool) -> io::Error {
    match become_user(spec) {
        Ok(()) => execute(command, &process_env(spec, tty)),
        Err(e) => e,
    }
}

fn wait(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return CANNOT_RUN,
        }
    }
}
