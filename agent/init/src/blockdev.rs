//! Finding partitions by GPT label (`PARTNAME=` in `/sys/class/block/*/uevent`), or by
//! number on a Cairn MBR disk (Raspberry Pi cards, [`cairn_slots::mbr`]), and the sysfs facts
//! about them. Device names are never trusted: `vda2` today may be `sdb2` tomorrow.

use std::fs;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{bail, Context, Result};

const SYS_BLOCK: &str = "/sys/class/block";
pub const POLL: Duration = Duration::from_millis(50);

/// The fields of a block device `uevent` file that init uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UEvent {
    pub devname: Option<String>,
    pub partname: Option<String>,
    /// `PARTN=`: the partition number (MBR partitions have no name).
    pub partn: Option<u32>,
}

pub fn parse_uevent(text: &str) -> UEvent {
    let mut ev = UEvent::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("DEVNAME=") {
            ev.devname = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("PARTNAME=") {
            ev.partname = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("PARTN=") {
            ev.partn = v.parse().ok();
        }
    }
    ev
}

/// Kernel names of the block devices carrying GPT label `label`, or holding that partition
/// of a Cairn MBR disk, sorted.
pub fn find_all(label: &str) -> Vec<String> {
    let mbr_number = cairn_slots::mbr::number(label);
    let mut names: Vec<String> = fs::read_dir(SYS_BLOCK)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("uevent")).ok())
        .map(|t| parse_uevent(&t))
        .filter(|ev| match (&ev.partname, ev.partn) {
            (Some(name), _) => name == label,
            (None, Some(n)) => Some(n) == mbr_number && on_cairn_mbr(ev),
            (None, None) => false,
        })
        .filter_map(|ev| ev.devname)
        .collect();
    names.sort();
    names
}

/// Whether a partition without a name sits on a disk with Cairn's MBR signature.
fn on_cairn_mbr(ev: &UEvent) -> bool {
    use std::os::unix::fs::FileExt;
    let Some(disk) = ev.devname.as_deref().and_then(|p| parent_disk(p).ok()) else {
        return false;
    };
    let mut sector = [0u8; 512];
    fs::File::open(format!("/dev/{disk}"))
        .and_then(|f| f.read_exact_at(&mut sector, 0))
        .is_ok_and(|()| cairn_slots::mbr::is_cairn(&sector))
}

/// Waits until a partition labelled `label` exists and its `/dev` node is there. Returns the
/// kernel name (`vda2`). With two candidates (a second Cairn disk plugged in), the first in
/// name order wins and the caller is told through `duplicates`.
pub fn wait_for(label: &str, timeout: Duration) -> Result<(String, Vec<String>)> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut names = find_all(label);
        if let Some(first) = names.first().cloned() {
            if fs::metadata(format!("/dev/{first}")).is_ok() {
                names.remove(0);
                return Ok((first, names));
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = fs::read_dir(SYS_BLOCK)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            bail!(
                "no partition labelled {label} after {}s (block devices: {})",
                timeout.as_secs(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(" ")
                }
            );
        }
        sleep(POLL);
    }
}

/// Reads a number from `/sys/class/block/<name>/<file>`.
pub fn sys_u64(name: &str, file: &str) -> Result<u64> {
    let path = format!("{SYS_BLOCK}/{name}/{file}");
    let text = fs::read_to_string(&path).context(format!("read {path}"))?;
    text.trim().parse().context(format!("parse {path}"))
}

/// The whole disk a partition belongs to (`vda4` → `vda`, `mmcblk0p4` → `mmcblk0`).
pub fn parent_disk(part: &str) -> Result<String> {
    let real: PathBuf =
        fs::canonicalize(format!("{SYS_BLOCK}/{part}")).context(format!("resolve {part}"))?;
    match real.parent().and_then(|p| p.file_name()) {
        Some(disk) => Ok(disk.to_string_lossy().into_owned()),
        None => bail!("no parent disk for {part}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_partition() {
        let ev = parse_uevent("MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=cairn-a\n");
        assert_eq!(ev.devname.as_deref(), Some("vda2"));
        assert_eq!(ev.partname.as_deref(), Some("cairn-a"));
        assert_eq!(ev.partn, Some(2));
    }

    #[test]
    fn uevent_mbr_partition_has_a_number_only() {
        let ev =
            parse_uevent("MAJOR=179\nMINOR=4\nDEVNAME=mmcblk0p4\nDEVTYPE=partition\nPARTN=4\n");
        assert_eq!((ev.partname, ev.partn), (None, Some(4)));
    }

    #[test]
    fn uevent_disk_has_no_label() {
        let ev = parse_uevent("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n");
        assert_eq!(ev.partname, None);
    }
}
