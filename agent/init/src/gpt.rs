//! Growing the last GPT partition to the end of its disk: used when the image was written
//! to a card larger than the image. Pure planning (`plan_grow`) is separate from the I/O so it
//! is tested on byte buffers; all fields are little-endian, whatever the CPU.
//!
//! Write order keeps a valid table at every step: the backup table goes to the new end of
//! the disk first (unused space), then the primary entries, then the primary header.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::blockdev;
use crate::error::{bail, Context, Result};

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, reflected), as used by GPT.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A GPT header; `block` keeps the whole sector so untouched fields survive a rewrite.
#[derive(Clone, Debug)]
pub struct Header {
    pub my_lba: u64,
    pub alt_lba: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    size: usize,
    block: Vec<u8>,
}

impl Header {
    pub fn parse(block: &[u8]) -> Result<Header> {
        if block.len() < 92 || &block[..8] != b"EFI PART" {
            bail!("no GPT header");
        }
        let size = le32(block, 12) as usize;
        if size < 92 || size > block.len() {
            bail!("bad GPT header size {size}");
        }
        let mut copy = block[..size].to_vec();
        copy[16..20].fill(0);
        if crc32(&copy) != le32(block, 16) {
            bail!("GPT header checksum mismatch");
        }
        let (num_entries, entry_size) = (le32(block, 80), le32(block, 84));
        if !(128..=4096).contains(&entry_size)
            || entry_size % 8 != 0
            || num_entries == 0
            || num_entries > 4096
        {
            bail!("unsupported GPT entry array {num_entries} x {entry_size}");
        }
        Ok(Header {
            my_lba: le64(block, 24),
            alt_lba: le64(block, 32),
            last_usable: le64(block, 48),
            entries_lba: le64(block, 72),
            num_entries,
            entry_size,
            entries_crc: le32(block, 88),
            size,
            block: block.to_vec(),
        })
    }

    /// The header as a full sector with a fresh checksum.
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = self.block.clone();
        put64(&mut b, 24, self.my_lba);
        put64(&mut b, 32, self.alt_lba);
        put64(&mut b, 48, self.last_usable);
        put64(&mut b, 72, self.entries_lba);
        put32(&mut b, 88, self.entries_crc);
        put32(&mut b, 16, 0);
        let crc = crc32(&b[..self.size]);
        put32(&mut b, 16, crc);
        b
    }

    pub fn entries_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }
}

/// First and last LBA of entry `i`, or `None` for an unused entry.
fn entry(entries: &[u8], size: usize, i: usize) -> Option<(u64, u64)> {
    let e = &entries[i * size..(i + 1) * size];
    if e[..16].iter().all(|b| *b == 0) {
        return None;
    }
    Some((le64(e, 32), le64(e, 40)))
}

