//! Cluster secrets on the host: `cairnctl gen secrets`, `cairnctl secrets install` and
//! `cairnctl kubeconfig` (the format and the node side live in the `cairn` crate's `seed`).

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::fat::{mtools, OutputChecked};

/// Where `install` puts the files on the seed partition (`/boot/cairn/secrets` on the node).
pub const SEED_DIR: &str = "::/cairn/secrets";

/// Makes a new set of cluster secrets in `dir`.
pub fn generate(dir: &Path) -> Result<()> {
    cairn::seed::generate(dir, SystemTime::now())?;
    Ok(())
}

/// The secrets in `dir`, generating them first when the directory has none.
pub fn ensure(dir: &Path) -> Result<cairn::pki::Pki> {
    if !dir.join("ca.key").exists() {
        generate(dir).with_context(|| format!("generating secrets in {}", dir.display()))?;
    }
    Ok(cairn::seed::load(dir)?)
}

/// Copies the seed files of `dir` into `img`'s boot/seed partition.
pub fn install(img: &Path, dir: &Path) -> Result<()> {
    let (offset, _) = crate::disk::find_partition(img, "cairn-boot")?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for d in ["::/cairn", SEED_DIR] {
        // Fails harmlessly when the directory exists.
        let _ = mtools("mmd", img, offset, epoch).arg(d).output();
    }
    for name in cairn::seed::SEED_FILES {
        let src = dir.join(name);
        if !src.is_file() {
            anyhow::bail!(
                "{} is missing: make secrets with `cairnctl gen secrets`",
                src.display()
            );
        }
        mtools("mcopy", img, offset, epoch)
            .arg(&src)
            .arg(format!("{SEED_DIR}/{name}"))
            .output_checked()
            .with_context(|| format!("writing {SEED_DIR}/{name} into {}", img.display()))?;
    }
    crate::config::stamp_clock(img, offset, epoch)
}

/// Writes an admin kubeconfig for `server` (`https://HOST:PORT`) from loaded secrets.
pub fn write_kubeconfig(pki: &cairn::pki::Pki, server: &str, out: &Path) -> Result<()> {
    let text = cairn::kubeconfig::render(server, pki);
    cairn::pki::write_atomic(out, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", out.display()))
}
