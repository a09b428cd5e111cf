//! `cairnctl flash` with a real image and real block devices (loop devices: needs root, as
//! `make test` runs): written blocks read back equal to the image, and every refusal
//! (mounted, partition, too small, this system's disk, a damaged map or image) happens
//! before a byte is written. Needs `make image BOARD=qemu-x86_64` (make test does it).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn image() -> (PathBuf, PathBuf) {
    let out = common::repo().join("out/qemu-x86_64");
    let (zst, raw) = (out.join("disk.img.zst"), out.join("disk.img"));
    assert!(
        zst.is_file() && raw.is_file(),
        "{} is missing: run `make image BOARD=qemu-x86_64` (make test does)",
        zst.display()
    );
    (zst, raw)
}

fn flash(args: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .arg("flash")
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device over a sparse file of `mib`, detached (and the file removed) on drop.
struct Loop {
    dev: String,
    file: PathBuf,
}

impl Loop {
    fn new(name: &str, mib: u64) -> Loop {
        let file =
            std::env::temp_dir().join(format!("cairn-flash-{}-{name}.img", std::process::id()));
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let dev = run(
            "losetup",
            &["--find", "--show", "--partscan", file.to_str().unwrap()],
        );
        Loop { dev, file }
    }
    fn path(&self) -> &Path {
        Path::new(&self.dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn same_prefix(a: &Path, b: &Path, len: u64) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
        left -= n as u64;
    }
    true
}

#[test]
fn flash_writes_a_card_and_refuses_what_it_must() {
    let (zst, raw) = image();
    let size = std::fs::metadata(&raw).unwrap().len();

    // A whole device: written, then its partitions appear from the image's table.
    let card = Loop::new("card", (size >> 20) + 64);
    let (ok, text) = flash(&[&zst, card.path()]);
    assert!(ok, "{text}");
    assert!(
        text.contains("written and verified") && text.contains("verifying 100%"),
        "{text}"
    );
    assert!(
        same_prefix(card.path(), &raw, size),
        "the card differs from disk.img"
    );
    // Partitions made with BLKPG (partx): some kernels do not scan loop devices themselves.
    run("partx", &["--add", &card.dev]);
    let part = format!("{}p1", card.dev);
    assert!(
        Path::new(&part).exists(),
        "no {part} after writing the partition table"
    );
    let (ok, text) = flash(&[&zst, Path::new(&part)]);
    assert!(!ok && text.contains("is a partition"), "{text}");
    assert!(
        text.contains(&format!("give the whole disk ({})", card.dev)),
        "{text}"
    );

    // One of its partitions mounted: the whole card is refused.
    let data = format!("{}p4", card.dev);
    run("mkfs.ext4", &["-q", &data]);
    let mnt = std::env::temp_dir().join(format!("cairn-flash-p4-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    run("mount", &[&data, mnt.to_str().unwrap()]);
    let (ok, text) = flash(&[&zst, card.path()]);
    run("umount", &[mnt.to_str().unwrap()]);
    let p4 = Path::new(&data)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        !ok && text.contains(&format!("/dev/{p4} is mounted at")),
        "{text}"
    );
    run("partx", &["--delete", &card.dev]);

    // Mounted: refused, and nothing on it changes.
    let busy = Loop::new("busy", (size >> 20) + 64);
    run("mkfs.ext4", &["-q", &busy.dev]);
    let mnt = std::env::temp_dir().join(format!("cairn-flash-mnt-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    run("mount", &[&busy.dev, mnt.to_str().unwrap()]);
    std::fs::write(mnt.join("keep"), "precious").unwrap();
    let (ok, text) = flash(&[&zst, busy.path()]);
    run("umount", &[mnt.to_str().unwrap()]);
    assert!(!ok && text.contains("is mounted at"), "{text}");
    run("mount", &[&busy.dev, mnt.to_str().unwrap()]);
    let kept = std::fs::read_to_string(mnt.join("keep"));
    run("umount", &[mnt.to_str().unwrap()]);
    assert_eq!(kept.unwrap(), "precious");

    // Too small.
    let small = Loop::new("small", 64);
    let (ok, text) = flash(&[&zst, small.path()]);
    assert!(!ok && text.contains("too small"), "{text}");

    // This system's own disk: the one holding `/` (checked, never written).
    let root = run("findmnt", &["-no", "SOURCE", "/"]);
    let parent = run("lsblk", &["-no", "PKNAME", &root]);
    let disk = if parent.is_empty() {
        root
    } else {
        format!("/dev/{parent}")
    };
    let err = cairnctl::flash::check_target(Path::new(&disk), size).unwrap_err();
    assert!(
        err.to_string().contains("this system's disk"),
        "{disk}: {err}"
    );
}

#[test]
fn flash_refuses_a_damaged_map_or_image_before_or_while_writing() {
    let (zst, raw) = image();
    let dir = std::env::temp_dir().join(format!("cairn-flash-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bmap_text = std::fs::read_to_string(cairnctl::flash::bmap_path(&zst)).unwrap();

    // A map edited after it was made: refused before the target is even created.
    let edited = dir.join("edited.bmap");
    let at = bmap_text.find("chksum=\"").unwrap() + "chksum=\"".len();
    let flipped = if &bmap_text[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let changed = format!("{}{flipped}{}", &bmap_text[..at], &bmap_text[at + 1..]);
    std::fs::write(&edited, changed).unwrap();
    let target = dir.join("card.img");
    let (ok, text) = flash(&[&zst, &target, Path::new("--bmap"), &edited]);
    assert!(!ok && text.contains("own checksum"), "{text}");
    assert!(!target.exists());

    // A truncated image: stops with the reason.
    let cut = dir.join("disk.img.zst");
    let bytes = std::fs::read(&zst).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.join("disk.img.bmap"), &bmap_text).unwrap();
    let (ok, text) = flash(&[&cut, &target]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("truncated") || text.contains("incomplete"),
        "{text}"
    );

    // The uncompressed image works as well as the .zst, into a file.
    let copy = dir.join("copy.img");
    let (ok, text) = flash(&[&raw, &copy]);
    assert!(ok, "{text}");
    let size = std::fs::metadata(&raw).unwrap().len();
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    assert!(same_prefix(&copy, &raw, size));
    let _ = std::fs::remove_dir_all(&dir);
}
