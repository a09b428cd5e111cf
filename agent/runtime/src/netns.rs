//! Pod network namespaces, kept alive by a bind mount of the namespace file (as `ip netns`
//! does) so that every container of the pod can join the same one.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Makes a new network namespace with its loopback up, pinned at `path`. Done on a thread of
/// its own: a namespace change is per thread, and that thread ends right after.
pub fn create(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let path = path.to_owned();
    std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        File::create(&path)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("pinning {}: {e}", path.display())))?;
        loopback_up()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Unpins and removes a namespace made by [`create`]; a missing one is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(io::Error::other(format!(
                "unmounting {}: {e}",
                path.display()
            )))
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is a pinned namespace (a mount point of the nsfs filesystem).
pub fn exists(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// `ip link set lo up` in the calling thread's namespace, with the classic interface ioctls.
fn loopback_up() -> io::Result<()> {
    use nix::libc;
    // SAFETY: a datagram socket only used for the two interface ioctls; `ifreq` is plain
    // old data, zeroed and then given the interface name, and the socket is closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(io::Error::other(format!("bringing up lo: {err}")));
        }
    }
    Ok(())
}
