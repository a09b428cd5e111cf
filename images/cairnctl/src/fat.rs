//! FAT32 boot/seed partition images, made without root: `mkfs.vfat --invariant` and mtools,
//! with SOURCE_DATE_EPOCH for the timestamps and entries added in sorted order, so the same
//! tree gives the same bytes.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::tools;

/// Makes a FAT32 image of `size_mib` at `img` holding the tree at `tree`.
pub fn make(
    img: &Path,
    size_mib: u64,
    label: &str,
    volume_id: u32,
    tree: &Path,
    epoch: u64,
) -> Result<()> {
    if img.exists() {
        std::fs::remove_file(img)?;
    }
    tools::run(
        Command::new("mkfs.vfat")
            .args(["-C", "-F", "32", "--invariant", "-n", label, "-i"])
            .arg(format!("{volume_id:08X}"))
            .arg(img)
            .arg((size_mib * 1024).to_string()),
    )?;
    let target = |p: &Path| format!("::/{}", p.strip_prefix(tree).unwrap().display());
    for path in crate::rootfs::walk(tree)? {
        if path.is_dir() {
            mtools("mmd", img, 0, epoch)
                .arg(target(&path))
                .output_checked()?;
        } else {
            mtools("mcopy", img, 0, epoch)
                .arg(&path)
                .arg(target(&path))
                .output_checked()?;
        }
    }
    Ok(())
}

/// An mtools command on the FAT filesystem at byte `offset` of `img`.
pub fn mtools(tool: &str, img: &Path, offset: u64, epoch: u64) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    let spec = if offset == 0 {
        img.display().to_string()
    } else {
        format!("{}@@{offset}", img.display())
    };
    c.arg("-i").arg(spec);
    if tool == "mcopy" {
        c.args(["-o", "-m"]);
    }
    c
}

pub trait OutputChecked {
    fn output_checked(&mut self) -> Result<std::process::Output>;
}

impl OutputChecked for Command {
    fn output_checked(&mut self) -> Result<std::process::Output> {
        tools::run(self)
    }
}
