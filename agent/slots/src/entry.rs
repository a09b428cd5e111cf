//! One boot loader entry: its file name (slot and boot counter) and the keys we read.

use std::cmp::Ordering;
use std::fmt;

use crate::{Slot, SlotState};

/// A boot counter (`+LEFT-DONE` in the file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// A `loader/entries/slot-<x>[+L[-D]].conf` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub slot: Slot,
    pub tries: Option<Tries>,
    pub sort_key: Option<String>,
    pub version: Option<String>,
}

impl Entry {
    /// Parses a file name; `None` for files that are not slot entries.
    pub fn parse_name(file: &str) -> Option<(Slot, Option<Tries>)> {
        let lower = file.to_ascii_lowercase();
        let stem = lower.strip_prefix("slot-")?.strip_suffix(".conf")?;
        let (slot, counter) = match stem.split_once('+') {
            Some((s, c)) => (s, Some(c)),
            None => (stem, None),
        };
        let slot = match slot {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => return None,
        };
        let tries = match counter {
            None => None,
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l, d),
                    None => (c, "0"),
                };
                Some(Tries {
                    left: number(left)?,
                    done: number(done)?,
                })
            }
        };
        Some((slot, tries))
    }

    /// The file name for `slot` with `tries`.
    pub fn name(slot: Slot, tries: Option<Tries>) -> String {
        match tries {
            None => format!("slot-{slot}.conf"),
            Some(t) if t.done == 0 => format!("slot-{slot}+{}.conf", t.left),
            Some(t) => format!("slot-{slot}+{}-{}.conf", t.left, t.done),
        }
    }

    /// Parses an entry from its file name and contents.
    pub fn parse(file: &str, body: &str) -> Option<Entry> {
        let (slot, tries) = Entry::parse_name(file)?;
        let mut e = Entry {
            file: file.to_string(),
            slot,
            tries,
            sort_key: None,
            version: None,
        };
        for line in body.lines() {
            let line = line.trim();
            let (key, value) = match line.split_once([' ', '\t']) {
                Some((k, v)) => (k, v.trim()),
                None => continue,
            };
            match key {
                "sort-key" => e.sort_key = Some(value.to_string()),
                "version" => e.version = Some(value.to_string()),
                _ => {}
            }
        }
        Some(e)
    }

    /// A counter with no tries left: the boot chain orders it after every good entry.
    pub fn is_bad(&self) -> bool {
        matches!(self.tries, Some(t) if t.left == 0)
    }

    pub fn state(&self) -> SlotState {
        match self.tries {
            None => SlotState::Committed,
            Some(t) if t.left == 0 => SlotState::Failed(t),
            Some(t) => SlotState::Trial(t),
        }
    }

    /// The generation encoded in a `cairn-NNNNNN` sort key (newer generations sort first).
    pub fn generation(&self) -> Option<u32> {
        let n: u32 = self
            .sort_key
            .as_deref()?
            .strip_prefix("cairn-")?
            .parse()
            .ok()?;
        MAX_GENERATION.checked_sub(n)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)
    }
}

/// Sort keys are `cairn-<MAX_GENERATION - generation>`, six digits.
pub const MAX_GENERATION: u32 = 999_999;

pub fn sort_key(generation: u32) -> String {
    format!(
        "cairn-{:06}",
        MAX_GENERATION - generation.min(MAX_GENERATION)
    )
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The order in which a boot loader following the Boot Loader Specification (and
/// systemd-boot 252) tries entries: good before bad, entries with a sort key before those
/// without, sort keys ascending, then file names descending, then more tries left first.
pub fn boot_order(a: &Entry, b: &Entry) -> Ordering {
    a.is_bad()
        .cmp(&b.is_bad())
        .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
        .then_with(|| a.sort_key.cmp(&b.sort_key))
        .then_with(|| {
            b.file
                .to_ascii_lowercase()
                .cmp(&a.file.to_ascii_lowercase())
        })
        .then_with(|| {
            let left = |e: &Entry| e.tries.map_or(u32::MAX, |t| t.left);
            left(b).cmp(&left(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, slot, tries) in [
            ("slot-a.conf", Slot::A, None),
            ("slot-b+1.conf", Slot::B, Some(Tries { left: 1, done: 0 })),
            ("slot-b+0-1.conf", Slot::B, Some(Tries { left: 0, done: 1 })),
            (
                "slot-a+2-13.conf",
                Slot::A,
                Some(Tries { left: 2, done: 13 }),
            ),
        ] {
            assert_eq!(Entry::parse_name(name), Some((slot, tries)), "{name}");
            assert_eq!(Entry::name(slot, tries), name);
        }
        // FAT may hand names back in upper case.
        assert_eq!(
            Entry::parse_name("SLOT-B+1.CONF"),
            Some((Slot::B, Some(Tries { left: 1, done: 0 })))
        );
    }

    #[test]
    fn foreign_and_malformed_names_are_not_slot_entries() {
        for name in [
            "slot-c.conf",
            "slot-a.conf.tmp",
            "slot-a+.conf",
            "slot-a+1-.conf",
            "slot-a+x.conf",
            "slot-a+1-2-3.conf",
            "debian.conf",
            "slot-a",
        ] {
            assert_eq!(Entry::parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn reads_sort_key_and_version() {
        let e = Entry::parse(
            "slot-b+1.conf",
            "title Cairn 0.2.0 (slot B)\nversion 0.2.0\nsort-key cairn-999997\nlinux /b/vmlinuz\n",
        )
        .unwrap();
        assert_eq!(e.version.as_deref(), Some("0.2.0"));
        assert_eq!(e.generation(), Some(2));
        assert_eq!(e.state(), SlotState::Trial(Tries { left: 1, done: 0 }));
    }

    fn entry(file: &str, generation: Option<u32>) -> Entry {
        let (slot, tries) = Entry::parse_name(file).unwrap();
        Entry {
            file: file.into(),
            slot,
            tries,
            sort_key: generation.map(sort_key),
            version: None,
        }
    }

    #[test]
    fn newest_good_entry_boots_first() {
        let committed = entry("slot-a.conf", Some(1));
        let trial = entry("slot-b+1.conf", Some(2));
        let failed = entry("slot-b+0-1.conf", Some(2));
        assert_eq!(boot_order(&trial, &committed), Ordering::Less);
        assert_eq!(boot_order(&failed, &committed), Ordering::Greater);
        // A bad entry loses even against an entry without a sort key.
        assert_eq!(
            boot_order(&failed, &entry("slot-a.conf", None)),
            Ordering::Greater
        );
        // Sort keys beat file names.
        assert_eq!(
            boot_order(
                &entry("slot-a.conf", Some(3)),
                &entry("slot-b.conf", Some(2))
            ),
            Ordering::Less
        );
    }
}
