//! The SMTP proxy with real peers (issue 16): Postfix as the origin (postfix.rs starts a
//! throwaway instance per test) and swaks or a raw socket as the client. What these prove that
//! the fake origin of smtp.rs cannot: a message reaches a real MTA's Maildir byte for byte; the
//! real MTA's Received: header names the client (XCLIENT, PROXY v1 and v2), and a Postfix that
//! refuses XCLIENT gets no session; STARTTLS on both sides verifies real chains (swaks' OpenSSL
//! towards gatehouse, Postfix's certificate towards gatehouse's rustls); DSN and SMTPUTF8
//! parameters arrive as Postfix acts on them; the proxy's refusals keep everything away from the
//! MTA, and the MTA's refusals reach the client; swaks' pipelining; an origin that went away;
//! and the access log carries Postfix's queue id.
//!
//! swaks rewrites what `--data` gives it (shared/PEERS.md): LF becomes CRLF, lines starting
//! with "." are dot-stuffed, `%TOKENS%` and a literal backslash-n are replaced, and its own line
//! ending goes after the last line. The messages here have no "%" and no backslash, and their
//! last line has no line ending of its own. Postfix's Maildir stores LF line endings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse::Gatehouse;
use tokio::net::{TcpSocket, TcpStream};

use super::common::proxy;
use super::peer::{program, require};
use super::postfix::{DOMAIN, HOSTNAME, Message, Postfix, PostfixOptions};
use super::smtp_fake::{Client, Reply};
use super::tls::{Pki, certificate, client_config};

/// The name gatehouse greets with.
const MX: &str = "mx.gatehouse.test";
/// Time for Postfix to deliver what it accepted.
const DELIVERY: Duration = Duration::from_secs(5);

/// A proxy with one smtp listener `mx` in front of the smtp upstream `mail` (`origin`), relaying
/// for [`DOMAIN`] only unless `smtp` says otherwise; extra `[listeners.mx.smtp]`, listener,
/// upstream and top-level lines.
async fn gatehouse(
    origin: SocketAddr,
    smtp: &str,
    listener: &str,
    upstream: &str,
    global: &str,
) -> Gatehouse {
    let domains = match smtp.contains("recipient_domains") {
        true => String::new(),
        false => format!("recipient_domains = [\"{DOMAIN}\"]"),
    };
    proxy(&format!(
        r#"
{global}
[listeners.mx]
bind = "127.0.0.1:0"
protocol = "smtp"
upstream = "mail"
{listener}
[listeners.mx.smtp]
hostname = "{MX}"
{domains}
{smtp}
[upstreams.mail]
servers = ["{origin}"]
protocol = "smtp"
connect_timeout = "1s"
{upstream}
"#
    ))
    .await
}

fn mx(gh: &Gatehouse) -> SocketAddr {
    gh.listener_addrs("mx")[0]
}

/// What swaks did: whether it exited 0, and its transcript (stdout, then stderr).
struct Swaked {
    ok: bool,
    transcript: String,
}

/// Runs swaks against `server` (from a@sender.test, HELO client.example) with the message in
/// the file `data` and `extra` arguments.
async fn swaks(server: SocketAddr, to: &str, data: &Path, extra: &[&str]) -> Swaked {
    let run = tokio::process::Command::new(program("swaks"))
        .args(["--server", &server.to_string(), "--to", to])
        .args(["--from", "a@sender.test", "--helo", "client.example"])
        .args(["--timeout", "10", "--suppress-data"])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("swaks within 20 s")
        .expect("swaks runs");
    Swaked {
        ok: out.status.success(),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Writes a message file for swaks in the instance's directory.
fn message_file(pf: &Postfix, name: &str, text: &str) -> PathBuf {
    let path = pf.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A client connected to `addr` from the loopback address `ip`, greeted by gatehouse.
async fn connect_from(ip: &str, addr: SocketAddr) -> Client<TcpStream> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let mut c = Client::wrap(sock.connect(addr).await.unwrap());
    let (code, text) = c.reply().await;
    assert_eq!((code, text[0].as_str()), (220, "mx.gatehouse.test ESMTP"));
    c
}

/// MAIL FROM:<a@sender.test> (with `params`), RCPT TO each of `rcpts` (each must be accepted),
/// DATA, then `data` as it is (its end of data included): the reply to the message.
async fn transaction<S>(c: &mut Client<S>, params: &str, rcpts: &[&str], data: &[u8]) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (code, text) = c.cmd(&format!("MAIL FROM:<a@sender.test>{params}")).await;
    assert_eq!(code, 250, "MAIL: {text:?}");
    for to in rcpts {
        let (code, text) = c.cmd(&format!("RCPT TO:<{to}>")).await;
        assert_eq!(code, 250, "RCPT {to}: {text:?}");
    }
    let (code, text) = c.cmd("DATA").await;
    assert_eq!(code, 354, "DATA: {text:?}");
    c.send(data).await;
    c.reply().await
}

/// The delivered message whose Subject is `subject`.
fn by_subject<'a>(got: &'a [Message], subject: &str) -> &'a Message {
    got.iter()
        .find(|m| m.headers("subject").iter().any(|s| s == subject))
        .unwrap_or_else(|| panic!("no message with Subject {subject:?}"))
}

