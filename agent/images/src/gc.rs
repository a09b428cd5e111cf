//! Image garbage collection: which unused images go when the data partition fills up, and the
//! bookkeeping it needs (when each image was last used, what each layer costs on disk).
//!
//! **Choosing.** [`Store::collect_garbage`] is asked to free a number of bytes. Layers the
//! state knows but no image references (left by removals and by pulls that moved a tag) go
//! first. Then whole images (every name of an image ID), least recently used first, images no
//! container ever started from before all others and by when they were stored, as the
//! kubelet's image GC orders them. Never chosen: images in use (a container on the node was
//! made of exactly their layers, or the caller names them), pinned images (imported from an
//! archive that is still there unchanged) and images stored or used less than the minimum age
//! ago. The collection stops once enough is freed.
//!
//! **What an image costs** is what removing it really frees: a layer is deleted only when no
//! remaining image and no container uses it, so a shared layer is counted once, by the last
//! image to go, and an image whose layers all stay (they are shared with images that stay) is
//! kept rather than removed for nothing. Layer sizes are measured when a layer is unpacked
//! (blocks on disk, hard links once) and kept in `images.json`.
//!
//! **Never on a damaged state.** Only layers and blobs the state accounts for are deleted;
//! directories under `layers/` it does not know are left alone. A missing or empty
//! `images.json` beside unpacked layers, one that does not parse, or an image whose config
//! cannot be read make the collection refuse with [`Error::Damaged`] and delete nothing.
//!
//! **Few writes.** Uses are kept in memory ([`Store::mark_used`]) and written with the next
//! write of `images.json` (an import, a pull, a removal, a collection) or by
//! [`Store::flush_usage`], which the kubelet calls at most hourly: starting a container never
//! writes to the flash by itself. A crash forgets at most the uses since the last write;
//! images of containers still on the node are protected regardless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::oci::ConfigFile;
use crate::store::{io_err, remove_path, sync_dir, FileStamp, State, LAYERS, STATE};
use crate::unpack::disk_usage;
use crate::{Error, Store};

/// Now in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    unix_seconds(SystemTime::now())
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the store keeps in memory between writes of `images.json`.
#[derive(Debug)]
pub(crate) struct Memo {
    /// Image ID → last use (Unix seconds) not written yet.
    last_used: HashMap<String, u64>,
    /// When the state was last written.
    written: Instant,
    /// When the store was opened: the "stored at" of images recorded without one.
    opened: u64,
}

impl Memo {
    pub(crate) fn new(now: u64) -> Memo {
        Memo {
            last_used: HashMap::new(),
            written: Instant::now(),
            opened: now,
        }
    }

    /// Puts the uses recorded in memory into the state about to be written, and forgets uses
    /// of images the state no longer has.
    pub(crate) fn merge_into(&self, state: &mut State) {
        let ids: HashSet<&str> = state.images.values().map(|r| r.id.as_str()).collect();
        for (id, &t) in &self.last_used {
            if ids.contains(id.as_str()) {
                let e = state.last_used.entry(id.clone()).or_insert(t);
                *e = (*e).max(t);
            }
        }
        state.last_used.retain(|id, _| ids.contains(id.as_str()));
    }

    /// The state was written with the uses.
    pub(crate) fn written(&mut self) {
        self.last_used.clear();
        self.written = Instant::now();
    }
}

/// How full a filesystem is (statvfs), in the kubelet's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size in bytes.
    pub capacity: u64,
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
    /// Inodes in all; 0 for filesystems without a fixed number.
    pub inodes: u64,
    pub inodes_free: u64,
}

impl FsUsage {
    /// The filesystem `path` is on.
    pub fn of(path: &Path) -> Result<FsUsage, Error> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|e| io_err(path)(e.into()))?;
        let unit = st.fragment_size() as u64;
        Ok(FsUsage {
            capacity: st.blocks() as u64 * unit,
            available: (st.blocks_available() as u64 * unit).min(st.blocks() as u64 * unit),
            inodes: st.files() as u64,
            inodes_free: st.files_free() as u64,
        })
    }

    /// Percent of the capacity in use, as the kubelet counts it: 100 − available × 100 /
    /// capacity, rounded down (a filesystem of no size counts as full).
    pub fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 100;
        }
        100 - (self.available as u128 * 100 / self.capacity as u128) as u64
    }

    /// Bytes to free to come down to `percent` used.
    pub fn bytes_above(&self, percent: u64) -> u64 {
        let allowed_free = self.capacity as u128 * 100u128.saturating_sub(percent as u128) / 100;
        (allowed_free as u64).saturating_sub(self.available)
    }
}

