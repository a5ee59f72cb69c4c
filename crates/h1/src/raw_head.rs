//! An HTTP/1 origin's answer header fields kept as the bytes it sent, for the answers that pass
//! through unchanged but for a few known edits.
//!
//! Building an `http::HeaderMap` costs a name parse, a hash and an insert per field, and most of
//! a small answer's proxying cost was there (bench/RESULTS.md). Like nginx's list of header
//! slices, a `RawHead` keeps the head's bytes and where each field is; each field's name is
//! classified once while parsing ([`Kind`]), so that the edits a plain route makes (drop
//! hop-by-hop fields, replace `X-Request-Id` or `Strict-Transport-Security`) are flag flips, and
//! what the proxy adds (Via, the request id) is kept as header lines ([`RawHead::add`]),
//! written after these fields and before the answer's header map (empty unless a later step
//! wrote to it: a sticky cookie). A route that reads or rewrites answer headers (cache,
//! compression, header operations, Location mapping) turns it into a map first
//! ([`RawHead::into_map`]).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// What the proxy must know of a field, from its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Passed on as it is.
    Other,
    /// Content-Length.
    ContentLength,
    /// Transfer-Encoding.
    TransferEncoding,
    /// Connection.
    Connection,
    /// Hop-by-hop by its name alone (RFC 9110 §7.6.1): Keep-Alive, TE, Upgrade, Proxy-*.
    HopByHop,
    /// Date.
    Date,
    /// Via.
    Via,
    /// Location or Content-Location (mapped back to the public host by the pipeline).
    Location,
    /// X-Request-Id (the proxy's replaces it).
    RequestId,
    /// Strict-Transport-Security (a listener's replaces it).
    Hsts,
}

impl Kind {
    /// The kind of a field named `name` (any case).
    #[inline]
    pub fn of(name: &[u8]) -> Kind {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if is("te") => Kind::HopByHop,
            3 if is("via") => Kind::Via,
            4 if is("date") => Kind::Date,
            7 if is("upgrade") => Kind::HopByHop,
            8 if is("location") => Kind::Location,
            10 if is("connection") => Kind::Connection,
            10 if is("keep-alive") => Kind::HopByHop,
            12 if is("x-request-id") => Kind::RequestId,
            14 if is("content-length") => Kind::ContentLength,
            16 if is("content-location") => Kind::Location,
            17 if is("transfer-encoding") => Kind::TransferEncoding,
            25 if is("strict-transport-security") => Kind::Hsts,
            n if n >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-") => Kind::HopByHop,
            _ => Kind::Other,
        }
    }
}

/// One field: where its name and value are in the head, and whether it is still passed on.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
    kind: Kind,
    live: bool,
}

/// An answer's header fields as the origin sent them (see the module's documentation).
#[derive(Debug, Default)]
pub struct RawHead {
    /// The whole head, status line included; fields point into it.
    head: Bytes,
    fields: Vec<Field>,
    /// Fields the proxy added, as header lines (`name: value\r\n`).
    added: Vec<u8>,
}

impl RawHead {
    /// A head of `head`'s bytes with room for `n` fields.
    pub(crate) fn new(head: Bytes, n: usize) -> Self {
        RawHead {
            head,
            fields: Vec::with_capacity(n),
            added: Vec::new(),
        }
    }

    /// Adds a field whose name and value are at these offsets of the head. Both must have been
    /// checked by the HTTP/1 parser (a token; a value without CR, LF, NUL or other controls).
    pub(crate) fn push(&mut self, name: (usize, usize), value: (usize, usize), kind: Kind) {
        let span = |(at, len): (usize, usize)| {
            debug_assert!(at + len <= self.head.len());
            (at as u32, len as u32)
        };
        let field = Field {
            name: span(name),
            value: span(value),
            kind,
            live: true,
        };
        self.fields.push(field);
    }

    #[inline]
    fn bytes(&self, (at, len): (u32, u32)) -> &[u8] {
        let (at, len) = (at as usize, len as usize);
        self.head.get(at..at + len).unwrap_or_default()
    }

    /// Whether a field of this kind is passed on.
    #[inline]
    pub fn has(&self, kind: Kind) -> bool {
        self.fields.iter().any(|f| f.live && f.kind == kind)
    }

    /// Stops passing on the fields of this kind.
    #[inline]
    pub fn remove(&mut self, kind: Kind) {
        for f in self.fields.iter_mut().filter(|f| f.kind == kind) {
            f.live = false;
        }
    }

    /// Adds a field after the origin's. `name` is a lowercase token and `value` a valid field
    /// value (no control byte but HTAB): the proxy's own, or one from a parsed header.
    #[inline]
    pub fn add(&mut self, name: &'static str, value: &[u8]) {
        debug_assert!(crate::valid_value(value), "{name}: {value:?}");
        if self.added.capacity() == 0 {
            // Room for what a plain answer gets (Via, the request id): one allocation.
            self.added.reserve(128);
        }
        crate::encode::put_line(
            &mut |b| self.added.extend_from_slice(b),
            name.as_bytes(),
            value,
        );
    }

    /// At most how many bytes the fields take as header lines: the origin's head and the added
    /// lines.
    #[inline]
    pub fn wire_len(&self) -> usize {
        self.head.len() + self.added.len()
    }

