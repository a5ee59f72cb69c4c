//! SMTP replies as values: the reply code, its text lines, the enhanced status code of RFC 2034 /
//! RFC 3463, the proxy's own replies as named constructors, and the encoding to wire bytes.
//! Reading an origin's replies incrementally is `reply_reader.rs`.

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463 §2), e.g. `5.5.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, 0..=999.
    pub subject: u16,
    /// The detail, 0..=999.
    pub detail: u16,
}

impl EnhancedCode {
    /// A code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// Reads a code at the start of a reply line's text, followed by a space or the end of the
    /// text (RFC 3463 §2: `class "." subject "." detail`, subject and detail 1 to 3 digits).
    /// Returns the code and the text after it.
    pub fn parse_prefix(text: &str) -> Option<(EnhancedCode, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let mut parts = text[..end].split('.');
        let (Some(c), Some(s), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let class = match c {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let number = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        if !number(s) || !number(d) {
            return None;
        }
        let code = EnhancedCode::new(class, s.parse().ok()?, d.parse().ok()?);
        Some((code, text[end..].strip_prefix(' ').unwrap_or("")))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply: a three-digit code and one or more lines of text (RFC 5321 §4.2). `lines` hold the
/// text after `250-` / `250 ` as sent, an enhanced status code included; a multi-line reply is
/// encoded with `-` after the code on every line but the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200..=559.
    pub code: u16,
    /// The text of each line, without the code, the separator and the CRLF. May be empty text.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A one-line reply whose text starts with an enhanced status code (RFC 2034 §4).
    pub fn with_status(code: u16, status: EnhancedCode, text: &str) -> Self {
        Reply::new(code, format!("{status} {text}"))
    }

    /// `500 5.5.2`: a command line longer than the bound (RFC 5321 §4.5.3.1.4, §4.2.4).
    pub fn line_too_long() -> Self {
        Reply::with_status(500, EnhancedCode::new(5, 5, 2), "line too long")
    }

    /// `500 5.5.2`: a line that is not a command at all (bare CR or LF, NUL, not UTF-8, empty).
    pub fn syntax_error() -> Self {
        Reply::with_status(500, EnhancedCode::new(5, 5, 2), "syntax error")
    }

    /// `500 5.5.1`: a verb we do not know (RFC 5321 §4.2.4).
    pub fn unrecognized() -> Self {
        Reply::with_status(500, EnhancedCode::new(5, 5, 1), "command unrecognized")
    }

    /// `502 5.5.1`: a verb we know but do not pass (RFC 5321 §4.2.4).
    pub fn not_implemented() -> Self {
        Reply::with_status(502, EnhancedCode::new(5, 5, 1), "command not implemented")
    }

    /// `501 5.5.4`: bad arguments or parameters of a known command.
    pub fn bad_arguments(text: &str) -> Self {
        Reply::with_status(501, EnhancedCode::new(5, 5, 4), text)
    }

    /// `501 5.1.7`: a malformed sender address (RFC 3463 §3.2 "bad sender's mailbox syntax").
    pub fn bad_sender(text: &str) -> Self {
        Reply::with_status(501, EnhancedCode::new(5, 1, 7), text)
    }

    /// `501 5.1.3`: a malformed recipient address (RFC 3463 §3.2 "bad destination syntax").
    pub fn bad_recipient(text: &str) -> Self {
        Reply::with_status(501, EnhancedCode::new(5, 1, 3), text)
    }

    /// `503 5.5.1`: a command out of sequence (RFC 5321 §4.2.4, §4.3.2).
    pub fn bad_sequence(text: &str) -> Self {
        Reply::with_status(503, EnhancedCode::new(5, 5, 1), text)
    }

    /// `550 5.6.11`: a message with a bare LF, bare CR or NUL, refused (SMTP smuggling).
    pub fn bad_message_bytes() -> Self {
        Reply::with_status(
            550,
            EnhancedCode::new(5, 6, 11),
            "message refused: bare LF/CR or NUL",
        )
    }

    /// `552 5.3.4`: a message larger than the limit (RFC 1870 §6.3).
    pub fn too_big() -> Self {
        Reply::with_status(
            552,
            EnhancedCode::new(5, 3, 4),
            "message size exceeds fixed limit",
        )
    }

    /// `555 5.5.4`: a MAIL or RCPT parameter we do not know (RFC 5321 §4.1.1.11).
    pub fn unknown_parameter(text: &str) -> Self {
        Reply::with_status(555, EnhancedCode::new(5, 5, 4), text)
    }

    /// `553 5.6.7`: a non-ASCII address without SMTPUTF8 (RFC 6531 §3.6.2).
    pub fn non_ascii_address() -> Self {
        Reply::with_status(
            553,
            EnhancedCode::new(5, 6, 7),
            "non-ASCII address without SMTPUTF8",
        )
    }

    /// 2xx: the command was accepted.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: more is expected (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// The enhanced status code of the first line, if it has one of the reply's class.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        let (code, _) = EnhancedCode::parse_prefix(self.lines.first()?)?;
        (u16::from(code.class) == self.code / 100).then_some(code)
    }

    /// Appends the wire form: `250-first\r\n250 last\r\n`. Control characters in the text are
    /// written as spaces, so no text can end a line early or smuggle another reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = self.code.min(999);
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{code}\r\n").as_bytes());
            return;
        }
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{code}{sep}").as_bytes());
            out.extend(
                line.bytes()
                    .map(|b| if b.is_ascii_control() { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_single_and_multi_line_replies() {
        assert_eq!(Reply::new(250, "OK").to_bytes(), b"250 OK\r\n");
        let r = Reply {
            code: 250,
            lines: vec!["mx.example".into(), "PIPELINING".into(), "SIZE 100".into()],
        };
        assert_eq!(
            r.to_bytes(),
            b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        let empty = Reply {
            code: 354,
            lines: Vec::new(),
        };
        assert_eq!(empty.to_bytes(), b"354\r\n");
    }

    #[test]
    fn text_cannot_smuggle_a_line_end() {
        let r = Reply::new(250, "ok\r\n250 forged\n\0");
        assert_eq!(r.to_bytes(), b"250 ok  250 forged  \r\n");
    }

    #[test]
    fn the_proxys_own_replies() {
        let cases = [
            (Reply::line_too_long(), "500 5.5.2 line too long\r\n"),
            (Reply::unrecognized(), "500 5.5.1 command unrecognized\r\n"),
            (
                Reply::not_implemented(),
                "502 5.5.1 command not implemented\r\n",
            ),
            (Reply::bad_arguments("x"), "501 5.5.4 x\r\n"),
            (Reply::bad_sender("x"), "501 5.1.7 x\r\n"),
            (Reply::bad_recipient("x"), "501 5.1.3 x\r\n"),
            (Reply::bad_sequence("x"), "503 5.5.1 x\r\n"),
            (
                Reply::bad_message_bytes(),
                "550 5.6.11 message refused: bare LF/CR or NUL\r\n",
            ),
            (
                Reply::too_big(),
                "552 5.3.4 message size exceeds fixed limit\r\n",
            ),
            (Reply::unknown_parameter("x"), "555 5.5.4 x\r\n"),
        ];
        for (reply, wire) in cases {
            assert_eq!(String::from_utf8_lossy(&reply.to_bytes()), wire);
            assert_eq!(reply.enhanced().map(|e| e.class), Some(5));
        }
    }

    #[test]
    fn enhanced_codes_from_rfc_3463_and_2034() {
        let r = Reply::new(550, "5.1.1 Mailbox \"nosuchuser\" does not exist");
        assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(
            EnhancedCode::parse_prefix("2.0.0 Ok: queued as 12345"),
            Some((EnhancedCode::new(2, 0, 0), "Ok: queued as 12345"))
        );
        assert_eq!(
            EnhancedCode::parse_prefix("4.7.999"),
            Some((EnhancedCode::new(4, 7, 999), ""))
        );
        assert_eq!(EnhancedCode::new(5, 6, 11).to_string(), "5.6.11");
        for bad in [
            "3.0.0 x",
            "5.1 x",
            "5.1.1.1 x",
            "5.1000.1",
            "5..1",
            "5.a.1",
            "Ok",
        ] {
            assert_eq!(EnhancedCode::parse_prefix(bad), None, "{bad}");
        }
        // A code of another class than the reply's is not the reply's enhanced code.
        assert_eq!(Reply::new(250, "5.0.0 odd").enhanced(), None);
    }
}
