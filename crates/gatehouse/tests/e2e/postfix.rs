//! A throwaway Postfix instance as the origin mail server of end-to-end tests (`Postfix::start`),
//! and tests that prove it works by talking to Postfix directly, without gatehouse.
//!
//! # The origin behind gatehouse: what Postfix needs
//!
//! Postfix must learn the real client's address from gatehouse, in one of two ways.
//!
//! **XCLIENT**, on an ordinary smtpd. In main.cf, name gatehouse's addresses (and nothing else:
//! an authorized client can claim to be anyone):
//!
//! ```text
//! smtpd_authorized_xclient_hosts = 192.0.2.10, [2001:db8::10]
//! ```
//!
//! Postfix then lists `XCLIENT` in its EHLO reply to those hosts. It answers the XCLIENT command
//! with a new 220 greeting, so the proxy must send EHLO again. From then on the Received:
//! header, the log, `mynetworks` and every restriction use the XCLIENT address, so gatehouse
//! itself is no longer "in mynetworks" for that session.
//!
//! **PROXY protocol**, on an smtpd of its own that only gatehouse reaches. In master.cf:
//!
//! ```text
//! 192.0.2.20:10025 inet n - y - - smtpd
//!     -o smtpd_upstream_proxy_protocol=haproxy
//! ```
//!
//! Version 1 and version 2 headers are both accepted; a connection without a header is dropped
//! after `smtpd_upstream_proxy_timeout` (5 s by default). Health checks of that port must send
//! a header too: a v2 LOCAL header is accepted (Postfix then sees the checker's own address),
//! while a bare connect logs "warning: haproxy read: EOF" and a v1 `PROXY UNKNOWN` line gets
//! "421 Server local error" and a warning (Postfix 3.7.11). In front of postscreen the parameter
//! is `postscreen_upstream_proxy_protocol = haproxy` instead.
//!
//! For STARTTLS between gatehouse and the origin, that smtpd needs a certificate
//! (`smtpd_tls_chain_files = key.pem, chain.pem`) and `smtpd_tls_security_level = may`;
//! `smtpd_tls_received_header = yes` makes the Received: header say that TLS was used.
//!
//! Bare-newline protection (Postfix 3.7.11 on this machine): `smtpd_forbid_bare_newline = no`
//! by default and `smtpd_forbid_bare_newline_exclusions = $mynetworks`; `yes` normalises and
//! only `reject` refuses. Behind gatehouse, the exclusions are matched against the address
//! XCLIENT or PROXY gave, not gatehouse's (a test below shows it).
//!
//! # How the fixture runs Postfix
//!
//! Each instance lives in its own temporary directory: `etc/` (main.cf, master.cf), `queue/`
//! (queue_directory, created here and owned by root), `data/` (data_directory, created by
//! `postfix start` itself: made by root beforehand, master fails on master.lock), `mail/` (the
//! virtual delivery agent's Maildir base, owned by 65534) and `maillog`. Every smtpd listens on
//! a free loopback port. All commands are `postfix -c DIR/etc ...`, which sets `MAIL_CONFIG`
//! for master and every daemon it starts; no `multi_instance_*` setting is involved.
//!
//! Traps met on this machine, besides those in shared/PEERS.md:
//! - Postfix waits for a main.cf modified within the last two seconds to "cool down"
//!   (300 ms naps, about 2 s a start): the fixture dates the files it writes 10 s back.
//! - `postfix start` checks that everything under the config directory is owned by root and
//!   warns otherwise, so the queue, data and Maildir directories sit beside `etc/`, not in it.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::peer::require;

mod process;
mod smtp_client;

use process::{instance_pids, kill_instance, master_pid, postfix_command};
pub use smtp_client::Smtp;

/// The domain whose mail the instance delivers to its Maildir.
pub const DOMAIN: &str = "example.test";
/// The instance's `myhostname`, in its banner, its Received: headers and its certificate.
pub const HOSTNAME: &str = "origin.example.test";
/// uid and gid of the delivered files (nobody/nogroup on Debian).
const MAILDIR_OWNER: u32 = 65534;

