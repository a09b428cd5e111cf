//! Network-booted boards (`boot.chain: pxe`): the files `cairnctl build` writes for them,
//! the per-device node configs chosen by MAC address (`cairnctl pxe add|remove|list`), and
//! the server (`cairnctl pxe serve`, in [`crate::pxeserve`]).
//!
//! `out/<board>/` holds `vmlinuz`, `initrd.img` (init, the modules and the whole read-only
//! root as `cairn/rootfs.squashfs`: the node runs from RAM), the iPXE script `boot.ipxe`,
//! and `nodes/`: one small archive per device, `<mac>.cpio` (lower case, hyphens:
//! `52-54-00-12-34-56.cpio`), and `default.cpio` for every other device. The script asks
//! for the device's own archive, then for the default; without a default an unknown device
//! is refused and its console says why. Each archive holds `boot/cairn/node.yaml` (and
//! optionally the cluster secrets in `boot/cairn/secrets/`), which the node's init keeps at
//! `/boot/cairn`: the same seed path as on a disk image. Every path in the script is
//! relative, so the same directory works over TFTP (QEMU's built-in server) and HTTP.
//! x86_64 builds also hold Debian's iPXE binaries ([`FIRST_STAGE`]) for PXE firmware.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::initramfs::{archive, Member};

pub const SCRIPT: &str = "boot.ipxe";
/// GRUB's config, for boards whose first stage is GRUB (no iPXE build for the architecture).
pub const GRUB_CFG: &str = "grub.cfg";
/// The network GRUB UEFI firmware loads over TFTP (its config is `grub.cfg` beside it).
pub const GRUB_EFI: &str = "grubnetaa64.efi";
/// What a boot server may serve from a build's directory (besides `nodes/`).
pub const SERVED: [&str; 8] = [
    "vmlinuz",
    "initrd.img",
    SCRIPT,
    GRUB_CFG,
    GRUB_EFI,
    "undionly.kpxe",
    "ipxe.efi",
    "snponly.efi",
];
pub const NODES: &str = "nodes";
pub const DEFAULT: &str = "default";

/// iPXE builds from Debian's `ipxe` (x86_64 only) copied next to the script, for PXE
/// firmware that must load iPXE first (over TFTP): BIOS, UEFI, and UEFI using the
/// firmware's own NIC driver. Package path, then the name in the output directory.
pub const FIRST_STAGE: [(&str, &str); 3] = [
    ("usr/lib/ipxe/undionly.kpxe", "undionly.kpxe"),
    ("boot/ipxe.efi", "ipxe.efi"),
    ("usr/lib/ipxe/snponly.efi", "snponly.efi"),
];

/// The iPXE script of a build.
pub fn script(board: &str, version: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe
# Cairn {version} for {board}: network boot. Paths are relative to where this script
# came from (TFTP or HTTP). Node configs: nodes/<mac>.cpio, else nodes/default.cpio.
echo Cairn {version} ({board}): network boot of ${{net0/mac}}
kernel vmlinuz {cmdline} || goto failed
initrd initrd.img || goto failed
initrd {NODES}/${{net0/mac:hexhyp}}.cpio && goto boot ||
echo Cairn: no config for this device (nodes/${{net0/mac:hexhyp}}.cpio), trying the default
initrd {NODES}/{DEFAULT}.cpio || goto refused
:boot
echo Cairn: booting
boot || goto failed
:refused
echo Cairn: REFUSED: device ${{net0/mac}} has no node config and this server gives no default
echo Cairn: add one with `cairnctl pxe add DIR --mac ${{net0/mac}} node.yaml`
exit 1
:failed
echo Cairn: network boot failed
exit 1
",
        cmdline = cmdline.trim()
    )
}

