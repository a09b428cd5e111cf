//! `cairnctl build`: board config + recipe + device binaries -> `out/<board>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use cairn_slots::{Entries, EntrySpec, Slot};

use crate::board::{Board, BootChain};
use crate::disk::{self, MIB};
use crate::manifest::{Artefact, KernelInfo, Manifest};
use crate::progress::{mib, Progress};
use crate::recipe::Recipe;
use crate::{debs, fat, initramfs, kmod, rootfs, tools, update};

pub struct Options {
    pub repo: PathBuf,
    pub board: Board,
    pub recipe: Recipe,
    pub out: PathBuf,
    /// Directory holding `cairn-init` and `cairn` for the board's arch.
    pub bin_dir: PathBuf,
    pub version: String,
    pub epoch: u64,
    pub quiet: bool,
    /// Directory of the update signing keys whose `*.pub` the image trusts (made with a
    /// new key when it has none).
    pub update_keys: PathBuf,
    /// Also write `disk.img.zst` and `disk.img.bmap` (for flashing); bundles do not need them.
    pub disk_archive: bool,
}

pub const DEFAULT_NODE_YAML: &str = "\
# Cairn node config: edit it on any computer after flashing, or replace it with
#   cairnctl config set disk.img node.yaml
# Every key is optional; see docs/design.md (\"Node config\").
role: server
network:
  mode: dhcp
";

