//! cgroup v2: one directory per pod under `kubepods/`, one per container inside it, with the
//! limits the pod asks for. Containers are the leaves (cgroup v2 keeps processes out of inner
//! nodes that delegate controllers).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Controllers the runtime delegates down the tree; any the kernel lacks are left out.
const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// The CFS period `cpu.max` quotas are expressed in (the kernel's and Kubernetes' default).
pub const CPU_PERIOD_MICROS: u64 = 100_000;

/// Limits for one cgroup; `None` leaves the kernel's default ("max").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub memory_max: Option<u64>,
    /// Microseconds of CPU per [`CPU_PERIOD_MICROS`].
    pub cpu_quota_micros: Option<u64>,
    /// `cpu.weight` (1–10000), from the CPU request.
    pub cpu_weight: Option<u64>,
    pub pids_max: Option<u64>,
}

impl Resources {
    /// From Kubernetes quantities already in base units: CPU in millicores, memory in bytes.
    pub fn from_kubernetes(
        cpu_request_milli: Option<u64>,
        cpu_limit_milli: Option<u64>,
        memory_limit: Option<u64>,
    ) -> Resources {
        Resources {
            memory_max: memory_limit,
            // 1000 millicores is one whole period; the kernel wants at least 1 ms.
            cpu_quota_micros: cpu_limit_milli.map(|m| (m * CPU_PERIOD_MICROS / 1000).max(1000)),
            cpu_weight: cpu_request_milli.map(weight_from_millicores),
            pids_max: None,
        }
    }
}

/// The kubelet's conversion: millicores → cgroup v1 shares (1024 per core, at least 2) →
/// cgroup v2 weight (shares 2..262144 mapped onto 1..10000).
pub fn weight_from_millicores(milli: u64) -> u64 {
    let shares = (milli * 1024 / 1000).clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Counters read back from a cgroup (metrics and OOM reports). `None` where the file is
/// missing: `cpu.stat` is in every cgroup v2 directory, but the `memory.*` files only where the
/// memory controller is enabled (not on a host that keeps it on cgroup v1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// `cpu.stat` `usage_usec`: CPU time used since the cgroup was made.
    pub cpu_usage_micros: Option<u64>,
    /// `memory.current`: every page charged to the cgroup, page cache included.
    pub memory_bytes: Option<u64>,
    /// `memory.current` less `memory.stat` `inactive_file` (at least 0): the working set, the
    /// memory the kubelet reports and evicts by (cache the kernel can drop at once is not in it).
    pub memory_working_set_bytes: Option<u64>,
    pub oom_kills: u64,
}

impl Usage {
    /// From the texts of `cpu.stat`, `memory.current`, `memory.stat` and `memory.events`
    /// (`None`: the file is missing).
    pub fn parse(
        cpu_stat: Option<&str>,
        memory_current: Option<&str>,
        memory_stat: Option<&str>,
        memory_events: Option<&str>,
    ) -> Usage {
        let memory_bytes = memory_current.and_then(|t| t.trim().parse::<u64>().ok());
        let inactive_file = memory_stat
            .and_then(|t| keyed(t, "inactive_file"))
            .unwrap_or(0);
        Usage {
            cpu_usage_micros: cpu_stat.and_then(|t| keyed(t, "usage_usec")),
            memory_bytes,
            memory_working_set_bytes: memory_bytes.map(|m| m.saturating_sub(inactive_file)),
            oom_kills: memory_events
                .and_then(|t| keyed(t, "oom_kill"))
                .unwrap_or(0),
        }
    }
}

/// The number of `key` in a flat-keyed cgroup file (`usage_usec 1234` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The cgroup v2 hierarchy the runtime uses, rooted at a mounted cgroup2 filesystem.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    root: PathBuf,
}

impl Hierarchy {
    /// `/sys/fs/cgroup` when it is cgroup v2 (what cairn-init mounts on a device).
    pub fn system() -> Option<Hierarchy> {
        Hierarchy::at(Path::new("/sys/fs/cgroup"))
    }

