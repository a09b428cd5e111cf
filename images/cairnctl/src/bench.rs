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
    /// First boot: formats and grows the data partition, makes the node's keys.
    pub first_init_to_ready_ms: u64,
    /// The later boot (the node set up) with the median init→ready: its kernel→init,
    /// init→ready, init RSS and split by init's markers.
    pub median: Boot,
    /// How many later boots the median is of.
    pub boots: usize,
}

/// One boot's timings from the guest's clock (its console markers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Boot {
    pub kernel_to_init_ms: u64,
    pub init_to_ready_ms: u64,
    pub init_rss_kb: u64,
    /// `start stage=1` → `start stage=2` (the initramfs, until init runs from the root).
    pub stage1_ms: Option<u64>,
    /// `start stage=2` → `started cairn` (mounts, node config, data, network).
    pub stage2_ms: Option<u64>,
    /// `started cairn` → `cairn: ready`.
    pub cairn_ms: Option<u64>,
    /// Init's `stage=N steps_ms ...` and cairn's `steps_ms ...` markers, `name=ms` pairs.
    pub steps: Vec<String>,
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

/// Extracts the timings of one boot from its console log.
pub fn timings(console: &str) -> Option<Boot> {
    let marker = |m: &str| console.lines().find(|l| l.contains(m));
    let uptime = |m: &str| marker(m).and_then(|l| field(l, "uptime_ms"));
    let t0 = uptime("cairn-init: start stage=1")?;
    let ready = marker("cairn: ready")?;
    let t3 = field(ready, "uptime_ms")?;
    let t1 = uptime("cairn-init: start stage=2");
    let t2 = uptime("cairn-init: started cairn");
    let steps = console
        .lines()
        .filter_map(|l| {
            if let Some(at) = l.find("cairn: steps_ms ") {
                return Some(format!(
                    "cairn: {}",
                    l[at + "cairn: steps_ms ".len()..].trim()
                ));
            }
            let rest = &l[l.find("cairn-init: stage=")? + "cairn-init: ".len()..];
            let (stage, pairs) = rest.split_once(" steps_ms ")?;
            Some(format!("{}: {}", stage.replace('=', " "), pairs.trim()))
        })
        .collect();
    Some(Boot {
        kernel_to_init_ms: t0,
        init_to_ready_ms: t3.saturating_sub(t0),
        init_rss_kb: field(ready, "init_rss_kb").unwrap_or(0),
        stage1_ms: t1.map(|t1| t1.saturating_sub(t0)),
        stage2_ms: t1.zip(t2).map(|(t1, t2)| t2.saturating_sub(t1)),
        cairn_ms: t2.map(|t2| t3.saturating_sub(t2)),
        steps,
    })
}

/// Later boots per board: their median is reported (TCG timings vary by a few hundred ms
/// from boot to boot on a busy host).
pub const LATER_BOOTS: usize = 3;

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
    eprintln!("cairnctl: {board_name}: first boot");
    row.first_init_to_ready_ms = boot_once(&o)?.init_to_ready_ms;
    let mut later = Vec::new();
    for n in 1..=LATER_BOOTS {
        eprintln!("cairnctl: {board_name}: boot {n} of {LATER_BOOTS} with the node set up");
        later.push(boot_once(&o)?);
    }
    later.sort_by_key(|b| b.init_to_ready_ms);
    row.median = later.swap_remove(later.len() / 2);
    row.boots = LATER_BOOTS;
    Ok(row)
}

/// Boots the node's disk until cairn is ready, powers it off, returns its timings.
fn boot_once(o: &VmOptions) -> Result<Boot> {
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
            r.median.kernel_to_init_ms,
            r.median.init_to_ready_ms,
            r.first_init_to_ready_ms,
            r.median.init_rss_kb
        );
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!();
    println!("Median of the later boots, split by init's markers (ms):");
    println!();
    println!("| board | boots | stage 1 (initramfs) | stage 2 (until cairn starts) | cairn → ready | steps |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let b = &r.median;
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.board,
            r.boots,
            opt(b.stage1_ms),
            opt(b.stage2_ms),
            opt(b.cairn_ms),
            b.steps.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timings_come_from_the_markers() {
        let c = "noise\ncairn-init: start stage=1 uptime_ms=5947\nx\ncairn: ready uptime_ms=9210 init_rss_kb=1368\n";
        let b = super::timings(c).unwrap();
        assert_eq!(
            (b.kernel_to_init_ms, b.init_to_ready_ms, b.init_rss_kb),
            (5947, 3263, 1368)
        );
        assert_eq!((b.stage1_ms, b.stage2_ms, b.cairn_ms), (None, None, None));
        assert_eq!(
            super::timings("cairn-init: start stage=1 uptime_ms=1\n"),
            None
        );
    }

    #[test]
    fn the_split_comes_from_the_stage_markers() {
        let c = "cairn-init: start stage=1 uptime_ms=3000\n\
                 cairn-init: stage=1 steps_ms modules=500 find_root=20 mount_root=30\n\
                 cairn-init: switch_root\n\
                 [    3.7] cairn-init: start stage=2 uptime_ms=3700\n\
                 cairn-init: stage=2 steps_ms mounts=3 boot=5 config=150 data=1 network=250\n\
                 cairn-init: started cairn role=server pid=80 uptime_ms=4400\n\
                 cairn: steps_ms tls=90 sa_key=10 datastore=200 kubelet_client=40 slots=5 listen=30\n\
                 cairn: ready uptime_ms=5000 init_rss_kb=1400\n";
        let b = super::timings(c).unwrap();
        assert_eq!(b.init_to_ready_ms, 2000);
        assert_eq!(
            (b.stage1_ms, b.stage2_ms, b.cairn_ms),
            (Some(700), Some(700), Some(600))
        );
        assert_eq!(
            b.steps,
            [
                "stage 1: modules=500 find_root=20 mount_root=30",
                "stage 2: mounts=3 boot=5 config=150 data=1 network=250",
                "cairn: tls=90 sa_key=10 datastore=200 kubelet_client=40 slots=5 listen=30"
            ]
        );
    }
}
