//! Kernel modules: the names in `/etc/cairn/modules` are loaded with `finit_module` in
//! `modules.dep` order, dependencies first and each module once.
//!
//! The image ships more modules than it lists (the pod network's bridge, veth and
//! nftables modules): the kernel asks for those itself when they are first needed, by
//! running `/sbin/modprobe -q -- NAME` (`request_module`), and `/sbin/modprobe` is this
//! binary. [`modprobe`] resolves NAME through `modules.alias` (e.g. `rtnl-link-bridge`,
//! `nfnetlink-subsys-10`, `nft-chain-2-nat`) and loads it with its dependencies. They stay
//! off the boot's path (stage 1 of qemu-x86_64 took ~0.75 s with 31 modules under TCG).

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

/// Parsed `modules.alias` (`alias PATTERN MODULE` lines, as depmod writes them).
#[derive(Debug, Default)]
pub struct Aliases {
    entries: Vec<(String, String)>,
}

impl Aliases {
    pub fn parse(text: &str) -> Aliases {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((pattern.to_string(), normalize(module)))
                    }
                    _ => None,
                }
            })
            .collect();
        Aliases { entries }
    }

    /// The modules whose alias patterns match `name`, in file order, each once.
    pub fn resolve(&self, name: &str) -> Vec<&str> {
        let mut found: Vec<&str> = Vec::new();
        for (pattern, module) in &self.entries {
            if glob(pattern.as_bytes(), name.as_bytes()) && !found.contains(&module.as_str()) {
                found.push(module);
            }
        }
        found
    }
}

