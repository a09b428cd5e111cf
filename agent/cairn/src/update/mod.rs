//! A/B updates on the node: install a signed bundle into the inactive slot
//! ([`apply`]), and after the trial boot commit or roll back ([`gate`]).
//!
//! The slot state is the boot loader entries ([`cairn_slots`]); this module adds the node's
//! side: which slot runs, where its partitions are, and the record of the last update
//! (`DATA/update/last.json`, on the data partition so it survives both slots).
//!
//! Bundles reach [`apply`] four ways: uploaded through the API ([`service`], staged by
//! [`staging`]), fetched from a URL by the node ([`fetch`], same staging), found on a USB
//! stick or in `DATA/update/inbox` ([`inbox`]), or `cairn update apply FILE`. The Node object
//! shows the result (`crate::node_status`).

pub mod fetch;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixture;
pub mod gate;
pub mod inbox;
pub mod service;
pub mod staging;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cairn_bundle::{verify_file, Expect, Manifest, Payload, Reader, TrustedKeys};
use cairn_slots::{Entries, EntrySpec, Slot, SlotState, Status};
use serde::{Deserialize, Serialize};

/// Errors of the updater, each saying what was (not) touched.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Bundle(#[from] cairn_bundle::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Refused(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> UpdateError {
    let what = what.into();
    move |source| UpdateError::Io { what, source }
}

/// Where a node keeps what the updater reads and writes.
#[derive(Clone, Debug)]
pub struct Node {
    /// The boot partition's mount point (`/boot`).
    pub boot: PathBuf,
    /// `/etc/cairn`: `release` (version, board, arch) and `update-keys/*.pub`.
    pub etc: PathBuf,
    /// `DATA/update`: the last update's record.
    pub state: PathBuf,
    /// The slot this system runs from.
    pub running: Slot,
    /// Block devices (or, in tests, files) of the slots' read-only roots.
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    /// Remount `boot` read-write around changes (real nodes: it is mounted read-only).
    pub remount_boot: bool,
    /// A Raspberry Pi card (`cairn_slots::mbr`): `slot_a`/`slot_b` are the slots' FAT
    /// partitions, each holding the root as a file beside the kernel and the firmware, and
    /// `autoboot.txt` on `boot` follows the entries ([`cairn_slots::autoboot`]).
    pub card: bool,
}

/// `/etc/cairn/release`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub board: String,
    pub arch: String,
}

impl Release {
    pub fn read(path: &Path) -> Result<Release, UpdateError> {
        let text = fs::read_to_string(path).map_err(io_err(path.display().to_string()))?;
        let mut r = Release::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("version", v)) => r.version = v.trim().into(),
                Some(("board", v)) => r.board = v.trim().into(),
                Some(("arch", v)) => r.arch = v.trim().into(),
                _ => {}
            }
        }
        if r.version.is_empty() || r.board.is_empty() || r.arch.is_empty() {
            return Err(UpdateError::Refused(format!(
                "{} lacks version, board or arch",
                path.display()
            )));
        }
        Ok(r)
    }
}

/// What happened to the last update, kept across both slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// `pending` (written, trial boot next), `committed`, `failed` (the trial boot gave
    /// up and reboots), `rolled-back` (back on the old slot).
    pub result: String,
    pub from_version: String,
    pub to_version: String,
    pub slot: String,
    /// Why it failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the epoch of the last change.
    pub at: u64,
}

/// One slot as reported to users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotReport {
    pub slot: String,
    /// `empty`, `committed`, `trial` or `failed` (a trial that was not committed).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SlotReport {
    fn new(slot: Slot, state: &SlotState, version: &Option<String>) -> SlotReport {
        let state = match state {
            SlotState::Empty => "empty",
            SlotState::Committed => "committed",
            SlotState::Trial(_) => "trial",
            SlotState::Failed(_) => "failed",
        };
        SlotReport {
            slot: slot.to_string(),
            state: state.into(),
            version: version.clone(),
        }
    }

    /// `b: Cairn 0.2.0 (committed)`.
    pub fn describe(&self) -> String {
        match &self.version {
            Some(v) if self.state != "empty" => {
                format!("{}: Cairn {v} ({})", self.slot, self.state)
            }
            _ => format!("{}: {}", self.slot, self.state),
        }
    }
}

