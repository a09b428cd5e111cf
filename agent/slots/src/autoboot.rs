//! Raspberry Pi cards: `autoboot.txt` on partition 1 tells the Pi firmware which slot
//! partition to boot, and follows the slot entries ([`crate::Entries`], kept on the same
//! partition), which stay the A/B state as on every other board.
//!
//! The firmware has no boot counter Linux can reach (Debian's kernel cannot request a
//! `tryboot`), so stage 1 of init plays the boot loader's part with [`reconcile`]: it makes
//! the firmware's choice agree with the entries after any power cut, and takes a trial's one
//! try by pointing `autoboot.txt` back at the committed slot before the trial goes on. A
//! crash, hang or power cut during the trial then boots the committed slot.

use std::io;
use std::path::Path;

use crate::entries::{Entries, Ops};
use crate::Slot;

/// The file on partition 1.
pub const FILE: &str = "autoboot.txt";

/// The MBR partition holding `slot`'s boot files (`cairn_slots::mbr`).
pub fn partition(slot: Slot) -> u32 {
    match slot {
        Slot::A => 2,
        Slot::B => 3,
    }
}

/// The slot whose boot files are on MBR partition `n`.
pub fn slot_of(n: u32) -> Option<Slot> {
    match n {
        2 => Some(Slot::A),
        3 => Some(Slot::B),
        _ => None,
    }
}

/// `autoboot.txt` booting `slot`; a firmware-requested trial (`tryboot`, for kernels that
/// can ask for one) starts the other slot with that slot's own `config.txt` (`tryboot_a_b`).
pub fn render(slot: Slot) -> String {
    format!(
        "# Cairn: which slot partition the Raspberry Pi firmware boots (2 = slot A, 3 = slot B).\n\
         # Follows loader/entries; written by the node, do not edit.\n\
         [all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
        partition(slot),
        partition(slot.other())
    )
}

/// The `boot_partition` of the `[all]` section (what a normal boot uses), if any.
pub fn parse(text: &str) -> Option<u32> {
    let mut section = "all";
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = if name == "all" { "all" } else { "other" };
        } else if let Some(v) = line.strip_prefix("boot_partition=") {
            if section == "all" {
                found = v.trim().parse().ok();
            }
        }
    }
    found
}

/// What stage 1 does on a card after the firmware started `running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on booting `running`; `autoboot.txt` must name `next_boot` from now on.
    Boot { next_boot: Slot },
    /// The entries want `slot` (an update or a commit whose `autoboot.txt` change a power
    /// cut stopped): point `autoboot.txt` at it and reboot.
    Reboot { slot: Slot },
}

/// Stage 1's decision on a card, taking the trial's try when `running` is on trial.
/// `autoboot` is the partition `autoboot.txt` names now. With no entries at all, the card
/// boots what the firmware chose and nothing is written.
pub fn reconcile<O: Ops>(
    entries: &mut Entries<O>,
    running: Slot,
    autoboot: Option<u32>,
) -> io::Result<Action> {
    let Some(first) = entries.load()?.into_iter().next() else {
        return Ok(Action::Boot { next_boot: running });
    };
    if first.slot != running && autoboot != Some(partition(first.slot)) {
        return Ok(Action::Reboot { slot: first.slot });
    }
    // Either the firmware started the first entry, or autoboot.txt already names it and the
    // firmware still started `running` (that partition is not bootable; no reboot loop).
    // Both ways a trial's one try is used: from now on the next boot is the first good
    // entry after it.
    if first.tries.is_some() {
        entries.boot_next()?;
    }
    let next = entries
        .load()?
        .into_iter()
        .next()
        .map_or(running, |e| e.slot);
    Ok(Action::Boot { next_boot: next })
}