/// What [`Store::collect_garbage`] is asked to do.
#[derive(Debug, Clone)]
pub struct GcRequest<'a> {
    /// Bytes to free (`u64::MAX`: every unused image).
    pub bytes_to_free: u64,
    /// Images stored or used less than this long ago are kept.
    pub min_age: Duration,
    /// The layer directories of every container on the node, running or not yet removed
    /// (what [`crate::Image::layers`] gave them): their images are in use and these layers are
    /// never deleted.
    pub containers: &'a [Vec<PathBuf>],
    /// Image IDs in use for other reasons (named by the pods bound to the node).
    pub in_use: &'a HashSet<String>,
    /// The time the ages are measured at.
    pub now: SystemTime,
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// The images removed, in the order they went.
    pub removed: Vec<RemovedImage>,
    /// Bytes freed on disk: layers, blobs, and layers no image referenced any more.
    pub freed: u64,
    /// Layers no image referenced that were deleted.
    pub unreferenced_layers: usize,
    /// Images kept because they are in use, pinned, or younger than the minimum age.
    pub in_use: usize,
    pub pinned: usize,
    pub recent: usize,
    /// Directories under `layers/` the state does not know, left alone.
    pub unknown_layers: usize,
}

/// One image a collection removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedImage {
    /// Image ID.
    pub id: String,
    /// The references it was stored under.
    pub names: Vec<String>,
    /// Bytes its removal freed (its layers no other image or container uses, its blobs).
    pub freed: u64,
}

impl Store {
    /// Records that a container starts from image `id` (`sha256:` config digest) now, in
    /// memory: it is written with the next write of `images.json` (see [`Store::flush_usage`]).
    pub fn mark_used(&self, id: &str) {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        memo.last_used.insert(id.to_owned(), unix_now());
    }

    /// Writes the uses recorded since `images.json` was last written, if there are any and
    /// that write is at least `every` ago. Returns whether it wrote.
    pub fn flush_usage(&self, every: Duration) -> Result<bool, Error> {
        {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            if memo.last_used.is_empty() || memo.written.elapsed() < every {
                return Ok(false);
            }
        }
        self.begin()?.commit()?;
        Ok(true)
    }

    /// How full the store's filesystem is.
    pub fn fs_usage(&self) -> Result<FsUsage, Error> {
        FsUsage::of(&self.root)
    }