/// A node's update state: what `GET /cairn/v1/nodes/NAME/update` answers, `cairn update
/// status` and `cairnctl status` print.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub node: String,
    pub version: String,
    pub board: String,
    pub arch: String,
    pub running: SlotReport,
    pub other: SlotReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Record>,
    /// A bundle upload on its way or waiting to be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadReport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    pub sha256: String,
    pub size: u64,
    pub received: u64,
    pub complete: bool,
}

impl Record {
    /// `committed 0.1.0 -> 0.2.0 (slot b): reason`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> {} (slot {}){}",
            self.result,
            self.from_version,
            self.to_version,
            self.slot,
            self.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )
    }
}

impl Node {
    /// This node's update state, reported as `name`.
    pub fn report(&self, name: &str) -> Result<Report, UpdateError> {
        let release = self.release()?;
        let st = self.status()?;
        let upload = staging::Staging::new(self.incoming())
            .state()
            .map(|s| UploadReport {
                sha256: s.upload.sha256,
                size: s.upload.size,
                received: s.received,
                complete: s.complete,
            });
        Ok(Report {
            node: name.into(),
            version: release.version,
            board: release.board,
            arch: release.arch,
            running: SlotReport::new(st.running, &st.running_state, &st.running_version),
            other: SlotReport::new(st.running.other(), &st.other_state, &st.other_version),
            last: self.last(),
            upload,
        })
    }

    /// Where bundles arriving over the network are staged.
    pub fn incoming(&self) -> PathBuf {
        self.state.join("incoming")
    }

    /// The node as it runs: slot from the device mounted at `/`, partitions by label.
    pub fn detect(data_dir: &Path) -> Result<Node, UpdateError> {
        let board = fs::read_to_string("/etc/cairn/board").unwrap_or_default();
        if board.lines().any(|l| l == "slot_root=boot-file") {
            let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
            let running = cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix("cairn.slot="))
                .and_then(Slot::parse)
                .ok_or_else(|| {
                    UpdateError::Refused("no cairn.slot= on the kernel command line".into())
                })?;
            return Ok(Node {
                boot: PathBuf::from("/boot"),
                etc: PathBuf::from("/etc/cairn"),
                state: data_dir.join("update"),
                running,
                slot_a: partition("cairn-boot-a")
                    .map_err(io_err("finding partition cairn-boot-a"))?,
                slot_b: partition("cairn-boot-b")
                    .map_err(io_err("finding partition cairn-boot-b"))?,
                remount_boot: true,
                card: true,
            });
        }
        let running = running_slot().map_err(io_err("finding the running slot"))?;
        Ok(Node {
            boot: PathBuf::from("/boot"),
            etc: PathBuf::from("/etc/cairn"),
            state: data_dir.join("update"),
            running,
            slot_a: partition(Slot::A.label()).map_err(io_err("finding partition cairn-a"))?,
            slot_b: partition(Slot::B.label()).map_err(io_err("finding partition cairn-b"))?,
            remount_boot: true,
            card: false,
        })
    }

    pub fn entries(&self) -> Entries {
        Entries::at(&self.boot)
    }

    pub fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    pub fn status(&self) -> Result<Status, UpdateError> {
        Status::read(&self.entries(), self.running).map_err(io_err("reading the slot entries"))
    }

    pub fn release(&self) -> Result<Release, UpdateError> {
        Release::read(&self.etc.join("release"))
    }

    pub fn last(&self) -> Option<Record> {
        let text = fs::read_to_string(self.state.join("last.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write_record(&self, r: &Record) -> Result<(), UpdateError> {
        fs::create_dir_all(&self.state).map_err(io_err(self.state.display().to_string()))?;
        let tmp = self.state.join("last.json.tmp");
        let json = serde_json::to_vec_pretty(r).expect("records serialise");
        (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, self.state.join("last.json"))?;
            File::open(&self.state)?.sync_all()
        })()
        .map_err(io_err("writing the update record"))
    }

    /// Changes the last record with `f` (starting from an empty one if there is none),
    /// stamps it with the time and writes it.
    pub fn amend_record(&self, f: impl FnOnce(&mut Record)) -> Result<Record, UpdateError> {
        let mut rec = self.last().unwrap_or_default();
        f(&mut rec);
        rec.at = now();
        self.write_record(&rec)?;
        Ok(rec)
    }

    /// Runs `f` with the boot partition writable.
    pub fn with_boot_rw<T>(
        &self,
        f: impl FnOnce(&mut Entries) -> Result<T, UpdateError>,
    ) -> Result<T, UpdateError> {
        if self.remount_boot {
            remount(&self.boot, false).map_err(io_err("remounting /boot read-write"))?;
        }
        let mut r = f(&mut self.entries());
        if self.card && r.is_ok() {
            // The firmware's choice follows the entries' first slot.
            let first = self
                .entries()
                .load()
                .ok()
                .and_then(|e| e.into_iter().next());
            if let Some(first) = first {
                let mut ops = cairn_slots::RealOps;
                if let Err(e) = cairn_slots::autoboot::write(&mut ops, &self.boot, first.slot) {
                    r = Err(UpdateError::Io {
                        what: "writing autoboot.txt".into(),
                        source: e,
                    });
                }
            }
        }
        if self.remount_boot {
            // Flushes FAT before the remount; failing that is worth a warning only.
            if let Err(e) = remount(&self.boot, true) {
                eprintln!("cairn: update: remounting /boot read-only: {e}");
            }
        }
        r
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Asks PID 1 (cairn-init) to reboot the node: SIGUSR1 (docs/design.md, "Signals to PID 1").
pub fn request_reboot() -> io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    kill(nix::unistd::Pid::from_raw(1), Signal::SIGUSR1).map_err(io::Error::from)
}