/// Writes `autoboot.txt` in `dir` (partition 1's mount point) naming `slot`, unless it
/// already does: a temporary file first, then a rename over the old one, each flushed.
pub fn write<O: Ops>(ops: &mut O, dir: &Path, slot: Slot) -> io::Result<bool> {
    let path = dir.join(FILE);
    let now = std::fs::read_to_string(&path).ok();
    if now.as_deref().and_then(parse) == Some(partition(slot)) {
        return Ok(false);
    }
    let tmp = dir.join("autoboot.tmp");
    ops.write(&tmp, render(slot).as_bytes())?;
    ops.rename(&tmp, &path)?;
    ops.sync_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::RealOps;
    use crate::EntrySpec;

    fn spec(v: &str) -> EntrySpec {
        EntrySpec {
            version: v.into(),
            linux: "/vmlinuz".into(),
            initrd: "/initrd.img".into(),
            options: "console=ttyS1".into(),
        }
    }

    fn card(tag: &str) -> (std::path::PathBuf, Entries<RealOps>) {
        let dir = std::env::temp_dir().join(format!("cairn-autoboot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Entries::at(&dir);
        e.add_committed(Slot::A, &spec("1")).unwrap();
        (dir, e)
    }

    #[test]
    fn render_and_parse() {
        assert_eq!(parse(&render(Slot::A)), Some(2));
        assert_eq!(parse(&render(Slot::B)), Some(3));
        assert!(render(Slot::A).contains("tryboot_a_b=1\n"));
        assert!(render(Slot::B).contains("[tryboot]\nboot_partition=2\n"));
        assert_eq!(parse("[tryboot]\nboot_partition=3\n"), None);
        assert_eq!(parse("boot_partition=x\n"), None);
        assert_eq!(slot_of(partition(Slot::B)), Some(Slot::B));
        assert_eq!(slot_of(1), None);
    }

    #[test]
    fn committed_boot_changes_nothing() {
        let (dir, mut e) = card("committed");
        let a = reconcile(&mut e, Slot::A, Some(2)).unwrap();
        assert_eq!(a, Action::Boot { next_boot: Slot::A });
        let mut ops = RealOps;
        assert!(write(&mut ops, &dir, Slot::A).unwrap(), "first write");
        assert!(!write(&mut ops, &dir, Slot::A).unwrap(), "already says so");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Update to B, trial boot, commit; and a trial that never commits falls back to A.
    #[test]
    fn trial_takes_its_try_and_points_back_at_the_committed_slot() {
        let (dir, mut e) = card("trial");
        e.add_trial(Slot::B, &spec("2"), 1).unwrap();
        // The update wrote autoboot.txt = B and rebooted: the firmware started B.
        let a = reconcile(&mut e, Slot::B, Some(3)).unwrap();
        assert_eq!(
            a,
            Action::Boot { next_boot: Slot::A },
            "a crash now boots A"
        );
        // The trial crashed: the firmware starts A, which the entries want.
        let a = reconcile(&mut e, Slot::A, Some(2)).unwrap();
        assert_eq!(a, Action::Boot { next_boot: Slot::A });
        std::fs::remove_dir_all(&dir).unwrap();

        let (dir, mut e) = card("commit");
        e.add_trial(Slot::B, &spec("2"), 1).unwrap();
        reconcile(&mut e, Slot::B, Some(3)).unwrap();
        e.commit(Slot::B).unwrap();
        e.forget(Slot::A).unwrap();
        let a = reconcile(&mut e, Slot::B, Some(2)).unwrap();
        assert_eq!(a, Action::Boot { next_boot: Slot::B }, "committed B stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A power cut between the entries and autoboot.txt: stage 1 sends the firmware to the
    /// slot the entries want, once; if the firmware cannot boot it, no reboot loop.
    #[test]
    fn power_cut_before_autoboot_is_finished_by_stage_1() {
        let (dir, mut e) = card("cut");
        e.add_trial(Slot::B, &spec("2"), 1).unwrap();
        let a = reconcile(&mut e, Slot::A, Some(2)).unwrap();
        assert_eq!(a, Action::Reboot { slot: Slot::B });
        // autoboot.txt says B but the firmware started A again: B's partition is not
        // bootable; its try counts as used and A boots on.
        let a = reconcile(&mut e, Slot::A, Some(3)).unwrap();
        assert_eq!(a, Action::Boot { next_boot: Slot::A });
        let first = e.load().unwrap().into_iter().next().unwrap();
        assert_eq!(first.slot, Slot::A);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
