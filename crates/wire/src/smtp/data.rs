//! The message after DATA's 354: finding its end and deciding what may be passed to the origin.
//! Security critical: SMTP smuggling (2023) hides a second message behind an end-of-data that
//! the proxy and the origin read differently (`\n.\n`, `\r.\r`, `\r\n.\n`, ...).
//!
//! Rules:
//! - Only CRLF "." CRLF ends the message (RFC 5321 §4.1.1.4). Reading starts at the beginning of
//!   a line, as DATA's line ended with CRLF, so `.\r\n` at once is an empty message.
//! - A bare LF, a bare CR or a NUL anywhere refuses the message (550 5.6.11), and a message larger
//!   than the limit is refused (552 5.3.4); either way the reader goes on to the real end, so
//!   nothing of the message is ever read as a command, and the refusal is answered after it.
//! - Bytes are checked before they are released, never after: a CR at the end of the input is
//!   held until the next byte shows it is part of CRLF, and a `.` at the start of a line until it
//!   is known not to begin the end. Once the message is refused nothing more is released; the
//!   proxy closes the origin connection, which then drops the partial message.
//! - What is released is exactly the client's bytes, dot-stuffing included (RFC 5321 §4.5.2):
//!   the origin un-stuffs them as we would. So the released bytes are always a prefix of the input.

use super::reply::Reply;

/// Why a message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A NUL byte.
    Nul,
    /// More message bytes than the limit.
    TooBig,
}

impl Refusal {
    /// The reply the proxy sends after the end of the message.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::TooBig => Reply::too_big(),
            Refusal::BareLf | Refusal::BareCr | Refusal::Nul => Reply::bad_message_bytes(),
        }
    }
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Clean and within the limit; all of it, and then `.\r\n`, was released. `size` counts the
    /// message as RFC 1870 §3 does: CRLFs included, stuffing dots and the final `.\r\n` not.
    Ok {
        /// The message's size in bytes.
        size: u64,
    },
    /// Refused for the first reason found.
    Refused(Refusal),
}

/// One step of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input consumed: all of them, unless the end was found; then up to and
    /// including its `.\r\n`, and what follows (a pipelined `QUIT`) is for the line reader.
    pub consumed: usize,
    /// The verdict, once the end was found.
    pub done: Option<Verdict>,
}

/// Where in a line the reader is; each state but `Mid` holds back bytes not yet released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the start): a `.` here may begin the end.
    LineStart,
    /// Holds a `.` at the start of a line.
    Dot,
    /// Holds `.` CR at the start of a line: LF ends the message.
    DotCr,
    /// Inside a line.
    Mid,
    /// Holds a CR: LF makes it a line end, anything else makes it bare.
    Cr,
}

/// Reads one message. Feed it bytes as they arrive; it appends to `out` what may be forwarded.
#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    max: u64,
    size: u64,
    refusal: Option<Refusal>,
    done: Option<Verdict>,
}

impl DataReader {
    /// A reader for a message of at most `max_message_size` bytes (counted as in
    /// [`Verdict::Ok`]); `u64::MAX` for no limit.
    pub fn new(max_message_size: u64) -> Self {
        DataReader {
            state: State::LineStart,
            max: max_message_size,
            size: 0,
            refusal: None,
            done: None,
        }
    }

    /// The first reason found to refuse the message, before its end: the proxy may close the
    /// origin connection at once.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    /// Message bytes counted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads `input`, appending to `out` the bytes now known clean, and with an Ok verdict the
    /// final `.\r\n`. After the end, further calls consume nothing and repeat the verdict.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        if let Some(v) = self.done {
            return Progress {
                consumed: 0,
                done: Some(v),
            };
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                // Inside a line only CR, LF and NUL matter: pass the rest in one piece.
                let run = memchr::memchr3(b'\r', b'\n', 0, &input[i..]).unwrap_or(input.len() - i);
                self.release(&input[i..i + run], out);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                return Progress {
                    consumed: i,
                    done: Some(self.finish(out)),
                };
            }
        }
        Progress {
            consumed: input.len(),
            done: None,
        }
    }

    /// Takes one byte; true when it completed CRLF "." CRLF.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        use State::*;
        self.state = match (self.state, b) {
            (LineStart, b'.') => Dot,
            (LineStart | Mid, b'\r') => Cr,
            (LineStart | Mid, b'\n') => self.refuse(Refusal::BareLf),
            (LineStart | Mid, 0) => self.refuse(Refusal::Nul),
            (LineStart | Mid, _) => {
                self.release(&[b], out);
                Mid
            }
            (Dot, b'\r') => DotCr,
            (Dot, _) => {
                // A dot that does not begin the end: stuffing, not counted (RFC 5321 §4.5.2).
                self.release_uncounted(b".", out);
                return self.reprocess(b, out);
            }
            (DotCr, b'\n') => return true,
            (Cr, b'\n') => {
                self.release_pair(out);
                LineStart
            }
            // The held CR is bare; the byte after it is read as inside a line, so that
            // `\r.\r\n` or `\r\n.\r.\r\n` can never be taken for the end.
            (DotCr | Cr, _) => {
                self.refuse(Refusal::BareCr);
                return self.reprocess(b, out);
            }
        };
        false
    }

    fn reprocess(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.state = State::Mid;
        self.step(b, out)
    }

    /// Notes the first refusal; what follows is inside a line (never at its start: only CRLF
    /// begins a line).
    fn refuse(&mut self, why: Refusal) -> State {
        self.refusal.get_or_insert(why);
        State::Mid
    }

    /// Releases message bytes up to the limit; past it the message is refused.
    fn release(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.refusal.is_some() {
            return;
        }
        let room = self.max.saturating_sub(self.size);
        let fit = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        out.extend_from_slice(&bytes[..fit]);
        self.size += fit as u64;
        if fit < bytes.len() {
            self.refuse(Refusal::TooBig);
        }
    }

    /// Releases a CRLF whole or not at all, so no CR is ever released without its LF.
    fn release_pair(&mut self, out: &mut Vec<u8>) {
        if self.refusal.is_some() {
            return;
        }
        if self.max.saturating_sub(self.size) < 2 {
            self.refuse(Refusal::TooBig);
            return;
        }
        out.extend_from_slice(b"\r\n");
        self.size += 2;
    }

    fn release_uncounted(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.refusal.is_none() {
            out.extend_from_slice(bytes);
        }
    }

    /// The end was read: decide, and release the end itself only for a message we pass.
    fn finish(&mut self, out: &mut Vec<u8>) -> Verdict {
        let verdict = match self.refusal {
            Some(why) => Verdict::Refused(why),
            None => {
                out.extend_from_slice(b".\r\n");
                Verdict::Ok { size: self.size }
            }
        };
        self.done = Some(verdict);
        verdict
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
