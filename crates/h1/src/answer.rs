//! An origin's answer head (RFC 9112 §4, §6), parsed as strictly as a client's request: both
//! Transfer-Encoding and Content-Length, disagreeing or signed lengths, a coding other than
//! chunked, Transfer-Encoding from HTTP/1.0 are errors (the proxy answers 502 and drops the
//! connection), never a guess. The fields are kept as sent ([`RawHead`]).

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Response, StatusCode, Version};

use crate::Error;
use crate::chunked::{Chunk, Step, decode_chunk};
use crate::encode::{parse_length, put_line};
use crate::raw_head::{Kind, RawHead};
use crate::scan::HeadScan;

/// Most header lines in an origin's answer.
pub const MAX_HEADERS: usize = 128;

/// How the answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// Exactly this many bytes still to come.
    Length(u64),
    /// Chunked, decoding at this state.
    Chunked(Chunk),
    /// Until the origin closes: the connection is not reused.
    Close,
    /// All of it read.
    Done,
}

/// An answer's head (its fields as sent), how its body is delimited, and whether the
/// connection closes after it.
pub type Head = (http::response::Parts, RawHead, In, bool);

/// Parses an answer head at the start of `buf` and consumes it. None: not complete yet.
pub fn parse_head(buf: &mut BytesMut, scan: &mut HeadScan) -> Result<Option<Head>, Error> {
    if buf.is_empty() || !scan.ready(buf) {
        return Ok(None);
    }
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        // Not all here yet; or an empty line that does not end a head (one before the
        // status line).
        Ok(httparse::Status::Partial) => {
            scan.incomplete(buf);
            return Ok(None);
        }
        Err(e) => return Err(format!("malformed answer from the origin: {e}").into()),
    };
    // The head alone, copied once: fields are places in it, so a stored answer (the cache)
    // holds its head and not the connection's whole read buffer.
    let code = resp.code.ok_or("answer without a status")?;
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut raw = RawHead::new(Bytes::copy_from_slice(&buf[..n]), resp.headers.len());
    // Where a name or value the parser returned is in the head (always inside it).
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| -> Result<(usize, usize), Error> {
        let off = (s.as_ptr() as usize)
            .checked_sub(base)
            .filter(|o| o + s.len() <= n)
            .ok_or("a header field outside the answer's head")?;
        Ok((off, s.len()))
    };
    let mut f = Framing::default();
    for hd in resp.headers.iter() {
        if hd.name.len() > usize::from(u16::MAX) {
            // Longer than a header map takes: refused as before fields were kept as sent.
            return Err("a header name longer than 65535 bytes".into());
        }
        let kind = Kind::of(hd.name.as_bytes());
        if f.field(kind, hd.name, hd.value)? {
            raw.push(at(hd.name.as_bytes())?, at(hd.value)?, kind);
        }
    }
    // `close` wins over `keep-alive`; an HTTP/1.0 answer closes unless it says keep-alive.
    let close = f.close || (version == Version::HTTP_10 && !f.keep_alive);
    let framing = f.body(version)?;
    buf.advance(n);
    scan.reset();
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    Ok(Some((parts, raw, framing, close)))
}

/// What an answer's fields say about its framing and connection, gathered field by field.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    /// Some(final coding is chunked).
    te: Option<bool>,
    close: bool,
    keep_alive: bool,
}

