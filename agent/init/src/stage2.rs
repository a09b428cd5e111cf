//! Stage 2: `/sbin/init` on the read-only root, still PID 1. Prepares the writable parts of
//! the system, the network, and hands over to the supervisor loop.

use std::convert::Infallible;
use std::fs;
use std::time::Duration;

use nix::mount::MsFlags;

use crate::config::{self, Board};
use crate::error::{Context, Result};
use crate::net::{self, Network};
use crate::stage1::BOOT_LABEL;
use crate::{blockdev, clock, data, log, modules, mounts, supervisor};

pub fn run() -> Result<Infallible> {
    let uptime = crate::uptime_ms();
    supervisor::block_signals()?;
    // Idempotent: only mounts what stage 1 did not (a boot without initramfs).
    let early = mounts::mount_early();
    log::ensure_console();
    log::open_kmsg();
    info!("start stage=2 uptime_ms={uptime}");
    early?;
    // Ctrl-Alt-Del now reaches us as SIGINT instead of rebooting on the spot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!("cannot disable Ctrl-Alt-Del: {e}");
    }
    let cmdline = crate::cmdline();
    let mut steps = crate::Steps::since(uptime);
    mounts::mount_stage2()?;
    modules::load_listed(modules::LIST);
    steps.end("mounts");
    mount_boot();
    steps.end("boot");
    let cfg = config::render();
    steps.end("config");
    data::prepare(&Board::load())?;
    clock::set_forward();
    steps.end("data");

    let iface = net::wait_for_interface(cfg.interface.as_deref(), Duration::from_secs(10));
    let hostname = cfg.hostname.clone().unwrap_or_else(|| {
        net::default_hostname(net::interfaces().first().and_then(|i| net::mac_of(i)))
    });
    if let Err(e) = nix::unistd::sethostname(&hostname) {
        warn!("sethostname {hostname}: {e}");
    }
    if let Err(e) = fs::write("/run/cairn/hostname", format!("{hostname}\n")) {
        warn!("write /run/cairn/hostname: {e}");
    }
    let net = Network::start(&cfg, iface, &hostname);
    steps.end("network");
    info!("stage=2 steps_ms {}", steps.summary());
    supervisor::run(&cfg, net, cmdline.cad)
}

/// Mounts the boot partition read-only at `/boot`, after repairing its FAT if a power cut
/// left it writable ([`cairn_slots::fat`]); without it the node runs on defaults.
fn mount_boot() {
    if mounts::is_mountpoint("/boot") {
        // A network boot: stage 1 put the seed that came with it there.
        return;
    }
    let mounted = blockdev::wait_for(BOOT_LABEL, Duration::from_secs(10)).and_then(|(name, _)| {
        let dev = format!("/dev/{name}");
        let started = std::time::Instant::now();
        let repaired = repair_fat(&dev);
        let marker = format!("{dev} check_ms={}", started.elapsed().as_millis());
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if !repaired {
            mounts::mount_fs(&dev, "/boot", "vfat", flags | MsFlags::MS_RDONLY, None)?;
            return Ok(marker);
        }
        mounts::mount_fs(&dev, "/boot", "vfat", flags, None)?;
        match cairn_slots::fat::remove_salvaged(std::path::Path::new("/boot")) {
            Ok(0) => {}
            Ok(n) => info!("boot: removed {n} FSCK*.REC files the repair salvaged"),
            Err(e) => warn!("boot: removing FSCK*.REC files: {e}"),
        }
        nix::mount::mount(
            None::<&str>,
            "/boot",
            None::<&str>,
            flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("remount /boot read-only")?;
        Ok(marker)
    });
    match mounted {
        Ok(marker) => info!("boot mounted dev={marker}"),
        Err(e) => warn!("boot partition: {e}"),
    }
}

/// Checks and repairs the FAT on `dev` when it was left writable (its dirty bit); true when
/// something was repaired. An image without `fsck.fat` (a recipe that leaves it out) mounts
/// the partition as it is.
fn repair_fat(dev: &str) -> bool {
    use cairn_slots::fat::{self, Check};
    let fsck = std::path::Path::new(fat::FSCK_FAT);
    let dev_path = std::path::Path::new(dev);
    if !fsck.exists() || matches!(fat::is_dirty(dev_path), Ok(false)) {
        return false;
    }
    match fat::check(fsck, dev_path) {
        Ok(Check::Clean) => false,
        Ok(Check::Repaired { report }) => {
            info!("boot repaired dev={dev}: {report}");
            true
        }
        Err(e) => {
            warn!("boot check dev={dev}: {e}");
            false
        }
    }
}