/// What to start besides the two plain listeners.
#[derive(Debug, Clone, Default)]
pub struct PostfixOptions {
    /// Also start an smtpd offering STARTTLS with a certificate for [`HOSTNAME`].
    pub tls: bool,
    /// main.cf parameters that replace the fixture's value of the same name, or are added.
    pub main: Vec<(&'static str, String)>,
}

/// The STARTTLS listener and how to trust it.
#[derive(Debug)]
pub struct PostfixTls {
    pub addr: SocketAddr,
    /// PEM file of the test CA that signed the certificate for [`HOSTNAME`] and 127.0.0.1.
    pub ca_file: PathBuf,
}

/// A running Postfix instance; dropping it stops the instance and removes its directory.
#[derive(Debug)]
pub struct Postfix {
    /// Plain smtpd; XCLIENT allowed from 127.0.0.0/8.
    pub smtp: SocketAddr,
    /// smtpd that expects a PROXY header (v1 or v2) first.
    pub proxied: SocketAddr,
    /// smtpd offering STARTTLS, when asked for.
    pub tls: Option<PostfixTls>,
    dir: PathBuf,
}

/// One delivered message, as the Maildir holds it (LF line endings).
#[derive(Debug, Clone)]
pub struct Message {
    pub path: PathBuf,
    pub raw: Vec<u8>,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The bytes after the blank line that ends the header section.
    pub fn body(&self) -> &[u8] {
        match self.raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => &self.raw[i + 2..],
            None => &[],
        }
    }

    /// Values of the header fields named `name`, top first, unfolded.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let head = &self.raw[..self.raw.len() - self.body().len()];
        let text = String::from_utf8_lossy(head)
            .replace("\n\t", " ")
            .replace("\n ", " ");
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// The Received: header Postfix added (the top one).
    pub fn received(&self) -> String {
        self.headers("received")
            .into_iter()
            .next()
            .unwrap_or_default()
    }
}

