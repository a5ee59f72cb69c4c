//! The address grammar of RFC 5321 §4.1.2 and §4.1.3 with the UTF-8 of RFC 6531 §3.3: paths,
//! mailboxes, domains and address literals. Works on the bytes of a `&str`, so every byte of
//! 0x80 and above is part of a valid UTF-8 character, and slicing at ASCII delimiters is safe.
//!
//! Limits: a domain may have 255 octets (RFC 5321 §4.5.3.1.2). The local part's 64 (§4.5.3.1.1)
//! and the path's 256 (§4.5.3.1.3) are not enforced: VERP and SRS senders exceed them and MTAs
//! accept them; the line bound caps them anyway.

use std::fmt;
use std::net::Ipv6Addr;

/// A mailbox `local-part@domain`, each part as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// A Dot-string, or a Quoted-string with its quotes and escapes.
    pub local: String,
    /// A domain name, or an address literal with its brackets (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
    pub domain: String,
}

impl Mailbox {
    /// Whether the mailbox is all ASCII; if not, the transaction needs SMTPUTF8 (RFC 6531 §3.4).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// MAIL's reverse-path: a mailbox, or `<>` for bounces (RFC 5321 §4.5.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`.
    Null,
    /// `<local@domain>`.
    Mailbox(Mailbox),
}

/// RCPT's forward-path: a mailbox, or the bare `<Postmaster>` (RFC 5321 §4.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain, any case.
    Postmaster,
    /// `<local@domain>`.
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// Reads a Path at the start of `s`: `"<" [ A-d-l ":" ] Mailbox ">"`, or `<>` (None) when
/// `null_ok`. A source route is checked and dropped (RFC 5321 §4.1.1.3, Appendix C). Returns
/// the mailbox and the text after `>`.
pub(super) fn parse_path(s: &str, null_ok: bool) -> Result<(Option<Mailbox>, &str), &'static str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return Err("address must be in angle brackets");
    }
    if b.get(1) == Some(&b'>') {
        return if null_ok {
            Ok((None, &s[2..]))
        } else {
            Err("empty address")
        };
    }
    let start = 1 + source_route_len(&b[1..])?;
    let (mailbox, len) = mailbox(&s[start..])?;
    let end = start + len;
    if b.get(end) != Some(&b'>') {
        return Err("junk after address");
    }
    Ok((Some(mailbox), &s[end + 1..]))
}

/// A-d-l ":" at the start of `b` (`@a.example,@b.example:`), or nothing.
fn source_route_len(b: &[u8]) -> Result<usize, &'static str> {
    if b.first() != Some(&b'@') {
        return Ok(0);
    }
    let mut at = 0;
    loop {
        // At-domain = "@" Domain
        if b.get(at) != Some(&b'@') {
            return Err("bad source route");
        }
        at += 1 + domain_len(&b[at + 1..], false)?;
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b':') => return Ok(at + 1),
            _ => return Err("bad source route"),
        }
    }
}

/// Mailbox = Local-part "@" ( Domain / address-literal ); returns it and its length.
fn mailbox(s: &str) -> Result<(Mailbox, usize), &'static str> {
    let b = s.as_bytes();
    let local = if b.first() == Some(&b'"') {
        quoted_string_len(b)?
    } else {
        dot_string_len(b)?
    };
    if b.get(local) != Some(&b'@') {
        return Err("address without @domain");
    }
    let domain = domain_or_literal_len(&b[local + 1..], false)?;
    let end = local + 1 + domain;
    let mailbox = Mailbox {
        local: s[..local].to_owned(),
        domain: s[local + 1..end].to_owned(),
    };
    Ok((mailbox, end))
}

/// RFC 5322 atext, plus UTF-8 (RFC 6531 §3.3).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Dot-string = Atom *("." Atom): no empty atom, so no leading, trailing or double dot.
fn dot_string_len(b: &[u8]) -> Result<usize, &'static str> {
    let mut at = 0;
    loop {
        let atom = b[at..].iter().take_while(|&&c| is_atext(c)).count();
        if atom == 0 {
            return Err("bad local part");
        }
        at += atom;
        if b.get(at) != Some(&b'.') {
            return Ok(at);
        }
        at += 1;
    }
}

/// Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 §4.1.2, RFC 6531 §3.3).
fn quoted_string_len(b: &[u8]) -> Result<usize, &'static str> {
    let mut at = 1;
    loop {
        match b.get(at) {
            Some(b'"') => return Ok(at + 1),
            // quoted-pairSMTP = %d92 %d32-126
            Some(b'\\') if b.get(at + 1).is_some_and(|&c| (32..=126).contains(&c)) => at += 2,
            Some(&c) if is_qtext(c) => at += 1,
            _ => return Err("bad quoted local part"),
        }
    }
}

/// qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii: printable but `"` and `\`.
fn is_qtext(c: u8) -> bool {
    matches!(c, 32..=33 | 35..=91 | 93..=126) || c >= 0x80
}