/// Lines of Postfix's log that its queue manager wrote for a queued message (`ID: from=<...>`):
/// one per message Postfix accepted whole, whatever became of it.
fn queued(pf: &Postfix) -> Vec<String> {
    pf.log()
        .lines()
        .filter(|l| l.contains("postfix/qmgr[") && l.contains(": from=<"))
        .map(str::to_string)
        .collect()
}

/// The queue id of a log line `... postfix/DAEMON[PID]: ID: ...`.
fn queue_id_of(line: &str) -> String {
    line.split(": ").nth(1).unwrap_or_default().to_string()
}

/// Waits until `n` messages are delivered, then a little longer, and asserts there are no more.
async fn delivered_exactly(pf: &Postfix, n: usize) -> Vec<Message> {
    pf.wait_delivered(n, DELIVERY).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = pf.delivered();
    assert_eq!(
        got.len(),
        n,
        "{:#?}",
        got.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    got
}

/// The body of the byte-for-byte test: lines starting with dots (one is a lone dot, the end of
/// data if it were not stuffed), 8-bit UTF-8, tabs and trailing spaces, empty lines, then about
/// 200 KiB of 76-character lines. No final line ending: swaks adds its own.
fn rich_body() -> String {
    let mut body = String::from(
        "plain ASCII first line\n\
         .a line that starts with a dot\n\
         ..two dots\n\
         .\n\
         after a line that is only a dot\n\
         Gr\u{fc}\u{df}e aus K\u{f6}ln, \u{65e5}\u{672c}\u{8a9e}, \u{1f4ec} (8-bit UTF-8)\n\
         \ttab first, trailing spaces   \n\
         \n\
         \n\
         after two empty lines\n",
    );
    let mut i = 0;
    while body.len() < 200 * 1024 {
        // 76 characters a line, the line number first so a lost or repeated line shows.
        body.push_str(&format!("{i:06} {}\n", &"abcdefghij".repeat(7)[..69]));
        i += 1;
    }
    body.push_str(".the last line starts with a dot too");
    body
}

#[tokio::test]
async fn smtp_postfix_delivers_what_swaks_sent_byte_for_byte() {
    if !require("swaks") {
        return;
    }
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", "", "").await;
    let body = rich_body();
    let data = message_file(
        &pf,
        "rich.eml",
        &format!("Subject: byte for byte\nFrom: a@sender.test\nTo: user@{DOMAIN}\n\n{body}"),
    );
    let run = swaks(mx(&gh), &format!("user@{DOMAIN}"), &data, &[]).await;
    assert!(run.ok, "{}", run.transcript);
    assert!(
        run.transcript.contains("<-  250 2.0.0 Ok: queued as "),
        "{}",
        run.transcript
    );

    let got = delivered_exactly(&pf, 1).await;
    let m = by_subject(&got, "byte for byte");
    let expected = format!("{body}\n");
    if m.body() != expected.as_bytes() {
        let (a, b) = (m.body(), expected.as_bytes());
        let at = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "body differs at byte {at} (delivered {} bytes, sent {}): delivered {:?}, sent {:?}",
            a.len(),
            b.len(),
            String::from_utf8_lossy(&a[at.saturating_sub(40)..(at + 40).min(a.len())]),
            String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]),
        );
    }
    assert!(body.len() > 200 * 1024);
    pf.assert_no_warnings();
}