impl Framing {
    /// Notes one field; Ok(false): the field is fully read here and not passed on (a
    /// Connection naming only close / keep-alive, Keep-Alive).
    #[inline(always)]
    fn field(&mut self, kind: Kind, name: &str, value: &[u8]) -> Result<bool, Error> {
        match kind {
            Kind::ContentLength => {
                let s = std::str::from_utf8(value).map_err(|_| "invalid Content-Length")?;
                let n = parse_length(s.trim())
                    .ok_or_else(|| format!("invalid Content-Length {s:?}"))?;
                if self.length.is_some_and(|l| l != n) {
                    return Err("Content-Length headers that disagree".into());
                }
                self.length = Some(n);
            }
            Kind::TransferEncoding => {
                let s = std::str::from_utf8(value).map_err(|_| "invalid Transfer-Encoding")?;
                for coding in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    if self.te == Some(true) {
                        // chunked must be the last coding, applied once (RFC 9112 §6.1).
                        return Err("Transfer-Encoding with a coding after chunked".into());
                    }
                    // Any coding but chunked makes the answer one we cannot pass: it would
                    // reach the client coded and unlabelled (Transfer-Encoding is hop-by-hop).
                    let chunked = coding.eq_ignore_ascii_case("chunked");
                    self.te = Some(chunked && self.te != Some(false));
                }
            }
            Kind::Connection => {
                let s = std::str::from_utf8(value).unwrap_or("");
                let mut names_others = false;
                for tok in s.split(',').map(str::trim) {
                    let close = tok.eq_ignore_ascii_case("close");
                    let keep = tok.eq_ignore_ascii_case("keep-alive");
                    self.close |= close;
                    self.keep_alive |= keep;
                    names_others |= !(close || keep || tok.is_empty());
                }
                // Hop-by-hop and fully read here: the pipeline would only remove it again.
                return Ok(names_others);
            }
            Kind::HopByHop if name.eq_ignore_ascii_case("keep-alive") => return Ok(false),
            _ => {}
        }
        Ok(true)
    }

    /// How the body is delimited (RFC 9112 §6.3), once every field was seen.
    #[inline(always)]
    fn body(&self, version: Version) -> Result<In, Error> {
        Ok(match (self.te, self.length) {
            (Some(_), Some(_)) => {
                return Err("answer with both Transfer-Encoding and Content-Length".into());
            }
            // RFC 9112 §6.1: Transfer-Encoding from an HTTP/1.0 server is faulty framing.
            (Some(_), None) if version == Version::HTTP_10 => {
                return Err("HTTP/1.0 answer with Transfer-Encoding".into());
            }
            (Some(true), None) => In::Chunked(Chunk::Size),
            // A coding other than chunked last would reach the client undecoded and
            // unlabelled (Transfer-Encoding is hop-by-hop): refused rather than passed on.
            (Some(false), None) => {
                return Err("answer with a transfer coding other than chunked".into());
            }
            (None, Some(n)) => In::Length(n),
            (None, None) => In::Close,
        })
    }
}

/// What [`decode_answer`] says when a field the parser accepted is not one a header map takes.
#[doc(hidden)]
pub const FIELDS_LOST: &str = "fields lost in a header map";

/// What [`decode_answer`] returns when the fields copied in runs differ from the same fields
/// written one by one (`RawHead::write_lines`); a bug.
#[doc(hidden)]
pub const LINES_DIFFER: &str = "header lines copied in runs differ";

