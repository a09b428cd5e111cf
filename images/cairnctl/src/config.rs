//! `cairnctl config set|get`: the node config on an image's boot/seed partition, read and
//! written with mtools at the partition's offset (no root, no loop device).

use std::path::Path;

use anyhow::{Context, Result};

use crate::fat::{mtools, OutputChecked};

pub const SEED_PATH: &str = "::/cairn/node.yaml";
/// When the seed was last written here (seconds since 1970, UTC): a node without a
/// real-time clock starts no earlier (cairn-init's clock.rs), so the certificates made on
/// this computer are valid there.
pub const CLOCK_PATH: &str = "::/cairn/clock";

/// Writes [`CLOCK_PATH`] on the FAT partition at `offset` of `img`: the time now.
pub fn stamp_clock(img: &Path, offset: u64, now: u64) -> Result<()> {
    let tmp = tempfile_with(&format!("{now}\n"))?;
    let done = mtools("mcopy", img, offset, now)
        .arg(&tmp)
        .arg(CLOCK_PATH)
        .output_checked()
        .with_context(|| format!("writing {CLOCK_PATH} into {}", img.display()));
    let _ = std::fs::remove_file(tmp);
    done.map(drop)
}

/// Validates `yaml` (the file's text; `name` for errors) and writes it into `img`.
pub fn set(img: &Path, yaml: &str, name: &str) -> Result<()> {
    cairn_config::NodeConfig::parse(yaml, name)?;
    let (offset, _) = crate::disk::find_partition(img, "cairn-boot")?;
    let tmp = tempfile_with(yaml)?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let _ = mtools("mmd", img, offset, epoch).arg("::/cairn").output();
    mtools("mcopy", img, offset, epoch)
        .arg(&tmp)
        .arg(SEED_PATH)
        .output_checked()
        .with_context(|| format!("writing {SEED_PATH} into {}", img.display()))?;
    let _ = std::fs::remove_file(tmp);
    stamp_clock(img, offset, epoch)
}

/// The node config currently in `img`.
pub fn get(img: &Path) -> Result<String> {
    let (offset, _) = crate::disk::find_partition(img, "cairn-boot")?;
    let out = mtools("mtype", img, offset, 0)
        .arg(SEED_PATH)
        .output_checked()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tempfile_with(text: &str) -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!(
        "cairn-node-{}-{}.yaml",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&p, text)?;
    Ok(p)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
