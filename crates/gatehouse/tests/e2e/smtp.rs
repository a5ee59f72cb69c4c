//! The SMTP proxy against an origin written in the tests (smtp_fake.rs): greeting, EHLO
//! filtering, every refusal, pipelining, smuggling, STARTTLS and CVE-2011-0411, XCLIENT and
//! PROXY headers, routes by zone and destination, origin failures, the access-log line and the
//! metrics. Postfix as the origin is in smtp_postfix.rs.

use std::net::SocketAddr;
use std::time::Duration;

use super::common::{eventually, proxy};
use super::smtp_fake::{Client, FakeMta, fake_mta};
use super::tls::{Pki, certificate, client_config};
use gatehouse::Gatehouse;

/// A proxy with one smtp listener `mx` in front of `origin`, with extra `[listeners.mx.smtp]`
/// lines, extra listener lines and extra upstream lines.
async fn smtp_proxy(origin: SocketAddr, smtp: &str, listener: &str, upstream: &str) -> Gatehouse {
    proxy(&format!(
        r#"
[listeners.mx]
bind = "127.0.0.1:0"
protocol = "smtp"
upstream = "mail"
{listener}
[listeners.mx.smtp]
hostname = "mx.gatehouse.test"
recipient_domains = ["example.org"]
max_recipients = 3
max_message_size = "64KiB"
{smtp}
[upstreams.mail]
servers = ["{origin}"]
protocol = "smtp"
{upstream}
"#
    ))
    .await
}

fn mx(gh: &Gatehouse) -> SocketAddr {
    gh.listener_addrs("mx")[0]
}

/// Connected, greeted and EHLO'd.
async fn session(gh: &Gatehouse) -> Client<tokio::net::TcpStream> {
    let mut c = Client::connect(mx(gh)).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 220);
    assert!(text[0].starts_with("mx.gatehouse.test"), "{text:?}");
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    c
}

#[tokio::test]
async fn greets_as_itself_and_offers_only_what_it_checks() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = Client::connect(mx(&gh)).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, text[0].as_str()), (220, "mx.gatehouse.test ESMTP"));
    let (code, ext) = c.cmd("EHLO client.example").await;
    assert_eq!(code, 250);
    assert_eq!(ext[0], "mx.gatehouse.test");
    for kw in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ext.iter().any(|l| l == kw), "{kw} missing in {ext:?}");
    }
    for kw in ["XCLIENT", "ETRN", "CHUNKING", "AUTH", "STARTTLS"] {
        assert!(
            !ext.iter().any(|l| l.starts_with(kw)),
            "{kw} offered: {ext:?}"
        );
    }
    assert_eq!(c.cmd("AUTH PLAIN").await.0, 502, "no AUTH in cleartext");
    let (code, text) = c.cmd("HELO client.example").await;
    assert_eq!((code, text[0].as_str()), (250, "mx.gatehouse.test"));
    assert_eq!(c.cmd("QUIT").await.0, 221);
}

#[tokio::test]
async fn refuses_what_it_does_not_pass_and_the_origin_never_sees_it() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = session(&gh).await;
    let cases: &[(&str, u16, &str)] = &[
        ("VRFY root", 502, "5.5.1"),
        ("EXPN staff", 502, "5.5.1"),
        ("XCLIENT ADDR=10.9.9.9", 502, "5.5.1"),
        ("XFORWARD ADDR=10.9.9.9", 502, "5.5.1"),
        ("ETRN example.org", 502, "5.5.1"),
        ("BDAT 10 LAST", 502, "5.5.1"),
        ("TURN", 502, "5.5.1"),
        ("FROB x", 500, "5.5.1"),
        ("RCPT TO:<a@example.org>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("MAIL FROM:<broken", 501, "5.1.7"),
        ("MAIL FROM:<a@b> SIZE=999999999", 552, "5.3.4"),
        ("MAIL FROM:<a@b> FROB=1", 555, "5.5.4"),
    ];
    for (line, code, status) in cases {
        let (got, text) = c.cmd(line).await;
        assert_eq!(got, *code, "{line}: {text:?}");
        assert!(text[0].starts_with(status), "{line}: {text:?}");
    }
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<someone@elsewhere.test>").await;
    assert_eq!((code, &text[0][..5]), (550, "5.7.1"), "relay control");
    for i in 0..3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<u{i}@example.org>")).await.0, 250);
    }
    let (code, text) = c.cmd("RCPT TO:<u9@Example.ORG>").await;
    assert_eq!((code, &text[0][..5]), (452, "4.5.3"), "recipient limit");
    let seen = mta.seen().lines;
    for bad in [
        "VRFY", "EXPN", "XCLIENT", "XFORWARD", "ETRN", "BDAT", "TURN", "FROB",
    ] {
        assert!(
            !seen.iter().any(|l| l.starts_with(bad)),
            "{bad} reached the origin: {seen:?}"
        );
    }
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("elsewhere.test") || l.contains("u9@"))
    );
    assert_eq!(seen.iter().filter(|l| l.starts_with("RCPT")).count(), 3);
}

