//! Transparent mode across real hosts: three network namespaces made by the test (client, proxy,
//! origin) joined by veth pairs, the origin routing replies via the proxy, and policy routing on
//! the proxy delivering them to its sockets. The origin must see the client's own address. Needs
//! root (CAP_NET_ADMIN, CAP_SYS_ADMIN); under CI=true it must run.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::{Config, Listener, Route, Upstream};
use crate::peer::Peer;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Hosts {
    names: [String; 3],
    /// The origin and gatehouse, ended before their namespaces go.
    procs: Option<Peer>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.procs.take();
        for n in &self.names {
            sh(&["ip", "netns", "del", n]);
        }
    }
}

const ORIGIN: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.201.2.2", 9000)); s.listen(16)
while True:
    c, peer = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d: break
        data += d
    body = peer[0].encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    c.close()
"#;

/// Three namespaces, client (`N.1.2`), proxy (`N.1.1` and `N.2.1`) and origin (`N.2.2`), where
/// `N` is `net` (e.g. "10.201"): the origin routes replies via the proxy, whose policy routing
/// delivers them to its transparent sockets. None (after a loud notice) where namespaces cannot
/// be made, outside CI.
fn hosts(tag: &str, net: &str) -> Option<(Hosts, String, String, String)> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let id = std::process::id() % 100_000;
    let (c, p, o) = (
        format!("{tag}c{id}"),
        format!("{tag}p{id}"),
        format!("{tag}o{id}"),
    );
    if !sh(&["ip", "netns", "add", &c]) {
        assert!(
            !ci,
            "network namespaces are required under CI=true (run as root with iproute2)"
        );
        eprintln!("\n\n*** SKIPPING: cannot create network namespaces (not root?) ***\n\n");
        return None;
    }
    let hosts = Hosts {
        names: [c.clone(), p.clone(), o.clone()],
        procs: None,
    };
    let (vc, vpc, vo, vpo) = (
        format!("{tag}vc{id}"),
        format!("{tag}vpc{id}"),
        format!("{tag}vo{id}"),
        format!("{tag}vpo{id}"),
    );
    let (client, proxy_c, origin, proxy_o) = (
        format!("{net}.1.2/24"),
        format!("{net}.1.1/24"),
        format!("{net}.2.2/24"),
        format!("{net}.2.1/24"),
    );
    let (via_c, via_o) = (format!("{net}.1.1"), format!("{net}.2.1"));
    let steps: Vec<Vec<&str>> = vec![
        vec!["ip", "netns", "add", &p],
        vec!["ip", "netns", "add", &o],
        vec!["ip", "-n", &c, "link", "set", "lo", "up"],
        vec!["ip", "-n", &p, "link", "set", "lo", "up"],
        vec!["ip", "-n", &o, "link", "set", "lo", "up"],
        vec![
            "ip", "link", "add", &vc, "type", "veth", "peer", "name", &vpc,
        ],
        vec!["ip", "link", "set", &vc, "netns", &c],
        vec!["ip", "link", "set", &vpc, "netns", &p],
        vec![
            "ip", "link", "add", &vo, "type", "veth", "peer", "name", &vpo,
        ],
        vec!["ip", "link", "set", &vo, "netns", &o],
        vec!["ip", "link", "set", &vpo, "netns", &p],
        vec!["ip", "-n", &c, "addr", "add", &client, "dev", &vc],
        vec!["ip", "-n", &p, "addr", "add", &proxy_c, "dev", &vpc],
        vec!["ip", "-n", &o, "addr", "add", &origin, "dev", &vo],
        vec!["ip", "-n", &p, "addr", "add", &proxy_o, "dev", &vpo],
        vec!["ip", "-n", &c, "link", "set", &vc, "up"],
        vec!["ip", "-n", &p, "link", "set", &vpc, "up"],
        vec!["ip", "-n", &p, "link", "set", &vpo, "up"],
        vec!["ip", "-n", &o, "link", "set", &vo, "up"],
        vec!["ip", "-n", &c, "route", "add", "default", "via", &via_c],
        // The origin answers the client's address via the proxy host...
        vec!["ip", "-n", &o, "route", "add", "default", "via", &via_o],
        // ...whose policy routing hands those answers to its own (transparent) sockets.
        vec!["ip", "-n", &p, "rule", "add", "iif", &vpo, "lookup", "100"],
        vec![
            "ip",
            "-n",
            &p,
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            "100",
        ],
    ];
    for s in &steps {
        assert!(sh(s), "set-up step failed: {}", s.join(" "));
    }
    Some((hosts, c, p, o))
}