pub fn build(o: &Options) -> Result<Manifest> {
    let b = &o.board;
    let arch = b.arch;
    let trusted = update::trusted_keys(&o.update_keys, o.quiet)?;
    let pxe = b.boot.chain == BootChain::Pxe;
    let mut p = Progress::new(if pxe { 8 } else { 10 }, o.quiet);
    let work = o.out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    for t in [
        "apt-get",
        "dpkg-deb",
        "depmod",
        "mksquashfs",
        "mkfs.vfat",
        "mcopy",
        "sfdisk",
        "bmaptool",
    ] {
        tools::find(t)?;
    }

    p.step("device binaries");
    let init_bin = o.bin_dir.join("cairn-init");
    let cairn_bin = o.bin_dir.join("cairn");
    for bin in [&init_bin, &cairn_bin] {
        if !bin.is_file() {
            bail!(
                "{} is missing: run `make build` first (cross-builds {})",
                bin.display(),
                arch.rust_target()
            );
        }
    }
    let binaries = vec![Artefact::of(&init_bin)?, Artefact::of(&cairn_bin)?];
    p.done(&format!(
        "cairn-init {}, cairn {}",
        mib(binaries[0].size),
        mib(binaries[1].size)
    ));

    p.step(&format!(
        "kernel {} {} ({})",
        b.kernel.package,
        b.kernel.version,
        arch.debian()
    ));
    let kdeb = debs::fetch(&b.kernel.package, arch.debian(), &b.kernel.version)?;
    debs::verify_version(&kdeb)?;
    let kroot = work.join("kernel");
    debs::extract(&kdeb, &kroot)?;
    let krel = b.kernel.release().to_string();
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{krel}"));
    let moddir = kroot.join(format!("lib/modules/{krel}"));
    if !vmlinuz.is_file() {
        bail!("{} has no boot/vmlinuz-{krel}", kdeb.path.display());
    }
    // Debian generates modules.dep at install time; the package ships only modules.order.
    tools::run(Command::new("depmod").arg("-b").arg(&kroot).arg(&krel))?;
    p.done(&format!(
        "{} ({})",
        kdeb.path.display(),
        mib(std::fs::metadata(&vmlinuz)?.len())
    ));

    p.step("Debian packages");
    let mut packages = vec![kdeb.clone()];
    let pkgroot = work.join("pkgroot");
    let mut wanted: Vec<(String, String)> = o
        .recipe
        .debian_packages
        .iter()
        .map(|n| (n.clone(), arch.debian().to_string()))
        .collect();
    wanted.push(("ca-certificates".into(), "all".into()));
    if b.boot.chain == BootChain::Uefi {
        wanted.push(("systemd-boot-efi".into(), arch.debian().into()));
    }
    if b.boot.chain == BootChain::Raspberrypi {
        wanted.push(("raspi-firmware".into(), "all".into()));
    }
    if pxe && arch == crate::board::Arch::X86_64 {
        // iPXE for PXE firmware that is not iPXE already (the first stage, over TFTP).
        wanted.push(("ipxe".into(), "all".into()));
    }
    if pxe && arch == crate::board::Arch::Aarch64 {
        // Debian has no ARM64 iPXE: UEFI's PXE loads a network GRUB made from these modules.
        wanted.push(("grub-efi-arm64-bin".into(), arch.debian().into()));
    }
    let versions = debs::candidates(&wanted)?;
    for ((name, a), version) in wanted.iter().zip(&versions) {
        let deb = debs::fetch(name, a, version)?;
        debs::extract(&deb, &pkgroot)?;
        packages.push(deb);
    }
    p.done(&format!("{} packages", packages.len()));

    p.step("kernel modules");
    let db = kmod::ModuleDb::load(&moddir)?;
    // Loaded at boot (the initramfs carries these), and everything the root ships: those
    // plus the pod network's, which the kubelet has loaded when it makes the network.
    let boot_mods = db
        .closure(&b.modules)
        .with_context(|| format!("board-configs/{}.yaml: modules", b.name))?;
    let all_wanted: Vec<String> = b
        .modules
        .iter()
        .chain(&b.pod_network_modules)
        .cloned()
        .collect();
    let mods = db
        .closure(&all_wanted)
        .with_context(|| format!("board-configs/{}.yaml: pod_network_modules", b.name))?;
    let list = |names: &[String]| -> String {
        names
            .iter()
            .filter(|m| !db.is_builtin(m))
            .map(|m| format!("{m}\n"))
            .collect()
    };
    let modlist = list(&b.modules);
    let lay_modules = |root: &Path, mods: &[String]| -> Result<u64> {
        let mut bytes = 0;
        for m in mods {
            let rel = format!("usr/lib/modules/{krel}/{m}");
            let src = moddir.join(m);
            let module =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            let module = kmod::without_signature(&module);
            bytes += module.len() as u64;
            rootfs::write(root, &rel, module, false)?;
        }
        let dep = db.filtered_dep(mods);
        rootfs::write(
            root,
            &format!("usr/lib/modules/{krel}/modules.dep"),
            dep.as_bytes(),
            false,
        )?;
        rootfs::write(root, "etc/cairn/modules", modlist.as_bytes(), false)?;
        Ok(bytes)
    };
    p.done(&format!(
        "{} listed, {} with dependencies, {} of them for the pod network (loaded after boot)",
        b.modules.len() + b.pod_network_modules.len(),
        mods.len(),
        mods.len() - boot_mods.len()
    ));

    p.step("root filesystem tree");
    let root = work.join("rootfs");
    rootfs::skeleton(&root)?;
    rootfs::copy(&root, "usr/sbin/init", &init_bin, true)?;
    rootfs::copy(&root, "usr/bin/cairn", &cairn_bin, true)?;
    lay_modules(&root, &mods)?;
    rootfs::write(
        &root,
        "etc/cairn/modules.pod-network",
        list(&b.pod_network_modules).as_bytes(),
        false,
    )?;
    rootfs::write(
        &root,
        "etc/ssl/certs/ca-certificates.crt",
        &ca_bundle(&pkgroot)?,
        false,
    )?;
    rootfs::write(
        &root,
        "etc/os-release",
        os_release(&o.version).as_bytes(),
        false,
    )?;
    // `built`: the clock floor of boards without a real-time clock (cairn-init's clock.rs).
    let release = format!(
        "version={}\nboard={}\narch={}\nkernel={krel}\nbuilt={}\n",
        o.version,
        b.name,
        arch.as_str(),
        o.epoch
    );
    rootfs::write(&root, "etc/cairn/release", release.as_bytes(), false)?;
    rootfs::write(&root, "etc/cairn/board", board_facts(b).as_bytes(), false)?;
    for (name, line) in &trusted {
        let rel = format!("{}/{name}", update::TRUSTED_DIR);
        rootfs::write(&root, &rel, line.as_bytes(), false)?;
    }
    rootfs::install_elf_closure(&root, &pkgroot, arch.multiarch(), &o.recipe.install)?;
    let mut overlays: Vec<PathBuf> = o
        .recipe
        .overlays
        .iter()
        .map(|n| o.repo.join("overlays").join(n))
        .collect();
    overlays.push(o.repo.join("overlays").join(&b.name));
    for dir in overlays.iter().filter(|d| d.is_dir()) {
        rootfs::overlay(&root, dir)?;
    }
    o.recipe
        .install_manifests(&root, &o.repo.join("images").join("recipes"))?;
    if o.recipe.test_images {
        let dir = root.join(cairn::BAKED_IMAGES.trim_start_matches('/'));
        crate::oci::build(&dir, &[arch], o.epoch)?;
    }
    p.done(&format!("{} entries", rootfs::walk(&root)?.len()));

    p.step("read-only root (squashfs, lz4)");
    let squash = o.out.join("rootfs.squashfs");
    if squash.exists() {
        std::fs::remove_file(&squash)?;
    }
    let e = o.epoch.to_string();
    tools::run(
        Command::new("mksquashfs")
            .arg(&root)
            .arg(&squash)
            .args([
                "-noappend",
                // LZ4 rather than zstd: every process start and page fault reads the
                // root, and under TCG zstd's decompression was most of starting `cairn`
                // (docs/decisions.md, Image builder).
                "-comp",
                "lz4",
                "-Xhc",
                "-all-root",
                "-no-xattrs",
            ])
            .args(["-all-time", &e, "-mkfs-time", &e, "-quiet", "-no-progress"])
            // mksquashfs refuses SOURCE_DATE_EPOCH together with explicit times.
            .env_remove("SOURCE_DATE_EPOCH"),
    )?;
    let squash_len = std::fs::metadata(&squash)?.len();
    p.done(&mib(squash_len));

    p.step("initramfs (cpio, zstd)");
    let iroot = work.join("initramfs");
    rootfs::mkdir(&iroot)?;
    for d in ["proc", "sys", "dev", "sysroot", "boot", "etc/cairn"] {
        rootfs::mkdir(&iroot.join(d))?;
    }
    rootfs::copy(&iroot, "init", &init_bin, true)?;
    lay_modules(&iroot, &boot_mods)?;
    // Stage 1 needs to know where the slot's root is (a partition, or a file on the slot's
    // boot partition).
    rootfs::write(&iroot, "etc/cairn/board", board_facts(b).as_bytes(), false)?;
    // cairn-init looks modules up under /lib/modules: keep the merged-/usr shape.
    std::os::unix::fs::symlink("usr/lib", iroot.join("lib"))?;
    let mut initrd = initramfs::pack(&iroot, o.epoch as u32)?;
    if pxe {
        // The whole root rides along, already compressed: stored, not packed again.
        let squash_bytes = std::fs::read(&squash)?;
        let members = [
            initramfs::Member::Dir("cairn"),
            initramfs::Member::File("cairn/rootfs.squashfs", 0o444, &squash_bytes),
        ];
        initrd.extend(initramfs::archive(&members, o.epoch as u32)?);
    }
    let initrd_path = o.out.join("initrd.img");
    std::fs::write(&initrd_path, &initrd)?;
    let out_vmlinuz = o.out.join("vmlinuz");
    std::fs::copy(&vmlinuz, &out_vmlinuz)?;
    p.done(&mib(initrd.len() as u64));

    if pxe {
        p.step("network boot files (iPXE script, default node config)");
        let script = crate::pxe::script(&b.name, &o.version, &b.kernel.cmdline);
        std::fs::write(o.out.join(crate::pxe::SCRIPT), script)?;
        let nodes = o.out.join(crate::pxe::NODES);
        if nodes.exists() {
            std::fs::remove_dir_all(&nodes)?;
        }
        std::fs::create_dir_all(&nodes)?;
        let default = crate::pxe::node_archive(DEFAULT_NODE_YAML, None, o.epoch as u32)?;
        std::fs::write(nodes.join("default.cpio"), default)?;
        let mut files = vec![
            "vmlinuz",
            "initrd.img",
            crate::pxe::SCRIPT,
            "nodes/default.cpio",
            "rootfs.squashfs",
        ];
        for (src, name) in crate::pxe::FIRST_STAGE {
            let src = pkgroot.join(src);
            if src.is_file() {
                std::fs::copy(&src, o.out.join(name))?;
                files.push(name);
            }
        }
        if arch == crate::board::Arch::Aarch64 {
            grub_netboot(&pkgroot.join("usr/lib/grub/arm64-efi"), &work, o)?;
            files.extend([crate::pxe::GRUB_EFI, crate::pxe::GRUB_CFG]);
        }
        for stale in ["disk.img", "disk.img.zst", "disk.img.bmap", "cmdline"] {
            let _ = std::fs::remove_file(o.out.join(stale));
        }
        p.done(&format!(
            "{}, {}/default.cpio",
            crate::pxe::SCRIPT,
            crate::pxe::NODES
        ));
        let artefacts = files
            .iter()
            .map(|f| Artefact::of(&o.out.join(f)))
            .collect::<Result<Vec<_>>>()?;
        return finish(
            o,
            &work,
            p,
            binaries,
            packages,
            krel,
            mods,
            Vec::new(),
            artefacts,
        );
    }

    let layout = b
        .partitions
        .as_ref()
        .context("the board config has no partitions")?;
    let img = o.out.join("disk.img");
    // The slot's kernel command line (without `cairn.slot=` on Pi cards), for update bundles.
    std::fs::write(
        o.out.join("cmdline"),
        format!("{}\n", b.kernel.cmdline.trim()),
    )?;
    let parts = if b.boot.chain == BootChain::Raspberrypi {
        sd_card(
            o, &mut p, &work, &pkgroot, &kroot, &krel, &vmlinuz, &initrd, &squash,
        )?
    } else {
        p.step("boot partition (FAT32)");
        let btree = work.join("boot");
        rootfs::copy(&btree, "a/vmlinuz", &vmlinuz, false)?;
        rootfs::write(&btree, "a/initrd.img", &initrd, false)?;
        rootfs::write(
            &btree,
            "cairn/node.yaml",
            DEFAULT_NODE_YAML.as_bytes(),
            false,
        )?;
        // Slot A, committed. The same entry drives systemd-boot on UEFI boards and the
        // initramfs elsewhere (cairn-slots); slot B gets one when an update writes it.
        let mut entries = Entries::at(&btree);
        entries.add_committed(Slot::A, &slot_entry(&o.version, Slot::A, &b.kernel.cmdline))?;
        if b.boot.chain == BootChain::Uefi {
            let name = arch.systemd_boot_name().unwrap();
            let efi = pkgroot.join("usr/lib/systemd/boot/efi").join(name);
            rootfs::copy(
                &btree,
                &format!("EFI/BOOT/{}", arch.efi_boot_name().unwrap()),
                &efi,
                false,
            )?;
            // No `default`: systemd-boot boots the first entry in Boot Loader Specification
            // order, which is what makes a failed trial fall back (docs/design.md, "Updates").
            rootfs::write(
                &btree,
                "loader/loader.conf",
                b"timeout 0\neditor no\n",
                false,
            )?;
        }
        set_mtimes(&btree, o.epoch)?;
        let fat_img = work.join("boot.fat");
        let volid = volume_id(&b.name);
        fat::make(
            &fat_img,
            layout.boot_mib,
            "CAIRN-BOOT",
            volid,
            &btree,
            o.epoch,
        )?;
        p.done(&format!("{} MiB", layout.boot_mib));

        p.step("disk image (GPT: boot, slot A, slot B, data)");
        let (parts, total) = disk::plan(layout.boot_mib, layout.slot_mib, layout.data_mib);
        disk::create(&img, total, &parts, &b.name)?;
        disk::write_sparse(&img, parts[0].start, parts[0].size, &fat_img)?;
        disk::write_sparse(&img, parts[1].start, parts[1].size, &squash)?;
        disk::write_zeros(&img, parts[2].start, MIB)?;
        disk::write_zeros(&img, parts[3].start, MIB)?;
        p.done(&format!("{} raw", mib(total)));
        parts
    };

    p.step("block map and zstd");
    let bmap = o.out.join("disk.img.bmap");
    let zst = o.out.join("disk.img.zst");
    if o.disk_archive {
        tools::run(
            Command::new("bmaptool")
                .arg("create")
                .arg("-o")
                .arg(&bmap)
                .arg(&img),
        )?;
        compress(&img, &zst)?;
        p.done(&format!(
            "disk.img.zst {}",
            mib(std::fs::metadata(&zst)?.len())
        ));
    } else {
        for stale in [&bmap, &zst] {
            let _ = std::fs::remove_file(stale);
        }
        p.done("skipped (--no-disk-archive)");
    }

    let mut artefacts = Vec::new();
    for f in [
        "disk.img",
        "disk.img.zst",
        "disk.img.bmap",
        "rootfs.squashfs",
        "initrd.img",
        "vmlinuz",
    ] {
        let path = o.out.join(f);
        if o.disk_archive || path.exists() {
            artefacts.push(Artefact::of(&path)?);
        }
    }
    let parts = parts
        .iter()
        .map(|p| crate::manifest::Partition {
            label: p.label.into(),
            start_bytes: p.start,
            size_bytes: p.size,
        })
        .collect();
    finish(
        o, &work, p, binaries, packages, krel, mods, parts, artefacts,
    )
}

