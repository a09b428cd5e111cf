//! `cairnctl flash IMAGE DEVICE`: writes a disk image (`disk.img.zst` or `disk.img`) to an
//! SD card or USB disk, only the blocks its block map (`disk.img.bmap`, bmaptool's format)
//! lists, checking each range against the map's sha256 as it goes, then reads everything
//! back and checks it again. The target is checked first, and refused when it is a
//! partition, mounted (itself or any of its partitions), in use by another device (LVM,
//! dm-crypt, RAID), holds this system's root, `/boot`, `/usr`, `/var` or swap, or is smaller
//! than the image. A regular file is a valid target too (an image of the card).
//!
//! The bmap is parsed with `bmap-parser` (Collabora's, from bmap-rs) after its own checksum
//! (`BmapFileChecksum`: the file's sha256 with that field zeroed) is checked, so a damaged or
//! edited map is refused before anything is written. The copy loop is ours: it reports
//! progress, writes at offsets (no seeks on the card) and reads everything back.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A block map: which byte ranges of the image hold data, and their checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    /// In order, not overlapping, inside the image.
    pub ranges: Vec<ByteRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

impl Bmap {
    /// Parses a bmap file (bmap-parser), after checking the file's own checksum.
    pub fn parse(text: &str) -> Result<Bmap> {
        let sum = element(text, "BmapFileChecksum").context("no <BmapFileChecksum>")?;
        let zeroed = text.replacen(sum, &"0".repeat(sum.len()), 1);
        if hex(&Sha256::digest(zeroed.as_bytes())) != sum.to_ascii_lowercase() {
            bail!("the block map's own checksum does not match: it is damaged or was edited");
        }
        // The parser does arithmetic on the ranges it reads; a range past the end of the
        // image would panic in it rather than return an error.
        let parsed = std::panic::catch_unwind(|| bmap_parser::Bmap::from_xml(text))
            .map_err(|_| anyhow::anyhow!("malformed block map (a range outside the image?)"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if parsed.checksum_type() != bmap_parser::HashType::Sha256 {
            bail!("only sha256 block maps are supported");
        }
        let (image_size, block_size) = (parsed.image_size(), parsed.block_size());
        let mut ranges: Vec<ByteRange> = Vec::new();
        for r in parsed.block_map() {
            let (offset, length) = (r.offset(), r.length());
            if offset
                .checked_add(length)
                .is_none_or(|end| end > image_size)
                || length == 0
            {
                bail!("a range at byte {offset} lies outside the image's {image_size} bytes");
            }
            if ranges.last().is_some_and(|p| p.offset + p.length > offset) {
                bail!("the range at byte {offset} overlaps or precedes the one before it");
            }
            ranges.push(ByteRange {
                offset,
                length,
                sha256: hex(r.checksum().as_slice()),
            });
        }
        Ok(Bmap {
            image_size,
            block_size,
            ranges,
        })
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.length).sum()
    }

    /// `first-last` block numbers of `r`, as the map names them.
    pub fn blocks(&self, r: &ByteRange) -> String {
        let bs = self.block_size.max(1);
        format!("{}-{}", r.offset / bs, (r.offset + r.length - 1) / bs)
    }
}

/// The trimmed text of the first `<name>` element.
fn element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].trim())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the image will be written to.
#[derive(Debug)]
pub enum Target {
    /// A whole-disk block device (`sda`) of this many bytes.
    Disk { name: String, bytes: u64 },
    /// A regular file (made or extended to the image's size).
    File,
}

