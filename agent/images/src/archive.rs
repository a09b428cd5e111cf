//! Reading image archives (a tar, possibly zstd- or gzip-compressed as a whole) without
//! extracting them: one pass lists the entries and keeps the small ones (index, manifests,
//! configs) in memory; layers are then streamed straight from the archive into the
//! unpacker, by seeking in a plain tar or by one more decompressing pass otherwise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::stream::{decoder, sniff, Compression};
use crate::Error;

/// Entries up to this size are kept in memory by the first pass...
const SMALL_ENTRY: u64 = 512 * 1024;
/// ... while they add up to at most this.
const SMALL_BUDGET: u64 = 16 * 1024 * 1024;
/// Layout metadata files are kept whatever their size, up to this.
const METADATA_MAX: u64 = 16 * 1024 * 1024;
const METADATA: &[&str] = &["index.json", "oci-layout", "manifest.json", "repositories"];

struct EntryInfo {
    size: u64,
    /// Offset of the data in the (uncompressed) file; only used for plain tars.
    offset: u64,
}

/// An image archive on disk.
pub struct Archive {
    path: PathBuf,
    compression: Compression,
    entries: HashMap<String, EntryInfo>,
    /// Symlinks and hard links between entries (`docker save` links repeated layers).
    links: HashMap<String, String>,
    cache: HashMap<String, Vec<u8>>,
}

impl Archive {
    /// Opens `path` and reads its table of contents (and its small entries).
    pub fn open(path: &Path) -> Result<Archive, Error> {
        let mut archive = Archive {
            path: path.to_owned(),
            compression: Compression::None,
            entries: HashMap::new(),
            links: HashMap::new(),
            cache: HashMap::new(),
        };
        let (compression, _) = sniff(archive.file()?).map_err(|e| archive.io(e))?;
        archive.compression = compression;
        let mut budget = SMALL_BUDGET;
        let mut entries = HashMap::new();
        let mut links = HashMap::new();
        let mut cache = HashMap::new();
        // Where the last entry's data (padded to whole blocks) ends.
        let mut end = 0u64;
        archive.walk(&mut |name, kind, link, size, offset, data| {
            end = end.max(offset + size.next_multiple_of(512));
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = link {
                        let target = if kind == tar::EntryType::Symlink {
                            // Relative to the link's directory.
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            clean(&format!("{dir}/{target}"))
                        } else {
                            clean(&target)
                        };
                        links.insert(name.to_owned(), target);
                    }
                }
                k if k.is_file() || k == tar::EntryType::Continuous => {
                    entries.insert(name.to_owned(), EntryInfo { size, offset });
                    let keep = if METADATA.contains(&name) {
                        size <= METADATA_MAX
                    } else {
                        size <= SMALL_ENTRY && size <= budget
                    };
                    if keep {
                        let mut bytes = Vec::with_capacity(size as usize);
                        data.read_to_end(&mut bytes)?;
                        if bytes.len() as u64 != size {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("{name} ends early (the archive is truncated)"),
                            ));
                        }
                        if !METADATA.contains(&name) {
                            budget -= size;
                        }
                        cache.insert(name.to_owned(), bytes);
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if compression == Compression::None {
            // A plain tar cut short can end on a block boundary, which reads as a clean end.
            let file = archive.file()?;
            let len = file.metadata().map_err(|e| archive.io(e))?.len();
            if let Some((name, _)) = entries.iter().find(|(_, e)| e.offset + e.size > len) {
                return Err(archive.bad(format!(
                    "truncated: {name} ends past the end of the file ({len} bytes)"
                )));
            }
            // So does one cut between two entries: a whole archive has its end-of-archive
            // marker (zero blocks) after the last entry.
            let mut marker = [0u8; 512];
            if file.read_exact_at(&mut marker, end).is_err() || marker.iter().any(|&b| b != 0) {
                return Err(archive.bad(format!(
                    "truncated: no end-of-archive marker after the last entry (the file ends \
                     at {len} bytes)"
                )));
            }
        }
        archive.entries = entries;
        archive.links = links;
        archive.cache = cache;
        Ok(archive)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about this archive's contents.
    pub fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadArchive(self.path.clone(), reason.into())
    }

    fn io(&self, e: io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source: e,
        }
    }

    fn file(&self) -> Result<File, Error> {
        File::open(&self.path).map_err(|e| self.io(e))
    }

    /// The entry a name stands for, following links between entries.
    fn target<'a>(&'a self, name: &'a str) -> &'a str {
        let mut name = name;
        for _ in 0..8 {
            match self.links.get(name) {
                Some(t) => name = t,
                None => break,
            }
        }
        name
    }

