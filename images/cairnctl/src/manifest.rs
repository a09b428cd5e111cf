//! `manifest.json`: what an image is made of (versions, sizes, sha256 of every artefact).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Serialize)]
pub struct Artefact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Artefact {
    pub fn of(path: &Path) -> Result<Artefact> {
        Ok(Artefact {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            size: std::fs::metadata(path)?.len(),
            sha256: sha256_file(path)?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Partition {
    pub label: String,
    pub start_bytes: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub board: String,
    pub arch: String,
    pub version: String,
    pub recipe: String,
    pub source_date_epoch: u64,
    pub kernel: KernelInfo,
    pub binaries: Vec<Artefact>,
    pub packages: Vec<crate::debs::Deb>,
    pub partitions: Vec<Partition>,
    pub artefacts: Vec<Artefact>,
}

#[derive(Debug, Serialize)]
pub struct KernelInfo {
    pub package: String,
    pub version: String,
    pub release: String,
    pub modules: Vec<String>,
}