#[tokio::test]
async fn an_over_long_line_is_refused_and_never_read_as_a_command() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = session(&gh).await;
    // 1,100 bytes of a NOOP whose tail spells a command: the tail must not run.
    let mut line = "NOOP ".to_string();
    line.push_str(&"x".repeat(1100));
    line.push_str("RSET\r\n");
    c.send(line.as_bytes()).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (500, "5.5.2"));
    assert_eq!(
        c.cmd("NOOP").await.0,
        250,
        "the next reply is to the next command"
    );
    assert!(!mta.saw("RSET"));
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = Client::connect(mx(&gh)).await;
    c.reply().await;
    c.send(b"EHLO client.example\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n").await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(c.reply().await.0);
    }
    assert_eq!(got, [250, 250, 250, 550, 250, 354]);
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        .await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text:?}");
    assert!(text[0].contains("queued as Q1"), "{text:?}");
    assert_eq!(c.reply().await.0, 221);
    let seen = mta.seen();
    assert_eq!(seen.messages, [b"Subject: pipelined\r\n\r\nbody".to_vec()]);
}

/// The 2023 SMTP smuggling variants: an end of data the lenient origin accepts but RFC 5321
/// does not, with a second transaction hidden behind it.
const SMUGGLE_ENDS: [&str; 4] = ["\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n"];

fn smuggling_message(end: &str) -> String {
    format!(
        "Subject: hi\r\n\r\nhello{end}MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
    )
}

async fn send_message(c: &mut Client<tokio::net::TcpStream>, body: &str) -> (u16, Vec<String>) {
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(body.as_bytes()).await;
    c.reply().await
}

#[tokio::test]
async fn smuggling_bites_the_lenient_origin_reached_directly() {
    for end in SMUGGLE_ENDS {
        let mta = fake_mta().await;
        let mut c = Client::connect(mta.addr).await;
        c.reply().await;
        c.cmd("EHLO client.example").await;
        send_message(&mut c, &smuggling_message(end)).await;
        // The origin's answers to the smuggled commands, then to the real end.
        for _ in 0..4 {
            c.reply().await;
        }
        let seen = mta.seen();
        assert_eq!(
            seen.messages.len(),
            2,
            "{end:?}: the test origin must be vulnerable"
        );
        assert!(seen.lines.iter().any(|l| l.contains("evil@attacker.test")));
    }
}

#[tokio::test]
async fn smuggling_cannot_pass_the_proxy() {
    for end in SMUGGLE_ENDS {
        let mta = fake_mta().await;
        let gh = smtp_proxy(mta.addr, "", "", "").await;
        let mut c = session(&gh).await;
        let (code, text) = send_message(&mut c, &smuggling_message(end)).await;
        assert_eq!((code, &text[0][..6]), (550, "5.6.11"), "{end:?}: {text:?}");
        // The session goes on: the next transaction is clean and reaches the origin once.
        let (code, text) = send_message(&mut c, "Subject: clean\r\n\r\nclean\r\n.\r\n").await;
        assert_eq!(code, 250, "{text:?}");
        let seen = mta.seen();
        assert_eq!(
            seen.messages,
            [b"Subject: clean\r\n\r\nclean".to_vec()],
            "{end:?}: the origin saw exactly the client's one clean message"
        );
        assert!(
            !seen.lines.iter().any(|l| l.contains("evil@attacker.test")),
            "{end:?}"
        );
        assert_eq!(
            seen.lines.iter().filter(|l| l.starts_with("MAIL")).count(),
            2
        );
    }
}