/// The Raspberry Pi SD card (`cairn_slots::mbr`, `raspi`): the seed partition, slot A's
/// boot partition holding its root, an empty slot B, the data partition (made on first
/// boot). Returns the partitions.
#[allow(clippy::too_many_arguments)]
fn sd_card(
    o: &Options,
    p: &mut Progress,
    work: &Path,
    pkgroot: &Path,
    kroot: &Path,
    krel: &str,
    vmlinuz: &Path,
    initrd: &[u8],
    squash: &Path,
) -> Result<Vec<disk::Part>> {
    use crate::raspi;
    let b = &o.board;
    let layout = b
        .partitions
        .as_ref()
        .context("the board config has no partitions")?;
    p.step("SD card boot partitions (FAT32: seed, slot A, slot B)");
    let firmware = pkgroot.join(raspi::FIRMWARE_DIR);
    let seed = work.join("seed");
    rootfs::mkdir(&seed)?;
    rootfs::write(
        &seed,
        "autoboot.txt",
        cairn_slots::autoboot::render(Slot::A).as_bytes(),
        false,
    )?;
    rootfs::write(
        &seed,
        "config.txt",
        raspi::SEED_CONFIG_TXT.as_bytes(),
        false,
    )?;
    rootfs::write(
        &seed,
        "cairn/node.yaml",
        DEFAULT_NODE_YAML.as_bytes(),
        false,
    )?;
    if b.boot.firmware.iter().any(|f| f == raspi::FIRST_STAGE) {
        rootfs::copy(
            &seed,
            raspi::FIRST_STAGE,
            &firmware.join(raspi::FIRST_STAGE),
            false,
        )?;
    }
    let slot_a = work.join("slot-a");
    raspi::lay_slot(
        &slot_a,
        b,
        &o.version,
        Slot::A,
        &firmware,
        &raspi::dtb_dir(kroot, krel),
        vmlinuz,
        initrd,
        squash,
    )?;
    // Slot A, committed: the A/B state is the slot entries, as on every board, and
    // autoboot.txt follows them (cairn_slots::autoboot).
    Entries::at(&seed)
        .add_committed(Slot::A, &slot_entry(&o.version, Slot::A, &b.kernel.cmdline))?;
    // The slot's files besides kernel, initramfs, root and command line: an update bundle
    // carries them (`boot/<file>` payloads).
    let shared = o.out.join(raspi::SLOT_FILES);
    if shared.exists() {
        std::fs::remove_dir_all(&shared)?;
    }
    std::fs::create_dir_all(&shared)?;
    for entry in std::fs::read_dir(&slot_a)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !raspi::SLOT_OWN.contains(&name.as_str()) {
            std::fs::copy(&path, shared.join(&name))?;
        }
    }
    let slot_b = work.join("slot-b");
    rootfs::mkdir(&slot_b)?;
    let (parts, total) = disk::plan_mbr(layout.boot_mib, layout.slot_mib, layout.data_mib);
    let mut fats = Vec::new();
    for (tree, label, part) in [
        (&seed, "CAIRN", &parts[0]),
        (&slot_a, "CAIRN-A", &parts[1]),
        (&slot_b, "CAIRN-B", &parts[2]),
    ] {
        set_mtimes(tree, o.epoch)?;
        let fat_img = work.join(format!("{label}.fat"));
        fat::make(
            &fat_img,
            part.size / MIB,
            label,
            volume_id(&format!("{}/{label}", b.name)),
            tree,
            o.epoch,
        )?;
        fats.push(fat_img);
    }
    p.done(&format!(
        "{} + 2 x {} MiB",
        parts[0].size / MIB,
        parts[1].size / MIB
    ));

    p.step("SD card image (MBR: seed, slot A, slot B, data)");
    let img = o.out.join("disk.img");
    disk::create_mbr(&img, total, &parts)?;
    for (fat_img, part) in fats.iter().zip(&parts) {
        disk::write_sparse(&img, part.start, part.size, fat_img)?;
    }
    disk::write_zeros(&img, parts[3].start, MIB)?;
    p.done(&format!("{} raw", mib(total)));
    Ok(parts)
}

