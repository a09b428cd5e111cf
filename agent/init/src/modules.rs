//! Kernel modules: the names in `/etc/cairn/modules` are loaded with `finit_module` in
//! `modules.dep` order, dependencies first and each module once.
//!
//! The board's `pod_network_modules` (bridge, veth, nftables) are not in that list: they
//! ship in the root with their own list, `/etc/cairn/modules.pod-network`, and `cairn`'s
//! kubelet has them loaded (`cairn-init load-modules FILE`) just before it makes the pod
//! network, after the API is ready, instead of stage 1 loading them on the boot's path
//! (~0.3 s of qemu-x86_64's stage 1 under TCG).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, File};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

pub const LIST: &str = "/etc/cairn/modules";
/// `MODULE_INIT_COMPRESSED_FILE` (Linux 5.17): the kernel decompresses `.ko.xz/.zst/.gz`.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// The canonical module name: `-` and `_` are the same to the kernel.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk`.
pub fn name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.find(".ko").map_or(base, |i| &base[..i]);
    normalize(stem)
}

/// One wanted module from the list file: name plus optional parameters (`name a=1 b=2`).
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub params: String,
}

pub fn parse_list(text: &str) -> Vec<Wanted> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, params) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            Wanted {
                name: normalize(name),
                params: params.trim().to_string(),
            }
        })
        .collect()
}

/// Parsed `modules.dep`: for each module path, the paths it depends on.
#[derive(Debug, Default)]
pub struct DepMap {
    deps: HashMap<String, Vec<String>>,
    by_name: HashMap<String, String>,
}

impl DepMap {
    pub fn parse(text: &str) -> DepMap {
        let mut map = DepMap::default();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_string();
            map.by_name.insert(name_of(&path), path.clone());
            map.deps
                .insert(path, deps.split_whitespace().map(str::to_string).collect());
        }
        map
    }

    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name.get(&normalize(name)).map(String::as_str)
    }

    /// Adds `path` after its dependencies (depth first), skipping modules already in `seen`.
    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name_of(path)) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_string());
    }

    /// The module paths to load, in order, for `wanted` names; `loaded` names are skipped
    /// (with their dependencies, which must already be loaded). Names not in the map are
    /// returned second.
    pub fn load_order(
        &self,
        wanted: &[&str],
        loaded: &HashSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut seen: HashSet<String> = loaded.clone();
        let mut order = Vec::new();
        let mut missing = Vec::new();
        for name in wanted {
            match self.path_of(name) {
                Some(path) => self.visit(path, &mut seen, &mut order),
                None if !seen.contains(&normalize(name)) => missing.push(normalize(name)),
                None => {}
            }
        }
        (order, missing)
    }
}

/// Module names currently loaded, from `/proc/modules`.
fn loaded_modules() -> HashSet<String> {
    let text = fs::read_to_string("/proc/modules").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(normalize)
        .collect()
}

fn load_one(dir: &str, path: &str, params: &str) -> Result<(), String> {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    };
    let file = File::open(&full).map_err(|e| format!("{full}: {e}"))?;
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| path.ends_with(s));
    let flags = ModuleInitFlags::from_bits_retain(if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    });
    let params = CString::new(params).map_err(|_| "parameters contain NUL".to_string())?;
    match finit_module(&file, &params, flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("{full}: {e}")),
    }
}

/// Loads every module of the list file `list` (with its dependencies) that is not loaded
/// yet. Problems are warnings; the result says whether every listed module is now there.
pub fn load_listed(list: &str) -> bool {
    let Ok(text) = fs::read_to_string(list) else {
        return true;
    };
    let wanted = parse_list(&text);
    if wanted.is_empty() {
        return true;
    }
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned());
    let Ok(release) = release else {
        warn!("uname failed, modules not loaded");
        return false;
    };
    let dir = format!("/lib/modules/{release}");
    let dep = match fs::read_to_string(format!("{dir}/modules.dep")) {
        Ok(t) => DepMap::parse(&t),
        Err(e) => {
            warn!("{dir}/modules.dep: {e}; loading listed modules without dependencies");
            DepMap::default()
        }
    };
    let builtin: HashSet<String> = fs::read_to_string(format!("{dir}/modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(name_of)
        .collect();
    let mut skip = loaded_modules();
    skip.extend(builtin);
    let names: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let (order, missing) = dep.load_order(&names, &skip);
    let mut complete = missing.is_empty();
    for name in missing {
        warn!("module {name} not found in {dir}");
    }
    let mut done = Vec::new();
    for path in &order {
        let name = name_of(path);
        let params = wanted
            .iter()
            .find(|w| w.name == name)
            .map_or("", |w| w.params.as_str());
        match load_one(&dir, path, params) {
            Ok(()) => done.push(name),
            Err(e) => {
                complete = false;
                warn!("module {name}: {e}");
            }
        }
    }
    if !done.is_empty() {
        info!("modules loaded: {}", done.join(" "));
    }
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/fs/squashfs/squashfs.ko:
kernel/drivers/input/keyboard/gpio-keys.ko:
";

    fn names(paths: &[String]) -> Vec<String> {
        paths.iter().map(|p| name_of(p)).collect()
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            name_of("kernel/drivers/input/keyboard/gpio-keys.ko"),
            "gpio_keys"
        );
        assert_eq!(name_of("/abs/virtio_blk.ko.zst"), "virtio_blk");
        assert_eq!(name_of("plain"), "plain");
    }

    #[test]
    fn list_file() {
        let w = parse_list("# comment\nvirtio-blk\n\n  squashfs  # fs\nloop max_loop=8 x=1\n");
        assert_eq!(w.len(), 3);
        assert_eq!(
            w[0],
            Wanted {
                name: "virtio_blk".into(),
                params: "".into()
            }
        );
        assert_eq!(w[1].name, "squashfs");
        assert_eq!(
            w[2],
            Wanted {
                name: "loop".into(),
                params: "max_loop=8 x=1".into()
            }
        );
    }

    #[test]
    fn dependencies_first_each_once() {
        let dep = DepMap::parse(DEP);
        let (order, missing) = dep.load_order(
            &["virtio_blk", "virtio-net", "squashfs", "virtio_blk"],
            &HashSet::new(),
        );
        assert!(missing.is_empty());
        assert_eq!(
            names(&order),
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "squashfs"
            ]
        );
    }

    #[test]
    fn loaded_and_missing() {
        let dep = DepMap::parse(DEP);
        let loaded: HashSet<String> = [
            "virtio".to_string(),
            "virtio_ring".to_string(),
            "ext4".to_string(),
        ]
        .into();
        let (order, missing) =
            dep.load_order(&["virtio_blk", "nosuch", "ext4", "gpio_keys"], &loaded);
        assert_eq!(names(&order), ["virtio_blk", "gpio_keys"]);
        assert_eq!(order[1], "kernel/drivers/input/keyboard/gpio-keys.ko");
        assert_eq!(missing, ["nosuch"]);
    }

    #[test]
    fn dependency_cycle_terminates() {
        let dep = DepMap::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let (order, _) = dep.load_order(&["a"], &HashSet::new());
        assert_eq!(names(&order), ["b", "a"]);
    }
}
