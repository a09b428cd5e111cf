//! The data partition (`cairn-data`, ext4 at `/var`): grown, formatted, checked or recreated,
//! then mounted and grown online. Losing `/var` means losing the node's state, so the only
//! path that reformats an existing filesystem is "e2fsck -y could not repair it".

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::mount::MsFlags;

use crate::blockdev;
use crate::config::Board;
use crate::error::{bail, Context, Result};
use crate::log::line;
use crate::{gpt, mbr, mounts, sys};

pub const LABEL: &str = "cairn-data";
const MKE2FS: &str = "/usr/sbin/mke2fs";
const E2FSCK: &str = "/usr/sbin/e2fsck";

/// The ext4 superblock facts init needs; `None` from [`Ext4Super::parse`] means "no ext4".
#[derive(Debug, PartialEq, Eq)]
pub struct Ext4Super {
    pub block_size: u64,
    pub blocks: u64,
    /// Unmounted cleanly with nothing to look at: no error recorded, no journal to replay, no
    /// orphans, no periodic check due. `e2fsck -p` passes such a filesystem without checking
    /// it, so init does not start it (a dynamically linked program, ~0.3 s under TCG).
    pub clean: bool,
}

impl Ext4Super {
    /// Parses the 1024-byte superblock found at byte 1024 of the device.
    pub fn parse(sb: &[u8]) -> Option<Ext4Super> {
        if sb.len() < 1024 || u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
        let log = u32_at(0x18);
        if log > 6 {
            return None;
        }
        let mut blocks = u64::from(u32_at(0x4));
        if u32_at(0x60) & 0x80 != 0 {
            blocks |= u64::from(u32_at(0x150)) << 32; // INCOMPAT_64BIT: s_blocks_count_hi
        }
        const VALID_FS: u16 = 0x1;
        const ERROR_FS: u16 = 0x2;
        const INCOMPAT_RECOVER: u32 = 0x4;
        const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x1_0000;
        let state = u16_at(0x3a);
        let (mounts, max_mounts) = (u16_at(0x34), u16_at(0x36) as i16);
        let clean = state & VALID_FS != 0
            && state & ERROR_FS == 0
            && u32_at(0x60) & INCOMPAT_RECOVER == 0
            && u32_at(0x64) & RO_COMPAT_ORPHAN_PRESENT == 0
            && u32_at(0xe8) == 0 // s_last_orphan
            && u32_at(0x194) == 0 // s_error_count
            && u32_at(0x44) == 0 // s_checkinterval
            && (max_mounts <= 0 || i32::from(mounts) < i32::from(max_mounts));
        Some(Ext4Super {
            block_size: 1024 << log,
            blocks,
            clean,
        })
    }

    pub fn read(dev: &str) -> Result<Option<Ext4Super>> {
        let file = File::open(dev).context(format!("open {dev}"))?;
        let mut sb = vec![0u8; 1024];
        file.read_exact_at(&mut sb, 1024)
            .context(format!("read superblock of {dev}"))?;
        Ok(Ext4Super::parse(&sb))
    }
}

/// What an `e2fsck` exit code means for the boot.
#[derive(Debug, PartialEq, Eq)]
pub enum Fsck {
    Clean,
    Repaired,
    Failed,
}

pub fn fsck_outcome(code: Option<i32>) -> Fsck {
    match code {
        Some(0) => Fsck::Clean,
        Some(1..=3) => Fsck::Repaired,
        _ => Fsck::Failed,
    }
}

fn run(program: &str, args: &[&str]) -> Result<Option<i32>> {
    let status = sys::command(program)
        .args(args)
        .status()
        .context(format!("run {program}"))?;
    Ok(status.code())
}

fn mkfs(dev: &str, force: bool) -> Result<()> {
    // No discard of the whole partition at format time: it runs on the first boot, which
    // should be quick, and SD cards erase slowly (QEMU's emulated card writes every erased
    // block: 30-55 s for the data partition of a test card).
    let mut args = vec![
        "-q",
        "-t",
        "ext4",
        "-L",
        LABEL,
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    ];
    if force {
        args.push("-F");
    }
    args.push(dev);
    match run(MKE2FS, &args)? {
        Some(0) => Ok(()),
        code => bail!("mke2fs {dev} failed (exit {code:?})"),
    }
}

/// Whether the first MiB of `dev` is all zeros (a partition never formatted).
fn is_blank(dev: &str) -> Result<bool> {
    let file = File::open(dev).context(format!("open {dev}"))?;
    let mut buf = vec![0u8; 1 << 20];
    file.read_exact_at(&mut buf, 0)
        .context(format!("read {dev}"))?;
    Ok(buf.iter().all(|&b| b == 0))
}

/// How far to go in [`check_or_format`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Trust a superblock that says clean ([`Ext4Super::clean`]); otherwise `e2fsck -p`.
    UnlessClean,
    /// `e2fsck -f`: the kernel refused what the superblock called clean.
    Force,
}