/// GRUB's counterpart of [`script`], for UEFI boards without iPXE (ARM64): the same files,
/// the same order (the device's own archive, then the default, else refused). GRUB reads
/// everything from the server it was loaded from (`$root`, TFTP).
pub fn grub_cfg(board: &str, version: &str, cmdline: &str) -> String {
    format!(
        r#"# Cairn {version} for {board}: network boot through GRUB. Node configs:
# nodes/<mac>.cpio (52-54-00-12-34-56.cpio), else nodes/{DEFAULT}.cpio.
regexp --set=1:m1 --set=2:m2 --set=3:m3 --set=4:m4 --set=5:m5 --set=6:m6 \
  '^(..):(..):(..):(..):(..):(..)$' "$net_default_mac"
set key="$m1-$m2-$m3-$m4-$m5-$m6"
echo "Cairn {version} ({board}): network boot of $net_default_mac"
linux /vmlinuz {cmdline}
if initrd /initrd.img /{NODES}/$key.cpio; then
  echo "Cairn: booting"
  boot
fi
echo "Cairn: no config for this device ({NODES}/$key.cpio), trying the default"
if initrd /initrd.img /{NODES}/{DEFAULT}.cpio; then
  echo "Cairn: booting"
  boot
fi
echo "Cairn: REFUSED: device $net_default_mac has no node config and this server gives no default"
echo "Cairn: add one with `cairnctl pxe add DIR --mac $net_default_mac node.yaml`"
sleep 10
exit
"#,
        cmdline = cmdline.trim()
    )
}

/// The config GRUB's image carries: read `grub.cfg` from where GRUB came from.
pub const GRUB_EARLY: &str = "configfile $prefix/grub.cfg\n";

/// GRUB modules the network image needs.
pub const GRUB_MODULES: &[&str] = &[
    "net",
    "efinet",
    "tftp",
    "http",
    "linux",
    "normal",
    "configfile",
    "echo",
    "test",
    "regexp",
    "sleep",
    "halt",
    "reboot",
];

/// A device's archive name stem from its MAC address (`52:54:00:AB:CD:EF`,
/// `52-54-00-ab-cd-ef` or `525400abcdef`): `52-54-00-ab-cd-ef`, as iPXE's `hexhyp` prints it.
pub fn mac_key(mac: &str) -> Result<String> {
    let hex: String = mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("`{mac}` is not a MAC address (six hex bytes, e.g. 52:54:00:12:34:56)");
    }
    let bytes: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Ok(bytes.join("-"))
}

/// The archive of one device's seed: `boot/cairn/node.yaml` and, with `secrets`, the
/// cluster secrets a server imports on its first start.
pub fn node_archive(node_yaml: &str, secrets: Option<&Path>, mtime: u32) -> Result<Vec<u8>> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(dir) = secrets {
        for name in cairn::seed::SEED_FILES {
            let src = dir.join(name);
            let data = std::fs::read(&src).with_context(|| {
                format!(
                    "{} is missing: make secrets with `cairnctl gen secrets`",
                    src.display()
                )
            })?;
            files.push((format!("boot/cairn/secrets/{name}"), data));
        }
    }
    let mut members = vec![
        Member::Dir("boot"),
        Member::Dir("boot/cairn"),
        Member::File("boot/cairn/node.yaml", 0o644, node_yaml.as_bytes()),
    ];
    if secrets.is_some() {
        members.push(Member::Dir("boot/cairn/secrets"));
    }
    for (name, data) in &files {
        members.push(Member::File(name, 0o600, data));
    }
    archive(&members, mtime)
}

/// Which device a node config is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Mac(String),
    Default,
}

