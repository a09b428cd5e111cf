//! The node's disk: image garbage collection, the `DiskPressure` condition and
//! `status.images`, as the kubelet's image GC manager and eviction manager provide them.
//!
//! Every [`CHECK`] the kubelet reads how full the data partition is (one `statvfs` of the image
//! store's filesystem; no writes) and:
//!
//! - **Garbage-collects images** when it is at least `--image-gc-high-threshold` percent full
//!   (85): unused images go, least recently used first, until it is below
//!   `--image-gc-low-threshold` (80) ([`cairn_images::Store::collect_garbage`]). In use are the
//!   images of every container on the node (running or not yet removed) and those the pods
//!   bound to it name; images stored or used less than `--minimum-image-ttl-duration` (2m) ago
//!   and images pinned by their archive in an image directory stay. It logs what it did and
//!   posts Events on the Node: `FreedDiskSpace` (Normal) naming the images removed,
//!   `FreeDiskSpaceFailed` (Warning) when it could not free enough, `ImageGCFailed` (Warning)
//!   when it could not run (a damaged store is refused, not emptied). A pass that could not
//!   free enough is tried again after [`GC_RETRY`], or sooner once the images or containers
//!   on the node change.
//! - **Reports `DiskPressure`**: `True` while the free space or free inodes are under an
//!   `--eviction-hard` threshold (`nodefs.available<10%,nodefs.inodesFree<5%`, Kubernetes'
//!   defaults) and for [`PRESSURE_TRANSITION`] after (the kubelet's
//!   `--eviction-pressure-transition-period`), with `NodeHasDiskPressure` and
//!   `NodeHasNoDiskPressure` Events when it turns. Pods are not evicted.
//! - **Lists the images** for the Node's `status.images`: largest first, at most
//!   [`MAX_IMAGES`], up to [`MAX_NAMES`] names each (`repo@sha256:...` first), sizes as
//!   registries count them.
//! - **Writes the images' last uses** at most every [`USAGE_FLUSH`] (they are kept in memory
//!   otherwise; see `cairn_images`).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_images::{FsUsage, GcOutcome, GcRequest, ImageSummary};
use hyper::Method;
use serde_json::{json, Value};

use super::Shared;
use crate::node_status::{KubeletStatus, NodeImage};

/// How often the data partition is looked at.
pub const CHECK: Duration = Duration::from_secs(30);
/// How soon a collection that could not free enough is tried again when nothing changed (the
/// kubelet's image GC period).
pub const GC_RETRY: Duration = Duration::from_secs(300);
/// How long `DiskPressure` stays `True` after the thresholds were last met.
pub const PRESSURE_TRANSITION: Duration = Duration::from_secs(300);
/// How often the images' last uses may be written when nothing else writes the store.
pub const USAGE_FLUSH: Duration = Duration::from_secs(3600);
/// Images in `status.images` (the kubelet's `--node-status-max-images`).
pub const MAX_IMAGES: usize = 50;
/// Names per image in `status.images`.
pub const MAX_NAMES: usize = 5;

/// The collection's settings, from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Percent used at which images are collected.
    pub high_percent: u8,
    /// Percent used the collection brings the partition down to.
    pub low_percent: u8,
    /// Images stored or used more recently stay.
    pub min_age: Duration,
    pub eviction: EvictionHard,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            eviction: EvictionHard::default(),
        }
    }
}

impl Policy {
    /// Checks the thresholds as the kubelet does: each 0–100, low not above high.
    pub fn new(
        high_percent: u8,
        low_percent: u8,
        min_age: Duration,
        eviction: EvictionHard,
    ) -> Result<Policy, String> {
        if high_percent > 100 || low_percent > 100 {
            return Err("image GC thresholds are percentages, 0 to 100".into());
        }
        if low_percent > high_percent {
            return Err(format!(
                "--image-gc-low-threshold {low_percent} is above --image-gc-high-threshold {high_percent}"
            ));
        }
        Ok(Policy {
            high_percent,
            low_percent,
            min_age,
            eviction,
        })
    }
}

/// A threshold of `--eviction-hard`: a share of the total or an amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Percent(f64),
    Amount(u64),
}

impl Threshold {
    /// Whether `free` of `total` is under the threshold (never for a total of 0: a filesystem
    /// without a fixed number of inodes).
    fn met(self, free: u64, total: u64) -> bool {
        if total == 0 {
            return false;
        }
        match self {
            Threshold::Percent(p) => (free as f64) < total as f64 * p / 100.0,
            Threshold::Amount(n) => free < n,
        }
    }
}

