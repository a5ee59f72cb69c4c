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

#[test]
fn the_origin_sees_the_clients_own_address() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let id = std::process::id() % 100_000;
    let (c, p, o) = (format!("ghc{id}"), format!("ghp{id}"), format!("gho{id}"));
    if !sh(&["ip", "netns", "add", &c]) {
        assert!(
            !ci,
            "network namespaces are required under CI=true (run as root with iproute2)"
        );
        eprintln!("\n\n*** SKIPPING: cannot create network namespaces (not root?) ***\n\n");
        return;
    }
    let mut hosts = Hosts {
        names: [c.clone(), p.clone(), o.clone()],
        procs: None,
    };
    let (vc, vpc, vo, vpo) = (
        format!("vc{id}"),
        format!("vpc{id}"),
        format!("vo{id}"),
        format!("vpo{id}"),
    );
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
        vec!["ip", "-n", &c, "addr", "add", "10.201.1.2/24", "dev", &vc],
        vec!["ip", "-n", &p, "addr", "add", "10.201.1.1/24", "dev", &vpc],
        vec!["ip", "-n", &o, "addr", "add", "10.201.2.2/24", "dev", &vo],
        vec!["ip", "-n", &p, "addr", "add", "10.201.2.1/24", "dev", &vpo],
        vec!["ip", "-n", &c, "link", "set", &vc, "up"],
        vec!["ip", "-n", &p, "link", "set", &vpc, "up"],
        vec!["ip", "-n", &p, "link", "set", &vpo, "up"],
        vec!["ip", "-n", &o, "link", "set", &vo, "up"],
        vec![
            "ip",
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            "10.201.1.1",
        ],
        // The origin answers the client's address via the proxy host...
        vec![
            "ip",
            "-n",
            &o,
            "route",
            "add",
            "default",
            "via",
            "10.201.2.1",
        ],
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
    let mut procs = Peer::new("transparent");
    let origin = procs.write("origin.py", ORIGIN);
    let cfg = Config::new()
        .global("threads = 1")
        .listener("web", Listener::http().bind("10.201.1.1:8080"))
        .route(Route::to("origin"))
        .upstream(
            "origin",
            Upstream::servers(["10.201.2.2:9000"]).raw(r#"source_address = "client""#),
        );
    let cfg = procs.write("gh.toml", cfg.toml());
    let in_ns = |ns: &str, args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    };
    procs
        .spawn(&mut in_ns(&o, &["python3", origin.to_str().unwrap()]))
        .spawn(&mut in_ns(
            &p,
            &[
                env!("CARGO_BIN_EXE_gatehouse"),
                "run",
                "-c",
                cfg.to_str().unwrap(),
            ],
        ));
    hosts.procs = Some(procs);
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
