//! The initramfs: a newc cpio archive (sorted, fixed timestamps and owners) holding
//! cairn-init as `/init`, the board's modules and a `/dev/console` node, compressed with
//! zstd (the Debian kernels have CONFIG_RD_ZSTD).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use cpio::newc::{Builder, ModeFileType};

/// Packs the tree at `root` (plus a `/dev/console` character device) into a compressed cpio.
pub fn pack(root: &Path, mtime: u32) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Builder, Vec<u8>)> = Vec::new();
    let mut ino = 1;
    let mut next_ino = || {
        ino += 1;
        ino
    };
    for path in crate::rootfs::walk(root)? {
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = path.symlink_metadata()?;
        let b = Builder::new(&rel)
            .ino(next_ino())
            .uid(0)
            .gid(0)
            .mtime(mtime)
            .nlink(1);
        use std::os::unix::fs::PermissionsExt;
        let perm = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?
                .to_string_lossy()
                .into_owned()
                .into_bytes();
            entries.push((
                rel,
                b.mode(0o777).set_mode_file_type(ModeFileType::Symlink),
                target,
            ));
        } else if meta.is_dir() {
            entries.push((
                rel,
                b.mode(perm)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                Vec::new(),
            ));
        } else {
            entries.push((
                rel,
                b.mode(perm).set_mode_file_type(ModeFileType::Regular),
                std::fs::read(&path)?,
            ));
        }
    }
    // The kernel opens /dev/console for init before any devtmpfs exists.
    let dev_exists = entries.iter().any(|(n, _, _)| n == "dev");
    if !dev_exists {
        let b = Builder::new("dev")
            .ino(next_ino())
            .mtime(mtime)
            .nlink(2)
            .mode(0o755);
        entries.push((
            "dev".into(),
            b.set_mode_file_type(ModeFileType::Directory),
            Vec::new(),
        ));
    }
    let console = Builder::new("dev/console")
        .ino(next_ino())
        .mtime(mtime)
        .mode(0o600)
        .rdev_major(5)
        .rdev_minor(1);
    entries.push((
        "dev/console".into(),
        console.set_mode_file_type(ModeFileType::Char),
        Vec::new(),
    ));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let cpio = write(entries)?;
    let mut packed = zstd::bulk::compress(&cpio, 19)?;
    // Another archive may follow (the kernel unpacks concatenated ones); its header must
    // start 4-byte aligned, and zeros between archives are skipped.
    packed.resize(packed.len().next_multiple_of(4), 0);
    Ok(packed)
}

/// One member of an archive made from memory with [`archive`].
pub enum Member<'a> {
    Dir(&'a str),
    /// Path, permission bits, contents.
    File(&'a str, u32, &'a [u8]),
}

/// An uncompressed newc archive of `members` (in the given order: directories before what
/// they hold), owned by root, every time `mtime`. For data that is compressed already (a
/// squashfs) or tiny (a node config), appended to an initramfs.
pub fn archive(members: &[Member], mtime: u32) -> Result<Vec<u8>> {
    let entries = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (name, is_dir, mode, data) = match *m {
                Member::Dir(n) => (n, true, 0o755, &[][..]),
                Member::File(n, mode, data) => (n, false, mode, data),
            };
            let kind = if is_dir {
                ModeFileType::Directory
            } else {
                ModeFileType::Regular
            };
            let b = Builder::new(name)
                .ino(i as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(mtime)
                .nlink(if is_dir { 2 } else { 1 })
                .mode(mode)
                .set_mode_file_type(kind);
            (name.to_string(), b, data.to_vec())
        })
        .collect();
    write(entries)
}

fn write(entries: Vec<(String, Builder, Vec<u8>)>) -> Result<Vec<u8>> {
    let mut cpio = Vec::new();
    for (_, builder, data) in entries {
        let mut w = builder.write(&mut cpio, data.len() as u32);
        w.write_all(&data)?;
        w.finish()?;
    }
    cpio::newc::trailer(&mut cpio)?;
    Ok(cpio)
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_tree_packs_to_same_bytes_and_has_console() {
        let dir = std::env::temp_dir().join(format!("cairn-initramfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("init"), b"#!init").unwrap();
        std::fs::write(dir.join("etc/modules"), b"virtio_blk\n").unwrap();
        let a = super::pack(&dir, 1_700_000_000).unwrap();
        let b = super::pack(&dir, 1_700_000_000).unwrap();
        assert_eq!(a, b);
        let raw = zstd::decode_all(&a[..]).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("dev/console") && text.contains("TRAILER!!!") && text.contains("#!init")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn archive_members_in_order() {
        use super::Member;
        let a = super::archive(
            &[Member::Dir("boot"), Member::File("boot/x", 0o600, b"hello")],
            1,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&a);
        let (dir, file) = (text.find("boot\0").unwrap(), text.find("boot/x").unwrap());
        assert!(dir < file && text.contains("hello") && text.ends_with("\0"));
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
    }
}
