//! A node made of files, for tests here and in `cairnctl` (feature `test-fixtures`): a
//! directory stands in for the boot partition, plain files for the slot partitions. The
//! node runs Cairn 0.1.0 (board `qemu-x86_64`) from a committed slot A and trusts one key.

use std::fs;
use std::path::PathBuf;

use cairn_bundle::{write_bundle, KeyId, Manifest, PayloadSource, SigningKey};
use cairn_slots::{Entries, EntrySpec, Slot};

use super::Node;

pub struct Fixture {
    pub dir: PathBuf,
    pub node: Node,
    /// The key the node trusts.
    pub key: SigningKey,
}

impl Fixture {
    /// A node in `dir` (created) whose slots are `slot_size` bytes.
    pub fn new(dir: PathBuf, slot_size: usize) -> Fixture {
        let etc = dir.join("etc");
        fs::create_dir_all(etc.join("update-keys")).unwrap();
        fs::write(
            etc.join("release"),
            "version=0.1.0\nboard=qemu-x86_64\narch=x86_64\n",
        )
        .unwrap();
        let key = SigningKey::generate().unwrap();
        fs::write(etc.join("update-keys/k.pub"), key.public("t").to_line()).unwrap();
        fs::write(dir.join("slot-a.img"), vec![0xaa; slot_size]).unwrap();
        fs::write(dir.join("slot-b.img"), vec![0x00; slot_size]).unwrap();
        let node = Node {
            boot: dir.join("boot"),
            etc,
            state: dir.join("data/update"),
            running: Slot::A,
            slot_a: dir.join("slot-a.img"),
            slot_b: dir.join("slot-b.img"),
            remount_boot: false,
            card: false,
        };
        let spec = EntrySpec {
            version: "0.1.0".into(),
            linux: "/a/vmlinuz".into(),
            initrd: "/a/initrd.img".into(),
            options: "console=ttyS0".into(),
        };
        Entries::at(&node.boot)
            .add_committed(Slot::A, &spec)
            .unwrap();
        Fixture { dir, node, key }
    }

    /// A bundle of `version` for this node's board, signed with `key`, whose root
    /// filesystem is `rootfs`.
    pub fn bundle_signed(
        &self,
        key: &SigningKey,
        version: &str,
        rootfs: &[u8],
        cmdline: &str,
    ) -> PathBuf {
        let src = self.dir.join(format!("src-{version}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("rootfs"), rootfs).unwrap();
        fs::write(src.join("kernel"), format!("kernel {version}")).unwrap();
        fs::write(src.join("initrd"), format!("initrd {version}")).unwrap();
        let paths: Vec<(&str, PathBuf)> = ["rootfs", "kernel", "initrd"]
            .iter()
            .map(|n| (*n, src.join(n)))
            .collect();
        let sources: Vec<PayloadSource> = paths
            .iter()
            .map(|(name, path)| PayloadSource { name, path })
            .collect();
        let out = self.dir.join(format!("update-{version}.cairnb"));
        let m = Manifest {
            format: 1,
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            version: version.into(),
            min_version: None,
            created: 0,
            key: KeyId(String::new()),
            cmdline: cmdline.into(),
            payloads: vec![],
        };
        write_bundle(&out, m, &sources, key, 1).unwrap();
        out
    }

    /// [`Fixture::bundle_signed`] with the key the node trusts.
    pub fn bundle(&self, version: &str, rootfs: &[u8], cmdline: &str) -> PathBuf {
        self.bundle_signed(&self.key, version, rootfs, cmdline)
    }
}

/// `len` incompressible bytes from `seed` (xorshift): a root filesystem as big in a bundle as
/// on disk, as a real squashfs mostly is.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
