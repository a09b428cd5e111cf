//! The shim: one small process per container, `cairn container-shim DIR`.
//!
//! It enters the pod's network namespace, makes new mount, PID, UTS and IPC namespaces, forks
//! the container (PID 1 of its namespace), which builds its root from the overlay of the
//! image layers, pivots into it, drops to the container's user and execs the program. The shim
//! then copies the container's stdout and stderr into the log file, waits for it and records
//! how it ended in `exit.json`. It runs in its own session and ignores terminal signals, so
//! containers outlive a restart of `cairn`, which finds them again by their directory.
//!
//! The shim reports on its stdout exactly one line, `started <pid>` or `failed <reason>`, then
//! lets go of it.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{self, ForkResult, Gid, Uid};

use crate::logs::{LineSplitter, Stream, Writer};
use crate::spec::{ContainerSpec, DEFAULT_PATH};
use crate::{cgroup, Exit, EXIT_FILE, PID_FILE, SPEC_FILE};

/// The subcommand of `cairn` that runs [`main`].
pub const SUBCOMMAND: &str = "container-shim";

/// Signals the shim ignores so a terminal or `cairn`'s own shutdown never takes it down.
const IGNORED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGPIPE,
];

/// Runs the container described in `dir/spec.json`; returns the shim's exit code.
pub fn main(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            let message = format!("{e}");
            report(&format!("failed {message}"));
            let exit = Exit::start_error(message);
            let _ = exit.write(&dir.join(EXIT_FILE));
            1
        }
    }
}

fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn context<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

fn run(dir: &Path) -> io::Result<()> {
    let spec_path = dir.join(SPEC_FILE);
    let spec: ContainerSpec =
        serde_json::from_slice(&fs::read(&spec_path).map_err(context(spec_path.display()))?)
            .map_err(context(spec_path.display()))?;
    unistd::setsid().map_err(context("setsid"))?;
    for s in IGNORED {
        // SAFETY: installs SIG_IGN, no handler code runs.
        unsafe { signal(s, SigHandler::SigIgn) }.map_err(context("signal"))?;
    }
    let mut log =
        Writer::open(&spec.log, spec.log_max_bytes).map_err(context(spec.log.display()))?;
    let (out_r, out_w) = unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(context("pipe"))?;
    let (err_r, err_w) = unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(context("pipe"))?;
    let (sync_r, sync_w) = unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(context("pipe"))?;
    let stdin = if spec.stdin {
        Some(stdin_fifo(dir).map_err(context("making the container's stdin"))?)
    } else {
        None
    };
    let oom_before = spec
        .cgroup
        .as_deref()
        .map(cgroup::oom_kills_within)
        .unwrap_or(0);

    if let Some(ns) = &spec.netns {
        let file = File::open(ns).map_err(context(ns.display()))?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(context(format!("joining {}", ns.display())))?;
    }
    // The PID namespace applies to the shim's children: the container is its PID 1. The
    // other namespaces are made by the container itself, so that its pivot_root never moves
    // the shim's root.
    unshare(CloneFlags::CLONE_NEWPID).map_err(context("unshare"))?;

    // SAFETY: the shim is single-threaded, so the child may do anything before exec.
    let child = match unsafe { unistd::fork() }.map_err(context("fork"))? {
        ForkResult::Child => {
            drop((out_r, err_r, sync_r));
            let err = container(&spec, dir, stdin, out_w, err_w);
            let mut sync = File::from(sync_w);
            let _ = sync.write_all(err.to_string().as_bytes());
            // SAFETY: leaves the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(1) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((out_w, err_w, sync_w, stdin));
    let mut failure = String::new();
    File::from(sync_r).read_to_string(&mut failure)?;
    if !failure.is_empty() {
        let _ = waitpid(child, None);
        log.record(Stream::Stderr, false, failure.as_bytes())?;
        return Err(io::Error::other(failure));
    }
    let started_at = crate::logs::rfc3339_nanos(jiff::Timestamp::now());
    write_atomic(
        &dir.join(PID_FILE),
        format!("{} {started_at}\n", child.as_raw()).as_bytes(),
    )?;
    report(&format!("started {} {started_at}", child.as_raw()));
    let null = File::options().write(true).open("/dev/null")?;
    for fd in [1, 2] {
        unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd).map_err(context("dup2"))?;
    }

    copy_logs(out_r, err_r, &mut log);
    let status = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => break (128 + sig as i32, Some(sig as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("waiting for the container: {e}"))),
        }
    };
    let oom_killed = spec
        .cgroup
        .as_deref()
        .is_some_and(|c| cgroup::oom_kills_within(c) > oom_before)
        && status.1 == Some(Signal::SIGKILL as i32);
    let exit = Exit {
        exit_code: status.0,
        signal: status.1,
        oom_killed,
        started_at: Some(started_at),
        finished_at: crate::logs::rfc3339_nanos(jiff::Timestamp::now()),
        start_error: None,
    };
    exit.write(&dir.join(EXIT_FILE))
}

