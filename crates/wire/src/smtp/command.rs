//! The client's commands (RFC 5321 §4.1.1 and the extensions' verbs) parsed from a line the
//! [`LineReader`](super::LineReader) found, and encoded back in a canonical form for the origin.
//!
//! Strict by the RFC grammar, with leniencies real clients need and that cannot confuse the
//! origin, because the proxy forwards its own encoding, never the client's bytes:
//! - trailing spaces are ignored (`QUIT ` is QUIT);
//! - one space after `MAIL FROM:` / `RCPT TO:` is accepted (`MAIL FROM: <a@b>`), as Postfix and
//!   many clients send it; more spaces, or a path without angle brackets, are refused;
//! - runs of spaces between parameters are accepted;
//! - EHLO and HELO take a domain or an address literal, `_` admitted in the domain.

use std::fmt;

use super::address::{self, ForwardPath, ReversePath};
use super::params::{self, MailParams, ParamError, RcptParams};
use super::reply::Reply;

/// A command from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` or `EHLO [address-literal]`.
    Ehlo(String),
    /// `HELO domain` (an address literal is accepted too).
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The sender, or `<>`.
        from: ReversePath,
        /// SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The recipient, or `<Postmaster>`.
        to: ForwardPath,
        /// NOTIFY, ORCPT.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop(Option<String>),
    /// `QUIT`.
    Quit,
    /// `STARTTLS` (RFC 3207). Bytes the client sent after this line, before the handshake, are
    /// to be dropped (RFC 3207 §4.2, CVE-2011-0411): the caller owns the buffer, so it must.
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// The SASL mechanism, upper case.
        mechanism: String,
        /// The initial response, base64 or `=`.
        initial: Option<String>,
    },
    /// `HELP [string]`.
    Help(Option<String>),
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `ETRN` (RFC 1985); arguments are not kept: the proxy refuses it.
    Etrn,
    /// `BDAT` (RFC 3030); refused: CHUNKING is not offered.
    Bdat,
    /// `XCLIENT` (Postfix); never taken from a client.
    Xclient,
    /// `XFORWARD` (Postfix); never taken from a client.
    Xforward,
    /// `TURN` (RFC 821); refused.
    Turn,
    /// A verb of letters we do not know, upper case.
    Other(String),
}

/// Why a line is not a valid command. Each kind says which reply the proxy sends: [`reply`].
///
/// [`reply`]: ParseError::reply
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a command line at all: not UTF-8, a control character, no verb. 500 5.5.2.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A known verb with bad arguments. 501 5.5.4.
    #[error("bad arguments: {0}")]
    BadArguments(&'static str),
    /// MAIL with a malformed reverse-path. 501 5.1.7.
    #[error("bad sender address: {0}")]
    BadSender(&'static str),
    /// RCPT with a malformed forward-path. 501 5.1.3.
    #[error("bad recipient address: {0}")]
    BadRecipient(&'static str),
    /// A MAIL or RCPT parameter with bad syntax or value, or given twice. 501 5.5.4.
    #[error("bad parameter: {0}")]
    BadParameter(&'static str),
    /// A MAIL or RCPT parameter we do not know. 555 5.5.4.
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// MAIL with a non-ASCII sender but no SMTPUTF8 parameter. 553 5.6.7.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAsciiAddress,
}

impl ParseError {
    /// The reply the proxy sends for this error.
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Syntax(_) => Reply::syntax_error(),
            ParseError::BadArguments(t) => Reply::bad_arguments(t),
            ParseError::BadSender(t) => Reply::bad_sender(t),
            ParseError::BadRecipient(t) => Reply::bad_recipient(t),
            ParseError::BadParameter(t) => Reply::bad_arguments(t),
            ParseError::UnknownParameter(k) => {
                Reply::unknown_parameter(&format!("unknown parameter {k}"))
            }
            ParseError::NonAsciiAddress => Reply::non_ascii_address(),
        }
    }
}

impl From<ParamError> for ParseError {
    fn from(e: ParamError) -> Self {
        match e {
            ParamError::Bad(t) => ParseError::BadParameter(t),
            ParamError::Unknown(k) => ParseError::UnknownParameter(k),
        }
    }
}

impl Command {
    /// Parses a command line without its CRLF. Verbs are case-insensitive.
    pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("not UTF-8"))?;
        // No grammar rule of RFC 5321 admits a control character, not even HTAB.
        if line.bytes().any(|b| b.is_ascii_control()) {
            return Err(ParseError::Syntax("control character"));
        }
        let line = line.trim_end_matches(' ');
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        if verb.is_empty() || !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ParseError::Syntax("no command verb"));
        }
        let verb = verb.to_ascii_uppercase();
        Ok(match verb.as_str() {
            "EHLO" => Command::Ehlo(client_domain(arg)?),
            "HELO" => Command::Helo(client_domain(arg)?),
            "MAIL" => mail(arg)?,
            "RCPT" => rcpt(arg)?,
            "DATA" => no_argument(arg, Command::Data)?,
            "RSET" => no_argument(arg, Command::Rset)?,
            "QUIT" => no_argument(arg, Command::Quit)?,
            "STARTTLS" => no_argument(arg, Command::StartTls)?,
            "NOOP" => Command::Noop(arg.map(str::to_owned)),
            "HELP" => Command::Help(arg.map(str::to_owned)),
            "VRFY" => Command::Vrfy(needed(arg)?.to_owned()),
            "EXPN" => Command::Expn(needed(arg)?.to_owned()),
            "AUTH" => auth(needed(arg)?)?,
            "ETRN" => Command::Etrn,
            "BDAT" => Command::Bdat,
            "XCLIENT" => Command::Xclient,
            "XFORWARD" => Command::Xforward,
            "TURN" => Command::Turn,
            _ => Command::Other(verb),
        })
    }

    /// Appends the canonical line with its CRLF, as the proxy forwards it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn needed(arg: Option<&str>) -> Result<&str, ParseError> {
    arg.ok_or(ParseError::BadArguments("argument required"))
}

