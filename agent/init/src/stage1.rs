//! Stage 1: `/init` in the initramfs. Mounts the pseudo filesystems, loads the storage
//! modules, finds the slot's read-only root by label, mounts it and switches to it.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

use nix::mount::{umount, MsFlags};

use crate::cmdline::{Cmdline, Slot};
use crate::error::{bail, Context, Result};
use crate::{blockdev, log, modules, mounts};

const ROOT_WAIT: Duration = Duration::from_secs(30);
const NEW_ROOT: &str = "/sysroot";
/// A network-booted node's read-only root, inside the initramfs (boards with
/// `boot.chain: pxe`): it has no slots and runs from RAM.
const RAM_ROOT: &str = "/cairn/rootfs.squashfs";
/// The node config and secrets a network boot adds as a second initramfs (`cairnctl pxe`).
const RAM_SEED: &str = "/boot/cairn";
pub const BOOT_LABEL: &str = "cairn-boot";

pub fn run() -> Result<Infallible> {
    let uptime = crate::uptime_ms();
    let early = mounts::mount_early();
    log::ensure_console();
    log::open_kmsg();
    // Userspace lines to /dev/kmsg are rate limited by default; ours are few and wanted.
    let _ = fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    info!("start stage=1 uptime_ms={uptime}");
    early?;
    let cmdline = crate::cmdline();
    let mut steps = crate::Steps::since(uptime);
    modules::load_listed(modules::LIST);
    steps.end("modules");
    if Path::new(RAM_ROOT).is_file() {
        let dev = mount_ram_root()?;
        steps.end("mount_root");
        info!("root ram dev={dev} fstype=squashfs");
        keep_seed()?;
        return enter_root(&steps);
    }
    let slot = choose_slot(&cmdline);
    if crate::config::Board::load().root_in_boot {
        follow_entries_on_card(slot);
        let dev = mount_root_file(slot)?;
        steps.end("mount_root");
        info!("root slot={} dev={dev} fstype=squashfs", slot.as_str());
        return enter_root(&steps);
    }
    let label = format!("cairn-{}", slot.as_str());
    let (name, others) = blockdev::wait_for(&label, ROOT_WAIT)?;
    if !others.is_empty() {
        warn!(
            "several {label} partitions ({name} {}), using {name}",
            others.join(" ")
        );
    }
    let dev = format!("/dev/{name}");
    steps.end("find_root");
    let fstype = mount_root(&dev)?;
    steps.end("mount_root");
    info!("root slot={} dev={dev} fstype={fstype}", slot.as_str());
    enter_root(&steps)
}

/// Reports stage 1's steps, switches to the root mounted at [`NEW_ROOT`] and runs its init.
fn enter_root(steps: &crate::Steps) -> Result<Infallible> {
    info!("stage=1 steps_ms {}", steps.summary());
    info!("switch_root");
    mounts::switch_root(NEW_ROOT)?;
    exec_stage2()
}

/// `cairn.slot=` (set by the boot loader's entry), else the first entry in boot order on
/// the boot partition, taking one try if it is on trial (boards without a boot loader:
/// this init is their boot loader), else `a`.
fn choose_slot(cmdline: &Cmdline) -> Slot {
    if let Some(slot) = cmdline.slot {
        return slot;
    }
    match next_entry() {
        Ok(Some(entry)) => {
            match entry.tries {
                Some(t) => info!("slot {} on trial ({} tries left)", entry.slot, t.left),
                None => info!("slot {} committed", entry.slot),
            }
            entry.slot
        }
        Ok(None) => {
            warn!("no slot entries on the boot partition, booting slot a");
            Slot::A
        }
        Err(e) => {
            warn!("slot entries: {e}; booting slot a");
            Slot::A
        }
    }
}

