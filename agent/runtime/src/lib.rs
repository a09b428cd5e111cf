//! Cairn's container runtime: the part of the kubelet that turns a [`ContainerSpec`] into a
//! running process and reports how it ended. Written directly on Linux's interfaces with
//! `nix` (see docs/decisions.md, "Container runtime"):
//!
//! - [`shim`]: one small process per container (`cairn container-shim DIR`) that makes the
//!   namespaces, mounts the overlay root, execs the program and writes its logs and exit;
//! - [`exec`]: `cairn container-exec`, a command run inside a running container;
//! - [`cgroup`]: the cgroup v2 tree (`kubepods/pod<uid>/<container>`), its limits and its
//!   usage counters (`kubectl top`);
//! - [`netns`]: pod network namespaces shared by the pod's containers;
//! - [`logs`]: the CRI log format, rotation, and reading back for `kubectl logs`.
//!
//! Each container has a directory `ROOT/<id>/` holding `spec.json`, `pid` (host PID and
//! start time), `exit.json`, the overlay's `upper/` and `work/`, and the `rootfs/` mount
//! point (mounted only inside the container's own mount namespace, so nothing is left
//! mounted on the node when it ends).

pub mod cgroup;
pub mod exec;
pub mod logs;
pub mod netns;
pub mod shim;
pub mod spec;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use spec::{ContainerSpec, Mount};

const SPEC_FILE: &str = "spec.json";
const PID_FILE: &str = "pid";
const EXIT_FILE: &str = "exit.json";
/// The FIFO that is the container's stdin when its spec asks for one.
const STDIN_FIFO: &str = "stdin";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {id}: {message}")]
    Start { id: String, message: String },
    #[error("container {0} is still running")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// How a container ended (or failed to start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: String,
    /// Set when the program never ran (bad command, missing working directory...).
    pub start_error: Option<String>,
}

impl Exit {
    pub(crate) fn start_error(message: String) -> Exit {
        Exit {
            // What Kubernetes reports for a container that could not start.
            exit_code: 128,
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: logs::rfc3339_nanos(jiff::Timestamp::now()),
            start_error: Some(message),
        }
    }

    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        shim::write_atomic(path, &json)
    }
}

/// A started container: its PID on the node and its start time.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub pid: i32,
    pub started_at: String,
}

/// The containers of one node, under `root`.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    /// The program whose `container-shim` subcommand runs the shim (`cairn` itself).
    shim: PathBuf,
    cgroups: Option<cgroup::Hierarchy>,
}

impl Runtime {
    pub fn new(
        root: &Path,
        shim: &Path,
        cgroups: Option<cgroup::Hierarchy>,
    ) -> io::Result<Runtime> {
        fs::create_dir_all(root)?;
        Ok(Runtime {
            root: root.to_owned(),
            shim: shim.to_owned(),
            cgroups,
        })
    }

