//! Health: active checks (down after fall, up after rise), backups, passive ejection, retries,
//! and the error answers 502 / 503 / 504.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::common::*;
use crate::config::{Config, Route, Upstream};

async fn switchable(name: &'static str) -> (Origin, Arc<AtomicU16>) {
    let health = Arc::new(AtomicU16::new(200));
    let h = health.clone();
    let o = origin(move |req| {
        let h = h.clone();
        async move {
            if req.uri().path() == "/healthz" {
                text(h.load(Ordering::SeqCst), "")
            } else {
                text(200, name)
            }
        }
    })
    .await;
    (o, health)
}

fn status_of(gh: &gatehouse::Gatehouse, server: &str) -> bool {
    let snap = gh.shared().snapshot();
    snap.upstreams[0]
        .servers
        .iter()
        .find(|s| s.spec.address == server)
        .map(|s| s.is_available())
        .unwrap()
}

#[tokio::test]
async fn active_checks_take_servers_down_and_up_and_backups_step_in() {
    let (a, ha) = switchable("a").await;
    let (b, hb) = switchable("b").await;
    let (backup, _) = switchable("backup").await;
    let cfg = Config::web_to(
        Upstream::servers([a.addr, b.addr])
            .backup(backup.addr)
            .raw(r#"health_check = { path = "/healthz", interval = "100ms", timeout = "500ms", rise = 2, fall = 2 }"#),
    )
    .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    for _ in 0..4 {
        get(addr, "x", "/").await;
    }
    assert_eq!(
        (a.hits(), b.hits(), backup.hits()),
        (2, 2, 0),
        "backup idle while primaries are up"
    );

    ha.store(500, Ordering::SeqCst);
    let sa = a.addr.to_string();
    assert!(
        eventually(Duration::from_secs(5), async || !status_of(&gh, &sa)).await,
        "a never went down"
    );
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(addr, "x", "/").await.text(), "b");
    }
    assert_eq!(a.hits(), before);

    hb.store(503, Ordering::SeqCst);
    let sb = b.addr.to_string();
    assert!(eventually(Duration::from_secs(5), async || !status_of(&gh, &sb)).await);
    assert_eq!(
        get(addr, "x", "/").await.text(),
        "backup",
        "backup serves when no primary is up"
    );

    ha.store(200, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), async || status_of(&gh, &sa)).await,
        "a never came back"
    );
    assert_eq!(get(addr, "x", "/").await.text(), "a");
}

