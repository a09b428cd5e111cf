//! `cairn container-exec DIR [--tty] -- COMMAND...`: runs a command inside a running container
//! (`kubectl exec`, exec probes).
//!
//! A fresh, single-threaded process (the kubelet's own is multi-threaded, and `setns` into a
//! mount namespace is refused to a process sharing its filesystem context) that joins the
//! container's cgroup and its namespaces (IPC, UTS, network, PID, mount: after the last its
//! root is the container's), then forks so the command is inside the PID namespace too. The
//! command runs as the container's user, in its working directory, with its environment; the
//! caller's stdin, stdout and stderr are passed on unchanged (a pipe, or a terminal with
//! `--tty`, which becomes the command's controlling terminal). It exits with the command's
//! status (128 + the signal that killed it), or [`CANNOT_RUN`] / [`NOT_FOUND`] with the reason
//! on stderr when the command could not be started.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{self, ForkResult, Gid, Pid, Uid};

use crate::shim::{execute, process_env};
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
            io::Error::other(format!("container {} is not running ({path}: {e})", spec.id))
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

    // SAFETY: this process is single-threaded, so the child may do anything before exec.
    match unsafe { unistd::fork() }.map_err(context("fork"))? {
        ForkResult::Child => {
            let err = child(&spec, tty, command);
            let code = if err.kind() == io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_RUN
            };
            let _ = writeln!(io::stderr(), "{err}");
            // SAFETY: leaves the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(wait(child)),
    }
}

/// In the container's namespaces: become its user and exec.
fn child(spec: &ContainerSpec, tty: bool, command: &[String]) -> io::Error {
    let setup = || -> io::Result<()> {
        if tty {
            unistd::setsid().map_err(context("setsid"))?;
            // SAFETY: TIOCSCTTY on stdin, which the caller made a terminal.
            let rc = unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) };
            if rc != 0 {
                return Err(context("making the terminal the controlling one")(
                    io::Error::last_os_error(),
                ));
            }
        }
        let gids: Vec<Gid> = spec
            .supplementary_gids
            .iter()
            .map(|&g| Gid::from_raw(g))
            .collect();
        unistd::setgroups(&gids).map_err(context("setgroups"))?;
        unistd::setgid(Gid::from_raw(spec.gid)).map_err(context("setgid"))?;
        unistd::setuid(Uid::from_raw(spec.uid)).map_err(context("setuid"))?;
        // The command goes when this process does (the kubelet kills it when the client
        // leaves). Set after setuid, which clears it.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(context("prctl"))?;
        let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
        unistd::chdir(cwd).map_err(context(format!("chdir {cwd}")))?;
        Ok(())
    };
    match setup() {
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