/// `major:minor` of every mounted block filesystem and active swap, with where.
fn in_use() -> Result<Vec<(String, String)>> {
    let mut used = Vec::new();
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("/proc/self/mountinfo")?;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let (Some(dev), Some(at)) = (f.get(2), f.get(4)) {
            used.push((dev.to_string(), format!("mounted at {at}")));
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for path in swaps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
        {
            if let Ok(m) = std::fs::metadata(path) {
                if m.file_type().is_block_device() {
                    let (ma, mi) = (libc_major(m.rdev()), libc_minor(m.rdev()));
                    used.push((format!("{ma}:{mi}"), "active swap".into()));
                }
            }
        }
    }
    Ok(used)
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// The whole disks under a block device (`sda1` → `sda`; `dm-0` → the disks it sits on).
fn disks_of(sys: &Path) -> Vec<String> {
    let Ok(real) = sys.canonicalize() else {
        return Vec::new();
    };
    let slaves: Vec<PathBuf> = std::fs::read_dir(real.join("slaves"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if !slaves.is_empty() {
        return slaves.iter().flat_map(|s| disks_of(s)).collect();
    }
    let disk = if real.join("partition").exists() {
        real.parent().map(Path::to_path_buf)
    } else {
        Some(real)
    };
    disk.and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .into_iter()
        .collect()
}

/// Checks `path` is something the image may be written to, and why not if it is not.
pub fn check_target(path: &Path, image_size: u64) -> Result<Target> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::File),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    if meta.is_file() {
        return Ok(Target::File);
    }
    if !meta.file_type().is_block_device() {
        bail!(
            "{} is neither a block device nor a regular file",
            path.display()
        );
    }
    let (ma, mi) = (libc_major(meta.rdev()), libc_minor(meta.rdev()));
    let sys = PathBuf::from(format!("/sys/dev/block/{ma}:{mi}"));
    let real = sys.canonicalize().context("finding the device in /sys")?;
    let name = real.file_name().unwrap().to_string_lossy().into_owned();
    if real.join("partition").exists() {
        let disk = disks_of(&sys).join(", ");
        bail!(
            "{} is a partition ({name}): give the whole disk (/dev/{disk})",
            path.display()
        );
    }
    // This system's own disks: those under what holds /, /boot, /usr, /var and swap.
    let used = in_use()?;
    for (dev, what) in &used {
        let system = what.ends_with(" at /")
            || ["/boot", "/usr", "/var", "/boot/efi"]
                .iter()
                .any(|m| what.ends_with(&format!(" at {m}")))
            || what == "active swap";
        if system && disks_of(Path::new(&format!("/sys/dev/block/{dev}"))).contains(&name) {
            bail!(
                "{} is this system's disk ({what}): refusing to overwrite it",
                path.display()
            );
        }
    }
    // The disk itself and each partition: mounted, swap, or held by another device.
    let mut parts = vec![real.clone()];
    for e in std::fs::read_dir(&real)?.flatten() {
        if e.path().join("partition").exists() {
            parts.push(e.path());
        }
    }
    for p in &parts {
        let pname = p.file_name().unwrap().to_string_lossy().into_owned();
        let dev = std::fs::read_to_string(p.join("dev")).unwrap_or_default();
        if let Some((_, what)) = used.iter().find(|(d, _)| *d == dev.trim()) {
            bail!("/dev/{pname} is {what}: unmount it first (`umount /dev/{pname}`)",);
        }
        let holders: Vec<String> = std::fs::read_dir(p.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !holders.is_empty() {
            bail!("/dev/{pname} is in use by {}", holders.join(", "));
        }
    }
    let sectors: u64 = std::fs::read_to_string(real.join("size"))?.trim().parse()?;
    let bytes = sectors * 512;
    if bytes < image_size {
        bail!(
            "{} is too small: {} for an image of {}",
            path.display(),
            crate::progress::mib(bytes),
            crate::progress::mib(image_size)
        );
    }
    Ok(Target::Disk { name, bytes })
}

/// The block map beside an image: `disk.img.zst` and `disk.img` both use `disk.img.bmap`.
pub fn bmap_path(image: &Path) -> PathBuf {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let base = name.strip_suffix(".zst").unwrap_or(&name);
    image.with_file_name(format!("{base}.bmap"))
}

/// Writes `image` to `target`; returns the bytes written.
pub fn flash(image: &Path, bmap: &Path, target: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(bmap)
        .with_context(|| format!("reading the block map {}", bmap.display()))?;
    let map = Bmap::parse(&text).with_context(|| bmap.display().to_string())?;
    let kind = check_target(target, map.image_size)?;
    let src = File::open(image).with_context(|| image.display().to_string())?;
    let mut reader: Box<dyn Read> = if image.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::stream::read::Decoder::new(src)?)
    } else {
        Box::new(BufReader::with_capacity(1 << 20, src))
    };
    let out = match kind {
        Target::File => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(false)
                .open(target)?;
            f.set_len(map.image_size)?;
            f
        }
        // O_EXCL on a block device: refused while anything has it mounted or claimed.
        Target::Disk { .. } => std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(target)
            .with_context(|| format!("opening {} exclusively (is it in use?)", target.display()))?,
    };
    let total = map.mapped_bytes();
    let mut progress = Meter::new("writing", total);
    let mut pos = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    for r in &map.ranges {
        let (start, len) = (r.offset, r.length);
        skip(&mut reader, start - pos, &mut buf)?;
        let mut hasher = Sha256::new();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            reader.read_exact(&mut buf[..n]).with_context(|| {
                format!(
                    "{} ends before its block map says (truncated?)",
                    image.display()
                )
            })?;
            hasher.update(&buf[..n]);
            out.write_all_at(&buf[..n], start + done)
                .with_context(|| format!("writing {}", target.display()))?;
            done += n as u64;
            progress.add(n as u64);
        }
        if hex(&hasher.finalize()) != r.sha256 {
            bail!(
                "blocks {} of {} do not match its block map: the image is damaged \
                 or not the one the map was made for ({} is now partly written)",
                map.blocks(r),
                image.display(),
                target.display()
            );
        }
        pos = start + len;
    }
    out.sync_all().context("flushing the writes")?;
    progress.finish();
    verify(&out, &map, target)?;
    Ok(total)
}

fn skip(reader: &mut dyn Read, mut n: u64, buf: &mut [u8]) -> Result<()> {
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        reader
            .read_exact(&mut buf[..k])
            .context("the image ends before its block map says (truncated?)")?;
        n -= k as u64;
    }
    Ok(())
}

