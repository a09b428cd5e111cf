//! The `loader/entries` directory on the boot partition, and the steps of an update.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use crate::entry::{self, Entry, Tries};
use crate::Slot;

/// File operations on the boot partition. [`RealOps`] makes each one durable before it
/// returns; tests substitute operations that stop at a chosen point, like a power cut.
pub trait Ops {
    /// Creates or replaces `path` with `bytes`, flushed to disk.
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// Flushes the directory itself (names created, renamed or removed in it).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct RealOps;

impl Ops for RealOps {
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = fs::File::create(path)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

/// What goes into a slot's entry besides its name and sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySpec {
    /// The Cairn version in the slot.
    pub version: String,
    /// Kernel path on the boot partition, e.g. `/b/vmlinuz`.
    pub linux: String,
    /// Initramfs path on the boot partition, e.g. `/b/initrd.img`.
    pub initrd: String,
    /// The kernel command line, without `cairn.slot=` (added here).
    pub options: String,
}

impl EntrySpec {
    /// The entry file's contents for `slot` at `generation`.
    pub fn render(&self, slot: Slot, generation: u32) -> String {
        let options = format!("{} cairn.slot={slot}", self.options.trim());
        format!(
            "title Cairn {v} (slot {s})\nversion {v}\nsort-key {key}\nlinux {linux}\ninitrd {initrd}\noptions {o}\n",
            v = self.version,
            s = slot.as_str().to_ascii_uppercase(),
            key = entry::sort_key(generation),
            linux = self.linux,
            initrd = self.initrd,
            o = options.trim(),
        )
    }
}

/// The entries directory (`<boot>/loader/entries`).
pub struct Entries<O: Ops = RealOps> {
    dir: PathBuf,
    ops: O,
}

impl Entries<RealOps> {
    /// The entries of the boot partition mounted at `boot`.
    pub fn at(boot: &Path) -> Entries<RealOps> {
        Entries::with_ops(boot.join("loader/entries"), RealOps)
    }
}

impl<O: Ops> Entries<O> {
    pub fn with_ops(dir: PathBuf, ops: O) -> Entries<O> {
        Entries { dir, ops }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every slot entry, in the order the boot chain tries them.
    pub fn load(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for de in self.files()? {
            let Some(name) = de.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if Entry::parse_name(&name).is_none() {
                continue;
            }
            let body = fs::read_to_string(de.path())?;
            if let Some(e) = Entry::parse(&name, &body) {
                out.push(e);
            }
        }
        out.sort_by(entry::boot_order);
        Ok(out)
    }

    /// Removes every entry of `slot` (and half-written ones), so that nothing boots it
    /// while its partition is rewritten.
    pub fn forget(&mut self, slot: Slot) -> io::Result<()> {
        let mut removed = false;
        for e in self.load()?.into_iter().filter(|e| e.slot == slot) {
            self.ops.remove(&self.dir.join(&e.file))?;
            removed = true;
        }
        for tmp in self.temporaries(slot)? {
            self.ops.remove(&tmp)?;
            removed = true;
        }
        if removed {
            self.ops.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Adds `slot` on trial with `tries` boots to prove itself, ordered before every
    /// existing entry. The slot must have been [`forget`](Self::forget)-ed first.
    pub fn add_trial(&mut self, slot: Slot, spec: &EntrySpec, tries: u32) -> io::Result<Entry> {
        let all = self.load()?;
        if let Some(e) = all.iter().find(|e| e.slot == slot) {
            return Err(io::Error::other(format!(
                "slot {slot} still has the entry {e}; forget it before writing the slot"
            )));
        }
        let generation = all
            .iter()
            .filter_map(Entry::generation)
            .max()
            .map_or(0, |g| g + 1);
        let tries = Tries {
            left: tries.max(1),
            done: 0,
        };
        let name = Entry::name(slot, Some(tries));
        let body = spec.render(slot, generation);
        self.install(&name, &body)?;
        Ok(Entry::parse(&name, &body).expect("rendered entries parse"))
    }

    /// Writes a committed entry for `slot` (the image builder's first slot).
    pub fn add_committed(&mut self, slot: Slot, spec: &EntrySpec) -> io::Result<()> {
        self.install(&Entry::name(slot, None), &spec.render(slot, 0))
    }

    /// Writes entry `name` whole: under `<name>.tmp` first (not ending in `.conf`, so boot
    /// loaders skip it), then renamed into place.
    fn install(&mut self, name: &str, body: &str) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        self.ops.write(&tmp, body.as_bytes())?;
        self.ops.rename(&tmp, &self.dir.join(name))?;
        self.ops.sync_dir(&self.dir)
    }

    /// Commits `slot`: its entry loses the boot counter, so it boots from now on. Idempotent;
    /// also finishes a commit that a power cut interrupted halfway through the rename.
    pub fn commit(&mut self, slot: Slot) -> io::Result<()> {
        let mine: Vec<Entry> = self
            .load()?
            .into_iter()
            .filter(|e| e.slot == slot)
            .collect();
        if mine.is_empty() {
            return Err(io::Error::other(format!(
                "slot {slot} has no entry to commit"
            )));
        }
        let committed = Entry::name(slot, None);
        if !mine.iter().any(|e| e.tries.is_none()) {
            let trial = &mine[0];
            self.ops
                .rename(&self.dir.join(&trial.file), &self.dir.join(&committed))?;
            self.ops.sync_dir(&self.dir)?;
        }
        let mut removed = false;
        for e in mine
            .iter()
            .filter(|e| e.tries.is_some() && e.file != committed)
        {
            self.ops.remove(&self.dir.join(&e.file))?;
            removed = true;
        }
        if removed {
            self.ops.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// What a boot loader does, for boards without one: picks the first entry in boot
    /// order and, if it is on trial, takes one try (renames it with the counter moved on)
    /// before returning it. `None` when there are no slot entries.
    pub fn boot_next(&mut self) -> io::Result<Option<Entry>> {
        let Some(mut first) = self.load()?.into_iter().next() else {
            return Ok(None);
        };
        if let Some(t) = first.tries {
            let next = Tries {
                left: t.left.saturating_sub(1),
                done: t.done.saturating_add(1),
            };
            let name = Entry::name(first.slot, Some(next));
            self.ops
                .rename(&self.dir.join(&first.file), &self.dir.join(&name))?;
            self.ops.sync_dir(&self.dir)?;
            first.file = name;
            first.tries = Some(next);
        }
        Ok(Some(first))
    }

    /// The directory's files; none if it does not exist yet.
    fn files(&self) -> io::Result<Vec<fs::DirEntry>> {
        match fs::read_dir(&self.dir) {
            Ok(rd) => rd.collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn temporaries(&self, slot: Slot) -> io::Result<Vec<PathBuf>> {
        let prefix = format!("slot-{slot}");
        let mut out = Vec::new();
        for de in self.files()? {
            let lower = de.file_name().to_string_lossy().to_ascii_lowercase();
            if lower.starts_with(&prefix) && lower.ends_with(".tmp") {
                out.push(de.path());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