    /// Frees up to `req.bytes_to_free` bytes: first layers no image references, then unused
    /// images least recently used first (see the module docs). The state is written before
    /// anything is deleted, so a crash leaves unreferenced layers for the next collection,
    /// never records of deleted layers. Refuses with [`Error::Damaged`], deleting nothing,
    /// when the state cannot be trusted.
    pub fn collect_garbage(&self, req: &GcRequest<'_>) -> Result<GcOutcome, Error> {
        let mut txn = self.begin()?;
        self.check_state(&txn.state)?;
        let layers_of = self.image_layers(&txn.state)?;
        let now = unix_seconds(req.now);
        let layers_dir = self.root.join(LAYERS);
        let mut changed = false;

        // Layers of containers, as diff ids.
        let container_layers: Vec<Vec<String>> = req
            .containers
            .iter()
            .map(|dirs| {
                dirs.iter()
                    .filter(|d| d.parent() == Some(layers_dir.as_path()))
                    .filter_map(|d| d.file_name())
                    .map(|n| format!("sha256:{}", n.to_string_lossy()))
                    .collect()
            })
            .collect();
        let protected: HashSet<String> = container_layers.iter().flatten().cloned().collect();

        // One candidate per image ID.
        let mut by_id: BTreeMap<String, (Candidate, Vec<String>)> = BTreeMap::new();
        {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            for (key, record) in &txn.state.images {
                let (c, names) = by_id.entry(record.id.clone()).or_insert_with(|| {
                    let layers = layers_of[&record.id].clone();
                    let in_use =
                        req.in_use.contains(&record.id) || container_layers.contains(&layers);
                    let last_used = txn.state.last_used.get(&record.id).copied();
                    let last_used = last_used.max(memo.last_used.get(&record.id).copied());
                    (
                        Candidate {
                            id: record.id.clone(),
                            layers,
                            blob_bytes: 0,
                            last_used: last_used.unwrap_or(0),
                            added: u64::MAX,
                            in_use,
                            pinned: false,
                        },
                        Vec::new(),
                    )
                });
                names.push(key.clone());
                c.added = c.added.min(record.added.unwrap_or(memo.opened));
                c.pinned |= record
                    .archive
                    .as_ref()
                    .is_some_and(|a| FileStamp::of(Path::new(&a.path)).as_ref() == Some(&a.stamp));
            }
            // A clock that went back (no RTC, a wrong time set) must not protect images for
            // as long as it was ahead: times in the future count from now.
            for (c, _) in by_id.values_mut() {
                if c.last_used > now {
                    c.last_used = now;
                    memo.last_used.insert(c.id.clone(), now);
                    changed = true;
                }
                if c.added > now {
                    c.added = now;
                    for r in txn.state.images.values_mut().filter(|r| r.id == c.id) {
                        r.added = Some(now);
                    }
                    changed = true;
                }
            }
        }
        for (c, _) in by_id.values_mut() {
            c.blob_bytes = self
                .blobs_of(&txn.state, &c.id)
                .iter()
                .filter_map(|d| self.blob_path(d))
                .map(|p| disk_usage(&p))
                .sum();
        }

        // Layers on disk: referenced by images, known but unreferenced, or unknown.
        let referenced: HashSet<&String> = layers_of.values().flatten().collect();
        let known: HashSet<String> = txn
            .state
            .layer_blobs
            .values()
            .map(|b| b.diff_id.clone())
            .chain(txn.state.layer_sizes.keys().cloned())
            .collect();
        let mut on_disk = Vec::new();
        for entry in fs::read_dir(&layers_dir).map_err(io_err(&layers_dir))? {
            let entry = entry.map_err(io_err(&layers_dir))?;
            on_disk.push(format!("sha256:{}", entry.file_name().to_string_lossy()));
        }
        let unknown = on_disk
            .iter()
            .filter(|d| !referenced.contains(d) && !known.contains(*d))
            .count();
        let unreferenced: Vec<String> = on_disk
            .iter()
            .filter(|d| !referenced.contains(d) && known.contains(*d) && !protected.contains(*d))
            .cloned()
            .collect();

        // What each layer costs (measured now for layers unpacked before sizes were kept).
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for diff in referenced
            .iter()
            .map(|d| d.as_str())
            .chain(unreferenced.iter().map(String::as_str))
        {
            let size = match txn.state.layer_sizes.get(diff) {
                Some(&size) => size,
                None => {
                    let Some(dir) = self.layer_dir(diff).filter(|d| d.is_dir()) else {
                        continue;
                    };
                    let size = disk_usage(&dir);
                    txn.state.layer_sizes.insert(diff.to_owned(), size);
                    changed = true;
                    size
                }
            };
            sizes.insert(diff.to_owned(), size);
        }
        let unreferenced_bytes: u64 = unreferenced.iter().filter_map(|d| sizes.get(d)).sum();

        let candidates: Vec<Candidate> = by_id.values().map(|(c, _)| c.clone()).collect();
        let choice = choose(
            &candidates,
            &sizes,
            &protected,
            req.bytes_to_free.saturating_sub(unreferenced_bytes),
            now,
            req.min_age.as_secs(),
        );
        let mut outcome = GcOutcome {
            in_use: choice.in_use,
            pinned: choice.pinned,
            recent: choice.recent,
            unknown_layers: unknown,
            ..GcOutcome::default()
        };
        if choice.remove.is_empty() && unreferenced.is_empty() {
            if changed {
                txn.commit()?;
            }
            return Ok(outcome);
        }

        // Forget the chosen images, then delete what nothing left uses.
        let chosen: HashSet<&str> = choice
            .remove
            .iter()
            .map(|(i, _)| candidates[*i].id.as_str())
            .collect();
        let mut blobs_gone: BTreeSet<String> = BTreeSet::new();
        for id in &chosen {
            blobs_gone.extend(self.blobs_of(&txn.state, id));
        }
        txn.state
            .images
            .retain(|_, r| !chosen.contains(r.id.as_str()));
        txn.state
            .last_used
            .retain(|id, _| !chosen.contains(id.as_str()));
        for id in txn
            .state
            .images
            .values()
            .map(|r| r.id.clone())
            .collect::<BTreeSet<_>>()
        {
            for d in self.blobs_of(&txn.state, &id) {
                blobs_gone.remove(&d);
            }
        }
        let still_used: HashSet<&String> = txn
            .state
            .images
            .values()
            .flat_map(|r| &layers_of[&r.id])
            .chain(&protected)
            .collect();
        let layers_gone: BTreeSet<String> = chosen
            .iter()
            .flat_map(|id| &layers_of[*id])
            .chain(&unreferenced)
            .filter(|d| !still_used.contains(d))
            .cloned()
            .collect();
        txn.state
            .layer_blobs
            .retain(|_, b| !layers_gone.contains(&b.diff_id));
        txn.state
            .layer_sizes
            .retain(|d, _| !layers_gone.contains(d));
        txn.state
            .imported
            .retain(|path, _| Path::new(path).exists());
        txn.save()?;

        for (i, freed) in &choice.remove {
            let (c, names) = &by_id[&candidates[*i].id];
            outcome.removed.push(RemovedImage {
                id: c.id.clone(),
                names: names.clone(),
                freed: *freed,
            });
        }
        for diff in &layers_gone {
            if let Some(dir) = self.layer_dir(diff).filter(|d| d.exists()) {
                outcome.freed += sizes.get(diff).copied().unwrap_or(0);
                remove_path(&dir)?;
            }
        }
        for digest in &blobs_gone {
            if let Some(path) = self.blob_path(digest).filter(|p| p.exists()) {
                outcome.freed += disk_usage(&path);
                remove_path(&path)?;
            }
        }
        outcome.unreferenced_layers = unreferenced.len();
        sync_dir(&layers_dir)?;
        txn.finish();
        Ok(outcome)
    }

