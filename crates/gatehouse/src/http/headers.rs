//! Header rewriting in both directions: hop-by-hop removal (RFC 9110 §7.6.1), forwarding headers
//! (X-Forwarded-*, RFC 7239 Forwarded, Via), request ids, header operations of a route, and the
//! mapping of Location back to the public host and prefix.

use std::net::IpAddr;

use gatehouse_config::model::{ForwardHeaders, HeaderOps};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request id header, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that frame the message or name it: a `Connection` header may never remove these.
const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether `name` is hop-by-hop by its own name (RFC 9110 §7.6.1): Connection, Keep-Alive,
/// TE, Transfer-Encoding, Upgrade and every Proxy-* header (Proxy-Connection among them).
fn hop_by_hop_name(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers: every header named by `Connection` (except framing headers and
/// Host), then Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade and
/// every Proxy-* header. Returns whether the TE header asked for trailers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names: most messages carry none of these, and then nothing is hashed
    // or removed.
    let mut found: Vec<HeaderName> = Vec::new();
    let mut te_trailers = false;
    for (name, value) in headers.iter() {
        if !hop_by_hop_name(name) {
            continue;
        }
        if name == header::TE {
            te_trailers |= value.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        }
        if name == header::CONNECTION
            && let Ok(s) = value.to_str()
        {
            for tok in s.split(',') {
                let tok = tok.trim().to_ascii_lowercase();
                if tok.is_empty() || PROTECTED.contains(&tok.as_str()) {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(tok.as_bytes()) {
                    found.push(n);
                }
            }
        }
        if !found.contains(name) {
            found.push(name.clone());
        }
    }
    for n in found {
        headers.remove(n);
    }
    te_trailers
}

/// The `Upgrade` value of a request that asks for a protocol switch (not h2c: never forwarded).
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
            .unwrap_or(false)
    });
    let up = headers.get(header::UPGRADE)?;
    let is_h2c = up
        .to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(true);
    (conn_upgrade && !is_h2c).then(|| up.clone())
}

/// Who the request came from, as the forwarding headers need it.
pub struct ClientInfo<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept and appended to).
    pub trusted: bool,
    /// "http" or "https".
    pub proto: &'static str,
    /// The Host the client asked for (with port, as sent).
    pub host: &'a str,
    /// "1.1", "2", "1.0".
    pub version: &'static str,
}

/// Our element of a Via list, for a message received in HTTP `version`.
fn via_hop(version: &str) -> &'static str {
    match version {
        "2" => "2 gatehouse",
        "1.0" => "1.0 gatehouse",
        _ => "1.1 gatehouse",
    }
}

/// Sets `name` to `value`, or (`keep`) appends `value` to the values already there, joined
/// into one line.
fn append_or_set(headers: &mut HeaderMap, name: HeaderName, keep: bool, value: &[u8]) {
    let mut old = headers.get_all(&name).iter().peekable();
    if !keep || old.peek().is_none() {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
        return;
    }
    let mut joined: Vec<u8> = Vec::with_capacity(64 + value.len());
    for v in old {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// Request fields the proxy sets or strips: which of them a request has, found in one pass
/// over its names (hashing each name to look it up costs more).
#[derive(Clone, Copy, Default, Debug)]
pub struct Present {
    xff: bool,
    xfp: bool,
    xfh: bool,
    forwarded: bool,
    via: bool,
    /// X-Request-Id.
    pub request_id: bool,
    /// X-Client-Cert-Subject or X-Client-Cert-Sha256.
    pub client_cert: bool,
}

/// The client certificate's fields to the origin; never taken from the client.
pub const CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
/// See [`CLIENT_CERT_SUBJECT`].
pub const CLIENT_CERT_SHA256: HeaderName = HeaderName::from_static("x-client-cert-sha256");

impl Present {
    /// Which of the fields `headers` has.
    pub fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            // By length first: most names compare no further.
            match name.as_str().len() {
                3 => p.via |= name == header::VIA,
                9 => p.forwarded |= name == header::FORWARDED,
                12 => p.request_id |= name == X_REQUEST_ID,
                15 => p.xff |= name == X_FORWARDED_FOR,
                16 => p.xfh |= name == X_FORWARDED_HOST,
                17 => p.xfp |= name == X_FORWARDED_PROTO,
                20 => p.client_cert |= name == CLIENT_CERT_SHA256,
                21 => p.client_cert |= name == CLIENT_CERT_SUBJECT,
                _ => {}
            }
        }
        p
    }
}

