//! Growing the last primary partition of an MBR disk (a Raspberry Pi card's data partition,
//! [`cairn_slots::mbr`]) to the end of the card: one 16-byte table entry in sector 0, written
//! in a single sector write. Planning is pure and tested on byte buffers.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::blockdev;
use crate::error::{bail, Context, Result};

const TABLE: usize = 446;
const ENTRY: usize = 16;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Whether `sector0` holds an MBR partition table (and not a GPT's protective MBR).
pub fn is_mbr(sector0: &[u8]) -> bool {
    sector0.len() >= 512
        && sector0[510..512] == [0x55, 0xAA]
        && (0..4).all(|i| sector0[TABLE + i * ENTRY + 4] != 0xEE)
}

/// What growing changes: the partition's start and old/new length in sectors, and the new
/// sector 0.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub start: u64,
    pub old_len: u64,
    pub new_len: u64,
    pub sector0: Vec<u8>,
}

/// Plans growing primary partition `partno` (1-4) to the end of a disk of `disk_sectors`
/// sectors (capped at the 2^32 sectors MBR can describe). `start` is where the kernel says
/// the partition starts (a guard against editing the wrong entry). `Ok(None)`: it already
/// ends at the end, or at the limit.
pub fn plan_grow(
    sector0: &[u8],
    partno: u32,
    disk_sectors: u64,
    start: u64,
) -> Result<Option<Plan>> {
    if !is_mbr(sector0) {
        bail!("no MBR partition table");
    }
    if !(1..=4).contains(&partno) {
        bail!("partition {partno} is not a primary MBR partition");
    }
    let at = TABLE + (partno as usize - 1) * ENTRY;
    let (first, len) = (
        u64::from(le32(sector0, at + 8)),
        u64::from(le32(sector0, at + 12)),
    );
    if sector0[at + 4] == 0 || len == 0 {
        bail!("MBR entry {partno} is unused");
    }
    if first != start {
        bail!("MBR entry {partno} starts at sector {first}, the kernel says {start}");
    }
    for i in (0..4).filter(|&i| i != partno as usize - 1) {
        let other = TABLE + i * ENTRY;
        if sector0[other + 4] != 0 && u64::from(le32(sector0, other + 8)) > first {
            bail!(
                "partition {} lies after partition {partno}: only the last one can grow",
                i + 1
            );
        }
    }
    let end = disk_sectors.min(1 << 32);
    if end <= first + len {
        return Ok(None);
    }
    // A partition starting at sector 0 could otherwise be one sector too long to describe.
    let new_len = (end - first).min(u64::from(u32::MAX));
    let mut out = sector0[..512].to_vec();
    out[at + 12..at + 16].copy_from_slice(&(new_len as u32).to_le_bytes());
    // CHS of the last sector: beyond what CHS can say, as every tool writes it.
    out[at + 5..at + 8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    Ok(Some(Plan {
        start: first,
        old_len: len,
        new_len,
        sector0: out,
    }))
}

/// Grows partition `part` (kernel name, e.g. `mmcblk0p4`) of an MBR disk to the end of the
/// disk and tells the kernel. Returns the old and new size in bytes, or `None`.
pub fn grow_partition(part: &str) -> Result<Option<(u64, u64)>> {
    let disk = blockdev::parent_disk(part)?;
    let partno =
        u32::try_from(blockdev::sys_u64(part, "partition")?).context("partition number")?;
    if blockdev::sys_u64(&disk, "queue/logical_block_size")? != 512 {
        bail!("{disk}: MBR growing needs 512-byte sectors");
    }
    let start = blockdev::sys_u64(part, "start")?;
    let disk_sectors = blockdev::sys_u64(&disk, "size")?;
    let path = format!("/dev/{disk}");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .context(format!("open {path}"))?;
    let Some(plan) = grow_file(&file, disk_sectors, partno, start)? else {
        return Ok(None);
    };
    crate::sys::blkpg_resize(&file, partno, plan.start * 512, plan.new_len * 512).context(
        format!("tell the kernel about the new size of {part} (reboot to apply)"),
    )?;
    Ok(Some((plan.old_len * 512, plan.new_len * 512)))
}

/// Reads sector 0 of `file`, plans, writes and syncs.
pub fn grow_file(file: &File, disk_sectors: u64, partno: u32, start: u64) -> Result<Option<Plan>> {
    let mut sector0 = vec![0u8; 512];
    file.read_exact_at(&mut sector0, 0).context("read MBR")?;
    let Some(plan) = plan_grow(&sector0, partno, disk_sectors, start)? else {
        return Ok(None);
    };
    file.write_all_at(&plan.sector0, 0).context("write MBR")?;
    file.sync_all().context("sync disk")?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn table(parts: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, (kind, start, len)) in parts.iter().enumerate() {
            let at = TABLE + i * ENTRY;
            s[at + 4] = *kind;
            s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            s[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn grows_the_last_partition_only() {
        let s = table(&[(0x0c, 2048, 2048), (0x83, 4096, 2048)]);
        let p = plan_grow(&s, 2, 100_000, 4096).unwrap().unwrap();
        assert_eq!(
            (p.start, p.old_len, p.new_len),
            (4096, 2048, 100_000 - 4096)
        );
        assert_eq!(le32(&p.sector0, TABLE + ENTRY + 12), 100_000 - 4096);
        assert_eq!(
            p.sector0[..TABLE + ENTRY],
            s[..TABLE + ENTRY],
            "entry 1 untouched"
        );
        let e = plan_grow(&s, 1, 100_000, 2048).unwrap_err().to_string();
        assert!(e.contains("lies after"), "{e}");
        assert!(
            plan_grow(&s, 2, 6144, 4096).unwrap().is_none(),
            "already at the end"
        );
        let e = plan_grow(&s, 2, 100_000, 4095).unwrap_err().to_string();
        assert!(e.contains("kernel says"), "{e}");
        assert!(plan_grow(&s, 3, 100_000, 0).is_err(), "unused entry");
        assert!(plan_grow(&s, 5, 100_000, 0).is_err(), "not primary");
    }

    #[test]
    fn refuses_gpt_and_caps_at_two_tib() {
        let gpt = table(&[(0xEE, 1, u32::MAX)]);
        assert!(plan_grow(&gpt, 1, 100_000, 1).is_err());
        let s = table(&[(0x83, 2048, 2048)]);
        let p = plan_grow(&s, 1, 1 << 40, 2048).unwrap().unwrap();
        assert_eq!(p.new_len, (1 << 32) - 2048, "ends at the 2 TiB MBR limit");
    }

    /// The grown table as util-linux reads it.
    #[test]
    fn sfdisk_reads_the_grown_table() {
        let path = std::env::temp_dir().join(format!("cairn-init-mbr-{}.img", std::process::id()));
        let file = File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        let mut child = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let script = "label: dos\nlabel-id: 0x52494143\nsize=8MiB, type=c\nsize=16MiB, type=c\n\
                      size=16MiB, type=c\nsize=8MiB, type=83\n";
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        file.set_len(200 << 20).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut s0 = vec![0u8; 512];
        file.read_exact_at(&mut s0, 0).unwrap();
        assert!(
            cairn_slots::mbr::is_cairn(&s0),
            "label-id 0x52494143 is \"CAIR\""
        );
        let start = u64::from(le32(&s0, TABLE + 3 * ENTRY + 8));
        let p = grow_file(&file, (200 << 20) / 512, 4, start)
            .unwrap()
            .unwrap();
        let dump = Command::new("sfdisk")
            .arg("--dump")
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let dump = String::from_utf8_lossy(&dump.stdout).replace(' ', "");
        let want = (200u64 << 20) / 512 - start;
        assert_eq!(p.new_len, want);
        assert!(
            dump.contains(&format!("start={start},size={want},type=83")),
            "{dump}"
        );
    }
}