/// Mounts the boot partition read-only, and read-write only when a trial's try must be
/// taken: an ordinary boot writes nothing to it.
fn next_entry() -> Result<Option<cairn_slots::Entry>> {
    let (name, _) = blockdev::wait_for(BOOT_LABEL, ROOT_WAIT)?;
    mounts::mount_fs(
        &format!("/dev/{name}"),
        "/boot",
        "vfat",
        MsFlags::MS_RDONLY,
        None,
    )?;
    let next = take_next(Path::new("/boot"));
    let _ = umount("/boot");
    next
}

fn take_next(boot: &Path) -> Result<Option<cairn_slots::Entry>> {
    let mut entries = cairn_slots::Entries::at(boot);
    let first = entries
        .load()
        .context("/boot/loader/entries")?
        .into_iter()
        .next();
    if first.as_ref().is_none_or(|e| e.tries.is_none()) {
        return Ok(first);
    }
    let taken = nix::mount::mount(
        None::<&str>,
        boot,
        None::<&str>,
        MsFlags::MS_REMOUNT,
        None::<&str>,
    )
    .context("remount /boot read-write")
    .and_then(|()| entries.boot_next().context("/boot/loader/entries"));
    match taken {
        Ok(next) => Ok(next),
        Err(e) => {
            // A trial whose try cannot be counted is not started (it could loop forever);
            // the committed slot is. Stage 2 repairs a damaged FAT before the next boot.
            warn!("cannot take the trial's try: {e}; booting the committed slot");
            Ok(entries
                .load()
                .context("/boot/loader/entries")?
                .into_iter()
                .find(|e| e.tries.is_none()))
        }
    }
}

/// Mounts [`RAM_ROOT`] through a loop device at [`NEW_ROOT`]. The device keeps the file
/// open, so its pages outlive the initramfs being emptied by the switch.
fn mount_ram_root() -> Result<String> {
    let file = fs::File::open(RAM_ROOT).context(RAM_ROOT)?;
    let dev = crate::sys::loop_attach(&file)?;
    mounts::mount_fs(&dev, NEW_ROOT, "squashfs", MsFlags::MS_RDONLY, None)?;
    Ok(dev)
}

/// Raspberry Pi cards: makes the firmware's next choice (`autoboot.txt`) follow the slot
/// entries, taking a trial's try ([`cairn_slots::autoboot`]); reboots when the entries want
/// the other slot (a power cut stopped an update or commit before `autoboot.txt` changed).
/// Problems are logged and the boot goes on: the firmware's choice is a bootable slot.
fn follow_entries_on_card(running: Slot) {
    use cairn_slots::autoboot::{self, Action};
    let boot = Path::new("/boot");
    let mounted = blockdev::wait_for(BOOT_LABEL, ROOT_WAIT).and_then(|(name, _)| {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mounts::mount_fs(&format!("/dev/{name}"), "/boot", "vfat", flags, None)
    });
    if let Err(e) = mounted {
        warn!("slot entries: {e}; booting slot {running}");
        return;
    }
    let now = fs::read_to_string(boot.join(autoboot::FILE))
        .ok()
        .and_then(|t| autoboot::parse(&t));
    let mut entries = cairn_slots::Entries::at(boot);
    let mut ops = cairn_slots::RealOps;
    let (next, reboot) = match autoboot::reconcile(&mut entries, running, now) {
        Ok(Action::Boot { next_boot }) => (next_boot, false),
        Ok(Action::Reboot { slot }) => (slot, true),
        Err(e) => {
            warn!("slot entries: {e}; booting slot {running}");
            let _ = umount("/boot");
            return;
        }
    };
    match autoboot::write(&mut ops, boot, next) {
        Ok(true) => info!("autoboot.txt now boots slot {next}"),
        Ok(false) => {}
        Err(e) => warn!("cannot write autoboot.txt: {e}"),
    }
    let _ = umount("/boot");
    if reboot {
        info!("slot entries want slot {next}, the firmware started {running}: rebooting");
        nix::unistd::sync();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    }
}