/// Where the proxy's new request fields go: into the header map, or (to an HTTP/1 origin) as
/// header lines written after the map's fields, which costs no name hashing nor value
/// allocation.
pub struct NewFields<'a> {
    /// The request's header map.
    pub map: &'a mut HeaderMap,
    /// Header lines (`name: value\r\n`) to write after the map's, if the origin takes them.
    pub lines: Option<&'a mut Vec<u8>>,
}

impl NewFields<'_> {
    /// Sets `name` to `value`, replacing the map's fields of that name (`present`: it has
    /// some). `value` must be a valid field value (the proxy's own, or one taken from a parsed
    /// header); [`NewFields::set_foreign`] checks one that may not be.
    pub fn set(&mut self, name: HeaderName, value: &[u8], present: bool) {
        debug_assert!(valid_value(value), "{name}: {value:?}");
        match &mut self.lines {
            Some(lines) => {
                if present {
                    self.map.remove(&name);
                }
                let name = name.as_str().as_bytes();
                lines.reserve(name.len() + value.len() + 4);
                gatehouse_h1::encode::put_line(&mut |b| lines.extend_from_slice(b), name, value);
            }
            None => {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    self.map.insert(name, v);
                }
            }
        }
    }

    /// [`NewFields::set`] of a value from elsewhere (a certificate): set only if it is visible
    /// ASCII, spaces and tabs (what `HeaderValue::from_str` takes; raw UTF-8 is left out).
    pub fn set_foreign(&mut self, name: HeaderName, value: &[u8], present: bool) {
        if value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            self.set(name, value, present);
        }
    }
}

pub use gatehouse_h1::valid_value;

/// Sets X-Forwarded-For/-Proto/-Host, Forwarded and Via, those of them `on` holds. From an
/// untrusted peer the incoming values are replaced: a client cannot forge its address to the
/// origin. From a trusted one they are kept, and ours appended to the lists. A field left out
/// of `on` is not set, and its client copy is removed all the same unless the peer is trusted
/// (Via, which says nothing of the client, passes).
pub fn set_forwarding(
    f: &mut NewFields<'_>,
    present: &Present,
    c: &ClientInfo<'_>,
    on: ForwardHeaders,
) {
    if on != ForwardHeaders::ALL {
        for (name, set, there) in [
            (X_FORWARDED_FOR, on.x_forwarded_for, present.xff),
            (X_FORWARDED_PROTO, on.x_forwarded_proto, present.xfp),
            (X_FORWARDED_HOST, on.x_forwarded_host, present.xfh),
            (header::FORWARDED, on.forwarded, present.forwarded),
        ] {
            if !set && there && !c.trusted {
                f.map.remove(name);
            }
        }
    }
    let ip = gatehouse_config::units::canonical_ip(c.ip);
    // The values are written into one buffer on the stack: no allocation but the headers'.
    let mut buf = [0u8; 512];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let _ = write_ip(&mut w, ip);
    let ip_len = w.position() as usize;
    if on.x_forwarded_for {
        if c.trusted && present.xff {
            append_or_set(f.map, X_FORWARDED_FOR, true, &buf[..ip_len]);
        } else {
            f.set(X_FORWARDED_FOR, &buf[..ip_len], present.xff);
        }
    }
    if on.x_forwarded_proto && !(c.trusted && present.xfp) {
        f.set(X_FORWARDED_PROTO, c.proto.as_bytes(), present.xfp);
    }
    if on.x_forwarded_host && !(c.trusted && present.xfh) {
        f.set(X_FORWARDED_HOST, c.host.as_bytes(), present.xfh);
    }
    if on.forwarded {
        forwarded(f, present, c, ip, &mut buf);
    }
    if on.via {
        if present.via {
            append_via(f.map, c.version);
        } else {
            f.set(header::VIA, via_hop(c.version).as_bytes(), false);
        }
    }
}