    /// The size of a regular file entry, `None` if the archive has no such file.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.entries.get(self.target(&clean(name))).map(|e| e.size)
    }

    /// Whether the archive has a file of that name.
    pub fn has(&self, name: &str) -> bool {
        self.size(name).is_some()
    }

    /// The contents of small files, reading the archive again for any not kept by the first
    /// pass. Missing files are a [`Error::BadArchive`] naming them.
    pub fn read(&mut self, names: &[String]) -> Result<Vec<Vec<u8>>, Error> {
        let wanted: Vec<String> = names
            .iter()
            .map(|n| self.target(&clean(n)).to_owned())
            .collect();
        for (name, original) in wanted.iter().zip(names) {
            if !self.entries.contains_key(name) {
                return Err(self.bad(format!("{original} is missing")));
            }
        }
        let missing: HashSet<String> = wanted
            .iter()
            .filter(|n| !self.cache.contains_key(*n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let mut got = BTreeMap::new();
            self.stream(&missing, &mut |name, r| {
                let mut bytes = Vec::new();
                r.read_to_end(&mut bytes)
                    .map_err(|e| Error::BadArchive(PathBuf::new(), format!("{name}: {e}")))?;
                got.insert(name.to_owned(), bytes);
                Ok(())
            })
            .map_err(|e| self.fill_path(e))?;
            self.cache.extend(got);
        }
        Ok(wanted.iter().map(|n| self.cache[n].clone()).collect())
    }

    fn fill_path(&self, e: Error) -> Error {
        match e {
            Error::BadArchive(p, reason) if p.as_os_str().is_empty() => self.bad(reason),
            e => e,
        }
    }

    /// Calls `f` once with the contents of each wanted file (by name, links followed), in
    /// archive order. `f` errors stop the walk and are returned as they are.
    pub fn stream(
        &self,
        names: &HashSet<String>,
        f: &mut dyn FnMut(&str, &mut dyn Read) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // Requested name for each target (several names may share one entry).
        let mut by_target: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in names {
            by_target.entry(self.target(n)).or_default().push(n);
        }
        // Small files from memory.
        let mut rest: Vec<&str> = Vec::new();
        for (&target, requested) in &by_target {
            match self.cache.get(target) {
                Some(bytes) => {
                    for n in requested {
                        f(n, &mut &bytes[..])?;
                    }
                }
                None if self.entries.contains_key(target) => rest.push(target),
                None => return Err(self.bad(format!("{} is missing", requested[0]))),
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        if self.compression == Compression::None {
            // Plain tar: seek to each entry.
            rest.sort_by_key(|t| self.entries[*t].offset);
            let mut file = self.file()?;
            for target in rest {
                let info = &self.entries[target];
                file.seek(SeekFrom::Start(info.offset))
                    .map_err(|e| self.io(e))?;
                for n in &by_target[target] {
                    file.seek(SeekFrom::Start(info.offset))
                        .map_err(|e| self.io(e))?;
                    let mut r = Exact {
                        inner: BufReader::with_capacity(256 * 1024, (&mut file).take(info.size)),
                        left: info.size,
                    };
                    f(n, &mut r)?;
                }
            }
            return Ok(());
        }
        let rest: HashSet<&str> = rest.into_iter().collect();
        let mut outcome = Ok(());
        let walked = self.walk(&mut |name, _, _, _, _, data| {
            if rest.contains(name) {
                for n in &by_target[name] {
                    if let Err(e) = f(n, data) {
                        outcome = Err(e);
                        return Err(io::Error::other(StopWalk));
                    }
                }
            }
            Ok(())
        });
        outcome?;
        walked
    }

    /// Walks every entry: `(name, type, link target, size, data offset, data)`.
    fn walk(&self, visit: &mut Visitor<'_>) -> Result<(), Error> {
        let file = self.file()?;
        let result = if self.compression == Compression::None {
            let mut archive = tar::Archive::new(file);
            walk_entries(archive.entries_with_seek(), visit)
        } else {
            let reader = BufReader::with_capacity(256 * 1024, file);
            let decoded = decoder(self.compression, reader).map_err(|e| self.io(e))?;
            let mut archive = tar::Archive::new(decoded);
            walk_entries(archive.entries(), visit)
        };
        result.map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<StopWalk>()) {
                self.bad("stopped")
            } else {
                self.bad(format!("reading the archive: {e}"))
            }
        })
    }
}

/// Called for each entry: `(name, type, link target, size, data offset, data)`.
type Visitor<'a> =
    dyn FnMut(&str, tar::EntryType, Option<String>, u64, u64, &mut dyn Read) -> io::Result<()> + 'a;

fn walk_entries<R: Read>(
    entries: io::Result<tar::Entries<'_, R>>,
    visit: &mut Visitor<'_>,
) -> io::Result<()> {
    for entry in entries? {
        let mut entry = entry?;
        let name = clean(&entry.path()?.to_string_lossy());
        let kind = entry.header().entry_type();
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        let size = entry.size();
        let offset = entry.raw_file_position();
        visit(&name, kind, link, size, offset, &mut entry)?;
    }
    Ok(())
}

#[derive(Debug)]
struct StopWalk;
impl std::fmt::Display for StopWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}
impl std::error::Error for StopWalk {}

/// Reads exactly `left` bytes, an early end being an `UnexpectedEof` (a file cut short).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends early",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A name inside an archive without `./`, leading `/`, empty or `.` components, with `..`
/// resolved lexically.
pub fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(clean("./blobs//sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("abc/../def.tar"), "def.tar");
        assert_eq!(clean("/index.json"), "index.json");
    }
}
