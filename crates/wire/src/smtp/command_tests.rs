//! Tests of command parsing and encoding: RFC 5321's examples, each refusal and its reply, and
//! the canonical form the proxy forwards.

use super::*;
use crate::smtp::{Body, Mailbox, Notify};

fn parse(s: &str) -> Result<Command, ParseError> {
    Command::parse(s.as_bytes())
}

fn mailbox(local: &str, domain: &str) -> Mailbox {
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

/// The canonical line of `s`, or the reply to it.
fn canonical(s: &str) -> String {
    match parse(s) {
        Ok(c) => {
            let mut out = Vec::new();
            c.encode(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
        Err(e) => String::from_utf8_lossy(&e.reply().to_bytes()).into_owned(),
    }
}

#[test]
fn rfc_5321_appendix_d_session() {
    assert_eq!(parse("EHLO bar.com"), Ok(Command::Ehlo("bar.com".into())));
    assert_eq!(
        parse("MAIL FROM:<Smith@bar.com>"),
        Ok(Command::Mail {
            from: ReversePath::Mailbox(mailbox("Smith", "bar.com")),
            params: MailParams::default(),
        })
    );
    assert_eq!(
        parse("RCPT TO:<Jones@foo.com>"),
        Ok(Command::Rcpt {
            to: ForwardPath::Mailbox(mailbox("Jones", "foo.com")),
            params: RcptParams::default(),
        })
    );
    assert_eq!(parse("DATA"), Ok(Command::Data));
    assert_eq!(parse("QUIT"), Ok(Command::Quit));
}

#[test]
fn verbs_are_case_insensitive_and_encoded_upper_case() {
    assert_eq!(canonical("ehlo Mx.Example"), "EHLO Mx.Example\r\n");
    assert_eq!(
        canonical("mail from:<a@b.example>"),
        "MAIL FROM:<a@b.example>\r\n"
    );
    assert_eq!(
        canonical("rcpt to:<postmaster>"),
        "RCPT TO:<Postmaster>\r\n"
    );
    assert_eq!(canonical("sTaRtTlS"), "STARTTLS\r\n");
    assert_eq!(canonical("rset"), "RSET\r\n");
    assert_eq!(canonical("noop hello there"), "NOOP hello there\r\n");
    assert_eq!(canonical("help"), "HELP\r\n");
    assert_eq!(canonical("vrfy Smith"), "VRFY Smith\r\n");
    assert_eq!(canonical("expn staff"), "EXPN staff\r\n");
}

#[test]
fn mail_and_rcpt_are_re_encoded_canonically() {
    assert_eq!(
        canonical("MAIL FROM: <a@b.example>  body=8bitmime   size=123"),
        "MAIL FROM:<a@b.example> SIZE=123 BODY=8BITMIME\r\n"
    );
    assert_eq!(
        canonical("MAIL FROM:<@relay.example:a@b.example>"),
        "MAIL FROM:<a@b.example>\r\n"
    );
    assert_eq!(canonical("MAIL FROM:<> "), "MAIL FROM:<>\r\n");
    assert_eq!(
        canonical("RCPT TO:<c@d.example> orcpt=rfc822;c@d.example notify=delay,failure"),
        "RCPT TO:<c@d.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;c@d.example\r\n"
    );
    assert_eq!(
        canonical("RCPT TO:<Postmaster@D.example>"),
        "RCPT TO:<Postmaster@D.example>\r\n"
    );
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let c = parse("MAIL FROM:<用户@例子.广告> SMTPUTF8");
    assert!(matches!(c, Ok(Command::Mail { ref params, .. }) if params.smtputf8));
    assert_eq!(
        parse("MAIL FROM:<用户@例子.广告>"),
        Err(ParseError::NonAsciiAddress)
    );
    assert_eq!(
        canonical("MAIL FROM:<ü@b.example>"),
        "553 5.6.7 non-ASCII address without SMTPUTF8\r\n"
    );
    // RCPT cannot know MAIL's parameters; the session checks it.
    assert!(parse("RCPT TO:<ü@b.example>").is_ok());
}

#[test]
fn each_refusal_has_its_reply() {
    let cases = [
        ("", "500 5.5.2"),
        ("   ", "500 5.5.2"),
        (" QUIT", "500 5.5.2"),
        ("QU1T", "500 5.5.2"),
        ("QUIT\t", "500 5.5.2"),
        ("EHLO", "501 5.5.4"),
        ("EHLO a b", "501 5.5.4"),
        ("EHLO  a", "501 5.5.4"),
        ("DATA x", "501 5.5.4"),
        ("STARTTLS now", "501 5.5.4"),
        ("VRFY", "501 5.5.4"),
        ("MAIL", "501 5.5.4"),
        ("MAIL TO:<a@b.example>", "501 5.5.4"),
        ("MAIL FROM:a@b.example", "501 5.1.7"),
        ("MAIL FROM:  <a@b.example>", "501 5.1.7"),
        ("MAIL FROM:<a@b.example", "501 5.1.7"),
        ("MAIL FROM:<a@b.example>SIZE=1", "501 5.1.7"),
        ("MAIL FROM:<a@b..example>", "501 5.1.7"),
        ("MAIL FROM:<a@b.example> SIZE=x", "501 5.5.4"),
        ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", "501 5.5.4"),
        ("MAIL FROM:<a@b.example> XVERP", "555 5.5.4"),
        ("RCPT TO:<>", "501 5.1.3"),
        ("RCPT TO:c@d.example", "501 5.1.3"),
        ("RCPT TO:<Postmaster>x", "501 5.1.3"),
        ("RCPT TO:<c@d.example> NOTIFY=SOMETIMES", "501 5.5.4"),
        ("RCPT TO:<c@d.example> SIZE=1", "555 5.5.4"),
        ("AUTH", "501 5.5.4"),
        ("AUTH PLAIN a b", "501 5.5.4"),
        ("AUTH PLAIN a!b", "501 5.5.4"),
        ("AUTH THIS-MECHANISM-IS-TOO-LONG", "501 5.5.4"),
    ];
    for (line, reply) in cases {
        assert!(
            canonical(line).starts_with(reply),
            "{line:?}: {}",
            canonical(line)
        );
    }
    assert!(Command::parse(b"NOOP \xff").is_err());
}

#[test]
fn auth_with_and_without_initial_response() {
    assert_eq!(
        parse("auth plain dGVzdAB0ZXN0ADEyMzQ="),
        Ok(Command::Auth {
            mechanism: "PLAIN".into(),
            initial: Some("dGVzdAB0ZXN0ADEyMzQ=".into())
        })
    );
    assert_eq!(canonical("AUTH LOGIN"), "AUTH LOGIN\r\n");
    assert_eq!(canonical("AUTH EXTERNAL ="), "AUTH EXTERNAL =\r\n");
    assert_eq!(canonical("AUTH CRAM-MD5"), "AUTH CRAM-MD5\r\n");
}

#[test]
fn refused_and_unknown_verbs() {
    assert_eq!(parse("ETRN example.com"), Ok(Command::Etrn));
    assert_eq!(parse("BDAT 1000 LAST"), Ok(Command::Bdat));
    assert_eq!(parse("XCLIENT ADDR=1.2.3.4"), Ok(Command::Xclient));
    assert_eq!(parse("XFORWARD NAME=x"), Ok(Command::Xforward));
    assert_eq!(parse("turn"), Ok(Command::Turn));
    assert_eq!(parse("get / HTTP/1.1"), Ok(Command::Other("GET".into())));
    assert_eq!(canonical("xyzzy"), "XYZZY\r\n");
}

#[test]
fn helo_and_ehlo_take_what_clients_send() {
    for arg in [
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "DESKTOP_1A2B",
        "bücher.example",
    ] {
        assert_eq!(parse(&format!("EHLO {arg}")), Ok(Command::Ehlo(arg.into())));
        assert_eq!(parse(&format!("HELO {arg}")), Ok(Command::Helo(arg.into())));
    }
}

#[test]
fn parameters_reach_the_command() {
    let c = parse("MAIL FROM:<a@b.example> BODY=7BIT RET=FULL ENVID=x+2By").expect("valid");
    let Command::Mail { params, .. } = c else {
        panic!("not MAIL");
    };
    assert_eq!(params.body, Some(Body::SevenBit));
    assert_eq!(params.envid.as_deref(), Some("x+2By"));
    let c = parse("RCPT TO:<c@d.example> NOTIFY=NEVER").expect("valid");
    let Command::Rcpt { params, .. } = c else {
        panic!("not RCPT");
    };
    assert_eq!(params.notify, Some(Notify::default()));
}

#[test]
fn every_accepted_line_encodes_to_a_line_that_parses_the_same() {
    let lines = [
        "EHLO [IPv6:2001:db8::1]",
        "helo my_pc",
        "MAIL FROM:<@a.example,@b.example:\"x y\"@[192.0.2.1]> size=99999999999999999999 AUTH=<>",
        "MAIL FROM:<用户@例子.广告> SMTPUTF8 BODY=8BITMIME RET=FULL ENVID=a+2Bb",
        "RCPT TO:<postMASTER> NOTIFY=never",
        "RCPT TO:<c@d.example> ORCPT=utf-8;ü@d.example",
        "NOOP  two  spaces",
        "VRFY \"quoted\"",
        "AUTH plain =",
        "GET / HTTP/1.1",
        "bdat 10 LAST",
    ];
    for line in lines {
        let c = parse(line).expect(line);
        let mut wire = Vec::new();
        c.encode(&mut wire);
        let again = wire.strip_suffix(b"\r\n").expect("CRLF");
        assert_eq!(Command::parse(again), Ok(c), "{line}");
    }
}
