//! Host tools the builder runs, and which `make deps` step provides each.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// (tool, Debian package that `make deps` installs it from)
const TOOLS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("depmod", "kmod"),
    ("mksquashfs", "squashfs-tools"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("sfdisk", "fdisk"),
    ("bmaptool", "bmap-tools"),
    ("grub-mkimage", "grub-common"),
    ("qemu-system-x86_64", "qemu-system-x86 (bookworm-backports)"),
    (
        "qemu-system-aarch64",
        "qemu-system-arm (bookworm-backports)",
    ),
    ("qemu-system-arm", "qemu-system-arm (bookworm-backports)"),
    ("qemu-system-s390x", "qemu-system-misc (bookworm-backports)"),
];

/// Finds `tool` on PATH (or /usr/sbin, /sbin, where Debian keeps mkfs tools).
pub fn find(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for d in dirs {
        let p = d.join(tool);
        if p.is_file() {
            return Ok(p);
        }
    }
    let pkg = TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or("?", |(_, p)| p);
    bail!("host tool `{tool}` not found: run `make deps` (ci/install-deps.sh installs it from the Debian package {pkg})")
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let resolved = find(&prog)?;
    let shown = format!("{cmd:?}");
    let mut real = Command::new(resolved);
    real.args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap_or(std::path::Path::new(".")));
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => real.env(k, v),
            None => real.env_remove(k),
        };
    }
    let out = real.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_tool_names_make_deps_step() {
        let e = super::find("mcopy-that-does-not-exist")
            .unwrap_err()
            .to_string();
        assert!(e.contains("make deps"), "{e}");
    }
}
