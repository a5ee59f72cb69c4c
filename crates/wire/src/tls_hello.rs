//! Peek the server name (SNI) and ALPN offer from a TLS ClientHello, for routing TLS by name
//! without terminating it (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1). Reads only the first
//! record; a ClientHello split over several records is reported as such, not guessed at.

/// Largest first record we wait for (5-byte header + 2^14 payload).
pub const MAX: usize = 5 + 16_384;

/// What a ClientHello offered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// server_name, lowercase.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<Vec<u8>>,
}

/// Why a ClientHello cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a TLS handshake record.
    #[error("not a TLS handshake")]
    NotTls,
    /// A ClientHello that breaks the format.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, Error> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, Error> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Parses the ClientHello at the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse(buf: &[u8]) -> Result<Option<Hello>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != 22 {
        return Err(Error::NotTls);
    }
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[1] != 3 {
        return Err(Error::NotTls);
    }
    let rec_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if rec_len > 16_384 {
        return Err(Error::Malformed("record too long"));
    }
    if buf.len() < 5 + rec_len {
        return Ok(None);
    }
    let mut r = Reader(&buf[5..5 + rec_len]);
    if r.u8()? != 1 {
        return Err(Error::Malformed(
            "first handshake message is not a ClientHello",
        ));
    }
    let hs = r.take(3)?;
    let hs_len = (usize::from(hs[0]) << 16) | (usize::from(hs[1]) << 8) | usize::from(hs[2]);
    if hs_len > r.0.len() {
        return Err(Error::Malformed("ClientHello spans several records"));
    }
    let mut h = Reader(r.take(hs_len)?);
    h.take(2)?; // legacy_version
    h.take(32)?; // random
    h.vec8()?; // legacy_session_id
    h.vec16()?; // cipher_suites
    h.vec8()?; // legacy_compression_methods
    let mut hello = Hello::default();
    if h.0.is_empty() {
        return Ok(Some(hello));
    }
    let mut exts = Reader(h.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut body = Reader(exts.vec16()?);
        match kind {
            0 => {
                let mut list = Reader(body.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        let s = std::str::from_utf8(name)
                            .map_err(|_| Error::Malformed("server_name is not ASCII"))?;
                        hello.sni = Some(s.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader(body.vec16()?);
                while !list.0.is_empty() {
                    hello.alpn.push(list.vec8()?.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(Some(hello))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given SNI and ALPN.
    fn hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let mut ext = Vec::new();
        let mut names = vec![0u8];
        names.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        names.extend_from_slice(sni.as_bytes());
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&((names.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(names.len() as u16).to_be_bytes());
        ext.extend_from_slice(&names);
        let mut protos = Vec::new();
        for a in alpn {
            protos.push(a.len() as u8);
            protos.extend_from_slice(a);
        }
        ext.extend_from_slice(&16u16.to_be_bytes());
        ext.extend_from_slice(&((protos.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(protos.len() as u16).to_be_bytes());
        ext.extend_from_slice(&protos);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn sni_and_alpn_are_read_and_partial_input_asks_for_more() {
        let h = hello("HPB.example.org", &[b"h2", b"http/1.1"]);
        let got = parse(&h).unwrap().unwrap();
        assert_eq!(got.sni.as_deref(), Some("hpb.example.org"));
        assert_eq!(got.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn not_tls_and_malformed() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotTls));
        let mut h = hello("a", &[]);
        h[7] = 0xff; // handshake length beyond the record
        assert!(parse(&h).is_err());
        let mut h = hello("a", &[]);
        let n = h.len();
        h[n - 4] = 0xff; // an ALPN list length beyond its extension
        assert!(parse(&h).is_err());
    }
}
