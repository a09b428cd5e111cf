//! `cargo bench -p cairn --features test-fixtures --bench update` (part of `make bench`):
//! the updater's cost per bundle size. Each apply runs in a child process (this binary again,
//! `--apply-one`) so its peak RSS (`VmHWM`) and the bytes it wrote (`/proc/self/io`
//! `wchar`) are its own. Bundles carry incompressible root filesystems, written into a
//! file-backed slot as on a node (minus the flash's own speed).
//!
//! Prints one table row per size: bundle bytes, wall time of the apply (verify + write +
//! fsync, download excluded), MiB/s, bytes written, peak RSS. The target: peak RSS does not
//! grow with the bundle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cairn::update::fixture::{noise, Fixture};

const SIZES_MIB: [usize; 3] = [8, 32, 128];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--apply-one") {
        apply_one(Path::new(&args[i + 1]), &args[i + 2]);
        return;
    }
    let root = std::env::temp_dir().join(format!("cairn-bench-update-{}", std::process::id()));
    println!("Updater: apply a signed bundle into the inactive slot (file-backed), one child process each");
    println!(
        "| {:>12} | {:>10} | {:>8} | {:>14} | {:>12} |",
        "bundle MiB", "apply s", "MiB/s", "written MiB", "peak RSS KiB"
    );
    println!(
        "|{:-<14}|{:-<12}|{:-<10}|{:-<16}|{:-<14}|",
        "", "", "", "", ""
    );
    for mib in SIZES_MIB {
        let dir = root.join(format!("{mib}"));
        let _ = std::fs::remove_dir_all(&dir);
        let f = Fixture::new(dir.clone(), (mib + 4) << 20);
        let bundle = f.bundle(
            "0.2.0",
            &noise(mib << 20, 0x9e37_79b9_7f4a_7c15),
            "console=ttyS0",
        );
        let bundle_bytes = std::fs::metadata(&bundle).unwrap().len();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--apply-one"])
            .arg(&dir)
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> f64 {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let secs = field("seconds");
        println!(
            "| {:>12.1} | {:>10.2} | {:>8.0} | {:>14.1} | {:>12.0} |",
            bundle_bytes as f64 / (1 << 20) as f64,
            secs,
            bundle_bytes as f64 / (1 << 20) as f64 / secs,
            field("written") / (1 << 20) as f64,
            field("hwm_kb"),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The child: applies `bundle` to the fixture node in `dir`, prints its measurements.
fn apply_one(dir: &Path, bundle: &str) {
    // Re-open the fixture's node as the parent made it (same paths).
    let node = cairn::update::Node {
        boot: dir.join("boot"),
        etc: dir.join("etc"),
        state: dir.join("data/update"),
        running: cairn_slots::Slot::A,
        slot_a: dir.join("slot-a.img"),
        slot_b: dir.join("slot-b.img"),
        remount_boot: false,
        card: false,
    };
    let before = write_bytes();
    let t = Instant::now();
    cairn::update::apply(&node, &PathBuf::from(bundle), false, &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let written = write_bytes() - before;
    println!("seconds={secs} written={written} hwm_kb={}", hwm_kb());
}

fn proc_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes this process handed to write(2) and friends (`/proc/self/io` `wchar`). Everything
/// the updater writes is fsynced, so this is what reaches the flash (`write_bytes`, the
/// block-layer count, is not kept in every container).
fn write_bytes() -> u64 {
    proc_field("/proc/self/io", "wchar:")
}

fn hwm_kb() -> u64 {
    proc_field("/proc/self/status", "VmHWM:")
}
