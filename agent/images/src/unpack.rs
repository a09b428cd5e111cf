//! Unpacking one layer tar into a directory in overlayfs format.
//!
//! Whiteouts become what overlayfs reads: `.wh.NAME` a character device 0:0 named `NAME`,
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory. Modes, owners,
//! times, xattrs (PAX `SCHILY.xattr.*`), symlinks, hard links and device nodes are kept.
//!
//! The directory is private to the unpacker (a fresh temporary directory), so checking
//! every parent with `lstat` before use is enough to never follow a symlink: nothing else
//! changes the tree between the check and the use. Paths with `..` are refused, absolute
//! paths are taken relative to the layer, and a path through a symlink of the layer (or a
//! hard link to one) is refused rather than followed.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::Error;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR: &str = "SCHILY.xattr.";

/// Why unpacking stopped.
#[derive(Debug)]
pub enum UnpackError {
    /// The input is unreadable or not a valid layer (a truncated stream, a bad tar, a
    /// path escaping the layer): the caller names the source.
    Input(String),
    /// Writing the layer failed.
    Output(Error),
}

/// What was unpacked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unpacked {
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Entries written (whiteouts included).
    pub entries: u64,
}

type Result<T> = std::result::Result<T, UnpackError>;

fn input(what: impl std::fmt::Display) -> UnpackError {
    UnpackError::Input(what.to_string())
}

fn output(path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Output(Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn nix_output(path: &Path, errno: nix::errno::Errno) -> UnpackError {
    output(path, io::Error::from(errno))
}

/// Unpacks the tar stream `tar` into `root`, an existing empty directory.
pub fn unpack(tar: impl Read, root: &Path) -> Result<Unpacked> {
    let mut u = Unpacker {
        root: root.to_owned(),
        dirs: HashSet::new(),
        dir_times: Vec::new(),
        stats: Unpacked::default(),
    };
    u.dirs.insert(PathBuf::new());
    let mut archive = tar::Archive::new(tar);
    for entry in archive
        .entries()
        .map_err(|e| input(format!("reading the tar: {e}")))?
    {
        let entry = entry.map_err(|e| input(format!("reading the tar: {e}")))?;
        u.entry(entry)?;
    }
    // Directory times last: creating entries inside a directory changes its mtime.
    u.dir_times
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, mtime) in std::mem::take(&mut u.dir_times) {
        let path = u.root.join(&rel);
        set_times(&path, mtime)?;
    }
    Ok(u.stats)
}

struct Unpacker {
    root: PathBuf,
    /// Relative paths known to be real directories of the layer.
    dirs: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, TimeSpec)>,
    stats: Unpacked,
}