    /// Refuses a state that cannot be the store's: a missing or empty `images.json` (no
    /// images, no record of a layer) beside unpacked layers. (One that does not parse never
    /// loads.) Only a first import cut short by a power loss leaves layers and no record
    /// legitimately; the next import that succeeds records them.
    pub(crate) fn check_state(&self, state: &State) -> Result<(), Error> {
        let path = self.root.join(STATE);
        let empty =
            state.images.is_empty() && state.layer_blobs.is_empty() && state.layer_sizes.is_empty();
        if !empty && path.exists() {
            return Ok(());
        }
        let layers = self.root.join(LAYERS);
        let count = fs::read_dir(&layers).map_err(io_err(&layers))?.count();
        if count == 0 {
            return Ok(());
        }
        let what = if path.exists() {
            "it records nothing"
        } else {
            "it is missing"
        };
        Err(Error::Damaged {
            path,
            reason: format!("{what}, but {count} layers are unpacked"),
        })
    }

    /// Image ID → its layers' diff ids, from each image's config. A config that cannot be
    /// read or parsed is [`Error::Damaged`]: without it, nothing can tell which layers the
    /// image needs.
    pub(crate) fn image_layers(
        &self,
        state: &State,
    ) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let mut out = BTreeMap::new();
        for (key, record) in &state.images {
            if out.contains_key(&record.id) {
                continue;
            }
            let damaged = |reason: String| Error::Damaged {
                path: self.root.join(STATE),
                reason: format!("the config {} of {key} {reason}", record.id),
            };
            let bytes = self
                .read_blob(&record.id)
                .map_err(|e| damaged(format!("cannot be read ({e})")))?;
            let config: ConfigFile = serde_json::from_slice(&bytes)
                .map_err(|e| damaged(format!("does not parse ({e})")))?;
            out.insert(record.id.clone(), config.rootfs.diff_ids);
        }
        Ok(out)
    }

    /// The blobs (config, manifest, index) of every record of image `id`.
    fn blobs_of(&self, state: &State, id: &str) -> BTreeSet<String> {
        state
            .images
            .values()
            .filter(|r| r.id == id)
            .flat_map(|r| [r.id.clone(), r.manifest.clone(), r.digest.clone()])
            .collect()
    }
}

/// One image as the choice sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: String,
    /// Diff ids.
    pub layers: Vec<String>,
    /// Its index, manifest and config on disk.
    pub blob_bytes: u64,
    /// Unix seconds; 0: no container started from it yet.
    pub last_used: u64,
    /// Unix seconds.
    pub added: u64,
    pub in_use: bool,
    pub pinned: bool,
}