/// fnmatch(3) without flags, as modprobe matches aliases: `*`, `?` and `[...]` classes
/// (with ranges and `!`/`^` negation; an unclosed `[` is literal); the rest literal.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: pattern index after it, text index it matched to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class(&pattern[p..], text[t]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                None => (text[t] == b'[').then_some(p + 1),
            },
            Some(&c) if c == text[t] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after, matched))) => {
                p = after;
                t = matched + 1;
                star = Some((after, matched + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The class at the start of `pattern` (`[...]`) against `c`: whether it matches and the
/// class's length, or `None` when the class is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    Some((matched != negate, i + 1))
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

/// Loads every module of [`LIST`] that is not loaded yet. Never fails: problems are warnings.
pub fn load_listed() {
    let Ok(list) = fs::read_to_string(LIST) else {
        return;
    };
    let wanted = parse_list(&list);
    if wanted.is_empty() {
        return;
    }
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned());
    let Ok(release) = release else {
        warn!("uname failed, modules not loaded");
        return;
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
            Err(e) => warn!("module {name}: {e}"),
        }
    }
    if !done.is_empty() {
        info!("modules loaded: {}", done.join(" "));
    }
}

/// The module directory of the running kernel, `/lib/modules/RELEASE`.
fn module_dir() -> Option<String> {
    let release = nix::sys::utsname::uname().ok()?;
    Some(format!(
        "/lib/modules/{}",
        release.release().to_string_lossy()
    ))
}

/// `/sbin/modprobe` as the kernel runs it (`modprobe -q -- NAME`): loads the module NAME
/// names, directly or through `modules.alias`, with its dependencies. Returns the exit
/// status: 0 when loaded (or already there), 1 when NAME is not shipped or a load failed.
/// Loads are reported on the console; a NAME the image has no module for only in `dmesg`
/// (the kernel asks for many it can do without).
pub fn modprobe(args: &[String]) -> i32 {
    let names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some(&name) = names.first() else {
        warn!("modprobe: usage: modprobe [-q] [--] NAME (run by the kernel)");
        return 1;
    };
    let Some(dir) = module_dir() else {
        warn!("modprobe {name}: uname failed");
        return 1;
    };
    let dep = DepMap::parse(&fs::read_to_string(format!("{dir}/modules.dep")).unwrap_or_default());
    let wanted: Vec<String> = if dep.path_of(name).is_some() {
        vec![normalize(name)]
    } else {
        let aliases =
            Aliases::parse(&fs::read_to_string(format!("{dir}/modules.alias")).unwrap_or_default());
        aliases
            .resolve(name)
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    if wanted.is_empty() {
        // The kernel asks for many modules it can do without; dmesg has them, at debug level.
        crate::log::kmsg_only(7, &format!("modprobe {name}: no module in this image"));
        return 1;
    }
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let (order, _) = dep.load_order(&wanted, &loaded_modules());
    let mut done = Vec::new();
    let mut failed = false;
    for path in &order {
        match load_one(&dir, path, "") {
            Ok(()) => done.push(name_of(path)),
            Err(e) => {
                failed = true;
                warn!("modprobe {name}: {e}");
            }
        }
    }
    if !done.is_empty() {
        info!("modprobe {name}: loaded {}", done.join(" "));
    }
    i32::from(failed)
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
    fn aliases_resolve_like_modprobe() {
        let aliases = Aliases::parse(
            "# Aliases extracted from modules themselves.\n\
alias rtnl-link-bridge bridge\n\
alias net-pf-16-proto-12 nfnetlink\n\
alias nfnetlink-subsys-10 nf_tables\n\
alias nft-chain-2-nat nft_chain_nat\n\
alias nft-expr-masq nft_masq\n\
alias pci:v00001AF4d00001042sv*sd*bc*sc*i* virtio_blk\n\
alias fs-vfat vfat\n\
alias char-major-10-* loop-like\n\
alias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
alias of:N*T*Cbrcm,bcm2835-sdhost* sdhost\n\
alias of:N*T*Cbrcm,bcm2835-sdhostC* sdhost\n\
alias input:b0019v*e*-e0,1,*k74,* evdev-like\n\
alias acpi*:PNP0C0[CD]:* button\n\
alias usb:v0424pEC00d*dc*dsc*dp*ic*isc*ip*in* smsc95xx\n\
alias rtnl-link-veth veth\n",
        );
        assert_eq!(aliases.resolve("rtnl-link-bridge"), ["bridge"]);
        assert_eq!(aliases.resolve("nfnetlink-subsys-10"), ["nf_tables"]);
        assert_eq!(aliases.resolve("nft-chain-2-nat"), ["nft_chain_nat"]);
        assert_eq!(aliases.resolve("nft-chain-10-nat"), Vec::<&str>::new());
        assert_eq!(aliases.resolve("net-pf-16-proto-12"), ["nfnetlink"]);
        assert_eq!(aliases.resolve("net-pf-16-proto-1"), Vec::<&str>::new());
        assert_eq!(
            aliases.resolve("pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"),
            ["virtio_blk"]
        );
        assert_eq!(
            aliases.resolve("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
            ["nvme"]
        );
        assert_eq!(aliases.resolve("char-major-10-237"), ["loop_like"]);
        assert_eq!(
            aliases.resolve("of:NmmcT(null)Cbrcm,bcm2835-sdhostCbrcm,sdhci"),
            ["sdhost"],
            "two patterns, one module"
        );
        assert_eq!(aliases.resolve("acpi:PNP0C0C:"), ["button"]);
        assert_eq!(aliases.resolve("acpi:PNP0C0E:"), Vec::<&str>::new());
        assert_eq!(
            aliases.resolve("usb:v0424pEC00d0200dcFFdsc00dp01icFFisc00ip00in00"),
            ["smsc95xx"]
        );
        assert_eq!(aliases.resolve("rtnl-link-veth"), ["veth"]);
        assert_eq!(aliases.resolve("rtnl-link-vet"), Vec::<&str>::new());
    }

    #[test]
    fn glob_classes_and_stars() {
        let m = |p: &str, t: &str| glob(p.as_bytes(), t.as_bytes());
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[!a-c]x", "bx"));
        assert!(m("[^a-c]x", "dx"));
        assert!(m("[]]", "]"), "a leading ] is literal");
        assert!(m("[a-]", "-"), "a trailing - is literal");
        assert!(m("[ab", "[ab"), "an unclosed [ is literal");
        assert!(!m("[ab", "a"));
        assert!(m("**x", "x"));
    }

    #[test]
    fn dependency_cycle_terminates() {
        let dep = DepMap::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let (order, _) = dep.load_order(&["a"], &HashSet::new());
        assert_eq!(names(&order), ["b", "a"]);
    }
}
