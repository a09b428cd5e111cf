//! What a container is made of: the runtime's own small spec, written as `spec.json` in the
//! container's directory and read by its shim.
//!
//! The kubelet fills it from the pod and the image; nothing here knows about Kubernetes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `PATH` when neither the image nor the pod sets one (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// Unique on the node; names the container's directory and cgroup.
    pub id: String,
    /// Unpacked image layers, lowest first; the root is an overlay of them with a private
    /// writable layer on top.
    pub layers: Vec<PathBuf>,
    /// The program and its arguments (entrypoint + command already merged). Never empty.
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container; made when missing.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub supplementary_gids: Vec<u32>,
    pub hostname: String,
    /// Bind mounts into the container, in order.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// A network namespace to join (a bind-mounted namespace file, see [`crate::netns`]);
    /// `None` shares the node's network.
    pub netns: Option<PathBuf>,
    /// The container's cgroup directory (cgroup v2); `None` runs it in the shim's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Where stdout and stderr go, in the CRI log format ([`crate::logs`]).
    pub log: PathBuf,
    /// The log file is rotated when it grows past this many bytes (one old file is kept).
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Gives the program a stdin that `kubectl attach` can write to (the `stdin` FIFO in the
    /// container's directory); otherwise it reads `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
}

fn default_log_max() -> u64 {
    10 << 20
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    /// A file or directory on the node.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}
