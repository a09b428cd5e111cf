//! Kernel modules: resolves the board's module list against the kernel package's
//! `modules.dep` (dependencies included, built-ins skipped) and copies them into a tree
//! with a filtered `modules.dep` that cairn-init reads on the device.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Module name as the kernel sees it: file stem with `-` folded to `_`.
pub fn canonical(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The end of a signed module (the kernel's `scripts/sign-file`): the module, its PKCS#7
/// signature, a 12-byte `struct module_signature` ending in the signature's length
/// (big-endian), then this marker.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// `module` without its appended signature; unchanged when it has none (or a compressed
/// module, whose signature is inside) or when the trailer does not add up.
///
/// The image carries its modules unsigned: the kernel would hash every module it loads and
/// check an RSA signature (~60 ms for qemu-x86_64's 18 boot modules under QEMU TCG), and that
/// check guards nothing here, since whoever can change a module on the device can change
/// `cairn-init` beside it (docs/decisions.md, Init: "Kernel modules go into the image
/// without their signatures").
pub fn without_signature(module: &[u8]) -> &[u8] {
    let Some(signed) = module.strip_suffix(SIGNATURE_MARKER) else {
        return module;
    };
    let Some(info_at) = signed.len().checked_sub(12) else {
        return module;
    };
    let len = u32::from_be_bytes(signed[signed.len() - 4..].try_into().expect("4 bytes"));
    match info_at.checked_sub(len as usize) {
        Some(end) => &module[..end],
        None => module,
    }
}

#[derive(Debug, Default)]
pub struct ModuleDb {
    /// canonical name -> (relative path, dependency paths)
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl ModuleDb {
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> ModuleDb {
        let mut db = ModuleDb::default();
        for line in modules_dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let deps = rest.split_whitespace().map(str::to_owned).collect();
            db.deps.insert(canonical(path), (path.to_string(), deps));
        }
        db.builtin = modules_builtin.lines().map(canonical).collect();
        db
    }

    pub fn load(moddir: &Path) -> Result<ModuleDb> {
        let dep = std::fs::read_to_string(moddir.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", moddir.display()))?;
        let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleDb::parse(&dep, &builtin))
    }

    /// Whether `name` is built into the kernel (nothing to load).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// Paths of the wanted modules and everything they depend on. Built-in modules are
    /// skipped; unknown ones are an error.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for w in wanted {
            let c = canonical(w);
            if self.builtin.contains(&c) {
                continue;
            }
            let Some((path, deps)) = self.deps.get(&c) else {
                bail!("kernel module `{w}` is neither in modules.dep nor built in");
            };
            out.insert(path.clone());
            out.extend(deps.iter().cloned());
        }
        Ok(out.into_iter().collect())
    }

    /// `modules.dep` restricted to `paths`.
    pub fn filtered_dep(&self, paths: &[String]) -> String {
        let set: BTreeSet<&String> = paths.iter().collect();
        let mut s = String::new();
        for (path, deps) in self.deps.values() {
            if set.contains(path) {
                s.push_str(path);
                s.push(':');
                for d in deps {
                    s.push(' ');
                    s.push_str(d);
                }
                s.push('\n');
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &[u8], signature: &[u8]) -> Vec<u8> {
        let mut m = body.to_vec();
        m.extend_from_slice(signature);
        // algo, hash, id_type, signer_len, key_id_len, 3 bytes of padding, sig_len.
        m.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&(signature.len() as u32).to_be_bytes());
        m.extend_from_slice(SIGNATURE_MARKER);
        m
    }

    #[test]
    fn appended_signatures_are_cut_off() {
        let body = b"\x7fELF module body";
        assert_eq!(without_signature(&signed(body, b"PKCS#7 bytes")), body);
        assert_eq!(without_signature(&signed(body, b"")), body);
        // Unsigned (or compressed) modules are left as they are.
        assert_eq!(without_signature(body), body);
        // A trailer that claims more signature than there is: left alone.
        let mut bad = signed(body, b"sig");
        let at = bad.len() - SIGNATURE_MARKER.len() - 4;
        bad[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(without_signature(&bad), &bad[..]);
        assert_eq!(without_signature(SIGNATURE_MARKER), SIGNATURE_MARKER);
    }

    const DEP: &str =
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n\
kernel/drivers/block/virtio_blk.ko:\nkernel/drivers/input/keyboard/gpio_keys.ko:\n";

    #[test]
    fn closure_adds_dependencies_and_skips_builtins() {
        let db = ModuleDb::parse(DEP, "kernel/fs/squashfs/squashfs.ko\n");
        let c = db
            .closure(&["ext4".into(), "squashfs".into(), "gpio-keys".into()])
            .unwrap();
        assert_eq!(c.len(), 5, "{c:?}");
        assert!(c.contains(&"kernel/fs/jbd2/jbd2.ko".to_string()));
        let dep = db.filtered_dep(&c);
        assert!(dep.contains("ext4.ko: kernel/fs/jbd2/jbd2.ko"));
        assert!(!dep.contains("virtio_blk"));
    }

    #[test]
    fn unknown_module_is_an_error() {
        let db = ModuleDb::parse(DEP, "");
        assert!(db
            .closure(&["nonesuch".into()])
            .unwrap_err()
            .to_string()
            .contains("nonesuch"));
    }
}
