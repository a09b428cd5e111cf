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
    modules::load_listed();
    let slot = choose_slot(&cmdline);
    let label = format!("cairn-{}", slot.as_str());
    let (name, others) = blockdev::wait_for(&label, ROOT_WAIT)?;
    if !others.is_empty() {
        warn!(
            "several {label} partitions ({name} {}), using {name}",
            others.join(" ")
        );
    }
    let dev = format!("/dev/{name}");
    let fstype = mount_root(&dev)?;
    info!("root slot={} dev={dev} fstype={fstype}", slot.as_str());
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
    nix::mount::mount(
        None::<&str>,
        boot,
        None::<&str>,
        MsFlags::MS_REMOUNT,
        None::<&str>,
    )
    .context("remount /boot read-write")?;
    entries.boot_next().context("/boot/loader/entries")
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