/// The Forwarded element of this hop (RFC 7239), in `buf`.
fn forwarded(
    f: &mut NewFields<'_>,
    present: &Present,
    c: &ClientInfo<'_>,
    ip: IpAddr,
    buf: &mut [u8; 512],
) {
    use std::io::Write;
    let host_ok = c
        .host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let mut w = std::io::Cursor::new(&mut buf[..]);
    // RFC 7239 §6: IPv6 addresses are bracketed and the node quoted.
    let node = if ip.is_ipv6() {
        write!(w, "for=\"[{ip}]\"")
    } else {
        w.write_all(b"for=").and_then(|_| write_ip(&mut w, ip))
    };
    if host_ok && !c.host.is_empty() {
        let mark = w.position();
        if w.write_all(b";host=")
            .and_then(|_| w.write_all(c.host.as_bytes()))
            .is_err()
        {
            // A Host too long for the buffer: the element goes without it.
            w.set_position(mark);
        }
    }
    // `write_all`, not `write!`: the formatter costs more than the rest of the element.
    if node
        .and_then(|_| w.write_all(b";proto="))
        .and_then(|_| w.write_all(c.proto.as_bytes()))
        .is_ok()
    {
        let n = w.position() as usize;
        if c.trusted && present.forwarded {
            append_or_set(f.map, header::FORWARDED, true, &buf[..n]);
        } else {
            f.set(header::FORWARDED, &buf[..n], present.forwarded);
        }
    }
}

/// Writes an address as `Display` does; IPv4 by hand (the formatter's padding support makes
/// `Ipv4Addr`'s `Display` cost more than the rest of the forwarding headers).
fn write_ip(w: &mut impl std::io::Write, ip: IpAddr) -> std::io::Result<()> {
    match ip {
        IpAddr::V4(a) => {
            // Into a buffer first: one write, not seven.
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            w.write_all(&buf[..n])
        }
        IpAddr::V6(a) => write!(w, "{a}"),
    }
}

/// Appends this hop to Via (RFC 9110 §7.6.3).
pub fn append_via(headers: &mut HeaderMap, version: &str) {
    let hop = via_hop(version);
    if headers.contains_key(header::VIA) {
        append_or_set(headers, header::VIA, true, hop.as_bytes());
    } else {
        headers.insert(header::VIA, HeaderValue::from_static(hop));
    }
}

/// Marks X-Request-Id values never to be indexed by HPACK (RFC 7541 §7.1.3) on an HTTP/2 hop.
/// A request id is new at every request: indexed, each one took a place in the connection's
/// dynamic table, pushed out the fields that do repeat (Server, Content-Type, Via), and made
/// the encoder compare every following id with the ids still there (h2 chains equal names):
/// 9.4K of the 53K instructions of an HTTP/2 request.
pub fn never_index_request_ids(headers: &mut HeaderMap) {
    if let header::Entry::Occupied(mut e) = headers.entry(X_REQUEST_ID) {
        for v in e.iter_mut() {
            v.set_sensitive(true);
        }
    }
}

/// The request id: the client's when it is sane, else a new random one (32 hex digits).
pub fn request_id(headers: &HeaderMap) -> std::sync::Arc<str> {
    if let Some(v) = headers.get(X_REQUEST_ID)
        && let Ok(s) = v.to_str()
        && !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_graphic())
    {
        return s.into();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, b) in fastrand::u128(..).to_be_bytes().into_iter().enumerate() {
        id[2 * i] = HEX[usize::from(b >> 4)];
        id[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    std::str::from_utf8(&id).unwrap_or_default().into()
}

/// Applies a route's header operations: remove, then set, then add.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// Rewrites the path: `strip_prefix` removed, then `add_prefix` put in front.
pub fn rewrite_path(path: &str, strip: Option<&str>, add: Option<&str>) -> String {
    let mut p = path;
    if let Some(s) = strip
        && let Some(rest) = p.strip_prefix(s.trim_end_matches('/'))
        && (rest.is_empty() || rest.starts_with('/') || s.ends_with('/'))
    {
        p = rest;
    }
    let mut out = String::with_capacity(p.len() + add.map_or(0, str::len) + 1);
    if let Some(a) = add {
        out.push_str(a.trim_end_matches('/'));
    }
    if !p.starts_with('/') {
        out.push('/');
    }
    out.push_str(p);
    out
}

/// What Location rewriting needs to know.
pub struct LocationMap<'a> {
    /// Authorities the origin may call itself: its address, `set_host`.
    pub internal: &'a [&'a str],
    /// The client's Host.
    pub public_host: &'a str,
    /// "http" / "https" towards the client.
    pub public_scheme: &'a str,
    /// Route's strip_prefix (public side).
    pub public_prefix: &'a str,
    /// Route's add_prefix (origin side).
    pub internal_prefix: &'a str,
}

