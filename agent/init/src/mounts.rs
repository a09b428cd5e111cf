//! Mounting: the pseudo filesystems of both stages, the switch from the initramfs to the
//! read-only root, and unmounting at shutdown.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::statfs;

use crate::error::{bail, Context, Result};

/// Mounts `fstype` at `target`, creating the directory when it is missing and can be made.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    if !Path::new(target).exists() {
        let _ = fs::create_dir_all(target);
    }
    mount(Some(source), target, Some(fstype), flags, data)
        .context(format!("mount {fstype} {source} on {target}"))
}

/// True when `path` is a mount point (its device differs from its parent's). Bind mounts of
/// the same filesystem are not detected, which is fine for the pseudo filesystems here.
pub fn is_mountpoint(path: &str) -> bool {
    let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(p), Ok(q)) => p.dev() != q.dev() || p.ino() == q.ino(),
        _ => false,
    }
}

fn mount_once(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    if is_mountpoint(target) {
        return Ok(());
    }
    mount_fs(source, target, fstype, flags, data)
}

const SECURE: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Stage 1: `/dev` (devtmpfs), `/proc`, `/sys`. `/dev` comes first so the console can be
/// opened before anything is printed.
pub fn mount_early() -> Result<()> {
    mount_once(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_once("proc", "/proc", "proc", SECURE, None)?;
    mount_once("sysfs", "/sys", "sysfs", SECURE, None)?;
    Ok(())
}

/// Stage 2: `/run`, `/tmp`, cgroup2, `/dev/pts`, `/dev/shm`, `/run/cairn` and the `/dev/fd`
/// style links. Only `/run` is essential; the others warn.
pub fn mount_stage2() -> Result<()> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_once("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=0755"))?;
    fs::create_dir_all("/run/cairn").context("mkdir /run/cairn")?;
    let optional: [(&str, &str, &str, MsFlags, Option<&str>); 4] = [
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777")),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", SECURE, None),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            nosuid_nodev,
            Some("mode=1777"),
        ),
    ];
    for (source, target, fstype, flags, data) in optional {
        if let Err(e) = mount_once(source, target, fstype, flags, data) {
            warn!("{e}");
        }
    }
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    Ok(())
}

/// True when `/` is the initramfs (ramfs, or tmpfs with `rootfstype=tmpfs`). The magic is
/// compared as u32 because `f_type` is signed on some 32-bit targets.
pub fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    statfs("/").is_ok_and(|s| matches!(s.filesystem_type().0 as u32, RAMFS_MAGIC | TMPFS_MAGIC))
}

/// Deletes everything below `path` that lives on device `dev`, never crossing into other
/// filesystems (the new root and the moved pseudo filesystems). Errors are ignored: a file
/// left behind only costs memory.
fn delete_tree(path: &Path, dev: u64) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.dev() != dev {
        return;
    }
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                delete_tree(&entry.path(), dev);
            }
        }
        if path != Path::new("/") {
            let _ = fs::remove_dir(path);
        }
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Moves `/dev /proc /sys` under `new_root`, frees the initramfs, makes `new_root` the root
/// and enters it. The caller then executes the new init.
pub fn switch_root(new_root: &str) -> Result<()> {
    if !root_is_initramfs() {
        bail!("/ is not an initramfs, refusing to switch root");
    }
    for dir in ["/dev", "/proc", "/sys"] {
        let target = format!("{new_root}{dir}");
        mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .context(format!("move {dir} to {target}"))?;
    }
    let root_dev = fs::symlink_metadata("/").context("stat /")?.dev();
    nix::unistd::chdir(new_root).context(format!("chdir {new_root}"))?;
    delete_tree(Path::new("/"), root_dev);
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("move new root to /")?;
    nix::unistd::chroot(".").context("chroot")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

/// Decodes the octal escapes (`\040` for a space) of `/proc/self/mounts` fields.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `top`, deepest (most recently mounted) first.
pub fn mounts_below(mounts: &str, top: &str) -> Vec<String> {
    let prefix = format!("{}/", top.trim_end_matches('/'));
    let mut out: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape)
        .filter(|m| m == top || m.starts_with(&prefix))
        .collect();
    out.reverse();
    out
}

/// Unmounts everything at or below `top`; a busy mount is remounted read-only instead.
pub fn unmount_tree(top: &str) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for target in mounts_below(&mounts, top) {
        if umount2(target.as_str(), MntFlags::empty()).is_ok() {
            continue;
        }
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            ro,
            None::<&str>,
        ) {
            warn!("cannot unmount or remount read-only {target}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_deepest_first() {
        let mounts = "/dev/vda4 /var ext4 rw 0 0\nproc /proc proc rw 0 0\n\
                      overlay /var/lib/cairn/x overlay rw 0 0\n/dev/vda1 /boot vfat ro 0 0\n\
                      tmpfs /variable tmpfs rw 0 0\ntmpfs /var/a\\040b tmpfs rw 0 0\n";
        assert_eq!(
            mounts_below(mounts, "/var"),
            ["/var/a b", "/var/lib/cairn/x", "/var"]
        );
        assert_eq!(mounts_below(mounts, "/boot"), ["/boot"]);
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mountpoint("/"));
        assert!(!is_mountpoint("/nonexistent/path"));
    }
}
