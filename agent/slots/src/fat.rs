//! Repair of the FAT partitions the slot state and the slots' boot files live on.
//!
//! FAT has no journal. A power cut while an update writes a large boot file can leave a
//! cluster chain pointing past the end of the FAT; Linux notices only at the next write
//! there and makes the whole partition read-only, so every later update would fail. Each
//! FAT a node writes is therefore checked with `fsck.fat` before it is mounted writable:
//! the boot partition at boot (stage 2 of init) when its dirty bit says a power cut found it
//! writable ([`is_dirty`]), a Raspberry Pi slot's partition before every update rewrites it.
//!
//! `fsck.fat -a` saves the clusters of a chain it cut off as `FSCKnnnn.REC` files in the
//! root directory; they are the remains of a half-written file nobody wants, and would fill
//! a small boot partition after a few cuts, so [`remove_salvaged`] deletes them.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

/// Where images carry `fsck.fat` (Debian's dosfstools).
pub const FSCK_FAT: &str = "/usr/sbin/fsck.fat";

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Clean,
    /// Errors were found and fixed; `report` is what `fsck.fat` said about them.
    Repaired {
        report: String,
    },
}

/// Checks the FAT file system on `dev` (a block device or an image file, not mounted) and
/// repairs what it finds, with the `fsck.fat` at `fsck`.
pub fn check(fsck: &Path, dev: &Path) -> io::Result<Check> {
    let out = Command::new(fsck).arg("-a").arg("-w").arg(dev).output()?;
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::trim)
        .filter(|l| !noise(l))
        .collect::<Vec<_>>()
        .join("; ");
    match out.status.code() {
        Some(0) => Ok(Check::Clean),
        Some(1) => Ok(Check::Repaired { report }),
        code => Err(io::Error::other(format!(
            "{} {}: exit {code:?}: {report}",
            fsck.display(),
            dev.display()
        ))),
    }
}

/// Whether the FAT on `dev` was left mounted read-write: Linux sets the "dirty" bit in the
/// boot sector (synchronously) when it mounts a FAT read-write and clears it when it
/// unmounts or remounts it read-only, so a power cut while it was writable, the only time
/// its FAT can be damaged, leaves the bit set. Checking it costs one sector read, where
/// `fsck.fat` takes 200-300 ms on a 96 MiB boot partition under QEMU TCG; so a boot checks
/// the bit and runs `fsck.fat` only when it is set. Not a FAT boot sector: an error.
pub fn is_dirty(dev: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut bs = [0u8; 512];
    fs::File::open(dev)?.read_exact_at(&mut bs, 0)?;
    dirty_bit(&bs).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no FAT boot sector", dev.display()),
        )
    })
}

/// The dirty bit of a FAT boot sector: in the `state` byte Linux keeps at offset 0x41 on
/// FAT32 (whose 16-bit sectors-per-FAT field is 0) and 0x25 on FAT12/16.
fn dirty_bit(bs: &[u8; 512]) -> Option<bool> {
    if bs[510..512] != [0x55, 0xAA] {
        return None;
    }
    let fat32 = u16::from_le_bytes([bs[22], bs[23]]) == 0;
    let state = if fat32 { bs[0x41] } else { bs[0x25] };
    Some(state & 1 == 1)
}

/// Lines of `fsck.fat`'s output that say nothing about the damage: the version banner, the
/// closing "dev: N files, M/K clusters", the codepage tables an image without `gconv`
/// modules falls back on, and the (unrepaired, harmless) backup boot sector differing in
/// the dirty bit.
fn noise(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("fsck.fat ")
        || line.ends_with(" clusters")
        || line.contains("conversion from")
        || line.starts_with("Using internal CP")
        || line.starts_with("There are differences between boot sector and its backup")
        || line.starts_with("This is mostly harmless")
        || line.starts_with("Differences: (offset:original/backup)")
        || line.starts_with("65:01/00")
        || line.starts_with("Not automatically fixing this")
}