#[tokio::test]
async fn dot_stuffing_and_nul_and_size() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = session(&gh).await;
    let stuffed = "Subject: dots\r\n\r\n..a line that starts with a dot\r\n.\r\n";
    assert_eq!(send_message(&mut c, stuffed).await.0, 250);
    let (code, text) = send_message(&mut c, "Subject: nul\r\n\r\na\0b\r\n.\r\n").await;
    assert_eq!((code, &text[0][..6]), (550, "5.6.11"));
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(70 * 1024));
    let (code, text) = send_message(&mut c, &big).await;
    assert_eq!((code, &text[0][..5]), (552, "5.3.4"));
    assert_eq!(
        mta.seen().messages,
        [b"Subject: dots\r\n\r\n..a line that starts with a dot".to_vec()],
        "stuffing kept exactly; the refused messages never ended at the origin"
    );
}

#[tokio::test]
async fn xclient_names_the_client_after_each_ehlo() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", r#"client_address = "xclient""#).await;
    let mut c = session(&gh).await;
    assert_eq!(c.cmd("EHLO second.example").await.0, 250);
    let seen = mta.seen().lines;
    let xclients: Vec<&String> = seen.iter().filter(|l| l.starts_with("XCLIENT")).collect();
    assert_eq!(xclients.len(), 2, "{seen:?}");
    assert!(
        xclients[0].starts_with("XCLIENT ADDR=127.0.0.1 PORT="),
        "{xclients:?}"
    );
    assert!(xclients[0].ends_with("PROTO=ESMTP HELO=client.example NAME=[UNAVAILABLE]"));
    assert!(xclients[1].contains("HELO=second.example"));
    // Each XCLIENT is followed by the client's EHLO.
    let i = seen.iter().position(|l| l.starts_with("XCLIENT")).unwrap();
    assert_eq!(seen[i + 1], "EHLO client.example");
}

#[tokio::test]
async fn a_proxy_header_goes_first() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", r#"proxy_protocol = "v1""#).await;
    let c = session(&gh).await;
    let (local, to) = (c.io.local_addr().unwrap(), mx(&gh));
    let expected = format!(
        "PROXY TCP4 127.0.0.1 {} {} {}",
        to.ip(),
        local.port(),
        to.port()
    );
    assert_eq!(mta.seen().proxy, [expected]);
    assert_eq!(
        mta.seen().lines[0],
        "EHLO client.example",
        "then the session, untouched"
    );
}

#[tokio::test]
async fn no_origin_is_421_at_once() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gh = smtp_proxy(closed, "", "", r#"connect_timeout = "500ms""#).await;
    let started = std::time::Instant::now();
    let mut c = Client::connect(mx(&gh)).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (421, "4.3.0"), "{text:?}");
    assert!(c.try_reply().await.is_none(), "closed after the 421");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_origin_that_dies_mid_transaction_is_451() {
    // An origin that greets, answers EHLO and MAIL, then closes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 dying ESMTP\r\n").await;
                let mut buf = [0u8; 1024];
                for reply in [&b"250 dying\r\n"[..], b"250 2.0.0 Ok\r\n"] {
                    if s.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let _ = s.write_all(reply).await;
                }
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let gh = smtp_proxy(addr, "", "", "").await;
    let mut c = session(&gh).await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<b@example.org>").await;
    assert_eq!((code, &text[0][..5]), (451, "4.4.2"), "{text:?}");
}

#[tokio::test]
async fn routes_by_client_zone_and_destination() {
    let (a, b, z) = (fake_mta().await, fake_mta().await, fake_mta().await);
    let gh = proxy(&format!(
        r#"
[listeners.mx]
bind = ["127.0.0.1:0"]
protocol = "smtp"
upstream = "a"
[listeners.mx2]
bind = ["127.0.0.2:0"]
protocol = "smtp"
upstream = "a"
[[routes]]
listeners = ["mx", "mx2"]
destinations = ["127.0.0.2/32"]
upstream = "b"
[[routes]]
listeners = ["mx"]
sources = ["127.0.0.7/32"]
upstream = "z"
[upstreams.a]
servers = ["{}"]
protocol = "smtp"
[upstreams.b]
servers = ["{}"]
protocol = "smtp"
[upstreams.z]
servers = ["{}"]
protocol = "smtp"
"#,
        a.addr, b.addr, z.addr
    ))
    .await;
    let greet = |addr: SocketAddr, from: Option<&'static str>| async move {
        let s = match from {
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
                sock.connect(addr).await.unwrap()
            }
            None => tokio::net::TcpStream::connect(addr).await.unwrap(),
        };
        let mut c = Client::wrap(s);
        assert_eq!(c.reply().await.0, 220);
        assert_eq!(c.cmd("QUIT").await.0, 221);
    };
    greet(gh.listener_addrs("mx")[0], None).await;
    greet(gh.listener_addrs("mx2")[0], None).await;
    greet(gh.listener_addrs("mx")[0], Some("127.0.0.7")).await;
    let count = |m: &FakeMta| m.seen().sessions;
    assert_eq!((count(&a), count(&b), count(&z)), (1, 1, 1));
}

