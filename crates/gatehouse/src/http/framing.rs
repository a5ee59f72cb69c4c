//! A watch over the raw HTTP/1 byte stream from a client for ambiguous framing that the parser
//! would otherwise resolve silently: a head carrying both Content-Length and Transfer-Encoding
//! (RFC 9112 §6.3: "ought to be handled as an error"). hyper frames such a request by chunked
//! alone and drops the Content-Length before we see the request, so the check has to look at the
//! bytes. Header names are compared byte by byte; bodies with a Content-Length are skipped, so
//! pipelined heads are checked too; after a chunked body the watch pauses until the connection is
//! idle again (it does not decode chunks), then resumes.
//!
//! One verdict per head, in order; the pipeline takes them in the same order as it gets requests.

use std::collections::VecDeque;

/// Scanner state for one request head.
#[derive(Debug, Default)]
struct HeadScan {
    name: [u8; 18],
    name_len: usize,
    in_value: bool,
    in_cl_value: bool,
    line_len: usize,
    first_line: bool,
    saw_te: bool,
    content_length: Option<u64>,
    cl_digits: Option<u64>,
    bad_cl: bool,
}

impl HeadScan {
    fn new() -> Self {
        HeadScan {
            first_line: true,
            ..Default::default()
        }
    }

    fn end_value(&mut self) {
        if self.in_cl_value {
            match (self.cl_digits, self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => self.bad_cl = true,
            }
        }
        self.in_cl_value = false;
        self.cl_digits = None;
    }

    /// Feeds one byte; returns true at the end of the head.
    fn byte(&mut self, b: u8) -> bool {
        match b {
            b'\n' => {
                self.end_value();
                // An empty line (nothing but CR before LF) ends the head.
                let end = self.line_len == 0 && !self.first_line;
                self.first_line = false;
                self.line_len = 0;
                self.name_len = 0;
                self.in_value = false;
                end
            }
            b'\r' => false,
            _ => {
                self.line_len += 1;
                if self.first_line {
                    return false;
                }
                if self.in_cl_value {
                    if b.is_ascii_digit() {
                        let d = u64::from(b - b'0');
                        self.cl_digits = Some(
                            self.cl_digits
                                .unwrap_or(0)
                                .saturating_mul(10)
                                .saturating_add(d),
                        );
                    } else if b != b' ' && b != b'\t' {
                        self.bad_cl = true;
                    }
                    return false;
                }
                if self.in_value {
                    return false;
                }
                if b == b':' {
                    let name = &self.name[..self.name_len];
                    if name == b"content-length" {
                        self.in_cl_value = true;
                    } else if name == b"transfer-encoding" {
                        self.saw_te = true;
                    }
                    self.in_value = true;
                } else if self.name_len < self.name.len() {
                    self.name[self.name_len] = b.to_ascii_lowercase();
                    self.name_len += 1;
                } else {
                    // Longer than any name we look for.
                    self.in_value = true;
                }
                false
            }
        }
    }
}

#[derive(Debug)]
enum State {
    Head(HeadScan),
    Body(u64),
    /// Inside a body we cannot follow (chunked, or a bad length): wait for `resync`.
    Lost,
}

/// The watch over one connection's request stream.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    verdicts: VecDeque<bool>,
}

impl Default for FramingWatch {
    fn default() -> Self {
        FramingWatch {
            state: State::Head(HeadScan::new()),
            verdicts: VecDeque::new(),
        }
    }
}

