//! Raspberry Pi SD cards: the files the Pi firmware reads (`autoboot.txt`, `config.txt`,
//! `cmdline.txt`), written by the builder, and the firmware's part played for QEMU, whose
//! raspi machines start a kernel handed to them rather than running the firmware.
//!
//! The card (`cairn_slots::mbr`): partition 1 holds `autoboot.txt`, which names the slot's
//! FAT partition to boot (2 = A, 3 = B); that partition holds the firmware's second stage
//! (`start*.elf`), `config.txt` (kernel, initramfs), `cmdline.txt` (with `cairn.slot=`), the
//! kernel, the initramfs, Debian's device trees and the slot's read-only root as a file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::board::Board;
use crate::fat::{mtools, OutputChecked};

/// Where Debian's `raspi-firmware` puts the firmware files.
pub const FIRMWARE_DIR: &str = "usr/lib/raspi-firmware";
/// The one firmware file that must be on the first partition (Pi 2 and 3 boot ROM).
pub const FIRST_STAGE: &str = "bootcode.bin";
/// `out/<board>/slot-files/`: a slot's files besides [`SLOT_OWN`] (firmware, device trees,
/// `config.txt`), which update bundles carry as `boot/<file>` payloads.
pub const SLOT_FILES: &str = "slot-files";
/// A slot's files that bundles carry as payloads of their own, or that the node writes.
pub const SLOT_OWN: [&str; 4] = ["vmlinuz", "initrd.img", "rootfs.squashfs", "cmdline.txt"];

/// `config.txt` on partition 1: read only if the firmware cannot boot the slot named in
/// `autoboot.txt`; it keeps the serial console on so that the failure can be seen.
pub const SEED_CONFIG_TXT: &str = "\
# Cairn: the firmware boots the slot partition named in autoboot.txt; this file is read only
# when it cannot, and keeps the serial console on so that the failure shows.
enable_uart=1
";