/// The disk signals of `--eviction-hard` (Kubernetes' `nodefs.*`, `imagefs.*` and
/// `containerfs.*`: on Cairn the pods' files and the images share the data partition, so all
/// of them are read on it). Other signals (`memory.available`, `pid.available`) are accepted
/// and not acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionHard {
    /// `(signal, threshold)` on free bytes.
    pub available: Vec<(String, Threshold)>,
    /// `(signal, threshold)` on free inodes.
    pub inodes_free: Vec<(String, Threshold)>,
    /// Signals given but not acted on.
    pub ignored: Vec<String>,
}

/// Kubernetes' default disk thresholds.
pub const DEFAULT_EVICTION_HARD: &str = "nodefs.available<10%,nodefs.inodesFree<5%";

impl Default for EvictionHard {
    fn default() -> EvictionHard {
        DEFAULT_EVICTION_HARD.parse().expect("the default parses")
    }
}

impl FromStr for EvictionHard {
    type Err = String;

    /// `signal<value,...` (as the kubelet: values are percentages or quantities such as
    /// `500Mi`; an empty string sets no threshold).
    fn from_str(text: &str) -> Result<EvictionHard, String> {
        let mut out = EvictionHard {
            available: Vec::new(),
            inodes_free: Vec::new(),
            ignored: Vec::new(),
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (signal, value) = item.split_once('<').ok_or_else(|| {
                format!("{item:?}: expected SIGNAL<VALUE, like nodefs.available<10%")
            })?;
            let (signal, value) = (signal.trim(), value.trim());
            let threshold = parse_threshold(value).map_err(|e| format!("{item:?}: {e}"))?;
            match signal {
                "nodefs.available" | "imagefs.available" | "containerfs.available" => {
                    out.available.push((signal.to_owned(), threshold))
                }
                "nodefs.inodesFree" | "imagefs.inodesFree" | "containerfs.inodesFree" => {
                    out.inodes_free.push((signal.to_owned(), threshold))
                }
                "memory.available" | "allocatableMemory.available" | "pid.available" => {
                    out.ignored.push(item.to_owned())
                }
                _ => return Err(format!("{item:?}: unknown eviction signal {signal:?}")),
            }
        }
        Ok(out)
    }
}

impl EvictionHard {
    /// The thresholds `usage` is under, described (`nodefs.available<10%`); empty if none.
    pub fn met(&self, usage: &FsUsage) -> Vec<String> {
        let bytes = self
            .available
            .iter()
            .filter(|(_, t)| t.met(usage.available, usage.capacity));
        let inodes = self
            .inodes_free
            .iter()
            .filter(|(_, t)| t.met(usage.inodes_free, usage.inodes));
        bytes
            .chain(inodes)
            .map(|(signal, t)| match t {
                Threshold::Percent(p) => format!("{signal}<{p}%"),
                Threshold::Amount(n) => format!("{signal}<{n}"),
            })
            .collect()
    }
}

fn parse_threshold(value: &str) -> Result<Threshold, String> {
    if let Some(p) = value.strip_suffix('%') {
        let p: f64 = p
            .parse()
            .map_err(|_| format!("{value:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{value:?} is not between 0% and 100%"));
        }
        return Ok(Threshold::Percent(p));
    }
    parse_quantity(value).map(Threshold::Amount)
}

