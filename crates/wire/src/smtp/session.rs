//! The order of commands in a session (RFC 5321 §4.1.4, §3.3): which command may come now, and
//! how the origin's replies move the session on. A pure state machine; the proxy drives it.
//!
//! The proxy takes the client's commands one at a time even when the client pipelines (RFC 2920
//! asks only that replies come in order): `check` a command, forward it, then give the origin's
//! reply to `on_reply` before checking the next. So a RCPT pipelined after a MAIL is checked once
//! the MAIL was accepted or refused, as the origin itself would.

use super::address::ForwardPath;
use super::command::Command;
use super::reply::Reply;

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Greeting sent, no EHLO or HELO accepted yet (or STARTTLS just completed).
    Greeted,
    /// EHLO or HELO accepted, no transaction.
    Ready,
    /// MAIL accepted.
    Mail,
    /// MAIL and at least one RCPT accepted.
    Rcpt,
    /// DATA answered 354: the message is being read.
    Data,
}

/// A session's state.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    /// The accepted MAIL declared SMTPUTF8.
    smtputf8: bool,
    /// AUTH succeeded (RFC 4954 §4: no second AUTH).
    authenticated: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session whose greeting was sent.
    pub fn new() -> Self {
        Session {
            state: State::Greeted,
            smtputf8: false,
            authenticated: false,
        }
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether `cmd` may come now; if not, the reply (503 5.5.1 for a sequence error).
    pub fn check(&self, cmd: &Command) -> Result<(), Reply> {
        use State::*;
        let refuse = |text: &str| Err(Reply::bad_sequence(text));
        match (cmd, self.state) {
            (_, Data) => refuse("command inside DATA"),
            (Command::Mail { .. }, Greeted) => refuse("send EHLO or HELO first"),
            (Command::Mail { .. }, Mail | Rcpt) => refuse("nested MAIL command"),
            (Command::Rcpt { .. }, Greeted | Ready) => refuse("need MAIL command"),
            (Command::Rcpt { to, .. }, _) if !self.smtputf8 && non_ascii(to) => {
                // RFC 6531 §3.4: non-ASCII recipients only in an SMTPUTF8 transaction.
                Err(Reply::non_ascii_address())
            }
            (Command::Data, Greeted | Ready) => refuse("need MAIL command"),
            (Command::Data, Mail) => refuse("need RCPT command"),
            (Command::StartTls | Command::Auth { .. }, Greeted) => refuse("send EHLO first"),
            // RFC 3207 §4 and RFC 4954 §4: not inside a mail transaction.
            (Command::StartTls | Command::Auth { .. }, Mail | Rcpt) => {
                refuse("mail transaction in progress")
            }
            (Command::Auth { .. }, _) if self.authenticated => refuse("already authenticated"),
            _ => Ok(()),
        }
    }

    /// Moves on with the reply to `cmd` (the origin's, or the proxy's own for STARTTLS).
    pub fn on_reply(&mut self, cmd: &Command, reply: &Reply) {
        use State::*;
        let ok = reply.is_positive();
        match (cmd, self.state) {
            // RFC 5321 §4.1.4: EHLO or HELO in a session also clears any transaction.
            (Command::Ehlo(_) | Command::Helo(_), _) if ok => self.ready(),
            (Command::Mail { params, .. }, Ready) if ok => {
                self.state = Mail;
                self.smtputf8 = params.smtputf8;
            }
            (Command::Rcpt { .. }, Mail | Rcpt) if ok => self.state = Rcpt,
            (Command::Data, Rcpt) if reply.code == 354 => self.state = Data,
            (Command::Rset, Ready | Mail | Rcpt) if ok => self.ready(),
            // RFC 3207 §4.2: after the handshake the session starts over; a new EHLO is needed.
            (Command::StartTls, _) if reply.code == 220 => {
                *self = Session::new();
            }
            (Command::Auth { .. }, _) if reply.code == 235 => self.authenticated = true,
            _ => {}
        }
    }

    /// The message was read and answered (accepted or not): the transaction is over
    /// (RFC 5321 §4.1.1.4).
    pub fn message_done(&mut self) {
        if self.state == State::Data {
            self.ready();
        }
    }

    fn ready(&mut self) {
        self.state = State::Ready;
        self.smtputf8 = false;
    }
}