/// Starts the origin script in namespace `o` and gatehouse with `cfg` in namespace `p`; the
/// hosts end them before their namespaces go.
fn start(
    hosts: &mut Hosts,
    mut procs: Peer,
    origin: &std::path::Path,
    cfg: &str,
    o: &str,
    p: &str,
) {
    let cfg = procs.write("gh.toml", cfg);
    procs
        .spawn(&mut in_ns(o, &["python3", origin.to_str().unwrap()]))
        .spawn(&mut in_ns(
            p,
            &[
                env!("CARGO_BIN_EXE_gatehouse"),
                "run",
                "-c",
                cfg.to_str().unwrap(),
            ],
        ));
    hosts.procs = Some(procs);
}

/// A command run in namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

#[test]
fn the_origin_sees_the_clients_own_address() {
    let Some((mut hosts, c, p, o)) = hosts("gh", "10.201") else {
        return;
    };
    let procs = Peer::new("transparent");
    let origin = procs.write("origin.py", ORIGIN);
    let cfg = Config::new()
        .global("threads = 1")
        .listener("web", Listener::http().bind("10.201.1.1:8080"))
        .route(Route::to("origin"))
        .upstream(
            "origin",
            Upstream::servers(["10.201.2.2:9000"]).raw(r#"source_address = "client""#),
        );
    start(&mut hosts, procs, &origin, &cfg.toml(), &o, &p);
    let mut body = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c,
                "curl",
                "-s",
                "-m",
                "2",
                "http://10.201.1.1:8080/",
            ])
            .output()
            .unwrap();
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        // Until the origin listens, gatehouse answers 502: keep asking.
        if body == "10.201.1.2" {
            break;
        }
    }
    assert_eq!(
        body,
        "10.201.1.2",
        "the origin must see the client's address, not the proxy's (10.201.2.1)\n{}",
        hosts.procs.as_ref().map(Peer::logs).unwrap_or_default()
    );
    drop(hosts);
}

/// An SMTP origin that answers VRFY with the address its client connected from.
const SMTP_ORIGIN: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.202.2.2", 2525)); s.listen(16)
while True:
    c, peer = s.accept()
    f = c.makefile("rb")
    c.sendall(b"220 origin ESMTP\r\n")
    for line in f:
        verb = line.split(b" ")[0].strip().upper()
        if verb == b"EHLO": c.sendall(b"250-origin\r\n250 PIPELINING\r\n")
        elif verb == b"VRFY": c.sendall(b"252 " + peer[0].encode() + b"\r\n")
        elif verb == b"QUIT":
            c.sendall(b"221 bye\r\n"); break
        else: c.sendall(b"250 ok\r\n")
    c.close()
"#;

/// The tests' SMTP client, run in the client's namespace: prints the reply to VRFY.
const SMTP_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("10.202.1.1", 2525), timeout=3)
f = c.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-": return l.decode().strip()
reply()
c.sendall(b"EHLO client.example\r\n"); reply()
c.sendall(b"VRFY someone\r\n"); print(reply())
c.sendall(b"QUIT\r\n"); reply()
"#;

#[test]
fn an_smtp_origin_sees_the_clients_own_address() {
    let Some((mut hosts, c, p, o)) = hosts("gs", "10.202") else {
        return;
    };
    let procs = Peer::new("transparent-smtp");
    let origin = procs.write("origin.py", SMTP_ORIGIN);
    let client = procs.write("client.py", SMTP_CLIENT);
    let cfg = Config::new().global("threads = 1").raw(
        r#"[listeners.mx]
bind = "10.202.1.1:2525"
protocol = "smtp"
upstream = "mail"
smtp = { hostname = "mx.test", commands = ["VRFY"] }
[upstreams.mail]
servers = ["10.202.2.2:2525"]
protocol = "smtp"
source_address = "client"
"#,
    );
    start(&mut hosts, procs, &origin, &cfg.toml(), &o, &p);
    let mut seen = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = in_ns(&c, &["python3", client.to_str().unwrap()])
            .output()
            .unwrap();
        seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Until both listen, the client fails or gets 421: keep asking.
        if seen.starts_with("252") {
            break;
        }
    }
    assert_eq!(
        seen,
        "252 10.202.1.2",
        "the origin must see the client's address, not the proxy's (10.202.2.1)\n{}",
        hosts.procs.as_ref().map(Peer::logs).unwrap_or_default()
    );
    drop(hosts);
}
