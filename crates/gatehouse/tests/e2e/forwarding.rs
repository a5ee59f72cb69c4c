//! Forwarding headers and trust, request ids, hop-by-hop removal, and framing safety.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};

fn cfg(origin: std::net::SocketAddr, trusted: &str) -> String {
    cfg_route(origin, trusted, "")
}

/// A proxy of [`cfg_route`] in front of `o`.
async fn proxy_route(o: &Origin, trusted: &str, route: &str) -> gatehouse::Gatehouse {
    proxy(&cfg_route(o.addr, trusted, route)).await
}

/// [`cfg`] with more keys on the route.
fn cfg_route(origin: std::net::SocketAddr, trusted: &str, route: &str) -> String {
    Config::new()
        .listener(
            "web",
            Listener::http().raw(format!("trusted_proxies = [{trusted}]")),
        )
        .route(Route::to("app").raw(route))
        .upstream("app", Upstream::servers([origin]))
        .toml()
}

/// An origin that answers with the request body length and echoes a few request facts.
async fn body_echo() -> Origin {
    origin(|req| async move {
        let cl = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let te = req
            .headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        text(200, format!("len={} cl={cl} te={te}", body.len()))
    })
    .await
}

#[tokio::test]
async fn untrusted_clients_cannot_forge_their_address() {
    let o = named("o").await;
    let gh = proxy(&cfg(o.addr, "")).await;
    let addr = web(&gh);
    get_with(
        addr,
        "shop.example",
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ],
    )
    .await;
    let h = o.last().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["forwarded"], "for=127.0.0.1;host=shop.example;proto=http");
    assert_eq!(h["via"], "1.1 gatehouse");
    assert_eq!(h["x-request-id"].len(), 32);
}

/// An origin answering 200 with `body` and one field of its own.
async fn answering_with(name: &'static str, value: &'static str, body: &'static str) -> Origin {
    origin(move |_req| async move {
        let mut r = text(200, body);
        r.headers_mut().insert(name, value.parse().unwrap());
        r
    })
    .await
}

/// The client's forwarding fields, a Via of its own and a request id.
const CLIENT_FIELDS: [(&str, &str); 6] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil"),
    ("via", "1.0 their-proxy"),
    ("x-request-id", "abc-123"),
];

#[tokio::test]
async fn a_route_may_forward_only_x_forwarded_for_and_clients_still_cannot_forge() {
    // The origin names a request id of its own: with ours off, it reaches the client as sent.
    let o = answering_with("x-request-id", "origin-7", "ok").await;
    let gh = proxy_route(&o, "", r#"forward_headers = ["x-forwarded-for"]"#).await;
    let r = get_with(web(&gh), "shop.example", "/", &CLIENT_FIELDS).await;
    assert_eq!(r.status, 200);
    let h = o.last().headers;
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "ours replaces the forged one"
    );
    for gone in ["forwarded", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(
            !h.contains_key(gone),
            "an untrusted client's {gone} reached the origin: {h:?}"
        );
    }
    // Via and the request id say nothing of the client's address: they pass as sent.
    assert_eq!(h["via"], "1.0 their-proxy");
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(r.header("via"), None, "no Via on the answer");
    assert_eq!(r.header("x-request-id"), Some("origin-7"));
}

#[tokio::test]
async fn a_cache_hit_of_such_a_route_adds_no_request_id_or_via_either() {
    let o = answering_with("cache-control", "max-age=60", "cached").await;
    let gh = proxy_route(
        &o,
        "",
        "forward_headers = [\"x-forwarded-for\"]\ncache = { enabled = true }",
    )
    .await;
    for _ in 0..2 {
        let r = get_with(web(&gh), "shop.example", "/c", &[]).await;
        assert_eq!(r.text(), "cached");
        assert_eq!(r.header("x-request-id"), None);
        assert_eq!(r.header("via"), None);
    }
    assert_eq!(o.hits(), 1, "the second answer was a hit");
}

