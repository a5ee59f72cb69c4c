//! Our HTTP/1.1 server side, byte by byte: 100-continue, HTTP/1.0 keep-alive, pipelining,
//! bodies left unread, HEAD, refused methods and codings.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::config::{Config, Route, Upstream};

async fn setup() -> (Origin, gatehouse::Gatehouse) {
    let o = origin(|req| async move {
        let head = req.method() == http::Method::HEAD;
        let n = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes().len())
            .unwrap_or(0);
        if head {
            let mut r = text(200, "");
            r.headers_mut()
                .insert("content-length", http::HeaderValue::from_static("1234"));
            return r;
        }
        text(200, format!("got {n}"))
    })
    .await;
    let cfg = Config::web()
        .route(
            Route::to("app")
                .path_prefix("/upload")
                .raw(r#"max_body = "1KiB""#),
        )
        .route(Route::respond(200, "static").path_prefix("/static"))
        .route(Route::to("app"))
        .upstream("app", Upstream::servers([o.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    (o, gh)
}

/// Reads from `s` until `want` appears (or fails after 3 s); returns all read.
async fn read_until(s: &mut TcpStream, want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(&out)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closes `s` within a second (reading and dropping what comes).
async fn closes(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let (_o, gh) = setup().await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let answer = read_until(&mut s, "got 5").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The connection carries the next request.
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until(&mut s, "got 0")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn a_refused_upload_gets_no_100_continue_and_the_connection_closes() {
    let (o, gh) = setup().await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_until(&mut s, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(closes(&mut s).await, "connection left open after 413");
    assert_eq!(o.hits(), 0);
}

#[tokio::test]
async fn http_1_0_keeps_alive_only_when_asked() {
    let (_o, gh) = setup().await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let a = read_until(&mut s, "got 0").await.to_ascii_lowercase();
    assert!(a.contains("connection: keep-alive\r\n"), "{a}");
    assert!(a.contains("content-length: 5\r\n"), "{a}");
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    let b = read_until(&mut s, "got 0").await.to_ascii_lowercase();
    assert!(b.contains("connection: close\r\n"), "{b}");
    assert!(
        closes(&mut s).await,
        "HTTP/1.0 without keep-alive stays open"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_o, gh) = setup().await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /static HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let all = read_until(&mut s, "got 4").await;
    let first = all.find("got 3").expect("first answer");
    let second = all.find("static").expect("second answer");
    let third = all.find("got 4").expect("third answer");
    assert!(first < second && second < third, "{all}");
}

#[tokio::test]
async fn a_body_the_route_never_reads_is_drained_or_the_connection_closes() {
    let (_o, gh) = setup().await;
    // Small: read and dropped after the answer; the connection goes on.
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(b"POST /static HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
        .await
        .unwrap();
    assert!(
        read_until(&mut s, "static")
            .await
            .starts_with("HTTP/1.1 200")
    );
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until(&mut s, "got 0")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Large: the connection ends after the answer (the body is never taken for a request).
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(b"POST /static HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let a = read_until(&mut s, "static").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(
        closes(&mut s).await,
        "connection left open with 10 MB unread"
    );
}

#[tokio::test]
async fn head_answers_keep_the_length_and_carry_no_body() {
    let (_o, gh) = setup().await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let all = read_until(&mut s, "got 0").await;
    let (head, rest) = all.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1234"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "HEAD answer had a body: {rest}"
    );
}

#[tokio::test]
async fn connect_unknown_codings_and_bad_heads_are_refused() {
    let (o, gh) = setup().await;
    for (req, status) in [
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "405",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "501",
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", "417"),
        ("GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", "400"),
        ("GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ] {
        let a = raw(web(&gh), req.as_bytes(), Duration::from_millis(500)).await;
        assert!(
            a.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?} -> {a}"
        );
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{a}");
    }
    assert_eq!(o.hits(), 0);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_upstream_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let o = origin(move |_req| {
        let flag = Flag(c.clone());
        async move {
            // A long poll: answers after 10 s unless the proxy gives up on it first.
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(flag);
            text(200, "late")
        }
    })
    .await;
    let gh = proxy(&Config::web_to(Upstream::servers([o.addr])).toml()).await;
    let mut s = TcpStream::connect(web(&gh)).await.unwrap();
    s.write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let gave_up = eventually(Duration::from_secs(4), async || {
        cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert!(gave_up, "the origin's request outlived its client");
}
