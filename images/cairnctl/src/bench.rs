//! `cairnctl bench`: per board, the sizes recorded in `manifest.json` and one QEMU boot
//! timed by the guest's own clock (CLOCK_BOOTTIME in init's and cairn's console markers).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::qemu::{self, Vm, VmOptions};

#[derive(Debug, Default, Clone)]
pub struct Row {
    pub board: String,
    pub init_bytes: u64,
    pub cairn_bytes: u64,
    pub rootfs_bytes: u64,
    pub raw_bytes: u64,
    pub zst_bytes: u64,
    pub kernel_to_init_ms: u64,
    /// First boot: formats and grows the data partition, makes the node's keys.
    pub first_init_to_ready_ms: u64,
    /// Every later boot.
    pub init_to_ready_ms: u64,
    pub init_rss_kb: u64,
}

/// The number after `key=` in `line`.
pub fn field(line: &str, key: &str) -> Option<u64> {
    let pat = format!("{key}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Extracts the boot timings from a console log of one boot.
pub fn timings(console: &str) -> Option<(u64, u64, u64)> {
    let start = console
        .lines()
        .find(|l| l.contains("cairn-init: start stage=1"))?;
    let ready = console.lines().find(|l| l.contains("cairn: ready"))?;
    let t0 = field(start, "uptime_ms")?;
    let t1 = field(ready, "uptime_ms")?;
    Some((
        t0,
        t1.saturating_sub(t0),
        field(ready, "init_rss_kb").unwrap_or(0),
    ))
}

pub fn measure(repo: &Path, board_name: &str) -> Result<Row> {
    let board = crate::board::load(&repo.join("board-configs"), board_name)?;
    let out = repo.join("out").join(board_name);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("manifest.json"))
            .with_context(|| format!("run `make image BOARD={board_name}` first"))?,
    )?;
    let size = |list: &str, name: &str| -> u64 {
        m[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == name)
            .and_then(|a| a["size"].as_u64())
            .unwrap_or(0)
    };
    let mut row = Row {
        board: board_name.into(),
        init_bytes: size("binaries", "cairn-init"),
        cairn_bytes: size("binaries", "cairn"),
        rootfs_bytes: size("artefacts", "rootfs.squashfs"),
        raw_bytes: size("artefacts", "disk.img"),
        zst_bytes: size("artefacts", "disk.img.zst"),
        ..Row::default()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let o = VmOptions::headless(board, out, "bench-run", port);
    qemu::prepare(&o)?;
    let (_, first, _) = boot_once(&o)?;
    let (k, r, rss) = boot_once(&o)?;
    row.first_init_to_ready_ms = first;
    row.kernel_to_init_ms = k;
    row.init_to_ready_ms = r;
    row.init_rss_kb = rss;
    Ok(row)
}

/// Boots the node's disk until cairn is ready, powers it off, returns its timings.
fn boot_once(o: &VmOptions) -> Result<(u64, u64, u64)> {
    let start = std::fs::metadata(o.console_log())
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let mut vm = Vm::launch(o)?;
    vm.wait_for("cairn: ready", start, Duration::from_secs(600))?;
    let console = vm.console_text();
    let t = timings(&console[start..]).context("boot markers missing from the console")?;
    vm.powerdown()?;
    if vm.wait(Duration::from_secs(120))?.is_none() {
        vm.kill();
    }
    Ok(t)
}

pub fn print(rows: &[Row]) {
    let mib = |b: u64| format!("{:.2}", b as f64 / 1048576.0);
    println!(
        "| board | cairn-init MiB | cairn MiB | root (squashfs) MiB | disk.img MiB | disk.img.zst MiB | kernel→init ms | init→cairn ready ms | first boot init→ready ms | init RSS KiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.board,
            mib(r.init_bytes),
            mib(r.cairn_bytes),
            mib(r.rootfs_bytes),
            mib(r.raw_bytes),
            mib(r.zst_bytes),
            r.kernel_to_init_ms,
            r.init_to_ready_ms,
            r.first_init_to_ready_ms,
            r.init_rss_kb
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timings_come_from_the_markers() {
        let c = "noise\ncairn-init: start stage=1 uptime_ms=5947\nx\ncairn: ready uptime_ms=9210 init_rss_kb=1368\n";
        assert_eq!(super::timings(c), Some((5947, 3263, 1368)));
        assert_eq!(
            super::timings("cairn-init: start stage=1 uptime_ms=1\n"),
            None
        );
    }
}
