//! Our HTTP/1.1 client towards origins, against scripted raw-TCP origins: answer framing,
//! connection reuse, early answers, informational answers, full-duplex streaming.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};

/// A raw origin: each accepted connection runs `script`; counts connections.
async fn raw_origin<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(script(s, n));
        }
    });
    (addr, conns)
}

/// Reads one request head (up to the empty line); None when the peer closed first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn config(origin: SocketAddr) -> String {
    Config::empty()
        .listener("web", Listener::http())
        .upstream("app", Upstream::servers([origin]).raw("retries = 1"))
        .route(Route::to("app"))
        .toml()
}

/// Answers every request on a connection with `answer` until the client closes.
async fn answering(mut s: TcpStream, answer: &'static [u8]) {
    while read_head(&mut s).await.is_some() {
        if s.write_all(answer).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn ambiguous_answers_become_502_and_the_connection_is_dropped() {
    let (origin, conns) = raw_origin(|s, _| {
        answering(
            s,
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
    })
    .await;
    let gh = proxy(&config(origin)).await;
    for _ in 0..2 {
        let got = get(web(&gh), "x", "/").await;
        assert_eq!(got.status, 502, "{}", got.text());
    }
    // Never reused after a faulty answer: each request (and its one retry) on a new connection.
    assert!(conns.load(Ordering::SeqCst) >= 2);
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn chunked_answers_with_extensions_and_trailers_pass_whole_and_reuse_the_connection() {
    let (origin, conns) = raw_origin(|s, _| {
        answering(
            s,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"a\"\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
        )
    })
    .await;
    let gh = proxy(&config(origin)).await;
    for _ in 0..3 {
        let got = get(web(&gh), "x", "/").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "hello world");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one pooled connection");
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connection_close_and_http10_answers_are_not_reused() {
    let (origin, conns) = raw_origin(|mut s, _| async move {
        if read_head(&mut s).await.is_some() {
            // HTTP/1.0, no length: the body runs to the close.
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close").await;
        }
    })
    .await;
    let gh = proxy(&config(origin)).await;
    for _ in 0..3 {
        let got = get(web(&gh), "x", "/").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "until close");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_not_used() {
    // Each connection answers one request with keep-alive framing, then closes.
    let (origin, conns) = raw_origin(|mut s, _| async move {
        if read_head(&mut s).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let gh = proxy(&config(origin)).await;
    for _ in 0..5 {
        let got = get(web(&gh), "x", "/").await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "ok");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 5);
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let (origin, _) = raw_origin(|s, _| {
        answering(
            s,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone",
        )
    })
    .await;
    let gh = proxy(&config(origin)).await;
    let got = get(web(&gh), "x", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "done");
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_early_error_answer_reaches_the_client() {
    // The origin refuses a large upload after its head, without reading the body, and closes.
    let (origin, _) = raw_origin(|mut s, _| async move {
        if read_head(&mut s).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!")
                .await;
            let _ = s.shutdown().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let gh = proxy(&config(origin)).await;
    let body = vec![b'x'; 8 << 20];
    let req = http::Request::post("/upload")
        .header("host", "x")
        .body(full(body))
        .unwrap();
    let got = send(web(&gh), req).await;
    assert_eq!(got.status, 413, "{}", got.text());
    assert_eq!(got.text(), "too big!");
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_full_duplex_origin_gets_the_rest_of_the_body_while_it_answers() {
    // The origin answers after the first chunk, then echoes each chunk it receives.
    let (origin, _) = raw_origin(|mut s, _| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let mut buf = [0u8; 1024];
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Echo the raw chunked bytes as chunks of their own.
            let mut out = format!("{:x}\r\n", n).into_bytes();
            out.extend_from_slice(&buf[..n]);
            out.extend_from_slice(b"\r\n");
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gh = proxy(&config(origin)).await;
    let mut c = TcpStream::connect(web(&gh)).await.unwrap();
    c.write_all(
        b"POST /duplex HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut read_until = async |c: &mut TcpStream, seen: &mut Vec<u8>, want: &[u8]| {
        while !seen.windows(want.len()).any(|w| w == want) {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("answer in time")
                .unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut c, &mut seen, b"first").await;
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    // The second chunk is sent only now, after the answer began: it must still reach the origin.
    c.write_all(b"6\r\nsecond\r\n").await.unwrap();
    read_until(&mut c, &mut seen, b"second").await;
    gh.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_request_whose_head_was_written_is_resent_only_when_retries_allow() {
    // Each connection answers its first request (keep-alive), then reads the next head and
    // closes without answering: the second request meets a pooled connection that dies after
    // the whole head was written.
    for (retries, status, expect_conns) in [(0, 502, 1), (1, 200, 2)] {
        let (origin, conns) = raw_origin(|mut s, _| async move {
            if read_head(&mut s).await.is_some() {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = read_head(&mut s).await;
            }
        })
        .await;
        let cfg = config(origin).replace("retries = 1", &format!("retries = {retries}"));
        let gh = proxy(&cfg).await;
        assert_eq!(get(web(&gh), "x", "/").await.status, 200);
        let got = get(web(&gh), "x", "/").await;
        assert_eq!(got.status, status, "retries = {retries}: {}", got.text());
        assert_eq!(
            conns.load(Ordering::SeqCst),
            expect_conns,
            "retries = {retries}: connections to the origin"
        );
        gh.shutdown(Duration::from_secs(1)).await;
    }
}

/// An answer passes as the origin sent it (names as spelled, repeated fields, order), less its
/// hop-by-hop fields, with our request id in place of the origin's and our Via after its own;
/// to an HTTP/2 client the same fields arrive.
#[tokio::test]
async fn an_answer_passes_as_sent_less_hop_by_hop_fields() {
    let (origin, _) = raw_origin(|s, _| {
        answering(
            s,
            b"HTTP/1.1 200 OK\r\nServer: Origin/1\r\nX-Request-Id: origin-id\r\n\
              Via: 1.0 cache-a\r\nKeep-Alive: timeout=5\r\nProxy-Thing: x\r\nUpgrade: foo\r\n\
              Set-Cookie: a=1\r\nX-Custom: A  b\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\nhello",
        )
    })
    .await;
    let gh = proxy(&config(origin)).await;
    let addr = web(&gh);
    let resp = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("a whole answer");
    assert_eq!(body, "hello");
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "HTTP/1.1 200 OK");
    let at = |l: &str| lines.iter().position(|x| *x == l);
    assert!(at("Server: Origin/1").is_some(), "{head}");
    assert!(at("X-Custom: A  b").is_some(), "{head}");
    let order = |a: &str, b: &str| at(a).expect(a) < at(b).expect(b);
    assert!(order("Set-Cookie: a=1", "Set-Cookie: b=2"), "{head}");
    assert!(order("Via: 1.0 cache-a", "via: 1.1 gatehouse"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(at("content-length: 5").is_some(), "{head}");
    assert_eq!(lower.matches("content-length:").count(), 1, "{head}");
    assert_eq!(lower.matches("x-request-id:").count(), 1, "{head}");
    assert!(!lower.contains("origin-id"), "{head}");
    assert_eq!(lower.matches("\r\ndate: ").count(), 1, "{head}");
    for gone in ["keep-alive", "proxy-thing", "upgrade"] {
        assert!(!lower.contains(&format!("\n{gone}:")), "{gone}: {head}");
    }

    // HTTP/2 downstream: the same fields (the answer goes through a header map for hyper).
    let mut tx = h2_client(addr).await;
    let req = http::Request::get("http://x/").body(empty()).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let h = resp.headers();
    assert_eq!(h["server"], "Origin/1");
    assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    // One list, whether in one field or two (RFC 9110 §5.3).
    let via: Vec<_> = h
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(via.join(", "), "1.0 cache-a, 1.1 gatehouse");
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    assert_ne!(h["x-request-id"], "origin-id");
    assert!(h.get("keep-alive").is_none() && h.get("proxy-thing").is_none());
    gh.shutdown(Duration::from_secs(1)).await;
}

/// With the origin's fields passed as sent, Content-Length still follows the framing rules:
/// kept for HEAD and 304 (it describes the resource), dropped for 204, written once.
#[tokio::test]
async fn content_length_of_bodiless_answers_passes_by_the_rules() {
    let (origin, _) = raw_origin(|mut s, _| async move {
        while let Some(head) = read_head(&mut s).await {
            let answer: &[u8] = if head.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
            } else if head.starts_with("GET /204") {
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7\r\n\r\n"
            };
            if s.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gh = proxy(&config(origin)).await;
    let addr = web(&gh);
    for (request, status, length) in [
        ("HEAD / HTTP/1.1", "200", Some("42")),
        ("GET /204 HTTP/1.1", "204", None),
        ("GET /304 HTTP/1.1", "304", Some("7")),
    ] {
        let wire = format!("{request}\r\nHost: x\r\n\r\n");
        let resp = raw(addr, wire.as_bytes(), Duration::from_millis(400)).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
        assert!(resp.ends_with("\r\n\r\n"), "no body: {resp}");
        let lower = resp.to_ascii_lowercase();
        let lengths: Vec<&str> = lower
            .lines()
            .filter_map(|l| l.strip_prefix("content-length: "))
            .collect();
        assert_eq!(lengths, length.into_iter().collect::<Vec<_>>(), "{resp}");
    }
    gh.shutdown(Duration::from_secs(1)).await;
}