/// The nodes (by slot A's device) with an install under way in this process.
static INSTALLING: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// An install under way on one node; dropping it ends the claim.
struct Installing(PathBuf);

impl Installing {
    fn claim(node: &Node) -> Result<Installing, UpdateError> {
        let mut busy = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(node.slot_a.clone()) {
            return Err(UpdateError::Io {
                what: "installing".into(),
                source: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another update is being installed",
                ),
            });
        }
        Ok(Installing(node.slot_a.clone()))
    }
}

impl Drop for Installing {
    fn drop(&mut self) {
        let mut busy = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.0);
    }
}

/// Installs `bundle` into the inactive slot and puts that slot on trial for the next boot.
/// Everything about the bundle is verified before the first byte is written; while the slot
/// is written no boot entry points at it.
pub fn apply(
    node: &Node,
    bundle: &Path,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest, UpdateError> {
    // One install at a time on a node, whichever way the bundle came (API, URL, stick,
    // inbox).
    let _one = Installing::claim(node)?;
    let release = node.release()?;
    let keys = TrustedKeys::load_dir(&node.etc.join("update-keys"))?;
    let expect = Expect {
        board: release.board.clone(),
        arch: release.arch.clone(),
        running: release.version.clone(),
        allow_downgrade,
    };
    progress(&format!("verifying {}", bundle.display()));
    let manifest = verify_file(bundle, &keys, &expect)?;
    let target = node.running.other();
    let dev = node.device(target);
    let room = device_size(dev).map_err(io_err(dev.display().to_string()))?;
    let rootfs = manifest.payload("rootfs").expect("checked by Expect");
    if rootfs.size > room {
        return Err(UpdateError::Refused(format!(
            "the root filesystem ({} bytes) does not fit slot {target} ({room} bytes)",
            rootfs.size
        )));
    }
    progress(&format!(
        "Cairn {} for {} verified (key {}); writing slot {target}",
        manifest.version, manifest.board, manifest.key
    ));
    node.write_record(&Record {
        result: "writing".into(),
        from_version: release.version.clone(),
        to_version: manifest.version.clone(),
        slot: target.to_string(),
        reason: None,
        at: now(),
    })?;

    node.with_boot_rw(|entries| {
        entries
            .forget(target)
            .map_err(io_err("removing the target slot's boot entry"))?;
        let file = File::open(bundle).map_err(io_err(bundle.display().to_string()))?;
        let mut reader = Reader::open(BufReader::with_capacity(1 << 20, file), &keys, &expect)?;
        if node.card {
            let card = CardSlot::mount(dev, target)?;
            let written = card.write(reader, &manifest.cmdline, progress);
            card.unmount()?;
            written?;
            let spec = EntrySpec {
                version: manifest.version.clone(),
                linux: "/vmlinuz".into(),
                initrd: "/initrd.img".into(),
                options: manifest.cmdline.clone(),
            };
            entries
                .add_trial(target, &spec, 1)
                .map_err(io_err("adding the trial boot entry"))?;
            return Ok(());
        }
        let slot_dir = node.boot.join(target.as_str());
        fs::create_dir_all(&slot_dir).map_err(io_err(slot_dir.display().to_string()))?;
        while let Some(next) = reader.peek().cloned() {
            let (path, mut out) = match next.name.as_str() {
                "rootfs" => {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(dev)
                        .map_err(io_err(dev.display().to_string()))?;
                    (dev.to_path_buf(), f)
                }
                "kernel" | "initrd" => {
                    let name = if next.name == "kernel" {
                        "vmlinuz"
                    } else {
                        "initrd.img"
                    };
                    let p = slot_dir.join(name);
                    let f = File::create(&p).map_err(io_err(p.display().to_string()))?;
                    (p, f)
                }
                other => {
                    return Err(UpdateError::Refused(format!("unknown payload {other}")));
                }
            };
            write_payload(&mut reader, &next, &path, &mut out, progress)?;
        }
        reader.finish()?;
        let spec = EntrySpec {
            version: manifest.version.clone(),
            linux: format!("/{target}/vmlinuz"),
            initrd: format!("/{target}/initrd.img"),
            options: manifest.cmdline.clone(),
        };
        entries
            .add_trial(target, &spec, 1)
            .map_err(io_err("adding the trial boot entry"))?;
        Ok(())
    })?;
    node.write_record(&Record {
        result: "pending".into(),
        from_version: release.version,
        to_version: manifest.version.clone(),
        slot: target.to_string(),
        reason: None,
        at: now(),
    })?;
    progress(&format!(
        "slot {target} is on trial: the next boot runs Cairn {} once, and keeps it only if it passes its health gate",
        manifest.version
    ));
    Ok(manifest)
}

/// A Raspberry Pi slot's FAT partition, mounted read-write while an update writes it.
struct CardSlot {
    dir: PathBuf,
    slot: Slot,
}

impl CardSlot {
    fn mount(dev: &Path, slot: Slot) -> Result<CardSlot, UpdateError> {
        use nix::mount::{mount, MsFlags};
        let dir = PathBuf::from(format!("/run/cairn/slot-{slot}"));
        fs::create_dir_all(&dir).map_err(io_err(dir.display().to_string()))?;
        // A power cut in the middle of the last write to this slot can have left its FAT
        // damaged, which Linux would answer with a read-only mount halfway through.
        let fsck = Path::new(cairn_slots::fat::FSCK_FAT);
        if fsck.exists() {
            let checked = cairn_slots::fat::check(fsck, dev)
                .map_err(io_err(format!("checking {}", dev.display())))?;
            if let cairn_slots::fat::Check::Repaired { report } = checked {
                eprintln!(
                    "cairn: update: repaired slot {slot} ({}): {report}",
                    dev.display()
                );
            }
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some(dev), &dir, Some("vfat"), flags, None::<&str>).map_err(|e| {
            io_err(format!("mounting {} at {}", dev.display(), dir.display()))(e.into())
        })?;
        let card = CardSlot { dir, slot };
        if let Err(e) = cairn_slots::fat::remove_salvaged(&card.dir) {
            let _ = card.unmount();
            return Err(io_err(format!("cleaning {}", card.dir.display()))(e));
        }
        Ok(card)
    }

    /// Writes the bundle's payloads as the slot's files: first the firmware's second stage
    /// (`start*.elf`) goes, so the firmware cannot boot a half-written slot; it comes back
    /// last, under a temporary name until every other file is on the card.
    fn write<R: Read>(
        &self,
        mut reader: Reader<R>,
        cmdline: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), UpdateError> {
        let what = |p: &Path| p.display().to_string();
        let second_stage = cairn_slots::mbr::is_second_stage;
        for de in fs::read_dir(&self.dir).map_err(io_err(what(&self.dir)))? {
            let de = de.map_err(io_err(what(&self.dir)))?;
            if second_stage(&de.file_name().to_string_lossy()) {
                fs::remove_file(de.path()).map_err(io_err(what(&de.path())))?;
            }
        }
        nix::unistd::sync();
        let mut last = Vec::new();
        while let Some(next) = reader.peek().cloned() {
            let name = match next.name.as_str() {
                "rootfs" => cairn_slots::mbr::ROOT_FILE.to_string(),
                "kernel" => "vmlinuz".into(),
                "initrd" => "initrd.img".into(),
                other => match other.strip_prefix("boot/") {
                    Some(f) if !f.is_empty() && !f.contains('/') && f != ".." && f != "." => {
                        f.to_string()
                    }
                    _ => return Err(UpdateError::Refused(format!("unknown payload {other}"))),
                },
            };
            let path = if second_stage(&name) {
                last.push(name.clone());
                self.dir.join(format!("{name}.new"))
            } else {
                self.dir.join(&name)
            };
            let mut out = File::create(&path).map_err(io_err(what(&path)))?;
            write_payload(&mut reader, &next, &path, &mut out, progress)?;
        }
        reader.finish()?;
        let line = format!("{} cairn.slot={}\n", cmdline.trim(), self.slot);
        let path = self.dir.join("cmdline.txt");
        fs::write(&path, line).map_err(io_err(what(&path)))?;
        nix::unistd::sync();
        for name in last {
            let from = self.dir.join(format!("{name}.new"));
            fs::rename(&from, self.dir.join(&name)).map_err(io_err(what(&from)))?;
        }
        nix::unistd::sync();
        Ok(())
    }

    fn unmount(&self) -> Result<(), UpdateError> {
        nix::mount::umount(&self.dir)
            .map_err(|e| io_err(format!("unmounting {}", self.dir.display()))(e.into()))
    }
}

/// Streams the next payload (`next`, as peeked) into `out` (opened at `path`), synced, and
/// reports it.
fn write_payload<R: Read>(
    reader: &mut Reader<R>,
    next: &Payload,
    path: &Path,
    out: &mut File,
    progress: &mut dyn FnMut(&str),
) -> Result<(), UpdateError> {
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
    reader.next_payload(&mut w)?;
    w.flush().map_err(io_err(path.display().to_string()))?;
    drop(w);
    out.sync_all().map_err(io_err(path.display().to_string()))?;
    progress(&format!(
        "  {} -> {} ({} bytes)",
        next.name,
        path.display(),
        next.size
    ));
    Ok(())
}

fn device_size(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(0))
}

