//! Protocols: WebSocket / Upgrade tunnels, h2c never tunnelled, HTTP/2 downstream (h2c prior
//! knowledge), h2c upstream with trailers (gRPC's shape).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::config::{Config, Upstream};

fn cfg(origin: std::net::SocketAddr, protocol: &str) -> String {
    Config::web_to(Upstream::servers([origin]).raw(format!(r#"protocol = "{protocol}""#))).toml()
}

/// An origin that accepts `Upgrade: echo` with 101 and then echoes bytes back in upper case;
/// `/no-upgrade` answers 200 instead.
async fn upgrading_origin() -> Origin {
    origin(|mut req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/no-upgrade" || req.headers().get("upgrade").is_none() {
            return text(200, "plain");
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let upper = buf[..n].to_ascii_uppercase();
                    if io.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut().insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        r
    })
    .await
}

#[tokio::test]
async fn upgrade_tunnels_after_101_only() {
    let o = upgrading_origin().await;
    let gh = proxy(&cfg(o.addr, "http1")).await;
    let addr = web(&gh);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: echo") && head.contains("sec-websocket-accept"),
        "{head}"
    );
    s.write_all(b"hello tunnel").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"HELLO TUNNEL");
    let h = &o.last().headers;
    assert_eq!(h["upgrade"], "echo");
    assert_eq!(h["connection"], "upgrade");

    // The origin declines: an ordinary answer, and the connection is HTTP again.
    let resp = raw(
        addr,
        b"GET /no-upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("plain"),
        "{resp}"
    );
}

#[tokio::test]
async fn upgrade_h2c_is_never_forwarded() {
    let o = upgrading_origin().await;
    let gh = proxy(&cfg(o.addr, "http1")).await;
    let addr = web(&gh);
    let resp = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let h = &o.last().headers;
    assert!(
        h.get("upgrade").is_none() && h.get("http2-settings").is_none(),
        "{h:?}"
    );
}

#[tokio::test]
async fn http2_downstream_by_prior_knowledge() {
    let o = origin(|req| async move {
        text(
            200,
            format!(
                "{:?} {}",
                req.version(),
                req.headers()["host"].to_str().unwrap()
            ),
        )
    })
    .await;
    let gh = proxy(&cfg(o.addr, "http1")).await;
    let addr = web(&gh);
    let mut tx = h2_client(addr).await;
    let mut handles = Vec::new();
    for i in 0..5 {
        let req = Request::get(format!("http://h2.example/{i}"))
            .body(empty())
            .unwrap();
        handles.push(tx.send_request(req));
    }
    for h in handles {
        let resp = h.await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body, "HTTP/1.1 h2.example",
            "origin gets HTTP/1.1 with Host from :authority"
        );
    }
    let h = o.last().headers;
    assert_eq!(h["via"], "2 gatehouse");
}

#[tokio::test]
async fn h2c_upstream_carries_trailers_end_to_end() {
    // A gRPC-shaped origin: streams a body, then sends grpc-status in trailers.
    let o = origin(|req| async move {
        assert_eq!(req.version(), http::Version::HTTP_2);
        let got = req.into_body().collect().await.unwrap().to_bytes();
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from(format!("echo:{}", got.len())))),
            Ok(Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                t.insert("grpc-message", "fine".parse().unwrap());
                t
            })),
        ];
        let mut r =
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        // Declared trailers (RFC 9110 §6.6.2): what an HTTP/1.1 hop needs to send them on.
        r.headers_mut()
            .insert("trailer", "grpc-status, grpc-message".parse().unwrap());
        r
    })
    .await;
    let gh = proxy(&cfg(o.addr, "h2c")).await;
    let addr = web(&gh);
    // h2 client -> gatehouse -> h2c origin
    let mut tx = h2_client(addr).await;
    let req = Request::post("http://grpc.example/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(vec![0u8; 1000]))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers passed through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), "echo:1000");

    // An HTTP/1.1 client with TE: trailers gets the declared trailers too, chunked.
    let resp = raw(
        addr,
        b"POST /pkg.Svc/Call HTTP/1.1\r\nHost: grpc.example\r\nTE: trailers\r\nContent-Length: 3\r\n\r\nabc",
        Duration::from_millis(500),
    )
    .await;
    assert!(resp.contains("echo:3"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("grpc-status: 0"),
        "{resp}"
    );
}