/// A FAT volume id derived from `seed`, so rebuilds are byte-identical.
fn volume_id(seed: &str) -> u32 {
    u32::from_be_bytes(
        crate::manifest::sha256(seed.as_bytes())[..4]
            .try_into()
            .unwrap(),
    )
}

/// Writes `manifest.json` and removes the work directory.
#[allow(clippy::too_many_arguments)]
fn finish(
    o: &Options,
    work: &Path,
    p: Progress,
    binaries: Vec<Artefact>,
    packages: Vec<debs::Deb>,
    krel: String,
    mods: Vec<String>,
    partitions: Vec<crate::manifest::Partition>,
    artefacts: Vec<Artefact>,
) -> Result<Manifest> {
    let b = &o.board;
    let manifest = Manifest {
        format: 1,
        board: b.name.clone(),
        arch: b.arch.as_str().into(),
        version: o.version.clone(),
        recipe: o.recipe.name.clone(),
        source_date_epoch: o.epoch,
        kernel: KernelInfo {
            package: b.kernel.package.clone(),
            version: b.kernel.version.clone(),
            release: krel.clone(),
            modules: mods.clone(),
        },
        binaries,
        packages,
        partitions,
        artefacts,
    };
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    std::fs::write(o.out.join("manifest.json"), json)?;
    std::fs::remove_dir_all(work)?;
    p.finish(&format!("built {} in {}", b.name, o.out.display()));
    Ok(manifest)
}

