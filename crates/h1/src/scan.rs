//! When a head that arrives in pieces is worth parsing: the search for its end (an empty
//! line), shared by the request and answer parsers.

/// Whether `buf` holds the end of a head (an empty line): until it does, nothing is parsed.
pub fn head_complete(buf: &[u8]) -> bool {
    // The usual end, CRLF CRLF, in one vector search; then the lenient ends (bare LF) line by
    // line, which costs a search per line.
    static CRLFCRLF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    if CRLFCRLF.find(buf).is_some() {
        return true;
    }
    memchr::memchr_iter(b'\n', buf).any(|i| match buf.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => buf.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Whether a head is worth parsing yet. The first try on a new head parses at once: a head
/// usually arrives whole, and then one pass of the parser is all it costs. After a try found
/// the head incomplete, a new try waits until an empty line has arrived, and only the bytes
/// read since are searched for it. So a head that trickles in is searched once over, not
/// parsed again on every read.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes at the start of the buffer known to hold no head's end; 0: not tried yet.
    pub(crate) searched: usize,
}

impl HeadScan {
    /// Whether to try parsing the head at the start of `buf`.
    #[inline]
    pub fn ready(&self, buf: &[u8]) -> bool {
        // A buffer shorter than what was searched is not the one searched: try it.
        if self.searched == 0 || self.searched > buf.len() {
            return true;
        }
        // From three bytes back: an end that the last read split.
        head_complete(&buf[self.searched.saturating_sub(3)..])
    }

    /// A try found the head in `buf` incomplete.
    #[inline]
    pub fn incomplete(&mut self, buf: &[u8]) {
        self.searched = buf.len();
    }

    /// A head was taken from the buffer: the next one is tried at once.
    #[inline]
    pub fn reset(&mut self) {
        self.searched = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_an_empty_line() {
        for (wire, done) in [
            (&b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"[..], true),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", true),
            (b"HTTP/1.1 200 OK\nA: b\n\n", true),
            (b"HTTP/1.1 200 OK\nA: b\n\r\n", true),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n\r", false),
            (b"", false),
        ] {
            assert_eq!(
                head_complete(wire),
                done,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
