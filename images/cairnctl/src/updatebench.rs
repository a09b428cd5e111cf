//! `cairnctl bench-update`: one A/B update of a real QEMU node of a board (TCG, one vCPU),
//! as `cairnctl upgrade` runs it, timed in three parts: the upload (not counted: it depends
//! on the network), the apply (verify the staged bundle, write the inactive slot, mark the
//! trial: from the apply request until the node says `pending`), and back Ready (from
//! then through the drain, the reboot and the trial until the node has committed). The
//! bytes the guest wrote to its disk during the apply come from QEMU's own block
//! statistics, so they are what flash would see.
//!
//! The bundle is the board's image rebuilt at version 99.0.0 from the same binaries.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::qemu::{self, Stop, Vm, VmOptions};
use crate::upgrade::{self, Options, Outcome, Source};

const VERSION: &str = "99.0.0";
const BOOT: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Row {
    pub board: String,
    pub bundle_bytes: u64,
    pub apply_s: f64,
    /// `None` on boards whose disk is QEMU's SD card, whose model keeps no block statistics.
    pub written_bytes: Option<u64>,
    pub back_ready_s: f64,
}

/// Builds the bundle for `board_name` at [`VERSION`] with this very cairnctl.
fn make_bundle(repo: &Path, board_name: &str) -> Result<std::path::PathBuf> {
    let dir = repo.join("out").join(board_name).join("bench-update");
    let image = dir.join(format!("v{VERSION}"));
    let bundle = dir.join(format!("v{VERSION}.cairnb"));
    let me = std::env::current_exe().context("finding cairnctl")?;
    let image_s = image.to_string_lossy().into_owned();
    let bundle_s = bundle.to_string_lossy().into_owned();
    for args in [
        vec![
            "build",
            "--board",
            board_name,
            "--image-version",
            VERSION,
            "--out",
            &image_s,
            "--quiet",
            "--no-disk-archive",
        ],
        vec![
            "bundle",
            "--board",
            board_name,
            "--image-dir",
            &image_s,
            "--out",
            &bundle_s,
        ],
    ] {
        let out = Command::new(&me).args(&args).current_dir(repo).output()?;
        if !out.status.success() {
            bail!(
                "cairnctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(bundle)
}

pub fn measure(repo: &Path, board_name: &str) -> Result<Row> {
    let board = crate::board::load(&repo.join("board-configs"), board_name)?;
    let sd_card = board
        .qemu
        .as_ref()
        .is_some_and(|q| q.bus == crate::board::Bus::Soc);
    let out = repo.join("out").join(board_name);
    eprintln!("{board_name}: building a bundle at {VERSION}");
    let bundle = make_bundle(repo, board_name)?;
    let mut row = Row {
        board: board_name.into(),
        bundle_bytes: std::fs::metadata(&bundle)?.len(),
        ..Row::default()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let o = VmOptions::headless(board, out, "bench-update", port);
    qemu::prepare(&o)?;
    let mut vm = Vm::launch(&o)?;
    vm.wait_for("cairn: ready", 0, BOOT)?;
    let opts = Options {
        kubeconfig: o.kubeconfig(),
        node: None,
        source: Source::File(bundle),
        allow_downgrade: false,
        no_wait: true,
        timeout: BOOT,
        upload_only: true,
    };
    // The node's Node must be up (the drain before the reboot uses it): wait for its report.
    let deadline = Instant::now() + BOOT;
    while upgrade::status_reports(&o.kubeconfig()).is_err() {
        if Instant::now() > deadline {
            bail!("the node's update endpoint never answered");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{board_name}: uploading (not timed)");
    upgrade::run(&opts)?;
    let before = vm.bytes_written()?;
    let started = Instant::now();
    let outcome = upgrade::run(&Options {
        upload_only: false,
        ..opts
    })?;
    if outcome != Outcome::Pending {
        bail!("the apply ended {outcome:?}, not pending");
    }
    row.apply_s = started.elapsed().as_secs_f64();
    // The node drains itself before it reboots: its disk is still there to ask.
    let after = vm
        .bytes_written()
        .context("the node rebooted before its disk statistics were read")?;
    row.written_bytes = (!sd_card).then(|| after.saturating_sub(before));
    let applied = Instant::now();
    // The guest reboots; QEMU (-no-reboot) exits and is launched again, as `make qemu` does.
    match vm.wait(BOOT)? {
        Some(Stop::GuestReset) => {}
        other => bail!("expected a reboot into the trial, got {other:?}"),
    }
    let mut vm = Vm::launch(&o)?;
    loop {
        if let Ok(reports) = upgrade::status_reports(&o.kubeconfig()) {
            if let Some(r) = reports.first() {
                let last = r.last.as_ref().map(|l| l.result.as_str());
                if r.version == VERSION && last == Some("committed") {
                    break;
                }
                if last == Some("rolled-back") {
                    bail!("the node rolled back: {:?}", r.last);
                }
            }
        }
        if applied.elapsed() > BOOT {
            bail!("no commit within {} s", BOOT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    row.back_ready_s = applied.elapsed().as_secs_f64();
    let _ = vm.powerdown();
    if !matches!(vm.wait(Duration::from_secs(120)), Ok(Some(_))) {
        vm.kill();
    }
    Ok(row)
}

pub fn print(rows: &[Row]) {
    let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
    println!("| board | bundle MiB | apply s | written during apply MiB | back committed s |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {} | {:.1} |",
            r.board,
            mib(r.bundle_bytes),
            r.apply_s,
            r.written_bytes.map_or("n/a (SD card)".into(), mib),
            r.back_ready_s
        );
    }
}