/// Concatenates the Mozilla CA certificates from Debian's ca-certificates, sorted by name.
fn ca_bundle(pkgroot: &Path) -> Result<Vec<u8>> {
    let dir = pkgroot.join("usr/share/ca-certificates/mozilla");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(std::fs::read(f)?);
    }
    Ok(out)
}

/// The boot loader entry of a slot holding `version`, booted with `cmdline`.
pub fn slot_entry(version: &str, slot: Slot, cmdline: &str) -> EntrySpec {
    EntrySpec {
        version: version.to_string(),
        linux: format!("/{slot}/vmlinuz"),
        initrd: format!("/{slot}/initrd.img"),
        options: cmdline.trim().to_string(),
    }
}

/// The network GRUB (`grubnetaa64.efi`, its modules built in) and its `grub.cfg`.
fn grub_netboot(modules: &Path, work: &Path, o: &Options) -> Result<()> {
    use crate::pxe;
    let early = work.join("grub-early.cfg");
    std::fs::write(&early, pxe::GRUB_EARLY)?;
    tools::run(
        Command::new(tools::find("grub-mkimage")?)
            .args(["-O", "arm64-efi", "-p", "(tftp)", "-d"])
            .arg(modules)
            .arg("-c")
            .arg(&early)
            .arg("-o")
            .arg(o.out.join(pxe::GRUB_EFI))
            .args(pxe::GRUB_MODULES),
    )?;
    let b = &o.board;
    let cfg = pxe::grub_cfg(&b.name, &o.version, &b.kernel.cmdline);
    std::fs::write(o.out.join(pxe::GRUB_CFG), cfg)?;
    Ok(())
}