/// What growing changes: byte offsets and the data to write there, in order.
#[derive(Debug)]
pub struct Plan {
    pub first: u64,
    pub old_last: u64,
    pub new_last: u64,
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Sets the size of the protective MBR's 0xEE record to the disk; `None` when unchanged or
/// there is no protective record.
fn fix_protective_mbr(mbr: &[u8], disk_lbas: u64) -> Option<Vec<u8>> {
    if mbr.len() < 512 || mbr[510..512] != [0x55, 0xAA] {
        return None;
    }
    let want = u32::try_from(disk_lbas - 1).unwrap_or(u32::MAX);
    let rec = (0..4)
        .map(|r| 446 + 16 * r)
        .find(|off| mbr[off + 4] == 0xEE)?;
    if le32(mbr, rec + 12) == want {
        return None;
    }
    let mut out = mbr[..512].to_vec();
    put32(&mut out, rec + 12, want);
    Some(out)
}

/// Plans growing partition `index` (0-based) so it ends at the last usable LBA of a disk of
/// `disk_lbas` sectors of `lbs` bytes. `start` is where the kernel says the partition starts
/// (a guard against editing the wrong entry). `Ok(None)`: already at the end.
pub fn plan_grow(
    mbr: &[u8],
    primary: &[u8],
    entries: &[u8],
    lbs: u64,
    disk_lbas: u64,
    index: usize,
    start: u64,
) -> Result<Option<Plan>> {
    let hdr = Header::parse(primary)?;
    if hdr.my_lba != 1 {
        bail!("primary GPT header claims LBA {}", hdr.my_lba);
    }
    if entries.len() != hdr.entries_len() || crc32(entries) != hdr.entries_crc {
        bail!("GPT entry array checksum mismatch");
    }
    let size = hdr.entry_size as usize;
    if index >= hdr.num_entries as usize {
        bail!(
            "partition {} beyond the {} GPT entries",
            index + 1,
            hdr.num_entries
        );
    }
    let Some((first, last)) = entry(entries, size, index) else {
        bail!("GPT entry {} is unused", index + 1);
    };
    if first != start {
        bail!(
            "GPT entry {} starts at LBA {first}, the kernel says {start}",
            index + 1
        );
    }
    let entries_lbas = (entries.len() as u64).div_ceil(lbs);
    if disk_lbas < entries_lbas + 3 || disk_lbas - 2 - entries_lbas < hdr.last_usable {
        bail!(
            "disk of {disk_lbas} sectors is smaller than its GPT (last usable {})",
            hdr.last_usable
        );
    }
    for j in (0..hdr.num_entries as usize).filter(|j| *j != index) {
        if let Some((other_first, _)) = entry(entries, size, j) {
            if other_first > last {
                bail!(
                    "partition {} lies after partition {}, cannot grow it",
                    j + 1,
                    index + 1
                );
            }
        }
    }
    let alt_lba = disk_lbas - 1;
    let backup_entries_lba = alt_lba - entries_lbas;
    let new_last = backup_entries_lba - 1;
    if last >= new_last {
        return Ok(None);
    }

    let mut new_entries = entries.to_vec();
    put64(&mut new_entries, index * size + 40, new_last);
    let entries_crc = crc32(&new_entries);
    let mut primary_hdr = hdr.clone();
    primary_hdr.alt_lba = alt_lba;
    primary_hdr.last_usable = new_last;
    primary_hdr.entries_crc = entries_crc;
    let mut backup_hdr = primary_hdr.clone();
    backup_hdr.my_lba = alt_lba;
    backup_hdr.alt_lba = 1;
    backup_hdr.entries_lba = backup_entries_lba;

    let mut writes = vec![
        (backup_entries_lba * lbs, new_entries.clone()),
        (alt_lba * lbs, backup_hdr.to_block()),
        (hdr.entries_lba * lbs, new_entries),
        (lbs, primary_hdr.to_block()),
    ];
    if let Some(mbr) = fix_protective_mbr(mbr, disk_lbas) {
        writes.push((0, mbr));
    }
    Ok(Some(Plan {
        first,
        old_last: last,
        new_last,
        writes,
    }))
}

/// Reads the protective MBR, the primary header sector and the entry array.
fn read_table(file: &File, lbs: u64) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut mbr = vec![0u8; 512];
    file.read_exact_at(&mut mbr, 0).context("read MBR")?;
    let mut primary = vec![0u8; lbs as usize];
    file.read_exact_at(&mut primary, lbs)
        .context("read GPT header")?;
    let hdr = Header::parse(&primary)?;
    let mut entries = vec![0u8; hdr.entries_len()];
    file.read_exact_at(&mut entries, hdr.entries_lba * lbs)
        .context("read GPT entries")?;
    Ok((mbr, primary, entries))
}

/// Grows partition number `partno` (1-based) of a disk (or image file) and writes the new
/// tables, syncing after each write.
pub fn grow_file(
    file: &File,
    lbs: u64,
    disk_lbas: u64,
    partno: u32,
    start: u64,
) -> Result<Option<Plan>> {
    let (mbr, primary, entries) = read_table(file, lbs)?;
    let Some(index) = (partno as usize).checked_sub(1) else {
        bail!("partition number 0")
    };
    let plan = plan_grow(&mbr, &primary, &entries, lbs, disk_lbas, index, start)?;
    if let Some(plan) = &plan {
        for (offset, data) in &plan.writes {
            file.write_all_at(data, *offset)
                .context(format!("write GPT at byte {offset}"))?;
            file.sync_all().context("sync disk")?;
        }
    }
    Ok(plan)
}

/// Grows partition `part` (kernel name, e.g. `vda4`) to the end of its disk and tells the
/// kernel. Returns the old and new size in bytes, or `None` when it already fills the disk.
pub fn grow_partition(part: &str) -> Result<Option<(u64, u64)>> {
    let disk = blockdev::parent_disk(part)?;
    let partno =
        u32::try_from(blockdev::sys_u64(part, "partition")?).context("partition number")?;
    let lbs = blockdev::sys_u64(&disk, "queue/logical_block_size")?;
    if !(512..=65536).contains(&lbs) || !lbs.is_power_of_two() {
        bail!("odd logical block size {lbs} on {disk}");
    }
    let start = blockdev::sys_u64(part, "start")? * 512 / lbs;
    let disk_lbas = blockdev::sys_u64(&disk, "size")? * 512 / lbs;
    let path = format!("/dev/{disk}");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .context(format!("open {path}"))?;
    let Some(plan) =
        grow_file(&file, lbs, disk_lbas, partno, start).context(format!("grow GPT on {path}"))?
    else {
        return Ok(None);
    };
    let old = (plan.old_last - plan.first + 1) * lbs;
    let new = (plan.new_last - plan.first + 1) * lbs;
    crate::sys::blkpg_resize(&file, partno, plan.first * lbs, new).context(format!(
        "tell the kernel about the new size of {part} (reboot to apply)"
    ))?;
    Ok(Some((old, new)))
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;
