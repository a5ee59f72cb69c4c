//! Finding the client's command lines in the bytes it sends: CRLF-terminated, bounded, fed
//! incrementally, several per buffer when the client pipelines (RFC 2920). The caller owns the
//! buffer; the reader says how much of it each step consumed.
//!
//! Strictness (RFC 5321 §2.3.8: lines end with CRLF, nothing else): a bare CR, a bare LF or a NUL
//! does not end a line. The line they are in runs on to the next CRLF and is reported once as
//! [`Line::Invalid`], never parsed as a command. That keeps the reader's idea of where lines end
//! the same as the client's strictest reading, and the caller answers one 500 per bad line.

use super::{AUTH_LINE_MAX, COMMAND_LINE_MAX};

/// A byte that has no place in a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFault {
    /// A CR not followed by LF.
    BareCr,
    /// An LF not preceded by CR.
    BareLf,
    /// A NUL byte.
    Nul,
}

/// What the reader found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the bound and free of faults, without its CRLF: parse it with
    /// [`Command::parse`](super::Command::parse).
    Command(&'a [u8]),
    /// A line longer than the bound, now read and discarded up to and including its CRLF;
    /// answer [`Reply::line_too_long`](super::Reply::line_too_long).
    TooLong,
    /// A line holding the first fault named, read and discarded with its CRLF; answer
    /// [`Reply::syntax_error`](super::Reply::syntax_error).
    Invalid(LineFault),
}

/// One step of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRead<'a> {
    /// Bytes at the start of the buffer consumed: drain them before the next call. Non-zero
    /// with no line while an over-long line is being discarded.
    pub consumed: usize,
    /// The line found, or None: need more bytes.
    pub line: Option<Line<'a>>,
}

/// Reads command lines. Between calls the buffer may only grow at its end or lose the bytes
/// reported consumed: the reader remembers how far it has looked so as not to scan a slow
/// client's line again on every packet. After a line is returned it remembers nothing, so the
/// caller may hand the rest of the buffer to a [`DataReader`](super::DataReader) and come back.
#[derive(Debug, Clone)]
pub struct LineReader {
    command_max: usize,
    auth_max: usize,
    sasl: bool,
    /// Bytes of the current line already looked at.
    scanned: usize,
    fault: Option<LineFault>,
    discarding: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new()
    }
}

impl LineReader {
    /// A reader with the standard bounds: [`COMMAND_LINE_MAX`] and, for `AUTH` lines,
    /// [`AUTH_LINE_MAX`].
    pub fn new() -> Self {
        LineReader::with_limits(COMMAND_LINE_MAX, AUTH_LINE_MAX)
    }

    /// A reader with other bounds (CRLF included). `command` is raised to at least 5, so that
    /// the `AUTH ` prefix is always seen before it matters, and `auth` to at least `command`.
    pub fn with_limits(command: usize, auth: usize) -> Self {
        let command_max = command.max(5);
        LineReader {
            command_max,
            auth_max: auth.max(command_max),
            sasl: false,
            scanned: 0,
            fault: None,
            discarding: false,
        }
    }

    /// While on, every line may be as long as an AUTH line: the client's responses in a SASL
    /// exchange (RFC 4954 §4). The caller turns it on at a 334 and off at the final reply.
    pub fn set_sasl(&mut self, on: bool) {
        self.sasl = on;
    }

