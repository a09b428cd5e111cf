//! The partitioned disk image: GPT written by util-linux `sfdisk` (deterministic with the
//! explicit disk and partition UUIDs given here), partition contents copied in sparsely.
//!
//! Why sfdisk rather than a GPT crate: it is the reference implementation users will also
//! inspect images with, it runs without root on a plain file, and the same tool reads the
//! table back (`sfdisk --json`) for `cairnctl config set`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::manifest::sha256;

pub const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

#[derive(Debug, Clone)]
pub struct Part {
    pub label: &'static str,
    /// GPT partition type GUID, or MBR type byte in hex (`c` FAT32 LBA, `83` Linux).
    pub kind: &'static str,
    pub start: u64,
    pub size: u64,
}

/// The partition plan for sizes in MiB: boot, slot A, slot B, data; 1 MiB aligned.
pub fn plan(boot_mib: u64, slot_mib: u64, data_mib: u64) -> (Vec<Part>, u64) {
    let mut at = MIB;
    let mut parts = Vec::new();
    for (label, kind, mib) in [
        ("cairn-boot", ESP_TYPE, boot_mib),
        ("cairn-a", LINUX_TYPE, slot_mib),
        ("cairn-b", LINUX_TYPE, slot_mib),
        ("cairn-data", LINUX_TYPE, data_mib),
    ] {
        parts.push(Part {
            label,
            kind,
            start: at,
            size: mib * MIB,
        });
        at += mib * MIB;
    }
    (parts, at + MIB)
}

/// The MBR plan of a Raspberry Pi card (`cairn_slots::mbr`): seed, slot A, slot B (all
/// FAT), data; 4 MiB aligned (SD cards erase in 4 MiB units), so the first partition starts
/// at 4 MiB.
pub fn plan_mbr(boot_mib: u64, slot_mib: u64, data_mib: u64) -> (Vec<Part>, u64) {
    let mut at = 4 * MIB;
    let mut parts = Vec::new();
    for ((_, label), mib) in cairn_slots::mbr::PARTITIONS
        .iter()
        .zip([boot_mib, slot_mib, slot_mib, data_mib])
    {
        let mib = mib.div_ceil(4) * 4;
        let kind = if *label == "cairn-data" { "83" } else { "c" };
        parts.push(Part {
            label,
            kind,
            start: at,
            size: mib * MIB,
        });
        at += mib * MIB;
    }
    (parts, at)
}

/// Creates `img` of `total` bytes (sparse) with an MBR for `parts` and Cairn's disk
/// signature; the first partition is marked bootable.
pub fn create_mbr(img: &Path, total: u64, parts: &[Part]) -> Result<()> {
    if img.exists() {
        std::fs::remove_file(img)?;
    }
    File::create(img)?.set_len(total)?;
    let mut script = format!(
        "label: dos\nlabel-id: 0x{:08x}\nunit: sectors\nsector-size: 512\n\n",
        cairn_slots::mbr::DISK_ID
    );
    for (i, p) in parts.iter().enumerate() {
        script.push_str(&format!(
            "start={}, size={}, type={}{}\n",
            p.start / SECTOR,
            p.size / SECTOR,
            p.kind,
            if i == 0 { ", bootable" } else { "" }
        ));
    }
    sfdisk(img, &script)
}

/// A stable UUID (version-4 layout) derived from `seed`, so rebuilds are byte-identical.
pub fn stable_uuid(seed: &str) -> String {
    let mut b: [u8; 16] = sha256(seed.as_bytes())[..16].try_into().unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::manifest::hex(&b).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Creates `img` of `total` bytes (sparse) with a GPT for `parts`.
pub fn create(img: &Path, total: u64, parts: &[Part], seed: &str) -> Result<()> {
    if img.exists() {
        std::fs::remove_file(img)?;
    }
    File::create(img)?.set_len(total)?;
    let mut script = format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\nsector-size: 512\n\n",
        stable_uuid(&format!("{seed}/disk"))
    );
    for p in parts {
        script.push_str(&format!(
            "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
            p.start / SECTOR,
            p.size / SECTOR,
            p.kind,
            stable_uuid(&format!("{seed}/{}", p.label)),
            p.label
        ));
    }
    sfdisk(img, &script)
}

/// Runs `sfdisk` on `img` with `script` on its standard input.
fn sfdisk(img: &Path, script: &str) -> Result<()> {
    let sfdisk = crate::tools::find("sfdisk")?;
    let mut child = Command::new(sfdisk)
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Copies `src` into `img` at `offset`, writing only blocks that are not all zero (the
/// image stays sparse, so the block map lists only real data). Fails if it does not fit.
pub fn write_sparse(img: &Path, offset: u64, limit: u64, src: &Path) -> Result<u64> {
    let len = std::fs::metadata(src)?.len();
    if len > limit {
        bail!(
            "{} is {} but its partition holds only {}: raise partitions.*_mib in the board config",
            src.display(),
            crate::progress::mib(len),
            crate::progress::mib(limit)
        );
    }
    let out = OpenOptions::new().write(true).open(img)?;
    let mut f = File::open(src)?;
    let mut buf = vec![0u8; 4096];
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], offset + pos)?;
        }
        pos += n as u64;
    }
    Ok(len)
}

