//! Making a bundle (host side).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Manifest, Payload, SigningKey, FORMAT, MAGIC};

/// A file to put into the bundle under `name`.
pub struct PayloadSource<'a> {
    pub name: &'a str,
    pub path: &'a Path,
}

/// Writes `out` from `manifest` (its `format`, `key` and `payloads` are filled in here) and
/// the payload files, compressed with zstd at `level`, signed with `key`. The file appears
/// under its name only when complete.
pub fn write_bundle(
    out: &Path,
    mut manifest: Manifest,
    sources: &[PayloadSource<'_>],
    key: &SigningKey,
    level: i32,
) -> Result<Manifest, Error> {
    let mut parts: Vec<PathBuf> = Vec::new();
    let result = (|| {
        manifest.format = FORMAT;
        manifest.key = key.id();
        manifest.payloads.clear();
        for (i, src) in sources.iter().enumerate() {
            let part = sibling(out, &format!("part{i}"));
            parts.push(part.clone());
            let payload = compress(src, &part, level)?;
            manifest.payloads.push(payload);
        }
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Manifest(e.to_string()))?;
        let mut header = Vec::with_capacity(12 + json.len());
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&(json.len() as u32).to_le_bytes());
        header.extend_from_slice(&json);
        let sig = key.sign(&header);

        let tmp = sibling(out, "tmp");
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(&header)?;
        w.write_all(&sig)?;
        for part in &parts {
            io::copy(&mut File::open(part)?, &mut w)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, out)?;
        Ok(manifest)
    })();
    for part in &parts {
        let _ = fs::remove_file(part);
    }
    let _ = fs::remove_file(sibling(out, "tmp"));
    result
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    out.with_file_name(name)
}

fn compress(src: &PayloadSource<'_>, part: &Path, level: i32) -> Result<Payload, Error> {
    let input = File::open(src.path).map_err(|e| Error::Payload {
        name: src.name.into(),
        reason: format!("{}: {e}", src.path.display()),
    })?;
    let mut reader = Hashing::new(BufReader::new(input));
    let stored = Hashing::new(BufWriter::new(File::create(part)?));
    let mut enc = zstd::stream::write::Encoder::new(stored, level)?;
    io::copy(&mut reader, &mut enc)?;
    let stored = enc.finish()?;
    let (size, sha) = reader.done();
    let (stored_size, stored_sha, w) = stored.into_parts();
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Payload {
        name: src.name.to_string(),
        size,
        sha256: sha,
        stored_size,
        stored_sha256: stored_sha,
    })
}

/// Counts and hashes what passes through, reading or writing.
pub(crate) struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    n: u64,
}

impl<T> Hashing<T> {
    pub(crate) fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            n: 0,
        }
    }

    /// Bytes seen and their sha256 (hex).
    pub(crate) fn done(self) -> (u64, String) {
        (self.n, crate::hex(&self.hasher.finalize()))
    }

    pub(crate) fn into_parts(self) -> (u64, String, T) {
        (self.n, crate::hex(&self.hasher.finalize()), self.inner)
    }

    pub(crate) fn count(&self) -> u64 {
        self.n
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