/// Makes sure `dev` holds a usable ext4, logging the `data ...` marker, except when the check
/// was skipped because the superblock said clean: then it returns `true` and the caller logs
/// the marker once the kernel has mounted the filesystem.
fn check_or_format(dev: &str, check: Check) -> Result<bool> {
    // Only a blank partition (as shipped: its first MiB written as zeros) is formatted
    // outright. A damaged primary superblock goes through e2fsck, which finds the backups.
    let sb = Ext4Super::read(dev)?;
    if sb.is_none() && is_blank(dev)? {
        mkfs(dev, false)?;
        info!("data formatted dev={dev}");
        return Ok(false);
    }
    if check == Check::UnlessClean && sb.is_some_and(|sb| sb.clean) {
        return Ok(true);
    }
    let force: &[&str] = if check == Check::Force { &["-f"] } else { &[] };
    let started = std::time::Instant::now();
    let outcome = fsck_outcome(run(E2FSCK, &[force, &["-p", dev]].concat())?);
    let check_ms = started.elapsed().as_millis();
    match outcome {
        Fsck::Clean if check == Check::Force => {
            info!("data checked dev={dev} check_ms={check_ms} (e2fsck -f)")
        }
        Fsck::Clean => info!("data clean dev={dev} check_ms={check_ms}"),
        Fsck::Repaired => info!("data repaired dev={dev} check_ms={check_ms}"),
        Fsck::Failed => {
            warn!("e2fsck -p could not repair {dev}, trying e2fsck -y");
            let code = run(E2FSCK, &[force, &["-y", dev]].concat())?;
            if fsck_outcome(code) != Fsck::Failed {
                info!("data repaired dev={dev}");
                return Ok(false);
            }
            recreate(dev, &format!("beyond repair (e2fsck -y exit {code:?})"))?;
        }
    }
    Ok(false)
}

/// Makes a new filesystem over one that cannot be repaired, loudly: a node that boots with
/// empty state (and rejoins) beats one that reboots forever.
fn recreate(dev: &str, why: &str) -> Result<()> {
    let banner = "!!! ================================================================ !!!";
    line(2, banner);
    line(2, &format!("!!! data filesystem on {dev}: {why}"));
    line(
        2,
        "!!! RECREATING IT: all node state on the data partition is lost      !!!",
    );
    line(2, banner);
    mkfs(dev, true)?;
    info!("data recreated dev={dev}");
    Ok(())
}

/// Finds, prepares and mounts the data partition at `/var`.
pub fn prepare(board: &Board) -> Result<()> {
    let wait = if board.data_tmpfs_fallback { 5 } else { 10 };
    let (name, others) = match blockdev::wait_for(LABEL, Duration::from_secs(wait)) {
        Ok(found) => found,
        Err(e) if board.data_tmpfs_fallback => {
            warn!("{e}: node state is kept in RAM (tmpfs on /var) and lost at power-off");
            mounts::mount_fs(
                "tmpfs",
                "/var",
                "tmpfs",
                MsFlags::MS_NOATIME,
                Some("mode=0755"),
            )?;
            return make_dirs();
        }
        Err(e) => return Err(e),
    };
    if !others.is_empty() {
        warn!(
            "several {LABEL} partitions ({name} {}), using {name}",
            others.join(" ")
        );
    }
    let dev = format!("/dev/{name}");
    if board.grow_data {
        match grow_partition(&name) {
            Ok(Some((old, new))) => info!("data grown dev={dev} partition_bytes={old}->{new}"),
            Ok(None) => {}
            Err(e) => warn!("cannot grow {dev}: {e}"),
        }
    }
    let skipped = check_or_format(&dev, Check::UnlessClean)?;
    let mount = || mounts::mount_fs(&dev, "/var", "ext4", MsFlags::MS_NOATIME, None);
    match mount() {
        Ok(()) if skipped => info!("data clean dev={dev} check_ms=0 (superblock clean)"),
        Ok(()) => {}
        Err(e) => {
            // The kernel checks what the superblock cannot say, e.g. the group descriptors.
            if skipped {
                warn!("cannot mount {dev} ({e}) although its superblock says clean: checking it");
            } else {
                warn!("cannot mount {dev} ({e}) after e2fsck -p: checking it with e2fsck -f");
            }
            check_or_format(&dev, Check::Force)?;
            if let Err(e) = mount() {
                recreate(
                    &dev,
                    &format!("the kernel refuses it after e2fsck -f ({e})"),
                )?;
                mount()?;
            }
        }
    }
    let Some(sb) = Ext4Super::read(&dev)? else {
        bail!("no ext4 superblock on {dev} after mke2fs")
    };
    let part_bytes = blockdev::sys_u64(&name, "size")? * 512;
    let want = part_bytes / sb.block_size;
    // mke2fs may leave a few blocks at the end unused; only a real grow is worth a resize.
    if want.saturating_sub(sb.blocks) * sb.block_size >= 1 << 20 {
        let grown = File::open("/var")
            .context("open /var")
            .and_then(|d| sys::ext4_resize(&d, want));
        match grown {
            Ok(()) => info!("data grown dev={dev} fs_blocks={}->{want}", sb.blocks),
            Err(e) => warn!("cannot grow the filesystem on {dev}: {e}"),
        }
    }
    make_dirs()
}