    pub fn cgroups(&self) -> Option<&cgroup::Hierarchy> {
        self.cgroups.as_ref()
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Starts a container and returns once its program has been exec'd (or failed to be).
    /// `spec.id` must be new; its directory is made here. The shim keeps running on its own;
    /// [`Runtime::wait`] follows it.
    pub async fn start(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(Started, tokio::process::Child), Error> {
        let dir = self.dir(&spec.id);
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |e| Error::Io(p, e)
        };
        for sub in ["rootfs", "upper", "work"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(&dir.join(sub)))?;
        }
        let json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::Io(dir.clone(), io::Error::other(e)))?;
        shim::write_atomic(&dir.join(SPEC_FILE), &json).map_err(io_err(&dir))?;
        let mut child = tokio::process::Command::new(&self.shim)
            .arg(shim::SUBCOMMAND)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(io_err(&self.shim))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .map_err(io_err(&dir))?;
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("started ") {
            let mut parts = rest.splitn(2, ' ');
            let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let started_at = parts.next().unwrap_or_default().to_owned();
            return Ok((Started { pid, started_at }, child));
        }
        let message = line.strip_prefix("failed ").unwrap_or(line);
        let message = if message.is_empty() {
            let status = child.wait().await.ok();
            format!("the shim ended without a word ({status:?})")
        } else {
            let _ = child.wait().await;
            message.to_owned()
        };
        Err(Error::Start {
            id: spec.id.clone(),
            message,
        })
    }

    /// How the container ended, if it has.
    pub fn exit(&self, id: &str) -> Option<Exit> {
        let bytes = fs::read(self.dir(id).join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The running container's PID on the node and start time (from its `pid` file).
    pub fn started(&self, id: &str) -> Option<Started> {
        let text = fs::read_to_string(self.dir(id).join(PID_FILE)).ok()?;
        let (pid, at) = text.trim().split_once(' ')?;
        Some(Started {
            pid: pid.parse().ok()?,
            started_at: at.to_owned(),
        })
    }

    /// The spec a container was started with.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        serde_json::from_slice(&fs::read(self.dir(id).join(SPEC_FILE)).ok()?).ok()
    }

    /// Waits for the container to end: through its shim when this process started it, else by
    /// looking for `exit.json` (a shim left by an earlier `cairn`).
    pub async fn wait(&self, id: &str, shim: Option<tokio::process::Child>) -> Exit {
        if let Some(mut child) = shim {
            let _ = child.wait().await;
        }
        loop {
            if let Some(exit) = self.exit(id) {
                return exit;
            }
            if !self.shim_alive(id) {
                // Killed with its container (or the node lost power): no record was written.
                return Exit {
                    exit_code: 137,
                    signal: Some(Signal::SIGKILL as i32),
                    oom_killed: false,
                    started_at: self.started(id).map(|s| s.started_at),
                    finished_at: logs::rfc3339_nanos(jiff::Timestamp::now()),
                    start_error: Some("the container's shim is gone".to_owned()),
                };
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the container is running: started, not ended, its PID 1 still there.
    pub fn running(&self, id: &str) -> bool {
        self.exit(id).is_none() && self.shim_alive(id)
    }

    /// The command that runs `command` inside the running container `id` ([`exec`]); the
    /// caller chooses its stdio (a terminal with `tty`) and spawns it. The command is killed
    /// when the returned process is.
    pub fn exec_command(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
    ) -> Result<tokio::process::Command, Error> {
        if !self.running(id) {
            return Err(Error::NotRunning(id.to_owned()));
        }
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.arg(exec::SUBCOMMAND).arg(self.dir(id));
        if tty {
            cmd.arg("--tty");
        }
        cmd.arg("--").args(command).kill_on_drop(true);
        Ok(cmd)
    }

    /// The FIFO that is the container's stdin (its spec asked for one), for `kubectl attach`.
    pub fn stdin_path(&self, id: &str) -> Option<PathBuf> {
        let path = self.dir(id).join(STDIN_FIFO);
        path.exists().then_some(path)
    }

    /// Whether the container's process still exists (its PID 1 has not been reaped).
    fn shim_alive(&self, id: &str) -> bool {
        match self.started(id) {
            Some(s) => kill(Pid::from_raw(s.pid), None).is_ok(),
            None => false,
        }
    }

    /// Sends `signal` to the container's PID 1. A container that already ended is fine.
    pub fn signal(&self, id: &str, signal: Signal) -> Result<(), Error> {
        if self.exit(id).is_some() {
            return Ok(());
        }
        let Some(started) = self.started(id) else {
            return Ok(());
        };
        match kill(Pid::from_raw(started.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::Io(self.dir(id), io::Error::from(e))),
        }
    }

    /// Kills whatever is left of the container and deletes its directory and cgroup.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let _ = self.signal(id, Signal::SIGKILL);
        if let Some(cg) = self.spec(id).and_then(|s| s.cgroup) {
            cgroup::kill_and_remove(&cg).map_err(|e| Error::Io(cg.clone(), e))?;
        }
        // The shim records the exit right after the kill: let it finish writing first.
        if self.started(id).is_some() {
            for _ in 0..300 {
                if self.exit(id).is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let dir = self.dir(id);
        let mut tries = 0;
        loop {
            match fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                // A file appeared while removing (a shim that was still finishing).
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::Io(dir, e)),
            }
        }
    }

    /// Every container directory, running or not.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}
