//! Stage 2's main loop: starts `cairn` and restarts it with back-off, reaps zombies, turns
//! signals and the power button into a shutdown, and drives DHCP retries and renewals.
//! Signals are blocked and read from a signalfd, so nothing runs in a signal handler.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cmdline::PowerAction;
use crate::config::{NodeConfig, CAIRN_BIN};
use crate::error::{Context, Result};
use crate::net::Network;
use crate::{power, shutdown};

/// Restart delay: 1 s doubling to 30 s, back to 1 s after a run of 60 s or more.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    const RESET_AFTER: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    /// The delay before restarting a process that ran for `ran`.
    pub fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= Self::RESET_AFTER {
            self.next = Self::MIN;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the signals the loop handles, before any child exists. Children get an empty
/// mask from [`crate::sys::command`].
pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
        .context("block signals")
}

/// The supervised `cairn` process.
struct Cairn {
    args: Vec<String>,
    env: Vec<(String, String)>,
    pid: Option<Pid>,
    started: Instant,
    start_at: Option<Instant>,
    backoff: Backoff,
}

impl Cairn {
    fn start(&mut self) {
        self.start_at = None;
        self.started = Instant::now();
        let mut cmd = crate::sys::command(CAIRN_BIN);
        cmd.args(&self.args)
            .env("HOME", "/var/lib/cairn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(term) = std::env::var_os("TERM") {
            cmd.env("TERM", term);
        }
        let child = cmd.spawn();
        match child {
            Ok(child) => {
                let pid = child.id();
                self.pid = Some(Pid::from_raw(pid as i32));
                let uptime = crate::uptime_ms();
                info!(
                    "started cairn role={} pid={pid} uptime_ms={uptime}",
                    self.args[0]
                );
            }
            Err(e) => {
                warn!("cannot start {CAIRN_BIN}: {e}");
                self.exited();
            }
        }
    }

    fn exited(&mut self) {
        self.pid = None;
        let delay = self.backoff.delay(self.started.elapsed());
        info!("restarting cairn in {}s", delay.as_secs());
        self.start_at = Some(Instant::now() + delay);
    }
}

/// Reaps every exited child; notes when it was `cairn`.
fn reap(cairn: &mut Cairn) {
    loop {
        let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!("waitpid: {e}");
                return;
            }
            Ok(s) => s,
        };
        if status.pid().is_some() && status.pid() == cairn.pid {
            match status {
                WaitStatus::Exited(_, code) => warn!("cairn exited with status {code}"),
                WaitStatus::Signaled(_, sig, _) => warn!("cairn killed by {sig}"),
                _ => continue,
            }
            cairn.exited();
        }
    }
}

fn action_for(signal: Signal, cad: PowerAction) -> Option<PowerAction> {
    match signal {
        Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => Some(PowerAction::PowerOff),
        Signal::SIGUSR1 => Some(PowerAction::Reboot),
        Signal::SIGINT => Some(cad),
        _ => None,
    }
}

/// Runs until a shutdown is asked for, then shuts down. Never returns.
pub fn run(cfg: &NodeConfig, mut net: Option<Network>, cad: PowerAction) -> ! {
    let sfd = match SignalFd::with_flags(&handled(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    {
        Ok(fd) => fd,
        Err(e) => crate::fatal(&format!("signalfd: {e}")),
    };
    let mut buttons = power::Buttons::new();
    let mut cairn = Cairn {
        args: [cfg.role.as_str(), "--data-dir", "/var/lib/cairn"]
            .map(String::from)
            .to_vec(),
        env: cfg.env.clone(),
        pid: None,
        started: Instant::now(),
        start_at: Some(Instant::now()), // after the first look at pending signals
        backoff: Backoff::new(),
    };
    loop {
        let now = Instant::now();
        let deadline = [
            cairn.start_at,
            net.as_ref().and_then(Network::next_deadline),
        ]
        .into_iter()
        .flatten()
        .fold(buttons.next_scan, Instant::min);
        let wait = deadline.saturating_duration_since(now);
        let millis = wait.as_micros().div_ceil(1000).min(60_000) as i32;
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        fds.extend(buttons.fds().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        if let Err(e) = poll(&mut fds, timeout) {
            if e != Errno::EINTR {
                warn!("poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        let mut action = None;
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if let Some(a) = action_for(signal, cad) {
                    info!("received {signal}");
                    action = action.or(Some(a));
                }
            }
        }
        reap(&mut cairn);
        if buttons.pressed(&ready[1..]) {
            info!("power button pressed");
            action = action.or(Some(PowerAction::PowerOff));
        }
        if let Some(action) = action {
            shutdown::run(action, cairn.pid);
        }
        let now = Instant::now();
        if cairn.start_at.is_some_and(|t| now >= t) {
            cairn.start();
        }
        if let Some(net) = net.as_mut() {
            net.tick(now);
        }
        if now >= buttons.next_scan {
            buttons.scan();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let quick = Duration::from_secs(2);
        let got: Vec<u64> = (0..7).map(|_| b.delay(quick).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(Duration::from_secs(60)).as_secs(), 1);
        assert_eq!(b.delay(Duration::from_secs(59)).as_secs(), 2);
    }

    #[test]
    fn signal_actions() {
        use PowerAction::*;
        assert_eq!(action_for(Signal::SIGTERM, Reboot), Some(PowerOff));
        assert_eq!(action_for(Signal::SIGPWR, Reboot), Some(PowerOff));
        assert_eq!(action_for(Signal::SIGUSR2, Reboot), Some(PowerOff));
        assert_eq!(action_for(Signal::SIGUSR1, PowerOff), Some(Reboot));
        assert_eq!(action_for(Signal::SIGINT, Reboot), Some(Reboot));
        assert_eq!(action_for(Signal::SIGINT, PowerOff), Some(PowerOff));
        assert_eq!(action_for(Signal::SIGCHLD, Reboot), None);
        assert_eq!(action_for(Signal::SIGHUP, Reboot), None);
    }
}
