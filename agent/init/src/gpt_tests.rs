use super::*;

const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// Builds an in-memory disk with a protective MBR and primary + backup GPT for a disk of
/// `image_lbas` sectors, then pads it to `disk_lbas` (a larger card).
fn build_disk(lbs: u64, image_lbas: u64, disk_lbas: u64, parts: &[(u64, u64)]) -> Vec<u8> {
    let l = lbs as usize;
    let mut disk = vec![0u8; disk_lbas as usize * l];
    disk[446 + 4] = 0xEE;
    put32(&mut disk, 446 + 8, 1);
    put32(&mut disk, 446 + 12, (image_lbas - 1) as u32);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    let mut entries = vec![0u8; 128 * 128];
    for (i, (first, last)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&LINUX_FS);
        e[16] = i as u8 + 1;
        put64(e, 32, *first);
        put64(e, 40, *last);
        for (k, c) in "cairn-x".encode_utf16().enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&c.to_le_bytes());
        }
    }
    let entries_lbas = (entries.len() / l) as u64;
    let mut hdr = vec![0u8; l];
    hdr[..8].copy_from_slice(b"EFI PART");
    put32(&mut hdr, 8, 0x0001_0000);
    put32(&mut hdr, 12, 92);
    put64(&mut hdr, 24, 1);
    put64(&mut hdr, 32, image_lbas - 1);
    put64(&mut hdr, 40, 2 + entries_lbas);
    put64(&mut hdr, 48, image_lbas - 2 - entries_lbas);
    hdr[56] = 0x42;
    put64(&mut hdr, 72, 2);
    put32(&mut hdr, 80, 128);
    put32(&mut hdr, 84, 128);
    put32(&mut hdr, 88, crc32(&entries));
    let crc = crc32(&hdr[..92]);
    put32(&mut hdr, 16, crc);
    let mut backup = Header::parse(&hdr).unwrap();
    backup.my_lba = image_lbas - 1;
    backup.alt_lba = 1;
    backup.entries_lba = image_lbas - 1 - entries_lbas;
    disk[l..2 * l].copy_from_slice(&hdr);
    disk[2 * l..2 * l + entries.len()].copy_from_slice(&entries);
    let be = backup.entries_lba as usize * l;
    disk[be..be + entries.len()].copy_from_slice(&entries);
    let bh = backup.my_lba as usize * l;
    disk[bh..bh + l].copy_from_slice(&backup.to_block());
    disk
}

fn plan(disk: &[u8], lbs: u64, index: usize, start: u64) -> Result<Option<Plan>> {
    let l = lbs as usize;
    // A corrupt header still gets the usual array, so plan_grow itself must notice.
    let (e, len) = Header::parse(&disk[l..2 * l]).map_or((2 * l, 128 * 128), |h| {
        (h.entries_lba as usize * l, h.entries_len())
    });
    let disk_lbas = (disk.len() / l) as u64;
    plan_grow(
        &disk[..512],
        &disk[l..2 * l],
        &disk[e..e + len],
        lbs,
        disk_lbas,
        index,
        start,
    )
}