/// A slot's `config.txt` (also written as `tryboot.txt`, which older firmware reads on a
/// trial boot instead).
pub fn slot_config_txt(board: &Board, version: &str) -> String {
    let mut s = format!(
        "# Cairn {version} ({}): read by the Raspberry Pi firmware from this slot\n\
         # partition, which autoboot.txt on the first partition names.\n",
        board.name
    );
    if board.arch == crate::board::Arch::Aarch64 {
        s.push_str("arm_64bit=1\n");
    }
    // Debian's kernel with upstream device trees (bcm2837-rpi-3-b.dtb, not bcm2710-...);
    // the UART stays on for the console.
    s.push_str(
        "enable_uart=1\nupstream_kernel=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n",
    );
    for line in &board.boot.config {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A slot's `cmdline.txt`: the board's kernel arguments and the slot.
pub fn slot_cmdline(board: &Board, slot: cairn_slots::Slot) -> String {
    format!("{} cairn.slot={slot}\n", board.kernel.cmdline.trim())
}

/// The kernel package's directory of device trees.
pub fn dtb_dir(kroot: &Path, release: &str) -> PathBuf {
    kroot.join(format!("usr/lib/linux-image-{release}"))
}

/// Lays out a slot's boot files in `tree` (a directory that becomes the FAT partition).
#[allow(clippy::too_many_arguments)]
pub fn lay_slot(
    tree: &Path,
    board: &Board,
    version: &str,
    slot: cairn_slots::Slot,
    firmware: &Path,
    dtbs: &Path,
    kernel: &Path,
    initrd: &[u8],
    root: &Path,
) -> Result<()> {
    use crate::rootfs;
    for f in board.boot.firmware.iter().filter(|f| *f != FIRST_STAGE) {
        let src = firmware.join(f);
        if !src.is_file() {
            bail!(
                "board-configs/{}.yaml: boot.firmware: {f} is not in Debian's raspi-firmware",
                board.name
            );
        }
        rootfs::copy(tree, f, &src, false)?;
    }
    for d in &board.boot.dtbs {
        let src = dtbs.join(d);
        if !src.is_file() {
            bail!(
                "board-configs/{}.yaml: boot.dtbs: {d} is not in the kernel package",
                board.name
            );
        }
        // The firmware looks for device trees next to the kernel, by file name.
        let name = Path::new(d).file_name().unwrap().to_string_lossy();
        rootfs::copy(tree, &name, &src, false)?;
    }
    let config = slot_config_txt(board, version);
    rootfs::write(tree, "config.txt", config.as_bytes(), false)?;
    rootfs::write(tree, "tryboot.txt", config.as_bytes(), false)?;
    rootfs::write(
        tree,
        "cmdline.txt",
        slot_cmdline(board, slot).as_bytes(),
        false,
    )?;
    rootfs::copy(tree, "vmlinuz", kernel, false)?;
    rootfs::write(tree, "initrd.img", initrd, false)?;
    rootfs::copy(tree, cairn_slots::mbr::ROOT_FILE, root, false)?;
    Ok(())
}

/// The `[all]` section's `boot_partition` of an `autoboot.txt` (what a normal boot uses).
pub fn boot_partition(autoboot: &str) -> Result<u32> {
    match cairn_slots::autoboot::parse(autoboot) {
        Some(n @ 1..=4) => Ok(n),
        Some(n) => bail!("autoboot.txt: boot_partition={n} is not a primary partition"),
        None => bail!("autoboot.txt has no readable boot_partition in its [all] section"),
    }
}

/// What `config.txt` tells the firmware to load: kernel and initramfs file names.
pub fn config_files(config: &str) -> Result<(String, String)> {
    let mut kernel = None;
    let mut initrd = None;
    for line in config.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("kernel=") {
            kernel = Some(v.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("initramfs ") {
            initrd = rest.split_whitespace().next().map(str::to_string);
        }
    }
    match (kernel, initrd) {
        (Some(k), Some(i)) => Ok((k, i)),
        _ => bail!("config.txt names no kernel= and initramfs"),
    }
}

/// What the Pi firmware would start: files extracted from the card, and the command line.
#[derive(Debug)]
pub struct Boot {
    /// The partition `autoboot.txt` names.
    pub partition: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: PathBuf,
    pub cmdline: String,
}

/// Plays the Pi firmware for QEMU: reads `autoboot.txt` on `card`, then the named slot's
/// `config.txt` and `cmdline.txt`, and copies the kernel, initramfs and the device tree
/// QEMU's machine models (`qemu.dtb`) into `dir`. On `raspi4b` the device tree gets the
/// one change QEMU needs (see [`qemu_dtb_fixups`]); the card keeps Debian's.
pub fn firmware_boot(card: &Path, board: &Board, dir: &Path) -> Result<Boot> {
    let q = board.qemu.as_ref().context("no qemu section")?;
    let dtb_name = q.dtb.as_deref().context("board has no qemu.dtb")?;
    let read = |offset: u64, file: &str| -> Result<String> {
        let out = mtools("mtype", card, offset, 0)
            .arg(format!("::/{file}"))
            .output_checked()
            .with_context(|| format!("reading {file} from {}", card.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
    };
    let (seed, _) = crate::disk::find_partition(card, "cairn-boot")?;
    let partition = boot_partition(&read(seed, "autoboot.txt")?)?;
    let label = cairn_slots::mbr::label(partition).context("no such partition")?;
    let (offset, _) = crate::disk::find_partition(card, label)?;
    let (kernel, initrd) = config_files(&read(offset, "config.txt")?)?;
    let mut cmdline = read(offset, "cmdline.txt")?.trim().to_string();
    std::fs::create_dir_all(dir)?;
    let copy = |file: &str, to: &str| -> Result<PathBuf> {
        let dst = dir.join(to);
        let _ = std::fs::remove_file(&dst);
        mtools("mcopy", card, offset, 0)
            .arg(format!("::/{file}"))
            .arg(&dst)
            .output_checked()
            .with_context(|| {
                format!("partition {partition} of {} has no {file}", card.display())
            })?;
        Ok(dst)
    };
    let kernel = copy(&kernel, "vmlinuz")?;
    let initrd = copy(&initrd, "initrd.img")?;
    let dtb = copy(dtb_name, dtb_name)?;
    if q.machine == "raspi4b" {
        let mut blob = std::fs::read(&dtb)?;
        qemu_dtb_fixups(&mut blob)?;
        std::fs::write(&dtb, blob)?;
    }
    if !q.append.is_empty() {
        cmdline = format!("{cmdline} {}", q.append.trim());
    }
    // QEMU's power button on these machines is Ctrl-Alt-Del on its USB keyboard.
    cmdline.push_str(" cairn.cad=poweroff");
    Ok(Boot {
        partition,
        kernel,
        initrd,
        dtb,
        cmdline,
    })
}

/// QEMU's `raspi4b` wires the SD card to the SDHCI controller that a Pi 4 uses for Wi-Fi,
/// whose power sequence needs a GPIO expander QEMU's firmware mailbox lacks: drop the
/// `mmc-pwrseq` property of that controller so the card probes.
pub fn qemu_dtb_fixups(dtb: &mut [u8]) -> Result<()> {
    if !nop_property(dtb, "/soc/mmc@7e300000", "mmc-pwrseq")? {
        bail!("the device tree has no /soc/mmc@7e300000 mmc-pwrseq (not a Pi 4 tree?)");
    }
    Ok(())
}

/// Overwrites property `prop` of node `path` in a flattened device tree with FDT_NOP tokens
/// (the size of the blob is unchanged). Returns whether the property was there.
pub fn nop_property(dtb: &mut [u8], path: &str, prop: &str) -> Result<bool> {
    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const NOP: u32 = 4;
    const END: u32 = 9;
    let be32 = |b: &[u8], at: usize| -> Result<u32> {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
            .context("device tree truncated")
    };
    if be32(dtb, 0)? != 0xd00d_feed {
        bail!("not a flattened device tree");
    }
    let structs = be32(dtb, 8)? as usize;
    let strings = be32(dtb, 12)? as usize;
    let cstr = |b: &[u8], at: usize| -> Result<String> {
        let rest = b.get(at..).context("device tree truncated")?;
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .context("unterminated name")?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let mut stack: Vec<String> = Vec::new();
    let mut at = structs;
    loop {
        match be32(dtb, at)? {
            BEGIN_NODE => {
                let name = cstr(dtb, at + 4)?;
                at += 4 + (name.len() + 1).div_ceil(4) * 4;
                stack.push(name);
            }
            END_NODE => {
                stack.pop();
                at += 4;
            }
            PROP => {
                let len = be32(dtb, at + 4)? as usize;
                let name = cstr(dtb, strings + be32(dtb, at + 8)? as usize)?;
                let next = at + 12 + len.div_ceil(4) * 4;
                let here = "/".to_string() + &stack[1.min(stack.len())..].join("/");
                if here == path && name == prop {
                    let words = dtb.get_mut(at..next).context("device tree truncated")?;
                    for w in words.chunks_mut(4) {
                        w.copy_from_slice(&NOP.to_be_bytes());
                    }
                    return Ok(true);
                }
                at = next;
            }
            NOP => at += 4,
            END => return Ok(false),
            t => bail!("bad device tree token {t} at byte {at}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny device tree: / { soc { mmc@7e300000 { mmc-pwrseq = <1>; status = "okay"; }; }; }
    fn tree() -> Vec<u8> {
        let mut st: Vec<u8> = Vec::new();
        let w = |v: &mut Vec<u8>, x: u32| v.extend(x.to_be_bytes());
        let name = |v: &mut Vec<u8>, n: &str| {
            v.extend(n.as_bytes());
            v.push(0);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        };
        let strings = b"mmc-pwrseq\0status\0";
        w(&mut st, 1);
        name(&mut st, "");
        w(&mut st, 1);
        name(&mut st, "soc");
        w(&mut st, 1);
        name(&mut st, "mmc@7e300000");
        w(&mut st, 3);
        w(&mut st, 4);
        w(&mut st, 0);
        w(&mut st, 1);
        w(&mut st, 3);
        w(&mut st, 5);
        w(&mut st, 11);
        name(&mut st, "okay");
        w(&mut st, 2);
        w(&mut st, 2);
        w(&mut st, 2);
        w(&mut st, 9);
        let mut blob = Vec::new();
        let off_struct = 40u32;
        let off_strings = off_struct + st.len() as u32;
        for v in [
            0xd00d_feed,
            off_strings + strings.len() as u32,
            off_struct,
            off_strings,
        ] {
            w(&mut blob, v);
        }
        blob.resize(40, 0);
        blob.extend(&st);
        blob.extend(strings);
        blob
    }

    #[test]
    fn nops_exactly_the_property() {
        let mut t = tree();
        let before = t.clone();
        assert!(!nop_property(&mut t, "/soc/mmc@7e300000", "absent").unwrap());
        assert!(!nop_property(&mut t, "/soc", "mmc-pwrseq").unwrap());
        assert_eq!(t, before);
        assert!(nop_property(&mut t, "/soc/mmc@7e300000", "mmc-pwrseq").unwrap());
        assert_eq!(t.len(), before.len());
        assert!(
            !nop_property(&mut t, "/soc/mmc@7e300000", "mmc-pwrseq").unwrap(),
            "gone"
        );
        assert!(
            nop_property(&mut t, "/soc/mmc@7e300000", "status").unwrap(),
            "walk continues past NOPs"
        );
        assert!(nop_property(&mut [0u8; 8], "/", "x").is_err());
    }

    #[test]
    fn autoboot_names_the_committed_slot() {
        use cairn_slots::{autoboot::render, Slot};
        assert_eq!(boot_partition(&render(Slot::A)).unwrap(), 2);
        assert_eq!(boot_partition(&render(Slot::B)).unwrap(), 3);
        assert!(boot_partition("[tryboot]\nboot_partition=3\n").is_err());
        assert!(boot_partition("boot_partition=7\n").is_err());
        assert!(boot_partition("boot_partition=x\n").is_err());
    }

    #[test]
    fn config_names_kernel_and_initramfs() {
        let (k, i) =
            config_files("arm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n")
                .unwrap();
        assert_eq!((k.as_str(), i.as_str()), ("vmlinuz", "initrd.img"));
        assert!(config_files("enable_uart=1\n").is_err());
    }
}