/// A Domain or an address-literal at the start of `b`; returns its length.
fn domain_or_literal_len(b: &[u8], underscore: bool) -> Result<usize, &'static str> {
    if b.first() == Some(&b'[') {
        address_literal_len(b)
    } else {
        domain_len(b, underscore)
    }
}

/// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str], or a U-label
/// (RFC 6531 §3.3). `underscore` admits `_` in labels (common in EHLO names of Windows hosts).
fn domain_len(b: &[u8], underscore: bool) -> Result<usize, &'static str> {
    let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c >= 0x80;
    let len = b
        .iter()
        .take_while(|&&c| ok(c) || (underscore && c == b'_'))
        .count();
    if len == 0 || len > 255 {
        return Err("bad domain");
    }
    for label in b[..len].split(|&c| c == b'.') {
        if label.is_empty() || label[0] == b'-' || label[label.len() - 1] == b'-' {
            return Err("bad domain");
        }
    }
    Ok(len)
}

/// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]" (RFC 5321
/// §4.1.3). General-address-literals are refused: no tag other than IPv6 is registered.
fn address_literal_len(b: &[u8]) -> Result<usize, &'static str> {
    let close = b
        .iter()
        .position(|&c| c == b']')
        .ok_or("bad address literal")?;
    let inner = std::str::from_utf8(&b[1..close]).map_err(|_| "bad address literal")?;
    let valid = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => is_ipv4_literal(inner),
    };
    if valid {
        Ok(close + 1)
    } else {
        Err("bad address literal")
    }
}

/// IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT of value 0..=255.
fn is_ipv4_literal(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.bytes().all(|c| c.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// The argument of EHLO or HELO: a whole Domain or address-literal, `_` admitted.
pub(super) fn is_client_domain(s: &str) -> bool {
    domain_or_literal_len(s.as_bytes(), true).is_ok_and(|len| len == s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(local: &str, domain: &str) -> Option<Mailbox> {
        Some(Mailbox {
            local: local.into(),
            domain: domain.into(),
        })
    }

    #[test]
    fn paths_from_rfc_5321() {
        assert_eq!(
            parse_path("<Smith@bar.com>", false),
            Ok((mb("Smith", "bar.com"), ""))
        );
        assert_eq!(parse_path("<> SIZE=1", true), Ok((None, " SIZE=1")));
        // §4.1.1.3, Appendix C: the source route is accepted and ignored.
        assert_eq!(
            parse_path("<@hosta.int,@jkl.org:userc@d.bar.org>", false),
            Ok((mb("userc", "d.bar.org"), ""))
        );
        assert_eq!(
            parse_path("<\"a>b c\\\"\"@[192.0.2.1]>", false),
            Ok((mb("\"a>b c\\\"\"", "[192.0.2.1]"), ""))
        );
        assert_eq!(
            parse_path("<x.y+tag@[IPv6:2001:db8::1]>", false),
            Ok((mb("x.y+tag", "[IPv6:2001:db8::1]"), ""))
        );
        // RFC 6531: UTF-8 in the local part and the domain.
        assert_eq!(
            parse_path("<用户@例子.广告>", false),
            Ok((mb("用户", "例子.广告"), ""))
        );
    }

    #[test]
    fn refuses_malformed_paths() {
        let bad = [
            "a@b.example",
            "<a@b.example",
            "<>",
            "<a>",
            "<a@>",
            "<@b.example>",
            "<.a@b.example>",
            "<a.@b.example>",
            "<a..b@b.example>",
            "<a b@b.example>",
            "<a@b..example>",
            "<a@-b.example>",
            "<a@b-.example>",
            "<a@b.example.>",
            "<a@b_c.example>",
            "<a@[300.1.1.1]>",
            "<a@[1.2.3]>",
            "<a@[IPv6:zz::1]>",
            "<a@[tag:stuff]>",
            "<\"a@b.example>",
            "<\"a\u{1}\"@b.example>",
            "<@a.example:b@c.example",
            "<@a.example,b@c.example>",
            "<a@b.example>x",
        ];
        for s in bad {
            let r = parse_path(s, false);
            assert!(
                r.is_err() || r.is_ok_and(|(_, rest)| !rest.is_empty()),
                "{s}"
            );
        }
        let long = format!("<a@{}.example>", "b".repeat(250));
        assert!(parse_path(&long, false).is_err());
    }

    #[test]
    fn client_domains_for_ehlo() {
        for ok in [
            "mx.example",
            "localhost",
            "my_pc",
            "[192.0.2.1]",
            "[IPv6:::1]",
            "bücher.example",
        ] {
            assert!(is_client_domain(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "mx.example.",
            "192.0.2.1]",
            "[192.0.2.1",
            "-a",
            "a@b",
        ] {
            assert!(!is_client_domain(bad), "{bad}");
        }
    }

    #[test]
    fn display_is_the_canonical_wire_form() {
        let m = mb("a", "b.example").expect("some");
        assert!(m.is_ascii());
        assert_eq!(ReversePath::Mailbox(m).to_string(), "<a@b.example>");
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(ForwardPath::Postmaster.to_string(), "<Postmaster>");
        assert!(!mb("ü", "b.example").expect("some").is_ascii());
    }
}
