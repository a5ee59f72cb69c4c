//! PROXY protocol, receiving: v1 and v2 headers from trusted proxies set the client address for
//! forwarding headers and `sources`; untrusted peers and malformed headers are closed; v2 LOCAL
//! (the load balancer's own health check) is served as the proxy itself.

use std::time::Duration;

use gatehouse_wire::proxy_protocol::{encode_v1, encode_v2, tlv};

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};
use crate::peer::{Peer, program, require};

fn cfg(origin: std::net::SocketAddr, expect: &str, trusted: &str) -> String {
    Config::new()
        .listener(
            "public",
            Listener::http()
                .raw(format!(r#"proxy_protocol = "{expect}""#))
                .raw(format!("trusted_proxies = [{trusted}]"))
                .raw(r#"client_header_timeout = "500ms""#),
        )
        .route(Route::respond(200, "zone").raw(r#"sources = ["192.168.1.0/24"]"#))
        .route(Route::to("app"))
        .upstream("app", Upstream::servers([origin]))
        .toml()
}

async fn xff_origin() -> Origin {
    origin(|req| async move {
        text(
            200,
            format!("xff={}", req.headers()["x-forwarded-for"].to_str().unwrap()),
        )
    })
    .await
}

const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn v1_and_v2_set_the_client_address() {
    let o = xff_origin().await;
    let gh = proxy(&cfg(o.addr, "any", "\"127.0.0.0/8\"")).await;
    let addr = gh.listener_addrs("public")[0];
    let mut v1 = encode_v1(
        "203.0.113.7:5555".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    );
    v1.extend_from_slice(REQ);
    let resp = raw(addr, &v1, Duration::from_millis(500)).await;
    assert!(resp.ends_with("xff=203.0.113.7"), "{resp}");

    let mut v2 = encode_v2(
        "[2001:db8::9]:4444".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
        &[(tlv::AUTHORITY, b"x")],
    );
    v2.extend_from_slice(REQ);
    let resp = raw(addr, &v2, Duration::from_millis(500)).await;
    assert!(resp.ends_with("xff=2001:db8::9"), "{resp}");

    // The carried address is the client for route `sources` too.
    let mut zone = encode_v1(
        "192.168.1.20:1000".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    );
    zone.extend_from_slice(REQ);
    assert!(
        raw(addr, &zone, Duration::from_millis(500))
            .await
            .ends_with("zone")
    );

    // v2 LOCAL: the proxy's own connection, served with its own address.
    let mut local = gatehouse_wire::proxy_protocol::V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    local.extend_from_slice(REQ);
    assert!(
        raw(addr, &local, Duration::from_millis(500))
            .await
            .ends_with("xff=127.0.0.1")
    );
}

#[tokio::test]
async fn untrusted_peers_missing_and_malformed_headers_are_closed() {
    let o = xff_origin().await;
    let gh = proxy(&cfg(o.addr, "v2", "\"10.0.0.0/8\"")).await;
    let addr = gh.listener_addrs("public")[0];
    let mut v2 = encode_v2(
        "203.0.113.7:1".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
        &[],
    );
    v2.extend_from_slice(REQ);
    assert_eq!(
        raw(addr, &v2, Duration::from_millis(500)).await,
        "",
        "loopback is not a trusted proxy here"
    );

    let gh = proxy(&cfg(o.addr, "v2", "\"127.0.0.0/8\"")).await;
    let addr = gh.listener_addrs("public")[0];
    assert_eq!(
        raw(addr, REQ, Duration::from_millis(500)).await,
        "",
        "no header"
    );
    let mut v1 = encode_v1(
        "203.0.113.7:1".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    );
    v1.extend_from_slice(REQ);
    assert_eq!(
        raw(addr, &v1, Duration::from_millis(500)).await,
        "",
        "v1 on a v2 listener"
    );
    let half = &encode_v2(
        "203.0.113.7:1".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
        &[],
    )[..20];
    let t = std::time::Instant::now();
    assert_eq!(
        raw(addr, half, Duration::from_secs(3)).await,
        "",
        "incomplete header"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closed after client_header_timeout"
    );
    assert_eq!(o.hits(), 0);
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let errs = gatehouse_config::parse(
        "[listeners.l]\nbind = \"127.0.0.1:1\"\nproxy_protocol = \"v3\"\n[listeners.m]\nbind = \"127.0.0.1:2\"\nproxy_protocol = \"v1\"\n",
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errs.contains("listeners.l.proxy_protocol: `v3` is not one of v1, v2, any"),
        "{errs}"
    );
    assert!(
        errs.contains("listeners.m.proxy_protocol: needs trusted_proxies"),
        "{errs}"
    );
}

/// A raw origin that expects a PROXY header, then answers one HTTP request with what the header
/// said; counts connections and the health checks among them.
async fn proxy_aware_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (header, rest) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    match gatehouse_wire::proxy_protocol::parse(
                        &buf,
                        gatehouse_wire::proxy_protocol::Accept::Any,
                    ) {
                        Ok(Some(h)) => break (h.clone(), buf[h.len..].to_vec()),
                        Ok(None) => continue,
                        Err(_) => return,
                    }
                };
                let mut req = rest;
                let mut first = true;
                loop {
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&chunk[..n]);
                    }
                    let end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    req.drain(..end);
                    let what = match (&header.addrs, first) {
                        (_, false) => "reused".to_string(),
                        (Some((src, _)), true) => {
                            let authority = header
                                .tlvs
                                .iter()
                                .find(|(t, _)| *t == gatehouse_wire::proxy_protocol::tlv::AUTHORITY)
                                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default();
                            format!("src={} authority={authority}", src.ip())
                        }
                        (None, true) => "local".to_string(),
                    };
                    first = false;
                    seen.lock().unwrap().push(what.clone());
                    // Keep-alive: a proxy that pooled this connection would send its next request here.
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{what}",
                        what.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn proxy_headers_are_sent_upstream_and_connections_never_shared() {
    let (origin_addr, seen) = proxy_aware_origin().await;
    for version in ["v1", "v2"] {
        seen.lock().unwrap().clear();
        let cfg = Config::web()
            .listener(
                "public",
                Listener::http().proxy_protocol_from_loopback("v1"),
            )
            .route(Route::to("app"))
            .upstream(
                "app",
                Upstream::servers([origin_addr])
                    .raw(format!(r#"proxy_protocol = "{version}""#))
                    .raw(r#"health_check = { path = "/healthz", interval = "100ms", fall = 1 }"#),
            )
            .toml();
        let gh = proxy(&cfg).await;
        let web = gh.listener_addrs("web")[0];
        let public = gh.listener_addrs("public")[0];
        assert_eq!(
            get(web, "x", "/").await.text(),
            "src=127.0.0.1 authority=",
            "{version}"
        );
        let mut v1 = encode_v1(
            "203.0.113.50:1234".parse().unwrap(),
            "198.51.100.1:80".parse().unwrap(),
        );
        v1.extend_from_slice(REQ);
        let resp = raw(public, &v1, Duration::from_millis(500)).await;
        assert!(
            resp.ends_with("src=203.0.113.50 authority="),
            "{version}: the carried client goes on: {resp}"
        );
        assert_eq!(get(web, "x", "/").await.text(), "src=127.0.0.1 authority=");
        let server_up = gh.shared().snapshot().upstreams[0].servers[0].is_up();
        assert!(
            server_up,
            "{version}: health checks speak PROXY (LOCAL / UNKNOWN) too"
        );
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().any(|s| s == "local"), "{version}: {seen:?}");
        assert_eq!(
            seen.iter().filter(|s| s.starts_with("src=")).count(),
            3,
            "one connection per request: {seen:?}"
        );
    }
}

#[tokio::test]
async fn curl_haproxy_protocol_is_accepted_as_a_v1_client() {
    if !require("curl") {
        return;
    }
    let o = xff_origin().await;
    let gh = proxy(&cfg(o.addr, "v1", "\"127.0.0.0/8\"")).await;
    let addr = gh.listener_addrs("public")[0];
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--haproxy-protocol", &format!("http://{addr}/")])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "xff=127.0.0.1");
    // Without the header the same listener refuses the connection.
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{addr}/"),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
}

#[tokio::test]
async fn haproxy_in_front_sends_proxy_v1_and_v2() {
    if !require("haproxy") {
        return;
    }
    let o = xff_origin().await;
    let gh = proxy(&cfg(o.addr, "any", "\"127.0.0.0/8\"")).await;
    let g = gh.listener_addrs("public")[0];
    let (h1, h2) = (free_port(), free_port());
    let mut haproxy = Peer::new("haproxy");
    let conf = haproxy.write(
        "haproxy.cfg",
        format!(
            "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend fe1\n  bind 127.0.0.1:{h1}\n  default_backend be1\nbackend be1\n  server gh {g} send-proxy\n\
             frontend fe2\n  bind 127.0.0.1:{h2}\n  default_backend be2\nbackend be2\n  server gh {g} send-proxy-v2\n"
        ),
    );
    haproxy.spawn(
        std::process::Command::new(program("haproxy"))
            .args(["-db", "-f"])
            .arg(conf),
    );
    // HAProxy binds both frontends before it serves either.
    haproxy.wait_tcp(h2, Duration::from_secs(10)).await;
    for port in [h1, h2] {
        // The client comes from 127.0.0.5; HAProxy's own connection to gatehouse from 127.0.0.1.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.5:0".parse().unwrap()).unwrap();
        let mut s = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(REQ).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out)).await;
        assert!(out.ends_with("xff=127.0.0.5"), "port {port}: {out}");
    }
}
