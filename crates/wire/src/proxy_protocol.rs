//! The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's proxy-protocol.txt
//! specifies: parse a header at the start of a connection, and encode one for a connection we
//! open. Written here rather than taken from the `ppp` crate so that the parser is sans-I/O with
//! an explicit "need more" and a hard size bound, which the listener's bounded read relies on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2 signature (12 bytes).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// Largest v2 header we accept (16-byte prefix + addresses + TLVs).
pub const V2_MAX: usize = 16 + 4096;

/// TLV types of v2 (spec §2.2.7).
pub mod tlv {
    /// Application-Layer Protocol Negotiation.
    pub const ALPN: u8 = 0x01;
    /// Host name (SNI) the client asked for.
    pub const AUTHORITY: u8 = 0x02;
    /// TLS information; sub-TLV `SSL_VERSION` carries the version string.
    pub const SSL: u8 = 0x20;
    /// Sub-TLV of `SSL`: version string, e.g. "TLSv1.3".
    pub const SSL_VERSION: u8 = 0x21;
}

/// Which versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Text only.
    V1,
    /// Binary only.
    V2,
    /// Either.
    Any,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header occupied; what follows is the client's stream.
    pub len: usize,
    /// The original source and destination; None for LOCAL (v2) or UNKNOWN (v1): the connection
    /// is the proxy's own (a health check), so its own addresses apply.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// v2 TLVs as (type, value).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a PROXY header of an accepted version.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A v1 header that breaks the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    BadV1(&'static str),
    /// A v2 header that breaks the format.
    #[error("malformed PROXY v2 header: {0}")]
    BadV2(&'static str),
    /// Longer than the bound.
    #[error("PROXY header longer than allowed")]
    TooLong,
}