/// Reads every mapped range back from the target, past the page cache, and checks it.
fn verify(out: &File, map: &Bmap, target: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // Written pages are clean after the sync; dropping them makes the reads hit the device.
    let _ = nix::fcntl::posix_fadvise(
        out.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut progress = Meter::new("verifying", map.mapped_bytes());
    let mut buf = vec![0u8; 4 << 20];
    for r in &map.ranges {
        let (start, len) = (r.offset, r.length);
        let mut hasher = Sha256::new();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            out.read_exact_at(&mut buf[..n], start + done)?;
            hasher.update(&buf[..n]);
            done += n as u64;
            progress.add(n as u64);
        }
        if hex(&hasher.finalize()) != r.sha256 {
            bail!(
                "{} reads back different data at blocks {}: the card may be failing",
                target.display(),
                map.blocks(r)
            );
        }
    }
    progress.finish();
    Ok(())
}

/// Progress on stderr: a rewritten line on a terminal, a line per 10% otherwise.
struct Meter {
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    last_tenth: u64,
    tty: bool,
}

impl Meter {
    fn new(what: &'static str, total: u64) -> Meter {
        let now = Instant::now();
        Meter {
            what,
            total: total.max(1),
            done: 0,
            started: now,
            last: now,
            last_tenth: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{} {:>3}% {:.1}/{:.1} MiB, {:.1} MiB/s",
            self.what,
            self.done * 100 / self.total,
            self.done as f64 / 1048576.0,
            self.total as f64 / 1048576.0,
            self.done as f64 / 1048576.0 / secs
        )
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        let tenth = self.done * 10 / self.total;
        if self.tty && self.last.elapsed().as_millis() >= 250 {
            eprint!("\r{}", self.line());
            let _ = std::io::stderr().flush();
            self.last = Instant::now();
        } else if !self.tty && tenth > self.last_tenth {
            eprintln!("{}", self.line());
            self.last_tenth = tenth;
        }
    }
    fn finish(&mut self) {
        if self.tty {
            eprintln!("\r{}", self.line());
        } else if self.last_tenth < 10 {
            eprintln!("{}", self.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        sample_with("2")
    }

    /// A map with a correct own checksum whose second range is block `last`.
    fn sample_with(last: &str) -> String {
        let body = |sum: &str| {
            format!(
                "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n<ImageSize> 10000 </ImageSize>\n\
                 <BlockSize> 4096 </BlockSize>\n<BlocksCount> 3 </BlocksCount>\n\
                 <MappedBlocksCount> 2 </MappedBlocksCount>\n<ChecksumType> sha256 </ChecksumType>\n\
                 <BmapFileChecksum> {sum} </BmapFileChecksum>\n<BlockMap>\n\
                 <Range chksum=\"{a}\"> 0 </Range>\n<Range chksum=\"{a}\"> {last} </Range>\n\
                 </BlockMap>\n</bmap>\n",
                a = "ab".repeat(32)
            )
        };
        let zero = "0".repeat(64);
        let sum = hex(&Sha256::digest(body(&zero).as_bytes()));
        body(&sum)
    }

    #[test]
    fn parses_ranges_and_checks_its_own_checksum() {
        let m = Bmap::parse(&sample()).unwrap();
        assert_eq!(
            (m.image_size, m.block_size, m.ranges.len()),
            (10000, 4096, 2)
        );
        // The last block is short: 10000 - 8192.
        assert_eq!((m.ranges[1].offset, m.ranges[1].length), (8192, 1808));
        assert_eq!(m.mapped_bytes(), 4096 + 1808);
        assert_eq!(m.blocks(&m.ranges[1]), "2-2");
        let edited = sample().replace("> 2 </Range>", "> 1 </Range>");
        let err = Bmap::parse(&edited).unwrap_err().to_string();
        assert!(err.contains("own checksum"), "{err}");
        assert!(Bmap::parse("<html/>").is_err());
        // Consistent with its checksum, but outside the image: an error, not a panic.
        let err = Bmap::parse(&sample_with("9")).unwrap_err().to_string();
        assert!(err.contains("outside the image"), "{err}");
        assert!(Bmap::parse("not xml <").is_err());
    }

    #[test]
    fn bmap_beside_the_image() {
        assert_eq!(
            bmap_path(Path::new("out/b/disk.img.zst")),
            Path::new("out/b/disk.img.bmap")
        );
        assert_eq!(bmap_path(Path::new("disk.img")), Path::new("disk.img.bmap"));
    }

    #[test]
    fn device_numbers() {
        // makedev(8, 1) and makedev(259, 65536) as glibc encodes them.
        let enc = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        for (ma, mi) in [(8, 1), (259, 65536), (7, 3)] {
            assert_eq!((libc_major(enc(ma, mi)), libc_minor(enc(ma, mi))), (ma, mi));
        }
    }
}