impl Device {
    pub fn file(&self, dir: &Path) -> Result<PathBuf> {
        let stem = match self {
            Device::Mac(m) => mac_key(m)?,
            Device::Default => DEFAULT.to_string(),
        };
        Ok(dir.join(NODES).join(format!("{stem}.cpio")))
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    if !dir.join(SCRIPT).is_file() {
        bail!(
            "{} has no {SCRIPT}: give the output of `make image BOARD=pxe-...` (e.g. out/pxe-x86_64)",
            dir.display()
        );
    }
    Ok(())
}

/// Validates `node_yaml` and writes it as `device`'s archive in `dir`; returns its path.
pub fn add(
    dir: &Path,
    device: &Device,
    node_yaml: &Path,
    secrets: Option<&Path>,
) -> Result<PathBuf> {
    check_dir(dir)?;
    let text = std::fs::read_to_string(node_yaml)
        .with_context(|| format!("reading {}", node_yaml.display()))?;
    cairn_config::NodeConfig::parse(&text, &node_yaml.display().to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as u32;
    let bytes = node_archive(&text, secrets, now)?;
    let path = device.file(dir)?;
    std::fs::create_dir_all(dir.join(NODES))?;
    let tmp = path.with_extension("cpio.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes `device`'s archive. Removing the default makes unknown devices be refused.
pub fn remove(dir: &Path, device: &Device) -> Result<PathBuf> {
    check_dir(dir)?;
    let path = device.file(dir)?;
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(path)
}

/// The devices with a config in `dir` (MAC keys, and `default` when there is one), sorted.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    check_dir(dir)?;
    let mut names: Vec<String> = std::fs::read_dir(dir.join(NODES))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".cpio").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        for m in ["52:54:00:AB:cd:0e", "52-54-00-ab-CD-0E", "525400abcd0e"] {
            assert_eq!(mac_key(m).unwrap(), "52-54-00-ab-cd-0e");
        }
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "52:54:00:ab:cd:0e:ff",
            "../../x",
        ] {
            let err = mac_key(bad).unwrap_err().to_string();
            assert!(err.contains("not a MAC address"), "{err}");
        }
    }

    #[test]
    fn grub_cfg_asks_for_the_device_then_the_default() {
        let s = grub_cfg("pxe-aarch64", "1.2", " console=ttyAMA0 ");
        let own = s.find("initrd /initrd.img /nodes/$key.cpio").unwrap();
        let default = s.find("initrd /initrd.img /nodes/default.cpio").unwrap();
        assert!(own < default, "{s}");
        assert!(s.contains("linux /vmlinuz console=ttyAMA0\n"), "{s}");
        assert!(s.contains("REFUSED"));
    }

    #[test]
    fn script_asks_for_the_device_then_the_default() {
        let s = script("pxe-x86_64", "1.2", " console=ttyS0 ");
        assert!(s.starts_with("#!ipxe\n"));
        let own = s.find("initrd nodes/${net0/mac:hexhyp}.cpio").unwrap();
        let default = s.find("initrd nodes/default.cpio").unwrap();
        assert!(own < default, "{s}");
        assert!(s.contains("kernel vmlinuz console=ttyS0 ||"), "{s}");
        assert!(s.contains("REFUSED"));
    }

    #[test]
    fn node_archive_holds_the_seed() {
        let a = node_archive("role: agent\n", None, 7).unwrap();
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("boot/cairn/node.yaml") && text.contains("role: agent"));
        assert!(!text.contains("secrets"));
        let missing = Path::new("/nonexistent-secrets");
        let err = node_archive("role: server\n", Some(missing), 7).unwrap_err();
        assert!(
            format!("{err:#}").contains("cairnctl gen secrets"),
            "{err:#}"
        );
    }

    #[test]
    fn add_list_remove() {
        let dir = std::env::temp_dir().join(format!("cairn-pxe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("node.yaml");
        std::fs::write(&yaml, "role: server\nhostname: gw-1\n").unwrap();
        let mac = Device::Mac("52:54:00:12:34:56".into());
        let err = add(&dir, &mac, &yaml, None).unwrap_err().to_string();
        assert!(err.contains("has no boot.ipxe"), "{err}");
        std::fs::write(dir.join(SCRIPT), script("b", "1", "")).unwrap();
        add(&dir, &mac, &yaml, None).unwrap();
        add(&dir, &Device::Default, &yaml, None).unwrap();
        assert_eq!(list(&dir).unwrap(), ["52-54-00-12-34-56", "default"]);
        std::fs::write(&yaml, "role: toaster\n").unwrap();
        let err = format!("{:#}", add(&dir, &mac, &yaml, None).unwrap_err());
        assert!(err.contains("toaster"), "{err}");
        remove(&dir, &Device::Default).unwrap();
        assert_eq!(list(&dir).unwrap(), ["52-54-00-12-34-56"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