/// swaks 20201014 has no option for MAIL's BODY=8BITMIME (it sends 8-bit text without it, as in
/// the test above): a raw client declares it.
#[tokio::test]
async fn smtp_postfix_delivers_an_8bitmime_body_unchanged() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", "", "").await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    let (code, ext) = c.cmd("EHLO client.example").await;
    assert_eq!(code, 250);
    // Postfix offers 8BITMIME, so gatehouse does.
    assert!(ext.iter().any(|l| l == "8BITMIME"), "{ext:?}");
    let body =
        "Stra\u{df}e, \u{e7}a va, \u{3053}\u{3093}\u{306b}\u{3061}\u{306f}\r\n..stuffed\r\nend";
    let msg = format!("Subject: eight bit\r\n\r\n{body}\r\n.\r\n");
    let (code, text) = transaction(
        &mut c,
        " BODY=8BITMIME",
        &[&format!("user@{DOMAIN}")],
        msg.as_bytes(),
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    let got = delivered_exactly(&pf, 1).await;
    let expected =
        "Stra\u{df}e, \u{e7}a va, \u{3053}\u{3093}\u{306b}\u{3061}\u{306f}\n.stuffed\nend\n";
    assert_eq!(
        String::from_utf8_lossy(by_subject(&got, "eight bit").body()),
        expected
    );
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_received_names_the_client_given_by_xclient() {
    if !require("swaks") {
        return;
    }
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", r#"client_address = "xclient""#, "").await;
    // swaks from 127.0.0.5, with EHLO.
    let data = message_file(&pf, "x.eml", "Subject: xclient ehlo\n\nfrom 127.0.0.5");
    let run = swaks(
        mx(&gh),
        &format!("user@{DOMAIN}"),
        &data,
        &["--local-interface", "127.0.0.5"],
    )
    .await;
    assert!(run.ok, "{}", run.transcript);
    // A raw client from 127.0.0.6, with HELO: XCLIENT PROTO=SMTP.
    let mut c = connect_from("127.0.0.6", mx(&gh)).await;
    assert_eq!(c.cmd("HELO helo.example").await.0, 250);
    let (code, text) = transaction(
        &mut c,
        "",
        &[&format!("user@{DOMAIN}")],
        b"Subject: xclient helo\r\n\r\nfrom 127.0.0.6\r\n.\r\n",
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    let got = delivered_exactly(&pf, 2).await;
    let received = by_subject(&got, "xclient ehlo").received();
    assert!(
        received.starts_with("from client.example (unknown [127.0.0.5])")
            && received.contains(&format!("by {HOSTNAME} (Postfix) with ESMTP id ")),
        "{received}"
    );
    let received = by_subject(&got, "xclient helo").received();
    assert!(
        received.starts_with("from helo.example (unknown [127.0.0.6])")
            && received.contains(&format!("by {HOSTNAME} (Postfix) with SMTP id ")),
        "{received}"
    );
    let log = pf.log();
    for ip in ["127.0.0.5", "127.0.0.6"] {
        assert!(log.contains(&format!(": client=unknown[{ip}]")), "{log}");
    }
    // Postfix never took gatehouse's own address for a client's.
    assert!(!log.contains("client=unknown[127.0.0.1]"), "{log}");
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_received_names_the_client_given_by_a_proxy_header() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    for (version, ip) in [("v2", "127.0.0.5"), ("v1", "127.0.0.6")] {
        let gh = gatehouse(
            pf.proxied,
            "",
            "",
            &format!("proxy_protocol = \"{version}\""),
            "",
        )
        .await;
        let mut c = connect_from(ip, mx(&gh)).await;
        assert_eq!(c.cmd("EHLO client.example").await.0, 250);
        let msg = format!("Subject: proxy {version}\r\n\r\nfrom {ip}\r\n.\r\n");
        let (code, text) =
            transaction(&mut c, "", &[&format!("user@{DOMAIN}")], msg.as_bytes()).await;
        assert_eq!(code, 250, "{version}: {text:?}");
        assert_eq!(c.cmd("QUIT").await.0, 221);
    }
    let got = delivered_exactly(&pf, 2).await;
    for (version, ip) in [("v2", "127.0.0.5"), ("v1", "127.0.0.6")] {
        let received = by_subject(&got, &format!("proxy {version}")).received();
        assert!(
            received.starts_with(&format!("from client.example (unknown [{ip}])")),
            "{version}: {received}"
        );
    }
    assert!(!pf.log().contains("client=unknown[127.0.0.1]"));
    pf.assert_no_warnings();
}

/// A self-signed CA named `cn` that signed nothing gatehouse or Postfix has: its PEM file.
fn foreign_ca(dir: &Path, cn: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    let path = dir.join(format!("{}.pem", cn.replace(' ', "-")));
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

/// gatehouse with STARTTLS offered on a certificate for [`MX`] and 127.0.0.1 from a test CA.
/// `upstream`: extra upstream lines.
async fn starttls_gatehouse(origin: SocketAddr, upstream: &str) -> (Gatehouse, Pki) {
    let pki = Pki::new();
    let leaf = pki.leaf("mx", &[MX, "127.0.0.1"], MX, false, false);
    let gh = gatehouse(
        origin,
        r#"starttls = "offer""#,
        &format!("tls = {{ certificates = [{}] }}", certificate(&leaf)),
        upstream,
        "",
    )
    .await;
    (gh, pki)
}

#[tokio::test]
async fn smtp_postfix_swaks_verifies_gatehouse_starttls_chain() {
    if !require("swaks") {
        return;
    }
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    // With XCLIENT: the client's EHLO after the handshake is announced to Postfix again.
    let (gh, pki) = starttls_gatehouse(pf.smtp, r#"client_address = "xclient""#).await;
    let data = message_file(&pf, "tls.eml", "Subject: swaks over tls\n\nverified");
    let ca = pki.ca_path().display().to_string();
    let tls = [
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &ca,
        "--pipeline",
        "--local-interface",
        "127.0.0.5",
    ];
    let run = swaks(mx(&gh), &format!("user@{DOMAIN}"), &data, &tls).await;
    assert!(run.ok, "{}", run.transcript);
    assert!(
        run.transcript
            .contains("=== TLS started with cipher TLSv1.3"),
        "{}",
        run.transcript
    );
    assert!(
        run.transcript.contains("CN=mx.gatehouse.test"),
        "{}",
        run.transcript
    );
    // Over TLS, gatehouse's EHLO reply no longer offers STARTTLS.
    let after_tls = run.transcript.split("=== TLS started").nth(1).unwrap();
    assert!(!after_tls.contains("250-STARTTLS"), "{}", run.transcript);

    // Another CA: swaks finds no issuer for the chain. A CA of the same name with another key
    // (Pki::new() names every CA alike): the signature does not verify (OpenSSL reports it as
    // "asn1 encoding routines::EVP lib"). Either way no message is sent.
    let data = message_file(&pf, "tls-bad.eml", "Subject: unverified\n\nnever sent");
    let stranger = foreign_ca(pf.dir(), "a stranger CA");
    let namesake = Pki::new();
    for (ca, error) in [
        (stranger, "certificate verify failed"),
        (namesake.ca_path(), "EVP lib"),
    ] {
        let ca = ca.display().to_string();
        let bad = ["--tls", "--tls-verify", "--tls-ca-path", &ca];
        let run = swaks(mx(&gh), &format!("user@{DOMAIN}"), &data, &bad).await;
        let t = &run.transcript;
        assert!(!run.ok, "{t}");
        assert!(
            t.contains("*** TLS startup failed") && t.contains(error),
            "{t}"
        );
        assert!(!t.contains("MAIL FROM"), "{t}");
    }

    let got = delivered_exactly(&pf, 1).await;
    let m = by_subject(&got, "swaks over tls");
    assert_eq!(m.body(), b"verified\n");
    assert!(
        m.received()
            .starts_with("from client.example (unknown [127.0.0.5])"),
        "{}",
        m.received()
    );
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_rustls_client_verifies_gatehouse_starttls_name() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let (gh, pki) = starttls_gatehouse(pf.smtp, "").await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    let (_, ext) = c.cmd("EHLO client.example").await;
    assert!(ext.iter().any(|l| l == "STARTTLS"), "{ext:?}");
    let (code, text) = c.cmd("STARTTLS").await;
    assert_eq!((code, text[0].as_str()), (220, "2.0.0 Ready to start TLS"));
    let name = rustls::pki_types::ServerName::try_from(MX).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&pki, &[], None))
        .connect(name, c.into_inner())
        .await
        .expect("the chain and the name verify");
    let mut c = Client::wrap(tls);
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    let (code, text) = transaction(
        &mut c,
        "",
        &[&format!("user@{DOMAIN}")],
        b"Subject: rustls over tls\r\n\r\nverified by name\r\n.\r\n",
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    // A name the certificate does not carry fails the handshake.
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("STARTTLS").await.0, 220);
    let wrong = rustls::pki_types::ServerName::try_from("other.gatehouse.test").unwrap();
    let err = tokio_rustls::TlsConnector::from(client_config(&pki, &[], None))
        .connect(wrong, c.into_inner())
        .await
        .expect_err("a name not in the certificate");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    let got = delivered_exactly(&pf, 1).await;
    assert_eq!(
        by_subject(&got, "rustls over tls").body(),
        b"verified by name\n"
    );
}

#[tokio::test]
async fn smtp_postfix_starttls_to_the_origin_verified_by_its_ca() {
    let Some(pf) = Postfix::start(PostfixOptions {
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    let origin = pf.tls.as_ref().unwrap();
    let upstream = |ca: &Path, name: &str| {
        format!(
            "tls = {{ starttls = true, ca = \"{}\", server_name = \"{name}\" }}",
            ca.display()
        )
    };
    let gh = gatehouse(
        origin.addr,
        "",
        "",
        &upstream(&origin.ca_file, HOSTNAME),
        "",
    )
    .await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    let (_, ext) = c.cmd("EHLO client.example").await;
    assert!(
        !ext.iter().any(|l| l == "STARTTLS"),
        "the origin's STARTTLS is not the client's: {ext:?}"
    );
    let (code, text) = transaction(
        &mut c,
        "",
        &[&format!("user@{DOMAIN}")],
        b"Subject: to the origin over tls\r\n\r\nencrypted hop\r\n.\r\n",
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    drop(gh);
    // STARTTLS and XCLIENT together: XCLIENT goes over the TLS session.
    let gh = gatehouse(
        origin.addr,
        "",
        "",
        &format!(
            "client_address = \"xclient\"\n{}",
            upstream(&origin.ca_file, HOSTNAME)
        ),
        "",
    )
    .await;
    let mut c = connect_from("127.0.0.5", mx(&gh)).await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    let (code, text) = transaction(
        &mut c,
        "",
        &[&format!("user@{DOMAIN}")],
        b"Subject: xclient over tls\r\n\r\nencrypted and named\r\n.\r\n",
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    drop(gh);

    let got = delivered_exactly(&pf, 2).await;
    for (subject, client) in [
        ("to the origin over tls", "127.0.0.1"),
        ("xclient over tls", "127.0.0.5"),
    ] {
        let received = by_subject(&got, subject).received();
        assert!(
            received.starts_with(&format!("from client.example (unknown [{client}])"))
                && received.contains("(using TLSv1.3")
                && received.contains(&format!("by {HOSTNAME} (Postfix) with ESMTPS id ")),
            "{subject}: {received}"
        );
    }

    // Another CA's certificate, or the right CA and a name the certificate does not carry:
    // no origin, so 421 4.3.0 at connect, and nothing reaches Postfix.
    let other = Pki::new();
    for (ca, name) in [
        (other.ca_path(), HOSTNAME),
        (origin.ca_file.clone(), "wrong.example.test"),
    ] {
        let gh = gatehouse(origin.addr, "", "", &upstream(&ca, name), "").await;
        let started = Instant::now();
        let mut c = Client::connect(mx(&gh)).await;
        let (code, text) = c.reply().await;
        assert_eq!((code, &text[0][..5]), (421, "4.3.0"), "{name}: {text:?}");
        assert!(c.try_reply().await.is_none(), "closed after the 421");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pf.delivered().len(), 2);
    assert_eq!(queued(&pf).len(), 2);
}

#[tokio::test]
async fn smtp_postfix_refusing_xclient_fails_the_session_closed() {
    // Postfix does not trust gatehouse's address with XCLIENT.
    let Some(pf) = Postfix::start(PostfixOptions {
        main: vec![("smtpd_authorized_xclient_hosts", String::new())],
        ..Default::default()
    }) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", r#"client_address = "xclient""#, "").await;
    let mut c = connect_from("127.0.0.5", mx(&gh)).await;
    // Passing the session on would show Postfix every client as 127.0.0.1, which is in its
    // mynetworks: gatehouse refuses it instead.
    let (code, text) = c.cmd("EHLO client.example").await;
    assert_eq!((code, &text[0][..5]), (451, "4.4.2"), "{text:?}");
    let (code, text) = c.cmd("HELO client.example").await;
    assert_eq!((code, &text[0][..5]), (451, "4.4.2"), "{text:?}");
    let (code, text) = c.cmd("MAIL FROM:<a@sender.test>").await;
    assert_eq!(
        (code, &text[0][..5]),
        (503, "5.5.1"),
        "no greeting, no transaction: {text:?}"
    );
    assert_eq!(c.cmd("QUIT").await.0, 221);
    drop(gh);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = pf.log();
    // Two origin sessions (EHLO, HELO), each ended after its refused XCLIENT: the client's
    // greeting never reached Postfix, let alone a MAIL.
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": disconnect from "))
        .collect();
    assert_eq!(sessions.len(), 2, "{log}");
    assert!(
        sessions
            .iter()
            .all(|l| l.ends_with("xclient=0/1 commands=0/1")),
        "{log}"
    );
    assert!(queued(&pf).is_empty());
    assert!(pf.delivered().is_empty());
}

#[tokio::test]
async fn smtp_postfix_never_sees_what_gatehouse_refuses() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(
        pf.smtp,
        "max_recipients = 2\nmax_message_size = \"16KiB\"",
        "",
        "",
        "",
    )
    .await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    let (_, ext) = c.cmd("EHLO client.example").await;
    assert!(ext.iter().any(|l| l == "SIZE 16384"), "{ext:?}");

    // SIZE= above the limit: refused before Postfix sees the MAIL.
    let (code, text) = c.cmd("MAIL FROM:<big@sender.test> SIZE=20000").await;
    assert_eq!((code, &text[0][..5]), (552, "5.3.4"), "{text:?}");
    // A message that turns out too big while it streams: Postfix gets it unfinished.
    let big = format!(
        "Subject: too big\r\n\r\n{}.\r\n",
        format!("{}\r\n", "z".repeat(70)).repeat(300)
    );
    let (code, text) = transaction(&mut c, "", &[&format!("user@{DOMAIN}")], big.as_bytes()).await;
    assert_eq!((code, &text[0][..5]), (552, "5.3.4"), "{text:?}");

    // Relay control and the recipient limit, then a message to the two accepted.
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<someone@elsewhere.test>").await;
    assert_eq!((code, &text[0][..5]), (550, "5.7.1"), "{text:?}");
    for to in ["u0", "u1"] {
        assert_eq!(c.cmd(&format!("RCPT TO:<{to}@{DOMAIN}>")).await.0, 250);
    }
    let (code, text) = c.cmd(&format!("RCPT TO:<u2@{DOMAIN}>")).await;
    assert_eq!((code, &text[0][..5]), (452, "4.5.3"), "{text:?}");
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: two of three\r\n\r\nok\r\n.\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    let got = delivered_exactly(&pf, 2).await;
    let mut to: Vec<String> = got.iter().flat_map(|m| m.headers("delivered-to")).collect();
    to.sort();
    assert_eq!(to, [format!("u0@{DOMAIN}"), format!("u1@{DOMAIN}")]);
    let log = pf.log();
    for never in ["elsewhere.test", "u2@", "big@sender.test", "too big"] {
        assert!(!log.contains(never), "Postfix saw {never:?}:\n{log}");
    }
    // The oversized message: Postfix lost the connection mid-message and queued nothing.
    assert!(log.contains("lost connection after DATA"), "{log}");
    let queued = queued(&pf);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].contains("nrcpt=2"), "{queued:?}");
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_refusals_reach_the_client_as_postfix_made_them() {
    let Some(pf) = Postfix::start(PostfixOptions {
        main: vec![
            // Postfix relays for no one, and refuses one sender at the end of data.
            (
                "smtpd_relay_restrictions",
                "reject_unauth_destination".into(),
            ),
            (
                "smtpd_end_of_data_restrictions",
                "check_sender_access inline:{ refuse@sender.test=REJECT }".into(),
            ),
        ],
        ..Default::default()
    }) else {
        return;
    };
    let log = pf.dir().join("access.log");
    // gatehouse lets other.test through: Postfix has the last word.
    let gh = gatehouse(
        pf.smtp,
        &format!("recipient_domains = [\"{DOMAIN}\", \"other.test\"]"),
        "",
        "",
        &format!("[global]\naccess_log = \"{}\"", log.display()),
    )
    .await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<user@{DOMAIN}>")).await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<x@other.test>").await;
    assert_eq!(
        (code, text[0].as_str()),
        (554, "5.7.1 <x@other.test>: Relay access denied")
    );
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: one of two\r\n\r\nok\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let msg = b"Subject: refused\r\n\r\nno\r\n.\r\n";
    let (code, text) = c.cmd("MAIL FROM:<refuse@sender.test>").await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd(&format!("RCPT TO:<user@{DOMAIN}>")).await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(msg).await;
    let (code, text) = c.reply().await;
    assert_eq!(
        (code, text[0].as_str()),
        (
            554,
            "5.7.1 <refuse@sender.test>: Sender address rejected: Access denied"
        )
    );
    // The session goes on after Postfix's refusal.
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("QUIT").await.0, 221);

    let got = delivered_exactly(&pf, 1).await;
    assert_eq!(got[0].headers("subject"), ["one of two"]);
    let lines = super::common::eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(lines, "two access-log lines: {text}");
    let v: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (
            &v[0]["result"],
            &v[0]["recipients"],
            &v[0]["refused_recipients"]
        ),
        (&"delivered".into(), &1.into(), &1.into()),
        "{text}"
    );
    assert_eq!(
        (&v[1]["result"], &v[1]["status"], &v[1]["queue_id"]),
        (&"refused".into(), &554.into(), &serde_json::Value::Null),
        "{text}"
    );
    pf.assert_no_warnings();
}