fn non_ascii(to: &ForwardPath) -> bool {
    matches!(to, ForwardPath::Mailbox(m) if !m.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        Command::parse(s.as_bytes()).expect("valid command")
    }

    fn ok() -> Reply {
        Reply::new(250, "ok")
    }

    /// Checks `line` and gives it `reply`; the check's refusal code, if any.
    fn go(s: &mut Session, line: &str, reply: Reply) -> Option<u16> {
        let c = cmd(line);
        match s.check(&c) {
            Ok(()) => {
                s.on_reply(&c, &reply);
                None
            }
            Err(r) => Some(r.code),
        }
    }

    #[test]
    fn a_whole_transaction() {
        let mut s = Session::new();
        assert_eq!(go(&mut s, "EHLO c.example", ok()), None);
        assert_eq!(go(&mut s, "MAIL FROM:<a@b.example>", ok()), None);
        assert_eq!(s.state(), State::Mail);
        assert_eq!(go(&mut s, "RCPT TO:<c@d.example>", ok()), None);
        assert_eq!(go(&mut s, "RCPT TO:<e@d.example>", ok()), None);
        assert_eq!(go(&mut s, "DATA", Reply::new(354, "go ahead")), None);
        assert_eq!(s.state(), State::Data);
        assert_eq!(s.check(&Command::Quit).map_err(|r| r.code), Err(503));
        s.message_done();
        assert_eq!(s.state(), State::Ready);
        assert_eq!(go(&mut s, "MAIL FROM:<>", ok()), None);
    }

    #[test]
    fn sequence_errors_are_503() {
        let mut s = Session::new();
        assert_eq!(go(&mut s, "MAIL FROM:<a@b.example>", ok()), Some(503));
        assert_eq!(go(&mut s, "RCPT TO:<c@d.example>", ok()), Some(503));
        assert_eq!(go(&mut s, "DATA", ok()), Some(503));
        assert_eq!(go(&mut s, "AUTH PLAIN", ok()), Some(503));
        assert_eq!(go(&mut s, "STARTTLS", ok()), Some(503));
        go(&mut s, "HELO c.example", ok());
        assert_eq!(go(&mut s, "RCPT TO:<c@d.example>", ok()), Some(503));
        assert_eq!(go(&mut s, "DATA", ok()), Some(503));
        go(&mut s, "MAIL FROM:<a@b.example>", ok());
        assert_eq!(go(&mut s, "MAIL FROM:<a@b.example>", ok()), Some(503));
        assert_eq!(go(&mut s, "DATA", ok()), Some(503));
        assert_eq!(go(&mut s, "STARTTLS", ok()), Some(503));
        assert_eq!(go(&mut s, "AUTH PLAIN", ok()), Some(503));
    }

    #[test]
    fn the_origin_decides_what_was_accepted() {
        let mut s = Session::new();
        go(&mut s, "EHLO c.example", ok());
        go(&mut s, "MAIL FROM:<a@b.example>", Reply::new(550, "no"));
        assert_eq!(s.state(), State::Ready);
        go(&mut s, "MAIL FROM:<a@b.example>", ok());
        go(
            &mut s,
            "RCPT TO:<c@d.example>",
            Reply::new(550, "5.1.1 unknown"),
        );
        assert_eq!(go(&mut s, "DATA", ok()), Some(503), "no valid recipient");
        go(&mut s, "RCPT TO:<c@d.example>", ok());
        go(&mut s, "DATA", Reply::new(451, "later"));
        assert_eq!(s.state(), State::Rcpt);
    }

    #[test]
    fn rset_ehlo_and_starttls_reset() {
        let mut s = Session::new();
        go(&mut s, "RSET", ok());
        assert_eq!(s.state(), State::Greeted, "RSET does not stand in for EHLO");
        go(&mut s, "EHLO c.example", ok());
        go(&mut s, "MAIL FROM:<a@b.example>", ok());
        go(&mut s, "RSET", ok());
        assert_eq!(s.state(), State::Ready);
        go(&mut s, "MAIL FROM:<a@b.example>", ok());
        go(&mut s, "EHLO c.example", ok());
        assert_eq!(s.state(), State::Ready);
        go(
            &mut s,
            "AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=",
            Reply::new(235, "ok"),
        );
        assert_eq!(go(&mut s, "AUTH PLAIN", ok()), Some(503));
        go(&mut s, "STARTTLS", Reply::new(220, "go ahead"));
        assert_eq!(s.state(), State::Greeted);
        assert_eq!(go(&mut s, "MAIL FROM:<a@b.example>", ok()), Some(503));
        go(&mut s, "EHLO c.example", ok());
        assert_eq!(
            go(&mut s, "AUTH PLAIN", ok()),
            None,
            "TLS forgot the old AUTH"
        );
    }

    #[test]
    fn non_ascii_recipients_need_an_smtputf8_transaction() {
        let mut s = Session::new();
        go(&mut s, "EHLO c.example", ok());
        go(&mut s, "MAIL FROM:<a@b.example>", ok());
        assert_eq!(go(&mut s, "RCPT TO:<ü@d.example>", ok()), Some(553));
        go(&mut s, "RSET", ok());
        go(&mut s, "MAIL FROM:<a@b.example> SMTPUTF8", ok());
        assert_eq!(go(&mut s, "RCPT TO:<ü@d.example>", ok()), None);
    }
}