impl FramingWatch {
    /// Feeds bytes as read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Body(n) => {
                    let take = (*n).min(bytes.len() as u64) as usize;
                    *n -= take as u64;
                    bytes = &bytes[take..];
                    if *n == 0 {
                        self.state = State::Head(HeadScan::new());
                    }
                }
                State::Head(h) => {
                    let mut ended = None;
                    let mut i = 0;
                    while i < bytes.len() {
                        // The request line and values other than Content-Length's tell
                        // nothing: jump to the end of the line (the line is not empty there, so
                        // its length no longer matters).
                        if h.first_line || (h.in_value && !h.in_cl_value) {
                            match memchr::memchr(b'\n', &bytes[i..]) {
                                Some(j) => i += j,
                                None => return,
                            }
                        }
                        if h.byte(bytes[i]) {
                            ended = Some(i + 1);
                            break;
                        }
                        i += 1;
                    }
                    let Some(used) = ended else { return };
                    bytes = &bytes[used..];
                    let ambiguous = h.saw_te && (h.content_length.is_some() || h.bad_cl);
                    self.verdicts.push_back(ambiguous);
                    self.state = if ambiguous || h.saw_te || h.bad_cl {
                        State::Lost
                    } else {
                        match h.content_length {
                            Some(n) if n > 0 => State::Body(n),
                            _ => State::Head(HeadScan::new()),
                        }
                    };
                }
            }
        }
    }

    /// Whether the watch is paused inside a body it cannot follow.
    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// The connection is idle between requests and the next bytes start a new head.
    pub fn resync(&mut self) {
        if self.is_lost() {
            self.verdicts.clear();
            self.state = State::Head(HeadScan::new());
        }
    }

    /// The verdict for the next request head in order (false when none was seen).
    pub fn next_verdict(&mut self) -> bool {
        self.verdicts.pop_front().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(parts: &[&[u8]]) -> FramingWatch {
        let mut w = FramingWatch::default();
        for p in parts {
            w.feed(p);
        }
        w
    }

    #[test]
    fn both_framing_headers_are_ambiguous_in_any_case_and_split() {
        let mut w = watch(&[
            b"POST / HTTP/1.1\r\nHost: x\r\nconTent-Len",
            b"gth: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert!(w.next_verdict());
        assert!(w.is_lost());
    }

    #[test]
    fn one_framing_header_is_fine() {
        let mut w = watch(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Transfer-Encoding: a\r\n\r\nhello"]);
        assert!(!w.next_verdict());
        let mut w = watch(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX: content-length: 3\r\n\r\n",
        ]);
        assert!(!w.next_verdict());
    }

    #[test]
    fn bodies_are_skipped_and_pipelined_heads_checked_in_order() {
        let mut w = watch(&[
            b"POST /1 HTTP/1.1\r\nContent-Length: 40\r\n\r\n",
            b"Transfer-Encoding: chunked\r\n\r\n0123456789",
            b"GET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert!(!w.next_verdict(), "request 1");
        assert!(!w.next_verdict(), "request 2");
        assert!(w.next_verdict(), "request 3");
        assert!(!w.next_verdict(), "no more heads");
    }

    #[test]
    fn a_chunked_body_pauses_the_watch_until_resync() {
        let mut w = watch(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nContent-Length: 1\r\n",
        ]);
        assert!(!w.next_verdict());
        assert!(w.is_lost());
        w.resync();
        w.feed(b"GET / HTTP/1.1\nContent-Length: 0\nTransfer-Encoding: chunked\n\n");
        assert!(w.next_verdict(), "bare LF lines count");
    }

    #[test]
    fn conflicting_lengths_with_te_are_ambiguous() {
        let mut w = watch(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5x\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert!(w.next_verdict());
    }

    #[test]
    fn verdicts_do_not_depend_on_how_reads_split_the_stream() {
        let streams: [&[u8]; 3] = [
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\nTransfer-Enc\r\n\r\nGET / HTTP/1.1\n\n",
            b"\r\n\r\n\n:::\r\ncontent-length:\r\ntransfer-encoding:x\r\n\r\n",
        ];
        for stream in streams {
            let mut whole = FramingWatch::default();
            whole.feed(stream);
            let mut want = Vec::new();
            for _ in 0..8 {
                want.push(whole.next_verdict());
            }
            for cut in 0..=stream.len() {
                let mut w = FramingWatch::default();
                w.feed(&stream[..cut]);
                w.feed(&stream[cut..]);
                let got: Vec<bool> = (0..8).map(|_| w.next_verdict()).collect();
                assert_eq!(got, want, "split at {cut}");
            }
        }
        // The first stream: requests 1 and 2 clean, request 3 ambiguous.
        let mut w = FramingWatch::default();
        w.feed(streams[0]);
        assert_eq!(
            [w.next_verdict(), w.next_verdict(), w.next_verdict()],
            [false, false, true]
        );
    }
}