/// The 2023 SMTP smuggling end-of-data variants, with a second transaction hidden behind each.
const SMUGGLE_ENDS: [&str; 4] = ["\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n"];

#[tokio::test]
async fn smtp_postfix_receives_nothing_smuggled() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", r#"client_address = "xclient""#, "").await;
    let mut c = connect_from("127.0.0.5", mx(&gh)).await;
    c.cmd("EHLO client.example").await;
    let to = format!("user@{DOMAIN}");
    for end in SMUGGLE_ENDS {
        let msg = format!(
            "Subject: carrier\r\n\r\nhello{end}MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@{DOMAIN}>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        );
        let (code, text) = transaction(&mut c, "", &[&to], msg.as_bytes()).await;
        assert_eq!((code, &text[0][..6]), (550, "5.6.11"), "{end:?}: {text:?}");
    }
    // The session goes on: a clean message after them is delivered, alone.
    let (code, text) =
        transaction(&mut c, "", &[&to], b"Subject: clean\r\n\r\nclean\r\n.\r\n").await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    let got = delivered_exactly(&pf, 1).await;
    let clean = by_subject(&got, "clean");
    assert_eq!(clean.body(), b"clean\n");
    // Each refusal cost the origin connection; the new one was told the client again.
    let received = clean.received();
    assert!(
        received.starts_with("from client.example (unknown [127.0.0.5])"),
        "{received}"
    );
    assert!(!got.iter().any(|m| m.text().contains("smuggled")));
    let log = pf.log();
    assert!(
        !log.contains("attacker.test") && !log.contains("victim@"),
        "{log}"
    );
    assert_eq!(queued(&pf).len(), 1, "{log}");
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_swaks_pipelines_through_gatehouse() {
    if !require("swaks") {
        return;
    }
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", "", "").await;
    let data = message_file(
        &pf,
        "pipe.eml",
        "Subject: pipelined\n\nthree recipients asked",
    );
    let to = format!("p1@{DOMAIN},x@elsewhere.test,p2@{DOMAIN}");
    let run = swaks(mx(&gh), &to, &data, &["--pipeline"]).await;
    let t = &run.transcript;
    assert!(run.ok, "{t}");
    assert!(t.contains("<-  250-PIPELINING"), "{t}");
    // swaks sent MAIL, the RCPTs and DATA in one go before it read a reply; gatehouse answered
    // each in order, its relay refusal in its place among the origin's replies.
    let group = format!(
        " -> MAIL FROM:<a@sender.test>\n -> RCPT TO:<p1@{DOMAIN}>\n -> RCPT TO:<x@elsewhere.test>\n \
         -> RCPT TO:<p2@{DOMAIN}>\n -> DATA\n<-  250 2.1.0 Ok\n<-  250 2.1.5 Ok\n\
         <** 550 5.7.1 Relay access denied\n<-  250 2.1.5 Ok\n<-  354 "
    );
    assert!(t.contains(&group), "{t}");
    assert!(t.contains("<-  250 2.0.0 Ok: queued as "), "{t}");

    let got = delivered_exactly(&pf, 2).await;
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.headers("delivered-to")).collect();
    rcpts.sort();
    assert_eq!(rcpts, [format!("p1@{DOMAIN}"), format!("p2@{DOMAIN}")]);
    assert!(!pf.log().contains("elsewhere.test"));
    pf.assert_no_warnings();
}

