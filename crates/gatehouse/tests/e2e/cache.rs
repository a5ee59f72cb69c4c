//! The HTTP cache (RFC 9111, RFC 5861): one test per rule, each with an origin that answers
//! programmed headers and counts what reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream, quoted};

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Body> {
    let mut r = text(status, body.to_string());
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// The admin API (for purges) and one route, `route`, to `origin` as upstream `app`.
fn proxy_config(origin: SocketAddr, route: Route) -> Config {
    Config::web()
        .admin()
        .route(route)
        .upstream("app", Upstream::servers([origin]))
}

/// A route's `cache = { ROUTE_CACHE }` line.
fn caching(route_cache: &str) -> String {
    format!("cache = {{ {route_cache} }}")
}

fn cfg(origin: SocketAddr, route_cache: &str) -> String {
    proxy_config(origin, Route::to("app").raw(caching(route_cache))).toml()
}

async fn get_h(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    get_with(addr, "static.example.org", path, headers).await
}

fn header_of(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Hits on one path, as the origin saw them.
fn hits_on(o: &Origin, path: &str) -> usize {
    o.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.split('?').next() == Some(path))
        .count()
}

/// GETs on one path, as the origin saw them.
fn gets_on(o: &Origin, path: &str) -> usize {
    o.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "GET" && s.uri.split('?').next() == Some(path))
        .count()
}