#[tokio::test]
async fn no_healthy_server_is_503() {
    let (a, ha) = switchable("a").await;
    ha.store(500, Ordering::SeqCst);
    let cfg = Config::web_to(
        Upstream::servers([a.addr])
            .raw(r#"health_check = { path = "/healthz", interval = "50ms", fall = 1 }"#),
    )
    .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    assert!(
        eventually(Duration::from_secs(5), async || get(addr, "x", "/")
            .await
            .status
            == 503)
        .await
    );
    let r = get(addr, "x", "/").await;
    assert!(r.text().contains("no healthy server"), "{}", r.text());
}

#[tokio::test]
async fn passive_ejection_after_consecutive_failures() {
    let bad = origin(|_| async { text(500, "bad") }).await;
    let good = named("good").await;
    let cfg = Config::web_to(
        Upstream::servers([bad.addr, good.addr]).raw(r#"passive = { fall = 3, cooldown = "30s" }"#),
    )
    .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    for _ in 0..6 {
        get(addr, "x", "/").await;
    }
    assert_eq!(bad.hits(), 3);
    for _ in 0..10 {
        assert_eq!(get(addr, "x", "/").await.text(), "good");
    }
    assert_eq!(
        bad.hits(),
        3,
        "ejected server got traffic during its cooldown"
    );
}

/// A proxy in front of one origin that reads each request's whole body before it answers
/// ("got N"), ejected by passive health at its first failure; the origin's address.
async fn reading_origin_behind_passive_health() -> (Origin, gatehouse::Gatehouse, String) {
    let app = body_counting_origin().await;
    let cfg = Config::web_to(
        Upstream::servers([app.addr])
            .raw("retries = 1")
            .raw(r#"passive = { fall = 1, cooldown = "30s" }"#),
    )
    .toml();
    let gh = proxy(&cfg).await;
    let server = app.addr.to_string();
    (app, gh, server)
}

#[tokio::test]
async fn a_client_that_abandons_its_upload_is_not_the_servers_failure() {
    let (_app, gh, server) = reading_origin_behind_passive_health().await;
    let addr = web(&gh);
    for framing in [
        "Content-Length: 100000\r\n\r\n0123456789",
        "Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    ] {
        // Head and a little of the body, then the client goes away.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("POST /up HTTP/1.1\r\nHost: x\r\n{framing}");
        tokio::io::AsyncWriteExt::write_all(&mut c, head.as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            status_of(&gh, &server),
            "the server was ejected for the client's abort ({framing:?})"
        );
        let r = get(addr, "x", "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "got 0");
    }
    // A malformed chunked body is the client's fault too: 400, and the server stays in.
    let bad = raw(
        addr,
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(status_of(&gh, &server));
    assert_eq!(get(addr, "x", "/").await.status, 200);
}

#[tokio::test]
async fn an_http2_body_shorter_than_its_content_length_is_not_the_servers_failure() {
    let (_app, gh, server) = reading_origin_behind_passive_health().await;
    let addr = web(&gh);
    let mut tx = h2_client(addr).await;
    for body in ["", "ab"] {
        // Content-Length 5, and the stream ends after fewer bytes.
        let req = http::Request::post("http://h2.example/")
            .header("content-length", "5")
            .body(full(body))
            .unwrap();
        match tx.send_request(req).await {
            Ok(resp) => assert_eq!(resp.status(), 400, "{body:?}"),
            // The malformed stream refused outright is right too (RFC 9113 §8.1.1).
            Err(e) => assert!(format!("{e:?}").contains("PROTOCOL_ERROR"), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(status_of(&gh, &server), "server ejected for {body:?}");
    }
    let ok = tx
        .send_request(
            http::Request::get("http://h2.example/")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Accepts connections, reads the request, and closes without answering.
async fn resetter() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
            drop(s);
        }
    });
    (addr, t)
}

#[tokio::test]
async fn retries_go_to_another_server_only_when_safe() {
    let good = named("good").await;
    let closed = free_port();
    let (reset, _t) = resetter().await;
    let cfg = Config::web()
        .route(Route::to("refused").path_prefix("/refused"))
        .route(Route::to("resets"))
        .upstream(
            "refused",
            Upstream::servers([format!("127.0.0.1:{closed}")])
                .and([good.addr])
                .raw("retries = 1"),
        )
        .upstream(
            "resets",
            Upstream::servers([reset, good.addr]).raw("retries = 1"),
        )
        .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    // Connection refused: retried for any method, body or not.
    for _ in 0..4 {
        let r = send(
            addr,
            http::Request::post("/refused")
                .header("host", "x")
                .body(full("payload"))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // Reset before any response byte: an idempotent bodyless request is retried...
    for _ in 0..4 {
        assert_eq!(get(addr, "x", "/r").await.status, 200);
    }
    // ...a POST with a body is not: half of them (round robin) land on the resetter and fail.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = send(
            addr,
            http::Request::post("/r")
                .header("host", "x")
                .body(full("once only"))
                .unwrap(),
        )
        .await;
        codes.push(r.status);
    }
    codes.sort();
    assert_eq!(codes, vec![200, 200, 502, 502]);
}

#[tokio::test]
async fn connect_failure_is_502_and_slow_origin_is_504() {
    let slow = origin(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "late")
    })
    .await;
    let closed = free_port();
    let cfg = Config::web()
        .route(Route::to("slow").path_prefix("/slow"))
        .route(Route::to("dead"))
        .upstream(
            "slow",
            Upstream::servers([slow.addr]).raw(r#"response_timeout = "300ms""#),
        )
        .upstream("dead", Upstream::servers([format!("127.0.0.1:{closed}")]))
        .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    let r = get(addr, "x", "/dead").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("could not connect"), "{}", r.text());
    let t = std::time::Instant::now();
    let r = get(addr, "x", "/slow").await;
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A pooled connection's answer deadline is its request's own: a timer left from an earlier
/// request neither cuts a later one short nor lets it run past its timeout.
#[tokio::test]
async fn each_request_on_a_pooled_connection_gets_its_whole_timeout() {
    let o = origin(|req| async move {
        let ms: u64 = req.uri().path()[1..].parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        text(200, "ok")
    })
    .await;
    let cfg = Config::web_to(Upstream::servers([o.addr]).raw(r#"response_timeout = "1s""#)).toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    assert_eq!(get(addr, "x", "/0").await.status, 200);
    // The first request's deadline passes while the connection idles in the pool.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(addr, "x", "/300").await.status, 200);
    // Half a second on, a slow answer is cut at its own deadline, not at the earlier one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = std::time::Instant::now();
    let r = get(addr, "x", "/3000").await;
    assert_eq!(r.status, 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert_eq!(o.hits(), 3);
}
