//! `manifest.json`: what an image is made of (versions, sizes, sha256 of every artefact).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Hex sha256 of a file (the node's own hashing, so both sides agree on what they read).
pub fn sha256_file(path: &Path) -> Result<String> {
    cairn::update::staging::sha256_file(path).with_context(|| format!("hashing {}", path.display()))
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