#[tokio::test]
async fn smtp_postfix_gone_is_421_at_once_and_451_mid_session() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", "", "").await;
    let to = format!("user@{DOMAIN}");
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    c.cmd("EHLO client.example").await;
    let (code, text) = transaction(&mut c, "", &[&to], b"Subject: before\r\n\r\nup\r\n.\r\n").await;
    assert_eq!(code, 250, "{text:?}");
    pf.wait_delivered(1, DELIVERY).await;

    drop(pf);
    // The session whose origin went away: 451 4.4.2, and the next try finds no origin.
    let (code, text) = c.cmd("MAIL FROM:<a@sender.test>").await;
    assert_eq!(
        (code, text[0].as_str()),
        (451, "4.4.2 Connection to the mail server lost")
    );
    let (code, text) = c.cmd("MAIL FROM:<a@sender.test>").await;
    assert_eq!(
        (code, text[0].as_str()),
        (
            451,
            "4.4.2 Temporary failure: the mail server is not available"
        )
    );
    assert_eq!(c.cmd("QUIT").await.0, 221);
    // A new client: 421 4.3.0 at once, and the connection closes.
    let started = Instant::now();
    let mut c = Client::connect(mx(&gh)).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[0][..5]), (421, "4.3.0"), "{text:?}");
    assert!(c.try_reply().await.is_none(), "closed after the 421");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn smtp_postfix_access_log_carries_postfix_queue_id() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let log = pf.dir().join("access.log");
    let gh = gatehouse(
        pf.smtp,
        "",
        "",
        "",
        &format!("[global]\naccess_log = \"{}\"", log.display()),
    )
    .await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    c.cmd("EHLO client.example").await;
    let message = b"Subject: logged\r\n\r\n12345\r\n";
    let (code, text) = transaction(
        &mut c,
        "",
        &[&format!("user@{DOMAIN}")],
        &[&message[..], b".\r\n"].concat(),
    )
    .await;
    assert_eq!(code, 250, "{text:?}");
    let replied = text[0]
        .split("queued as ")
        .nth(1)
        .unwrap_or_else(|| panic!("{text:?}"))
        .to_string();
    assert_eq!(c.cmd("QUIT").await.0, 221);
    pf.wait_delivered(1, DELIVERY).await;

    let queued = queued(&pf);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].contains("from=<a@sender.test>"), "{queued:?}");
    let postfix_id = queue_id_of(&queued[0]);
    assert_eq!(replied, postfix_id);

    let end = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_string();
        }
        assert!(Instant::now() < end, "no access-log line");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["queue_id"], postfix_id.as_str(), "{line}");
    assert_eq!(v["result"], "delivered", "{line}");
    assert_eq!(v["status"], 250, "{line}");
    assert_eq!(v["sender"], "<a@sender.test>", "{line}");
    assert_eq!(v["recipients"], 1, "{line}");
    assert_eq!(v["helo"], "client.example", "{line}");
    assert_eq!(v["server"], pf.smtp.to_string(), "{line}");
    // RFC 1870's count: the message with its line endings, without the final dot.
    assert_eq!(v["size"], message.len(), "{line}");
    // Postfix's log has the same id for the whole way: smtpd, cleanup, qmgr, virtual.
    let pf_log = pf.log();
    for daemon in ["smtpd", "cleanup", "virtual"] {
        assert!(
            pf_log
                .lines()
                .any(|l| l.contains(&format!("postfix/{daemon}["))
                    && l.contains(&format!(": {postfix_id}: "))),
            "{daemon}: {pf_log}"
        );
    }
}

