//! Update signing keys and bundles: `cairnctl keys gen`, `cairnctl bundle`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_bundle::{KeyId, Manifest, PayloadSource, SigningKey};
use serde::Deserialize;

use crate::progress::mib;

/// The private key's file name in a keys directory; the public key is `update.pub`.
pub const KEY_FILE: &str = "update.key";
pub const PUB_FILE: &str = "update.pub";
/// Where images keep the public keys they accept bundles from.
pub const TRUSTED_DIR: &str = "etc/cairn/update-keys";

/// Makes `dir/update.key` (mode 0600) and `dir/update.pub`; refuses to overwrite a key.
pub fn gen_keys(dir: &Path, comment: &str) -> Result<KeyId> {
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() {
        bail!(
            "{} exists; images built with it trust only it, so it is not replaced (remove it by hand to start over)",
            key_path.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = SigningKey::generate()?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("creating {}", key_path.display()))?;
    f.write_all(key.to_pem().as_bytes())?;
    f.sync_all()?;
    fs::write(dir.join(PUB_FILE), key.public(comment).to_line() + "\n")?;
    Ok(key.id())
}

/// The public keys (`*.pub`) in `dir`, made first (with a new signing key) when there are
/// none, as `(file name, contents)`.
pub fn trusted_keys(dir: &Path, quiet: bool) -> Result<Vec<(String, String)>> {
    let mut keys = read_pubs(dir)?;
    if keys.is_empty() {
        let id = gen_keys(dir, "cairn update key")?;
        if !quiet {
            eprintln!(
                "made update signing key {id} in {}: images built now accept bundles signed with it only; keep {} safe",
                dir.display(),
                dir.join(KEY_FILE).display()
            );
        }
        keys = read_pubs(dir)?;
    }
    Ok(keys)
}

fn read_pubs(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for de in rd {
        let p = de?.path();
        if p.extension().is_some_and(|x| x == "pub") {
            let text = fs::read_to_string(&p)?;
            let key = cairn_bundle::PublicKey::parse(text.trim())
                .with_context(|| format!("{}", p.display()))?;
            out.push((format!("{}.pub", key.id()), key.to_line() + "\n"));
        }
    }
    out.sort();
    Ok(out)
}

/// The parts of `out/<board>/manifest.json` a bundle needs.
#[derive(Deserialize)]
struct ImageManifest {
    board: String,
    arch: String,
    version: String,
    source_date_epoch: u64,
}

pub struct BundleOptions {
    pub board: String,
    /// `out/<board>`: a built image.
    pub image_dir: PathBuf,
    pub out: PathBuf,
    pub key: PathBuf,
    pub min_version: Option<String>,
    /// Adds `cairn.break_health=1` to the slot's command line: the node then fails its
    /// health gate on purpose (for rollback tests).
    pub break_health: bool,
}

/// Writes a signed bundle from a built image's slot files.
pub fn bundle(o: &BundleOptions) -> Result<Manifest> {
    if o.image_dir.join(crate::pxe::SCRIPT).exists() {
        bail!(
            "{} is a network-boot build: such nodes have no slots to update; serve the new \
             build (`cairnctl pxe serve`) and they run it from their next boot",
            o.image_dir.display()
        );
    }
    let manifest_path = o.image_dir.join("manifest.json");
    let text = fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{}: build the image first (`make image BOARD=...`)",
            manifest_path.display()
        )
    })?;
    let image: ImageManifest = serde_json::from_str(&text)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    if image.board != o.board {
        bail!(
            "{} is an image of board {}, not {}",
            o.image_dir.display(),
            image.board,
            o.board
        );
    }
    let key = SigningKey::load(&o.key)
        .context("the signing key (`cairnctl keys gen` makes one; images trust out/keys/*.pub)")?;
    let mut cmdline = fs::read_to_string(o.image_dir.join("cmdline"))?
        .trim()
        .to_string();
    if o.break_health {
        cmdline.push_str(" cairn.break_health=1");
    }
    let mut paths = vec![
        ("rootfs".to_string(), o.image_dir.join("rootfs.squashfs")),
        ("kernel".to_string(), o.image_dir.join("vmlinuz")),
        ("initrd".to_string(), o.image_dir.join("initrd.img")),
    ];
    // Raspberry Pi cards: the slot's other files (firmware, device trees, config.txt), the
    // firmware's second stage last.
    let shared = o.image_dir.join(crate::raspi::SLOT_FILES);
    if shared.is_dir() {
        let mut files: Vec<String> = fs::read_dir(&shared)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        files.sort_by_key(|f| (cairn_slots::mbr::is_second_stage(f), f.clone()));
        for f in files {
            paths.push((format!("boot/{f}"), shared.join(&f)));
        }
    }
    let sources: Vec<PayloadSource> = paths
        .iter()
        .map(|(name, path)| PayloadSource { name, path })
        .collect();
    let m = Manifest {
        format: cairn_bundle::FORMAT,
        board: image.board,
        arch: image.arch,
        version: image.version,
        min_version: o.min_version.clone(),
        created: image.source_date_epoch,
        key: key.id(),
        cmdline: cmdline.trim().to_string(),
        payloads: vec![],
    };
    let m = cairn_bundle::write_bundle(&o.out, m, &sources, &key, 19)
        .with_context(|| format!("writing {}", o.out.display()))?;
    Ok(m)
}