/// Mounts the slot's root that is a file on its FAT boot partition (Raspberry Pi cards,
/// [`cairn_slots::mbr`]): the partition read-only, the file through a read-only loop device.
/// The partition's mount is then detached: the loop device keeps it alive, and nothing else
/// sees it.
fn mount_root_file(slot: Slot) -> Result<String> {
    const SLOT_BOOT: &str = "/slot";
    let label = format!("cairn-boot-{}", slot.as_str());
    let (name, others) = blockdev::wait_for(&label, ROOT_WAIT)?;
    if !others.is_empty() {
        warn!(
            "several {label} partitions ({name} {}), using {name}",
            others.join(" ")
        );
    }
    fs::create_dir_all(SLOT_BOOT).context(format!("mkdir {SLOT_BOOT}"))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mounts::mount_fs(&format!("/dev/{name}"), SLOT_BOOT, "vfat", flags, None)?;
    let path = format!("{SLOT_BOOT}/{}", cairn_slots::mbr::ROOT_FILE);
    let attached = fs::File::open(&path)
        .context(format!("{path} on /dev/{name}"))
        .and_then(|file| crate::sys::loop_attach(&file));
    let dev = match attached {
        Ok(dev) => dev,
        Err(e) => {
            let _ = umount(SLOT_BOOT);
            return Err(e);
        }
    };
    mounts::mount_fs(&dev, NEW_ROOT, "squashfs", MsFlags::MS_RDONLY, None)?;
    nix::mount::umount2(SLOT_BOOT, nix::mount::MntFlags::MNT_DETACH)
        .context(format!("detach {SLOT_BOOT}"))?;
    Ok(format!("/dev/{name}:{}", cairn_slots::mbr::ROOT_FILE))
}

/// Copies the node config a network boot brought ([`RAM_SEED`]) to a small read-only tmpfs
/// at the new root's `/boot`, where stage 2 and `cairn` look for the seed on every board.
fn keep_seed() -> Result<()> {
    if !Path::new(RAM_SEED).is_dir() {
        warn!("no node config came with the network boot ({RAM_SEED}); using defaults");
        return Ok(());
    }
    let boot = format!("{NEW_ROOT}/boot");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mounts::mount_fs("tmpfs", &boot, "tmpfs", flags, Some("mode=0755,size=4m"))?;
    copy_tree(Path::new(RAM_SEED), &Path::new(&boot).join("cairn"))?;
    nix::mount::mount(
        None::<&str>,
        boot.as_str(),
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context(format!("remount {boot} read-only"))?;
    info!("seed from the network boot at /boot/cairn");
    Ok(())
}

/// Copies a small tree of directories and regular files, keeping permissions.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).context(format!("mkdir {}", to.display()))?;
    for e in fs::read_dir(from).context(format!("read {}", from.display()))? {
        let e = e.context(format!("read {}", from.display()))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().context(format!("stat {}", src.display()))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).context(format!("copy {}", src.display()))?;
        }
    }
    Ok(())
}

/// Mounts the root read-only at [`NEW_ROOT`], trying squashfs then erofs.
fn mount_root(dev: &str) -> Result<&'static str> {
    let mut errors = Vec::new();
    for fstype in ["squashfs", "erofs"] {
        match mounts::mount_fs(dev, NEW_ROOT, fstype, MsFlags::MS_RDONLY, None) {
            Ok(()) => return Ok(fstype),
            Err(e) => errors.push(e.to_string()),
        }
    }
    bail!("cannot mount the root: {}", errors.join("; "))
}

/// Replaces this process with `/sbin/init` of the new root, keeping the kernel's arguments
/// and environment and adding `CAIRN_STAGE=2`.
fn exec_stage2() -> Result<Infallible> {
    let path = c"/sbin/init";
    let mut argv = vec![CString::from(path)];
    argv.extend(
        std::env::args_os()
            .skip(1)
            .filter_map(|a| CString::new(a.into_vec()).ok()),
    );
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "CAIRN_STAGE")
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .collect();
    envp.push(CString::from(c"CAIRN_STAGE=2"));
    let Err(e) = nix::unistd::execve(path, &argv, &envp);
    bail!("exec /sbin/init: {e}")
}