/// Grows the data partition with whichever table its disk has: MBR on Raspberry Pi cards
/// (the firmware reads nothing else), GPT everywhere else.
fn grow_partition(name: &str) -> Result<Option<(u64, u64)>> {
    let disk = blockdev::parent_disk(name)?;
    let mut sector0 = [0u8; 512];
    File::open(format!("/dev/{disk}"))
        .and_then(|f| f.read_exact_at(&mut sector0, 0))
        .context(format!("read /dev/{disk}"))?;
    if mbr::is_mbr(&sector0) {
        mbr::grow_partition(name)
    } else {
        gpt::grow_partition(name)
    }
}

fn make_dirs() -> Result<()> {
    for dir in ["/var/lib/cairn", "/var/log"] {
        fs::create_dir_all(dir).context(format!("mkdir {dir}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(log: u32, lo: u32, hi: Option<u32>) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[56..58].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&lo.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&log.to_le_bytes());
        if let Some(hi) = hi {
            sb[0x60..0x64].copy_from_slice(&0x2c2u32.to_le_bytes());
            sb[0x150..0x154].copy_from_slice(&hi.to_le_bytes());
        }
        sb
    }

    #[test]
    fn superblock_fields() {
        assert_eq!(
            Ext4Super::parse(&superblock(2, 262144, None)),
            Some(Ext4Super {
                block_size: 4096,
                blocks: 262144,
                clean: false,
            })
        );
        assert_eq!(
            Ext4Super::parse(&superblock(2, 5, Some(1))).unwrap().blocks,
            (1 << 32) + 5
        );
        assert_eq!(Ext4Super::parse(&vec![0u8; 1024]), None);
        assert_eq!(Ext4Super::parse(&superblock(40, 1, None)), None);
    }

    #[test]
    fn clean_only_when_nothing_is_pending() {
        let mut sb = superblock(2, 1000, None);
        assert!(
            !Ext4Super::parse(&sb).unwrap().clean,
            "state 0: mounted or never unmounted"
        );
        sb[0x3a] = 1; // VALID_FS
        assert!(Ext4Super::parse(&sb).unwrap().clean);
        let dirty = |offset: usize, bytes: &[u8]| {
            let mut s = sb.clone();
            s[offset..offset + bytes.len()].copy_from_slice(bytes);
            Ext4Super::parse(&s).unwrap().clean
        };
        assert!(!dirty(0x3a, &[3]), "ERROR_FS");
        assert!(!dirty(0x60, &[4]), "journal to replay");
        assert!(!dirty(0x66, &[1]), "orphan file in use");
        assert!(!dirty(0xe8, &[12]), "orphan inode list");
        assert!(!dirty(0x194, &[1]), "errors counted");
        assert!(!dirty(0x44, &[1]), "periodic check interval");
        assert!(!dirty(0x34, &[20, 0, 20, 0]), "mount count reached");
        assert!(dirty(0x34, &[20, 0, 0xff, 0xff]), "no mount limit (-1)");
        assert!(dirty(0x34, &[5, 0, 20, 0]), "under the mount limit");
    }

    /// Cross-check with e2fsprogs (`make deps` installs it): the size, and `clean` as e2fsprogs
    /// leaves it after mke2fs and after tune2fs marks the filesystem as having errors.
    #[test]
    fn mke2fs_superblock() {
        let path = std::env::temp_dir().join(format!("cairn-init-ext4-{}.img", std::process::id()));
        File::create(&path).unwrap().set_len(48 << 20).unwrap();
        let path_str = path.to_str().unwrap();
        let run = |program: &str, args: &[&str]| {
            let status = std::process::Command::new(program)
                .args(args)
                .arg(path_str)
                .status()
                .unwrap_or_else(|e| panic!("{program} ({e}): `make deps` installs e2fsprogs"));
            assert!(status.success(), "{program} {args:?}: {status}");
        };
        run("mke2fs", &["-q", "-F", "-t", "ext4"]);
        let made = Ext4Super::read(path_str).unwrap().unwrap();
        run("tune2fs", &["-E", "force_fsck"]);
        let flagged = Ext4Super::read(path_str).unwrap().unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(made.blocks * made.block_size, 48 << 20);
        assert!(made.clean, "a new filesystem");
        assert!(!flagged.clean, "after tune2fs -E force_fsck");
    }

    #[test]
    fn fsck_codes() {
        assert_eq!(fsck_outcome(Some(0)), Fsck::Clean);
        assert_eq!(fsck_outcome(Some(1)), Fsck::Repaired);
        assert_eq!(fsck_outcome(Some(2)), Fsck::Repaired);
        assert_eq!(fsck_outcome(Some(4)), Fsck::Failed);
        assert_eq!(fsck_outcome(Some(8)), Fsck::Failed);
        assert_eq!(fsck_outcome(None), Fsck::Failed);
    }
}
