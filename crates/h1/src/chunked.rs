//! Chunked transfer coding (RFC 9112 §7.1) both ways: the decoder's states and one step of
//! decoding over a buffer, and the lines an encoder writes around each chunk.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;
use crate::encode::put_field;

/// Longest chunk-size line (with extensions).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
}

/// Whether a reader still waiting for a chunk line or the trailers has buffered more than
/// either may take: the body is malformed (an endless line).
pub fn overlong(buffered: usize) -> bool {
    buffered > MAX_TRAILERS + MAX_CHUNK_LINE
}

/// The end of a chunked body: the last chunk, the trailer fields, the empty line.
pub fn put_last_chunk(put: &mut impl FnMut(&[u8]), trailers: &HeaderMap) {
    put(b"0\r\n");
    for (name, value) in trailers {
        put_field(put, name, value);
    }
    put(b"\r\n");
}

/// The chunk-size line for `n` bytes of data (hex digits, CRLF), written into `buf`.
#[inline]
pub fn chunk_line(buf: &mut [u8; 18], mut n: usize) -> &[u8] {
    let mut i = 16;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// What the chunked decoder made of the buffer.
pub enum Step {
    /// Some data, and the state after it.
    Data(Bytes, Chunk),
    /// A line was consumed.
    Next(Chunk),
    /// The body ended (with trailers, if any).
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// One step of chunked decoding (RFC 9112 §7.1) over the bytes at the start of `buf`.
pub fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> Result<Step, Error> {
    match state {
        Chunk::Size => size_line(buf),
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            Ok(Step::Data(
                data,
                if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                },
            ))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers => trailers(buf),
    }
}

/// A chunk-size line: hex digits, then nothing or extensions (ignored), possibly after
/// spaces; no control characters (a bare LF among them).
#[inline]
fn size_line(buf: &mut BytesMut) -> Result<Step, Error> {
    let Some(eol) = find(buf, b"\r\n", MAX_CHUNK_LINE)? else {
        return Ok(Step::More);
    };
    let line = &buf[..eol];
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err("invalid chunk size".into());
    }
    let rest = &line[digits..];
    if rest
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err("control character in a chunk size line".into());
    }
    let rest_ok = rest.is_empty() || {
        let t = rest.iter().position(|b| *b != b' ' && *b != b'\t');
        t.is_some_and(|i| rest[i] == b';')
    };
    if !rest_ok {
        return Err("invalid chunk size line".into());
    }
    let size = u64::from_str_radix(
        std::str::from_utf8(&line[..digits]).map_err(|_| "invalid chunk size")?,
        16,
    )
    .map_err(|_| "invalid chunk size")?;
    buf.advance(eol + 2);
    Ok(Step::Next(if size == 0 {
        Chunk::Trailers
    } else {
        Chunk::Data(size)
    }))
}

/// The trailer section after the last chunk, up to its empty line.
fn trailers(buf: &mut BytesMut) -> Result<Step, Error> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Step::End(None));
    }
    let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILERS)? else {
        return Ok(Step::More);
    };
    let mut trailers = HeaderMap::new();
    for line in buf[..end].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err("malformed trailer line".into());
        };
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| "invalid trailer name")?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| "invalid trailer value")?;
        trailers.append(name, value);
    }
    buf.advance(end + 4);
    Ok(Step::End(Some(trailers)))
}

/// Position of the first `needle` within `limit` bytes; an error past the limit.
fn find(buf: &[u8], needle: &[u8], limit: usize) -> Result<Option<usize>, Error> {
    match buf.windows(needle.len()).position(|w| w == needle) {
        Some(i) if i <= limit => Ok(Some(i)),
        Some(_) => Err("line too long in a chunked body".into()),
        None if buf.len() > limit => Err("line too long in a chunked body".into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut buf = BytesMut::from(wire);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match decode_chunk(&mut buf, state)? {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::Next(next) => state = next,
                Step::End(t) => {
                    assert!(buf.is_empty(), "bytes after the body");
                    return Ok((out, t));
                }
                Step::More => return Err("incomplete".into()),
            }
        }
    }

    #[test]
    fn chunked_bodies() {
        let (b, t) = decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(b, b"hello world");
        assert!(t.is_none());
        let (b, t) = decode_all(b"3\r\nabc\r\n0\r\nx-sum: 7\r\nx-b: c\r\n\r\n").unwrap();
        assert_eq!(b, b"abc");
        let t = t.unwrap();
        assert_eq!(t["x-sum"], "7");
        assert_eq!(t["x-b"], "c");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"z\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"-1\r\n",
            b"1 2\r\nx\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"5;x\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(wire).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