/// A Kubernetes quantity without fractions: `1000`, `500k`, `100Mi`, `2G`, `1Ti`.
fn parse_quantity(value: &str) -> Result<u64, String> {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale: u64 = match &value[digits.len()..] {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        unit => return Err(format!("{value:?}: unknown unit {unit:?}")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a percentage or a quantity like 500Mi"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// A duration as Go writes it: `2m`, `90s`, `1h30m`, `2m0s`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?}: expected a duration like 2m, 90s or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let scale = match &rest[..unit_len] {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs(n.checked_mul(scale).ok_or_else(bad)?);
    }
    Ok(total)
}

/// `2m0s`, as Go and the kubelet print durations.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Bytes for people: `512 B`, `3.4 MiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `DiskPressure` with the kubelet's transition period: on when the thresholds are met, off
/// once they have not been for [`PRESSURE_TRANSITION`].
#[derive(Debug, Default)]
pub struct Pressure {
    last_met: Option<Instant>,
    /// `None` before the first look.
    pub on: Option<bool>,
}

impl Pressure {
    /// Takes one look; the new state when it changed (the first look included).
    pub fn observe(&mut self, met: bool, now: Instant) -> Option<bool> {
        if met {
            self.last_met = Some(now);
        }
        let on = self
            .last_met
            .is_some_and(|t| now.saturating_duration_since(t) < PRESSURE_TRANSITION);
        let changed = self.on != Some(on);
        self.on = Some(on);
        changed.then_some(on)
    }
}

/// `status.images` from the store's list: largest first, at most [`MAX_IMAGES`], up to
/// [`MAX_NAMES`] names each.
pub fn node_images(mut list: Vec<ImageSummary>) -> Vec<NodeImage> {
    list.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    list.into_iter()
        .map(|s| NodeImage {
            names: s.names().into_iter().take(MAX_NAMES).collect(),
            size_bytes: s.size,
        })
        .filter(|i| !i.names.is_empty())
        .take(MAX_IMAGES)
        .collect()
}

/// Looks at the data partition every [`CHECK`] until the process ends. `image_dirs` are the
/// directories whose archives pin images.
pub async fn run(
    shared: Arc<Shared>,
    policy: Policy,
    image_dirs: Vec<PathBuf>,
    status: KubeletStatus,
) {
    for signal in &policy.eviction.ignored {
        eprintln!(
            "cairn: kubelet: --eviction-hard {signal}: only the data partition's signals are read (pods are not evicted)"
        );
    }
    let mut disk = Disk {
        shared,
        policy,
        image_dirs,
        status,
        pressure: Pressure::default(),
        short: None,
        last_error: None,
    };
    loop {
        disk.check().await;
        tokio::time::sleep(CHECK).await;
    }
}

struct Disk {
    shared: Arc<Shared>,
    policy: Policy,
    image_dirs: Vec<PathBuf>,
    status: KubeletStatus,
    pressure: Pressure,
    /// When the last collection fell short, and what the node held then.
    short: Option<(Instant, u64)>,
    /// The last error logged, so a lasting one is logged once.
    last_error: Option<String>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Disk {
    /// One look; errors are logged when they differ from the last look's.
    async fn check(&mut self) {
        let mut errors = Vec::new();
        self.look(&mut errors).await;
        let line = errors.join("; ");
        if errors.is_empty() {
            self.last_error = None;
        } else if self.last_error.as_ref() != Some(&line) {
            eprintln!("cairn: kubelet: {line}");
            self.last_error = Some(line);
        }
    }

    async fn look(&mut self, errors: &mut Vec<String>) {
        let store = self.shared.images.clone();
        let usage = match blocking(move || store.fs_usage()).await {
            Some(Ok(usage)) => usage,
            Some(Err(e)) => {
                return errors.push(format!("reading the data partition's usage: {e}"));
            }
            None => return,
        };

        let met = self.policy.eviction.met(&usage);
        if let Some(on) = self.pressure.observe(!met.is_empty(), Instant::now()) {
            self.status.set_disk_pressure(on);
            let full = format!(
                "{}% used, {} free",
                usage.used_percent(),
                human(usage.available)
            );
            let node = &self.shared.node_name;
            if on {
                let met = met.join(", ");
                eprintln!(
                    "cairn: kubelet: disk pressure: the data partition is under {met} ({full})"
                );
                let message = format!("Node {node} status is now: NodeHasDiskPressure ({met})");
                self.event("Normal", "NodeHasDiskPressure", &message);
            } else if self.pressure.last_met.is_some() {
                eprintln!("cairn: kubelet: disk pressure is over ({full})");
                let message = format!("Node {node} status is now: NodeHasNoDiskPressure");
                self.event("Normal", "NodeHasNoDiskPressure", &message);
            }
        }

        if usage.used_percent() >= u64::from(self.policy.high_percent) {
            self.collect(usage).await;
        }

        let store = self.shared.images.clone();
        match blocking(move || store.list()).await {
            Some(Ok(list)) => {
                self.status.set_images(node_images(list));
            }
            Some(Err(e)) => errors.push(format!("listing images: {e}")),
            None => {}
        }
        let store = self.shared.images.clone();
        if let Some(Err(e)) = blocking(move || store.flush_usage(USAGE_FLUSH)).await {
            errors.push(format!("writing when images were last used: {e}"));
        }
    }

    /// One collection down to the low threshold.
    async fn collect(&mut self, usage: FsUsage) {
        let held = self.fingerprint().await;
        if let Some((at, before)) = self.short {
            if before == held && at.elapsed() < GC_RETRY {
                return;
            }
        }
        let needed = usage.bytes_above(u64::from(self.policy.low_percent));
        eprintln!(
            "cairn: kubelet: image GC: the data partition is {}% full (high threshold {}%): freeing {} to come down to {}%",
            usage.used_percent(),
            self.policy.high_percent,
            human(needed),
            self.policy.low_percent
        );
        let in_use = self.pod_images().await;
        let shared = self.shared.clone();
        let min_age = self.policy.min_age;
        let result = blocking(move || {
            let containers: Vec<Vec<PathBuf>> = shared
                .runtime
                .ids()
                .iter()
                .filter_map(|id| shared.runtime.spec(id))
                .map(|spec| spec.layers)
                .collect();
            shared.images.collect_garbage(&GcRequest {
                bytes_to_free: needed,
                min_age,
                containers: &containers,
                in_use: &in_use,
                now: SystemTime::now(),
            })
        })
        .await;
        let out = match result {
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                let message = format!("image garbage collection failed: {e}");
                eprintln!("cairn: kubelet: {message}");
                self.event("Warning", "ImageGCFailed", &message);
                self.short = Some((Instant::now(), held));
                return;
            }
            None => return,
        };
        self.report(&out, needed).await;
        self.short = if out.freed < needed {
            Some((Instant::now(), self.fingerprint().await))
        } else {
            None
        };
    }

    /// Logs and posts what a collection did.
    async fn report(&self, out: &GcOutcome, needed: u64) {
        let store = self.shared.images.clone();
        let now = match blocking(move || store.fs_usage()).await {
            Some(Ok(u)) => format!("{}% full now", u.used_percent()),
            _ => "usage now unknown".into(),
        };
        if !out.removed.is_empty() || out.unreferenced_layers > 0 {
            let mut what: Vec<String> = out
                .removed
                .iter()
                .map(|r| format!("{} ({})", r.names.join(", "), human(r.freed)))
                .collect();
            if out.unreferenced_layers > 0 {
                what.push(format!(
                    "{} layer(s) no image used",
                    out.unreferenced_layers
                ));
            }
            let message = format!(
                "removed {} unused image(s) to free disk space: {}; freed {}",
                out.removed.len(),
                what.join("; "),
                human(out.freed)
            );
            eprintln!("cairn: kubelet: image GC: {message}, {now}");
            self.event("Normal", "FreedDiskSpace", &message);
        }
        if out.unknown_layers > 0 {
            eprintln!(
                "cairn: kubelet: image GC: {} layer director(ies) the image store does not record were left alone",
                out.unknown_layers
            );
        }
        if out.freed < needed {
            let message = format!(
                "Failed to garbage collect required amount of images. Attempted to free {needed} bytes, but only found {} bytes eligible to free ({} image(s) in use, {} pinned, {} used or stored within {})",
                out.freed,
                out.in_use,
                out.pinned,
                out.recent,
                go_duration(self.policy.min_age)
            );
            eprintln!("cairn: kubelet: image GC: {message}; {now}");
            self.event("Warning", "FreeDiskSpaceFailed", &message);
        }
    }

    /// What the node holds (images, containers, the archives that pin images), to tell
    /// whether a collection that fell short could do better now.
    async fn fingerprint(&self) -> u64 {
        let shared = self.shared.clone();
        let dirs = self.image_dirs.clone();
        blocking(move || {
            let mut h = DefaultHasher::new();
            if let Ok(list) = shared.images.list() {
                for s in list {
                    s.id.hash(&mut h);
                    s.references.hash(&mut h);
                }
            }
            shared.runtime.ids().hash(&mut h);
            for dir in dirs {
                let mut files: Vec<(std::ffi::OsString, u64, Option<SystemTime>)> =
                    std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| {
                            let m = e.metadata().ok()?;
                            Some((e.file_name(), m.len(), m.modified().ok()))
                        })
                        .collect();
                files.sort();
                files.hash(&mut h);
            }
            h.finish()
        })
        .await
        .unwrap_or(0)
    }

    /// Image IDs the pods bound to the node name (those not finished), so an image a pod
    /// still needs is kept even while it has no container. The API may be out of reach (an
    /// offline agent): then only containers count.
    async fn pod_images(&self) -> HashSet<String> {
        let path = format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
            self.shared.node_name
        );
        let pods = match self.shared.client.request(Method::GET, &path, None).await {
            Ok(list) => list,
            Err(e) => {
                eprintln!("cairn: kubelet: image GC: listing the node's pods: {e}; only containers keep images");
                return HashSet::new();
            }
        };
        let names: HashSet<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .flat_map(|p| {
                ["initContainers", "containers", "ephemeralContainers"]
                    .into_iter()
                    .flat_map(|k| p["spec"][k].as_array().cloned().unwrap_or_default())
            })
            .filter_map(|c| c["image"].as_str().map(str::to_owned))
            .collect();
        let store = self.shared.images.clone();
        blocking(move || {
            names
                .iter()
                .filter_map(|n| store.resolve(n).ok())
                .map(|image| image.id)
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// An Event on the Node, as the kubelet posts them.
    fn event(&self, kind: &str, reason: &str, message: &str) {
        let node = &self.shared.node_name;
        let now = cairn_apiserver::meta::now();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{node}."), "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet",
            "reportingInstance": node,
        });
        let client = self.shared.client.clone();
        tokio::spawn(async move {
            let _: Result<Value, _> = client
                .request(
                    Method::POST,
                    "/api/v1/namespaces/default/events",
                    Some(&event),
                )
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(capacity: u64, available: u64, inodes: u64, inodes_free: u64) -> FsUsage {
        FsUsage {
            capacity,
            available,
            inodes,
            inodes_free,
        }
    }

    #[test]
    fn policy_defaults_and_checks() {
        let p = Policy::default();
        assert_eq!((p.high_percent, p.low_percent), (85, 80));
        assert_eq!(p.min_age, Duration::from_secs(120));
        assert!(Policy::new(80, 85, Duration::ZERO, EvictionHard::default())
            .unwrap_err()
            .contains("above"));
        assert!(Policy::new(101, 80, Duration::ZERO, EvictionHard::default()).is_err());
        assert!(Policy::new(90, 90, Duration::ZERO, EvictionHard::default()).is_ok());
    }

    #[test]
    fn eviction_thresholds_as_the_kubelet_writes_them() {
        let d = EvictionHard::default();
        assert_eq!(
            d.available,
            [("nodefs.available".into(), Threshold::Percent(10.0))]
        );
        assert_eq!(
            d.inodes_free,
            [("nodefs.inodesFree".into(), Threshold::Percent(5.0))]
        );
        let e: EvictionHard =
            "memory.available<100Mi, imagefs.available<2Gi,nodefs.inodesFree<1000"
                .parse()
                .unwrap();
        assert_eq!(
            e.available,
            [("imagefs.available".into(), Threshold::Amount(2 << 30))]
        );
        assert_eq!(
            e.inodes_free,
            [("nodefs.inodesFree".into(), Threshold::Amount(1000))]
        );
        assert_eq!(e.ignored, ["memory.available<100Mi"]);
        let none: EvictionHard = "".parse().unwrap();
        assert!(none.met(&usage(100, 0, 100, 0)).is_empty());
        for bad in [
            "nodefs.available>10%",
            "nodefs.available<110%",
            "disk<1Gi",
            "nodefs.available<1Qi",
            "nodefs.available",
        ] {
            assert!(bad.parse::<EvictionHard>().is_err(), "{bad}");
        }
        // 9% free is under 10%; 5% of inodes free is not under 5%.
        assert_eq!(d.met(&usage(1000, 90, 100, 5)), ["nodefs.available<10%"]);
        assert!(d.met(&usage(1000, 100, 100, 5)).is_empty());
        assert_eq!(d.met(&usage(1000, 500, 100, 4)), ["nodefs.inodesFree<5%"]);
        // No inode limit (btrfs): the inode signal never fires.
        assert!(d.met(&usage(1000, 500, 0, 0)).is_empty());
    }

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m0s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "2", "m", "2d", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }

    #[test]
    fn pressure_stays_for_the_transition_period() {
        let t0 = Instant::now();
        let mut p = Pressure::default();
        assert_eq!(
            p.observe(false, t0),
            Some(false),
            "the first look is a change"
        );
        assert_eq!(p.observe(false, t0 + CHECK), None);
        assert_eq!(p.observe(true, t0 + 2 * CHECK), Some(true));
        // Below the threshold again, but not for long enough.
        assert_eq!(p.observe(false, t0 + 3 * CHECK), None);
        assert_eq!(p.on, Some(true));
        assert_eq!(
            p.observe(false, t0 + 2 * CHECK + PRESSURE_TRANSITION),
            Some(false)
        );
    }

    #[test]
    fn status_images_largest_first_limited() {
        let summary = |n: usize, size: u64| ImageSummary {
            id: format!("sha256:{n:064x}"),
            references: (0..7).map(|i| format!("example.com/app{n}:v{i}")).collect(),
            repo_digests: vec![format!("example.com/app{n}@sha256:{n:064x}")],
            size,
        };
        let list: Vec<ImageSummary> = (0..60).map(|n| summary(n, n as u64 * 10)).collect();
        let images = node_images(list);
        assert_eq!(images.len(), MAX_IMAGES);
        assert_eq!(images[0].size_bytes, 590);
        assert_eq!(images[49].size_bytes, 100);
        assert_eq!(images[0].names.len(), MAX_NAMES);
        assert_eq!(
            images[0].names[0],
            format!("example.com/app59@sha256:{:064x}", 59)
        );
    }
}