/// Copies both pipes into the log until both are closed (the container's PID 1 and everything
/// in its namespace are gone).
fn copy_logs(out: OwnedFd, err: OwnedFd, log: &mut Writer) {
    let mut files = [Some(File::from(out)), Some(File::from(err))];
    let mut splitters = [
        LineSplitter::new(Stream::Stdout),
        LineSplitter::new(Stream::Stderr),
    ];
    let mut buf = vec![0u8; 32 * 1024];
    while files.iter().any(Option::is_some) {
        let ready: Vec<usize> = {
            let mut fds: Vec<(usize, PollFd)> = files
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    f.as_ref()
                        .map(|f| (i, PollFd::new(f.as_fd(), PollFlags::POLLIN)))
                })
                .collect();
            let mut polls: Vec<PollFd> = fds.iter().map(|(_, p)| *p).collect();
            match poll(&mut polls, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
            for ((_, p), q) in fds.iter_mut().zip(&polls) {
                *p = *q;
            }
            fds.iter()
                .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| *i)
                .collect()
        };
        for i in ready {
            let Some(file) = files[i].as_mut() else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = splitters[i].finish(log);
                    files[i] = None;
                }
                // A full disk loses log lines, never the container.
                Ok(n) => {
                    let _ = splitters[i].feed(&buf[..n], log);
                }
            }
        }
    }
}

/// In the forked child: builds the container's world and execs its program. Returns only on
/// failure, with the reason.
/// `DIR/stdin`, a FIFO that `kubectl attach` writes into, opened for reading and writing so
/// the container never reads an end of file (`stdinOnce` is not supported).
fn stdin_fifo(dir: &Path) -> io::Result<File> {
    let path = dir.join(crate::STDIN_FIFO);
    let _ = fs::remove_file(&path);
    unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    File::options().read(true).write(true).open(&path)
}

