//! `max_connections_per_ip`: past it a new connection from that address is closed at accept
//! (no answer), other addresses are not affected, and a closed connection frees its slot.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;
use crate::config::{Config, Listener, Route};

/// A connection from `from` (a loopback address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// One keep-alive request on `s`: the answer's status line, or "" when the connection was
/// closed without one.
async fn ask(s: &mut TcpStream) -> String {
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer or a close")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn per_ip_connection_limit_closes_the_one_too_many() {
    let cfg = Config::new()
        .listener("web", Listener::http().raw("max_connections_per_ip = 3"))
        .route(Route::respond(200, "ok"))
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", a).await;
        assert_eq!(ask(&mut s).await, "HTTP/1.1 200 OK");
        held.push(s);
    }
    let mut fourth = connect_from("127.0.0.1", a).await;
    assert_eq!(ask(&mut fourth).await, "", "closed at accept, no answer");
    // Another address has slots of its own.
    let mut other = connect_from("127.0.0.2", a).await;
    assert_eq!(ask(&mut other).await, "HTTP/1.1 200 OK");
    // Closing one frees its slot (the close is seen by the server a moment later).
    drop(held.pop());
    let freed = eventually(Duration::from_secs(5), async || {
        let mut s = connect_from("127.0.0.1", a).await;
        let ok = ask(&mut s).await == "HTTP/1.1 200 OK";
        if ok {
            held.push(s);
        }
        ok
    })
    .await;
    assert!(freed, "a slot came back");
    let m = gh.shared().metrics.encode(&gh.shared().snapshot());
    assert!(
        m.contains(r#"gatehouse_connections_refused_total{listener="web",reason="per_ip"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn per_ip_connection_limit_is_off_by_default() {
    let gh = proxy(&Config::web().route(Route::respond(200, "ok")).toml()).await;
    let a = web(&gh);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.1", a).await;
        assert_eq!(ask(&mut s).await, "HTTP/1.1 200 OK");
        held.push(s);
    }
    let m = gh.shared().metrics.encode(&gh.shared().snapshot());
    assert!(!m.contains("gatehouse_connections_refused_total{"), "{m}");
}

#[tokio::test]
async fn per_ip_connection_limit_counts_the_address_a_proxy_header_declares() {
    let cfg = Config::new()
        .listener(
            "web",
            Listener::http()
                .proxy_protocol_from_loopback("v1")
                .raw("max_connections_per_ip = 1"),
        )
        .route(Route::respond(200, "ok"))
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    // Every connection comes from 127.0.0.1, the load balancer; the clients behind it differ.
    let behind = async |client: &str| {
        let mut s = connect_from("127.0.0.1", a).await;
        let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n");
        s.write_all(header.as_bytes()).await.unwrap();
        let status = ask(&mut s).await;
        (s, status)
    };
    let (_one, status) = behind("192.0.2.1").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (_two, status) = behind("192.0.2.2").await;
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "another client behind the same balancer"
    );
    let (_again, status) = behind("192.0.2.1").await;
    assert_eq!(status, "", "the client's second connection is closed");
}
