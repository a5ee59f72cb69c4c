//! Bytes from the network and from disk through the cache's parsers: Cache-Control and
//! HTTP-dates of requests and answers, conditionals and ranges against a stored answer, and the
//! disk form of an entry. None may panic; a decoded entry must encode back to the same bytes.
#![no_main]
use gatehouse_cache::entry::{Entry, decode_head};
use gatehouse_cache::policy;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(e) = Entry::decode(data) {
        assert_eq!(e.encode(), data, "decode then encode is the identity");
    }
    if let Some(h) = decode_head(data) {
        let _ = h.file_len();
    }
    // Split the input into header values for the request and the stored answer.
    let mut parts = data.split(|b| *b == b'\n');
    let mut req = HeaderMap::new();
    let mut stored = HeaderMap::new();
    for (name, to_req) in [
        ("cache-control", true),
        ("pragma", true),
        ("if-none-match", true),
        ("if-modified-since", true),
        ("range", true),
        ("if-range", true),
        ("cache-control", false),
        ("etag", false),
        ("last-modified", false),
        ("date", false),
        ("expires", false),
        ("age", false),
        ("vary", false),
    ] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            let map = if to_req { &mut req } else { &mut stored };
            map.append(HeaderName::from_static(name), v);
        }
    }
    let req_cc = policy::Directives::parse_request(&req);
    let cc = policy::Directives::parse(&stored);
    let rules = policy::RouteRules {
        default_ttl: std::time::Duration::from_secs(60),
        cookies: false,
    };
    let now = std::time::SystemTime::now();
    for status in [200u16, 206, 301, 404, 500] {
        let st = http::StatusCode::from_u16(status).unwrap();
        if let Ok(t) = policy::storable(&http::Method::GET, &req, &req_cc, st, &stored, &rules, (now, now)) {
            let _ = policy::decide(&t, &cc, &req_cc, now + std::time::Duration::from_secs(3600));
            let _ = policy::stale_if_error(&t, &cc, &req_cc, now);
        }
    }
    let _ = policy::not_modified(&req, &stored);
    for len in [0u64, 1, 10, u64::MAX] {
        match policy::range(&req, &stored, len) {
            policy::RangeAnswer::Partial(a, b) => assert!(a <= b && b < len),
            _ => {}
        }
    }
    let _ = policy::vary_names(&stored);
});
