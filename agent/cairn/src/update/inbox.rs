//! Air-gapped updates: bundles a node finds by itself, with no network.
//!
//! * **Removable media.** A FAT (or exFAT, ISO 9660) filesystem on any block device that is not
//!   the node's own disk, holding `cairn-update/*.cairnb` or `*.cairnb` at its root: a USB
//!   stick made on any computer. It is mounted read-only (nosuid, nodev, noexec) under
//!   `/run/cairn/media/<device>` only while it is looked at. Journalled filesystems (ext4) are
//!   left alone: even a read-only mount may replay their journal, which is a write.
//! * **The data partition.** `DATA/update/inbox/*.cairnb`.
//!
//! The node looks at start and whenever the set of block devices or the inbox changes (every
//! [`POLL`]; two directory listings, no writes). A bundle for another board, for the running
//! version, or for a version whose trial already failed here is skipped (the last rule keeps a
//! stick with a broken bundle from sending the node round in trial boots). Anything else goes
//! through [`super::apply`] (verified whole before the slot is touched); success means a drain
//! and a reboot into the trial, as for uploads.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_slots::SlotState;

use super::Node;

/// How often the node looks for new devices or files.
pub const POLL: Duration = Duration::from_secs(10);
/// Filesystems tried on removable media, in this order (when the kernel knows them).
const MEDIA_FS: [&str; 3] = ["vfat", "exfat", "iso9660"];

/// A bundle found, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// `sdb1`, or `data partition`.
    pub source: String,
}

/// Block devices that may be removable media: every disk and partition under `sys_block`
/// except loop, RAM and zram devices, device-mapper, and those of `own_disk` (the disk the
/// node boots from, e.g. `vda` or `mmcblk0`).
pub fn media_candidates(sys_block: &Path, own_disk: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let virtual_dev = ["loop", "ram", "zram", "dm-"]
                .iter()
                .any(|p| n.starts_with(p));
            let own = !own_disk.is_empty() && n.starts_with(own_disk);
            !virtual_dev && !own
        })
        .collect();
    names.sort();
    // A whole disk that has partitions is looked at through them.
    let with_parts: BTreeSet<String> = names
        .iter()
        .filter(|n| sys_block.join(n).join("partition").exists())
        .filter_map(|p| {
            let parent = fs::canonicalize(sys_block.join(p)).ok()?;
            Some(parent.parent()?.file_name()?.to_string_lossy().into_owned())
        })
        .collect();
    names.retain(|n| !with_parts.contains(n));
    names
}

/// The disk a partition device such as `/dev/vda3` or `/dev/mmcblk0p3` belongs to.
pub fn disk_of(partition: &Path, sys_block: &Path) -> Option<String> {
    let name = partition.file_name()?.to_string_lossy().into_owned();
    let real = fs::canonicalize(sys_block.join(&name)).ok()?;
    Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
}

/// `*.cairnb` files in `dir` and in `dir/cairn-update`, sorted.
pub fn bundles_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join("cairn-update")] {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_bundle = p
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("cairnb"));
            if is_bundle && p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Why a found bundle is not installed, or `None` to install it.