/// The images to remove and what it frees.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Candidate indexes in the order they go, each with the bytes its removal frees.
    pub remove: Vec<(usize, u64)>,
    pub freed: u64,
    /// Candidates never eligible, by reason.
    pub in_use: usize,
    pub pinned: usize,
    pub recent: usize,
}

/// Chooses images to remove until `to_free` bytes are freed: eligible ones (not in use, not
/// pinned, stored and used at least `min_age` seconds before `now`), least recently used
/// first. A layer frees its size once no remaining image uses it and it is not `protected`
/// (a container's); an image whose removal would free none of its layers is kept.
pub(crate) fn choose(
    candidates: &[Candidate],
    sizes: &HashMap<String, u64>,
    protected: &HashSet<String>,
    to_free: u64,
    now: u64,
    min_age: u64,
) -> Choice {
    let distinct = |c: &Candidate| -> BTreeSet<String> { c.layers.iter().cloned().collect() };
    let mut users: HashMap<String, usize> = HashMap::new();
    for c in candidates {
        for l in distinct(c) {
            *users.entry(l).or_default() += 1;
        }
    }
    let mut choice = Choice::default();
    let mut eligible = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let young = |t: u64| now.saturating_sub(t) < min_age;
        if c.in_use {
            choice.in_use += 1;
        } else if c.pinned {
            choice.pinned += 1;
        } else if young(c.added) || (c.last_used != 0 && young(c.last_used)) {
            choice.recent += 1;
        } else {
            eligible.push(i);
        }
    }
    eligible.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        (a.last_used, a.added, &a.id).cmp(&(b.last_used, b.added, &b.id))
    });

    // Removes `i`: the bytes that frees given what is left in `users`.
    let remove = |users: &mut HashMap<String, usize>, i: usize| -> u64 {
        let c = &candidates[i];
        let mut freed = c.blob_bytes;
        for l in distinct(c) {
            let n = users.get_mut(&l).expect("counted");
            *n -= 1;
            if *n == 0 && !protected.contains(&l) {
                freed += sizes.get(&l).copied().unwrap_or(0);
            }
        }
        freed
    };
    let mut left = users.clone();
    let mut chosen = Vec::new();
    let mut freed = 0;
    for i in eligible {
        if freed >= to_free {
            break;
        }
        freed += remove(&mut left, i);
        chosen.push(i);
    }
    // Removing these frees none of their layers (each is still used by an image that stays,
    // or by a container): keep them.
    chosen.retain(|&i| {
        distinct(&candidates[i])
            .iter()
            .any(|l| left[l] == 0 && !protected.contains(l))
    });
    // What each of the rest frees, in order.
    let mut left = users;
    for i in chosen {
        let bytes = remove(&mut left, i);
        choice.freed += bytes;
        choice.remove.push((i, bytes));
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 120;
    const NOW: u64 = 1_800_000_000;

    fn image(id: &str, layers: &[&str], last_used: u64, added: u64) -> Candidate {
        Candidate {
            id: id.into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            blob_bytes: 0,
            last_used,
            added,
            in_use: false,
            pinned: false,
        }
    }

    fn sizes(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(l, s)| (l.to_string(), *s)).collect()
    }

    fn ids(candidates: &[Candidate], choice: &Choice) -> Vec<String> {
        choice
            .remove
            .iter()
            .map(|(i, _)| candidates[*i].id.clone())
            .collect()
    }

    const OLD: u64 = NOW - 86_400;

    #[test]
    fn least_recently_used_first_until_enough() {
        let images = vec![
            image("recent", &["r"], NOW - 600, OLD),
            image("never", &["n"], 0, OLD + 10),
            image("old", &["o"], NOW - 7_200, OLD),
            image("never-older", &["m"], 0, OLD),
        ];
        let sizes = sizes(&[("r", 100), ("n", 100), ("o", 100), ("m", 100)]);
        let none = HashSet::new();
        // Never-used images go first (the longest stored first), then by last use.
        let all = choose(&images, &sizes, &none, u64::MAX, NOW, MIN);
        assert_eq!(
            ids(&images, &all),
            ["never-older", "never", "old", "recent"]
        );
        assert_eq!(all.freed, 400);
        // Only as many as needed.
        let some = choose(&images, &sizes, &none, 150, NOW, MIN);
        assert_eq!(ids(&images, &some), ["never-older", "never"]);
        assert_eq!(some.remove, vec![(3, 100), (1, 100)]);
        assert!(choose(&images, &sizes, &none, 0, NOW, MIN)
            .remove
            .is_empty());
    }

    #[test]
    fn images_in_use_and_pinned_stay() {
        let mut images = vec![
            image("used", &["a"], 0, OLD),
            image("pinned", &["b"], 0, OLD),
            image("free", &["c"], 0, OLD),
        ];
        images[0].in_use = true;
        images[1].pinned = true;
        let sizes = sizes(&[("a", 10), ("b", 10), ("c", 10)]);
        let c = choose(&images, &sizes, &HashSet::new(), u64::MAX, NOW, MIN);
        assert_eq!(ids(&images, &c), ["free"]);
        assert_eq!((c.in_use, c.pinned, c.recent, c.freed), (1, 1, 0, 10));
    }

    #[test]
    fn shared_layers_are_freed_by_the_last_image_that_uses_them() {
        // a and b share the big base; c shares it with a running container (protected).
        let images = vec![
            image("a", &["base", "a-top"], 0, OLD),
            image("b", &["base", "b-top"], 0, OLD + 1),
            image("c", &["other-base", "c-top"], 0, OLD + 2),
        ];
        let sizes = sizes(&[
            ("base", 1000),
            ("a-top", 1),
            ("b-top", 2),
            ("other-base", 500),
            ("c-top", 3),
        ]);
        let protected: HashSet<String> = ["other-base".to_owned()].into();
        let c = choose(&images, &sizes, &protected, u64::MAX, NOW, MIN);
        assert_eq!(c.remove, vec![(0, 1), (1, 1002), (2, 3)]);
        assert_eq!(c.freed, 1006);
        // Freeing 2 bytes removes a (1) and b (1002): the base counts once, with b.
        let c = choose(&images, &sizes, &protected, 2, NOW, MIN);
        assert_eq!(c.remove, vec![(0, 1), (1, 1002)]);
    }

    #[test]
    fn images_whose_layers_all_stay_are_not_removed_for_nothing() {
        // "alias" has exactly the layers of the used image; "sub" only its base.
        let mut images = vec![
            image("used", &["base", "top"], 0, OLD),
            image("alias", &["base", "top"], 0, OLD),
            image("sub", &["base"], 0, OLD),
            image("other", &["x"], 0, OLD + 5),
        ];
        images[0].in_use = true;
        images[1].blob_bytes = 7;
        let sizes = sizes(&[("base", 100), ("top", 10), ("x", 50)]);
        let c = choose(&images, &sizes, &HashSet::new(), u64::MAX, NOW, MIN);
        assert_eq!(ids(&images, &c), ["other"]);
        assert_eq!(c.freed, 50);
        // A layer a container uses stays even when no image does.
        let images = vec![image("gone", &["kept-by-container"], 0, OLD)];
        let protected: HashSet<String> = ["kept-by-container".to_owned()].into();
        let sizes = self::sizes(&[("kept-by-container", 100)]);
        let c = choose(&images, &sizes, &protected, u64::MAX, NOW, MIN);
        assert!(c.remove.is_empty(), "{c:?}");
    }

    #[test]
    fn the_minimum_age_counts_from_storing_and_from_the_last_use() {
        let images = vec![
            image("just-pulled", &["a"], 0, NOW - 30),
            image("just-used", &["b"], NOW - 60, OLD),
            image("aged", &["c"], NOW - MIN, NOW - MIN),
        ];
        let sizes = sizes(&[("a", 1), ("b", 1), ("c", 1)]);
        let c = choose(&images, &sizes, &HashSet::new(), u64::MAX, NOW, MIN);
        assert_eq!(ids(&images, &c), ["aged"]);
        assert_eq!(c.recent, 2);
        // With no minimum age all three may go.
        let c = choose(&images, &sizes, &HashSet::new(), u64::MAX, NOW, 0);
        assert_eq!(c.remove.len(), 3);
    }

    #[test]
    fn usage_in_the_kubelets_terms() {
        let u = FsUsage {
            capacity: 1000,
            available: 140,
            inodes: 0,
            inodes_free: 0,
        };
        assert_eq!(u.used_percent(), 86);
        // Down to 80% used means 200 available: 60 to free.
        assert_eq!(u.bytes_above(80), 60);
        assert_eq!(u.bytes_above(90), 0);
        let empty = FsUsage { capacity: 0, ..u };
        assert_eq!(empty.used_percent(), 100);
    }
}
