//! A stored answer, its Vary match, and its on-disk form.
//!
//! The disk form is ours (no well-kept crate stores HTTP answers on disk without pulling an
//! async runtime of its own, see CRATES.md): `GHC1`, meta length, meta, body length, body, then
//! SHA-256 of everything before it. A file whose length, magic or digest is wrong is never served.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::policy::{Directives, Timing};

/// One stored answer (one variant of a URL).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The primary key: the absolute URL.
    pub key: Arc<str>,
    /// The route that stored it: entries are only served on their own route, so a client cannot
    /// make one route's answer appear on another that shares a host name (cache poisoning).
    pub route: Arc<str>,
    /// The request's values of the headers the answer varies on, names lowercase.
    pub vary: Vec<(HeaderName, Vec<u8>)>,
    /// Status.
    pub status: StatusCode,
    /// Stored headers (hop-by-hop removed, no Age).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Freshness and age.
    pub timing: Timing,
}

/// The request's value of one Vary'd header: field lines joined, whitespace around commas
/// normalized (RFC 9111 §4.1 allows normalizing).
fn vary_value(req: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut out = Vec::new();
    for v in req.get_all(name) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let t = part.trim_ascii();
            if t.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(t);
        }
    }
    out
}

/// The secondary key of a request for an answer varying on `names`.
pub fn vary_key(req: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, Vec<u8>)> {
    names
        .iter()
        .map(|n| (n.clone(), vary_value(req, n)))
        .collect()
}

/// Does a request select a variant stored with these Vary values?
pub fn vary_matches(vary: &[(HeaderName, Vec<u8>)], req: &HeaderMap) -> bool {
    vary.iter().all(|(n, v)| vary_value(req, n) == *v)
}

impl Entry {
    /// Bytes this entry costs in memory, roughly.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + self.key.len() + 256) as u64
    }

    /// The stored answer's Cache-Control.
    pub fn directives(&self) -> Directives {
        Directives::parse(&self.headers)
    }

    /// Disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut meta = Vec::with_capacity(512);
        put_bytes(&mut meta, self.key.as_bytes());
        put_bytes(&mut meta, self.route.as_bytes());
        put_u32(&mut meta, self.vary.len() as u32);
        for (n, v) in &self.vary {
            put_bytes(&mut meta, n.as_str().as_bytes());
            put_bytes(&mut meta, v);
        }
        meta.extend_from_slice(&self.status.as_u16().to_le_bytes());
        put_u32(&mut meta, self.headers.len() as u32);
        for (n, v) in &self.headers {
            put_bytes(&mut meta, n.as_str().as_bytes());
            put_bytes(&mut meta, v.as_bytes());
        }
        let rt = self
            .timing
            .response_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        meta.extend_from_slice(&(rt.as_millis() as u64).to_le_bytes());
        meta.extend_from_slice(&(self.timing.initial_age.as_millis() as u64).to_le_bytes());
        meta.extend_from_slice(&(self.timing.freshness.as_millis() as u64).to_le_bytes());
        let mut out = Vec::with_capacity(16 + meta.len() + self.body.len() + 32);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, meta.len() as u32);
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        let digest = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(digest.as_ref());
        out
    }

    /// Reads a whole file's bytes back; None when anything is off.
    pub fn decode(buf: &[u8]) -> Option<Entry> {
        if buf.len() < 32 {
            return None;
        }
        let (data, digest) = buf.split_at(buf.len() - 32);
        if ring::digest::digest(&ring::digest::SHA256, data).as_ref() != digest {
            return None;
        }
        let head = decode_head(data)?;
        let body_end = head.body_start.checked_add(head.body_len)?;
        if body_end != data.len() {
            return None;
        }
        let body = Bytes::copy_from_slice(data.get(head.body_start..body_end)?);
        Some(Entry {
            key: head.key,
            route: head.route,
            vary: head.vary,
            status: head.status,
            headers: head.headers,
            body,
            timing: head.timing,
        })
    }
}

const MAGIC: &[u8; 4] = b"GHC1";

