//! SPDY/3.1 framing, as much of it as Kubernetes' stream protocols use (`kubectl
//! port-forward` opens its streams with it, tunnelled through a WebSocket or over a plain
//! upgraded connection).
//!
//! A frame is 8 bytes of header and a payload. Control frames (first bit set) carry a
//! version (3), a type, flags and a 24-bit length; data frames a 31-bit stream id, flags
//! (FIN = the sender's half of the stream ends) and a length. The name/value header blocks
//! of SYN_STREAM, SYN_REPLY and HEADERS are compressed with zlib in one stream per direction
//! for the whole connection, each block ending with a sync flush, starting from a fixed
//! dictionary ([`dictionary`]): both ends must keep their codec across frames, in order.
//!
//! There is no flow control here: Kubernetes' SPDY library ignores WINDOW_UPDATE, so does
//! this, and back-pressure comes from the connection itself.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;

/// Frames longer than this are refused: the protocol allows 16 MiB, nobody here sends more
/// than a few KiB of headers or 32 KiB of data at once.
pub const MAX_FRAME: usize = 1 << 20;
/// A header block that inflates beyond this is refused (a zlib bomb).
const MAX_HEADERS: usize = 64 * 1024;

/// The preset dictionary of SPDY/3's header compression (draft 3, section 2.6.10.1): common
/// header names and values, each prefixed with its length as a 32-bit big-endian integer,
/// then a run of status codes, dates and content types.
pub fn dictionary() -> Vec<u8> {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1424);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// Name/value pairs of a header block (names lower-case, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// A frame read off the connection.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY and anything newer: nothing to do.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a SPDY frame of {0} bytes is longer than the {MAX_FRAME} accepted")]
    TooLong(usize),
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("a malformed SPDY {0} frame")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// One end's header codecs (the peer's compressor state lives in our decompressor).
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl Default for Codec {
    fn default() -> Self {
        let dictionary = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dictionary)
            .expect("a fresh compressor takes a dictionary");
        Codec {
            inflate: Decompress::new(true),
            deflate,
            dictionary,
        }
    }
}

impl Codec {
    /// Parses the first frame in `buf`: `None` until all of it has arrived, else the frame
    /// and how many bytes it took.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::TooLong(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body = &buf[8..8 + len];
        let frame = if word & 0x8000_0000 == 0 {
            Frame::Data {
                stream: word,
                flags,
                data: body.to_vec(),
            }
        } else {
            let version = ((word >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(Error::Version(version));
            }
            let be32 = |at: usize, what| {
                body.get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(Error::Malformed(what))
            };
            match (word & 0xffff) as u16 {
                SYN_STREAM => {
                    let stream = be32(0, "SYN_STREAM")? & 0x7fff_ffff;
                    // Then the associated stream (4 bytes), priority and slot (2 bytes).
                    let block = body.get(10..).ok_or(Error::Malformed("SYN_STREAM"))?;
                    Frame::SynStream {
                        stream,
                        flags,
                        headers: self.read_headers(block)?,
                    }
                }
                SYN_REPLY => {
                    // Our compressor state must follow the peer's even when the headers
                    // do not matter.
                    self.read_headers(body.get(4..).ok_or(Error::Malformed("SYN_REPLY"))?)?;
                    Frame::Ignored
                }
                RST_STREAM => Frame::RstStream {
                    stream: be32(0, "RST_STREAM")? & 0x7fff_ffff,
                    status: be32(4, "RST_STREAM")?,
                },
                PING => Frame::Ping(be32(0, "PING")?),
                GOAWAY => Frame::GoAway,
                8 => {
                    // HEADERS: decoded for the codec's sake only.
                    self.read_headers(body.get(4..).ok_or(Error::Malformed("HEADERS"))?)?;
                    Frame::Ignored
                }
                _ => Frame::Ignored,
            }
        };
        Ok(Some((frame, 8 + len)))
    }

    fn read_headers(&mut self, mut input: &[u8]) -> Result<Headers, Error> {
        let err = |e: &dyn std::fmt::Display| Error::Headers(e.to_string());
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        while !input.is_empty() {
            if out.len() >= MAX_HEADERS {
                return Err(Error::Headers(format!(
                    "inflates beyond {MAX_HEADERS} bytes"
                )));
            }
            out.reserve(4096);
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => break,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| err(&e))?;
                }
                Err(e) => return Err(err(&e)),
            }
        }
        parse_block(&out)
    }

    fn write_headers(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name.to_ascii_lowercase().as_str(), value] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = plain.as_slice();
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("compressing into memory cannot fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all input is in and the flush fit in the space left.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// SYN_REPLY for `stream` with `headers`.
    pub fn syn_reply(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.write_headers(headers);
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&block);
        control(SYN_REPLY, 0, &body)
    }

    /// SYN_STREAM opening `stream` (what a client sends; tests play the client).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.write_headers(headers);
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&block);
        control(SYN_STREAM, 0, &body)
    }
}

