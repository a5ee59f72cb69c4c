//! A client's request head (RFC 9112 §2-§3, §6): parsed from the read buffer and checked for
//! every framing the server refuses before anything acts on it.
//!
//! Refused, never guessed (each refusal closes the connection): both Transfer-Encoding and
//! Content-Length (RFC 9112 §6.3), Content-Length values that disagree or are not plain digits
//! (a list of identical values is one length, RFC 9110 §8.6), chunked not the one and last
//! coding (400) or another coding (501), Transfer-Encoding from HTTP/1.0, more than one Host
//! (§3.2), whitespace before the colon and obs-fold (httparse), an expectation other than
//! 100-continue (417), CONNECT (405: not a forward proxy).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::chunked::Chunk;
use crate::encode::parse_length;
use crate::scan::HeadScan;

/// Most header lines in a request head (a larger head answers 431).
pub const MAX_HEADERS: usize = 256;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyIn {
    /// Exactly this many bytes still to come.
    Length(u64),
    /// Chunked, decoding at this state.
    Chunked(Chunk),
    /// No body, or all of it read.
    Done,
    /// Cut short or malformed: the connection cannot carry another request.
    Failed,
}

/// A request head, parsed and checked.
#[derive(Debug)]
pub struct Parsed {
    /// Boxed: it is passed down the pipeline by pointer.
    pub parts: Box<http::request::Parts>,
    /// How its body is delimited.
    pub body: BodyIn,
    /// The client asked to close after this request (or HTTP/1.0 without keep-alive).
    pub close: bool,
    /// The client waits for "100 Continue" before it sends its body.
    pub expect_continue: bool,
    /// An HTTP/1.1 upgrade request (`Connection: upgrade` and an `Upgrade` field).
    pub upgrade: bool,
}

/// A request refused before the pipeline: its status and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub &'static str);

/// Parses the request head at the start of `buf` and consumes it: None while incomplete.
/// The head is copied once out of the read buffer (so that what holds on to a header value
/// never holds the whole buffer); the target and header values are slices of that copy.
/// `scan`: how far `buf` was searched for the head's end (see `HeadScan`).
pub fn parse_request(
    buf: &mut BytesMut,
    scan: &mut HeadScan,
    max_head: usize,
) -> Result<Option<Parsed>, Refusal> {
    if !scan.ready(buf) {
        return Ok(None);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => {
            scan.reset();
            n
        }
        // Not all here yet; or an empty line that does not end a head (a bare one before the
        // request line).
        Ok(httparse::Status::Partial) => {
            scan.incomplete(buf);
            return Ok(None);
        }
        Err(e) => return Err(malformed(e)),
    };
    if n > max_head {
        return Err(Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    let head = Bytes::copy_from_slice(&buf[..n]);
    let base = buf.as_ptr() as usize;
    // The same bytes in the copy: httparse's slices point into `buf`.
    let in_head = |part: &[u8]| {
        let at = (part.as_ptr() as usize).saturating_sub(base);
        head.slice(at..at + part.len())
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let uri = Uri::from_maybe_shared(in_head(req.path.unwrap_or("").as_bytes()))
        .map_err(|_| bad("invalid request target"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Room for the few fields the pipeline may add to the map (Host, TE); the forwarding
    // fields go to an HTTP/1 origin as lines, not into the map. A small map is one small
    // allocation (the allocator's fast path).
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 2);
    let mut f = Framing::default();
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(in_head(h.value))
            .map_err(|_| bad("invalid header value"))?;
        f.field(&name, &value, version)?;
        headers.append(name, value);
    }
    let body = f.body(version, &mut headers)?;
    if method == Method::CONNECT {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served by this proxy",
        ));
    }
    buf.advance(n);
    Ok(Some(f.parsed(method, uri, version, headers, body)))
}

/// A 400 for `why`.
#[inline]
fn bad(why: &'static str) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, why)
}

/// What httparse's refusal of a head is answered with.
#[inline]
fn malformed(e: httparse::Error) -> Refusal {
    match e {
        httparse::Error::TooManyHeaders => Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header lines",
        ),
        httparse::Error::Version => bad("malformed request line or unsupported version"),
        _ => bad("malformed request head"),
    }
}

/// What the fields of a head say about its framing and connection, gathered field by field.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    /// Some(the codings are exactly "chunked").
    te: Option<bool>,
    te_lines: u32,
    length_values: u32,
    hosts: u32,
    close: bool,
    keep_alive: bool,
    conn_upgrade: bool,
    expect_continue: bool,
}