/// `/etc/cairn/board`: what init needs to know of the board.
fn board_facts(b: &Board) -> String {
    let mut facts = format!("grow_data={}\n", u8::from(b.grow_data));
    if b.boot.chain == BootChain::Pxe {
        // Diskless gateways keep node state in RAM rather than refusing to boot.
        facts.push_str("data_fallback=tmpfs\n");
    }
    if b.boot.chain == BootChain::Raspberrypi {
        facts.push_str("slot_root=boot-file\n");
    }
    facts
}

fn os_release(version: &str) -> String {
    format!("NAME=Cairn\nID=cairn\nVERSION_ID={version}\nPRETTY_NAME=\"Cairn {version}\"\n")
}

fn set_mtimes(tree: &Path, epoch: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for p in rootfs::walk(tree)? {
        if p.is_file() {
            std::fs::File::options()
                .write(true)
                .open(&p)?
                .set_modified(t)?;
        }
    }
    Ok(())
}

/// zstd level 19, streaming (no whole image in memory), on every core: zstd's multi-threaded
/// streaming output is the same for any number of workers (it cuts the input into jobs by
/// the level's window, not by the worker count), so builds stay byte-identical across
/// machines.
fn compress(src: &Path, dst: &Path) -> Result<()> {
    let input = std::fs::File::open(src)?;
    let output = std::fs::File::create(dst)?;
    let mut enc = zstd::stream::Encoder::new(output, 19)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    enc.multithread(u32::try_from(workers).unwrap_or(1))?;
    enc.include_checksum(true)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    std::io::copy(&mut reader, &mut enc)?;
    enc.finish()?;
    Ok(())
}