/// Parses a header at the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse(buf: &[u8], accept: Accept) -> Result<Option<Header>, Error> {
    let v1_ok = accept != Accept::V2;
    let v2_ok = accept != Accept::V1;
    if v2_ok && could_be(buf, &V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    if v1_ok && could_be(buf, b"PROXY ") {
        if buf.len() < 6 {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    Err(Error::NotProxy)
}

/// Whether `buf` is a prefix of `sig` or starts with it.
fn could_be(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, Error> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error::TooLong)
        } else {
            Ok(None)
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(Error::TooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Error::BadV1("not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some("PROXY"), Some(proto)) = (parts.next(), parts.next()) else {
        return Err(Error::BadV1("no protocol"));
    };
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored (spec §2.1).
        return Ok(Some(Header {
            len,
            addrs: None,
            tlvs: Vec::new(),
        }));
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(Error::BadV1("expected 4 fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| Error::BadV1("bad IPv4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| Error::BadV1("bad IPv4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| Error::BadV1("bad IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| Error::BadV1("bad IPv6 destination"))?
                .into(),
        ),
        _ => return Err(Error::BadV1("unknown protocol")),
    };
    let port = |p: &str| -> Result<u16, Error> {
        // No leading zeros, no sign (spec: "[1-9][0-9]*" or "0").
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::BadV1("bad port"));
        }
        p.parse().map_err(|_| Error::BadV1("bad port"))
    };
    Ok(Some(Header {
        len,
        addrs: Some((
            SocketAddr::new(src, port(sport)?),
            SocketAddr::new(dst, port(dport)?),
        )),
        tlvs: Vec::new(),
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, Error> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error::BadV2("version is not 2"));
    }
    let command = ver_cmd & 0x0f;
    let fam = buf[13];
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(Error::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let local = match command {
        0x0 => true,
        0x1 => false,
        _ => return Err(Error::BadV2("unknown command")),
    };
    let (addrs, rest) = match fam {
        // TCP or UDP over IPv4
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(Error::BadV2("short IPv4 address block"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let sp = u16::from_be_bytes([body[8], body[9]]);
            let dp = u16::from_be_bytes([body[10], body[11]]);
            (
                Some((
                    SocketAddr::new(src.into(), sp),
                    SocketAddr::new(dst.into(), dp),
                )),
                &body[12..],
            )
        }
        // TCP or UDP over IPv6
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(Error::BadV2("short IPv6 address block"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&body[0..16]);
            d.copy_from_slice(&body[16..32]);
            let sp = u16::from_be_bytes([body[32], body[33]]);
            let dp = u16::from_be_bytes([body[34], body[35]]);
            (
                Some((
                    SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                    SocketAddr::new(Ipv6Addr::from(d).into(), dp),
                )),
                &body[36..],
            )
        }
        // UNSPEC (and unix sockets, which carry nothing we can use): addresses unknown.
        0x00 | 0x31 | 0x32 => (None, if fam == 0 { body } else { &[][..] }),
        _ => return Err(Error::BadV2("unknown address family")),
    };
    if !local && addrs.is_none() && fam == 0 {
        return Err(Error::BadV2("PROXY command without addresses"));
    }
    let mut tlvs = Vec::new();
    let mut t = rest;
    while !t.is_empty() {
        if t.len() < 3 {
            return Err(Error::BadV2("truncated TLV"));
        }
        let l = usize::from(u16::from_be_bytes([t[1], t[2]]));
        if t.len() < 3 + l {
            return Err(Error::BadV2("TLV longer than the header"));
        }
        tlvs.push((t[0], t[3..3 + l].to_vec()));
        t = &t[3 + l..];
    }
    Ok(Some(Header {
        len,
        addrs: if local { None } else { addrs },
        tlvs,
    }))
}

/// A header for a connection of the proxy's own (a health check): v1 "UNKNOWN", v2 LOCAL.
pub fn encode_local(v2: bool) -> Vec<u8> {
    if v2 {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        out
    } else {
        b"PROXY UNKNOWN\r\n".to_vec()
    }
}

/// A v1 header for a TCP connection from `src` to `dst`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        )
        .into_bytes(),
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                v6(src),
                v6(dst),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
    }
}

/// A v2 PROXY header for a TCP connection from `src` to `dst`, with TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    let mut body = Vec::with_capacity(48);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
        }
        _ => {
            out.push(0x21);
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            body.extend_from_slice(&v6(src));
            body.extend_from_slice(&v6(dst));
        }
    }
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (t, v) in tlvs {
        let l = u16::try_from(v.len()).unwrap_or(u16::MAX);
        body.push(*t);
        body.extend_from_slice(&l.to_be_bytes());
        body.extend_from_slice(&v[..usize::from(l)]);
    }
    let l = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&l.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(l)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn v1_examples_from_the_spec() {
        let h = parse(
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /",
            Accept::Any,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.len, 47);
        assert_eq!(
            h.addrs,
            Some((sa("192.168.0.1:56324"), sa("192.168.0.11:443")))
        );
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", Accept::V1)
            .unwrap()
            .unwrap();
        assert_eq!(
            h.addrs,
            Some((sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2")))
        );
        let h = parse(b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n", Accept::V1)
            .unwrap()
            .unwrap();
        assert_eq!(h.addrs, None);
    }

    #[test]
    fn v1_needs_more_and_refuses_bad_input() {
        assert_eq!(parse(b"PRO", Accept::Any), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4", Accept::Any), Ok(None));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Accept::Any),
            Err(Error::NotProxy)
        );
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", Accept::V1).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", Accept::V1).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n", Accept::V1).is_err());
        assert_eq!(parse(&[b'P'; 200][..], Accept::V1), Err(Error::NotProxy));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 120));
        assert_eq!(parse(&long, Accept::V1), Err(Error::TooLong));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Accept::V2),
            Err(Error::NotProxy)
        );
    }

    #[test]
    fn v2_round_trips_with_tlvs_and_local_is_addressless() {
        let enc = encode_v2(
            sa("10.1.2.3:4567"),
            sa("10.0.0.1:443"),
            &[(tlv::AUTHORITY, b"a.example"), (tlv::ALPN, b"h2")],
        );
        let mut stream = enc.clone();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let h = parse(&stream, Accept::V2).unwrap().unwrap();
        assert_eq!(h.len, enc.len());
        assert_eq!(h.addrs, Some((sa("10.1.2.3:4567"), sa("10.0.0.1:443"))));
        assert_eq!(
            h.tlvs,
            vec![
                (tlv::AUTHORITY, b"a.example".to_vec()),
                (tlv::ALPN, b"h2".to_vec())
            ]
        );
        for cut in 0..enc.len() {
            assert_eq!(parse(&enc[..cut], Accept::Any), Ok(None), "cut at {cut}");
        }
        let h = parse(
            &encode_v2(sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2"), &[]),
            Accept::Any,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            h.addrs,
            Some((sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2")))
        );
        // LOCAL (a health check of the load balancer): accepted, no addresses.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let h = parse(&local, Accept::V2).unwrap().unwrap();
        assert_eq!((h.len, h.addrs), (16, None));
    }

    #[test]
    fn v2_refuses_bad_input() {
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        bad.extend_from_slice(&[0; 12]);
        assert_eq!(
            parse(&bad, Accept::V2),
            Err(Error::BadV2("version is not 2"))
        );
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(parse(&short, Accept::V2).is_err());
        let mut tlv = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"), &[]);
        tlv[15] += 3;
        tlv.extend_from_slice(&[0x01, 0x00, 0x09]);
        assert_eq!(
            parse(&tlv, Accept::V2),
            Err(Error::BadV2("TLV longer than the header"))
        );
    }

    #[test]
    fn local_headers_parse_as_addressless() {
        for v2 in [false, true] {
            let h = parse(&encode_local(v2), Accept::Any).unwrap().unwrap();
            assert_eq!(h.addrs, None);
        }
    }

    #[test]
    fn v1_encoding_maps_mixed_families_to_tcp6() {
        assert_eq!(
            encode_v1(sa("1.2.3.4:5"), sa("6.7.8.9:10")),
            b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n"
        );
        let mixed = encode_v1(sa("1.2.3.4:5"), sa("[::1]:10"));
        assert_eq!(mixed, b"PROXY TCP6 ::ffff:1.2.3.4 ::1 5 10\r\n");
        assert!(parse(&mixed, Accept::V1).unwrap().is_some());
    }
}