#[tokio::test]
async fn fresh_answers_come_from_the_store_with_age_and_cache_status() {
    let o = origin(|_req| async { resp(200, &[("cache-control", "max-age=60")], "v1") }).await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    let first = get_h(a, "/a?b=1", &[]).await;
    assert_eq!(first.text(), "v1");
    let cs = first.header("cache-status").unwrap();
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    let second = get_h(a, "/a?b=1", &[]).await;
    assert_eq!(second.text(), "v1");
    assert!(second.header("cache-status").unwrap().contains("hit"));
    let age: u64 = second.header("age").unwrap().parse().unwrap();
    assert!(age <= 2, "age {age}");
    // Another query is another URL.
    get_h(a, "/a?b=2", &[]).await;
    assert_eq!(o.hits(), 2);
    // HEAD is answered from the stored GET.
    let head = send(
        a,
        Request::head("/a?b=1")
            .header("host", "static.example.org")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.header("cache-status").unwrap().contains("hit"));
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn private_answers_are_never_stored() {
    let o = origin(|req| async move {
        match req.uri().path() {
            "/no-store" => resp(200, &[("cache-control", "no-store, max-age=60")], "x"),
            "/private" => resp(200, &[("cache-control", "private, max-age=60")], "x"),
            "/cookie" => resp(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("set-cookie", "sid=secret"),
                ],
                "x",
            ),
            "/shared" => resp(200, &[("cache-control", "s-maxage=60")], "x"),
            _ => resp(200, &[("cache-control", "max-age=60")], "x"),
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    for path in ["/no-store", "/private", "/cookie"] {
        for _ in 0..2 {
            let g = get_h(a, path, &[]).await;
            assert_eq!(g.status, 200);
            assert!(
                !g.header("cache-status").unwrap().contains("stored"),
                "{path}"
            );
        }
        assert_eq!(
            hits_on(&o, path),
            2,
            "{path} must reach the origin every time"
        );
    }
    // Authorization: a plain max-age answer is the user's own...
    for _ in 0..2 {
        get_h(a, "/plain", &[("authorization", "Bearer alice")]).await;
    }
    assert_eq!(hits_on(&o, "/plain"), 2);
    // ...unless the origin says it may be shared (s-maxage).
    for _ in 0..2 {
        get_h(a, "/shared", &[("authorization", "Bearer alice")]).await;
    }
    assert_eq!(hits_on(&o, "/shared"), 1);
    // A request with no-store is not stored either.
    for _ in 0..2 {
        get_h(a, "/req-no-store", &[("cache-control", "no-store")]).await;
    }
    assert_eq!(hits_on(&o, "/req-no-store"), 2);
    // POST is never stored.
    for _ in 0..2 {
        send(
            a,
            Request::post("/post")
                .header("host", "static.example.org")
                .body(full("x"))
                .unwrap(),
        )
        .await;
    }
    assert_eq!(hits_on(&o, "/post"), 2);

    // cookies = true stores answers that set cookies.
    let gh2 = proxy(&cfg(o.addr, "cookies = true")).await;
    for _ in 0..2 {
        let g = get_h(web(&gh2), "/cookie", &[]).await;
        assert_eq!(g.header("set-cookie"), Some("sid=secret"));
    }
    assert_eq!(hits_on(&o, "/cookie"), 3);
}

#[tokio::test]
async fn freshness_from_expires_heuristic_and_default_ttl() {
    let o = origin(|req| async move {
        let now = std::time::SystemTime::now();
        let date = gatehouse_cache::policy::fmt_date(now);
        match req.uri().path() {
            "/expires" => {
                let exp = gatehouse_cache::policy::fmt_date(now + Duration::from_secs(3600));
                resp(200, &[("date", &date), ("expires", &exp)], "e")
            }
            "/expired" => resp(200, &[("expires", "0")], "e"),
            "/heuristic" => {
                let lm = gatehouse_cache::policy::fmt_date(now - Duration::from_secs(86_400 * 10));
                resp(200, &[("date", &date), ("last-modified", &lm)], "h")
            }
            "/redirect" => resp(302, &[("location", "/x")], ""),
            _ => resp(200, &[], "bare"),
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let ttl = proxy(&cfg(o.addr, "default_ttl = \"60s\"")).await;
    for path in ["/expires", "/heuristic"] {
        get_h(web(&gh), path, &[]).await;
        let g = get_h(web(&gh), path, &[]).await;
        assert!(g.header("cache-status").unwrap().contains("hit"), "{path}");
        assert_eq!(hits_on(&o, path), 1, "{path}");
    }
    // Invalid Expires = already stale, and no validator: not stored.
    get_h(web(&gh), "/expired", &[]).await;
    get_h(web(&gh), "/expired", &[]).await;
    assert_eq!(hits_on(&o, "/expired"), 2);
    // No freshness, no validator, default_ttl 0: not stored.
    get_h(web(&gh), "/bare", &[]).await;
    get_h(web(&gh), "/bare", &[]).await;
    assert_eq!(hits_on(&o, "/bare"), 2);
    // default_ttl gives it freshness...
    get_h(web(&ttl), "/bare2", &[]).await;
    let g = get_h(web(&ttl), "/bare2", &[]).await;
    assert!(g.header("cache-status").unwrap().contains("hit"));
    assert_eq!(hits_on(&o, "/bare2"), 1);
    // ...but only to statuses with heuristic freshness: a bare 302 is not stored.
    get_h(web(&ttl), "/redirect", &[]).await;
    get_h(web(&ttl), "/redirect", &[]).await;
    assert_eq!(hits_on(&o, "/redirect"), 2);
}

/// An origin that answers 304 to a matching If-None-Match, with a version header it bumps.
async fn validating_origin(cc: &'static str) -> (Origin, Arc<AtomicUsize>) {
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    let o = origin(move |req| {
        let v = v.load(Ordering::SeqCst);
        async move {
            let etag = format!("\"v{v}\"");
            let vh = v.to_string();
            if header_of(&req, "if-none-match").as_deref() == Some(etag.as_str()) {
                return resp(
                    304,
                    &[("etag", &etag), ("cache-control", cc), ("x-version", &vh)],
                    "",
                );
            }
            resp(
                200,
                &[("etag", &etag), ("cache-control", cc), ("x-version", &vh)],
                &format!("body v{v}"),
            )
        }
    })
    .await;
    (o, version)
}

#[tokio::test]
async fn zero_freshness_with_a_validator_is_revalidated_on_every_use() {
    let (o, version) = validating_origin("no-cache").await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    assert_eq!(get_h(a, "/r", &[]).await.text(), "body v1");
    let g = get_h(a, "/r", &[]).await;
    assert_eq!(g.text(), "body v1");
    let cs = g.header("cache-status").unwrap();
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    assert_eq!(o.hits(), 2);
    assert_eq!(
        o.last().headers.get("if-none-match").unwrap(),
        "\"v1\"",
        "validation carries the stored ETag"
    );
    // A client's own validator is answered from the store: 304 without a body.
    let g = get_h(a, "/r", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(g.status, 304);
    // A changed origin answer replaces the stored one.
    version.store(2, Ordering::SeqCst);
    assert_eq!(get_h(a, "/r", &[]).await.text(), "body v2");
    assert_eq!(get_h(a, "/r", &[]).await.header("x-version"), Some("2"));
}

#[tokio::test]
async fn a_304_refreshes_the_stored_headers() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let o = origin(move |req| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        async move {
            if header_of(&req, "if-none-match").is_some() {
                resp(
                    304,
                    &[
                        ("etag", "\"a\""),
                        ("cache-control", "max-age=60"),
                        ("x-refreshed", "yes"),
                    ],
                    "",
                )
            } else {
                resp(
                    200,
                    &[
                        ("etag", "\"a\""),
                        ("cache-control", "max-age=0"),
                        ("x-n", &i.to_string()),
                    ],
                    "payload",
                )
            }
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    get_h(a, "/p", &[]).await;
    let g = get_h(a, "/p", &[]).await; // stale (max-age=0): validated, 304 makes it fresh
    assert_eq!(g.text(), "payload");
    assert_eq!(g.header("x-refreshed"), Some("yes"));
    let g = get_h(a, "/p", &[]).await;
    assert!(
        g.header("cache-status").unwrap().contains("hit"),
        "fresh after the 304"
    );
    assert_eq!(g.header("x-refreshed"), Some("yes"));
    assert_eq!(g.header("x-n"), Some("0"));
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn vary_keeps_variants_apart_and_star_never_matches() {
    let o = origin(|req| async move {
        let lang = header_of(&req, "accept-language").unwrap_or_default();
        if req.uri().path() == "/star" {
            return resp(200, &[("cache-control", "max-age=60"), ("vary", "*")], "s");
        }
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            &format!("lang={lang}"),
        )
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    for _ in 0..2 {
        assert_eq!(
            get_h(a, "/v", &[("accept-language", "fr")]).await.text(),
            "lang=fr"
        );
        assert_eq!(
            get_h(a, "/v", &[("accept-language", "de")]).await.text(),
            "lang=de"
        );
    }
    assert_eq!(hits_on(&o, "/v"), 2);
    let g = get_h(a, "/v", &[("accept-language", "it")]).await;
    assert!(g.header("cache-status").unwrap().contains("fwd=vary-miss"));
    for _ in 0..2 {
        get_h(a, "/star", &[]).await;
    }
    assert_eq!(hits_on(&o, "/star"), 2);
}

#[tokio::test]
async fn request_directives_are_honoured() {
    let (o, _v) = validating_origin("max-age=60").await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    // only-if-cached on a miss: 504, origin untouched.
    let g = get_h(a, "/d", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(g.status, 504);
    assert_eq!(o.hits(), 0);
    get_h(a, "/d", &[]).await;
    assert_eq!(
        get_h(a, "/d", &[("cache-control", "only-if-cached")])
            .await
            .status,
        200
    );
    assert_eq!(o.hits(), 1);
    // no-cache and max-age=0 make us validate; Pragma too for HTTP/1.0-style clients.
    for h in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        let before = o.hits();
        let g = get_h(a, "/d", &[h]).await;
        assert_eq!(g.status, 200);
        assert_eq!(o.hits(), before + 1, "{h:?}");
        assert!(o.last().headers.contains_key("if-none-match"));
    }
    // min-fresh beyond what is left: validate; within it: hit.
    let before = o.hits();
    get_h(a, "/d", &[("cache-control", "min-fresh=3600")]).await;
    assert_eq!(o.hits(), before + 1);
    get_h(a, "/d", &[("cache-control", "min-fresh=5")]).await;
    assert_eq!(o.hits(), before + 1);
}

#[tokio::test]
async fn stale_answers_only_where_allowed() {
    let o = origin(|req| async move {
        let cc = match req.uri().path() {
            "/mr" => "max-age=1, must-revalidate",
            _ => "max-age=1",
        };
        resp(200, &[("cache-control", cc)], "x")
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    get_h(a, "/s", &[]).await;
    get_h(a, "/mr", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // max-stale accepts the stale copy...
    let g = get_h(a, "/s", &[("cache-control", "max-stale=60")]).await;
    assert!(
        g.header("cache-status").unwrap().contains("hit; ttl=-"),
        "{:?}",
        g.header("cache-status")
    );
    assert_eq!(hits_on(&o, "/s"), 1);
    // ...but not one that must be revalidated.
    get_h(a, "/mr", &[("cache-control", "max-stale=60")]).await;
    assert_eq!(hits_on(&o, "/mr"), 2);
    // Without max-stale a stale copy goes to the origin.
    get_h(a, "/s", &[]).await;
    assert_eq!(hits_on(&o, "/s"), 2);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let o = origin(move |_req| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        async move {
            // The refreshed copy stays fresh: a loaded machine polling it more than a second
            // later must not start a second, legitimate, refresh.
            let cc = if i > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "max-age=60"
            } else {
                "max-age=1, stale-while-revalidate=60"
            };
            resp(200, &[("cache-control", cc)], &format!("v{i}"))
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    assert_eq!(get_h(a, "/w", &[]).await.text(), "v0");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t = std::time::Instant::now();
    let g = get_h(a, "/w", &[]).await;
    assert_eq!(g.text(), "v0", "stale copy answered");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "did not wait for the origin"
    );
    assert!(
        eventually(Duration::from_secs(5), async || get_h(a, "/w", &[])
            .await
            .text()
            == "v1")
        .await,
        "refreshed in the background"
    );
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn stale_if_error_stands_in_for_a_failing_origin() {
    let fail = Arc::new(AtomicUsize::new(0));
    let f2 = fail.clone();
    let o = origin(move |req| {
        let failing = f2.load(Ordering::SeqCst) == 1;
        async move {
            let cc = if req.uri().path() == "/e" {
                "max-age=1, stale-if-error=60"
            } else {
                "max-age=1"
            };
            if failing {
                resp(503, &[], "down")
            } else {
                resp(200, &[("cache-control", cc)], "good")
            }
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    get_h(a, "/e", &[]).await;
    get_h(a, "/plain", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fail.store(1, Ordering::SeqCst);
    let g = get_h(a, "/e", &[]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "good"));
    assert!(g.header("cache-status").unwrap().contains("fwd-status=503"));
    let g = get_h(a, "/plain", &[]).await;
    assert_eq!(g.status, 503, "no stale-if-error: the error passes");
    // The origin gone entirely: stale as well.
    o.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let g = get_h(a, "/e", &[]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "good"));
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_its_locations() {
    let o = origin(|req| async move {
        match (req.method().as_str(), req.uri().path()) {
            ("GET", _) => resp(200, &[("cache-control", "max-age=60")], "got"),
            ("POST", "/new") => resp(
                201,
                &[
                    ("location", "/a"),
                    ("content-location", "http://static.example.org/b"),
                ],
                "",
            ),
            ("DELETE", _) => resp(500, &[], ""),
            _ => resp(200, &[], "done"),
        }
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    let warm = async |path: &str| {
        get_h(a, path, &[]).await;
        get_h(a, path, &[]).await;
    };
    for p in ["/a", "/b", "/c"] {
        warm(p).await;
        assert_eq!(gets_on(&o, p), 1);
    }
    let post = |path: &'static str, method: &'static str| {
        send(
            a,
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", "static.example.org")
                .body(full("x"))
                .unwrap(),
        )
    };
    let g = post("/c", "PUT").await;
    assert_eq!(
        g.header("cache-status"),
        Some("gatehouse; fwd=method; fwd-status=200")
    );
    get_h(a, "/c", &[]).await;
    assert_eq!(gets_on(&o, "/c"), 2, "PUT invalidated /c");
    post("/new", "POST").await;
    get_h(a, "/a", &[]).await;
    get_h(a, "/b", &[]).await;
    assert_eq!(gets_on(&o, "/a"), 2, "Location invalidated");
    assert_eq!(gets_on(&o, "/b"), 2, "Content-Location invalidated");
    // A failed unsafe request invalidates nothing.
    post("/a", "DELETE").await;
    get_h(a, "/a", &[]).await;
    assert_eq!(gets_on(&o, "/a"), 2);
}

#[tokio::test]
async fn a_thousand_concurrent_misses_make_one_origin_request() {
    let o = origin(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        resp(200, &[("cache-control", "max-age=60")], &"z".repeat(20_000))
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        tasks.push(tokio::spawn(async move { get_h(a, "/hot", &[]).await }));
    }
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(g.status, 200);
        assert_eq!(g.body.len(), 20_000);
    }
    assert_eq!(o.hits(), 1, "one origin request for 1000 concurrent misses");
}

/// An origin answering "r<N>" (N counts requests from 0), fresh for a minute; the first answer
/// takes `delay`.
async fn slow_first_origin(delay: Duration) -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    origin(move |_req| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        async move {
            if i == 0 {
                tokio::time::sleep(delay).await;
            }
            resp(200, &[("cache-control", "max-age=60")], &format!("r{i}"))
        }
    })
    .await
}

#[tokio::test]
async fn waiters_go_to_the_origin_after_lock_timeout() {
    let o = slow_first_origin(Duration::from_secs(2)).await;
    let gh = proxy(&cfg(o.addr, "lock_timeout = \"200ms\"")).await;
    let a = web(&gh);
    let slow = tokio::spawn(async move { get_h(a, "/l", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    let g = get_h(a, "/l", &[]).await;
    assert_eq!(g.text(), "r1");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(slow.await.unwrap().text(), "r0");
}

#[tokio::test]
async fn ranges_are_served_from_a_complete_entry() {
    let o = origin(|req| async move {
        if let Some(r) = header_of(&req, "range") {
            assert_eq!(r, "bytes=0-1");
            return resp(
                206,
                &[
                    ("content-range", "bytes 0-1/10"),
                    ("cache-control", "max-age=60"),
                ],
                "01",
            );
        }
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"r\"")],
            "0123456789",
        )
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    // A miss with Range goes to the origin; its 206 is not stored.
    let g = get_h(a, "/f", &[("range", "bytes=0-1")]).await;
    assert_eq!((g.status, g.text().as_str()), (206, "01"));
    get_h(a, "/f", &[]).await;
    assert_eq!(o.hits(), 2);
    let g = get_h(a, "/f", &[("range", "bytes=2-4")]).await;
    assert_eq!((g.status, g.text().as_str()), (206, "234"));
    assert_eq!(g.header("content-range"), Some("bytes 2-4/10"));
    let g = get_h(a, "/f", &[("range", "bytes=-3")]).await;
    assert_eq!(g.text(), "789");
    let g = get_h(a, "/f", &[("range", "bytes=20-")]).await;
    assert_eq!(g.status, 416);
    assert_eq!(g.header("content-range"), Some("bytes */10"));
    // If-Range with another validator: the whole thing.
    let g = get_h(a, "/f", &[("range", "bytes=2-4"), ("if-range", "\"old\"")]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "0123456789"));
    assert_eq!(o.hits(), 2);
}

async fn purge(admin: SocketAddr, query: &str) -> (u16, String) {
    let g = send(
        admin,
        Request::builder()
            .method("PURGE")
            .uri(format!("/cache?{query}"))
            .header("host", "admin")
            .body(empty())
            .unwrap(),
    )
    .await;
    (g.status, g.text())
}

#[tokio::test]
async fn purge_by_url_and_by_prefix() {
    let o = origin(|_req| async {
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            "x",
        )
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let (a, admin) = (web(&gh), gh.admin_addr().unwrap());
    for p in ["/a?b=1", "/img/1", "/img/2", "/other"] {
        get_h(a, p, &[("accept-language", "fr")]).await;
        get_h(a, p, &[("accept-language", "de")]).await;
    }
    assert_eq!(o.hits(), 8);
    let (st, body) = purge(admin, "url=http%3A%2F%2Fstatic.example.org%2Fa%3Fb%3D1").await;
    assert_eq!((st, body.as_str()), (200, r#"{"purged":1}"#));
    get_h(a, "/a?b=1", &[("accept-language", "de")]).await;
    assert_eq!(o.hits(), 9, "both variants dropped");
    let (st, body) = purge(admin, "prefix=http%3A%2F%2Fstatic.example.org%2Fimg%2F").await;
    assert_eq!((st, body.as_str()), (200, r#"{"purged":2}"#));
    get_h(a, "/img/1", &[("accept-language", "fr")]).await;
    get_h(a, "/other", &[("accept-language", "fr")]).await;
    assert_eq!(o.hits(), 10, "/img/1 refetched, /other still stored");
    assert_eq!(purge(admin, "url=not%20a%20url").await.0, 400);
    assert_eq!(purge(admin, "nothing=1").await.0, 400);
}

fn ghc_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ghc"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_disk_tier_survives_a_restart_and_never_serves_a_damaged_file() {
    let dir = std::env::temp_dir().join(format!("gh-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = origin(|req| async move {
        if req.uri().path() == "/lang" {
            let l = header_of(&req, "accept-language").unwrap_or_default();
            return resp(
                200,
                &[
                    ("cache-control", "max-age=600"),
                    ("vary", "accept-language"),
                ],
                &format!("lang {l}"),
            );
        }
        let body = format!("payload of {}", req.uri().path()).repeat(100);
        resp(200, &[("cache-control", "max-age=600")], &body)
    })
    .await;
    let config = proxy_config(o.addr, Route::to("app").raw(caching("enabled = true")))
        .cache(r#"memory = "8MiB""#)
        .cache(format!(
            r#"disk = {{ path = {}, size = "64MiB" }}"#,
            quoted(dir.display())
        ))
        .toml();
    let gh = proxy(&config).await;
    for p in ["/one", "/two"] {
        get_h(web(&gh), p, &[]).await;
    }
    // Two variants of one URL: the second store must not delete the first one's file.
    get_h(web(&gh), "/lang", &[("accept-language", "fr")]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    get_h(web(&gh), "/lang", &[("accept-language", "de")]).await;
    assert!(
        eventually(Duration::from_secs(5), async || ghc_files(&dir).len() == 4).await,
        "written to disk: {:?}",
        ghc_files(&dir)
    );
    gh.shutdown(Duration::from_secs(1)).await;

    let gh = proxy(&config).await;
    for l in ["fr", "de"] {
        let g = get_h(web(&gh), "/lang", &[("accept-language", l)]).await;
        assert_eq!(g.text(), format!("lang {l}"));
        assert!(
            g.header("cache-status").unwrap().contains("hit"),
            "{l} from disk"
        );
    }
    assert_eq!(hits_on(&o, "/lang"), 2);
    let g = get_h(web(&gh), "/one", &[]).await;
    assert!(
        g.header("cache-status").unwrap().contains("hit"),
        "served from disk after restart"
    );
    assert_eq!(g.text(), "payload of /one".repeat(100));
    assert_eq!(hits_on(&o, "/one") + hits_on(&o, "/two"), 2);
    gh.shutdown(Duration::from_secs(1)).await;

    // Damage both files: one bit flipped in the body, one truncated.
    let mut files: Vec<_> = ghc_files(&dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(10)
                .any(|w| w == b"payload of")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for (i, f) in files.iter().enumerate() {
        let mut b = std::fs::read(f).unwrap();
        if i == 0 {
            let mid = b.len() / 2;
            b[mid] ^= 0x20;
        } else {
            b.truncate(b.len() - 10);
        }
        std::fs::write(f, b).unwrap();
    }
    let gh = proxy(&config).await;
    for p in ["/one", "/two"] {
        let g = get_h(web(&gh), p, &[]).await;
        assert_eq!(
            g.text(),
            format!("payload of {p}").repeat(100),
            "never the damaged copy"
        );
    }
    assert_eq!(
        hits_on(&o, "/one") + hits_on(&o, "/two"),
        4,
        "both refetched"
    );
    gh.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn memory_stays_within_its_bound_and_the_hot_set_survives_a_scan() {
    let o = origin(|_req| async {
        resp(
            200,
            &[("cache-control", "max-age=600")],
            &"b".repeat(10_000),
        )
    })
    .await;
    let gh = proxy(
        &proxy_config(o.addr, Route::to("app").raw(caching("enabled = true")))
            .cache(r#"memory = "1MiB""#)
            .cache(r#"max_object = "64KiB""#)
            .toml(),
    )
    .await;
    let a = web(&gh);
    // A hot set of 20 objects (~200 KiB), used repeatedly...
    for _ in 0..3 {
        for i in 0..20 {
            get_h(a, &format!("/hot/{i}"), &[]).await;
        }
    }
    // ...then a scan of 300 one-off objects (~3 MiB, three times the memory).
    for i in 0..300 {
        get_h(a, &format!("/scan/{i}"), &[]).await;
    }
    let before = o.hits();
    for i in 0..20 {
        get_h(a, &format!("/hot/{i}"), &[]).await;
    }
    let refetched = o.hits() - before;
    eprintln!(
        "hot set after a 3x scan: {}/20 still stored",
        20 - refetched
    );
    assert!(
        refetched <= 4,
        "scan pushed out {refetched} of 20 hot objects"
    );
    let m = send(
        gh.admin_addr().unwrap(),
        Request::get("/metrics")
            .header("host", "a")
            .body(empty())
            .unwrap(),
    )
    .await
    .text();
    let bytes: u64 = m
        .lines()
        .find(|l| l.starts_with("gatehouse_cache_bytes{tier=\"memory\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        bytes > 0 && bytes <= 1 << 20,
        "memory tier holds {bytes} bytes"
    );
    for series in [
        "gatehouse_cache_hits_total",
        "gatehouse_cache_misses_total",
        "gatehouse_cache_evictions_total{tier=\"memory\"}",
        "gatehouse_cache_stale_served_total",
        "gatehouse_cache_revalidations_total",
    ] {
        assert!(m.contains(series), "{series} in /metrics");
    }
}

#[tokio::test]
async fn cache_config_errors_name_the_key() {
    let text = r#"
[cache]
memory = "1MiB"
max_object = "2MiB"
[listeners.web]
bind = "127.0.0.1:0"
[[routes]]
respond = { status = 200 }
cache = { default_ttl = "soon" }
compress = { algorithms = ["gzip", "lz4"], types = ["html"] }
"#;
    let errs = gatehouse_config::parse(text, "c.toml")
        .unwrap_err()
        .to_string();
    for want in [
        "cache.max_object",
        "routes[0].cache.default_ttl",
        "routes[0].compress.algorithms[1]",
        "routes[0].compress.types[0]",
        "routes[0].cache: only routes with an `upstream` can cache",
    ] {
        assert!(errs.contains(want), "{want} missing from:\n{errs}");
    }
}

#[tokio::test]
async fn one_route_never_serves_another_routes_entries() {
    let a_origin =
        origin(|_r| async { resp(200, &[("cache-control", "max-age=60")], "from A") }).await;
    let b_origin =
        origin(|_r| async { resp(200, &[("cache-control", "max-age=60")], "from B") }).await;
    let gh = proxy(
        &Config::new()
            .listener("a", Listener::http())
            .listener("b", Listener::http())
            .route(
                Route::to("a")
                    .listeners(["a"])
                    .raw(caching("enabled = true")),
            )
            .route(
                Route::to("b")
                    .listeners(["b"])
                    .raw(caching("enabled = true")),
            )
            .upstream("a", Upstream::servers([a_origin.addr]))
            .upstream("b", Upstream::servers([b_origin.addr]))
            .toml(),
    )
    .await;
    let (la, lb) = (gh.listener_addrs("a")[0], gh.listener_addrs("b")[0]);
    // The same Host and path on both listeners: the same URL, stored once per route.
    assert_eq!(
        get_with(la, "shared.example", "/x", &[]).await.text(),
        "from A"
    );
    assert_eq!(
        get_with(lb, "shared.example", "/x", &[]).await.text(),
        "from B"
    );
    assert_eq!(
        get_with(la, "shared.example", "/x", &[]).await.text(),
        "from A"
    );
    assert_eq!(
        get_with(lb, "shared.example", "/x", &[]).await.text(),
        "from B"
    );
    assert_eq!((a_origin.hits(), b_origin.hits()), (1, 1));
}

#[tokio::test]
async fn answers_varying_on_headers_the_proxy_sets_are_not_stored() {
    let o = origin(|req| async move {
        let vary = match req.uri().path() {
            "/cert" => "X-Client-Cert-Subject",
            _ => "X-Forwarded-For",
        };
        resp(200, &[("cache-control", "max-age=60"), ("vary", vary)], "x")
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    for path in ["/cert", "/xff"] {
        for _ in 0..2 {
            // The client's own copy of the header is replaced before the origin sees it.
            get_h(web(&gh), path, &[("x-client-cert-subject", "CN=admin")]).await;
        }
        assert_eq!(hits_on(&o, path), 2, "{path}");
    }
}

#[tokio::test]
async fn a_304_that_makes_the_answer_private_or_sets_a_cookie_drops_it() {
    let (o, _) = {
        let o = origin(|req| async move {
            if header_of(&req, "if-none-match").is_some() {
                let extra = if req.uri().path() == "/c" {
                    ("set-cookie", "sid=bob")
                } else {
                    ("cache-control", "private, max-age=60")
                };
                return resp(304, &[("etag", "\"e\""), extra], "");
            }
            resp(
                200,
                &[("etag", "\"e\""), ("cache-control", "max-age=0")],
                "shared",
            )
        })
        .await;
        (o, ())
    };
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let a = web(&gh);
    for path in ["/c", "/p"] {
        get_h(a, path, &[]).await; // stored (max-age=0 with a validator)
        let g = get_h(a, path, &[]).await; // validated: the 304 is not shareable
        assert_eq!(g.text(), "shared");
        let g = get_h(a, path, &[]).await;
        assert!(
            g.header("cache-status").unwrap().contains("uri-miss"),
            "{path}: dropped after the 304, got {:?}",
            g.header("cache-status")
        );
        assert_eq!(
            g.header("set-cookie"),
            None,
            "{path}: bob's cookie is nobody else's"
        );
    }
}

#[tokio::test]
async fn empty_answers_are_stored_too() {
    let o = origin(|req| async move {
        let status = if req.uri().path() == "/204" { 204 } else { 200 };
        resp(status, &[("cache-control", "max-age=60")], "")
    })
    .await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    for path in ["/empty", "/204"] {
        get_h(web(&gh), path, &[]).await;
        let g = get_h(web(&gh), path, &[]).await;
        assert!(g.header("cache-status").unwrap().contains("hit"), "{path}");
        assert_eq!(hits_on(&o, path), 1, "{path}");
    }
}

#[tokio::test]
async fn a_purge_during_a_fetch_wins_over_the_fetch() {
    let o = slow_first_origin(Duration::from_millis(400)).await;
    let gh = proxy(&cfg(o.addr, "enabled = true")).await;
    let (a, admin) = (web(&gh), gh.admin_addr().unwrap());
    let slow = tokio::spawn(async move { get_h(a, "/race", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    purge(admin, "url=http%3A%2F%2Fstatic.example.org%2Frace").await;
    assert_eq!(slow.await.unwrap().text(), "r0");
    assert_eq!(
        get_h(a, "/race", &[]).await.text(),
        "r1",
        "the pre-purge answer was not kept"
    );
}

#[tokio::test]
async fn a_304_from_the_store_matches_what_compression_sent() {
    let o = origin(|_req| async {
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"z\""),
                ("content-type", "text/html"),
            ],
            &"compress me ".repeat(200),
        )
    })
    .await;
    let gh = proxy(
        &proxy_config(
            o.addr,
            Route::to("app")
                .raw(caching("enabled = true"))
                .raw(r#"compress = { min_size = "10" }"#),
        )
        .toml(),
    )
    .await;
    let a = web(&gh);
    let g = get_h(a, "/z", &[("accept-encoding", "gzip")]).await;
    assert_eq!(g.header("etag"), Some("W/\"z\""));
    let g = get_h(
        a,
        "/z",
        &[("accept-encoding", "gzip"), ("if-none-match", "W/\"z\"")],
    )
    .await;
    assert_eq!(g.status, 304);
    assert_eq!(
        g.header("etag"),
        Some("W/\"z\""),
        "the ETag the client holds"
    );
    assert_eq!(g.header("vary"), Some("accept-encoding"));
    // A date If-Range from a client that gets gzip: the whole (encoded) answer, never identity
    // bytes to splice into its gzip copy.
    let lm = gatehouse_cache::policy::fmt_date(std::time::SystemTime::now());
    let g = get_h(
        a,
        "/z",
        &[
            ("accept-encoding", "gzip"),
            ("range", "bytes=0-9"),
            ("if-range", &lm),
        ],
    )
    .await;
    assert_eq!(
        (g.status, g.header("content-encoding")),
        (200, Some("gzip"))
    );
}

#[tokio::test]
async fn the_store_fills_at_the_origins_pace_not_the_first_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 16 << 20; // more than loopback socket buffers hold
    let o =
        origin(|_req| async { resp(200, &[("cache-control", "max-age=60")], &"y".repeat(SIZE)) })
            .await;
    let gh = proxy(
        &proxy_config(
            o.addr,
            Route::to("app").raw(caching(r#"lock_timeout = "10s""#)),
        )
        .cache(r#"memory = "64MiB""#)
        .cache(r#"max_object = "32MiB""#)
        .toml(),
    )
    .await;
    let a = web(&gh);
    // The first client reads the head and a little, then stops reading for 3 s.
    let mut slow = tokio::net::TcpStream::connect(a).await.unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nhost: static.example.org\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = slow.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut total = n;
        while let Ok(k) = slow.read(&mut buf).await {
            if k == 0 {
                break;
            }
            total += k;
        }
        total
    });
    // A second client, waiting on the first one's flight, is served long before that.
    let t = std::time::Instant::now();
    let g = get_h(a, "/big", &[]).await;
    assert_eq!(g.body.len(), SIZE);
    assert!(
        g.header("cache-status").unwrap().contains("hit"),
        "{:?}",
        g.header("cache-status")
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "waited {:?} for a slow client",
        t.elapsed()
    );
    let total = reader.await.unwrap();
    assert!(
        total > SIZE,
        "the slow client still got everything ({total} bytes with the head)"
    );
    assert_eq!(o.hits(), 1);

    // A first client that goes away mid-answer does not stop the copy.
    let mut gone = tokio::net::TcpStream::connect(a).await.unwrap();
    gone.write_all(b"GET /big2 HTTP/1.1\r\nhost: static.example.org\r\n\r\n")
        .await
        .unwrap();
    let _ = gone.read(&mut [0u8; 1024]).await.unwrap();
    drop(gone);
    assert!(
        eventually(Duration::from_secs(5), async || {
            get_h(a, "/big2", &[("cache-control", "only-if-cached")])
                .await
                .status
                == 200
        })
        .await,
        "stored although its first client left"
    );
    assert_eq!(o.hits(), 2);
}