#[tokio::test]
async fn a_client_that_talks_first_gets_554() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, r#"greeting_delay = "300ms""#, "", "").await;
    let mut c = Client::connect(mx(&gh)).await;
    c.send(b"EHLO impatient.example\r\n").await;
    let (code, _) = c.reply().await;
    assert_eq!(code, 554);
    assert_eq!(mta.seen().sessions, 0, "no origin session for it");
    let mut patient = Client::connect(mx(&gh)).await;
    assert_eq!(patient.reply().await.0, 220);
}

#[tokio::test]
async fn one_log_line_per_transaction_and_metrics() {
    let mta = fake_mta().await;
    let dir = std::env::temp_dir().join(format!("gh-smtp-log-{}", super::common::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let gh = proxy(&format!(
        r#"
[global]
access_log = "{}"
[admin]
bind = "127.0.0.1:0"
[listeners.mx]
bind = "127.0.0.1:0"
protocol = "smtp"
upstream = "mail"
[listeners.mx.smtp]
recipient_domains = ["example.org"]
[upstreams.mail]
servers = ["{}"]
protocol = "smtp"
"#,
        log.display(),
        mta.addr
    ))
    .await;
    let mut c = Client::connect(mx(&gh)).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@elsewhere.test>").await.0, 550);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: x\r\n\r\n12345\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    c.cmd("QUIT").await;
    let text = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            if let Ok(t) = std::fs::read_to_string(&log)
                && !t.is_empty()
            {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        String::new()
    })
    .await
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line per transaction and none else: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["protocol"], "smtp");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["helo"], "client.example");
    assert_eq!(v["tls"], false);
    assert_eq!(v["sender"], "<a@sender.test>");
    assert_eq!(v["recipients"], 1);
    assert_eq!(v["refused_recipients"], 1);
    assert_eq!(v["size"], 21);
    assert_eq!(v["status"], 250);
    assert_eq!(v["result"], "delivered");
    assert_eq!(v["queue_id"], "Q1");
    assert_eq!(v["listener"], "mx");
    assert_eq!(v["upstream"], "mail");
    assert_eq!(v["server"], mta.addr.to_string());
    let admin = gh.admin_addr().unwrap();
    let ok = eventually(Duration::from_secs(3), async || {
        let m = super::common::get(admin, "localhost", "/metrics")
            .await
            .text();
        m.contains(r#"gatehouse_smtp_transactions_total{listener="mx",result="delivered"} 1"#)
            && m.contains(r#"gatehouse_smtp_refusals_total{reason="relay"} 1"#)
    })
    .await;
    assert!(ok, "smtp metrics");
}

/// An smtp listener with STARTTLS (`policy`: offer or require) on a certificate of a test CA.
async fn tls_proxy(origin: SocketAddr, policy: &str) -> (Gatehouse, Pki) {
    let pki = Pki::new();
    let leaf = pki.leaf("mx", &["mx.gatehouse.test"], "mx", false, false);
    let gh = smtp_proxy(
        origin,
        &format!("starttls = \"{policy}\""),
        &format!("tls = {{ certificates = [{}] }}", certificate(&leaf)),
        "",
    )
    .await;
    (gh, pki)
}

#[tokio::test]
async fn starttls_drops_what_was_pipelined_before_the_handshake() {
    let mta = fake_mta().await;
    let (gh, pki) = tls_proxy(mta.addr, "offer").await;
    let mut c = Client::connect(mx(&gh)).await;
    c.reply().await;
    let (_, ext) = c.cmd("EHLO client.example").await;
    assert!(ext.iter().any(|l| l == "STARTTLS"), "{ext:?}");
    // CVE-2011-0411: a command injected after STARTTLS in the same packet must not be run.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n")
        .await;
    let (code, _) = c.reply().await;
    assert_eq!(code, 220);
    let tcp = c.into_inner();
    let name = rustls::pki_types::ServerName::try_from("mx.gatehouse.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&pki, &[], None))
        .connect(name, tcp)
        .await
        .expect("the client verifies the chain");
    let mut c = Client::wrap(tls);
    // The session starts over: the first reply over TLS is to this EHLO, not to the MAIL.
    let (code, ext) = c.cmd("EHLO client.example").await;
    assert_eq!(code, 250);
    assert!(
        !ext.iter().any(|l| l == "STARTTLS"),
        "not offered twice: {ext:?}"
    );
    assert!(
        ext.iter().any(|l| l.starts_with("AUTH")),
        "AUTH under TLS: {ext:?}"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await.0, 334);
    assert_eq!(c.cmd("AHVzZXIAc2VjcmV0").await.0, 235);
    assert_eq!(c.cmd("AUTH PLAIN").await.0, 503, "no second AUTH");
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    let seen = mta.seen().lines;
    let i = seen
        .iter()
        .position(|l| l == "AUTH PLAIN")
        .expect("AUTH passed");
    assert_eq!(
        seen[i + 1],
        "AHVzZXIAc2VjcmV0",
        "the response passed as sent"
    );
    assert!(!mta.saw("MAIL FROM:<injected"), "{:?}", mta.seen().lines);
}

#[tokio::test]
async fn starttls_required_before_mail() {
    let mta = fake_mta().await;
    let (gh, _pki) = tls_proxy(mta.addr, "require").await;
    let mut c = session(&gh).await;
    let (code, text) = c.cmd("MAIL FROM:<a@sender.test>").await;
    assert_eq!((code, &text[0][..5]), (530, "5.7.0"));
    assert!(!mta.saw("MAIL"));
}

#[tokio::test]
async fn shutdown_tells_an_idle_session_421() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = session(&gh).await;
    let stopping = tokio::spawn(gh.shutdown(Duration::from_secs(5)));
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (421, "4.3.2"), "{text:?}");
    assert!(c.try_reply().await.is_none(), "closed after the 421");
    let started = std::time::Instant::now();
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no wait for the grace period"
    );
}

