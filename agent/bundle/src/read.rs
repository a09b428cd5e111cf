//! Reading a bundle: signature and manifest first, then payloads streamed and hashed.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crate::write::Hashing;
use crate::{
    version, Error, Manifest, Payload, PublicKey, TrustedKeys, FORMAT, MAGIC, MAX_MANIFEST,
    SIGNATURE_LEN,
};

/// What the node installing a bundle is.
#[derive(Clone, Debug)]
pub struct Expect {
    pub board: String,
    pub arch: String,
    /// The running Cairn version.
    pub running: String,
    /// Accept a bundle that is not newer than the running version.
    pub allow_downgrade: bool,
}

impl Expect {
    pub fn check(&self, m: &Manifest) -> Result<(), Error> {
        if m.board != self.board {
            return Err(Error::Board {
                bundle: m.board.clone(),
                node: self.board.clone(),
            });
        }
        if m.arch != self.arch {
            return Err(Error::Arch {
                bundle: m.arch.clone(),
                node: self.arch.clone(),
            });
        }
        if !self.allow_downgrade && version::compare(&m.version, &self.running) != Ordering::Greater
        {
            return Err(Error::Downgrade {
                bundle: m.version.clone(),
                running: self.running.clone(),
            });
        }
        if let Some(min) = &m.min_version {
            if version::compare(&self.running, min) == Ordering::Less {
                return Err(Error::TooOld {
                    bundle: m.version.clone(),
                    min: min.clone(),
                    running: self.running.clone(),
                });
            }
        }
        for name in ["rootfs", "kernel", "initrd"] {
            if m.payload(name).is_none() {
                return Err(Error::Manifest(format!("no {name} payload")));
            }
        }
        Ok(())
    }
}

/// A bundle whose signature and manifest have been verified; payloads follow in order.
pub struct Reader<R: Read> {
    input: R,
    manifest: Manifest,
    signer: PublicKey,
    next: usize,
    header_len: u64,
}