/// Owner, mode, time and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| input(format!("an entry's path: {e}")))?
            .into_owned();
        let rel = clean(&raw)?;
        let kind = entry.header().entry_type();
        let meta = meta(&mut entry)?;
        let name = rel.file_name().map(OsStr::as_bytes).unwrap_or_default();

        if name == OPAQUE {
            let dir = rel.parent().unwrap_or(Path::new("")).to_owned();
            self.ensure_dir(&dir)?;
            let path = self.root.join(&dir);
            set_xattr(&path, OPAQUE_XATTR, b"y").map_err(|e| output(&path, e))?;
            self.stats.entries += 1;
            return Ok(());
        }
        if name.starts_with(META_PREFIX) {
            // Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not part of the tree.
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() {
                return Err(input(format!("{}: whiteout without a name", raw.display())));
            }
            let target = rel.with_file_name(OsStr::from_bytes(hidden));
            self.ensure_parents(&target)?;
            self.clear(&target, false)?;
            let path = self.root.join(&target);
            mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| nix_output(&path, e))?;
            self.finish(
                &path,
                &Meta {
                    mode: 0,
                    xattrs: Vec::new(),
                    ..meta
                },
                false,
            )?;
            self.stats.entries += 1;
            return Ok(());
        }

        if rel.as_os_str().is_empty() {
            // `./`: the layer's root directory.
            if kind == tar::EntryType::Directory {
                let path = self.root.clone();
                self.finish(&path, &meta, true)?;
                self.dir_times.push((rel, meta.mtime));
            }
            return Ok(());
        }

        self.ensure_parents(&rel)?;
        let path = self.root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                self.clear(&rel, true)?;
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(output(&path, e)),
                }
                self.dirs.insert(rel.clone());
                self.finish(&path, &meta, true)?;
                self.dir_times.push((rel, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&rel, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| output(&path, e))?;
                let mut buf = vec![0u8; 128 * 1024];
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(input(format!("{}: {e}", raw.display()))),
                    };
                    file.write_all(&buf[..n]).map_err(|e| output(&path, e))?;
                    self.stats.bytes += n as u64;
                }
                std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                    .map_err(|e| output(&path, e))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| output(&path, e))?;
                for (name, value) in &meta.xattrs {
                    set_xattr(&path, name, value).map_err(|e| output(&path, e))?;
                }
                set_file_times(&file, &path, meta.mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| input(format!("{}: link target: {e}", raw.display())))?
                    .ok_or_else(|| input(format!("{}: symlink without a target", raw.display())))?
                    .into_owned();
                self.clear(&rel, false)?;
                // The target is stored as written and never followed here.
                std::os::unix::fs::symlink(&target, &path).map_err(|e| output(&path, e))?;
                self.finish(&path, &meta, false)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| input(format!("{}: link target: {e}", raw.display())))?
                    .ok_or_else(|| {
                        input(format!("{}: hard link without a target", raw.display()))
                    })?;
                let target_rel = clean(&target)?;
                if target_rel == rel {
                    return Ok(());
                }
                self.check_parents(&target_rel)?;
                let target_path = self.root.join(&target_rel);
                match fs::symlink_metadata(&target_path) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(input(format!(
                            "{}: hard link to {}, which is not an earlier file of the layer",
                            raw.display(),
                            target.display()
                        )))
                    }
                }
                self.clear(&rel, false)?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(&target_path, &path).map_err(|e| output(&path, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&rel, false)?;
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                mknod(&path, flag, Mode::empty(), dev).map_err(|e| nix_output(&path, e))?;
                self.finish(&path, &meta, true)?;
            }
            // Global PAX headers and anything unknown carry no file.
            _ => return Ok(()),
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), xattrs (chown clears file
    /// capabilities), then times; `chmod` is skipped for symlinks.
    fn finish(&self, path: &Path, meta: &Meta, chmod: bool) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(|e| output(path, e))?;
        if chmod {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
                .map_err(|e| output(path, e))?;
        }
        for (name, value) in &meta.xattrs {
            set_xattr(path, name, value).map_err(|e| output(path, e))?;
        }
        if !fs::symlink_metadata(path)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            set_times(path, meta.mtime)?;
        }
        Ok(())
    }

    /// Makes every parent of `rel` a real directory of the layer (creating missing ones).
    fn ensure_parents(&mut self, rel: &Path) -> Result<()> {
        match rel.parent() {
            Some(parent) => self.ensure_dir(parent),
            None => Ok(()),
        }
    }

    /// Makes `rel` and its parents real directories (creating missing ones, refusing
    /// symlinks and files on the way).
    fn ensure_dir(&mut self, rel: &Path) -> Result<()> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            if self.dirs.contains(&prefix) {
                continue;
            }
            let path = self.root.join(&prefix);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(input(format!(
                        "{} goes through {}, which is not a directory in the layer",
                        rel.display(),
                        prefix.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(|e| output(&path, e))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(|e| output(&path, e))?;
                }
                Err(e) => return Err(output(&path, e)),
            }
            self.dirs.insert(prefix.clone());
        }
        Ok(())
    }

    /// Checks (without creating) that every parent of `rel` is a real directory.
    fn check_parents(&self, rel: &Path) -> Result<()> {
        let mut prefix = PathBuf::new();
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            prefix.push(c);
            if self.dirs.contains(&prefix) {
                continue;
            }
            let is_dir = fs::symlink_metadata(self.root.join(&prefix)).is_ok_and(|m| m.is_dir());
            if !is_dir {
                return Err(input(format!(
                    "{} goes through {}, which is not a directory in the layer",
                    rel.display(),
                    prefix.display()
                )));
            }
        }
        Ok(())
    }

    /// Removes what is at `rel` before a new entry takes its place; an existing directory
    /// stays when the new entry is a directory too (its contents merge).
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<()> {
        let path = self.root.join(rel);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(output(&path, e)),
            Ok(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(());
                }
                fs::remove_dir_all(&path).map_err(|e| output(&path, e))?;
                self.dirs.retain(|d| !d.starts_with(rel));
                self.dir_times.retain(|(d, _)| !d.starts_with(rel));
                Ok(())
            }
            Ok(_) => fs::remove_file(&path).map_err(|e| output(&path, e)),
        }
    }
}

