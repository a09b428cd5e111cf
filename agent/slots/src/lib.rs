//! The A/B slot state of a Cairn node, kept as boot loader entries with boot counting.
//!
//! The state lives where the boot chain reads it: one [Boot Loader Specification] entry per
//! bootable slot in `loader/entries/` on the boot partition.
//!
//! ```text
//! slot-a.conf       committed: no counter, so booting it never flips slots
//! slot-b+1.conf     on trial: one try left
//! slot-b+0-1.conf   the try was used and never committed: "bad", ordered after every good entry
//! ```
//!
//! The boot chain boots the first entry in this order: entries with tries left (or no
//! counter) before bad ones, then by `sort-key` ascending. Every new entry gets a sort key
//! below all existing ones (`cairn-<999999 - generation>`), so the newest good entry wins.
//! On UEFI boards systemd-boot does the choosing and decrements the counter (renames the
//! file) before it starts the kernel; where there is no boot loader the initramfs does the
//! same with [`Entries::boot_next`]. Either way the running system sees the same files.
//!
//! An update of the inactive slot `Y` while `X` runs is four steps, each one of them safe to
//! interrupt by a power cut (see the tests, which cut after every single file operation):
//!
//! 1. [`Entries::forget`]`(Y)`: no entry points at `Y` while its partition is rewritten.
//! 2. the caller writes `Y`'s root and boot files;
//! 3. [`Entries::add_trial`]`(Y)`: `slot-Y+1.conf`, written under a temporary name first;
//!    the next boot tries `Y` once;
//! 4. on `Y`, once healthy, [`Entries::commit`]`(Y)`: drop the counter, then forget `X`.
//!    A trial that is not committed leaves a bad entry: the boot after it is `X` again, and
//!    [`Status`] reports the rollback.
//!
//! [Boot Loader Specification]: https://uapi-group.org/specifications/specs/boot_loader_specification/

pub mod autoboot;
mod entries;
mod entry;
pub mod fat;
pub mod mbr;

pub use entries::{Entries, EntrySpec, Ops, RealOps};
pub use entry::{Entry, Tries};

use std::fmt;

/// A root filesystem slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn parse(s: &str) -> Option<Slot> {
        match s.trim() {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot that is not this one.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The partition label of the slot's read-only root.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "cairn-a",
            Slot::B => "cairn-b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the entries say about one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// No entry: never installed, or forgotten before being rewritten.
    Empty,
    /// Committed: boots whenever it is the newest good entry.
    Committed,
    /// On trial with tries left.
    Trial(Tries),
    /// A trial that used its tries without a commit.
    Failed(Tries),
}

/// The slot state as the running system sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The slot this system booted (from `cairn.slot=`).
    pub running: Slot,
    pub running_state: SlotState,
    pub running_version: Option<String>,
    pub other_state: SlotState,
    pub other_version: Option<String>,
}

impl Status {
    /// Reads the state of both slots from `entries`, for a system running `running`.
    pub fn read<O: Ops>(entries: &Entries<O>, running: Slot) -> std::io::Result<Status> {
        let all = entries.load()?;
        // `load` returns boot order, so when a torn commit left two entries for one slot
        // the good one comes first and counts.
        let find = |slot: Slot| match all.iter().find(|e| e.slot == slot) {
            None => (SlotState::Empty, None),
            Some(e) => (e.state(), e.version.clone()),
        };
        let (running_state, running_version) = find(running);
        let (other_state, other_version) = find(running.other());
        Ok(Status {
            running,
            running_state,
            running_version,
            other_state,
            other_version,
        })
    }

    /// This boot is a trial that has not been committed yet. The loader has already taken
    /// the try, so the entry reads as failed until [`Entries::commit`].
    pub fn on_trial(&self) -> bool {
        matches!(
            self.running_state,
            SlotState::Trial(_) | SlotState::Failed(_)
        )
    }

    /// The other slot's trial failed and this (committed) slot was booted instead.
    pub fn rolled_back(&self) -> bool {
        self.running_state == SlotState::Committed
            && matches!(self.other_state, SlotState::Failed(_))
    }
}
