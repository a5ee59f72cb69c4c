//! Heads to bytes: a request's head for an origin and an answer's head for a client, each with
//! the framing its body goes with, and the field lines both write.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::Error;
use crate::raw_head::{Kind, RawHead};

/// How a request's body goes to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Exactly this many bytes still to send.
    Length(u64),
    /// Chunked (the body's length is not known).
    Chunked,
}

/// What is known of a request body when its head is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// Ended already: no bytes.
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// Not known until it ends.
    Unknown,
}

/// How the answer's body goes on the wire to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes still to write.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// One header field as a line, `name: value\r\n`, through `put` (heads and trailer sections,
/// both directions).
#[inline]
pub fn put_field(put: &mut impl FnMut(&[u8]), name: &HeaderName, value: &HeaderValue) {
    put_line(put, name.as_str().as_bytes(), value.as_bytes());
}

/// [`put_field`] of a name and value already checked (an origin's fields kept as sent).
#[inline]
pub fn put_line(put: &mut impl FnMut(&[u8]), name: &[u8], value: &[u8]) {
    put(name);
    put(b": ");
    put(value);
    put(b"\r\n");
}

/// A Content-Length value: 1*DIGIT (RFC 9110 §8.6), no sign, no list.
#[inline]
pub fn parse_length(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A request's head for the origin, and how its body goes: the map's fields, then `lines`
/// (already encoded), then the framing. A body of unknown length goes chunked; an empty one
/// of a method that carries a body gets `content-length: 0`.
pub fn encode_request(
    req: &http::request::Parts,
    lines: &[u8],
    body: BodySize,
) -> Result<(Bytes, Out), Error> {
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let h = &req.headers;
    let mut out = Out::Length(0);
    let mut add_length: Option<u64> = None;
    let mut add_chunked = false;
    if let Some(v) = h.get(header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(parse_length)
            .ok_or("invalid Content-Length in the request")?;
        out = Out::Length(n);
    } else {
        match body {
            BodySize::Empty => {
                if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
                    add_length = Some(0);
                }
            }
            BodySize::Exact(n) => {
                out = Out::Length(n);
                add_length = Some(n);
            }
            BodySize::Unknown => {
                out = Out::Chunked;
                add_chunked = true;
            }
        }
    }
    let mut digits = itoa::Buffer::new();
    let length = add_length.map(|n| digits.format(n).as_bytes());
    // The exact size: a Vec whose capacity is its length becomes `Bytes` without another
    // allocation.
    let size = req.method.as_str().len()
        + 1
        + pq.len()
        + 11
        + h.iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + lines.len()
        + length.map_or(0, |l| 18 + l.len())
        + if add_chunked { 28 } else { 0 }
        + 2;
    let mut w = Vec::with_capacity(size);
    w.extend_from_slice(req.method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(pq.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in h {
        put_field(&mut |b| w.extend_from_slice(b), name, value);
    }
    w.extend_from_slice(lines);
    if let Some(l) = length {
        w.extend_from_slice(b"content-length: ");
        w.extend_from_slice(l);
        w.extend_from_slice(b"\r\n");
    }
    if add_chunked {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    w.extend_from_slice(b"\r\n");
    debug_assert_eq!(w.len(), size);
    Ok((Bytes::from(w), out))
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

/// The Date header value for now, formatted at most once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&d.1);
        out.extend_from_slice(b"\r\n");
    });
}

/// Encodes the answer's head into `out` and says how its body goes: the fields an origin sent
/// as they came (`raw`, see `raw_head`), then the answer's header map. `exact`: the body's
/// size when known; `room`: bytes to reserve after the head (a small body that joins it);
/// `close` is set when the connection must close after this answer.
#[allow(clippy::too_many_arguments)]
pub fn encode_answer(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    raw: Option<&RawHead>,
    exact: Option<u64>,
    room: usize,
    head_request: bool,
    client_10: bool,
    close: &mut bool,
) -> BodyOut {
    let status = parts.status;
    let h = &parts.headers;
    let raw_fields = || raw.into_iter().flat_map(RawHead::iter);
    let header_length = raw_fields()
        .find(|f| f.2 == Kind::ContentLength)
        .map(|f| f.1)
        .or_else(|| h.get(header::CONTENT_LENGTH).map(HeaderValue::as_bytes))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| parse_length(s.trim()));
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let framing = answer_framing(status, exact.or(header_length), head_request, client_10);
    // A `connection: close` the pipeline set (an unread body) closes the connection, as does
    // a body delimited by the close.
    let close_asked = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    });
    *close |= framing == BodyOut::Close || (!switching && close_asked);
    // Room for the head and a body small enough to join it, in one allocation on a new
    // connection (growing from empty took eight).
    let head_len = raw.map_or(0, RawHead::wire_len) + 64 * h.len() + 160;
    out.reserve(head_len + room);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Content-Length is kept as the origin sent it where there is no body to delimit (HEAD,
    // 304); else written below from the framing.
    let keep_length = (head_request || status == StatusCode::NOT_MODIFIED)
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT;
    let skip = |kind| match kind {
        Kind::Connection => !switching,
        Kind::TransferEncoding => true,
        Kind::ContentLength => !keep_length,
        _ => false,
    };
    if !write_fields(out, raw, h, skip) {
        write_date(out);
    }
    let mut digits = itoa::Buffer::new();
    let mut length = |out: &mut Vec<u8>, n: u64| {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(digits.format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    match framing {
        BodyOut::Length(n) => length(out, n),
        BodyOut::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A local answer to HEAD: the length a GET would have had.
        BodyOut::None if head_request && header_length.is_none() => {
            if let Some(n) = exact.filter(|n| *n > 0) {
                length(out, n);
            }
        }
        _ => {}
    }
    if !switching {
        if *close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// How an answer's body is delimited to the client: none for HEAD, 1xx, 204 and 304; its
/// length when known; else chunked, or until the close for an HTTP/1.0 client.
#[inline]
fn answer_framing(
    status: StatusCode,
    length: Option<u64>,
    head_request: bool,
    client_10: bool,
) -> BodyOut {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || head_request
    {
        BodyOut::None
    } else if let Some(n) = length {
        BodyOut::Length(n)
    } else if client_10 {
        BodyOut::Close
    } else {
        BodyOut::Chunked
    }
}

/// Writes the origin's fields (as sent), what the proxy added to them, then the header map's
/// fields, less those `skip` names; whether a Date was among them.
#[inline]
fn write_fields(
    out: &mut Vec<u8>,
    raw: Option<&RawHead>,
    h: &http::HeaderMap,
    skip: impl Fn(Kind) -> bool,
) -> bool {
    let mut has_date = false;
    if let Some(r) = raw {
        has_date = r.has(Kind::Date);
        r.write_lines(&mut |b: &[u8]| out.extend_from_slice(b), &skip);
        out.extend_from_slice(r.added());
    }
    for (name, value) in h {
        let kind = if name == header::CONNECTION {
            Kind::Connection
        } else if name == header::TRANSFER_ENCODING {
            Kind::TransferEncoding
        } else if name == header::CONTENT_LENGTH {
            Kind::ContentLength
        } else if name == header::DATE {
            Kind::Date
        } else {
            Kind::Other
        };
        if skip(kind) {
            continue;
        }
        has_date |= kind == Kind::Date;
        put_line(
            &mut |b: &[u8]| out.extend_from_slice(b),
            name.as_str().as_bytes(),
            value.as_bytes(),
        );
    }
    has_date
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::chunk_line;

    #[test]
    fn request_heads_carry_their_framing() {
        let mut req = http::Request::post("/p?q=1")
            .header("host", "example.com")
            .header("x-a", "b")
            .body(())
            .unwrap();
        req.headers_mut()
            .append("x-a", HeaderValue::from_static("c"));
        let (parts, ()) = req.into_parts();
        let sized = |body: BodySize| {
            let (head, out) = encode_request(&parts, b"", body).unwrap();
            (String::from_utf8(head.to_vec()).unwrap(), out)
        };
        assert_eq!(
            sized(BodySize::Empty),
            (
                "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: b\r\nx-a: c\r\ncontent-length: 0\r\n\r\n".into(),
                Out::Length(0)
            )
        );
        let (head, out) = sized(BodySize::Unknown);
        assert!(
            head.ends_with("x-a: c\r\ntransfer-encoding: chunked\r\n\r\n"),
            "{head}"
        );
        assert_eq!(out, Out::Chunked);
        let (head, out) = sized(BodySize::Exact(7));
        assert!(head.ends_with("content-length: 7\r\n\r\n"), "{head}");
        assert_eq!(out, Out::Length(7));
    }

    #[test]
    fn answer_heads() {
        let mut parts = http::Response::new(()).into_parts().0;
        parts
            .headers
            .insert(header::DATE, HeaderValue::from_static("x"));
        let mut close = false;
        let mut out = Vec::new();
        let f = encode_answer(&mut out, &parts, None, Some(3), 3, false, false, &mut close);
        assert_eq!(f, BodyOut::Length(3));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 3\r\n\r\n"
        );
        assert!(!close);
        let mut out = Vec::new();
        let f = encode_answer(&mut out, &parts, None, None, 0, false, true, &mut close);
        assert_eq!(f, BodyOut::Close);
        assert!(close);
        let mut line = [0u8; 18];
        assert_eq!(chunk_line(&mut line, 26), b"1a\r\n");
    }
}