/// The path of an entry relative to the layer root: `./` and a leading `/` dropped, `..`
/// refused.
fn clean(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(input(format!(
                    "{}: path with '..' escapes the layer",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let header = entry.header();
    let bad = |what: &str, e: io::Error| input(format!("an entry's {what}: {e}"));
    let mut uid = header.uid().map_err(|e| bad("uid", e))?;
    let mut gid = header.gid().map_err(|e| bad("gid", e))?;
    let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let mut mtime = timespec(header.mtime().map_err(|e| bad("mtime", e))? as i64, 0);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
        for ext in pax {
            let ext = ext.map_err(|e| bad("PAX header", e))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                "uid" => {
                    uid = text
                        .parse()
                        .map_err(|_| input(format!("bad PAX uid {text:?}")))?
                }
                "gid" => {
                    gid = text
                        .parse()
                        .map_err(|_| input(format!("bad PAX gid {text:?}")))?
                }
                "mtime" => {
                    if let Some(t) = parse_pax_time(text) {
                        mtime = t;
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR) {
                        xattrs.push((name.to_owned(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(Meta {
        uid: u32::try_from(uid).map_err(|_| input(format!("uid {uid} out of range")))?,
        gid: u32::try_from(gid).map_err(|_| input(format!("gid {gid} out of range")))?,
        mode,
        mtime,
        xattrs,
    })
}

/// A PAX time: seconds with an optional fraction (`1700000000.123456789`).
fn parse_pax_time(s: &str) -> Option<TimeSpec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    if secs < 0 && nanos > 0 {
        return Some(timespec(secs - 1, 1_000_000_000 - nanos));
    }
    Some(timespec(secs, nanos))
}

/// A `TimeSpec` on every target: 32-bit `time_t` (armv7) saturates instead of wrapping.
fn timespec(secs: i64, nanos: i64) -> TimeSpec {
    let secs = libc::time_t::try_from(secs).unwrap_or(if secs < 0 {
        libc::time_t::MIN
    } else {
        libc::time_t::MAX
    });
    TimeSpec::new(secs, nanos as _)
}

fn set_times(path: &Path, mtime: TimeSpec) -> Result<()> {
    utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| nix_output(path, e))
}

fn set_file_times(file: &File, path: &Path, mtime: TimeSpec) -> Result<()> {
    nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(file), &mtime, &mtime)
        .map_err(|e| nix_output(path, e))
}

/// `lsetxattr`: sets an extended attribute without following a symlink.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the value pointer and
    // length describe a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
/// `lgetxattr`: an extended attribute's value, `None` when the file has none by that name.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings; the buffer pointer and length describe a live vector.
    let rc = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// Disk space used by a tree (allocated blocks, each inode once), not following symlinks.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(m) = fs::symlink_metadata(path) else {
            return 0;
        };
        let mut total = if seen.insert((m.dev(), m.ino())) {
            m.blocks() * 512
        } else {
            0
        };
        if m.is_dir() {
            if let Ok(entries) = fs::read_dir(path) {
                for e in entries.flatten() {
                    total += walk(&e.path(), seen);
                }
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("cairn-unpack-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    /// Appends with a raw name (no sanitising by the builder), for hostile paths.
    fn raw_append(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = header(kind, 0o644, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn refuses_escapes_and_symlinked_parents() {
        assert!(
            is_root(),
            "these tests create device nodes and trusted.* xattrs: run them as root"
        );
        // `..` in a path.
        let mut b = tar::Builder::new(Vec::new());
        raw_append(&mut b, "a/../../evil", tar::EntryType::Regular, None, b"x");
        let dir = TempDir::new("dotdot");
        match unpack(&b.into_inner().unwrap()[..], &dir.0) {
            Err(UnpackError::Input(m)) => assert!(m.contains("escapes"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A symlink to outside, then a file through it: refused, nothing written outside.
        let outside = TempDir::new("outside");
        let mut b = tar::Builder::new(Vec::new());
        raw_append(
            &mut b,
            "link",
            tar::EntryType::Symlink,
            Some(outside.0.to_str().unwrap()),
            b"",
        );
        raw_append(&mut b, "link/pwned", tar::EntryType::Regular, None, b"x");
        let dir = TempDir::new("symparent");
        match unpack(&b.into_inner().unwrap()[..], &dir.0) {
            Err(UnpackError::Input(m)) => assert!(m.contains("not a directory"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!outside.0.join("pwned").exists());
        // A hard link to a file outside the layer (absolute target taken inside the layer).
        let secret = outside.0.join("secret");
        fs::write(&secret, b"s").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        raw_append(
            &mut b,
            "hl",
            tar::EntryType::Link,
            Some(secret.to_str().unwrap()),
            b"",
        );
        let dir = TempDir::new("hardlink");
        assert!(matches!(
            unpack(&b.into_inner().unwrap()[..], &dir.0),
            Err(UnpackError::Input(_))
        ));
        // A hard link through a symlink of the layer.
        let mut b = tar::Builder::new(Vec::new());
        raw_append(
            &mut b,
            "out",
            tar::EntryType::Symlink,
            Some(outside.0.to_str().unwrap()),
            b"",
        );
        raw_append(&mut b, "hl", tar::EntryType::Link, Some("out/secret"), b"");
        let dir = TempDir::new("hardlink2");
        assert!(matches!(
            unpack(&b.into_inner().unwrap()[..], &dir.0),
            Err(UnpackError::Input(_))
        ));
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    }

    #[test]
    fn keeps_metadata_links_devices_and_whiteouts() {
        assert!(
            is_root(),
            "these tests create device nodes and trusted.* xattrs: run them as root"
        );
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, 0o750, 0);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_500_000_000);
        b.append_data(&mut h, "./data/", io::empty()).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o4755, 5);
        h.set_uid(1000);
        b.append_data(&mut h, "./data/suid", &b"hello"[..]).unwrap();
        let mut h = header(tar::EntryType::Link, 0, 0);
        b.append_link(&mut h, "data/hard", "data/suid").unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "abs", "/etc/passwd").unwrap();
        let mut h = header(tar::EntryType::Char, 0o620, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        let mut h = header(tar::EntryType::Fifo, 0o600, 0);
        b.append_data(&mut h, "fifo", io::empty()).unwrap();
        let mut h = header(tar::EntryType::Regular, 0, 0);
        b.append_data(&mut h, "etc/.wh.gone", io::empty()).unwrap();
        b.append_data(&mut h, "opaque/.wh..wh..opq", io::empty())
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "opaque/kept", &b"k"[..]).unwrap();
        // A PAX xattr and a big uid.
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"v1"[..]),
            ("uid", &b"3000000"[..]),
        ])
        .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o600, 2);
        b.append_data(&mut h, "xattr", &b"xx"[..]).unwrap();
        let dir = TempDir::new("meta");
        let stats = unpack(&b.into_inner().unwrap()[..], &dir.0).unwrap();
        assert_eq!(stats.bytes, 5 + 1 + 2);
        let r = &dir.0;
        let m = fs::symlink_metadata(r.join("data")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 1000, 100));
        assert_eq!(
            m.mtime(),
            1_500_000_000,
            "directory time set after its children"
        );
        let m = fs::symlink_metadata(r.join("data/suid")).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.nlink()),
            (0o4755, 1000, 2),
            "set-uid kept after chown"
        );
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(
            m.ino(),
            fs::symlink_metadata(r.join("data/hard")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(r.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let m = fs::symlink_metadata(r.join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(
            (m.rdev(), m.mode() & 0o7777),
            (nix::sys::stat::makedev(1, 3), 0o620)
        );
        assert!(fs::symlink_metadata(r.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let m = fs::symlink_metadata(r.join("etc/gone")).unwrap();
        assert!(
            m.file_type().is_char_device() && m.rdev() == 0,
            "whiteout is a 0:0 char device"
        );
        assert!(!r.join("etc/.wh.gone").exists());
        assert_eq!(
            get_xattr(&r.join("opaque"), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!r.join("opaque/.wh..wh..opq").exists());
        assert_eq!(fs::read(r.join("opaque/kept")).unwrap(), b"k");
        assert_eq!(
            get_xattr(&r.join("xattr"), "user.note").unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(
            fs::symlink_metadata(r.join("xattr")).unwrap().uid(),
            3_000_000
        );
        assert_eq!(get_xattr(&r.join("data"), OPAQUE_XATTR).unwrap(), None);
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, "x/", io::empty()).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "x/y", &b"1"[..]).unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "x", "elsewhere").unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "f", &b"1"[..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "f", &b"2"[..]).unwrap();
        let dir = TempDir::new("replace");
        unpack(&b.into_inner().unwrap()[..], &dir.0).unwrap();
        assert_eq!(
            fs::read_link(dir.0.join("x")).unwrap(),
            Path::new("elsewhere")
        );
        assert_eq!(fs::read(dir.0.join("f")).unwrap(), b"2");
    }

    #[test]
    fn truncated_tar_is_an_input_error() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o644, 4000);
        b.append_data(&mut h, "big", &vec![7u8; 4000][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let dir = TempDir::new("trunc");
        match unpack(&bytes[..1500], &dir.0) {
            Err(UnpackError::Input(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12.5"), Some(TimeSpec::new(12, 500_000_000)));
        assert_eq!(parse_pax_time("12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
