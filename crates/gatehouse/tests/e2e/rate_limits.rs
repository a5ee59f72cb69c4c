//! Request rate limits (`[rate_limits.NAME]`, a route's `rate_limit`): a burst passes, the next
//! request is 429 with Retry-After, a key's bucket is its own, reloads keep unchanged buckets,
//! and a flood of keys leaves the table bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::config::{Config, Route};

/// A `web` listener whose one route answers 200 under the limit `per` (key, rate, burst).
fn limited(key: &str, rate: &str, burst: u64) -> String {
    Config::web()
        .route(
            Route::respond(200, "ok")
                .name("limited")
                .raw(r#"rate_limit = "per""#),
        )
        .raw(format!(
            "[rate_limits.per]\nkey = \"{key}\"\nrate = \"{rate}\"\nburst = {burst}"
        ))
        .toml()
}

fn metrics(gh: &gatehouse::Gatehouse) -> String {
    let shared = gh.shared();
    shared.metrics.encode(&shared.snapshot())
}

#[tokio::test]
async fn rate_limit_per_ip_refuses_past_the_burst_then_lets_through_after_retry_after() {
    let gh = proxy(&limited("client_ip", "1/s", 3)).await;
    let a = web(&gh);
    for i in 0..3 {
        assert_eq!(
            get(a, "x", "/").await.status,
            200,
            "request {i} of the burst"
        );
    }
    let r = get(a, "x", "/").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.header("x-request-id").is_some(),
        "our own error answers name the request"
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(get(a, "x", "/").await.status, 200, "after Retry-After");
    assert_eq!(
        get(a, "x", "/").await.status,
        429,
        "one interval's worth only"
    );
    let m = metrics(&gh);
    assert!(
        m.contains(r#"gatehouse_rate_limited_total{route="limited"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn rate_limit_per_header_keeps_a_bucket_per_value() {
    let gh = proxy(&limited("header:X-Api-Key", "1/m", 2)).await;
    let a = web(&gh);
    let key = |k: &'static str| [("x-api-key", k)];
    for _ in 0..2 {
        assert_eq!(get_with(a, "x", "/", &key("one")).await.status, 200);
    }
    let r = get_with(a, "x", "/", &key("one")).await;
    assert_eq!(r.status, 429);
    // 1/m: the next request of "one" passes in 30s..60s.
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((30..=60).contains(&after), "retry-after {after}");
    for _ in 0..2 {
        assert_eq!(get_with(a, "x", "/", &key("two")).await.status, 200, "two");
    }
    assert_eq!(get_with(a, "x", "/", &key("two")).await.status, 429);
    // Without the header: the empty value, a bucket of its own.
    assert_eq!(get(a, "x", "/").await.status, 200);
}

#[tokio::test]
async fn rate_limit_routes_without_one_are_not_counted() {
    let cfg = Config::web()
        .route(Route::respond(200, "free").path_prefix("/free"))
        .route(Route::respond(200, "ok").raw(r#"rate_limit = "per""#))
        .raw("[rate_limits.per]\nkey = \"route\"\nrate = \"1/h\"\nburst = 1")
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    assert_eq!(get(a, "x", "/").await.status, 200);
    assert_eq!(
        get(a, "x", "/").await.status,
        429,
        "one bucket for the route"
    );
    for _ in 0..5 {
        assert_eq!(get(a, "x", "/free").await.status, 200);
    }
}

#[tokio::test]
async fn rate_limit_buckets_survive_a_reload_unless_the_section_changes() {
    let cfg = limited("client_ip", "1/h", 2);
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    assert_eq!(get(a, "x", "/").await.status, 200);
    assert_eq!(get(a, "x", "/").await.status, 200);
    assert_eq!(get(a, "x", "/").await.status, 429);
    // The same section (other parts of the file changed): the buckets are kept.
    let same = Config::web()
        .route(Route::respond(200, "other").path_prefix("/other"))
        .route(
            Route::respond(200, "ok")
                .name("limited")
                .raw(r#"rate_limit = "per""#),
        )
        .raw("[rate_limits.per]\nkey = \"client_ip\"\nrate = \"1/h\"\nburst = 2")
        .toml();
    gh.apply(gatehouse_config::parse(&same, "t.toml").unwrap())
        .await
        .unwrap();
    assert_eq!(get(a, "x", "/").await.status, 429, "kept across the reload");
    // A changed section starts afresh.
    let changed = limited("client_ip", "1/h", 3);
    gh.apply(gatehouse_config::parse(&changed, "t.toml").unwrap())
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get(a, "x", "/").await.status, 200, "new buckets");
    }
    assert_eq!(get(a, "x", "/").await.status, 429);
}

/// Sends `n` pipelined requests on one connection and counts the answers by status.
async fn pipelined(addr: std::net::SocketAddr, from: u32, n: u32) -> (usize, usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        for i in from..from + n {
            buf.extend_from_slice(
                format!("GET / HTTP/1.1\r\nHost: x\r\nX-Key: k{i}\r\n\r\n").as_bytes(),
            );
            if buf.len() > 64 * 1024 {
                wr.write_all(&buf).await.unwrap();
                buf.clear();
            }
        }
        wr.write_all(&buf).await.unwrap();
        wr
    });
    let (mut ok, mut limited) = (0, 0);
    // Status lines are counted in the bytes read plus the last 11 of the read before: a line
    // split across two reads is counted once, and none twice (each is 12 bytes).
    let mut window = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while ok + limited < n as usize {
        let got = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
            .await
            .expect("answers in time")
            .unwrap();
        assert!(got > 0, "closed after {} answers", ok + limited);
        window.extend_from_slice(&buf[..got]);
        let count = |pat: &[u8]| window.windows(pat.len()).filter(|w| *w == pat).count();
        ok += count(b"HTTP/1.1 200");
        limited += count(b"HTTP/1.1 429");
        window.drain(..window.len().saturating_sub(11));
    }
    drop(writer.await.unwrap());
    (ok, limited)
}

#[tokio::test]
async fn rate_limit_a_flood_of_keys_keeps_the_table_bounded() {
    let gh = proxy(&limited("header:X-Key", "1/h", 1)).await;
    let a = web(&gh);
    let per_conn = 25_000;
    let mut tasks = Vec::new();
    for c in 0..4 {
        tasks.push(tokio::spawn(pipelined(a, c * per_conn, per_conn)));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap().0;
    }
    assert_eq!(ok, 100_000, "every key is new: each first request passes");
    let snap = gh.shared().snapshot();
    let keys = snap.rate_limiters[0].keys();
    assert!(
        keys <= gatehouse::http::limit::MAX_KEYS,
        "{keys} keys held after 100,000 distinct ones"
    );
    assert!(keys > gatehouse::http::limit::MAX_KEYS / 2, "{keys} keys");
}

#[tokio::test]
async fn rate_limit_client_ip_reads_x_forwarded_for_only_from_trusted_proxies() {
    let cfg = |trusted: &str| {
        Config::new()
            .listener(
                "web",
                crate::config::Listener::http().raw(format!("trusted_proxies = [{trusted}]")),
            )
            .route(Route::respond(200, "ok").raw(r#"rate_limit = "per""#))
            .raw("[rate_limits.per]\nkey = \"client_ip\"\nrate = \"1/h\"\nburst = 1")
            .toml()
    };
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    // Behind a trusted proxy: each forwarded client has its own bucket.
    let gh = proxy(&cfg(r#""127.0.0.0/8""#)).await;
    let a = web(&gh);
    assert_eq!(get_with(a, "x", "/", &xff("203.0.113.1")).await.status, 200);
    assert_eq!(get_with(a, "x", "/", &xff("203.0.113.2")).await.status, 200);
    assert_eq!(get_with(a, "x", "/", &xff("203.0.113.1")).await.status, 429);
    // From an untrusted peer the header is the client's to forge: the peer's bucket is used.
    let gh = proxy(&cfg("")).await;
    let a = web(&gh);
    assert_eq!(get_with(a, "x", "/", &xff("203.0.113.1")).await.status, 200);
    assert_eq!(get_with(a, "x", "/", &xff("203.0.113.2")).await.status, 429);
}
