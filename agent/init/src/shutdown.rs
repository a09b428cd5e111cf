//! Orderly shutdown (docs/design.md "Signals to PID 1"): stop cairn (SIGTERM, 20 s, SIGKILL),
//! then every other process, sync, unmount `/var` and `/boot` (read-only if busy), reboot(2).

use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{sync, Pid};

use crate::cmdline::PowerAction;
use crate::mounts;

/// Reaps children until `done` says so, there are none left, or `timeout` passes.
/// Returns whether `target` (if any) was reaped or no children remain.
fn reap_until(timeout: Duration, target: Option<Pid>) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return false;
                }
                sleep(Duration::from_millis(50));
            }
            Ok(status) if target.is_some() && status.pid() == target => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Stops everything and powers off or reboots. Never returns.
pub fn run(action: PowerAction, cairn: Option<Pid>) -> ! {
    info!("shutdown action={action}");
    if let Some(pid) = cairn {
        let _ = kill(pid, Signal::SIGTERM);
        if !reap_until(Duration::from_secs(20), Some(pid)) {
            warn!("cairn did not stop within 20s, killing it");
            let _ = kill(pid, Signal::SIGKILL);
            reap_until(Duration::from_secs(2), Some(pid));
        }
    }
    // kill(-1) reaches every process but init itself.
    if kill(Pid::from_raw(-1), Signal::SIGTERM).is_ok() && !reap_until(Duration::from_secs(5), None)
    {
        warn!("processes left after SIGTERM, killing them");
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_until(Duration::from_secs(2), None);
    crate::clock::save();
    sync();
    mounts::unmount_tree("/var");
    mounts::unmount_tree("/boot");
    info!("unmounted, syncing, {action}");
    sync();
    let mode = match action {
        PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let Err(e) = reboot(mode);
    crate::fatal(&format!("reboot(2) failed: {e}"))
}
