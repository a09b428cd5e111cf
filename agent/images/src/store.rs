//! The store: its files, the writer lock, imports of archives, lookups, removal and pruning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::gc::{unix_now, Memo};
use crate::oci::{self, ConfigFile, Descriptor, Index, Kind, Manifest};
use crate::reference::{is_digest, is_sha256_hex, Reference};
use crate::stream::{decoder, sha256_digest, sniff, Compression, HashReader};
use crate::unpack::{disk_usage, unpack, UnpackError};
use crate::{Error, Image, ImageConfig, ImageSummary, Imported, Platform};

pub(crate) const STATE: &str = "images.json";
const STATE_TMP: &str = ".images.json.tmp";
const LOCK: &str = "lock";
const BLOBS: &str = "blobs/sha256";
pub(crate) const LAYERS: &str = "layers";
const TMP: &str = "tmp";
/// Deepest index-in-index nesting followed.
const MAX_NESTING: usize = 4;
/// Largest index, manifest or config accepted (they are held in memory).
pub(crate) const MAX_DOCUMENT: u64 = 8 * 1024 * 1024;
/// Archive file names `import_dir` picks up.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar", ".tar.zst", ".tar.zstd", ".tar.gz", ".tgz"];

/// Writers of every store in this process take this first, then the `flock` (which
/// serialises against other processes; two descriptors of one process also exclude each
/// other, but threads sharing a store would not).
static WRITERS: Mutex<()> = Mutex::new(());

/// The node's image store. Cheap to share: it holds a path, a platform and the image uses
/// not written yet (shared by clones); every call reads what it needs from disk.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) root: PathBuf,
    platform: Platform,
    pub(crate) memo: Arc<Mutex<Memo>>,
}

/// `images.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct State {
    /// Normalised reference → image.
    #[serde(default)]
    pub(crate) images: BTreeMap<String, Record>,
    /// Compressed layer blob digest → what it unpacked to (the blob itself is not kept).
    #[serde(default)]
    pub(crate) layer_blobs: BTreeMap<String, LayerBlob>,
    /// Archive path → size and mtime when it was imported by `import_dir`.
    #[serde(default)]
    pub(crate) imported: BTreeMap<String, FileStamp>,
    /// Image ID → when a container last started from it (Unix seconds). Uses are kept in
    /// memory and written with the next write of this file (see [`crate::gc`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) last_used: BTreeMap<String, u64>,
    /// Diff id → bytes the unpacked layer takes on disk (measured when it is unpacked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) layer_sizes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// Config digest.
    pub(crate) id: String,
    /// The platform manifest's digest.
    pub(crate) manifest: String,
    /// Top-level digest: the index or manifest imported or pulled.
    pub(crate) digest: String,
    size: u64,
    /// When the image was first stored (Unix seconds); absent in stores older than the
    /// garbage collector, which counts such images as added when the store was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) added: Option<u64>,
    /// The archive it was imported from, as it was then: the image is pinned (never
    /// garbage-collected) while that file is still there unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) archive: Option<Source>,
}

