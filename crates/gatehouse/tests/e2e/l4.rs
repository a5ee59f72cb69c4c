//! tcp listeners: a byte pipe with half-close, routing on sources and destinations with a
//! default upstream, failover on connect errors, idle timeout, and a PROXY header to the origin.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};

/// A TCP origin: reads until the client's FIN, then answers `NAME got N bytes` (and, with a
/// PROXY header first, who it said the client was) and closes.
async fn tcp_origin(name: &'static str) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let who = match gatehouse_wire::proxy_protocol::parse(
                    &all,
                    gatehouse_wire::proxy_protocol::Accept::Any,
                ) {
                    Ok(Some(h)) => {
                        let src = h.addrs.map(|a| a.0.to_string()).unwrap_or_default();
                        all.drain(..h.len);
                        format!(" from {src}")
                    }
                    _ => String::new(),
                };
                let _ = s
                    .write_all(format!("{name} got {} bytes{who}", all.len()).as_bytes())
                    .await;
            });
        }
    });
    addr
}

async fn exchange(addr: std::net::SocketAddr, payload: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(payload).await.unwrap();
    s.shutdown().await.unwrap(); // half-close: the answer must still come back
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn tcp_pipe_half_close_routing_and_failover() {
    let (a, b) = (tcp_origin("a").await, tcp_origin("b").await);
    let dead = free_port();
    let dead = format!("127.0.0.1:{dead}");
    let cfg = Config::new()
        .listener(
            "turn",
            Listener::tcp("default").binds(["127.0.0.1:0", "127.0.0.2:0"]),
        )
        .route(
            Route::to("never")
                .listeners(["turn"])
                .raw(r#"sources = ["10.0.0.0/8"]"#),
        )
        .route(
            Route::to("second")
                .listeners(["turn"])
                .raw(r#"destinations = ["127.0.0.2/32"]"#),
        )
        .upstream(
            "default",
            Upstream::servers([&dead]).and([a]).raw("retries = 1"),
        )
        .upstream("second", Upstream::servers([b]))
        .upstream("never", Upstream::servers([&dead]))
        .toml();
    let gh = proxy(&cfg).await;
    let addrs = gh.listener_addrs("turn");
    let one = *addrs
        .iter()
        .find(|x| x.ip().to_string() == "127.0.0.1")
        .unwrap();
    let two = *addrs
        .iter()
        .find(|x| x.ip().to_string() == "127.0.0.2")
        .unwrap();
    let big = vec![b'x'; 300_000];
    for _ in 0..3 {
        assert_eq!(
            exchange(one, &big).await,
            "a got 300000 bytes",
            "default upstream, dead server skipped"
        );
    }
    assert_eq!(
        exchange(two, b"hello").await,
        "b got 5 bytes",
        "route on the destination address"
    );
}

#[tokio::test]
async fn tcp_idle_timeout_and_proxy_header() {
    let a = tcp_origin("a").await;
    let cfg = Config::new()
        .listener("db", Listener::tcp("db"))
        .upstream(
            "db",
            Upstream::servers([a])
                .raw(r#"idle_timeout = "300ms""#)
                .raw(r#"proxy_protocol = "v1""#),
        )
        .toml();
    let gh = proxy(&cfg).await;
    let addr = gh.listener_addrs("db")[0];
    let reply = exchange(addr, b"select 1").await;
    assert!(
        reply.starts_with("a got 8 bytes from 127.0.0.1:"),
        "{reply}"
    );
    // Silent both ways: closed after the idle timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn tcp_routes_refuse_http_only_fields() {
    let errs = gatehouse_config::parse(
        "[listeners.t]\nbind = \"127.0.0.1:1\"\nprotocol = \"tcp\"\nupstream = \"u\"\n[[routes]]\nlisteners = [\"t\"]\nhosts = [\"a.example\"]\nupstream = \"u\"\n[upstreams.u]\nservers = [\"127.0.0.1:2\"]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(errs.contains("routes[0].hosts: is HTTP-only"), "{errs}");
}

/// An HTTP origin that answers with the address the connection came from.
async fn peer_origin() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn source_address_fixed_and_client() {
    let o = peer_origin().await;
    let cfg = Config::web()
        .listener(
            "public",
            Listener::http().proxy_protocol_from_loopback("v1"),
        )
        .route(Route::to("fixed").listeners(["web"]))
        .route(Route::to("transparent").listeners(["public"]))
        .upstream(
            "fixed",
            Upstream::servers([o]).raw(r#"source_address = "127.0.0.2""#),
        )
        .upstream(
            "transparent",
            Upstream::servers([o]).raw(r#"source_address = "client""#),
        )
        .toml();
    let gh = proxy(&cfg).await;
    assert_eq!(
        get(gh.listener_addrs("web")[0], "x", "/").await.text(),
        "127.0.0.2"
    );
    // Transparent: the connection to the origin comes from the client's own address (here one
    // carried by a PROXY header; 127.0.0.0/8 is local, so no policy routing is needed).
    let mut req = gatehouse_wire::proxy_protocol::encode_v1(
        "127.0.0.3:4444".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let resp = raw(
        gh.listener_addrs("public")[0],
        &req,
        Duration::from_millis(500),
    )
    .await;
    assert!(resp.ends_with("\r\n\r\n127.0.0.3"), "{resp}");
}

#[tokio::test]
async fn udp_flows_per_client_answers_from_the_listener_and_idle_expiry() {
    use std::sync::{Arc, Mutex};
    use tokio::net::UdpSocket;
    // A UDP origin that answers in upper case and records the source port of each datagram.
    let origin = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let p2 = ports.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = origin.recv_from(&mut buf).await {
            p2.lock().unwrap().push(from.port());
            let _ = origin.send_to(&buf[..n].to_ascii_uppercase(), from).await;
        }
    });
    let cfg = Config::new()
        .listener(
            "stun",
            Listener::udp("stun").raw(r#"udp_idle_timeout = "300ms""#),
        )
        .upstream("stun", Upstream::servers([origin_addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let listener = gh.listener_addrs("stun")[0];
    async fn ask(
        c: &UdpSocket,
        to: std::net::SocketAddr,
        what: &[u8],
    ) -> (Vec<u8>, std::net::SocketAddr) {
        c.send_to(what, to).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        (buf[..n].to_vec(), from)
    }
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (reply, from) = ask(&a, listener, b"ping").await;
    assert_eq!(
        (reply.as_slice(), from),
        (&b"PING"[..], listener),
        "answered from the listener's address"
    );
    assert_eq!(ask(&a, listener, b"again").await.0, b"AGAIN");
    assert_eq!(ask(&b, listener, b"other").await.0, b"OTHER");
    {
        let p = ports.lock().unwrap();
        assert_eq!(p[0], p[1], "one flow per client");
        assert_ne!(p[1], p[2], "another client, another flow");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ask(&a, listener, b"later").await.0, b"LATER");
    let p = ports.lock().unwrap();
    assert_ne!(p[3], p[0], "the idle flow expired; a new one was made");
}

#[tokio::test]
async fn tcp_connect_health_checks() {
    let alive = tcp_origin("alive").await;
    let dead = free_port();
    let cfg = Config::new()
        .listener("t", Listener::tcp("u"))
        .upstream(
            "u",
            Upstream::servers([format!("127.0.0.1:{dead}")])
                .and([alive])
                .raw("retries = 0")
                .raw(r#"health_check = { type = "tcp", interval = "100ms", fall = 1, rise = 1 }"#),
        )
        .toml();
    let gh = proxy(&cfg).await;
    let down = eventually(Duration::from_secs(3), async || {
        let snap = gh.shared().snapshot();
        !snap.upstreams[0].servers[0].is_up() && snap.upstreams[0].servers[1].is_up()
    })
    .await;
    assert!(
        down,
        "the closed port must go down and the live one stay up"
    );
    let addr = gh.listener_addrs("t")[0];
    for _ in 0..4 {
        assert_eq!(
            exchange(addr, b"hi").await,
            "alive got 2 bytes",
            "retries = 0: only the live server is picked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_a_tcp_pipe_with_a_checksum() {
    // An origin that hashes what it receives and answers with the hash after the client's FIN.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for b in &buf[..n] {
                            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
                        }
                    }
                }
            }
            let _ = s.write_all(format!("{h:016x}").as_bytes()).await;
        }
    });
    let gh = proxy(
        &Config::new()
            .listener("t", Listener::tcp("u"))
            .upstream("u", Upstream::servers([origin]))
            .toml(),
    )
    .await;
    let mut s = TcpStream::connect(gh.listener_addrs("t")[0]).await.unwrap();
    let mut want: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..1024u32 {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i as usize * 31 + j) as u8;
        }
        for b in &chunk {
            want = (want ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, format!("{want:016x}"), "1 GiB arrived intact");
}

#[tokio::test]
async fn tcp_and_udp_share_a_port_and_bridge_ipv4_clients_to_ipv6_origins() {
    use tokio::net::UdpSocket;
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no IPv6 loopback under CI=true"
        );
        eprintln!("\n\n*** SKIPPING: no IPv6 loopback on this machine ***\n\n");
        return;
    }
    // Origins on IPv6 only: a TCP one that reports what it got, a UDP one that echoes in upper
    // case.
    let l = TcpListener::bind("[::1]:0").await.unwrap();
    let tcp6 = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s
                    .write_all(format!("v6 got {} bytes from {}", all.len(), peer.ip()).as_bytes())
                    .await;
            });
        }
    });
    let u = UdpSocket::bind("[::1]:0").await.unwrap();
    let udp6 = u.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = u.recv_from(&mut buf).await {
            let _ = u.send_to(&buf[..n].to_ascii_uppercase(), from).await;
        }
    });
    // One port for both protocols (TURN listens on 5349 for TCP/TLS and UDP alike).
    let port = free_port();
    let gh = proxy(
        &Config::new()
            .admin()
            .listener("turn", Listener::tcp("tcp6").port(port))
            .listener("turn_udp", Listener::udp("udp6").port(port))
            .upstream("tcp6", Upstream::servers([tcp6]))
            .upstream("udp6", Upstream::servers([udp6]))
            .toml(),
    )
    .await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(gh.listener_addrs("turn")[0], addr);
    assert_eq!(gh.listener_addrs("turn_udp")[0], addr);
    assert_eq!(
        exchange(addr, &[7u8; 1000]).await,
        "v6 got 1000 bytes from ::1"
    );
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(b"stun", addr).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"STUN"[..], addr));
    // Both show in the metrics.
    let m = get(gh.admin_addr().unwrap(), "admin", "/metrics")
        .await
        .text();
    for line in [
        "gatehouse_udp_flows{listener=\"turn_udp\"} 1",
        "gatehouse_udp_datagrams_total{listener=\"turn_udp\",direction=\"up\"} 1",
        "gatehouse_udp_datagrams_total{listener=\"turn_udp\",direction=\"down\"} 1",
        "gatehouse_l4_connections_total{listener=\"turn\"} 1",
        "gatehouse_l4_bytes_total{listener=\"turn\",direction=\"up\"} 1000",
    ] {
        assert!(
            m.lines().any(|l| l == line),
            "`{line}` not in /metrics:\n{m}"
        );
    }
}
