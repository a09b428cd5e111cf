//! Bundles that arrive over the network wait on the data partition until they are whole
//! (`DATA/update/incoming/`): `upload.json` names the bundle (sha256 and size) and `bundle`
//! holds the bytes received so far. An upload resumes where the file ends, after a dropped
//! connection or a restart of the node; a different bundle starting at byte 0 replaces it.
//!
//! The staged file is what [`super::apply`] then verifies and installs: the whole bundle is
//! checked before the first byte reaches a slot. Staging costs one extra write of the
//! (compressed) bundle on the data partition; it buys resumable uploads and a refusal of
//! tampered or truncated bundles with nothing written to the slot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Free space left on the data partition after a staged bundle, for the datastore and logs.
pub const RESERVE: u64 = 32 << 20;

/// The bundle an upload carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    /// Hex sha256 of the whole bundle file.
    pub sha256: String,
    pub size: u64,
}

impl Upload {
    pub fn new(sha256: &str, size: u64) -> Result<Upload, StageError> {
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(StageError::BadRequest(format!(
                "{sha256:?} is not a hex sha256"
            )));
        }
        Ok(Upload {
            sha256: sha256.to_ascii_lowercase(),
            size,
        })
    }
}

/// What is staged now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    #[serde(flatten)]
    pub upload: Upload,
    pub received: u64,
    /// All bytes are here and their sha256 matched.
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    BadRequest(String),
    /// The upload must go on from `expected`, not from where the client started.
    #[error("the node has {expected} bytes of this bundle; resume from there (the request started at {start})")]
    Offset { expected: u64, start: u64 },
    #[error("the bundle needs {needed} more bytes on the data partition, {free} are free (keeping {RESERVE} for the node)")]
    NoSpace { needed: u64, free: u64 },
    #[error("the uploaded bundle's sha256 is {actual}, not {expected}: it was changed or damaged on the way; upload it again")]
    Digest { expected: String, actual: String },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StageError {
    let what = what.into();
    move |source| StageError::Io { what, source }
}

