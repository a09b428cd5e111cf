//! Time on boards without a battery-backed clock (a Raspberry Pi starts at 1970): before
//! `cairn` starts, the clock is moved forward to the latest known time: the image's build
//! time, the time `cairnctl` last wrote the seed (`/boot/cairn/clock`, written with the node
//! config or the cluster secrets, so certificates made on that computer are already valid
//! here), or the time saved at the last shutdown, whichever is latest. Certificates made then
//! are valid from that time, and token and lease times only move forward.
//! A clock that reads later than all of them is left alone.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

/// Touched at every clean shutdown: its modification time is the time then.
pub const SAVED: &str = "/var/lib/cairn/clock";
/// Seconds since 1970 (UTC) when `cairnctl` last wrote the seed partition.
pub const SEED: &str = "/boot/cairn/clock";
const RELEASE: &str = "/etc/cairn/release";

/// The image's build time: `built=<seconds since 1970>` in the release file.
pub fn built(release: &str) -> Option<u64> {
    release
        .lines()
        .find_map(|l| l.strip_prefix("built="))
        .and_then(|v| v.trim().parse().ok())
}

/// The time to move a clock reading `now` forward to, and why; `None` if it is not behind.
pub fn plan(
    now: u64,
    built: Option<u64>,
    seed: Option<u64>,
    saved: Option<u64>,
) -> Option<(u64, &'static str)> {
    let candidates = [
        (built, "image build time"),
        (seed, "seed written"),
        (saved, "last shutdown"),
    ];
    let (floor, why) = candidates
        .into_iter()
        .filter_map(|(t, why)| t.map(|t| (t, why)))
        .max_by_key(|(t, _)| *t)?;
    (now < floor).then_some((floor, why))
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Moves the clock forward when it is behind the latest known time.
pub fn set_forward() {
    let built = fs::read_to_string(RELEASE).ok().and_then(|r| built(&r));
    let seed = fs::read_to_string(SEED)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let saved = fs::metadata(SAVED)
        .and_then(|m| m.modified())
        .ok()
        .map(seconds);
    let now = seconds(SystemTime::now());
    let Some((to, why)) = plan(now, built, seed, saved) else {
        return;
    };
    let spec = TimeSpec::from_duration(Duration::from_secs(to));
    match clock_settime(ClockId::CLOCK_REALTIME, spec) {
        Ok(()) => info!("clock set forward from={now} to={to} ({why}; no real-time clock?)"),
        Err(e) => warn!("clock reads {now}, behind the {why} {to}, and cannot be set: {e}"),
    }
}

/// Records the time for the next boot (on the data partition, before it is unmounted).
pub fn save() {
    let now = SystemTime::now();
    let written = fs::File::create(SAVED).and_then(|f| f.set_modified(now));
    if let Err(e) = written {
        warn!("cannot save the time in {SAVED}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_from_release() {
        assert_eq!(
            built("version=1\nbuilt=1700000000\nboard=rpi4\n"),
            Some(1_700_000_000)
        );
        assert_eq!(built("version=1\n"), None);
        assert_eq!(built("built=soon\n"), None);
    }

    #[test]
    fn moves_only_forward_to_the_latest_known_time() {
        let build = "image build time";
        assert_eq!(plan(58, Some(1000), None, None), Some((1000, build)));
        assert_eq!(
            plan(58, Some(1000), None, Some(2000)),
            Some((2000, "last shutdown"))
        );
        assert_eq!(plan(58, Some(3000), None, Some(2000)), Some((3000, build)));
        assert_eq!(
            plan(58, Some(3000), Some(4000), Some(2000)),
            Some((4000, "seed written"))
        );
        assert_eq!(
            plan(5000, Some(3000), Some(4000), Some(2000)),
            None,
            "a set clock is left alone"
        );
        assert_eq!(plan(58, None, None, None), None);
    }
}