/// Writes `len` explicit zero bytes at `offset`: a region a flasher must overwrite, so that
/// stale data from a card's previous life (an old filesystem) is never mistaken for ours.
pub fn write_zeros(img: &Path, offset: u64, len: u64) -> Result<()> {
    let out = OpenOptions::new().write(true).open(img)?;
    out.write_all_at(&vec![0u8; len as usize], offset)?;
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[derive(Deserialize)]
struct SfdiskJson {
    partitiontable: Table,
}
#[derive(Deserialize)]
struct Table {
    label: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    sectorsize: Option<u64>,
    partitions: Vec<JsonPart>,
}
#[derive(Deserialize)]
struct JsonPart {
    node: String,
    start: u64,
    size: u64,
    #[serde(default)]
    name: Option<String>,
}

/// Byte offset and size of the partition labelled `label` in an existing image: by GPT
/// name, or by number on a Cairn MBR card (`cairn_slots::mbr`).
pub fn find_partition(img: &Path, label: &str) -> Result<(u64, u64)> {
    let out = crate::tools::run(Command::new("sfdisk").arg("--json").arg(img))
        .with_context(|| format!("{} has no readable partition table", img.display()))?;
    let t: SfdiskJson = serde_json::from_slice(&out.stdout)?;
    let t = t.partitiontable;
    let ss = t.sectorsize.unwrap_or(SECTOR);
    let cairn_mbr = t.label == "dos"
        && t.id
            .as_deref()
            .and_then(|id| u32::from_str_radix(id.trim_start_matches("0x"), 16).ok())
            == Some(cairn_slots::mbr::DISK_ID);
    let number = |p: &JsonPart| {
        let digits = p.node.len() - p.node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        p.node[p.node.len() - digits..].parse::<u32>().ok()
    };
    t.partitions
        .iter()
        .find(|p| match &p.name {
            Some(name) => name == label,
            None => {
                cairn_mbr && number(p).is_some_and(|n| Some(n) == cairn_slots::mbr::number(label))
            }
        })
        .map(|p| (p.start * ss, p.size * ss))
        .with_context(|| {
            format!(
                "{} has no partition labelled {label}: is it a Cairn image?",
                img.display()
            )
        })
}

/// Reads `len` bytes at `offset` (used by tests and `config get`).
pub fn read_at(img: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = File::open(img)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut v = vec![0; len];
    f.read_exact(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_aligned_and_ordered() {
        let (parts, total) = plan(96, 64, 64);
        assert_eq!(parts[0].start, MIB);
        assert!(parts
            .windows(2)
            .all(|w| w[0].start + w[0].size == w[1].start));
        assert!(parts.iter().all(|p| p.start % MIB == 0));
        assert_eq!(total, (1 + 96 + 64 + 64 + 64 + 1) * MIB);
    }

    #[test]
    fn mbr_round_trips_through_sfdisk() {
        let img = std::env::temp_dir().join(format!("cairn-mbr-{}.img", std::process::id()));
        let (parts, total) = plan_mbr(40, 41, 16);
        assert!(parts
            .iter()
            .all(|p| p.start % (4 * MIB) == 0 && p.size % (4 * MIB) == 0));
        assert_eq!(parts[1].size, 44 * MIB, "rounded up to the erase unit");
        create_mbr(&img, total, &parts).unwrap();
        for (i, label) in ["cairn-boot", "cairn-boot-a", "cairn-boot-b", "cairn-data"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                find_partition(&img, label).unwrap(),
                (parts[i].start, parts[i].size)
            );
        }
        assert!(find_partition(&img, "cairn-a").is_err());
        let dump = crate::tools::run(Command::new("sfdisk").arg("--dump").arg(&img)).unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout).replace(' ', "");
        assert!(dump.contains("label-id:0x52494143"), "{dump}");
        assert!(dump.contains("type=c,bootable"), "{dump}");
        // The same table with another signature is not a Cairn card.
        let mut f = OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(440)).unwrap();
        f.write_all(b"XXXX").unwrap();
        drop(f);
        let e = find_partition(&img, "cairn-data").unwrap_err().to_string();
        assert!(e.contains("no partition labelled cairn-data"), "{e}");
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn stable_uuids_are_stable_and_distinct() {
        assert_eq!(stable_uuid("a"), stable_uuid("a"));
        assert_ne!(stable_uuid("a"), stable_uuid("b"));
        assert_eq!(&stable_uuid("a")[14..15], "4");
    }

    #[test]
    fn gpt_round_trips_through_sfdisk() {
        let img = std::env::temp_dir().join(format!("cairn-gpt-{}.img", std::process::id()));
        let (parts, total) = plan(40, 8, 16);
        create(&img, total, &parts, "test").unwrap();
        let (off, size) = find_partition(&img, "cairn-data").unwrap();
        assert_eq!((off, size), (parts[3].start, parts[3].size));
        let e = find_partition(&img, "nope").unwrap_err().to_string();
        assert!(e.contains("no partition labelled nope"), "{e}");
        std::fs::remove_file(&img).unwrap();
    }
}
