//! Board configs (`board-configs/<name>.yaml`): what hardware an image is for and how it
//! boots. Parsed strictly: unknown keys and bad values are errors with `file:line:column`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// CPU architecture of a board, as Cairn names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
    S390x,
}

impl Arch {
    /// Rust target triple the device binaries are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
            Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
            Arch::S390x => "s390x-unknown-linux-gnu",
        }
    }
    /// Debian architecture name (for `apt-get download pkg:<arch>`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
            Arch::S390x => "s390x",
        }
    }
    /// Debian multiarch triplet (library directory name).
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
            Arch::Armv7 => "arm-linux-gnueabihf",
            Arch::S390x => "s390x-linux-gnu",
        }
    }
    /// Name of the removable-media boot loader on a UEFI system partition.
    pub fn efi_boot_name(self) -> Option<&'static str> {
        match self {
            Arch::X86_64 => Some("BOOTX64.EFI"),
            Arch::Aarch64 => Some("BOOTAA64.EFI"),
            Arch::Armv7 => Some("BOOTARM.EFI"),
            Arch::S390x => None,
        }
    }
    /// systemd-boot's file name for this architecture.
    pub fn systemd_boot_name(self) -> Option<&'static str> {
        match self {
            Arch::X86_64 => Some("systemd-bootx64.efi"),
            Arch::Aarch64 => Some("systemd-bootaa64.efi"),
            Arch::Armv7 => Some("systemd-bootarm.efi"),
            Arch::S390x => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::S390x => "s390x",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub kernel: Kernel,
    /// Kernel modules cairn-init loads (dependencies are resolved from modules.dep).
    #[serde(default)]
    pub modules: Vec<String>,
    /// The pod network's kernel modules (bridge, veth, nftables): shipped in the root, not
    /// loaded at boot; `cairn`'s kubelet has them loaded (`cairn-init load-modules`) when it
    /// makes the pod network, after the API is ready, which keeps them off the boot's path.
    #[serde(default)]
    pub pod_network_modules: Vec<String>,
    pub boot: Boot,
    /// The disk layout; network-booted boards have none.
    pub partitions: Option<Partitions>,
    /// Grow the data partition and its filesystem to the end of the device on boot.
    #[serde(default)]
    pub grow_data: bool,
    pub qemu: Option<Qemu>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Debian binary package, e.g. `linux-image-6.1.0-50-cloud-amd64`.
    pub package: String,
    /// Exact Debian version of that package (the pin).
    pub version: String,
    /// Kernel command line (console etc.); the slot is added by the boot chain.
    #[serde(default)]
    pub cmdline: String,
}