/// Maps a Location / Content-Location value that names the origin or its prefix back to the
/// public host and prefix (nginx's `proxy_redirect default`). Returns None when nothing changes.
pub fn map_location(value: &str, m: &LocationMap<'_>) -> Option<String> {
    let (absolute, path) = if let Some(rest) = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
    {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if !m.internal.iter().any(|i| i.eq_ignore_ascii_case(authority)) {
            return None;
        }
        (true, &rest[end..])
    } else if value.starts_with('/') && !value.starts_with("//") {
        (false, value)
    } else {
        return None;
    };
    let mapped_path = if m.internal_prefix.is_empty() && m.public_prefix.is_empty() {
        path.to_string()
    } else {
        let ip = m.internal_prefix.trim_end_matches('/');
        match path.strip_prefix(ip) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?', '#']) => {
                format!("{}{}", m.public_prefix.trim_end_matches('/'), rest)
            }
            _ => path.to_string(),
        }
    };
    let mapped_path = if mapped_path.is_empty() {
        "/".to_string()
    } else {
        mapped_path
    };
    if absolute {
        Some(format!(
            "{}://{}{}",
            m.public_scheme, m.public_host, mapped_path
        ))
    } else if mapped_path != path {
        Some(mapped_path)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_marked_never_indexed_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        h.insert(header::SERVER, HeaderValue::from_static("nginx"));
        never_index_request_ids(&mut h);
        assert!(h.get_all(X_REQUEST_ID).iter().all(|v| v.is_sensitive()));
        assert!(!h[header::SERVER].is_sensitive());
        never_index_request_ids(&mut HeaderMap::new());
    }

    #[test]
    fn forwarded_elements_name_node_host_and_proto() {
        let element = |ip: &str, host: &str| {
            let mut h = HeaderMap::new();
            set_forwarding(
                &mut NewFields {
                    map: &mut h,
                    lines: None,
                },
                &Present::default(),
                &ClientInfo {
                    ip: ip.parse().unwrap(),
                    trusted: false,
                    proto: "https",
                    host,
                    version: "1.1",
                },
                ForwardHeaders::ALL,
            );
            h[header::FORWARDED].to_str().unwrap().to_string()
        };
        assert_eq!(
            element("192.0.2.7", "example.com:8443"),
            "for=192.0.2.7;host=example.com:8443;proto=https"
        );
        assert_eq!(
            element("2001:db8::1", "a.example"),
            "for=\"[2001:db8::1]\";host=a.example;proto=https"
        );
        // A Host too long for the element's buffer: the element goes without it.
        let long = "a".repeat(600);
        assert_eq!(element("192.0.2.7", &long), "for=192.0.2.7;proto=https");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for _ in 0..1000 {
            ips.push(IpAddr::from(fastrand::u32(..).to_be_bytes()));
        }
        for ip in ips {
            let mut out = Vec::new();
            write_ip(&mut out, ip).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn connection_cannot_strip_framing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, content-length, x-secret, host"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        assert!(remove_hop_by_hop(&mut h));
        assert!(h.contains_key(header::CONTENT_LENGTH));
        assert!(h.contains_key(header::HOST));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("proxy-authorization"));
        assert!(!h.contains_key(header::CONNECTION));
    }

    #[test]
    fn paths() {
        assert_eq!(
            rewrite_path("/api/users", Some("/api"), Some("/v1")),
            "/v1/users"
        );
        assert_eq!(rewrite_path("/api", Some("/api"), None), "/");
        assert_eq!(rewrite_path("/apix", Some("/api"), None), "/apix");
        assert_eq!(rewrite_path("/api/", Some("/api/"), None), "/");
        assert_eq!(rewrite_path("/x?q=1", None, Some("/v1/")), "/v1/x?q=1");
    }

    #[test]
    fn locations() {
        let m = LocationMap {
            internal: &["app.internal", "127.0.0.1:9001"],
            public_host: "www.example.com",
            public_scheme: "http",
            public_prefix: "/api",
            internal_prefix: "/v1",
        };
        assert_eq!(
            map_location("http://app.internal/v1/login?x=1", &m).as_deref(),
            Some("http://www.example.com/api/login?x=1")
        );
        assert_eq!(map_location("/v1/a", &m).as_deref(), Some("/api/a"));
        assert_eq!(map_location("https://elsewhere.org/v1/a", &m), None);
        assert_eq!(
            map_location("http://127.0.0.1:9001/", &m).as_deref(),
            Some("http://www.example.com/")
        );
    }

    #[test]
    fn h2c_upgrade_is_never_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(upgrade_request(&h).is_none());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_request(&h).is_some());
    }
}