    /// Looks for the next line at the start of `buf`.
    pub fn read<'a>(&mut self, buf: &'a [u8]) -> LineRead<'a> {
        if self.discarding {
            return self.discard(buf, 0);
        }
        let max = self.limit(buf);
        let mut i = self.scanned;
        while i < buf.len() {
            if i + 2 > max {
                // RFC 5321 §4.5.3.1.4: too long; skip to its end, then report it once.
                self.discarding = true;
                self.scanned = 0;
                self.fault = None;
                return self.discard(buf, i);
            }
            match buf[i] {
                b'\r' => match buf.get(i + 1) {
                    Some(b'\n') => return self.end(buf, i),
                    Some(_) => self.note(LineFault::BareCr),
                    // Whether this CR ends the line is known with the next byte.
                    None => break,
                },
                // A CRLF's LF was seen with its CR above: this one is bare.
                b'\n' => self.note(LineFault::BareLf),
                0 => self.note(LineFault::Nul),
                _ => {}
            }
            i += 1;
        }
        self.scanned = i;
        LineRead {
            consumed: 0,
            line: None,
        }
    }

    /// The bound for the line at the start of `buf`.
    fn limit(&self, buf: &[u8]) -> usize {
        let auth = buf.len() >= 5 && buf[..5].eq_ignore_ascii_case(b"AUTH ");
        if self.sasl || auth {
            self.auth_max
        } else {
            self.command_max
        }
    }

    fn note(&mut self, fault: LineFault) {
        self.fault.get_or_insert(fault);
    }

    /// The line ends with the CRLF at `cr`.
    fn end<'a>(&mut self, buf: &'a [u8], cr: usize) -> LineRead<'a> {
        let line = match self.fault.take() {
            Some(fault) => Line::Invalid(fault),
            None => Line::Command(&buf[..cr]),
        };
        self.scanned = 0;
        LineRead {
            consumed: cr + 2,
            line: Some(line),
        }
    }

    /// Consumes an over-long line from `from` up to and including its CRLF. A CR at the very
    /// end is left in the buffer: the next byte says whether it is the line's end.
    fn discard<'a>(&mut self, buf: &'a [u8], from: usize) -> LineRead<'a> {
        let mut at = from;
        while let Some(p) = memchr::memchr(b'\r', &buf[at..]) {
            let cr = at + p;
            match buf.get(cr + 1) {
                Some(b'\n') => {
                    self.discarding = false;
                    return LineRead {
                        consumed: cr + 2,
                        line: Some(Line::TooLong),
                    };
                }
                Some(_) => at = cr + 1,
                None => {
                    return LineRead {
                        consumed: cr,
                        line: None,
                    };
                }
            }
        }
        LineRead {
            consumed: buf.len(),
            line: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a line became, owned, for comparing runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Command(Vec<u8>),
        TooLong,
        Invalid(LineFault),
    }

    /// Every line of `pieces` fed one after the other, and the bytes left unconsumed.
    fn read_all(reader: &mut LineReader, pieces: &[&[u8]]) -> (Vec<Got>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let r = reader.read(&buf);
                let line = r.line.map(|l| match l {
                    Line::Command(c) => Got::Command(c.to_vec()),
                    Line::TooLong => Got::TooLong,
                    Line::Invalid(f) => Got::Invalid(f),
                });
                let consumed = r.consumed;
                buf.drain(..consumed);
                match line {
                    Some(l) => got.push(l),
                    None if consumed == 0 => break,
                    None => {}
                }
            }
        }
        (got, buf)
    }

    fn cmd(s: &str) -> Got {
        Got::Command(s.as_bytes().to_vec())
    }

    #[test]
    fn pipelined_commands_come_in_order() {
        let wire = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nQUI";
        let (got, rest) = read_all(&mut LineReader::new(), &[wire]);
        assert_eq!(
            got,
            [
                cmd("MAIL FROM:<a@b.example>"),
                cmd("RCPT TO:<c@d.example>"),
                cmd("DATA")
            ]
        );
        assert_eq!(rest, b"QUI");
    }

    #[test]
    fn bare_cr_bare_lf_and_nul_make_the_line_invalid_up_to_crlf() {
        let wire = b"NOOP\nRSET\r\nNO\rOP\r\nNO\0OP\r\n\n\r\nQUIT\r\n";
        let (got, _) = read_all(&mut LineReader::new(), &[wire]);
        assert_eq!(
            got,
            [
                Got::Invalid(LineFault::BareLf),
                Got::Invalid(LineFault::BareCr),
                Got::Invalid(LineFault::Nul),
                Got::Invalid(LineFault::BareLf),
                cmd("QUIT"),
            ]
        );
        // A CR right before the CRLF is bare too.
        let (got, _) = read_all(&mut LineReader::new(), &[b"QUIT\r\r\n"]);
        assert_eq!(got, [Got::Invalid(LineFault::BareCr)]);
    }

    #[test]
    fn a_line_at_the_bound_passes_and_one_byte_more_is_too_long_once() {
        let mut ok = vec![b'N'; COMMAND_LINE_MAX - 2];
        ok.extend_from_slice(b"\r\n");
        let (got, _) = read_all(&mut LineReader::new(), &[&ok]);
        assert!(matches!(&got[..], [Got::Command(c)] if c.len() == COMMAND_LINE_MAX - 2));

        let mut long = vec![b'N'; COMMAND_LINE_MAX - 1];
        long.extend_from_slice(b"\r\nQUIT\r\n");
        let (got, _) = read_all(&mut LineReader::new(), &[&long]);
        assert_eq!(got, [Got::TooLong, cmd("QUIT")]);
    }

    #[test]
    fn the_rest_of_a_long_line_is_never_read_as_a_command() {
        let mut r = LineReader::new();
        let mut first = vec![b'X'; 5000];
        first.extend_from_slice(b"\rQUIT\n RCPT TO:<a@b>");
        let (got, rest) = read_all(&mut r, &[&first, b"\r", b"\nNOOP\r\n"]);
        assert_eq!(got, [Got::TooLong, cmd("NOOP")]);
        assert!(rest.is_empty());
    }

    #[test]
    fn auth_lines_may_be_longer_and_so_may_sasl_responses() {
        let mut auth = b"auth PLAIN ".to_vec();
        auth.resize(AUTH_LINE_MAX - 2, b'A');
        auth.extend_from_slice(b"\r\n");
        let (got, _) = read_all(&mut LineReader::new(), &[&auth]);
        assert!(matches!(&got[..], [Got::Command(_)]));
        auth.insert(12, b'A');
        let (got, _) = read_all(&mut LineReader::new(), &[&auth]);
        assert_eq!(got, [Got::TooLong]);

        let mut response = vec![b'A'; 5000];
        response.extend_from_slice(b"\r\n");
        let mut r = LineReader::new();
        assert_eq!(read_all(&mut r, &[&response]).0, [Got::TooLong]);
        r.set_sasl(true);
        assert!(matches!(
            &read_all(&mut r, &[&response]).0[..],
            [Got::Command(_)]
        ));
    }

    /// The reference: split at each CRLF, judge each line on its own.
    fn reference(input: &[u8], command_max: usize, auth_max: usize) -> Vec<Got> {
        let mut out = Vec::new();
        let mut rest = input;
        while let Some(e) = rest.windows(2).position(|w| w == b"\r\n") {
            let line = &rest[..e];
            let auth = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
            let max = if auth { auth_max } else { command_max };
            out.push(if e + 2 > max {
                Got::TooLong
            } else if let Some(f) = first_fault(line) {
                Got::Invalid(f)
            } else {
                Got::Command(line.to_vec())
            });
            rest = &rest[e + 2..];
        }
        out
    }

    fn first_fault(line: &[u8]) -> Option<LineFault> {
        line.iter().find_map(|&b| match b {
            b'\r' => Some(LineFault::BareCr),
            b'\n' => Some(LineFault::BareLf),
            0 => Some(LineFault::Nul),
            _ => None,
        })
    }

    #[test]
    fn every_short_input_reads_as_the_reference_at_every_split() {
        // All strings of up to 7 bytes over the bytes that matter, with a bound of 5.
        let alphabet = [b'\r', b'\n', 0, b'A', b' '];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=7 {
            let mut next = Vec::new();
            for s in inputs.iter().filter(|s| s.len() == len - 1) {
                for &b in &alphabet {
                    let mut t = s.clone();
                    t.push(b);
                    next.push(t);
                }
            }
            inputs.extend(next);
        }
        for input in &inputs {
            let want = reference(input, 5, 7);
            for cut in 0..=input.len() {
                let mut r = LineReader::with_limits(5, 7);
                let (got, _) = read_all(&mut r, &[&input[..cut], &input[cut..]]);
                assert_eq!(got, want, "{input:?} cut at {cut}");
            }
        }
    }
}
