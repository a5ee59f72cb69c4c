//! PROXY protocol, receiving: v1 and v2 headers from trusted proxies set the client address for
//! forwarding headers and `sources`; untrusted peers and malformed headers are closed; v2 LOCAL
//! (the load balancer's own health check) is served as the proxy itself.

use std::time::Duration;

use gatehouse_wire::proxy_protocol::{encode_v1, encode_v2, tlv};

use crate::common::*;

fn cfg(origin: std::net::SocketAddr, expect: &str, trusted: &str) -> String {
    format!(
        r#"
[global]
access_log = "off"
[listeners.public]
bind = "127.0.0.1:0"
proxy_protocol = "{expect}"
trusted_proxies = [{trusted}]
client_header_timeout = "500ms"
[[routes]]
sources = ["192.168.1.0/24"]
respond = {{ status = 200, body = "zone" }}
[[routes]]
upstream = "app"
[upstreams.app]
servers = ["{origin}"]
"#
    )
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