impl<R: Read> Reader<R> {
    /// Reads and verifies the header: magic, manifest, signature by one of `keys`, and the
    /// manifest against `expect`. No payload byte has been read when this returns.
    pub fn open(mut input: R, keys: &TrustedKeys, expect: &Expect) -> Result<Reader<R>, Error> {
        let (signed, sig) = read_header(&mut input)?;
        let json = &signed[12..];
        let Some(signer) = keys.verify(&signed, &sig).cloned() else {
            let claimed = serde_json::from_slice::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            let trusted = if keys.is_empty() {
                "this node trusts no keys: images carry them in /etc/cairn/update-keys".to_string()
            } else {
                format!("trusted: {}", keys.ids())
            };
            return Err(Error::Signature(format!(
                "signed by key {claimed}; {trusted}"
            )));
        };
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| Error::Manifest(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(Error::Format(manifest.format, FORMAT));
        }
        expect.check(&manifest)?;
        Ok(Reader {
            input,
            manifest,
            signer,
            next: 0,
            header_len: Manifest::header_len(signed.len() - 12),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The trusted key that signed the bundle.
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }

    /// The payload [`next_payload`](Self::next_payload) unpacks next.
    pub fn peek(&self) -> Option<&Payload> {
        self.manifest.payloads.get(self.next)
    }

    /// Total bundle size the manifest promises.
    pub fn total_len(&self) -> u64 {
        self.header_len
            + self
                .manifest
                .payloads
                .iter()
                .map(|p| p.stored_size)
                .sum::<u64>()
    }

    /// Unpacks the next payload into `out`, checking its sizes and hashes; `None` after the
    /// last. An error means `out` received bytes that must not be used.
    pub fn next_payload(&mut self, out: &mut dyn Write) -> Result<Option<Payload>, Error> {
        let Some(p) = self.manifest.payloads.get(self.next).cloned() else {
            return Ok(None);
        };
        self.next += 1;
        let bad = |reason: String| Error::Payload {
            name: p.name.clone(),
            reason,
        };
        let stored = Hashing::new((&mut self.input).take(p.stored_size));
        let mut dec = zstd::stream::read::Decoder::new(stored)?;
        let mut sink = Limit {
            inner: Hashing::new(out),
            left: p.size,
        };
        let copied = io::copy(&mut dec, &mut sink);
        // Whatever the decoder left unread still belongs to the payload and its hash.
        let mut rest = dec.finish();
        io::copy(&mut rest, &mut io::sink())?;
        let stored = rest.into_inner();
        if stored.count() < p.stored_size {
            return Err(Error::Truncated(format!(
                "payload {} has {} of {} bytes",
                p.name,
                stored.count(),
                p.stored_size
            )));
        }
        let (_, stored_sha) = stored.done();
        if stored_sha != p.stored_sha256 {
            return Err(bad(
                "sha256 does not match the signed manifest (tampered or corrupt)".into(),
            ));
        }
        copied.map_err(|e| bad(format!("unpacking: {e}")))?;
        let (size, sha) = sink.inner.done();
        if size != p.size || sha != p.sha256 {
            return Err(bad(format!(
                "unpacks to {size} bytes with sha256 {sha}, the manifest says {} bytes {}",
                p.size, p.sha256
            )));
        }
        Ok(Some(p))
    }

    /// After the last payload: the input must end here.
    pub fn finish(mut self) -> Result<(), Error> {
        if self.next < self.manifest.payloads.len() {
            return Err(Error::Manifest("not every payload was read".into()));
        }
        let mut one = [0u8; 1];
        match self.input.read(&mut one)? {
            0 => Ok(()),
            _ => Err(Error::Manifest(
                "trailing bytes after the last payload".into(),
            )),
        }
    }
}

/// Refuses to take more than `left` bytes: a payload cannot unpack to more than the
/// manifest says (and so never to more than its slot holds).
struct Limit<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Limit<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(
                "unpacks to more bytes than the manifest says",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The signed header bytes (magic, length, manifest JSON) and the signature after them.
fn read_header(input: &mut impl Read) -> Result<(Vec<u8>, [u8; SIGNATURE_LEN]), Error> {
    let mut head = [0u8; 12];
    input
        .read_exact(&mut head)
        .map_err(|e| Error::eof(e, "header"))?;
    if head[..6] != MAGIC[..6] {
        return Err(Error::Magic);
    }
    if head[..8] != MAGIC {
        return Err(Error::Format(u32::from(head[7]), FORMAT));
    }
    let len = u32::from_le_bytes(head[8..12].try_into().unwrap());
    if len > MAX_MANIFEST {
        return Err(Error::Manifest(format!(
            "claims {len} bytes, more than the {MAX_MANIFEST} allowed"
        )));
    }
    let mut signed = head.to_vec();
    signed.resize(12 + len as usize, 0);
    input
        .read_exact(&mut signed[12..])
        .map_err(|e| Error::eof(e, "manifest"))?;
    let mut sig = [0u8; SIGNATURE_LEN];
    input
        .read_exact(&mut sig)
        .map_err(|e| Error::eof(e, "signature"))?;
    Ok((signed, sig))
}

impl Manifest {
    /// The manifest of the bundle at `path`, read but **not verified** (no key is checked):
    /// for showing what a file claims to be before sending it to a node, which verifies it.
    pub fn peek_file(path: &Path) -> Result<Manifest, Error> {
        let (signed, _) = read_header(&mut BufReader::new(File::open(path)?))?;
        serde_json::from_slice(&signed[12..]).map_err(|e| Error::Manifest(e.to_string()))
    }
}

/// Checks a bundle file completely without unpacking or writing anything: header,
/// signature, manifest against `expect`, exact length, and every payload's stored hash.
pub fn verify_file(path: &Path, keys: &TrustedKeys, expect: &Expect) -> Result<Manifest, Error> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = Reader::open(BufReader::new(file), keys, expect)?;
    let want = r.total_len();
    if len < want {
        return Err(Error::Truncated(format!(
            "{len} bytes, the manifest says {want}"
        )));
    }
    if len > want {
        return Err(Error::Manifest(format!(
            "{len} bytes, {} more than the manifest says",
            len - want
        )));
    }
    for p in r.manifest.payloads.clone() {
        let mut h = Hashing::new((&mut r.input).take(p.stored_size));
        io::copy(&mut h, &mut io::sink())?;
        let (n, sha) = h.done();
        if n < p.stored_size {
            return Err(Error::Truncated(format!("payload {} is cut short", p.name)));
        }
        if sha != p.stored_sha256 {
            return Err(Error::Payload {
                name: p.name.clone(),
                reason: "sha256 does not match the signed manifest (tampered or corrupt)".into(),
            });
        }
    }
    Ok(r.manifest)
}