/// An answer as it comes from an origin, head and body in `wire`, split into two reads at
/// `split`: the decoded body and trailers, or the error the proxy would answer 502 for. For the
/// fuzzer (`fuzz/fuzz_targets/h1_answer.rs`): it must never panic, and where the split falls
/// must not change the result.
#[doc(hidden)]
pub fn decode_answer(wire: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
    let split = split.min(wire.len());
    let mut buf = BytesMut::from(&wire[..split]);
    let mut rest = &wire[split..];
    let mut feed = |buf: &mut BytesMut| -> bool {
        if rest.is_empty() {
            return false;
        }
        buf.extend_from_slice(rest);
        rest = &[];
        true
    };
    let mut scan = HeadScan::default();
    let framing = loop {
        match parse_head(&mut buf, &mut scan).map_err(|e| e.to_string())? {
            Some((_, raw, framing, _)) => {
                // The fields copied in runs must read as written one by one.
                let (mut runs, mut one_by_one) = (Vec::new(), Vec::new());
                raw.write_lines(&mut |b| runs.extend_from_slice(b), |_| false);
                for (name, value, _) in raw.iter() {
                    put_line(&mut |b| one_by_one.extend_from_slice(b), name, value);
                }
                if runs != one_by_one {
                    return Err(LINES_DIFFER.into());
                }
                // Every field kept as sent must survive the header map the other paths use.
                let kept = raw.iter().count();
                if raw.into_map(HeaderMap::new()).len() != kept {
                    return Err(FIELDS_LOST.into());
                }
                break framing;
            }
            None if feed(&mut buf) => {}
            None => return Err("incomplete head".into()),
        }
    };
    let mut body = Vec::new();
    let mut state = match framing {
        In::Chunked(c) => c,
        In::Length(n) => {
            feed(&mut buf);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if buf.len() < n {
                return Err("body shorter than its length".into());
            }
            return Ok((buf[..n].to_vec(), None));
        }
        In::Close | In::Done => {
            feed(&mut buf);
            return Ok((buf.to_vec(), None));
        }
    };
    loop {
        match decode_chunk(&mut buf, state).map_err(|e| e.to_string())? {
            Step::Data(d, next) => {
                body.extend_from_slice(&d);
                state = next;
            }
            Step::Next(next) => state = next,
            Step::End(trailers) => return Ok((body, trailers)),
            Step::More if feed(&mut buf) => {}
            Step::More => return Err("incomplete body".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_the_same_however_the_reads_split() {
        let wire =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: 1\r\n\r\n";
        let whole = decode_answer(wire, wire.len()).unwrap();
        assert_eq!(whole.0, b"hello");
        for split in 0..wire.len() {
            assert_eq!(
                decode_answer(wire, split).unwrap(),
                whole,
                "split at {split}"
            );
        }
    }

    fn head(wire: &str) -> Result<Option<Head>, Error> {
        parse_head(
            &mut BytesMut::from(wire.as_bytes()),
            &mut HeadScan::default(),
        )
    }

    #[test]
    fn fields_copied_in_runs_read_as_written_one_by_one() {
        for wire in [
            "HTTP/1.1 200 OK\r\nServer: a\r\nDate: b\r\nContent-Length: 0\r\nETag: \"c\"\r\n\r\n",
            // A dropped field (Connection) in the middle, a removed one (the request id),
            // lines not written as `name: value` CRLF, an empty value.
            "HTTP/1.1 200 OK\r\nA: 1\r\nConnection: keep-alive\r\nB: 2\r\nx-request-id: o\r\nC:3\r\nD: 4  \r\nE: 5\nF:  6\r\nG: \r\nH: 8\r\nI: 9\r\n\r\n",
            "HTTP/1.1 200 OK\nA: 1\nB: 2\n\n",
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
        ] {
            let (_, mut raw, ..) = head(wire).unwrap().unwrap();
            raw.remove(Kind::RequestId);
            let skip = |k| k == Kind::TransferEncoding;
            let mut runs = Vec::new();
            raw.write_lines(&mut |b| runs.extend_from_slice(b), skip);
            let mut one_by_one = Vec::new();
            for (name, value, kind) in raw.iter() {
                if !skip(kind) {
                    put_line(&mut |b| one_by_one.extend_from_slice(b), name, value);
                }
            }
            assert_eq!(
                String::from_utf8_lossy(&runs),
                String::from_utf8_lossy(&one_by_one),
                "{wire:?}"
            );
            assert!(!runs.is_empty());
        }
    }

    #[test]
    fn a_head_that_trickles_in_is_parsed_when_its_last_byte_comes() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"HTTP/1.1 204 No Content\nA: b\n\n",
            b"HTTP/1.1 204 No Content\r\nA: b\n\r\n",
        ] {
            let end = wire.len() - if wire.ends_with(b"hi") { 2 } else { 0 };
            // Byte by byte, and in two reads split at every place.
            let mut buf = BytesMut::new();
            let mut scan = HeadScan::default();
            for (i, b) in wire.iter().enumerate() {
                buf.extend_from_slice(&[*b]);
                let got = parse_head(&mut buf, &mut scan).unwrap();
                assert_eq!(got.is_some(), i + 1 == end, "byte {i} of {wire:?}");
                if got.is_some() {
                    break;
                }
            }
            for split in 0..end {
                let mut buf = BytesMut::from(&wire[..split]);
                let mut scan = HeadScan::default();
                assert!(parse_head(&mut buf, &mut scan).unwrap().is_none());
                buf.extend_from_slice(&wire[split..]);
                let (p, ..) = parse_head(&mut buf, &mut scan).unwrap().expect("parsed");
                assert!(p.status.is_success());
                assert_eq!(&buf[..], &wire[end..]);
                // The next head is tried at once.
                assert_eq!(scan.searched, 0);
            }
        }
    }

    #[test]
    fn answer_framing() {
        let (p, _, f, c) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(f, In::Length(5));
        assert!(!c);
        let (_, _, f, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(f, In::Chunked(Chunk::Size));
        let (_, _, f, c) = head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(f, In::Close);
        assert!(c);
        let (_, _, _, c) =
            head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(c);
        let (_, _, f, _) =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(f, In::Length(3));
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ambiguous_answers_are_errors() {
        for wire in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip, chunked\r\n\r\n",
            // gzip would reach the client coded and unlabelled.
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(head(wire).is_err(), "{wire:?}");
        }
    }
}