#[tokio::test]
async fn a_route_forwarding_no_fields_passes_a_trusted_proxys_as_they_came() {
    let o = named("o").await;
    // The route's request_headers put the fields in the header map rather than lines: both
    // paths are covered between this test and the one above.
    let gh = proxy_route(
        &o,
        "\"127.0.0.0/8\"",
        "forward_headers = []\nrequest_headers = { set = { \"x-env\" = \"test\" } }",
    )
    .await;
    let r = get_with(web(&gh), "shop.example", "/", &CLIENT_FIELDS).await;
    assert_eq!(r.status, 200);
    let h = o.last().headers;
    for (name, value) in CLIENT_FIELDS {
        assert_eq!(h[name], value, "{name}");
        assert_eq!(h.get_all(name).iter().count(), 1, "{name} added to");
    }
    assert_eq!(h["x-env"], "test");
    assert_eq!(r.header("via"), None);
    assert_eq!(r.header("x-request-id"), None);
}

#[tokio::test]
async fn trusted_proxies_are_appended_to() {
    let o = named("o").await;
    let gh = proxy(&cfg(o.addr, "\"127.0.0.0/8\"")).await;
    let addr = web(&gh);
    let r = get_with(
        addr,
        "shop.example",
        "/",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc-123"),
        ],
    )
    .await;
    let h = o.last().headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["forwarded"],
        "for=203.0.113.9;proto=https, for=127.0.0.1;host=shop.example;proto=http"
    );
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(
        r.header("x-request-id"),
        Some("abc-123"),
        "request id echoed to the client"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways_but_never_framing() {
    let o = origin(|req| async move {
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        let mut r = text(200, format!("len={len}"));
        r.headers_mut()
            .insert("connection", "x-internal".parse().unwrap());
        r.headers_mut()
            .insert("x-internal", "secret".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        r
    })
    .await;
    let gh = proxy(&cfg(o.addr, "")).await;
    let addr = web(&gh);
    // `Connection: content-length, host` must not strip the framing or the Host.
    let resp = raw(
        addr,
        b"POST /p HTTP/1.1\r\nHost: h.example\r\nConnection: content-length, host, x-secret\r\n\
          X-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\n\
          Content-Length: 5\r\n\r\nhello",
        Duration::from_millis(500),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("len=5"), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("x-internal"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("keep-alive: timeout"),
        "{resp}"
    );
    let h = o.last().headers;
    assert_eq!(h["host"], "h.example");
    assert_eq!(h["content-length"], "5");
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the origin");
    }
    assert_eq!(
        h["te"], "trailers",
        "TE: trailers is the one TE value forwarded"
    );
}

#[tokio::test]
async fn chunked_requests_are_reframed_and_ambiguous_framing_never_reaches_the_origin() {
    let o = body_echo().await;
    let gh = proxy(&cfg(o.addr, "")).await;
    let addr = web(&gh);
    let resp = raw(
        addr,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(resp.contains("len=11"), "{resp}");

    // CL + TE (RFC 9112 §6.3): refused with 400, the connection closed, and nothing — neither
    // the request nor the bytes a CL-framing origin would read as a second request — forwarded.
    let before = o.hits();
    let resp = raw(
        addr,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(800),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closes: {resp}"
    );
    assert_eq!(
        o.hits(),
        before,
        "nothing of an ambiguous request reaches the origin"
    );
    // The same, with the framing headers in the other order and on a kept-alive connection.
    let resp = raw(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Content-Length: 3\r\n\r\n0\r\n\r\n",
        Duration::from_millis(800),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("HTTP/1.1 400"),
        "second, pipelined request refused too: {resp}"
    );
    assert_eq!(o.hits(), before + 1);

    // Conflicting Content-Length values and a non-chunked final coding are refused.
    for bad in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"[..],
    ] {
        let before = o.hits();
        let resp = raw(addr, bad, Duration::from_millis(500)).await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{:?} -> {resp}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(o.hits(), before);
    }
    // HTTP/1.1 without Host.
    let resp = raw(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(500)).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}