impl Framing {
    /// Notes one field; refuses what cannot be framed unambiguously.
    #[inline(always)]
    fn field(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
        version: Version,
    ) -> Result<(), Refusal> {
        if name == header::CONTENT_LENGTH {
            // A list of identical values is one length (RFC 9110 §8.6); anything else is
            // refused, never guessed.
            let s = value.to_str().map_err(|_| bad("invalid Content-Length"))?;
            for v in s.split(',') {
                let n = parse_length(v.trim()).ok_or(bad("invalid Content-Length"))?;
                if self.length.is_some_and(|l| l != n) {
                    return Err(bad("Content-Length values that disagree"));
                }
                self.length = Some(n);
                self.length_values += 1;
            }
        } else if name == header::TRANSFER_ENCODING {
            let s = value
                .to_str()
                .map_err(|_| bad("invalid Transfer-Encoding"))?;
            self.te_lines += 1;
            for coding in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if self.te.is_some() {
                    // chunked must be the one and last coding; anything after it, or chunked
                    // twice, is faulty framing (RFC 9112 §6.1).
                    return Err(bad("Transfer-Encoding with more than one coding"));
                }
                self.te = Some(coding.eq_ignore_ascii_case("chunked"));
            }
        } else if name == header::HOST {
            self.hosts += 1;
        } else if name == header::CONNECTION {
            for tok in value.to_str().unwrap_or("").split(',').map(str::trim) {
                self.close |= tok.eq_ignore_ascii_case("close");
                self.keep_alive |= tok.eq_ignore_ascii_case("keep-alive");
                self.conn_upgrade |= tok.eq_ignore_ascii_case("upgrade");
            }
        } else if name == header::EXPECT {
            if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return Err(Refusal(
                    StatusCode::EXPECTATION_FAILED,
                    "unsupported expectation",
                ));
            }
            self.expect_continue = version == Version::HTTP_11;
        }
        Ok(())
    }

    /// The request, its head boxed. Always inlined: called once, and a call would move the
    /// head's map and target through its arguments (~200 bytes copied per request).
    #[inline(always)]
    fn parsed(
        &self,
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
        body: BodyIn,
    ) -> Parsed {
        let close = self.close || (version == Version::HTTP_10 && !self.keep_alive);
        let upgrade = version == Version::HTTP_11
            && self.conn_upgrade
            && headers.contains_key(header::UPGRADE);
        let mut parts = Box::new(Request::new(()).into_parts().0);
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = headers;
        Parsed {
            parts,
            expect_continue: self.expect_continue && body != BodyIn::Done,
            body,
            close,
            upgrade,
        }
    }

    /// How the body is delimited, once every field was seen; a list of identical lengths
    /// becomes one field in `headers`.
    #[inline(always)]
    fn body(&self, version: Version, headers: &mut HeaderMap) -> Result<BodyIn, Refusal> {
        if self.te_lines > 0 && self.te.is_none() {
            // Present but empty: chunked is not its final coding (RFC 9112 §6.3).
            return Err(bad("empty Transfer-Encoding"));
        }
        if self.length_values > 1
            && let Some(n) = self.length
        {
            // One length goes on, not the list: the next hop parses it as strictly as we do.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        if self.hosts > 1 {
            // RFC 9112 §3.2: more than one Host is a 400.
            return Err(bad("more than one Host header"));
        }
        Ok(match (self.te, self.length) {
            // RFC 9112 §6.3: both is an attempt at smuggling or a broken client; refused.
            (Some(_), Some(_)) => {
                return Err(bad(
                    "request carries both Content-Length and Transfer-Encoding",
                ));
            }
            (Some(_), None) if version == Version::HTTP_10 => {
                return Err(bad("HTTP/1.0 request with Transfer-Encoding"));
            }
            (Some(true), None) => BodyIn::Chunked(Chunk::Size),
            (Some(false), None) => {
                return Err(Refusal(
                    StatusCode::NOT_IMPLEMENTED,
                    "transfer coding other than chunked",
                ));
            }
            (None, Some(0)) | (None, None) => BodyIn::Done,
            (None, Some(n)) => BodyIn::Length(n),
        })
    }
}

/// A request head as a client sent it, parsed and checked as the server does: the method, the
/// body framing ("length N", "chunked", "none"), or the status it is refused with. For the
/// fuzzer (`fuzz/fuzz_targets/h1_request.rs`) and tests.
#[doc(hidden)]
pub fn check_head(wire: &[u8]) -> Result<Option<(String, String)>, u16> {
    match parse_request(
        &mut BytesMut::from(wire),
        &mut HeadScan::default(),
        64 * 1024,
    ) {
        Ok(None) => Ok(None),
        Ok(Some(p)) => Ok(Some((
            p.parts.method.to_string(),
            match p.body {
                BodyIn::Length(n) => format!("length {n}"),
                BodyIn::Chunked(_) => "chunked".into(),
                _ => "none".into(),
            },
        ))),
        Err(Refusal(s, _)) => Err(s.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wire: &str) -> Result<Option<(String, String)>, u16> {
        check_head(wire.as_bytes())
    }

    #[test]
    fn request_framing() {
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Some(("GET".into(), "none".into())))
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(("POST".into(), "length 5".into())))
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Some(("POST".into(), "length 5".into())))
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Some(("POST".into(), "chunked".into())))
        );
        assert_eq!(
            check("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            Ok(Some(("PUT".into(), "none".into())))
        );
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let mut buf =
            BytesMut::from("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello");
        let p = parse_request(&mut buf, &mut HeadScan::default(), 1024)
            .ok()
            .flatten()
            .expect("parsed");
        let lengths: Vec<_> = p
            .parts
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .collect();
        assert_eq!(lengths, ["5"], "a list of lengths goes on as one");
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        for (wire, status) in [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n",
                417,
            ),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            ("GET /\r\n\r\n", 400),
        ] {
            assert_eq!(check(wire), Err(status), "{wire:?}");
        }
    }
}
