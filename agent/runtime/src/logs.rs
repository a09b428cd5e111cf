//! Container logs in the CRI format the kubelet and `crictl` use, one file per container start:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>` per line, `P` marking a piece of a line
//! longer than [`MAX_LINE`]. The shim writes them; [`read`] turns them back into what
//! `kubectl logs` prints. A file that outgrows its cap is moved to `<file>.1` (one kept).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Longest piece of a line written as one record (what containerd uses).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends records to a container's log file, rotating at `max_bytes`.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl Writer {
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Writer> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
        })
    }

    /// Writes `text` (without its newline) as one record; `partial` when the line goes on.
    pub fn record(&mut self, stream: Stream, partial: bool, text: &[u8]) -> io::Result<()> {
        let now = jiff::Timestamp::now();
        let mut line = Vec::with_capacity(text.len() + 48);
        write!(
            line,
            "{} {} {} ",
            rfc3339_nanos(now),
            stream.as_str(),
            if partial { 'P' } else { 'F' }
        )?;
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Splits a stream's bytes into records: whole lines as `F`, over-long pieces as `P`.
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Writer) -> io::Result<()> {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..nl]);
            self.flush_pieces(out)?;
            out.record(self.stream, false, &self.pending)?;
            self.pending.clear();
            bytes = &bytes[nl + 1..];
        }
        self.pending.extend_from_slice(bytes);
        self.flush_pieces(out)
    }

    /// At end of stream a last line without a newline is still a whole line.
    pub fn finish(&mut self, out: &mut Writer) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.record(self.stream, false, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn flush_pieces(&mut self, out: &mut Writer) -> io::Result<()> {
        while self.pending.len() > MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            out.record(self.stream, true, &self.pending)?;
            self.pending = rest;
        }
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// `2026-11-22T12:00:00.123456789Z`: fixed nine digits so records sort as text.
pub fn rfc3339_nanos(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Stop after about this many bytes.
    pub limit_bytes: Option<usize>,
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: String,
    pub stream: String,
    pub partial: bool,
    pub text: Vec<u8>,
}

pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let stream = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    let text = text.strip_suffix(b"\n").unwrap_or(text).to_vec();
    Some(Record {
        time,
        stream,
        partial: tag == b"P",
        text,
    })
}

/// Renders records as `kubectl logs` shows them.
pub fn render(records: &[Record], opts: &ReadOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    for r in records {
        if opts.timestamps && line_start {
            out.extend_from_slice(r.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.text);
        if !r.partial {
            out.push(b'\n');
        }
        line_start = !r.partial;
        if opts.limit_bytes.is_some_and(|l| out.len() >= l) {
            out.truncate(opts.limit_bytes.unwrap_or(usize::MAX));
            break;
        }
    }
    out
}

/// The records of a container's log (the rotated file first), filtered by `opts`.
pub fn read(path: &Path, opts: &ReadOptions) -> io::Result<Vec<Record>> {
    let mut records = Vec::new();
    for p in [rotated(path), path.to_owned()] {
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && p != path => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            if let Some(r) = parse_record(&line?) {
                records.push(r);
            }
        }
    }
    Ok(filter(records, opts))
}

/// Applies `since` and `tail_lines` (counting whole lines, not pieces).
pub fn filter(mut records: Vec<Record>, opts: &ReadOptions) -> Vec<Record> {
    if let Some(since) = opts.since {
        records.retain(|r| {
            r.time
                .parse::<jiff::Timestamp>()
                .map(|t| t >= since)
                .unwrap_or(true)
        });
    }
    if let Some(tail) = opts.tail_lines {
        let mut lines = 0;
        let mut start = records.len();
        while start > 0 {
            let r = &records[start - 1];
            if !r.partial {
                if lines == tail {
                    break;
                }
                lines += 1;
            }
            start -= 1;
        }
        records.drain(..start);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_the_cri_format_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 200).unwrap();
        let mut out = LineSplitter::new(Stream::Stdout);
        let mut err = LineSplitter::new(Stream::Stderr);
        out.feed(b"one\ntw", &mut w).unwrap();
        err.feed(b"oops\n", &mut w).unwrap();
        out.feed(b"o\nthree", &mut w).unwrap();
        out.finish(&mut w).unwrap();
        let all = read(&path, &ReadOptions::default()).unwrap();
        let text = render(&all, &ReadOptions::default());
        assert_eq!(String::from_utf8(text).unwrap(), "one\noops\ntwo\nthree\n");
        assert_eq!(all[1].stream, "stderr");

        let tail = read(
            &path,
            &ReadOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(render(&tail, &ReadOptions::default()), b"two\nthree\n");
        let stamped = render(
            &tail,
            &ReadOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let first = String::from_utf8(stamped).unwrap();
        let (time, rest) = first.split_once(' ').unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        assert!(rest.starts_with("two\n"));

        // 200 bytes hold about three records: the fourth rotates, and both files are read.
        for i in 0..6 {
            out.feed(format!("line {i}\n").as_bytes(), &mut w).unwrap();
        }
        assert!(rotated(&path).exists());
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        let all = read(&path, &ReadOptions::default()).unwrap();
        assert_eq!(
            render(&all[all.len() - 1..], &ReadOptions::default()),
            b"line 5\n"
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_records_and_joined_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 1 << 20).unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        s.feed(&long, &mut w).unwrap();
        s.feed(b"\nshort\n", &mut w).unwrap();
        let records = read(&path, &ReadOptions::default()).unwrap();
        assert_eq!(records.iter().filter(|r| r.partial).count(), 2);
        let text = render(&records, &ReadOptions::default());
        assert_eq!(text.len(), long.len() + 1 + 6);
        // The tail counts whole lines, not pieces.
        let tail = filter(
            records,
            &ReadOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(render(&tail, &ReadOptions::default()).len(), long.len() + 7);
    }
}