fn container(
    spec: &ContainerSpec,
    dir: &Path,
    stdin: Option<File>,
    out: OwnedFd,
    err: OwnedFd,
) -> io::Error {
    match setup(spec, dir).and_then(|()| exec(spec, stdin, out, err)) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn setup(spec: &ContainerSpec, dir: &Path) -> io::Result<()> {
    for s in IGNORED {
        // SAFETY: restores default dispositions; no handler code.
        unsafe { signal(s, SigHandler::SigDfl) }.map_err(context("signal"))?;
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(context("unshare"))?;
    if let Some(cg) = &spec.cgroup {
        let procs = cg.join("cgroup.procs");
        fs::write(&procs, "0").map_err(context(procs.display()))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(context("making / private"))?;

    let rootfs = dir.join("rootfs");
    if spec.layers.is_empty() {
        return Err(io::Error::other("the image has no layers"));
    }
    let lower: Vec<String> = spec
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(context("mounting the root overlay"))?;

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let at = |p: &str| rootfs.join(p.trim_start_matches('/'));
    mkdir(&at("proc"))?;
    mount(
        Some("proc"),
        &at("proc"),
        Some("proc"),
        nosuid,
        None::<&str>,
    )
    .map_err(context("mounting /proc"))?;
    mkdir(&at("sys"))?;
    mount(
        Some("sysfs"),
        &at("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(context("mounting /sys"))?;
    dev(&at("dev"))?;

    for m in &spec.mounts {
        let target = at(&m.target);
        if m.source.is_dir() {
            mkdir(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                mkdir(parent)?;
            }
            if !target.exists() {
                File::create(&target).map_err(context(target.display()))?;
            }
        }
        mount(
            Some(&m.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(context(format!(
            "mounting {} on {}",
            m.source.display(),
            m.target
        )))?;
        if m.readonly {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(context(format!("making {} read-only", m.target)))?;
        }
    }

    // pivot_root(".", "."): the old root ends up under the new one and is detached at once.
    unistd::chdir(&rootfs).map_err(context("chdir to the root"))?;
    unistd::pivot_root(".", ".").map_err(context("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(context("detaching the old root"))?;
    unistd::chdir("/").map_err(context("chdir /"))?;
    if spec.readonly_rootfs {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(context("making the root read-only"))?;
    }
    unistd::sethostname(&spec.hostname).map_err(context("sethostname"))?;
    if !spec.cwd.is_empty() {
        // Made as root (like runc); a read-only root must already have it.
        if !Path::new(&spec.cwd).is_dir() {
            mkdir(Path::new(&spec.cwd))?;
        }
    }
    become_user(spec)
}

/// Takes the container's user, groups and working directory; the process dies with its
/// parent (the shim, or `container-exec`).
pub(crate) fn become_user(spec: &ContainerSpec) -> io::Result<()> {
    let gids: Vec<Gid> = spec
        .supplementary_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    unistd::setgroups(&gids).map_err(context("setgroups"))?;
    unistd::setgid(Gid::from_raw(spec.gid)).map_err(context("setgid"))?;
    unistd::setuid(Uid::from_raw(spec.uid)).map_err(context("setuid"))?;
    // After setuid, which clears it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(context("prctl"))?;
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    unistd::chdir(cwd).map_err(context(format!("chdir {cwd}")))?;
    Ok(())
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path).map_err(context(path.display()))
}

/// A fresh `/dev`: tmpfs with the usual character devices bound from the node, a private
/// devpts and `/dev/shm`.
fn dev(dev: &Path) -> io::Result<()> {
    mkdir(dev)?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(context("mounting /dev"))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target).map_err(context(target.display()))?;
        mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(context(format!("binding /dev/{name}")))?;
    }
    mkdir(&dev.join("pts"))?;
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(context("mounting /dev/pts"))?;
    symlink("pts/ptmx", dev.join("ptmx"))?;
    mkdir(&dev.join("shm"))?;
    fs::set_permissions(dev.join("shm"), fs::Permissions::from_mode(0o1777))?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(context("mounting /dev/shm"))?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name))?;
    }
    Ok(())
}

fn exec(
    spec: &ContainerSpec,
    stdin: Option<File>,
    out: OwnedFd,
    err: OwnedFd,
) -> io::Result<std::convert::Infallible> {
    let env = process_env(spec, false);
    let stdin = match stdin {
        Some(f) => f,
        None => File::open("/dev/null")?,
    };
    unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&stdin), 0).map_err(context("dup2"))?;
    unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&out), 1).map_err(context("dup2"))?;
    unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&err), 2).map_err(context("dup2"))?;
    Err(execute(&spec.args, &env))
}

/// The environment of a process in the container: the spec's, with `PATH` and `HOSTNAME`
/// defaulted (and `TERM` for a terminal), as runc does.
pub(crate) fn process_env(spec: &ContainerSpec, tty: bool) -> Vec<String> {
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    env
}

/// Execs `args` (looked up on the environment's `PATH`); returns only on failure, with the
/// reason in the words users know from other runtimes.
pub(crate) fn execute(args: &[String], env: &[String]) -> io::Error {
    let Some(program) = args.first() else {
        return io::Error::other("no command to run");
    };
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let Some(resolved) = resolve(program, path_var) else {
        return io::Error::new(
            io::ErrorKind::NotFound,
            format!("exec: \"{program}\": executable file not found in $PATH"),
        );
    };
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| io::Error::other(format!("{s:?} contains a NUL byte")))
    };
    let argv = match args.iter().map(|a| cstr(a)).collect::<io::Result<Vec<_>>>() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let envp = match env.iter().map(|e| cstr(e)).collect::<io::Result<Vec<_>>>() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let path = match cstr(&resolved.display().to_string()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let e = unistd::execve(&path, &argv, &envp).unwrap_err();
    let kind = if e == nix::errno::Errno::ENOENT {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::PermissionDenied
    };
    io::Error::new(kind, format!("exec: \"{program}\": {}", e.desc()))
}

/// Finds `program` like execvp: a path with a slash is taken as is, else the first executable
/// file of that name on `$PATH`.
fn resolve(program: &str, path_var: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