    /// The fields the proxy added, as header lines.
    #[inline]
    pub fn added(&self) -> &[u8] {
        &self.added
    }

    /// Writes the fields passed on as header lines, less those whose kind `skip` names.
    /// Each line is exactly what `put_line` writes for its name and value. A run of lines that
    /// the origin itself wrote that way (`name: value` CRLF), one after another, is copied in
    /// one piece from the head. Other lines (bare LF, no space after the colon, trailing
    /// spaces) are written field by field.
    pub fn write_lines(&self, put: &mut impl FnMut(&[u8]), skip: impl Fn(Kind) -> bool) {
        let head = &self.head[..];
        // The run gathered so far: head[start..end].
        let (mut start, mut end) = (0usize, 0usize);
        for f in self.fields.iter().filter(|f| f.live && !skip(f.kind)) {
            let (name_at, name_end) = (f.name.0 as usize, (f.name.0 + f.name.1) as usize);
            let (value_at, value_end) = (f.value.0 as usize, (f.value.0 + f.value.1) as usize);
            let plain = value_at == name_end + 2
                && head.get(name_end..value_at) == Some(&b": "[..])
                && head.get(value_end..value_end + 2) == Some(&b"\r\n"[..]);
            if plain && end > start && name_at == end {
                end = value_end + 2;
                continue;
            }
            if end > start {
                put(&head[start..end]);
            }
            if plain {
                (start, end) = (name_at, value_end + 2);
            } else {
                (start, end) = (0, 0);
                crate::encode::put_line(put, self.bytes(f.name), self.bytes(f.value));
            }
        }
        if end > start {
            put(&head[start..end]);
        }
    }

    /// The fields passed on, in order: name (as sent), value, kind.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Kind)> {
        self.fields
            .iter()
            .filter(|f| f.live)
            .map(|f| (self.bytes(f.name), self.bytes(f.value), f.kind))
    }

    /// The fields passed on as a header map, followed by `after` (what the proxy added).
    pub fn into_map(self, after: HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + after.len() + 4);
        for f in self.fields.iter().filter(|f| f.live) {
            let (at, len) = (f.value.0 as usize, f.value.1 as usize);
            if at + len > self.head.len() {
                continue;
            }
            // Cannot fail for what the parser accepted (see `push`); a field that did would be
            // dropped rather than fail the answer.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(self.bytes(f.name)),
                HeaderValue::from_maybe_shared(self.head.slice(at..at + len)),
            ) {
                map.append(name, value);
            }
        }
        append_lines(&mut map, &self.added);
        let mut last: Option<HeaderName> = None;
        for (name, value) in after {
            // `IntoIter` names only the first value of each name.
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                map.append(n.clone(), value);
            }
        }
        map
    }
}

/// Appends header lines (`name: value\r\n`, as the proxy writes them) to `map`.
pub fn append_lines(map: &mut HeaderMap, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            map.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (name, kind) in [
            ("TE", Kind::HopByHop),
            ("Via", Kind::Via),
            ("date", Kind::Date),
            ("Upgrade", Kind::HopByHop),
            ("Location", Kind::Location),
            ("Connection", Kind::Connection),
            ("Keep-Alive", Kind::HopByHop),
            ("X-Request-ID", Kind::RequestId),
            ("Content-Length", Kind::ContentLength),
            ("content-location", Kind::Location),
            ("Transfer-Encoding", Kind::TransferEncoding),
            ("Strict-Transport-Security", Kind::Hsts),
            ("Proxy-Connection", Kind::HopByHop),
            ("proxy-authenticate", Kind::HopByHop),
            ("Proxy-", Kind::HopByHop),
            ("proxy", Kind::Other),
            ("Content-Type", Kind::Other),
            ("x-request-ie", Kind::Other),
        ] {
            assert_eq!(Kind::of(name.as_bytes()), kind, "{name}");
        }
    }

    #[test]
    fn edits_and_map() {
        let head =
            Bytes::from_static(b"HTTP/1.1 200 OK\r\nA: 1\r\nx-request-id: o\r\nA: 2\r\n\r\n");
        let mut raw = RawHead::new(head, 3);
        raw.push((17, 1), (20, 1), Kind::Other);
        raw.push((23, 12), (37, 1), Kind::RequestId);
        raw.push((40, 1), (43, 1), Kind::Other);
        assert!(raw.has(Kind::RequestId));
        raw.remove(Kind::RequestId);
        assert!(!raw.has(Kind::RequestId));
        raw.add("x-request-id", b"ours");
        assert_eq!(raw.added(), b"x-request-id: ours\r\n");
        let names: Vec<_> = raw
            .iter()
            .map(|(n, v, _)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(
            names,
            vec![
                (b"A".to_vec(), b"1".to_vec()),
                (b"A".to_vec(), b"2".to_vec())
            ]
        );
        let mut after = HeaderMap::new();
        after.append("via", HeaderValue::from_static("1.1 gatehouse"));
        after.append("a", HeaderValue::from_static("3"));
        after.append("a", HeaderValue::from_static("4"));
        let map = raw.into_map(after);
        let a: Vec<_> = map
            .get_all("a")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(a, ["1", "2", "3", "4"]);
        assert_eq!(map["via"], "1.1 gatehouse");
        assert_eq!(map["x-request-id"], "ours");
        assert_eq!(map.get_all("x-request-id").iter().count(), 1);
    }
}
