//! Assembles the read-only root filesystem tree in a staging directory: merged /usr, the
//! device binaries, kernel modules, CA bundle, files from Debian packages (with the
//! libraries they link), and overlays. The tree is then packed by `squashfs.rs`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Maps a path from a (non merged-/usr) Debian package onto Cairn's merged-/usr root.
pub fn merged_usr(rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    for top in ["bin/", "sbin/", "lib/", "lib64/"] {
        if rel.starts_with(top) {
            return format!("usr/{rel}");
        }
    }
    rel.to_string()
}

/// Creates the skeleton: mount points, merged-/usr symlinks, /etc links into /run.
pub fn skeleton(root: &Path) -> Result<()> {
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "boot",
        "etc/cairn",
        "etc/ssl/certs",
    ] {
        mkdir(&root.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("etc/hostname", "/run/cairn/hostname"),
        ("etc/resolv.conf", "/run/cairn/resolv.conf"),
        // The admin kubeconfig where K3s users look for it (`/etc/rancher/k3s/k3s.yaml`
        // there): the read-only root points into the data partition, where a control-plane
        // node writes it at every start and certificate renewal. Dangles on workers.
        (
            "etc/cairn/cairn.yaml",
            "/var/lib/cairn/server/cred/admin.kubeconfig",
        ),
    ] {
        symlink(target, root.join(link)).with_context(|| format!("symlink {link}"))?;
    }
    Ok(())
}

pub fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Writes `bytes` at `root/rel` with a normalised mode (0755 or 0644).
pub fn write(root: &Path, rel: &str, bytes: &[u8], exec: bool) -> Result<()> {
    let dest = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        mkdir(parent)?;
    }
    if dest.symlink_metadata().is_ok() {
        fs::remove_file(&dest)?;
    }
    fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
    fs::set_permissions(
        &dest,
        fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
    )?;
    Ok(())
}

/// Copies a host file into the tree.
pub fn copy(root: &Path, rel: &str, src: &Path, exec: bool) -> Result<()> {
    let bytes = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    write(root, rel, &bytes, exec)
}

/// Copies an overlay directory into the tree (files keep only their exec bit; symlinks are
/// kept as links).
pub fn overlay(root: &Path, src: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in walk(src)? {
        let rel = entry
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = entry.symlink_metadata()?;
        let dest = root.join(&rel);
        if meta.file_type().is_symlink() {
            if dest.symlink_metadata().is_ok() {
                fs::remove_file(&dest)?;
            }
            symlink(fs::read_link(&entry)?, &dest)?;
        } else if meta.is_dir() {
            mkdir(&dest)?;
        } else {
            copy(root, &rel, &entry, meta.permissions().mode() & 0o111 != 0)?;
            n += 1;
        }
    }
    Ok(n)
}

/// All paths under `dir`, parents before children, sorted (deterministic).
pub fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        out.push(p.clone());
        if p.symlink_metadata()?.is_dir() {
            out.extend(walk(&p)?);
        }
    }
    Ok(out)
}

/// Installs `paths` (relative to the unpacked packages in `pkgroot`) and, transitively, the
/// shared libraries and ELF interpreter they need, as regular files. Returns what was
/// installed (paths in the root).
pub fn install_elf_closure(
    root: &Path,
    pkgroot: &Path,
    multiarch: &str,
    paths: &[String],
) -> Result<Vec<String>> {
    let mut installed = BTreeSet::new();
    let mut queue: Vec<String> = paths.to_vec();
    while let Some(rel) = queue.pop() {
        let src = pkgroot.join(rel.trim_start_matches('/'));
        let target = merged_usr(&rel);
        if !installed.insert(target.clone()) {
            continue;
        }
        let bytes = fs::read(&src)
            .with_context(|| format!("{rel} is not in the recipe's debian_packages"))?;
        write(root, &target, &bytes, true)?;
        if let Ok(elf) = goblin::elf::Elf::parse(&bytes) {
            if let Some(interp) = elf.interpreter {
                // Some ELF writers pad PT_INTERP with NULs (seen on s390x).
                queue.push(interp.trim_end_matches('\0').to_string());
            }
            for lib in elf.libraries {
                queue.push(find_lib(pkgroot, multiarch, lib)?);
            }
        }
    }
    Ok(installed.into_iter().collect())
}

fn find_lib(pkgroot: &Path, multiarch: &str, soname: &str) -> Result<String> {
    for dir in [
        format!("lib/{multiarch}"),
        format!("usr/lib/{multiarch}"),
        "lib".into(),
        "usr/lib".into(),
    ] {
        let rel = format!("{dir}/{soname}");
        if pkgroot.join(&rel).exists() {
            return Ok(rel);
        }
    }
    bail!("shared library {soname} not found in the recipe's debian_packages: add the package that ships it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_maps_top_level_dirs() {
        assert_eq!(merged_usr("sbin/mke2fs"), "usr/sbin/mke2fs");
        assert_eq!(
            merged_usr("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged_usr("usr/lib/x.so"), "usr/lib/x.so");
        assert_eq!(merged_usr("etc/x"), "etc/x");
        assert_eq!(merged_usr("library/x"), "library/x");
    }

    #[test]
    fn elf_closure_follows_needed_libraries() {
        // The host's own e2fsck links libext2fs etc.: build a fake package root from the host.
        let host = Path::new("/");
        let tmp = std::env::temp_dir().join(format!("cairn-closure-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let e2fsck = ["sbin/e2fsck", "usr/sbin/e2fsck"]
            .into_iter()
            .find(|p| host.join(p).is_file());
        let Some(e2fsck) = e2fsck else {
            panic!("e2fsck missing on host: run make deps")
        };
        let got =
            install_elf_closure(&tmp, host, "x86_64-linux-gnu", &[e2fsck.to_string()]).unwrap();
        assert!(got.iter().any(|p| p.ends_with("libext2fs.so.2")), "{got:?}");
        assert!(
            got.iter().any(|p| p.contains("ld-linux-x86-64.so.2")),
            "{got:?}"
        );
        assert!(got.iter().any(|p| p.ends_with("libc.so.6")), "{got:?}");
        let _ = fs::remove_dir_all(&tmp);
    }
}