impl Postfix {
    /// Starts an instance; `None` (with a loud notice) when Postfix is not installed and CI is
    /// not "true". Panics, with the log, when an installed Postfix fails to start.
    pub fn start(opts: PostfixOptions) -> Option<Postfix> {
        if !require("postfix") {
            return None;
        }
        let dir = fresh_dir();
        let etc = dir.join("etc");
        for d in [&dir, &etc, &dir.join("queue"), &dir.join("mail")] {
            fs::create_dir(d).unwrap();
            // The delivery agent runs as 65534: every directory on the path must let it through.
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::chown(dir.join("mail"), Some(MAILDIR_OWNER), Some(MAILDIR_OWNER))
            .unwrap();
        let pki = opts.tls.then(|| TestPki::write(&dir.join("tls")));
        let mut failure = String::new();
        // A free port can be taken by someone else before master binds it: try fresh ones.
        for _ in 0..3 {
            let ports = free_ports(if opts.tls { 3 } else { 2 });
            write_config(&dir, &ports, &opts, pki.as_ref());
            match postfix_command(&etc, "start", Duration::from_secs(20)) {
                Ok(()) => {
                    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
                    return Some(Postfix {
                        smtp: addr(ports[0]),
                        proxied: addr(ports[1]),
                        tls: pki.map(|p| PostfixTls {
                            addr: addr(ports[2]),
                            ca_file: p.ca_file,
                        }),
                        dir,
                    });
                }
                Err(e) => {
                    kill_instance(&etc);
                    let log = read_log(&dir);
                    let port_taken = log.contains("Address already in use");
                    failure = format!("{e}\n--- maillog ---\n{log}");
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("postfix did not start: {failure}");
    }

    /// The instance's log file.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// Messages delivered so far to the test domain's Maildir, oldest first.
    pub fn delivered(&self) -> Vec<Message> {
        let new = self.dir.join("mail").join(DOMAIN).join("new");
        let Ok(entries) = fs::read_dir(&new) else {
            return Vec::new();
        };
        let mut found: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        // The delivery agent renames each finished file into new/: what is there is whole.
        found.sort();
        found
            .into_iter()
            .filter_map(|(_, path)| {
                Some(Message {
                    raw: fs::read(&path).ok()?,
                    path,
                })
            })
            .collect()
    }

    /// Waits until at least `n` messages are delivered; panics with the log after `timeout`.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > end {
                panic!(
                    "{} of {n} messages delivered within {timeout:?}; maillog:\n{}",
                    got.len(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The master process's pid, from queue/pid/master.pid.
    pub fn master_pid(&self) -> Option<u32> {
        master_pid(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Panics with the warning lines of the log, if any: the fixture's configuration must log
    /// none (a flood of them can hang the instance, see the module docs). cleanup's clock
    /// warnings are the machine's, not the configuration's: on a loaded machine a queue file's
    /// time stamp can be a second ahead of the clock cleanup reads ("file system clock is 1
    /// seconds ahead of local clock"), once per message at most.
    pub fn assert_no_warnings(&self) {
        let log = self.log();
        let machine = |l: &str| {
            l.contains("warning: file system clock is")
                || l.contains("warning: resetting file time stamps")
        };
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("warning:") && !machine(l))
            .collect();
        assert!(
            warnings.is_empty(),
            "postfix warned:\n{}",
            warnings.join("\n")
        );
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postfix maillog ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let etc = self.dir.join("etc");
        // Master sends SIGTERM to its process group; a hung instance is ended by pid below.
        if let Err(e) = postfix_command(&etc, "stop", Duration::from_secs(5)) {
            eprintln!("postfix stop ({}): {e}", self.dir.display());
        }
        let end = Instant::now() + Duration::from_secs(1);
        while !instance_pids(&etc).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_instance(&etc);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A new empty directory path under the system temp dir, unique across threads and runs.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-postfix-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    // master.cf -o values and list parameters split on white space.
    assert!(
        !dir.to_string_lossy().contains(char::is_whitespace),
        "temp dir has white space: {}",
        dir.display()
    );
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn write_config(dir: &Path, ports: &[u16], opts: &PostfixOptions, pki: Option<&TestPki>) {
    let d = dir.display();
    let mut main: Vec<(&str, String)> = vec![
        ("compatibility_level", "3.6".into()),
        ("queue_directory", format!("{d}/queue")),
        ("data_directory", format!("{d}/data")),
        ("maillog_file", format!("{d}/maillog")),
        ("maillog_file_prefixes", d.to_string()),
        ("myhostname", HOSTNAME.into()),
        ("mydomain", DOMAIN.into()),
        ("myorigin", "$myhostname".into()),
        ("mydestination", String::new()),
        ("inet_interfaces", "127.0.0.1".into()),
        ("inet_protocols", "ipv4".into()),
        ("mynetworks", "127.0.0.0/8".into()),
        ("alias_maps", String::new()),
        ("alias_database", String::new()),
        ("biff", "no".into()),
        (
            "smtpd_banner",
            "$myhostname ESMTP Postfix (gatehouse test origin)".into(),
        ),
        ("smtpd_peername_lookup", "no".into()),
        ("smtpd_authorized_xclient_hosts", "127.0.0.0/8".into()),
        (
            "smtpd_relay_restrictions",
            "permit_mynetworks, reject_unauth_destination".into(),
        ),
        ("virtual_mailbox_domains", DOMAIN.into()),
        ("virtual_mailbox_base", format!("{d}/mail")),
        // Every address of the domain goes to one Maildir (the trailing slash).
        ("virtual_mailbox_maps", format!("static:{DOMAIN}/")),
        ("virtual_uid_maps", format!("static:{MAILDIR_OWNER}")),
        ("virtual_gid_maps", format!("static:{MAILDIR_OWNER}")),
        ("message_size_limit", "52428800".into()),
        ("mailbox_size_limit", "0".into()),
        ("virtual_mailbox_limit", "0".into()),
    ];
    for (name, value) in &opts.main {
        match main.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => main.push((name, value.clone())),
        }
    }
    let mut text = String::from("# Written by gatehouse's e2e Postfix fixture.\n");
    for (name, value) in &main {
        text.push_str(&format!("{name} = {value}\n"));
    }
    write_cool(&dir.join("etc/main.cf"), &text);

    let mut master = format!(
        "# Written by gatehouse's e2e Postfix fixture. No chroot.\n\
         127.0.0.1:{} inet n - n - - smtpd\n\
         127.0.0.1:{} inet n - n - - smtpd\n  -o smtpd_upstream_proxy_protocol=haproxy\n",
        ports[0], ports[1]
    );
    if let Some(p) = pki {
        master.push_str(&format!(
            "127.0.0.1:{} inet n - n - - smtpd\n  -o smtpd_tls_security_level=may\n  \
             -o smtpd_tls_chain_files={},{}\n  -o smtpd_tls_received_header=yes\n",
            ports[2],
            p.key_file.display(),
            p.cert_file.display()
        ));
    }
    master.push_str(MASTER_SERVICES);
    write_cool(&dir.join("etc/master.cf"), &master);
}

/// The internal services, as in Debian's master.cf but without chroot and without the local,
/// pickup and pipe transports (nothing is delivered locally or submitted with sendmail).
const MASTER_SERVICES: &str = "\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Writes a config file dated 10 s back: Postfix naps until a main.cf younger than 2 s has
/// "cooled down", which would add about 2 s to every start.
fn write_cool(path: &Path, text: &str) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("maillog")).unwrap_or_default()
}

/// A test CA and a certificate for HOSTNAME and 127.0.0.1, as files Postfix reads.
struct TestPki {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TestPki {
    fn write(dir: &Path) -> TestPki {
        fs::create_dir(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "gatehouse postfix test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec![HOSTNAME.to_string(), "127.0.0.1".into()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, HOSTNAME);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let pki = TestPki {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("origin.pem"),
            key_file: dir.join("origin.key"),
        };
        fs::write(&pki.ca_file, ca_cert.pem()).unwrap();
        fs::write(&pki.cert_file, cert.pem()).unwrap();
        // smtpd reads its key as root, before it drops privileges.
        fs::write(&pki.key_file, key.serialize_pem()).unwrap();
        fs::set_permissions(&pki.key_file, fs::Permissions::from_mode(0o600)).unwrap();
        pki
    }
}

/// The delivered message whose Subject is `subject`.
fn by_subject<'a>(got: &'a [Message], subject: &str) -> &'a Message {
    got.iter()
        .find(|m| m.headers("subject").iter().any(|s| s == subject))
        .unwrap_or_else(|| {
            let paths: Vec<_> = got.iter().map(|m| &m.path).collect();
            panic!("no message with Subject {subject:?} in {paths:?}")
        })
}

#[tokio::test]
async fn postfix_fixture_delivers_what_swaks_sends() {
    if !require("swaks") {
        return;
    }
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let data = pf.dir().join("swaks-data.txt");
    fs::write(
        &data,
        "Subject: fixture check\n\nhello from swaks, token 4711\n",
    )
    .unwrap();
    let out = tokio::process::Command::new("swaks")
        .args(["--server", &pf.smtp.to_string()])
        .args([
            "--from",
            "sender@example.org",
            "--to",
            &format!("user@{DOMAIN}"),
        ])
        .args(["--helo", "client.example", "--data"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {transcript}");
    assert!(
        transcript.contains(&format!("220 {HOSTNAME} ESMTP")),
        "{transcript}"
    );

    let got = pf.wait_delivered(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(
        m.body().starts_with(b"hello from swaks, token 4711\n"),
        "{}",
        m.text()
    );
    assert_eq!(m.headers("subject"), ["fixture check"]);
    assert_eq!(m.headers("delivered-to"), [format!("user@{DOMAIN}")]);
    let received = m.received();
    assert!(
        received.starts_with("from client.example (unknown [127.0.0.1])")
            && received.contains(&format!("by {HOSTNAME} (Postfix) with ESMTP")),
        "{received}"
    );
    pf.assert_no_warnings();
}

#[tokio::test]
async fn postfix_fixture_takes_the_client_address_from_xclient() {
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let mut c = Smtp::new(TcpStream::connect(pf.smtp).await.unwrap());
    let (code, banner) = c.reply().await;
    assert_eq!((code, banner.contains(HOSTNAME)), (220, true), "{banner}");
    let ehlo = c.cmd("EHLO gatehouse.test", 250).await;
    assert!(
        ehlo.contains("250-XCLIENT ") || ehlo.contains("250 XCLIENT "),
        "{ehlo}"
    );
    // Postfix answers XCLIENT with a new greeting: the client starts over with EHLO.
    let greeting = c
        .cmd(
            "XCLIENT ADDR=192.0.2.7 NAME=client.example PROTO=ESMTP HELO=client.example",
            220,
        )
        .await;
    assert!(greeting.contains(HOSTNAME), "{greeting}");
    c.cmd("EHLO client.example", 250).await;
    c.send_mail("via xclient", "relayed for 192.0.2.7", 250)
        .await;
    c.cmd("QUIT", 221).await;

    let got = pf.wait_delivered(1, Duration::from_secs(5)).await;
    let received = by_subject(&got, "via xclient").received();
    assert!(
        received.starts_with("from client.example (client.example [192.0.2.7])"),
        "{received}"
    );
    assert!(pf.log().contains("client=client.example[192.0.2.7]"));
    pf.assert_no_warnings();
}

#[tokio::test]
async fn postfix_fixture_takes_the_client_address_from_a_proxy_header() {
    use gatehouse_wire::proxy_protocol::{encode_local, encode_v1, encode_v2};
    let Some(pf) = Postfix::start(PostfixOptions::default()) else {
        return;
    };
    let origin = pf.proxied;
    let headers = [
        (
            "v1",
            "198.51.100.9",
            encode_v1("198.51.100.9:5555".parse().unwrap(), origin),
        ),
        (
            "v2",
            "198.51.100.10",
            encode_v2("198.51.100.10:5556".parse().unwrap(), origin, &[]),
        ),
    ];
    for (version, _, header) in &headers {
        let mut s = TcpStream::connect(pf.proxied).await.unwrap();
        s.write_all(header).await.unwrap();
        let mut c = Smtp::new(s);
        assert_eq!(c.reply().await.0, 220, "{version}");
        c.cmd("EHLO client.example", 250).await;
        c.send_mail(&format!("proxy {version}"), "hello", 250).await;
        c.cmd("QUIT", 221).await;
    }
    // A health check's header: v2 LOCAL is accepted (unlike v1 UNKNOWN, see the module docs).
    let mut s = TcpStream::connect(pf.proxied).await.unwrap();
    s.write_all(&encode_local(true)).await.unwrap();
    let mut c = Smtp::new(s);
    assert_eq!(c.reply().await.0, 220, "after a v2 LOCAL header");
    c.cmd("QUIT", 221).await;

    let got = pf.wait_delivered(2, Duration::from_secs(5)).await;
    for (version, addr, _) in &headers {
        let received = by_subject(&got, &format!("proxy {version}")).received();
        assert!(
            received.starts_with(&format!("from client.example (unknown [{addr}])")),
            "{version}: {received}"
        );
    }
    pf.assert_no_warnings();
}

#[tokio::test]
async fn postfix_fixture_matches_bare_newline_exclusions_against_the_xclient_address() {
    let Some(pf) = Postfix::start(PostfixOptions {
        main: vec![("smtpd_forbid_bare_newline", "reject".into())],
        ..Default::default()
    }) else {
        return;
    };
    let mut c = Smtp::new(TcpStream::connect(pf.smtp).await.unwrap());
    c.reply().await;
    c.cmd("EHLO gatehouse.test", 250).await;
    // 127.0.0.1 is in $mynetworks, the default exclusions: accepted.
    c.send_mail("bare lf, loopback", "one\ntwo", 250).await;
    c.cmd("XCLIENT ADDR=192.0.2.7", 220).await;
    c.cmd("EHLO client.example", 250).await;
    let refused = c.send_mail("bare lf, xclient", "one\ntwo", 550).await;
    assert!(refused.contains("bare <LF>"), "{refused}");
    c.cmd("QUIT", 221).await;

    let got = pf.wait_delivered(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(
        by_subject(&got, "bare lf, loopback")
            .body()
            .starts_with(b"one\ntwo\n")
    );
    pf.assert_no_warnings();
}

#[tokio::test]
async fn postfix_fixture_offers_starttls_with_a_certificate_for_its_name() {
    let Some(pf) = Postfix::start(PostfixOptions {
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    let tls = pf.tls.as_ref().unwrap();
    let mut plain = Smtp::new(TcpStream::connect(pf.smtp).await.unwrap());
    plain.reply().await;
    let ehlo = plain.cmd("EHLO client.example", 250).await;
    assert!(!ehlo.contains("STARTTLS"), "plain listener: {ehlo}");

    let mut c = Smtp::new(TcpStream::connect(tls.addr).await.unwrap());
    c.reply().await;
    assert!(c.cmd("EHLO client.example", 250).await.contains("STARTTLS"));
    c.cmd("STARTTLS", 220).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&tls.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(HOSTNAME).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, c.io.into_inner())
        .await
        .expect("TLS handshake with the test CA and the origin's name");
    let mut c = Smtp::new(stream);
    c.cmd("EHLO client.example", 250).await;
    c.send_mail("over tls", "secret", 250).await;
    c.cmd("QUIT", 221).await;

    let got = pf.wait_delivered(1, Duration::from_secs(5)).await;
    let received = by_subject(&got, "over tls").received();
    assert!(
        received.contains("(using TLSv1.3") && received.contains("with ESMTPS"),
        "{received}"
    );
    pf.assert_no_warnings();
}

#[tokio::test]
async fn postfix_fixture_stops_only_its_own_instance() {
    let (Some(a), Some(b)) = (
        Postfix::start(PostfixOptions::default()),
        Postfix::start(PostfixOptions {
            main: vec![("smtpd_banner", "$myhostname ESMTP second instance".into())],
            ..Default::default()
        }),
    ) else {
        return;
    };
    let etc = a.dir().join("etc");
    let master = a.master_pid().expect("master.pid");
    assert!(instance_pids(&etc).contains(&master));
    let dir = a.dir().to_path_buf();
    drop(a);
    assert!(instance_pids(&etc).is_empty(), "a's processes are gone");
    assert!(!dir.exists(), "a's directory is removed");

    let mut c = Smtp::new(TcpStream::connect(b.smtp).await.unwrap());
    let (_, banner) = c.reply().await;
    assert!(banner.contains("second instance"), "{banner}");
    c.cmd("EHLO client.example", 250).await;
    c.send_mail("still here", "b keeps running", 250).await;
    b.wait_delivered(1, Duration::from_secs(5)).await;
    b.assert_no_warnings();
}