#[tokio::test]
async fn smtp_postfix_acts_on_dsn_and_smtputf8_parameters_gatehouse_passed() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let gh = gatehouse(pf.smtp, "", "", "", "").await;
    let mut c = connect_from("127.0.0.1", mx(&gh)).await;
    let (_, ext) = c.cmd("EHLO client.example").await;
    for kw in ["DSN", "SMTPUTF8"] {
        assert!(ext.iter().any(|l| l == kw), "{kw}: {ext:?}");
    }
    // DSN (RFC 3461): a success notice to a local sender, with the xtext-encoded ENVID and
    // ORCPT ("+2B" is "+") and only the headers returned. Postfix's report shows what it got.
    let cmds = [
        format!("MAIL FROM:<sender@{DOMAIN}> RET=HDRS ENVID=abc+2Bdef"),
        format!("RCPT TO:<u1@{DOMAIN}> NOTIFY=SUCCESS ORCPT=rfc822;orig+2Bone@{DOMAIN}"),
    ];
    for line in &cmds {
        let (code, text) = c.cmd(line).await;
        assert_eq!(code, 250, "{line}: {text:?}");
    }
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: with dsn\r\n\r\nnotify me\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    // SMTPUTF8 (RFC 6531): UTF-8 addresses, passed as they are.
    let cmds = [
        "MAIL FROM:<\u{fc}ser@sender.test> SMTPUTF8".to_string(),
        format!("RCPT TO:<j\u{f6}rg@{DOMAIN}>"),
    ];
    for line in &cmds {
        let (code, text) = c.cmd(line).await;
        assert_eq!(code, 250, "{line}: {text:?}");
    }
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Subject: utf-8 addresses\r\n\r\nf\u{fc}r J\u{f6}rg\r\n.\r\n".as_bytes())
        .await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.cmd("QUIT").await.0, 221);

    // The message, Postfix's success report and the UTF-8 message.
    let got = delivered_exactly(&pf, 3).await;
    let report = by_subject(&got, "Successful Mail Delivery Report").text();
    for field in [
        "Original-Envelope-Id: abc+def\n",
        &format!("Original-Recipient: rfc822;orig+one@{DOMAIN}\n"),
        &format!("Final-Recipient: rfc822; u1@{DOMAIN}\n"),
        "Action: delivered\n",
        // RET=HDRS: the headers only.
        "Content-Type: text/rfc822-headers\n",
    ] {
        assert!(report.contains(field), "{field:?} in:\n{report}");
    }
    assert!(!report.contains("notify me"), "{report}");
    let utf8 = by_subject(&got, "utf-8 addresses");
    assert_eq!(utf8.headers("return-path"), ["<\u{fc}ser@sender.test>"]);
    assert_eq!(
        utf8.headers("delivered-to"),
        [format!("j\u{f6}rg@{DOMAIN}")]
    );
    assert!(
        utf8.received().contains(" with UTF8SMTP id "),
        "{}",
        utf8.received()
    );
    assert_eq!(utf8.body(), "f\u{fc}r J\u{f6}rg\n".as_bytes());
    pf.assert_no_warnings();
}
