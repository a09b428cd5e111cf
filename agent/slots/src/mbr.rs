//! The MBR layout of Raspberry Pi SD cards. The Pi firmware reads only MBR partition tables,
//! which have no partition names, so a Cairn card is recognised by its disk signature and
//! its partitions by number. Image builder, init and updater share this table.
//!
//! ```text
//! p1  cairn-boot    FAT  autoboot.txt, bootcode.bin, config.txt, cairn/ (seed: node.yaml, secrets)
//! p2  cairn-boot-a  FAT  slot A: firmware, config.txt, cmdline.txt, kernel, initrd, dtbs, rootfs.squashfs
//! p3  cairn-boot-b  FAT  slot B: the same, written by an update
//! p4  cairn-data    ext4, made on first boot and grown to the end of the card
//! ```
//!
//! `autoboot.txt`'s `boot_partition` can name partitions 1-4 only, so each slot is one
//! primary FAT partition holding its read-only root as a file; with no extended partition
//! the data partition is a primary one too, and growing it is a single table entry.

/// Disk signature (MBR bytes 440..444, little endian) of every Cairn MBR disk: "CAIR".
pub const DISK_ID: u32 = u32::from_le_bytes(*b"CAIR");

/// Partition numbers (1-based) and the names the GPT boards give the same partitions.
pub const PARTITIONS: [(u32, &str); 4] = [
    (1, "cairn-boot"),
    (2, "cairn-boot-a"),
    (3, "cairn-boot-b"),
    (4, "cairn-data"),
];

/// The file holding a slot's read-only root on its boot partition.
pub const ROOT_FILE: &str = "rootfs.squashfs";

/// Whether `name` is the firmware's second stage (`start.elf`, `start4.elf`, ...): without
/// it a slot's partition cannot boot, so an update removes it first and writes it last
/// (and a bundle carries it last).
pub fn is_second_stage(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("start") && name.ends_with(".elf")
}

/// The name of partition `number` of a Cairn MBR disk.
pub fn label(number: u32) -> Option<&'static str> {
    PARTITIONS
        .iter()
        .find(|(n, _)| *n == number)
        .map(|(_, l)| *l)
}

/// The number of the partition called `label` on a Cairn MBR disk.
pub fn number(label: &str) -> Option<u32> {
    PARTITIONS
        .iter()
        .find(|(_, l)| *l == label)
        .map(|(n, _)| *n)
}

/// Whether `sector0` (the first 512 bytes of a disk) is a Cairn MBR.
pub fn is_cairn(sector0: &[u8]) -> bool {
    sector0.len() >= 512
        && sector0[510..512] == [0x55, 0xAA]
        && u32::from_le_bytes(sector0[440..444].try_into().unwrap()) == DISK_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_stages() {
        for name in ["start.elf", "start4.elf", "START4X.ELF", "start_cd.elf"] {
            assert!(is_second_stage(name), "{name}");
        }
        for name in ["fixup4.dat", "bootcode.bin", "start4.elf.tmp", "vmlinuz"] {
            assert!(!is_second_stage(name), "{name}");
        }
    }

    #[test]
    fn labels_and_numbers_round_trip() {
        for (n, l) in PARTITIONS {
            assert_eq!(label(n), Some(l));
            assert_eq!(number(l), Some(n));
        }
        assert_eq!(label(5), None);
        assert_eq!(number("cairn-a"), None);
    }

    #[test]
    fn recognises_only_cairn_signatures() {
        let mut s = vec![0u8; 512];
        s[440..444].copy_from_slice(b"CAIR");
        assert!(!is_cairn(&s), "no boot signature");
        s[510] = 0x55;
        s[511] = 0xAA;
        assert!(is_cairn(&s));
        s[440] = b'X';
        assert!(!is_cairn(&s));
        assert!(!is_cairn(&s[..100]));
    }
}