/// An archive file as imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Source {
    pub(crate) path: String,
    #[serde(flatten)]
    pub(crate) stamp: FileStamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayerBlob {
    pub(crate) diff_id: String,
    size: u64,
    media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileStamp {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    /// The file's stamp now, `None` when it is not a readable regular file.
    pub(crate) fn of(path: &Path) -> Option<FileStamp> {
        let meta = fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(FileStamp {
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root` for a node of `platform`, and removes
    /// what an interrupted writer left in `tmp/` (waiting for a writer still at work).
    pub fn open(root: &Path, platform: Platform) -> Result<Store, Error> {
        let store = Store {
            root: root.to_owned(),
            platform,
            memo: Arc::new(Mutex::new(Memo::new(unix_now()))),
        };
        for dir in [BLOBS, LAYERS, TMP] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let _lock = store.write_lock()?;
        let tmp = root.join(TMP);
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            remove_path(&path)?;
        }
        let _ = fs::remove_file(root.join(STATE_TMP));
        store.load()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The platform images are imported for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Imports every image of an archive: an OCI image layout in a tar (`oci-layout`,
    /// `index.json`, `blobs/`) or a `docker save` archive (`manifest.json` with `Config`,
    /// `RepoTags`, `Layers`), the tar possibly zstd- or gzip-compressed as a whole
    /// (`.tar.zst`, `.tar.gz`; told apart by content, not by name).
    ///
    /// Names come from `index.json`'s annotations: `io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name` when it is a full reference (not just a tag);
    /// a Docker archive's from `RepoTags`. From a multi-architecture index only the node
    /// platform's manifest is imported; none for it is [`Error::WrongPlatform`].
    ///
    /// All or nothing: on any error no image of the archive is recorded and the layers and
    /// blobs this import added are removed.
    pub fn import_archive(&self, path: &Path) -> Result<Vec<Imported>, Error> {
        self.import_file(path, None)
    }

    /// Imports every archive (`*.tar`, `*.oci.tar`, `*.tar.zst`, `*.tar.gz`) in `dir`, in
    /// name order, skipping files imported before with the same size and mtime (recorded in
    /// the store, so a reboot does not import them again). Returns one result per file
    /// imported now; a failed file is not recorded, so it is tried again next time.
    ///
    /// Images imported this way are pinned: garbage collection leaves them alone while their
    /// archive is still there unchanged (they could not come back without it).
    pub fn import_dir(&self, dir: &Path) -> Vec<(PathBuf, Result<Vec<Imported>, Error>)> {
        let mut results = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                results.push((dir.to_owned(), Err(io_err(dir)(e))));
                return results;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                !name.starts_with('.') && ARCHIVE_SUFFIXES.iter().any(|s| name.ends_with(s))
            })
            .collect();
        files.sort();
        let state = match self.load() {
            Ok(state) => state,
            Err(e) => {
                results.push((dir.to_owned(), Err(e)));
                return results;
            }
        };
        for path in files {
            let meta = match fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) => {
                    results.push((path.clone(), Err(io_err(&path)(e))));
                    continue;
                }
            };
            let key = fs::canonicalize(&path)
                .unwrap_or_else(|_| path.clone())
                .to_string_lossy()
                .into_owned();
            let stamp = FileStamp {
                size: meta.size(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
            };
            if state.imported.get(&key) == Some(&stamp) {
                continue;
            }
            let result = self.import_file(&path, Some(Source { path: key, stamp }));
            results.push((path, result));
        }
        results
    }

    /// The image stored under `reference`: a reference (normalised first, so `busybox`
    /// finds `docker.io/library/busybox:latest`), `name@sha256:...` (matching the index or
    /// manifest digest of any tag of that repository), or an image ID (`sha256:<config>`).
    pub fn resolve(&self, reference: &str) -> Result<Image, Error> {
        let state = self.load()?;
        let (key, record) = find(&state, reference)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(reference.to_owned()))?;
        let config = self.read_blob(&record.id)?;
        let config: ConfigFile = serde_json::from_slice(&config).map_err(|e| Error::BadImage {
            what: format!("{key}: config {}", record.id),
            reason: e.to_string(),
        })?;
        let mut layers = Vec::new();
        for diff_id in &config.rootfs.diff_ids {
            let dir = self.layer_dir(diff_id).ok_or_else(|| Error::BadImage {
                what: key.clone(),
                reason: format!("bad diff id {diff_id:?}"),
            })?;
            if !dir.is_dir() {
                return Err(Error::BadImage {
                    what: key.clone(),
                    reason: format!("layer {diff_id} is missing from the store"),
                });
            }
            layers.push(dir);
        }
        Ok(Image {
            reference: key,
            id: record.id.clone(),
            digest: record.digest.clone(),
            manifest_digest: record.manifest.clone(),
            config: image_config(config.config.unwrap_or_default()),
            layers,
            size: record.size,
        })
    }

    /// Every image, once per image ID, with all its names (for the Node's `status.images`).
    pub fn list(&self) -> Result<Vec<ImageSummary>, Error> {
        let state = self.load()?;
        let mut by_id: BTreeMap<&str, ImageSummary> = BTreeMap::new();
        for (key, record) in &state.images {
            let summary = by_id.entry(&record.id).or_insert_with(|| ImageSummary {
                id: record.id.clone(),
                references: Vec::new(),
                repo_digests: Vec::new(),
                size: record.size,
            });
            summary.references.push(key.clone());
            if let Ok(r) = Reference::parse(key) {
                let rd = format!("{}@{}", r.name(), record.digest);
                if !summary.repo_digests.contains(&rd) {
                    summary.repo_digests.push(rd);
                }
            }
            summary.size = summary.size.max(record.size);
        }
        Ok(by_id
            .into_values()
            .map(|mut s| {
                s.references.sort();
                s.repo_digests.sort();
                s
            })
            .collect())
    }

    /// Removes the names `reference` resolves to (every name of the image for an image ID).
    /// Layers and blobs stay until [`Store::prune`].
    pub fn remove(&self, reference: &str) -> Result<(), Error> {
        let mut txn = self.begin()?;
        let found = find(&txn.state, reference)?;
        if found.is_empty() {
            return Err(Error::NotFound(reference.to_owned()));
        }
        for (key, _) in found {
            txn.state.images.remove(&key);
        }
        txn.commit()
    }

    /// Deletes the layers and blobs no image references any more (and anything left in
    /// `tmp/`), and forgets `import_dir` records of files that are gone; returns the bytes
    /// freed on disk.
    ///
    /// Refuses with [`Error::Damaged`], deleting nothing, when `images.json` is missing beside
    /// unpacked layers or an image's config cannot be read (see [`Store::collect_garbage`]).
    pub fn prune(&self) -> Result<u64, Error> {
        let mut txn = self.begin()?;
        self.check_state(&txn.state)?;
        let mut blobs: HashSet<String> = HashSet::new();
        for record in txn.state.images.values() {
            for d in [&record.id, &record.manifest, &record.digest] {
                blobs.insert(d.trim_start_matches("sha256:").to_owned());
            }
        }
        let layers: HashSet<String> = self
            .image_layers(&txn.state)?
            .into_values()
            .flatten()
            .map(|d| d.trim_start_matches("sha256:").to_owned())
            .collect();
        let mut freed = 0;
        for (dir, keep) in [(BLOBS, &blobs), (LAYERS, &layers)] {
            let dir = self.root.join(dir);
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let path = entry.path();
                freed += disk_usage(&path);
                remove_path(&path)?;
            }
        }
        let tmp = self.root.join(TMP);
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            freed += disk_usage(&entry.path());
            remove_path(&entry.path())?;
        }
        txn.state
            .imported
            .retain(|path, _| Path::new(path).exists());
        txn.state
            .layer_blobs
            .retain(|_, b| layers.contains(b.diff_id.trim_start_matches("sha256:")));
        txn.state
            .layer_sizes
            .retain(|d, _| layers.contains(d.trim_start_matches("sha256:")));
        sync_dir(&self.root.join(LAYERS))?;
        txn.commit()?;
        Ok(freed)
    }

    // --- internals -------------------------------------------------------------------

    pub(crate) fn load(&self) -> Result<State, Error> {
        let path = self.root.join(STATE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
                path,
                reason: format!("it does not parse ({e})"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_lock(&self) -> Result<WriteLock, Error> {
        let guard = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(&path)(io::Error::from(errno)))?;
        Ok(WriteLock {
            _flock: flock,
            _guard: guard,
        })
    }

    pub(crate) fn begin(&self) -> Result<Txn<'_>, Error> {
        let lock = self.write_lock()?;
        let state = self.load()?;
        Ok(Txn {
            store: self,
            _lock: lock,
            state,
            created: Vec::new(),
            done: false,
            source: None,
        })
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        is_sha256_hex(hex).then(|| self.root.join(BLOBS).join(hex))
    }

    pub(crate) fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        let hex = diff_id.strip_prefix("sha256:")?;
        is_sha256_hex(hex).then(|| self.root.join(LAYERS).join(hex))
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest).ok_or_else(|| Error::BadImage {
            what: digest.to_owned(),
            reason: "not a sha256 digest".into(),
        })?;
        fs::read(&path).map_err(io_err(&path))
    }

    /// Imports one archive; `source` (from `import_dir`) is recorded with its images, which
    /// stay pinned while it is there, and among the files imported.
    fn import_file(&self, path: &Path, source: Option<Source>) -> Result<Vec<Imported>, Error> {
        let mut archive = Archive::open(path)?;
        let mut txn = self.begin()?;
        txn.source = source.clone();
        let imported = if archive.has("index.json") {
            import_oci(&mut txn, &mut archive)?
        } else if archive.has("manifest.json") {
            import_docker(&mut txn, &mut archive)?
        } else {
            return Err(archive.bad(
                "neither index.json (an OCI image layout) nor manifest.json (a docker save archive)",
            ));
        };
        if let Some(source) = source {
            txn.state.imported.insert(source.path, source.stamp);
        }
        txn.commit()?;
        Ok(imported)
    }
}

/// Records matching what `resolve`/`remove` were given.
fn find(state: &State, input: &str) -> Result<Vec<(String, Record)>, Error> {
    let id = if is_digest(input) {
        Some(input.to_owned())
    } else if is_sha256_hex(input) {
        Some(format!("sha256:{input}"))
    } else {
        None
    };
    if let Some(id) = id {
        return Ok(state
            .images
            .iter()
            .filter(|(_, r)| r.id == id)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect());
    }
    let reference = Reference::parse(input)?;
    let key = reference.to_string();
    if let Some(record) = state.images.get(&key) {
        return Ok(vec![(key, record.clone())]);
    }
    let Some(digest) = &reference.digest else {
        return Ok(Vec::new());
    };
    let name = reference.name();
    Ok(state
        .images
        .iter()
        .filter(|(k, r)| {
            (&r.digest == digest || &r.manifest == digest)
                && Reference::parse(k).is_ok_and(|kr| kr.name() == name)
        })
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect())
}

fn image_config(raw: oci::RawContainerConfig) -> ImageConfig {
    ImageConfig {
        user: raw.user.unwrap_or_default(),
        env: raw.env.unwrap_or_default(),
        entrypoint: raw.entrypoint.unwrap_or_default(),
        cmd: raw.cmd.unwrap_or_default(),
        working_dir: raw.working_dir.unwrap_or_default(),
        exposed_ports: raw.exposed_ports.unwrap_or_default().into_keys().collect(),
        volumes: raw.volumes.unwrap_or_default().into_keys().collect(),
        labels: raw.labels.unwrap_or_default(),
        stop_signal: raw.stop_signal.filter(|s| !s.is_empty()),
    }
}

struct WriteLock {
    // Field order: the flock is released before the process-wide mutex.
    _flock: Flock<File>,
    _guard: MutexGuard<'static, ()>,
}

/// A write to the store: holds the writer lock, collects the new state, and removes what it
/// created unless committed.
pub(crate) struct Txn<'s> {
    store: &'s Store,
    _lock: WriteLock,
    pub(crate) state: State,
    created: Vec<PathBuf>,
    done: bool,
    /// The archive being imported, recorded with its images.
    source: Option<Source>,
}

/// A layer blob as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub digest: String,
    pub size: u64,
    pub compression: Compression,
    pub new: bool,
}

impl Txn<'_> {
    pub(crate) fn platform(&self) -> &Platform {
        &self.store.platform
    }

    pub(crate) fn has_layer(&self, diff_id: &str) -> bool {
        self.store.layer_dir(diff_id).is_some_and(|d| d.is_dir())
    }

    /// Stores a verified blob (unless present).
    fn put_blob(&mut self, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self
            .store
            .blob_path(digest)
            .ok_or_else(|| Error::BadImage {
                what: digest.to_owned(),
                reason: "not a sha256 digest".into(),
            })?;
        if path.is_file() {
            return Ok(());
        }
        let tmp = self.store.root.join(TMP).join(unique_name("blob"));
        write_synced(&tmp, bytes)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.created.push(path);
        Ok(())
    }

    /// Receives one layer blob: unpacks it into `tmp/`, checks the compressed digest and
    /// size (when `expected` is given) and the uncompressed digest against `diff_id`, and
    /// renames the directory into `layers/`. A layer already in the store is only hashed.
    /// `bad` turns a reason into the error for unreadable or malformed input from the source.
    pub(crate) fn receive_layer(
        &mut self,
        diff_id: &str,
        expected: Option<&Descriptor>,
        what: &str,
        data: &mut dyn Read,
        bad: &dyn Fn(String) -> Error,
    ) -> Result<Received, Error> {
        let final_dir = self
            .store
            .layer_dir(diff_id)
            .ok_or_else(|| Error::BadImage {
                what: what.to_owned(),
                reason: format!("bad diff id {diff_id:?}"),
            })?;
        let mut compressed = HashReader::new(data);
        let verify = |compressed: &HashReader<&mut dyn Read>| -> Result<(), Error> {
            if let Some(desc) = expected {
                if compressed.digest() != desc.digest {
                    return Err(Error::DigestMismatch {
                        what: what.to_owned(),
                        expected: desc.digest.clone(),
                        actual: compressed.digest(),
                    });
                }
                if compressed.count() != desc.size {
                    return Err(bad(format!(
                        "{what}: {} bytes where the manifest says {}",
                        compressed.count(),
                        desc.size
                    )));
                }
            }
            Ok(())
        };
        if final_dir.is_dir() {
            let compression = {
                let (compression, mut head) =
                    sniff(&mut compressed).map_err(|e| bad(format!("{what}: {e}")))?;
                io::copy(&mut head, &mut io::sink()).map_err(|e| bad(format!("{what}: {e}")))?;
                compression
            };
            verify(&compressed)?;
            return Ok(Received {
                digest: compressed.digest(),
                size: compressed.count(),
                compression,
                new: false,
            });
        }
        let tmp = self.store.root.join(TMP).join(unique_name("layer"));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        self.created.push(tmp.clone());
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io_err(&tmp))?;

        let outcome: Result<(Compression, String), UnpackError> = (|| {
            let (compression, head) =
                sniff(&mut compressed).map_err(|e| UnpackError::Input(e.to_string()))?;
            let decoded =
                decoder(compression, head).map_err(|e| UnpackError::Input(e.to_string()))?;
            let mut plain = HashReader::new(decoded);
            unpack(&mut plain, &tmp)?;
            // The diff id covers the whole stream, padding after the end-of-archive too.
            plain
                .drain()
                .map_err(|e| UnpackError::Input(e.to_string()))?;
            Ok((compression, plain.digest()))
        })();
        let (compression, actual_diff_id) = match outcome {
            Ok(v) => v,
            Err(UnpackError::Output(e)) => return Err(e),
            Err(UnpackError::Input(reason)) => {
                // Corruption shows as a decoding error first; when the blob's digest is
                // known, a mismatch is the better report.
                if expected.is_some() && compressed.drain().is_ok() {
                    verify(&compressed)?;
                }
                return Err(bad(format!("{what}: {reason}")));
            }
        };
        compressed
            .drain()
            .map_err(|e| bad(format!("{what}: {e}")))?;
        verify(&compressed)?;
        if actual_diff_id != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("{what} (uncompressed)"),
                expected: diff_id.to_owned(),
                actual: actual_diff_id,
            });
        }
        // What the layer costs on disk, for the garbage collector (the tree was just written:
        // its metadata is in memory).
        self.state
            .layer_sizes
            .insert(diff_id.to_owned(), disk_usage(&tmp));
        // Data on disk before the name: a power cut never leaves a half layer under it.
        let dir = File::open(&tmp).map_err(io_err(&tmp))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io_err(&tmp)(e.into()))?;
        fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
        self.created.push(final_dir);
        sync_dir(&self.store.root.join(LAYERS))?;
        Ok(Received {
            digest: compressed.digest(),
            size: compressed.count(),
            compression,
            new: true,
        })
    }

    /// Writes the new state; what this transaction created stays.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.save()?;
        self.done = true;
        Ok(())
    }

    /// Writes the new state, with the image uses kept in memory since the last write, and
    /// keeps the lock.
    pub(crate) fn save(&mut self) -> Result<(), Error> {
        let mut memo = self.store.memo.lock().unwrap_or_else(|e| e.into_inner());
        memo.merge_into(&mut self.state);
        let path = self.store.root.join(STATE);
        let tmp = self.store.root.join(STATE_TMP);
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.store.root)?;
        memo.written();
        Ok(())
    }

    /// Keeps what this transaction created, without writing the state (it wrote it already).
    pub(crate) fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.done {
            for path in self.created.iter().rev() {
                let _ = remove_path(path);
            }
        }
    }
}

/// What one image of an import needs: its verified documents and its layers.
pub(crate) struct Plan {
    pub reference: String,
    /// Top-level digest (index or manifest).
    pub digest: String,
    pub manifest_digest: String,
    pub id: String,
    /// Verified index, manifest and config blobs.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub diff_ids: Vec<String>,
    pub layers: Vec<Descriptor>,
    pub size: u64,
}

/// Where an import reads index, manifest and config blobs from.
pub(crate) trait BlobSource {
    /// The blob's bytes, verified against the descriptor's digest and size.
    /// `manifest` tells an index or manifest (a registry's `manifests/` endpoint) from a
    /// config (`blobs/`).
    fn fetch(&mut self, desc: &Descriptor, what: &str, manifest: bool) -> Result<Vec<u8>, Error>;
}

/// Checks fetched bytes against their descriptor.
pub(crate) fn verify_blob(desc: &Descriptor, what: &str, bytes: &[u8]) -> Result<(), Error> {
    let actual = sha256_digest(bytes);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(Error::BadImage {
            what: what.to_owned(),
            reason: format!(
                "{} bytes where the descriptor says {}",
                bytes.len(),
                desc.size
            ),
        });
    }
    Ok(())
}

/// Reads an image's index (choosing the platform), manifest and config from `src`.
pub(crate) fn plan(
    platform: &Platform,
    src: &mut dyn BlobSource,
    reference: &str,
    top: &Descriptor,
) -> Result<Plan, Error> {
    let bad = |what: String, reason: String| Error::BadImage { what, reason };
    let mut blobs = Vec::new();
    let mut desc = top.clone();
    let mut platform_checked = false;
    let mut depth = 0;
    let manifest: Manifest = loop {
        if !is_digest(&desc.digest) {
            return Err(bad(
                reference.into(),
                format!("unsupported digest {:?}", desc.digest),
            ));
        }
        if desc.size > MAX_DOCUMENT {
            return Err(bad(
                format!("{reference}: {}", desc.digest),
                format!("{} bytes is too large for an index or manifest", desc.size),
            ));
        }
        let what = format!("{reference}: manifest {}", desc.digest);
        let bytes = src.fetch(&desc, &what, true)?;
        let kind = oci::kind_of(&desc.media_type, &bytes).map_err(|r| bad(what.clone(), r))?;
        blobs.push((desc.digest.clone(), bytes));
        let bytes = &blobs.last().expect("pushed").1;
        match kind {
            Kind::Manifest => {
                break serde_json::from_slice(bytes).map_err(|e| bad(what, e.to_string()))?
            }
            Kind::Index => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(bad(what, "indexes nested too deep".into()));
                }
                let index: Index =
                    serde_json::from_slice(bytes).map_err(|e| bad(what, e.to_string()))?;
                let (chosen, checked) = choose(platform, reference, &index)?;
                desc = chosen.clone();
                platform_checked = checked;
            }
        }
    };
    let manifest_digest = desc.digest.clone();
    let config_type = &manifest.config.media_type;
    if !oci::is_config_type(config_type) {
        return Err(bad(
            reference.into(),
            format!("not a container image (config media type {config_type})"),
        ));
    }
    if !is_digest(&manifest.config.digest) || manifest.config.size > MAX_DOCUMENT {
        return Err(bad(
            reference.into(),
            format!("bad config descriptor {}", manifest.config.digest),
        ));
    }
    let what = format!("{reference}: config {}", manifest.config.digest);
    let config_bytes = src.fetch(&manifest.config, &what, false)?;
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|e| bad(what.clone(), e.to_string()))?;
    if !platform_checked {
        if let Some(p) = config.platform() {
            if platform.rank(&p).is_none() {
                return Err(Error::WrongPlatform {
                    reference: reference.into(),
                    wanted: platform.to_string(),
                    available: vec![p.to_string()],
                });
            }
        }
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(
            reference.into(),
            format!(
                "the manifest has {} layers and the config {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    for (i, (layer, diff_id)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        if !oci::is_layer_type(&layer.media_type) {
            return Err(bad(
                reference.into(),
                format!(
                    "layer {i} has media type {:?}, not an image layer",
                    layer.media_type
                ),
            ));
        }
        if !is_digest(&layer.digest) || !is_digest(diff_id) {
            return Err(bad(
                reference.into(),
                format!("layer {i}: unsupported digest"),
            ));
        }
    }
    let size = blobs.last().map_or(0, |(_, b)| b.len() as u64)
        + manifest.config.size
        + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    blobs.push((manifest.config.digest.clone(), config_bytes));
    Ok(Plan {
        reference: reference.to_owned(),
        digest: top.digest.clone(),
        manifest_digest,
        id: manifest.config.digest.clone(),
        blobs,
        diff_ids: config.rootfs.diff_ids,
        layers: manifest.layers,
        size,
    })
}

/// The node platform's manifest of an index, and whether the choice checked the platform
/// (an index whose single entry declares none is taken, to be checked by its config).
fn choose<'a>(
    platform: &Platform,
    reference: &str,
    index: &'a Index,
) -> Result<(&'a Descriptor, bool), Error> {
    if let [only] = index.manifests.as_slice() {
        if only.platform.is_none() {
            return Ok((only, false));
        }
    }
    let best = index
        .manifests
        .iter()
        .filter_map(|d| {
            d.platform
                .as_ref()
                .and_then(|p| platform.rank(p))
                .map(|r| (r, d))
        })
        .min_by_key(|(r, _)| *r);
    match best {
        Some((_, d)) => Ok((d, true)),
        None => {
            let mut available: Vec<String> = Vec::new();
            for p in index.manifests.iter().filter_map(|d| d.platform.as_ref()) {
                let s = p.to_string();
                if p.architecture != "unknown" && !available.contains(&s) {
                    available.push(s);
                }
            }
            Err(Error::WrongPlatform {
                reference: reference.to_owned(),
                wanted: platform.to_string(),
                available,
            })
        }
    }
}

/// The name an `index.json` entry gives its image.
fn image_name(annotations: &BTreeMap<String, String>) -> Option<String> {
    if let Some(name) = annotations.get(oci::ANNOTATION_IMAGE_NAME) {
        return Some(name.clone());
    }
    let name = annotations.get(oci::ANNOTATION_REF_NAME)?;
    // A bare tag (`latest`, `v1.2`) is not a name; a full reference has a `/`, `:` or `@`.
    (name.contains(['/', ':', '@']) && Reference::parse(name).is_ok()).then(|| name.clone())
}

/// Blobs of an OCI layout archive.
struct ArchiveBlobs<'a>(&'a mut Archive);

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

impl BlobSource for ArchiveBlobs<'_> {
    fn fetch(&mut self, desc: &Descriptor, what: &str, _: bool) -> Result<Vec<u8>, Error> {
        let name = blob_name(&desc.digest);
        let bytes = self.0.read(std::slice::from_ref(&name))?.remove(0);
        verify_blob(
            desc,
            &format!("{what} in {}", self.0.path().display()),
            &bytes,
        )?;
        Ok(bytes)
    }
}

fn import_oci(txn: &mut Txn<'_>, archive: &mut Archive) -> Result<Vec<Imported>, Error> {
    let bytes = archive.read(&["index.json".to_owned()])?.remove(0);
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| archive.bad(format!("index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(archive.bad("index.json lists no images"));
    }
    let platform = txn.platform().clone();
    let mut plans: Vec<Plan> = Vec::new();
    for desc in &index.manifests {
        let name = image_name(&desc.annotations).ok_or_else(|| {
            archive.bad(format!(
                "index.json: image {} has no name (annotation {} or a full reference in {})",
                desc.digest,
                oci::ANNOTATION_IMAGE_NAME,
                oci::ANNOTATION_REF_NAME
            ))
        })?;
        let reference = Reference::parse(&name)?.to_string();
        let plan = plan(&platform, &mut ArchiveBlobs(archive), &reference, desc)?;
        plans.retain(|p| p.reference != plan.reference);
        plans.push(plan);
    }
    let path = archive.path().to_owned();
    // Layers not in the store yet, by blob name, each once.
    let mut wanted: HashMap<String, (String, Descriptor)> = HashMap::new();
    for plan in &plans {
        for (diff_id, desc) in plan.diff_ids.iter().zip(&plan.layers) {
            if txn.has_layer(diff_id) || wanted.values().any(|(d, _)| d == diff_id) {
                continue;
            }
            let name = blob_name(&desc.digest);
            if !archive.has(&name) {
                return Err(archive.bad(format!("{name} ({} layer) is missing", plan.reference)));
            }
            wanted.insert(name, (diff_id.clone(), desc.clone()));
        }
    }
    let names: HashSet<String> = wanted.keys().cloned().collect();
    let mut new_layers: HashSet<String> = HashSet::new();
    archive.stream(&names, &mut |name, data| {
        let (diff_id, desc) = &wanted[name];
        let what = format!("layer {name} in {}", path.display());
        let bad = |reason: String| Error::BadArchive(path.clone(), reason);
        txn.receive_layer(diff_id, Some(desc), &what, data, &bad)?;
        new_layers.insert(diff_id.clone());
        Ok(())
    })?;
    store_plans(txn, &plans)?;
    Ok(record_plans(txn, plans, &new_layers))
}

/// Stores the plans' blobs and records their images.
pub(crate) fn record_plans(
    txn: &mut Txn<'_>,
    plans: Vec<Plan>,
    new_layers: &HashSet<String>,
) -> Vec<Imported> {
    let mut imported = Vec::new();
    for plan in plans {
        for (diff_id, desc) in plan.diff_ids.iter().zip(&plan.layers) {
            txn.state.layer_blobs.insert(
                desc.digest.clone(),
                LayerBlob {
                    diff_id: diff_id.clone(),
                    size: desc.size,
                    media_type: desc.media_type.clone(),
                },
            );
        }
        // The same image stored again keeps when it was first stored, and the archive that
        // pins it unless this one comes from an archive itself.
        let same: Vec<&Record> = txn
            .state
            .images
            .values()
            .filter(|r| r.id == plan.id)
            .collect();
        let added = same
            .iter()
            .filter_map(|r| r.added)
            .min()
            .unwrap_or_else(unix_now);
        let archive = txn
            .source
            .clone()
            .or_else(|| same.iter().find_map(|r| r.archive.clone()));
        txn.state.images.insert(
            plan.reference.clone(),
            Record {
                id: plan.id.clone(),
                manifest: plan.manifest_digest.clone(),
                digest: plan.digest.clone(),
                size: plan.size,
                added: Some(added),
                archive,
            },
        );
        imported.push(Imported {
            new_layers: plan
                .diff_ids
                .iter()
                .filter(|d| new_layers.contains(*d))
                .count(),
            reference: plan.reference,
            id: plan.id,
            digest: plan.digest,
            size: plan.size,
        });
    }
    imported
}

pub(crate) fn store_plans(txn: &mut Txn<'_>, plans: &[Plan]) -> Result<(), Error> {
    for plan in plans {
        for (digest, bytes) in &plan.blobs {
            txn.put_blob(digest, bytes)?;
        }
    }
    Ok(())
}

/// The `<hex>` in `<hex>.json` or `blobs/sha256/<hex>`, the names `docker save` uses.
fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    is_sha256_hex(hex).then(|| format!("sha256:{hex}"))
}

fn import_docker(txn: &mut Txn<'_>, archive: &mut Archive) -> Result<Vec<Imported>, Error> {
    let bytes = archive.read(&["manifest.json".to_owned()])?.remove(0);
    let entries: Vec<oci::DockerArchiveEntry> =
        serde_json::from_slice(&bytes).map_err(|e| archive.bad(format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(archive.bad("manifest.json lists no images"));
    }
    let path = archive.path().to_owned();
    let platform = txn.platform().clone();
    struct DockerImage {
        references: Vec<String>,
        id: String,
        config: Vec<u8>,
        diff_ids: Vec<String>,
        layers: Vec<String>,
    }
    let mut images = Vec::new();
    for entry in entries {
        let references = entry
            .repo_tags
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if references.is_empty() {
            return Err(archive.bad(format!(
                "manifest.json: image {} has no RepoTags",
                entry.config
            )));
        }
        let config = archive.read(std::slice::from_ref(&entry.config))?.remove(0);
        let id = sha256_digest(&config);
        if let Some(named) = digest_in_name(&entry.config) {
            if named != id {
                return Err(Error::DigestMismatch {
                    what: format!("{} in {}", entry.config, path.display()),
                    expected: named,
                    actual: id,
                });
            }
        }
        let parsed: ConfigFile = serde_json::from_slice(&config)
            .map_err(|e| archive.bad(format!("{}: {e}", entry.config)))?;
        if let Some(p) = parsed.platform() {
            if platform.rank(&p).is_none() {
                return Err(Error::WrongPlatform {
                    reference: references[0].clone(),
                    wanted: platform.to_string(),
                    available: vec![p.to_string()],
                });
            }
        }
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(archive.bad(format!(
                "{}: {} layers in manifest.json, {} diff ids in the config",
                references[0],
                entry.layers.len(),
                parsed.rootfs.diff_ids.len()
            )));
        }
        for layer in &entry.layers {
            if !archive.has(layer) {
                return Err(archive.bad(format!("{layer} ({} layer) is missing", references[0])));
            }
        }
        images.push(DockerImage {
            references,
            id,
            config,
            diff_ids: parsed.rootfs.diff_ids,
            layers: entry.layers,
        });
    }
    // Every layer file is read: its digest goes into the manifest written for the image.
    let mut diff_of: HashMap<String, String> = HashMap::new();
    for image in &images {
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            if !is_digest(diff_id) {
                return Err(archive.bad(format!("{layer}: unsupported diff id {diff_id:?}")));
            }
            if let Some(other) = diff_of.insert(layer.clone(), diff_id.clone()) {
                if &other != diff_id {
                    return Err(archive.bad(format!("{layer} is given two diff ids")));
                }
            }
        }
    }
    let names: HashSet<String> = diff_of.keys().cloned().collect();
    let mut received: HashMap<String, Received> = HashMap::new();
    archive.stream(&names, &mut |name, data| {
        let what = format!("layer {name} in {}", path.display());
        let bad = |reason: String| Error::BadArchive(path.clone(), reason);
        let r = txn.receive_layer(&diff_of[name], None, &what, data, &bad)?;
        received.insert(name.to_owned(), r);
        Ok(())
    })?;
    let mut plans = Vec::new();
    let mut new_layers = HashSet::new();
    for image in images {
        let layers: Vec<Descriptor> = image
            .layers
            .iter()
            .map(|l| {
                let r = &received[l];
                if r.new {
                    new_layers.insert(diff_of[l].clone());
                }
                Descriptor {
                    media_type: r.compression.layer_media_type().to_owned(),
                    digest: r.digest.clone(),
                    size: r.size,
                    platform: None,
                    annotations: BTreeMap::new(),
                }
            })
            .collect();
        let config_desc = Descriptor {
            media_type: oci::OCI_CONFIG.to_owned(),
            digest: image.id.clone(),
            size: image.config.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        // A Docker archive has no manifest: the store writes the OCI manifest it implies,
        // so every image is reached the same way.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.to_owned()),
            config: config_desc,
            layers,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let manifest_digest = sha256_digest(&manifest_bytes);
        let size = manifest_bytes.len() as u64
            + manifest.config.size
            + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        for reference in &image.references {
            plans.push(Plan {
                reference: reference.clone(),
                digest: manifest_digest.clone(),
                manifest_digest: manifest_digest.clone(),
                id: image.id.clone(),
                blobs: vec![
                    (manifest_digest.clone(), manifest_bytes.clone()),
                    (image.id.clone(), image.config.clone()),
                ],
                diff_ids: image.diff_ids.clone(),
                layers: manifest.layers.clone(),
                size,
            });
        }
    }
    store_plans(txn, &plans)?;
    Ok(record_plans(txn, plans, &new_layers))
}

fn unique_name(kind: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a file and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Flushes a directory (its entries' names) to disk.
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

pub(crate) fn remove_path(path: &Path) -> Result<(), Error> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_annotations() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            image_name(&ann(&[
                (oci::ANNOTATION_REF_NAME, "latest"),
                (oci::ANNOTATION_IMAGE_NAME, "x.io/a:1")
            ]))
            .as_deref(),
            Some("x.io/a:1")
        );
        assert_eq!(
            image_name(&ann(&[(oci::ANNOTATION_REF_NAME, "latest")])),
            None
        );
        assert_eq!(
            image_name(&ann(&[(oci::ANNOTATION_REF_NAME, "busybox:1.36")])).as_deref(),
            Some("busybox:1.36")
        );
        assert_eq!(
            digest_in_name(&format!("{}.json", "a".repeat(64))),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(digest_in_name("config.json"), None);
    }
}