pub fn skip_reason(node: &Node, bundle: &Path) -> Option<String> {
    let m = match cairn_bundle::Manifest::peek_file(bundle) {
        Ok(m) => m,
        Err(e) => return Some(format!("not a readable bundle: {e}")),
    };
    let release = node.release().ok()?;
    if m.board != release.board {
        return Some(format!(
            "for board {}, this node is a {}",
            m.board, release.board
        ));
    }
    if m.version == release.version {
        return Some(format!("Cairn {} runs already", m.version));
    }
    if let Some(last) = node.last() {
        let failed_here = matches!(last.result.as_str(), "rolled-back" | "failed");
        if failed_here && last.to_version == m.version {
            return Some(format!(
                "the trial of Cairn {} failed on this node ({}); remove the bundle or bring a new one",
                m.version,
                last.reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }
    None
}

/// Filesystems the running kernel can mount, from `/proc/filesystems`.
fn kernel_filesystems() -> Vec<String> {
    fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// A read-only mount that goes away when dropped.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Mounts `/dev/<dev>` read-only under `base/<dev>` with the first of vfat, exfat, iso9660 that
/// takes it; `None` if none does (not a stick's filesystem).
pub fn mount_media(dev: &str, base: &Path) -> io::Result<Option<Mounted>> {
    use nix::mount::{mount, MsFlags};
    let known = kernel_filesystems();
    let dir = base.join(dev);
    fs::create_dir_all(&dir)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let source = Path::new("/dev").join(dev);
    for fstype in MEDIA_FS.iter().filter(|f| known.iter().any(|k| k == *f)) {
        if mount(Some(&source), &dir, Some(*fstype), flags, None::<&str>).is_ok() {
            return Ok(Some(Mounted { dir }));
        }
    }
    let _ = fs::remove_dir(&dir);
    Ok(None)
}

/// What the watcher saw last, to look again only when it changes.
#[derive(Default, PartialEq, Eq)]
struct Seen {
    devices: Vec<String>,
    inbox: Vec<(PathBuf, u64)>,
}

/// Watches for bundles on removable media and in `DATA/update/inbox`; installs the first one
/// worth installing with `install` (which verifies, writes the slot and reboots).
pub struct Watcher {
    pub node: Node,
    pub sys_block: PathBuf,
    pub media_base: PathBuf,
    /// Block devices of the node's own disk are never looked at.
    pub own_disk: String,
    seen: Seen,
    /// Bundles already judged this boot (path and size), not to be read again.
    judged: BTreeSet<(PathBuf, u64)>,
}

impl Watcher {
    pub fn new(node: Node) -> Watcher {
        let sys_block = PathBuf::from("/sys/class/block");
        let own_disk = disk_of(&node.slot_a, &sys_block).unwrap_or_default();
        Watcher {
            node,
            sys_block,
            media_base: PathBuf::from("/run/cairn/media"),
            own_disk,
            seen: Seen::default(),
            judged: BTreeSet::new(),
        }
    }

    /// The inbox on the data partition.
    pub fn inbox(&self) -> PathBuf {
        self.node.state.join("inbox")
    }

    /// One look: if anything changed since the last, searches media and the inbox and
    /// offers each new bundle to `install` until one is installed (returns true).
    pub fn look(&mut self, install: &mut dyn FnMut(&Found) -> Result<(), String>) -> bool {
        let now = Seen {
            devices: media_candidates(&self.sys_block, &self.own_disk),
            inbox: bundles_in(&self.inbox())
                .into_iter()
                .map(|p| {
                    let len = fs::metadata(&p).map_or(0, |m| m.len());
                    (p, len)
                })
                .collect(),
        };
        if now == self.seen {
            return false;
        }
        // Not during a trial boot, nor with an update installed and waiting for its reboot:
        // look again once that is settled.
        let busy = self.node.status().map_or(true, |st| {
            st.on_trial() || matches!(st.other_state, SlotState::Trial(_))
        });
        if busy {
            return false;
        }
        let devices = now.devices.clone();
        let inbox: Vec<PathBuf> = now.inbox.iter().map(|(p, _)| p.clone()).collect();
        self.seen = now;
        for bundle in inbox {
            let found = Found {
                path: bundle,
                source: "the data partition".into(),
            };
            if self.offer(&found, install) {
                return true;
            }
        }
        for dev in devices {
            let mounted = match mount_media(&dev, &self.media_base) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("cairn: update: looking at /dev/{dev}: {e}");
                    continue;
                }
            };
            for bundle in bundles_in(&mounted.dir) {
                let found = Found {
                    path: bundle,
                    source: format!("/dev/{dev}"),
                };
                if self.offer(&found, install) {
                    return true;
                }
            }
        }
        false
    }

    fn offer(
        &mut self,
        found: &Found,
        install: &mut dyn FnMut(&Found) -> Result<(), String>,
    ) -> bool {
        let size = fs::metadata(&found.path).map_or(0, |m| m.len());
        let name = found
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !self.judged.insert((found.path.clone(), size)) {
            return false;
        }
        if let Some(why) = skip_reason(&self.node, &found.path) {
            eprintln!("cairn: update: {name} on {}: skipped: {why}", found.source);
            return false;
        }
        eprintln!("cairn: update: found {name} on {}", found.source);
        match install(found) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("cairn: update: {name} on {}: {e}", found.source);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::fixture::Fixture;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cairn-inbox-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake `/sys/class/block`: devices are directories under `devices/<disk>/`, linked
    /// from the class directory as the kernel does.
    fn sys_block(root: &Path, disks: &[(&str, &[&str])]) -> PathBuf {
        let class = root.join("class");
        fs::create_dir_all(&class).unwrap();
        for (disk, parts) in disks {
            let d = root.join("devices").join(disk);
            fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(&d, class.join(disk)).unwrap();
            for p in *parts {
                let pd = d.join(p);
                fs::create_dir_all(&pd).unwrap();
                fs::write(pd.join("partition"), "1").unwrap();
                std::os::unix::fs::symlink(&pd, class.join(p)).unwrap();
            }
        }
        class
    }

    #[test]
    fn candidates_leave_out_the_own_disk_and_virtual_devices() {
        let root = tmp("sys");
        let class = sys_block(
            &root,
            &[
                ("vda", &["vda1", "vda2", "vda3"]),
                ("sdb", &["sdb1"]),
                ("sdc", &[]),
                ("loop0", &[]),
                ("zram0", &[]),
            ],
        );
        assert_eq!(media_candidates(&class, "vda"), ["sdb1", "sdc"]);
        assert_eq!(
            disk_of(Path::new("/dev/vda3"), &class).as_deref(),
            Some("vda")
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bundles_at_the_root_and_in_cairn_update() {
        let d = tmp("files");
        fs::create_dir_all(d.join("cairn-update")).unwrap();
        fs::write(d.join("a.cairnb"), "x").unwrap();
        fs::write(d.join("cairn-update/B.CAIRNB"), "x").unwrap();
        fs::write(d.join("notes.txt"), "x").unwrap();
        let names: Vec<String> = bundles_in(&d)
            .iter()
            .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.cairnb", "cairn-update/B.CAIRNB"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_inbox_installs_a_new_bundle_once_and_skips_what_is_not_for_it() {
        let f = Fixture::new(tmp("watch"), 1 << 20);
        let mut w = Watcher::new(f.node.clone());
        w.sys_block = f.dir.join("no-sys");
        let inbox = w.inbox();
        fs::create_dir_all(&inbox).unwrap();
        let offered = std::cell::RefCell::new(Vec::new());
        let mut install = |found: &Found| {
            offered.borrow_mut().push(found.path.clone());
            Ok(())
        };
        assert!(!w.look(&mut install), "nothing there");

        // The running version: skipped.
        let same = f.bundle("0.1.0", b"rootfs", "console=ttyS0");
        fs::copy(&same, inbox.join("same.cairnb")).unwrap();
        assert!(!w.look(&mut install));
        // A version whose trial failed here: skipped.
        f.node
            .write_record(&crate::update::Record {
                result: "rolled-back".into(),
                from_version: "0.1.0".into(),
                to_version: "0.3.0".into(),
                slot: "b".into(),
                reason: Some("boom".into()),
                at: 1,
            })
            .unwrap();
        let failed = f.bundle("0.3.0", b"rootfs", "console=ttyS0");
        fs::copy(&failed, inbox.join("failed.cairnb")).unwrap();
        assert!(!w.look(&mut install));
        assert!(offered.borrow().is_empty(), "{offered:?}");

        // A new one: offered, once.
        let new = f.bundle("0.2.0", b"rootfs", "console=ttyS0");
        fs::copy(&new, inbox.join("new.cairnb")).unwrap();
        assert!(w.look(&mut install));
        assert_eq!(*offered.borrow(), [inbox.join("new.cairnb")]);
        assert!(!w.look(&mut install), "nothing changed: no second look");
        fs::remove_dir_all(&f.dir).unwrap();
    }
}