/// The slot whose partition is mounted at `/`.
fn running_slot() -> io::Result<Slot> {
    let mut text = String::new();
    File::open("/proc/self/mountinfo")?.read_to_string(&mut text)?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.get(4) != Some(&"/") {
            continue;
        }
        let Some(dev) = f.get(2) else { continue };
        // The initramfs may still be listed under `/`; it has no block device.
        let Ok(uevent) = fs::read_to_string(format!("/sys/dev/block/{dev}/uevent")) else {
            continue;
        };
        for l in uevent.lines() {
            if let Some(name) = l.strip_prefix("PARTNAME=") {
                if let Some(slot) = name.strip_prefix("cairn-").and_then(Slot::parse) {
                    return Ok(slot);
                }
            }
        }
    }
    Err(io::Error::other(
        "/ is not a cairn-a or cairn-b partition (a network-booted node has no slots: it runs \
         whatever build its boot server serves, from its next boot on)",
    ))
}

/// `/dev/<name>` of the partition labelled `label`: by GPT name, or by number on a Cairn
/// MBR card ([`cairn_slots::mbr`]).
fn partition(label: &str) -> io::Result<PathBuf> {
    let number = cairn_slots::mbr::number(label).map(|n| format!("PARTN={n}"));
    for de in fs::read_dir("/sys/class/block")? {
        let de = de?;
        let Ok(uevent) = fs::read_to_string(de.path().join("uevent")) else {
            continue;
        };
        if uevent.lines().any(|l| l == format!("PARTNAME={label}")) {
            return Ok(Path::new("/dev").join(de.file_name()));
        }
        let unnamed = !uevent.lines().any(|l| l.starts_with("PARTNAME="));
        if unnamed
            && number
                .as_ref()
                .is_some_and(|n| uevent.lines().any(|l| l == n))
        {
            // The parent directory in sysfs is the whole disk.
            let disk = fs::canonicalize(de.path())?;
            let disk = disk
                .parent()
                .and_then(|d| d.file_name())
                .map(|d| d.to_os_string());
            let mut sector = [0u8; 512];
            let read = disk.map(|d| {
                use std::os::unix::fs::FileExt;
                File::open(Path::new("/dev").join(d)).and_then(|f| f.read_exact_at(&mut sector, 0))
            });
            if matches!(read, Some(Ok(()))) && cairn_slots::mbr::is_cairn(&sector) {
                return Ok(Path::new("/dev").join(de.file_name()));
            }
        }
    }
    Err(io::Error::other(format!("no partition labelled {label}")))
}

fn remount(path: &Path, read_only: bool) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let mut flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if read_only {
        nix::unistd::sync();
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