fn parse_block(b: &[u8]) -> Result<Headers, Error> {
    let bad = || Error::Headers("a truncated name/value block".into());
    let mut at = 0;
    let u32_at = |at: &mut usize| -> Result<usize, Error> {
        let v = b.get(*at..*at + 4).ok_or_else(bad)?;
        *at += 4;
        Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    };
    let count = u32_at(&mut at)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let mut pair = [String::new(), String::new()];
        for s in &mut pair {
            let len = u32_at(&mut at)?;
            let bytes = b.get(at..at + len).ok_or_else(bad)?;
            at += len;
            *s = String::from_utf8_lossy(bytes).into_owned();
        }
        let [name, value] = pair;
        headers.push((name, value));
    }
    Ok(headers)
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// A data frame: `data` on `stream`, with FIN when `fin`.
pub fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut body = stream.to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// GOAWAY with status OK after `last_stream`.
pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut body = last_stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

/// The value of header `name` (lower-case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_draft_3s() {
        let d = dictionary();
        // Its size and Adler-32 (the id a zlib stream names it by) as the draft gives them.
        assert_eq!(d.len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(&d).unwrap(), 0xe3c6_a7c2);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn frames_round_trip_through_two_codecs() {
        let (mut client, mut server) = (Codec::default(), Codec::default());
        // Several header blocks share one zlib stream: each must decode after the others.
        let mut wire = Vec::new();
        for id in [1u32, 3, 5] {
            let rid = id.to_string();
            wire.extend(client.syn_stream(
                id,
                &[
                    ("streamType", "data"),
                    ("port", "8080"),
                    ("requestID", &rid),
                ],
            ));
        }
        wire.extend(data(1, b"GET / HTTP/1.0\r\n\r\n", true));
        wire.extend(ping(7));
        wire.extend(rst_stream(3, 5));
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = server.parse(&wire[at..]).unwrap() {
            frames.push(frame);
            at += used;
        }
        assert_eq!(at, wire.len());
        assert_eq!(frames.len(), 6);
        let Frame::SynStream {
            stream, headers, ..
        } = &frames[2]
        else {
            panic!("{:?}", frames[2]);
        };
        assert_eq!(*stream, 5);
        assert_eq!(header(headers, "streamtype"), Some("data"));
        assert_eq!(header(headers, "requestid"), Some("5"));
        assert_eq!(
            frames[3],
            Frame::Data {
                stream: 1,
                flags: FLAG_FIN,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec()
            }
        );
        assert_eq!(frames[4], Frame::Ping(7));
        assert_eq!(
            frames[5],
            Frame::RstStream {
                stream: 3,
                status: 5
            }
        );

        // Replies go the other way on the server's own compressor.
        let reply = [server.syn_reply(1, &[]), server.syn_reply(3, &[("a", "b")])].concat();
        let (first, used) = client.parse(&reply).unwrap().unwrap();
        assert_eq!(first, Frame::Ignored);
        assert!(client.parse(&reply[used..]).unwrap().is_some());
    }

    #[test]
    fn partial_and_hostile_input() {
        let mut c = Codec::default();
        let frame = data(9, b"abc", false);
        assert!(
            c.parse(&frame[..5]).unwrap().is_none(),
            "a header cut short waits"
        );
        assert!(
            c.parse(&frame[..10]).unwrap().is_none(),
            "a body cut short waits"
        );
        let mut huge = data(1, b"", false);
        huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(c.parse(&huge), Err(Error::TooLong(_))));
        let mut v2 = ping(1);
        v2[1] = 2;
        assert!(matches!(c.parse(&v2), Err(Error::Version(2))));
        let mut garbage = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        assert!(matches!(c.parse(&garbage), Err(Error::Headers(_))));
        garbage.truncate(8 + 4);
        garbage[7] = 4;
        assert!(matches!(c.parse(&garbage), Err(Error::Malformed(_))));
    }
}