fn apply(disk: &mut [u8], plan: &Plan) {
    for (off, data) in &plan.writes {
        disk[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
}

/// Checks both headers and arrays the way a firmware or the kernel would.
fn check_consistent(disk: &[u8], lbs: u64) -> (Header, Header) {
    let l = lbs as usize;
    let lbas = (disk.len() / l) as u64;
    let primary = Header::parse(&disk[l..2 * l]).unwrap();
    let b = (lbas - 1) as usize * l;
    let backup = Header::parse(&disk[b..b + l]).unwrap();
    assert_eq!((primary.my_lba, primary.alt_lba), (1, lbas - 1));
    assert_eq!((backup.my_lba, backup.alt_lba), (lbas - 1, 1));
    for h in [&primary, &backup] {
        let e = h.entries_lba as usize * l;
        assert_eq!(crc32(&disk[e..e + h.entries_len()]), h.entries_crc);
    }
    assert_eq!(
        backup.entries_lba + (primary.entries_len() as u64).div_ceil(lbs),
        lbas - 1
    );
    assert_eq!(primary.last_usable, backup.entries_lba - 1);
    (primary, backup)
}

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn grows_last_partition_512() {
    let parts = [(2048, 4095), (4096, 8191), (8192, 10239)];
    let mut disk = build_disk(512, 12288, 40960, &parts);
    let p = plan(&disk, 512, 2, 8192).unwrap().unwrap();
    assert_eq!((p.first, p.old_last, p.new_last), (8192, 10239, 40960 - 34));
    apply(&mut disk, &p);
    let (primary, _) = check_consistent(&disk, 512);
    assert_eq!(primary.last_usable, 40960 - 34);
    assert_eq!(
        le32(&disk, 446 + 12),
        40959,
        "protective MBR covers the disk"
    );
    let e = 2 * 512 + 2 * 128;
    assert_eq!(le64(&disk, e + 40), 40960 - 34);
    assert_eq!(disk[e + 16], 3, "partition GUID kept");
    assert!(
        plan(&disk, 512, 2, 8192).unwrap().is_none(),
        "second run is a no-op"
    );
}

#[test]
fn grows_with_4k_sectors() {
    let parts = [(256, 511), (512, 1023)];
    let mut disk = build_disk(4096, 1536, 4096, &parts);
    let p = plan(&disk, 4096, 1, 512).unwrap().unwrap();
    // 128 entries x 128 bytes = 4 sectors of 4 KiB.
    assert_eq!(p.new_last, 4096 - 1 - 4 - 1);
    apply(&mut disk, &p);
    check_consistent(&disk, 4096);
}

#[test]
fn already_at_end_is_noop() {
    let disk = build_disk(512, 12288, 12288, &[(2048, 12288 - 34)]);
    assert!(plan(&disk, 512, 0, 2048).unwrap().is_none());
}

#[test]
fn refuses_unsafe_edits() {
    let parts = [(2048, 4095), (8192, 10239), (4096, 8191)];
    let disk = build_disk(512, 12288, 40960, &parts);
    let err = plan(&disk, 512, 2, 4096).unwrap_err().to_string();
    assert!(err.contains("lies after"), "{err}");
    let err = plan(&disk, 512, 1, 9000).unwrap_err().to_string();
    assert!(err.contains("the kernel says"), "{err}");
    assert!(plan(&disk, 512, 5, 0).is_err(), "unused entry");

    let mut corrupt = disk.clone();
    corrupt[2 * 512 + 40] ^= 1;
    let err = plan(&corrupt, 512, 1, 8192).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    let mut corrupt = disk.clone();
    corrupt[512 + 48] ^= 1;
    assert!(plan(&corrupt, 512, 1, 8192)
        .unwrap_err()
        .to_string()
        .contains("checksum"));
    assert!(plan(&vec![0u8; 40960 * 512], 512, 0, 0).is_err(), "no GPT");
}

#[test]
fn smaller_disk_is_an_error() {
    let mut disk = build_disk(512, 12288, 12288, &[(2048, 4095)]);
    disk.truncate(8192 * 512);
    assert!(plan(&disk, 512, 0, 2048)
        .unwrap_err()
        .to_string()
        .contains("smaller"));
}

/// Cross-check with util-linux: a table made by sfdisk, grown by us, verified by sfdisk.
#[test]
fn sfdisk_agrees() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("sfdisk").arg("--version").output().is_err() {
        eprintln!("sfdisk not installed, skipping");
        return;
    }
    let path = std::env::temp_dir().join(format!("cairn-init-gpt-{}.img", std::process::id()));
    let file = File::create(&path).unwrap();
    file.set_len(64 << 20).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let script = "label: gpt\nsize=8MiB, name=cairn-boot\nsize=16MiB, name=cairn-a\n\
                  size=16MiB, name=cairn-b\nsize=8MiB, name=cairn-data\n";
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
    let (_, primary, entries) = read_table(&file, 512).unwrap();
    assert!(Header::parse(&primary).is_ok());
    let (start, _) = entry(&entries, 128, 3).unwrap();
    let p = grow_file(&file, 512, (200 << 20) / 512, 4, start)
        .unwrap()
        .unwrap();
    assert_eq!(p.new_last, (200 << 20) / 512 - 34);
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&path)
        .output()
        .unwrap();
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let out = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{out}");
    assert!(
        !out.to_lowercase().contains("backup") && !out.contains("corrupt"),
        "{out}"
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    let size = (200u64 << 20) / 512 - 34 - start + 1;
    let data = dump
        .lines()
        .find(|l| l.contains("cairn-data"))
        .unwrap_or_default()
        .replace(' ', "");
    assert!(data.contains(&format!("size={size},")), "{dump}");
    assert!(
        dump.contains(&format!("last-lba: {}", (200u64 << 20) / 512 - 34)),
        "{dump}"
    );
}