/// Deletes the `FSCKnnnn.REC` files [`check`] left in the root directory of the mounted
/// partition at `root`; returns how many there were.
pub fn remove_salvaged(root: &Path) -> io::Result<usize> {
    let mut n = 0;
    for de in fs::read_dir(root)? {
        let de = de?;
        if is_salvaged(&de.file_name().to_string_lossy()) && de.file_type()?.is_file() {
            fs::remove_file(de.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// `FSCK0000.REC` .. `FSCK9999.REC`, in either case (vfat shows short names lower-case
/// unless mounted with `shortname=mixed`).
fn is_salvaged(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    name.strip_prefix("FSCK")
        .and_then(|r| r.strip_suffix(".REC"))
        .is_some_and(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_keeps_what_was_repaired() {
        // Seen on a node after a power cut with the boot partition mounted read-write.
        let out = "fsck.fat 4.2 (2021-01-31)
There are differences between boot sector and its backup.
This is mostly harmless. Differences: (offset:original/backup)
  65:01/00
  Not automatically fixing this.
Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.
 Automatically removing dirty bit.
Cannot initialize conversion from codepage 850 to ANSI_X3.4-1968: Invalid argument
Using internal CP850 conversion table
/dev/vda1: 12 files, 40/65501 clusters";
        let kept: Vec<_> = out.lines().map(str::trim).filter(|l| !noise(l)).collect();
        assert_eq!(
            kept,
            [
                "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.",
                "Automatically removing dirty bit."
            ]
        );
    }

    /// Real images from mkfs.fat (FAT32 and FAT16): clean as made, dirty with Linux's bit
    /// set, and clean again after fsck.fat.
    #[test]
    fn the_dirty_bit_is_found_on_fat32_and_fat16() {
        let dir = std::env::temp_dir().join(format!("cairn-fat-dirty-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (bits, offset) in [("32", 0x41), ("16", 0x25)] {
            let img = dir.join(format!("fat{bits}.img"));
            let _ = fs::remove_file(&img);
            run("/usr/sbin/mkfs.fat", &["-F", bits, "-C", &s(&img), "65536"]);
            assert!(!is_dirty(&img).unwrap(), "FAT{bits} fresh");
            let mut b = fs::read(&img).unwrap();
            b[offset] |= 1;
            fs::write(&img, &b).unwrap();
            assert!(is_dirty(&img).unwrap(), "FAT{bits} with the bit");
            assert!(matches!(
                check(Path::new(FSCK_FAT), &img).unwrap(),
                Check::Repaired { .. }
            ));
            assert!(!is_dirty(&img).unwrap(), "FAT{bits} after fsck.fat");
        }
        let not_fat = dir.join("zeros.img");
        fs::write(&not_fat, vec![0u8; 4096]).unwrap();
        assert_eq!(
            is_dirty(&not_fat).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn salvaged_names() {
        assert!(is_salvaged("FSCK0000.REC"));
        assert!(is_salvaged("fsck0012.rec"));
        assert!(!is_salvaged("FSCK000.REC"));
        assert!(!is_salvaged("FSCK0000.REC.txt"));
        assert!(!is_salvaged("vmlinuz"));
        assert!(!is_salvaged("FSCKabcd.REC"));
    }

    #[test]
    fn remove_salvaged_keeps_other_files() {
        let dir = std::env::temp_dir().join(format!("cairn-fat-rm-{}", std::process::id()));
        fs::create_dir_all(dir.join("FSCK0002.REC")).unwrap(); // a directory: kept
        for f in ["FSCK0000.REC", "fsck0001.rec", "vmlinuz", "cmdline.txt"] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        assert_eq!(remove_salvaged(&dir).unwrap(), 2);
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["FSCK0002.REC", "cmdline.txt", "vmlinuz"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The damage a power cut left on an x86_64 ESP, made by hand on a real FAT32 image
    /// (mkfs.fat and mcopy, as `make deps` installs them): a file's cluster chain points
    /// past the end of the FAT. The real `fsck.fat` repairs it once, then finds it clean.
    #[test]
    fn repairs_a_chain_past_the_end_of_the_fat() {
        let fsck = Path::new(FSCK_FAT);
        assert!(
            fsck.exists(),
            "{FSCK_FAT} missing: run make deps (dosfstools)"
        );
        let dir = std::env::temp_dir().join(format!("cairn-fat-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = dir.join("esp.img");
        let _ = fs::remove_file(&img);
        run("/usr/sbin/mkfs.fat", &["-F", "32", "-C", &s(&img), "65536"]);
        let payload = dir.join("vmlinuz");
        fs::write(&payload, vec![0x5a_u8; 20_000]).unwrap();
        run("mcopy", &["-i", &s(&img), &s(&payload), "::/vmlinuz"]);
        assert_eq!(check(fsck, &img).unwrap(), Check::Clean);

        // FAT32 boot sector: bytes per sector @11, reserved sectors @14, FAT count @16,
        // sectors per FAT @36. The root directory is cluster 2, the file starts at 3; its
        // second cluster's entry (4) is made to point far past the last cluster.
        let mut b = fs::read(&img).unwrap();
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let bps = u16_at(&b, 11);
        let reserved = u16_at(&b, 14);
        let fats = b[16] as usize;
        let fat_sectors = u32::from_le_bytes([b[36], b[37], b[38], b[39]]) as usize;
        for i in 0..fats {
            let entry = (reserved + i * fat_sectors) * bps + 4 * 4;
            b[entry..entry + 4].copy_from_slice(&0x00FF_FFF0_u32.to_le_bytes());
        }
        fs::write(&img, &b).unwrap();

        match check(fsck, &img).unwrap() {
            Check::Repaired { report } => assert!(report.contains("out of range"), "{report}"),
            other => panic!("damage not found: {other:?}"),
        }
        assert_eq!(check(fsck, &img).unwrap(), Check::Clean);
        let listing = output("mdir", &["-b", "-i", &s(&img), "::/"]);
        assert!(listing.contains("VMLINUZ"), "{listing}");
        assert!(
            listing.contains("FSCK0000.REC"),
            "no salvaged chain: {listing}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }

    fn run(cmd: &str, args: &[&str]) {
        output(cmd, args);
    }

    fn output(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_uppercase()
    }
}