#[tokio::test]
async fn twenty_errors_end_the_session() {
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, "", "", "").await;
    let mut c = session(&gh).await;
    for i in 0..19 {
        assert_eq!(c.cmd(&format!("FROB {i}")).await.0, 500);
    }
    assert_eq!(c.cmd("NOOP").await.0, 250, "a good command in between");
    c.send(b"FROB 19\r\n").await;
    assert_eq!(c.reply().await.0, 500);
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (421, "4.7.0"), "{text:?}");
    assert!(c.try_reply().await.is_none(), "closed after the 421");
}

/// The certificate a STARTTLS handshake with the proxy at `addr` is given.
async fn starttls_peer_cert(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("STARTTLS").await.0, 220);
    let name = rustls::pki_types::ServerName::try_from("mx.gatehouse.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(pki, &[], None))
        .connect(name, c.into_inner())
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_reload_gives_new_sessions_the_new_certificate() {
    let mta = fake_mta().await;
    let pki = Pki::new();
    let (a, b) = (
        pki.leaf("mx-a", &["mx.gatehouse.test"], "a", false, false),
        pki.leaf("mx-b", &["mx.gatehouse.test"], "b", false, false),
    );
    let port = super::common::free_port();
    let cfg = |leaf| {
        format!(
            r#"
[listeners.mx]
bind = "127.0.0.1:{port}"
protocol = "smtp"
upstream = "mail"
tls = {{ certificates = [{}] }}
[upstreams.mail]
servers = ["{}"]
protocol = "smtp"
"#,
            certificate(leaf),
            mta.addr
        )
    };
    let gh = proxy(&cfg(&a)).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(starttls_peer_cert(addr, &pki).await, a.der);
    let model = gatehouse_config::parse(&cfg(&b), "reload.toml").unwrap();
    gh.apply(model).await.unwrap();
    assert_eq!(starttls_peer_cert(addr, &pki).await, b.der);
}

#[tokio::test]
async fn a_command_dripped_byte_by_byte_still_times_out() {
    use tokio::io::AsyncWriteExt;
    let mta = fake_mta().await;
    let gh = smtp_proxy(mta.addr, r#"command_timeout = "1s""#, "", "").await;
    let mut c = session(&gh).await;
    let started = std::time::Instant::now();
    // A byte every 300 ms and never a line end: each read is in time, the command is not.
    for _ in 0..10 {
        let _ = c.io.write_all(b"x").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (421, "4.4.2"), "{text:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