fn no_argument(arg: Option<&str>, c: Command) -> Result<Command, ParseError> {
    match arg {
        None => Ok(c),
        Some(_) => Err(ParseError::BadArguments("no argument allowed")),
    }
}

fn client_domain(arg: Option<&str>) -> Result<String, ParseError> {
    let d = needed(arg)?;
    if !address::is_client_domain(d) {
        return Err(ParseError::BadArguments("bad domain or address literal"));
    }
    Ok(d.to_owned())
}

/// `keyword` (case-insensitive), then the path with at most one space before it.
fn after_keyword<'a>(arg: Option<&'a str>, keyword: &str) -> Option<&'a str> {
    let arg = arg?;
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let path = &arg[keyword.len()..];
    Some(path.strip_prefix(' ').unwrap_or(path))
}

/// RFC 5321 §4.1.1.2: "MAIL FROM:" Reverse-path [SP Mail-parameters].
fn mail(arg: Option<&str>) -> Result<Command, ParseError> {
    let path = after_keyword(arg, "FROM:")
        .ok_or(ParseError::BadArguments("syntax: MAIL FROM:<address>"))?;
    let (mailbox, rest) = address::parse_path(path, true).map_err(ParseError::BadSender)?;
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::BadSender("junk after address"));
    }
    let params = params::parse_mail(rest)?;
    // RFC 6531 §3.4: a non-ASCII address only in a transaction that declared SMTPUTF8.
    if mailbox.as_ref().is_some_and(|m| !m.is_ascii()) && !params.smtputf8 {
        return Err(ParseError::NonAsciiAddress);
    }
    let from = mailbox.map_or(ReversePath::Null, ReversePath::Mailbox);
    Ok(Command::Mail { from, params })
}

/// RFC 5321 §4.1.1.3: "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
/// [SP Rcpt-parameters]. "Postmaster" is case-insensitive.
fn rcpt(arg: Option<&str>) -> Result<Command, ParseError> {
    let path =
        after_keyword(arg, "TO:").ok_or(ParseError::BadArguments("syntax: RCPT TO:<address>"))?;
    let (to, rest) = match path.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("<Postmaster>") => (ForwardPath::Postmaster, &path[12..]),
        _ => {
            let (m, rest) = address::parse_path(path, false).map_err(ParseError::BadRecipient)?;
            let m = m.ok_or(ParseError::BadRecipient("empty address"))?;
            (ForwardPath::Mailbox(m), rest)
        }
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::BadRecipient("junk after address"));
    }
    let params = params::parse_rcpt(rest)?;
    Ok(Command::Rcpt { to, params })
}

/// RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]; sasl-mech = 1*20 of upper-case
/// letters, digits, "-" and "_" (RFC 4422 §3.1), any case accepted; initial-response is base64
/// or "=".
fn auth(arg: &str) -> Result<Command, ParseError> {
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m, Some(i)),
        None => (arg, None),
    };
    let mech_ok = (1..=20).contains(&mechanism.len())
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let base64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    };
    if !mech_ok || !initial.is_none_or(base64) {
        return Err(ParseError::BadArguments(
            "syntax: AUTH mechanism [initial-response]",
        ));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_owned),
    })
}

fn with_arg(f: &mut fmt::Formatter<'_>, verb: &str, arg: &Option<String>) -> fmt::Result {
    match arg {
        Some(a) => write!(f, "{verb} {a}"),
        None => f.write_str(verb),
    }
}

impl fmt::Display for Command {
    /// The canonical line without CRLF: upper-case verb, `MAIL FROM:<a@b> SIZE=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(d) => write!(f, "EHLO {d}"),
            Command::Helo(d) => write!(f, "HELO {d}"),
            Command::Mail { from, params } => write!(f, "MAIL FROM:{from}{params}"),
            Command::Rcpt { to, params } => write!(f, "RCPT TO:{to}{params}"),
            Command::Data => f.write_str("DATA"),
            Command::Rset => f.write_str("RSET"),
            Command::Noop(a) => with_arg(f, "NOOP", a),
            Command::Quit => f.write_str("QUIT"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Auth { mechanism, initial } => {
                with_arg(f, &format!("AUTH {mechanism}"), initial)
            }
            Command::Help(a) => with_arg(f, "HELP", a),
            Command::Vrfy(a) => write!(f, "VRFY {a}"),
            Command::Expn(a) => write!(f, "EXPN {a}"),
            Command::Etrn => f.write_str("ETRN"),
            Command::Bdat => f.write_str("BDAT"),
            Command::Xclient => f.write_str("XCLIENT"),
            Command::Xforward => f.write_str("XFORWARD"),
            Command::Turn => f.write_str("TURN"),
            Command::Other(verb) => f.write_str(verb),
        }
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