/// One line per payload for the summary.
pub fn describe(m: &Manifest, path: &Path) -> String {
    let mut s = format!(
        "{}: Cairn {} for {} ({}), signed by key {}\n",
        path.display(),
        m.version,
        m.board,
        m.arch,
        m.key
    );
    for p in &m.payloads {
        s.push_str(&format!(
            "  {:<7} {} -> {} stored\n",
            p.name,
            mib(p.size),
            mib(p.stored_size)
        ));
    }
    s
}

/// A FAT32 image at `out` holding `bundle` as `cairn-update/<name>`, sized to fit: what a USB
/// stick for an air-gapped update carries. Nodes look for `cairn-update/*.cairnb` and
/// `*.cairnb` on any FAT, exFAT or ISO 9660 filesystem that is not on their own disk.
pub fn make_stick(bundle: &Path, out: &Path) -> Result<()> {
    let name = bundle
        .file_name()
        .with_context(|| format!("{} is not a file", bundle.display()))?;
    let size = fs::metadata(bundle)
        .with_context(|| format!("reading {}", bundle.display()))?
        .len();
    let tree = out.with_extension("tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("cairn-update"))?;
    let copy = tree.join("cairn-update").join(name);
    if fs::hard_link(bundle, &copy).is_err() {
        fs::copy(bundle, &copy)?;
    }
    // FAT32 needs at least 33 MiB; leave room for the FAT itself.
    let size_mib = (size >> 20) + 40;
    let made = crate::fat::make(out, size_mib, "CAIRN-UPD", 0x0ca1_2e11, &tree, 0);
    let _ = fs::remove_dir_all(&tree);
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_bundle::{verify_file, Expect, TrustedKeys};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cairnctl-update-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keys_are_made_once_and_bundles_verify_against_them() {
        let dir = temp_dir("bundle");
        let keys = dir.join("keys");
        let trusted = trusted_keys(&keys, true).unwrap();
        assert_eq!(trusted.len(), 1);
        assert_eq!(
            trusted_keys(&keys, true).unwrap(),
            trusted,
            "a second build reuses the key"
        );
        let err = gen_keys(&keys, "again").unwrap_err().to_string();
        assert!(err.contains("not replaced"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(keys.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let image = dir.join("image");
        fs::create_dir_all(&image).unwrap();
        fs::write(
            image.join("manifest.json"),
            r#"{"format":1,"board":"qemu-x86_64","arch":"x86_64","version":"0.2.0","source_date_epoch":1700000000,"extra":"ignored"}"#,
        )
        .unwrap();
        fs::write(image.join("cmdline"), "console=ttyS0\n").unwrap();
        for f in ["rootfs.squashfs", "vmlinuz", "initrd.img"] {
            fs::write(image.join(f), f.repeat(1000)).unwrap();
        }
        let opts = |board: &str, break_health| BundleOptions {
            board: board.into(),
            image_dir: image.clone(),
            out: dir.join("update.cairnb"),
            key: keys.join(KEY_FILE),
            min_version: None,
            break_health,
        };
        let err = bundle(&opts("rpi4", false)).unwrap_err().to_string();
        assert!(err.contains("not rpi4"), "{err}");
        assert!(!dir.join("update.cairnb").exists());

        let m = bundle(&opts("qemu-x86_64", true)).unwrap();
        assert_eq!(m.cmdline, "console=ttyS0 cairn.break_health=1");
        let node_keys = TrustedKeys(vec![cairn_bundle::PublicKey::parse(&trusted[0].1).unwrap()]);
        let expect = Expect {
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            running: "0.1.0".into(),
            allow_downgrade: false,
        };
        let got = verify_file(&dir.join("update.cairnb"), &node_keys, &expect).unwrap();
        assert_eq!(got, m);
        assert_eq!(got.payload("kernel").unwrap().size, 7000);
    }
}