    /// A cgroup2 mount at `root`; `None` when `root` is not one.
    pub fn at(root: &Path) -> Option<Hierarchy> {
        root.join("cgroup.controllers").exists().then(|| Hierarchy {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The controllers pods are limited with (cpu, memory, pids) that the kernel does not
    /// offer at the root (a kernel built without one, or `cgroup_disable=` on its command
    /// line): their limits are not enforced.
    pub fn missing_controllers(&self) -> io::Result<Vec<&'static str>> {
        let available = fs::read_to_string(self.root.join("cgroup.controllers"))?;
        Ok(CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !available.split_whitespace().any(|x| x == *c))
            .collect())
    }

    /// `kubepods/pod<uid>`, made with `limits`; controllers are delegated on the way down.
    pub fn pod(&self, pod_uid: &str, limits: &Resources) -> io::Result<PathBuf> {
        let kubepods = self.root.join("kubepods");
        self.delegate(&self.root)?;
        fs::create_dir_all(&kubepods)?;
        self.delegate(&kubepods)?;
        let pod = kubepods.join(format!("pod{pod_uid}"));
        fs::create_dir_all(&pod)?;
        self.delegate(&pod)?;
        apply(&pod, limits)?;
        Ok(pod)
    }

    /// A leaf for one container inside `pod`.
    pub fn container(&self, pod: &Path, id: &str, limits: &Resources) -> io::Result<PathBuf> {
        let dir = pod.join(id);
        fs::create_dir_all(&dir)?;
        apply(&dir, limits)?;
        Ok(dir)
    }

    fn delegate(&self, dir: &Path) -> io::Result<()> {
        let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
        let enabled = fs::read_to_string(dir.join("cgroup.subtree_control"))?;
        for c in CONTROLLERS {
            let have = |list: &str| list.split_whitespace().any(|x| x == *c);
            if have(&available) && !have(&enabled) {
                fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"))?;
            }
        }
        Ok(())
    }
}

fn apply(dir: &Path, r: &Resources) -> io::Result<()> {
    let write = |file: &str, value: String| -> io::Result<()> {
        let path = dir.join(file);
        if !path.exists() {
            // The controller is not enabled here (a host without it): nothing to limit with.
            return Ok(());
        }
        fs::write(&path, value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    if let Some(max) = r.memory_max {
        write("memory.max", max.to_string())?;
        // Swap would let a limited container outlive its limit on a node with swap.
        write("memory.swap.max", "0".to_owned())?;
    }
    if let Some(quota) = r.cpu_quota_micros {
        write("cpu.max", format!("{quota} {CPU_PERIOD_MICROS}"))?;
    }
    if let Some(weight) = r.cpu_weight {
        write("cpu.weight", weight.to_string())?;
    }
    if let Some(pids) = r.pids_max {
        write("pids.max", pids.to_string())?;
    }
    Ok(())
}

/// CPU, memory and OOM counters of `dir` (see [`Usage`] for what a missing file means).
pub fn usage(dir: &Path) -> Usage {
    let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
    Usage::parse(
        read("cpu.stat").as_deref(),
        read("memory.current").as_deref(),
        read("memory.stat").as_deref(),
        read("memory.events").as_deref(),
    )
}

/// OOM kills of the container cgroup `dir` and of its parent (the pod's): the kernel counts a
/// kill where the limit was hit, and the pod's limit (the sum of its containers') can be hit
/// before the container's own.
pub fn oom_kills_within(dir: &Path) -> u64 {
    usage(dir).oom_kills + dir.parent().map(|p| usage(p).oom_kills).unwrap_or(0)
}

/// Kills every process in `dir` (`cgroup.kill`) and removes it once empty. Tolerates a
/// cgroup that is already gone.
pub fn kill_and_remove(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    // Processes leave the cgroup asynchronously after the kill.
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(dir)
}

/// Removes a pod's cgroup after its containers' (which must be gone).
pub fn remove_pod(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_remove(&e.path())?;
            }
        }
    }
    kill_and_remove(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_counters_and_the_working_set() {
        let cpu = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n";
        let stat = "anon 4096\nfile 81920\nactive_file 12288\ninactive_file 69632\n";
        let events = "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n";
        let u = Usage::parse(Some(cpu), Some("90112\n"), Some(stat), Some(events));
        assert_eq!(u.cpu_usage_micros, Some(1_500_000));
        assert_eq!(u.memory_bytes, Some(90112));
        assert_eq!(u.memory_working_set_bytes, Some(90112 - 69632));
        assert_eq!(u.oom_kills, 1);
        // More inactive cache than charged (the counters are read one after the other): 0.
        let u = Usage::parse(None, Some("4096"), Some("inactive_file 8192\n"), None);
        assert_eq!(u.memory_working_set_bytes, Some(0));
        // A host whose memory controller is on cgroup v1: CPU only.
        let u = Usage::parse(Some(cpu), None, None, None);
        assert_eq!(u.cpu_usage_micros, Some(1_500_000));
        assert_eq!((u.memory_bytes, u.memory_working_set_bytes), (None, None));
        assert_eq!(usage(Path::new("/nonexistent")), Usage::default());
    }

    #[test]
    fn missing_controllers_are_named() {
        let dir = std::env::temp_dir().join(format!("cairn-cg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let h = Hierarchy::at(&dir).unwrap();
        assert!(h.missing_controllers().unwrap().is_empty());
        fs::write(dir.join("cgroup.controllers"), "cpuset cpu io pids\n").unwrap();
        assert_eq!(h.missing_controllers().unwrap(), ["memory"]);
        fs::write(dir.join("cgroup.controllers"), "").unwrap();
        assert_eq!(h.missing_controllers().unwrap(), ["cpu", "memory", "pids"]);
        fs::remove_dir_all(&dir).unwrap();
        assert!(Hierarchy::at(&dir).is_none());
    }

    #[test]
    fn cpu_requests_map_to_weights_like_the_kubelet() {
        // 1 core = 1024 shares → weight 39; the minimum 2 shares → weight 1.
        assert_eq!(weight_from_millicores(1000), 39);
        assert_eq!(weight_from_millicores(1), 1);
        assert_eq!(weight_from_millicores(256_000), 10000);
        let r = Resources::from_kubernetes(Some(250), Some(500), Some(64 << 20));
        assert_eq!(r.cpu_quota_micros, Some(50_000));
        assert_eq!(r.memory_max, Some(64 << 20));
        // Below 1 ms the kernel refuses the quota; it is raised to the minimum.
        assert_eq!(
            Resources::from_kubernetes(None, Some(1), None).cpu_quota_micros,
            Some(1000)
        );
    }
}
