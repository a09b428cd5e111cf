//! `cairnctl`, the host side of Cairn: builds images from a board config and a recipe,
//! writes node configs into built images, and boots images in QEMU.
//!
//! Design: each step of the build is a module with one job (`debs` fetches Debian packages,
//! `kmod` resolves modules, `rootfs` lays the tree, `initramfs` packs the cpio, `fat` and
//! `disk` make the partitions, `manifest` records the result); `build` strings them
//! together and reports progress. Outputs are byte-identical for identical inputs
//! (SOURCE_DATE_EPOCH, sorted entries, derived UUIDs, fixed owners).
//!
//! Network-booted boards (`pxe`) get no disk but the files a boot server serves (`pxe`,
//! `pxeserve`).
//!
//! Raspberry Pi boards get an MBR SD card (`raspi`, `cairn_slots::mbr`); every other
//! disk is GPT. The host must be Debian (apt-get download fetches the kernel and packages).

pub mod bench;
pub mod board;
pub mod build;
pub mod config;
pub mod debs;
pub mod disk;
pub mod fat;
pub mod flash;
pub mod initramfs;
pub mod kmod;
pub mod manifest;
pub mod oci;
pub mod podbench;
pub mod progress;
pub mod pxe;
pub mod pxeserve;
pub mod qemu;
pub mod raspi;
pub mod recipe;
pub mod rootfs;
pub mod secrets;
pub mod tools;
pub mod update;
pub mod updatebench;
pub mod upgrade;
pub mod yamlfile;

use std::path::{Path, PathBuf};

/// The checkout holding `board-configs/`: `$CAIRN_REPO`, else the nearest ancestor of the
/// current directory that has one.
pub fn repo_root() -> anyhow::Result<PathBuf> {
    if let Some(r) = std::env::var_os("CAIRN_REPO") {
        return Ok(PathBuf::from(r));
    }
    let cwd = std::env::current_dir()?;
    let mut dir: &Path = &cwd;
    loop {
        if dir.join("board-configs").is_dir() && dir.join("images").is_dir() {
            return Ok(dir.to_path_buf());
        }
        dir = dir.parent().ok_or_else(|| {
            anyhow::anyhow!(
                "no Cairn checkout (a directory with board-configs/) above {}; set CAIRN_REPO",
                cwd.display()
            )
        })?;
    }
}
