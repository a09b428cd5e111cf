//! The raw ioctls init needs that nix does not wrap. All of the crate's `unsafe` lives here.
//! Structures are `#[repr(C)]` copies of the kernel UAPI ones (or libc's), so they have the
//! right size and alignment on 32-bit, 64-bit and big-endian targets alike.

use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::libc::{self, c_char, c_int, c_void};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::{bail, Context, Result};

/// A command for a helper program: empty environment but `PATH`, stdin from /dev/null, and
/// no blocked signals. PID 1 blocks the signals it reads from its signalfd and
/// `std::process::Command` passes the mask on to the child, where a blocked SIGTERM would
/// make `cairn` ignore the shutdown.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .stdin(Stdio::null());
    // SAFETY: the hook runs in the child between fork and exec; it only calls sigprocmask,
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// `struct blkpg_partition` from `<linux/blkpg.h>`; start and length in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: c_int,
    devname: [c_char; 64],
    volname: [c_char; 64],
}

/// `struct blkpg_ioctl_arg` from `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: c_int,
    flags: c_int,
    datalen: c_int,
    data: *mut c_void,
}

const BLKPG_RESIZE_PARTITION: c_int = 3;

nix::ioctl_write_ptr_bad!(
    blkpg_ioctl,
    nix::request_code_none!(0x12, 105),
    BlkpgIoctlArg
);
nix::ioctl_write_ptr!(ext4_ioc_resize_fs, b'f', 16, u64);
nix::ioctl_write_ptr_bad!(siocsifaddr, libc::SIOCSIFADDR, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifnetmask, libc::SIOCSIFNETMASK, libc::ifreq);
nix::ioctl_readwrite_bad!(siocgifflags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifflags, libc::SIOCSIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocaddrt, libc::SIOCADDRT, libc::rtentry);
// <linux/loop.h>: LOOP_CTL_GET_FREE on /dev/loop-control, LOOP_SET_FD on /dev/loopN.
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);

/// Backs a free loop device with `file` and returns the device's path. The file is opened
/// read-only, so the kernel makes the device read-only too.
pub fn loop_attach(file: &File) -> Result<String> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("open /dev/loop-control (is the loop module loaded?)")?;
    // SAFETY: an argument-less ioctl on an open fd.
    let n = unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }.context("LOOP_CTL_GET_FREE")?;
    let path = format!("/dev/loop{n}");
    let dev = File::open(&path).context(format!("open {path}"))?;
    // SAFETY: the argument is an fd that stays open for the duration of the call.
    unsafe { loop_set_fd(dev.as_raw_fd(), file.as_raw_fd()) }
        .context(format!("LOOP_SET_FD {path}"))?;
    Ok(path)
}

/// Tells the kernel partition `pno` of the disk open as `disk` now has `length` bytes.
pub fn blkpg_resize(disk: &File, pno: u32, start: u64, length: u64) -> Result<()> {
    let mut part = BlkpgPartition {
        start: i64::try_from(start).context("partition start")?,
        length: i64::try_from(length).context("partition length")?,
        pno: c_int::try_from(pno).context("partition number")?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the `part` it points to are valid, initialised and outlive the call;
    // the kernel only reads them.
    unsafe { blkpg_ioctl(disk.as_raw_fd(), &arg) }.context("BLKPG_RESIZE_PARTITION")?;
    Ok(())
}

/// Grows the mounted ext4 filesystem whose directory is open as `dir` to `blocks` blocks.
pub fn ext4_resize(dir: &File, blocks: u64) -> Result<()> {
    // SAFETY: the kernel reads one u64 from a valid pointer to a live local.
    unsafe { ext4_ioc_resize_fs(dir.as_raw_fd(), &blocks) }.context("EXT4_IOC_RESIZE_FS")?;
    Ok(())
}

/// A `struct sockaddr` holding an IPv4 address (the `sockaddr_in` layout: family, port 0,
/// address in network order), built byte by byte so no cast between structs is needed.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as c_char; 14];
    for (d, o) in data[2..6].iter_mut().zip(addr.octets()) {
        *d = o as c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

/// An `ifreq` for `name` with everything else zero.
fn ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        bail!("bad interface name {name:?}");
    }
    // SAFETY: ifreq is plain data (integers, arrays, a raw pointer): all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as c_char;
    }
    Ok(req)
}

fn inet_socket() -> Result<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket")
}

/// Sets the IPv4 address and netmask of `iface` (replacing its primary address).
pub fn set_ipv4(iface: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    // SAFETY: `req` is a valid ifreq for the duration of the call; the kernel reads it.
    unsafe { siocsifaddr(sock.as_raw_fd(), &req) }.context(format!("set address of {iface}"))?;
    req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
    // SAFETY: as above.
    unsafe { siocsifnetmask(sock.as_raw_fd(), &req) }.context(format!("set netmask of {iface}"))?;
    Ok(())
}

/// Sets `IFF_UP` on `iface`.
pub fn link_up(iface: &str) -> Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(iface)?;
    // SAFETY: `req` is a valid ifreq; the kernel fills in the flags member.
    unsafe { siocgifflags(sock.as_raw_fd(), &mut req) }.context(format!("get flags of {iface}"))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: `req` is a valid ifreq for the duration of the call.
    unsafe { siocsifflags(sock.as_raw_fd(), &req) }.context(format!("bring up {iface}"))?;
    Ok(())
}

/// Adds the default route via `gateway` on `iface`. An existing one is left alone.
pub fn add_default_route(iface: &str, gateway: Ipv4Addr) -> Result<()> {
    let sock = inet_socket()?;
    let dev = CString::new(iface).context("interface name")?;
    // SAFETY: rtentry is plain data (integers, sockaddrs, raw pointers): all-zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_v4(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_v4(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_ptr().cast_mut();
    // SAFETY: `rt` and the `dev` string it points to are valid for the call; the kernel
    // only reads them.
    match unsafe { siocaddrt(sock.as_raw_fd(), &rt) } {
        Ok(_) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).context(format!("add default route via {gateway}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // the request type is c_ulong: 32-bit on armv7
    fn uapi_sizes() {
        // Kernel: 8 + 8 + 4 + 64 + 64, padded to 8 (also on 32-bit ARM EABI and s390x).
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<libc::sockaddr>(), 16);
        assert_eq!(nix::request_code_none!(0x12, 105) as u64, 0x1269);
        assert_eq!(nix::request_code_write!(b'f', 16, 8) as u64, 0x4008_6610);
    }

    /// The regression that made cairn ignore SIGTERM: children must not inherit PID 1's mask.
    #[test]
    fn commands_start_with_no_blocked_signals() {
        let mut set = SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        set.add(nix::sys::signal::Signal::SIGCHLD);
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .unwrap();
        let out = command("/bin/grep")
            .args(["SigBlk", "/proc/self/status"])
            .output();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
        let out = String::from_utf8(out.unwrap().stdout).unwrap();
        assert_eq!(out.trim(), "SigBlk:\t0000000000000000");
    }

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_v4(Ipv4Addr::new(10, 0, 2, 15));
        let bytes: Vec<u8> = sa.sa_data.iter().map(|c| *c as u8).collect();
        assert_eq!(&bytes[..6], [0, 0, 10, 0, 2, 15]);
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("a-name-that-is-too-long").is_err());
    }
}
