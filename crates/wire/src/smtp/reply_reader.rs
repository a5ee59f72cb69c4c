//! Reading an origin's replies incrementally: multi-line replies (`250-` continuation lines up to
//! a final `250 `), each line bounded, the whole reply bounded. The caller owns the buffer and
//! drains what is consumed, as with the command line reader.

use super::reply::Reply;
use super::{REPLY_LINE_MAX, REPLY_MAX_LINES};

/// Why an origin's reply cannot be read. The reader's state is then unspecified: the proxy
/// closes the origin connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`REPLY_LINE_MAX`] bytes, CRLF included.
    #[error("reply line longer than allowed")]
    LineTooLong,
    /// More than [`REPLY_MAX_LINES`] lines in one reply.
    #[error("reply with too many lines")]
    TooManyLines,
    /// A line that breaks RFC 5321 §4.2's grammar.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
}

/// One step of reading: how many bytes of the buffer were consumed (drain them), and the reply
/// if one was completed. Lines of an unfinished multi-line reply are consumed and kept inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRead {
    /// Bytes of the buffer consumed.
    pub consumed: usize,
    /// A complete reply, or None: need more bytes.
    pub reply: Option<Reply>,
}

/// Reads replies from the bytes an origin sends. Feed it the buffer (which must start at the
/// first byte not consumed yet); call again after draining `consumed` for the next reply.
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// A reader expecting the start of a reply.
    pub fn new() -> Self {
        ReplyReader::default()
    }

    /// Reads complete lines from `buf` until a reply is complete or the bytes run out.
    pub fn read(&mut self, buf: &[u8]) -> Result<ReplyRead, ReplyError> {
        let mut consumed = 0;
        loop {
            let rest = &buf[consumed..];
            let window = &rest[..rest.len().min(REPLY_LINE_MAX)];
            let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                if rest.len() >= REPLY_LINE_MAX {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(ReplyRead {
                    consumed,
                    reply: None,
                });
            };
            // RFC 5321 §2.3.8: lines end with CRLF only; a bare LF from the origin is an error.
            let Some(line) = rest[..lf].strip_suffix(b"\r") else {
                return Err(ReplyError::Malformed("bare LF"));
            };
            consumed += lf + 1;
            if let Some(reply) = self.line(line)? {
                return Ok(ReplyRead {
                    consumed,
                    reply: Some(reply),
                });
            }
        }
    }

    /// Takes one line (without CRLF); returns the reply if it was the last line.
    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let code = reply_code(line)?;
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::Malformed("reply code changed between lines"));
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::Malformed("no space or hyphen after code")),
        };
        let text = line.get(4..).unwrap_or_default();
        // RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126); RFC 6531 §3.7.4 adds UTF-8. Any other
        // control byte would reach the client when the reply is passed on.
        if text.iter().any(|&b| b != b'\t' && b.is_ascii_control()) {
            return Err(ReplyError::Malformed("control character in text"));
        }
        if self.lines.len() >= REPLY_MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        // Text that is not UTF-8 is kept readable rather than refused: it is only text.
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        self.code = Some(code);
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39.
fn reply_code(line: &[u8]) -> Result<u16, ReplyError> {
    match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', ..] => {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(ReplyError::Malformed("bad reply code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every reply of `input` fed in the given pieces.
    fn read_all(pieces: &[&[u8]]) -> Result<Vec<Reply>, ReplyError> {
        let mut reader = ReplyReader::new();
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let r = reader.read(&buf)?;
                buf.drain(..r.consumed);
                match r.reply {
                    Some(reply) => replies.push(reply),
                    None => break,
                }
            }
        }
        Ok(replies)
    }

    #[test]
    fn multi_line_ehlo_reply_from_rfc_5321_appendix_d() {
        let wire =
            b"250-foo.com greets bar.com\r\n250-8BITMIME\r\n250-SIZE\r\n250-DSN\r\n250 HELP\r\n";
        let replies = read_all(&[wire]).expect("valid");
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].code, 250);
        assert_eq!(
            replies[0].lines,
            ["foo.com greets bar.com", "8BITMIME", "SIZE", "DSN", "HELP"]
        );
        assert_eq!(replies[0].to_bytes(), wire);
    }

    #[test]
    fn pipelined_replies_come_one_by_one_whatever_the_split() {
        let wire: &[u8] =
            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
        let whole = read_all(&[wire]).expect("valid");
        assert_eq!(
            whole.iter().map(|r| r.code).collect::<Vec<_>>(),
            [250, 250, 354]
        );
        for cut in 0..=wire.len() {
            assert_eq!(read_all(&[&wire[..cut], &wire[cut..]]), Ok(whole.clone()));
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(read_all(&bytes), Ok(whole));
    }

    #[test]
    fn a_code_alone_is_a_final_line() {
        let r = read_all(&[b"250\r\n354-\r\n354 \r\n"]).expect("valid");
        assert_eq!(r[0].lines, [""]);
        assert_eq!(r[1].lines, ["", ""]);
    }

    #[test]
    fn refuses_malformed_replies() {
        let bad: [&[u8]; 8] = [
            b"250 ok\n",
            b"150 ok\r\n",
            b"260 ok\r\n",
            b"25 ok\r\n",
            b"250_ok\r\n",
            b"250-a\r\n251 b\r\n",
            b"250 a\rb\r\n",
            b"250 a\0\r\n",
        ];
        for wire in bad {
            assert!(
                matches!(read_all(&[wire]), Err(ReplyError::Malformed(_))),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn bounds_line_length_and_line_count() {
        let mut long = b"250 ".to_vec();
        long.resize(REPLY_LINE_MAX - 2, b'a');
        long.extend_from_slice(b"\r\n");
        assert!(read_all(&[&long]).is_ok());
        long.insert(4, b'a');
        assert_eq!(read_all(&[&long]), Err(ReplyError::LineTooLong));
        // Never waits forever for a line end that cannot come within the bound.
        assert_eq!(
            read_all(&[&[b'2'; REPLY_LINE_MAX][..]]),
            Err(ReplyError::LineTooLong)
        );
        let many = b"250-x\r\n".repeat(REPLY_MAX_LINES + 1);
        assert_eq!(read_all(&[&many]), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn latin1_text_is_kept_readable() {
        let r = read_all(&[b"550 caf\xe9\r\n"]).expect("valid");
        assert_eq!(r[0].lines, ["caf\u{fffd}"]);
    }
}