/// The staging directory.
#[derive(Clone, Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn new(dir: impl Into<PathBuf>) -> Staging {
        Staging { dir: dir.into() }
    }

    fn meta(&self) -> PathBuf {
        self.dir.join("upload.json")
    }

    /// The staged bytes.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    fn done(&self) -> PathBuf {
        self.dir.join("verified")
    }

    /// What is staged, if anything.
    pub fn state(&self) -> Option<Staged> {
        let upload: Upload = serde_json::from_slice(&fs::read(self.meta()).ok()?).ok()?;
        let received = fs::metadata(self.bundle()).map_or(0, |m| m.len());
        let complete = received == upload.size
            && fs::read_to_string(self.done()).is_ok_and(|s| s.trim() == upload.sha256);
        Some(Staged {
            upload,
            received,
            complete,
        })
    }

    /// Opens the staged file to append the bytes of `upload` from `start` on. Starting a
    /// different bundle at 0 replaces what is staged; anything else must start where the
    /// staged bytes end.
    pub fn begin(&self, upload: &Upload, start: u64) -> Result<File, StageError> {
        let current = self.state().filter(|s| s.upload == *upload);
        let received = current.as_ref().map_or(0, |s| s.received);
        if start != received || start > upload.size {
            return Err(StageError::Offset {
                expected: received,
                start,
            });
        }
        if current.is_none() {
            self.clear()?;
            fs::create_dir_all(&self.dir).map_err(io_err(self.dir.display().to_string()))?;
            let free = free_bytes(&self.dir).map_err(io_err("checking free space"))?;
            if upload.size.saturating_add(RESERVE) > free {
                return Err(StageError::NoSpace {
                    needed: upload.size,
                    free: free.saturating_sub(RESERVE),
                });
            }
            File::create(self.bundle()).map_err(io_err("creating the staged bundle"))?;
            write_synced(
                &self.meta(),
                &serde_json::to_vec(upload).expect("serialises"),
            )
            .map_err(io_err("writing upload.json"))?;
        }
        OpenOptions::new()
            .append(true)
            .open(self.bundle())
            .map_err(io_err("opening the staged bundle"))
    }

    /// Checks a fully received upload against its sha256. A mismatch clears the staging area.
    pub fn finish(&self, upload: &Upload) -> Result<Staged, StageError> {
        let state = self
            .state()
            .filter(|s| s.upload == *upload)
            .ok_or_else(|| StageError::BadRequest("no such upload".into()))?;
        if state.complete || state.received < upload.size {
            return Ok(state);
        }
        let actual = sha256_file(&self.bundle()).map_err(io_err("hashing the staged bundle"))?;
        if actual != upload.sha256 {
            self.clear()?;
            return Err(StageError::Digest {
                expected: upload.sha256.clone(),
                actual,
            });
        }
        write_synced(&self.done(), upload.sha256.as_bytes())
            .map_err(io_err("marking the bundle verified"))?;
        Ok(self.state().expect("just written"))
    }

    /// The complete staged bundle with this sha256.
    pub fn complete(&self, sha256: &str) -> Option<PathBuf> {
        self.state()
            .filter(|s| s.complete && s.upload.sha256.eq_ignore_ascii_case(sha256))
            .map(|_| self.bundle())
    }

    /// Removes whatever is staged.
    pub fn clear(&self) -> Result<(), StageError> {
        for p in [self.done(), self.meta(), self.bundle()] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(p.display().to_string())(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Hex sha256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    #[allow(clippy::useless_conversion)] // the field types differ between architectures
    Ok(u64::from(st.blocks_available()) * u64::from(st.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::temp_dir;

    fn upload_of(bytes: &[u8]) -> Upload {
        Upload::new(&hex(&Sha256::digest(bytes)), bytes.len() as u64).unwrap()
    }

    #[test]
    fn resumes_where_the_bytes_end_and_checks_the_digest() {
        let dir = temp_dir("staging");
        let st = Staging::new(dir.join("incoming"));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let up = upload_of(&data);
        assert!(st.state().is_none());

        st.begin(&up, 0).unwrap().write_all(&data[..4000]).unwrap();
        let s = st.state().unwrap();
        assert_eq!((s.received, s.complete), (4000, false));

        // A resume at the wrong place is refused and says where to go on.
        match st.begin(&up, 3000) {
            Err(StageError::Offset { expected: 4000, .. }) => {}
            other => panic!("{other:?}"),
        }
        // So is a different bundle that does not start at 0; the staged one stays.
        let other = upload_of(b"other");
        assert!(matches!(
            st.begin(&other, 10),
            Err(StageError::Offset { expected: 0, .. })
        ));
        assert_eq!(st.state().unwrap().received, 4000);

        st.begin(&up, 4000)
            .unwrap()
            .write_all(&data[4000..])
            .unwrap();
        assert!(st.complete(&up.sha256).is_none(), "not verified yet");
        let s = st.finish(&up).unwrap();
        assert!(s.complete);
        assert_eq!(fs::read(st.complete(&up.sha256).unwrap()).unwrap(), data);

        // A different bundle from 0 replaces it.
        st.begin(&other, 0).unwrap().write_all(b"other").unwrap();
        assert!(st.finish(&other).unwrap().complete);
        assert!(st.complete(&up.sha256).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_bytes_are_dropped() {
        let dir = temp_dir("staging-bad");
        let st = Staging::new(dir.join("incoming"));
        let up = upload_of(b"the real bundle");
        st.begin(&up, 0)
            .unwrap()
            .write_all(b"the fake bundle")
            .unwrap();
        let err = st.finish(&up).unwrap_err().to_string();
        assert!(err.contains("changed or damaged"), "{err}");
        assert!(st.state().is_none());
        assert!(Upload::new("xyz", 1).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bundle_larger_than_the_free_space_is_refused_up_front() {
        let dir = temp_dir("staging-full");
        let st = Staging::new(dir.join("incoming"));
        let up = Upload::new(&"0".repeat(64), u64::MAX / 2).unwrap();
        let err = st.begin(&up, 0).unwrap_err();
        assert!(matches!(err, StageError::NoSpace { .. }), "{err}");
        assert!(!st.bundle().exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