/// What a scan reads of a file: everything but the body.
pub struct Head {
    /// Primary key.
    pub key: Arc<str>,
    /// Route name.
    pub route: Arc<str>,
    /// Vary values.
    pub vary: Vec<(HeaderName, Vec<u8>)>,
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Timing.
    pub timing: Timing,
    /// Offset of the body.
    pub body_start: usize,
    /// Length of the body.
    pub body_len: usize,
}

impl Head {
    /// The whole file's expected length (None: lengths that cannot be right).
    pub fn file_len(&self) -> Option<u64> {
        let n = self
            .body_start
            .checked_add(self.body_len)?
            .checked_add(32)?;
        u64::try_from(n).ok()
    }
}

/// Parses the start of a file (at least up to the body length field).
pub fn decode_head(data: &[u8]) -> Option<Head> {
    let mut r = Reader { buf: data, pos: 0 };
    if r.take(4)? != MAGIC {
        return None;
    }
    let meta_len = r.u32()? as usize;
    let meta_end = r.pos.checked_add(meta_len)?;
    let key: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).ok()?);
    let route: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).ok()?);
    let nv = r.u32()? as usize;
    let mut vary = Vec::with_capacity(nv.min(64));
    for _ in 0..nv {
        let n = HeaderName::from_bytes(r.bytes()?).ok()?;
        vary.push((n, r.bytes()?.to_vec()));
    }
    let status = StatusCode::from_u16(u16::from_le_bytes(r.take(2)?.try_into().ok()?)).ok()?;
    let nh = r.u32()? as usize;
    let mut headers = HeaderMap::with_capacity(nh.min(256));
    for _ in 0..nh {
        let n = HeaderName::from_bytes(r.bytes()?).ok()?;
        let v = HeaderValue::from_bytes(r.bytes()?).ok()?;
        headers.append(n, v);
    }
    let rt = r.u64()?;
    let age = r.u64()?;
    let fresh = r.u64()?;
    if r.pos != meta_end {
        return None;
    }
    let body_len = usize::try_from(r.u64()?).ok()?;
    // Read before the digest is checked (scans read heads only): nothing here may overflow.
    let response_time = SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(rt))?;
    Some(Head {
        key,
        route,
        vary,
        status,
        headers,
        timing: Timing {
            freshness: Duration::from_millis(fresh),
            initial_age: Duration::from_millis(age),
            response_time,
        },
        body_start: r.pos,
        body_len,
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        Entry {
            key: Arc::from("http://a.example/x?y=1"),
            route: Arc::from("static"),
            vary: vec![(HeaderName::from_static("accept-encoding"), b"gzip".to_vec())],
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello world"),
            timing: Timing {
                freshness: Duration::from_secs(60),
                initial_age: Duration::from_secs(3),
                response_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            },
        }
    }

    #[test]
    fn disk_form_round_trips_and_rejects_damage() {
        let e = sample();
        let buf = e.encode();
        let d = Entry::decode(&buf).expect("decodes");
        assert_eq!(d.key, e.key);
        assert_eq!(d.route, e.route);
        assert_eq!(d.vary, e.vary);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.timing, e.timing);
        assert_eq!(
            decode_head(&buf).unwrap().file_len(),
            Some(buf.len() as u64)
        );
        // Truncated, or one bit flipped anywhere: refused.
        assert!(Entry::decode(&buf[..buf.len() - 1]).is_none());
        for i in [0, 5, 20, buf.len() / 2, buf.len() - 40, buf.len() - 1] {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert!(Entry::decode(&bad).is_none(), "flip at {i}");
        }
    }

    #[test]
    fn vary_values_normalize() {
        let mut a = HeaderMap::new();
        a.append("accept-encoding", HeaderValue::from_static("gzip ,  br"));
        let mut b = HeaderMap::new();
        b.append("accept-encoding", HeaderValue::from_static("gzip"));
        b.append("accept-encoding", HeaderValue::from_static("br"));
        let names = [HeaderName::from_static("accept-encoding")];
        assert!(vary_matches(&vary_key(&a, &names), &b));
        assert!(!vary_matches(&vary_key(&a, &names), &HeaderMap::new()));
    }
}