impl Kernel {
    /// The kernel release (`uname -r`), derived from the package name.
    pub fn release(&self) -> &str {
        self.package
            .strip_prefix("linux-image-")
            .unwrap_or(&self.package)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootChain {
    /// UEFI firmware loads a boot loader from the boot partition.
    Uefi,
    /// QEMU loads kernel + initramfs directly; the initramfs picks the slot.
    Direct,
    /// Network boot through iPXE: kernel, an initramfs carrying the whole read-only root
    /// (diskless, the root runs from RAM) and a per-device config chosen by MAC address.
    /// No disk image, no slots: a new version is a new set of files on the server.
    Pxe,
    /// Raspberry Pi firmware: an MBR SD card whose first FAT partition holds `autoboot.txt`,
    /// naming the FAT partition of the slot to boot (`config.txt`, `cmdline.txt`, kernel,
    /// initramfs, device trees and the slot's root as a file). See `cairn_slots::mbr`.
    Raspberrypi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    SystemdBoot,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub chain: BootChain,
    pub loader: Option<Loader>,
    /// Raspberry Pi: files of Debian's `raspi-firmware` (`/usr/lib/raspi-firmware/`) the
    /// card needs. `bootcode.bin` goes to the first partition, the rest into each slot.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Raspberry Pi: device trees from the kernel package (paths under its dtb directory)
    /// copied into each slot; the firmware picks its model's by name.
    #[serde(default)]
    pub dtbs: Vec<String>,
    /// Raspberry Pi: lines added to each slot's `config.txt`.
    #[serde(default)]
    pub config: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub boot_mib: u64,
    pub slot_mib: u64,
    pub data_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Pci,
    Ccw,
    /// The SoC's own devices (QEMU's raspi machines): the disk is the SD card, the network a
    /// USB Ethernet adapter, the power button Ctrl-Alt-Del on a USB keyboard.
    Soc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    pub binary: String,
    pub machine: String,
    /// CPU model; machines with a fixed SoC (raspi*) have none.
    pub cpu: Option<String>,
    pub memory_mib: u64,
    pub firmware: Option<Firmware>,
    pub bus: Bus,
    /// Raspberry Pi: the device tree (a file of the booted slot) QEMU hands the kernel.
    pub dtb: Option<String>,
    /// Kernel arguments only QEMU's machine needs, added when the harness boots it.
    #[serde(default)]
    pub append: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Names of the boards in `dir` (file stems of `*.yaml`), sorted.
pub fn known_boards(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "yaml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Loads and validates `dir/<name>.yaml`.
pub fn load(dir: &Path, name: &str) -> Result<Board> {
    let path = dir.join(format!("{name}.yaml"));
    if !path.is_file() {
        bail!(
            "unknown board `{name}`; known boards: {}",
            known_boards(dir).join(", ")
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates one board config's text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Board> {
    let board: Board = cairn_config::from_yaml_str(text, file)?;
    validate(&board, text, file)?;
    Ok(board)
}

fn validate(b: &Board, text: &str, file: &str) -> Result<()> {
    let at = |key: &str| {
        crate::yamlfile::locate_key(text, key)
            .map_or(file.to_string(), |(l, c)| format!("{file}:{l}:{c}"))
    };
    match (&b.partitions, b.boot.chain) {
        (Some(_), BootChain::Pxe) => bail!(
            "{}: a network-booted board (boot.chain: pxe) has no partitions",
            at("partitions")
        ),
        (None, BootChain::Pxe) => {
            if !matches!(b.arch, Arch::X86_64 | Arch::Aarch64) {
                bail!(
                    "{}: network boot is built for x86_64 (iPXE) and aarch64 (GRUB) only",
                    at("chain")
                );
            }
        }
        (None, _) => bail!("{}: partitions is required", at("boot")),
        (Some(p), _) => {
            if p.boot_mib < 40 {
                bail!(
                    "{}: partitions.boot_mib must be at least 40 (FAT32 minimum)",
                    at("boot_mib")
                );
            }
            if p.slot_mib < 8 || p.data_mib < 16 {
                bail!(
                    "{}: partitions: slot_mib must be ≥ 8 and data_mib ≥ 16",
                    at("partitions")
                );
            }
        }
    }
    let pi = b.boot.chain == BootChain::Raspberrypi;
    if pi != (b.arch != Arch::X86_64 && b.arch != Arch::S390x && !b.boot.firmware.is_empty()) {
        bail!(
            "{}: boot.chain raspberrypi needs an ARM arch and boot.firmware (and only it has them)",
            at("chain")
        );
    }
    if pi && b.boot.dtbs.is_empty() {
        bail!(
            "{}: boot.dtbs: the firmware needs the board's device trees",
            at("boot")
        );
    }
    if !pi && (!b.boot.dtbs.is_empty() || !b.boot.config.is_empty()) {
        bail!(
            "{}: boot.dtbs and boot.config are for boot.chain raspberrypi",
            at("boot")
        );
    }
    if let (true, Some(p)) = (pi, &b.partitions) {
        if p.slot_mib < 40 {
            bail!(
                "{}: partitions.slot_mib must be at least 40 (each slot is a FAT32 partition)",
                at("slot_mib")
            );
        }
    }
    for f in b.boot.firmware.iter().chain(&b.boot.dtbs) {
        if f.is_empty() || f.starts_with('/') || f.split('/').any(|c| c == "..") {
            bail!("{}: bad file name `{f}`", at("boot"));
        }
    }
    if let Some(q) = &b.qemu {
        if (q.bus == Bus::Soc) != pi || (q.dtb.is_some() != pi) {
            bail!(
                "{}: qemu.bus soc and qemu.dtb go with boot.chain raspberrypi",
                at("qemu")
            );
        }
        if q.cpu.is_none() && q.bus != Bus::Soc {
            bail!("{}: qemu.cpu is required", at("qemu"));
        }
    }
    if !b.kernel.package.starts_with("linux-image-") {
        bail!(
            "{}: kernel.package must be a Debian linux-image-* package",
            at("package")
        );
    }
    if b.boot.chain == BootChain::Uefi {
        if b.boot.loader.is_none() {
            bail!(
                "{}: boot.loader is required when boot.chain is uefi",
                at("chain")
            );
        }
        if b.arch.efi_boot_name().is_none() {
            bail!(
                "{}: {} has no UEFI boot path; use boot.chain: direct",
                at("chain"),
                b.arch.as_str()
            );
        }
    }
    for (key, list) in [
        ("modules", &b.modules),
        ("pod_network_modules", &b.pod_network_modules),
    ] {
        for m in list {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("{}: {key}: bad module name `{m}`", at(key));
            }
        }
    }
    if let Some(m) = b.pod_network_modules.iter().find(|m| {
        b.modules
            .iter()
            .any(|l| l.replace('-', "_") == m.replace('-', "_"))
    }) {
        bail!(
            "{}: pod_network_modules: `{m}` is also in modules (loaded at boot); list it once",
            at("pod_network_modules")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_boards() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board-configs")
    }

    #[test]
    fn every_shipped_board_parses() {
        let dir = repo_boards();
        let names = known_boards(&dir);
        assert!(names.len() >= 4, "{names:?}");
        for n in names {
            let b = load(&dir, &n).unwrap_or_else(|e| panic!("{n}: {e:#}"));
            assert_eq!(b.name, n);
        }
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let err = load(&repo_boards(), "toaster").unwrap_err().to_string();
        assert!(err.contains("unknown board `toaster`"), "{err}");
        assert!(err.contains("qemu-aarch64"), "{err}");
    }

    #[test]
    fn unknown_key_has_file_line_column() {
        let text = std::fs::read_to_string(repo_boards().join("qemu-x86_64.yaml")).unwrap();
        let bad = text.replace("grow_data: true", "grow_data: true\ncolour: blue");
        let line = bad.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
        let err = parse(&bad, "b.yaml").unwrap_err().to_string();
        assert!(err.starts_with(&format!("b.yaml:{line}:")), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn raspberry_pi_boards_need_their_firmware_and_soc() {
        let text = std::fs::read_to_string(repo_boards().join("rpi4.yaml")).unwrap();
        let b = parse(&text, "rpi4.yaml").unwrap();
        assert_eq!(b.boot.chain, BootChain::Raspberrypi);
        assert_eq!(b.qemu.unwrap().bus, Bus::Soc);
        let no_fw = text.replace("firmware: [start4.elf, fixup4.dat]", "firmware: []");
        let e = parse(&no_fw, "b.yaml").unwrap_err().to_string();
        assert!(e.contains("boot.firmware"), "{e}");
        let escape = text.replace("start4.elf,", "../../etc/passwd,");
        let e = parse(&escape, "b.yaml").unwrap_err().to_string();
        assert!(e.contains("bad file name"), "{e}");
        let small = text.replace("slot_mib: 128", "slot_mib: 16");
        let e = parse(&small, "b.yaml").unwrap_err().to_string();
        assert!(e.contains("slot_mib"), "{e}");
        let uefi = std::fs::read_to_string(repo_boards().join("qemu-aarch64.yaml")).unwrap();
        let e = parse(&uefi.replace("bus: pci", "bus: soc"), "b.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("qemu.bus soc"), "{e}");
    }

    #[test]
    fn a_module_is_loaded_at_boot_or_for_the_pod_network_not_both() {
        let text = std::fs::read_to_string(repo_boards().join("qemu-x86_64.yaml")).unwrap();
        let b = parse(&text, "b.yaml").unwrap();
        assert!(b.pod_network_modules.iter().any(|m| m == "nf_tables"));
        let twice = text.replace("modules: [virtio_pci,", "modules: [nf-tables, virtio_pci,");
        let e = parse(&twice, "b.yaml").unwrap_err().to_string();
        assert!(
            e.contains("pod_network_modules") && e.contains("list it once"),
            "{e}"
        );
        let bad = text.replace(
            "pod_network_modules: [bridge,",
            "pod_network_modules: [br/idge,",
        );
        let e = parse(&bad, "b.yaml").unwrap_err().to_string();
        assert!(e.contains("bad module name `br/idge`"), "{e}");
    }

    #[test]
    fn bad_value_is_rejected() {
        let text = std::fs::read_to_string(repo_boards().join("qemu-x86_64.yaml")).unwrap();
        let bad = text.replace("arch: x86_64", "arch: pdp11");
        let err = parse(&bad, "b.yaml").unwrap_err().to_string();
        assert!(err.contains("b.yaml:") && err.contains("pdp11"), "{err}");
        let small = text.replace("boot_mib: 96", "boot_mib: 4");
        let err = parse(&small, "b.yaml").unwrap_err().to_string();
        assert!(err.contains("boot_mib"), "{err}");
    }
}
