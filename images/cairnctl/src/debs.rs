//! Debian packages for the board's architecture: downloaded with `apt-get download` into a
//! cache outside the checkout (never required: a miss downloads again) and unpacked with
//! `dpkg-deb -x`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::tools;

/// Where downloaded packages are kept: `$CAIRN_CACHE`, else `$XDG_CACHE_HOME/cairn`, else
/// `~/.cache/cairn`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("cairn")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub sha256: String,
}

/// Fetches `name:arch` at `version` (arch `all` for architecture-independent packages).
pub fn fetch(name: &str, arch: &str, version: &str) -> Result<Deb> {
    let dir = cache_dir().join("debs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let version = version.to_string();
    // Debian file names encode an epoch's colon as %3a.
    let file_version = version.replace(':', "%3a");
    let existing = find_cached(&dir, name, &file_version, arch);
    let path = match existing {
        Some(p) => p,
        None => {
            let spec = if arch == "all" {
                format!("{name}={version}")
            } else {
                format!("{name}:{arch}={version}")
            };
            tools::run(Command::new("apt-get").arg("download").arg("-q").arg(&spec).current_dir(&dir))
                .with_context(|| {
                    format!("downloading {spec}; is the pin still in the archive? `make deps` runs apt-get update")
                })?;
            find_cached(&dir, name, &file_version, arch).with_context(|| {
                format!("apt-get download {spec} left no .deb in {}", dir.display())
            })?
        }
    };
    let sha256 = crate::manifest::sha256_file(&path)?;
    Ok(Deb {
        name: name.into(),
        version,
        arch: arch.into(),
        path,
        sha256,
    })
}

fn find_cached(dir: &Path, name: &str, version: &str, arch: &str) -> Option<PathBuf> {
    // Architecture-independent packages are named _all.deb.
    [arch, "all"]
        .iter()
        .map(|a| dir.join(format!("{name}_{version}_{a}.deb")))
        .find(|p| p.is_file())
}

/// The versions apt would install for each `(name, arch)` (arch `all` for
/// architecture-independent packages), preferring bookworm main so every architecture gets
/// the same one. One `apt-cache` call for all of them (each call costs seconds).
pub fn candidates(wanted: &[(String, String)]) -> Result<Vec<String>> {
    let spec = |(n, a): &(String, String)| {
        if a == "all" {
            n.clone()
        } else {
            format!("{n}:{a}")
        }
    };
    let specs: Vec<String> = wanted.iter().map(spec).collect();
    let out = tools::run(Command::new("apt-cache").arg("madison").args(&specs))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // apt prints the native architecture's packages without the `:arch` suffix, so match
    // on the name and the architecture in the archive column.
    wanted
        .iter()
        .zip(&specs)
        .map(|((name, arch), want)| {
            let mut fallback = None;
            for line in text.lines() {
                let cols: Vec<&str> = line.split('|').map(str::trim).collect();
                if cols.len() < 3 || cols[0].split(':').next() != Some(name.as_str()) {
                    continue;
                }
                if arch != "all" && !cols[2].contains(&format!(" {arch} ")) {
                    continue;
                }
                if cols[2].contains(" bookworm/main") {
                    return Ok(cols[1].to_string());
                }
                fallback.get_or_insert_with(|| cols[1].to_string());
            }
            fallback.with_context(|| {
                format!("no Debian package {want} known to apt: run `make deps` (apt-get update)")
            })
        })
        .collect()
}

/// Unpacks a package into `dest` (created if needed).
pub fn extract(deb: &Deb, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    tools::run(Command::new("dpkg-deb").arg("-x").arg(&deb.path).arg(dest))?;
    Ok(())
}

/// Checks a package's control Version against the pin.
pub fn verify_version(deb: &Deb) -> Result<()> {
    let out = tools::run(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb.path)
            .arg("Version"),
    )?;
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if got != deb.version {
        bail!(
            "{} has version {got}, expected {}",
            deb.path.display(),
            deb.version
        );
    }
    Ok(())
}
