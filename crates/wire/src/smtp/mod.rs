//! SMTP as the proxy speaks it, sans I/O: the client's command lines and commands, the message
//! after DATA, the origin's replies, and the order of commands in a session. RFC 5321 with SIZE
//! (1870), 8BITMIME (6152), SMTPUTF8 (6531), DSN (3461), AUTH (4954), PIPELINING (2920),
//! STARTTLS (3207) and enhanced status codes (2034, 3463).
//!
//! The proxy is the server to its client and a client to the origin MTA. Its loop, in the words
//! of this module:
//!
//! ```text
//! client bytes -> LineReader::read -> Line::Command -> Command::parse -> Session::check
//!     -> Command::encode -> origin;  origin bytes -> ReplyReader::read -> Reply
//!     -> Session::on_reply -> Reply::encode -> client
//! after DATA's 354: client bytes -> DataReader::feed -> released bytes -> origin
//!     -> Verdict::Ok: the origin's reply; Verdict::Refused: its reply, close the origin
//! ```
//!
//! Every reader takes a buffer the caller owns and says how many bytes it consumed, so one buffer
//! serves the line reader and the DATA reader in turn, and bytes pipelined after a command or
//! after the end of data stay where the next reader finds them. Two things only the caller can do,
//! because it owns the buffer: drop what follows a STARTTLS line (RFC 3207 §4.2), and not read
//! past a DATA line until the 354 is sent.

mod address;
mod command;
mod data;
mod ehlo;
mod line;
mod params;
mod reply;
mod reply_reader;
mod session;

pub use address::{ForwardPath, Mailbox, ReversePath};
pub use command::{Command, ParseError};
pub use data::{DataReader, Progress, Refusal, Verdict};
pub use ehlo::{EhloOffer, Extensions, ehlo_reply};
pub use line::{Line, LineFault, LineRead, LineReader};
pub use params::{Body, MailParams, Notify, Orcpt, RcptParams, Ret};
pub use reply::{EnhancedCode, Reply};
pub use reply_reader::{ReplyError, ReplyRead, ReplyReader};
pub use session::{Session, State};

/// Longest command line, CRLF included: RFC 5321 §4.5.3.1.4's 512, raised for what extensions
/// add to MAIL and RCPT (§4.5.3.1.4 allows it; Postfix and Exchange accept 1,000 and more).
pub const COMMAND_LINE_MAX: usize = 1000;

/// Longest AUTH line and SASL response line, CRLF included (RFC 4954 §4).
pub const AUTH_LINE_MAX: usize = 12_288;

/// Longest reply line accepted from an origin, CRLF included. RFC 5321 §4.5.3.1.5 says 512;
/// origins exceed it with long texts, so we are lenient, but bounded.
pub const REPLY_LINE_MAX: usize = 4096;

/// Most lines in one reply from an origin (an EHLO reply has about twenty).
pub const REPLY_MAX_LINES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    /// One buffer through the proxy's loop: pipelined commands, the message, and the QUIT the
    /// client sent in the same packet as the end of data.
    #[test]
    fn a_pipelined_session_over_one_buffer() {
        let mut buf =
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
                .to_vec();
        let (mut lines, mut session) = (LineReader::new(), Session::new());
        let mut forwarded = Vec::new();
        for reply in [250, 250, 250, 354] {
            let r = lines.read(&buf);
            let Some(Line::Command(line)) = r.line else {
                panic!("a command line");
            };
            let cmd = Command::parse(line).expect("valid");
            let consumed = r.consumed;
            buf.drain(..consumed);
            session.check(&cmd).expect("in sequence");
            cmd.encode(&mut forwarded);
            session.on_reply(&cmd, &Reply::new(reply, "ok"));
        }
        assert_eq!(session.state(), State::Data);
        assert!(buf.is_empty());

        buf.extend_from_slice(b"Subject: hi\r\n\r\n..dots\r\n.\r\nQUIT\r\n");
        let mut data = DataReader::new(1000);
        let mut message = Vec::new();
        let p = data.feed(&buf, &mut message);
        assert_eq!(p.done, Some(Verdict::Ok { size: 22 }));
        assert_eq!(message, b"Subject: hi\r\n\r\n..dots\r\n.\r\n");
        buf.drain(..p.consumed);
        session.message_done();

        let r = lines.read(&buf);
        assert_eq!(r.line, Some(Line::Command(b"QUIT")));
        assert_eq!(
            String::from_utf8_lossy(&forwarded),
            "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        );
    }
}
