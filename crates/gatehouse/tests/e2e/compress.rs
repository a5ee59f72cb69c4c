//! Response compression: negotiation, what is skipped, and composition with the cache.

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use http::Request;
use tokio::io::AsyncReadExt;

use crate::common::*;
use crate::config::{Config, Route, Upstream};

fn page() -> String {
    (0..2000)
        .map(|i| format!("<p>line {i} of a page that compresses well</p>\n"))
        .collect()
}

async fn decode(coding: &str, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => GzipDecoder::new(b).read_to_end(&mut out).await.unwrap(),
        "br" => BrotliDecoder::new(b).read_to_end(&mut out).await.unwrap(),
        "zstd" => ZstdDecoder::new(b).read_to_end(&mut out).await.unwrap(),
        other => panic!("unexpected coding {other}"),
    };
    out
}

async fn setup(route_extra: &str) -> (Origin, gatehouse::Gatehouse) {
    let o = origin(|req| async move {
        let (status, body) = match req.uri().path() {
            "/partial" => (206, page()),
            "/small" => (200, "tiny".to_string()),
            _ => (200, page()),
        };
        let mut r = text(status, body);
        let h = r.headers_mut();
        h.insert("etag", "\"p1\"".parse().unwrap());
        let ctype = match req.uri().path() {
            "/png" => "image/png",
            "/json" => "application/json",
            _ => "text/html; charset=utf-8",
        };
        h.insert("content-type", ctype.parse().unwrap());
        match req.uri().path() {
            "/encoded" => {
                h.insert("content-encoding", "gzip".parse().unwrap());
            }
            "/no-transform" => {
                h.insert("cache-control", "no-transform".parse().unwrap());
            }
            "/partial" => {
                h.insert("content-range", "bytes 0-99/1000".parse().unwrap());
            }
            "/cached" => {
                h.insert("cache-control", "max-age=60".parse().unwrap());
            }
            _ => {}
        }
        r
    })
    .await;
    let gh = proxy(
        &Config::web()
            .route(Route::to("app").raw(route_extra))
            .upstream("app", Upstream::servers([o.addr]))
            .toml(),
    )
    .await;
    (o, gh)
}

#[tokio::test]
async fn each_coding_decompresses_to_the_original() {
    let (_o, gh) = setup("compress = { min_size = \"1KiB\" }").await;
    for coding in ["gzip", "br", "zstd"] {
        let g = get_with(web(&gh), "a", "/", &[("accept-encoding", coding)]).await;
        assert_eq!(g.header("content-encoding"), Some(coding));
        assert_eq!(g.header("content-length"), None);
        assert_eq!(g.header("vary"), Some("accept-encoding"));
        assert_eq!(g.header("etag"), Some("W/\"p1\""), "strong ETag weakened");
        assert!(
            g.body.len() < page().len() / 4,
            "{coding}: {} bytes",
            g.body.len()
        );
        assert_eq!(decode(coding, &g.body).await, page().as_bytes(), "{coding}");
    }
}

#[tokio::test]
async fn negotiation_uses_q_values() {
    let (_o, gh) = setup("compress = { algorithms = [\"zstd\", \"br\", \"gzip\"] }").await;
    let enc = async |ae: &str| {
        get_with(web(&gh), "a", "/", &[("accept-encoding", ae)])
            .await
            .header("content-encoding")
            .map(str::to_string)
    };
    assert_eq!(
        enc("gzip, br, zstd").await.as_deref(),
        Some("zstd"),
        "our order on ties"
    );
    assert_eq!(enc("gzip;q=1, br;q=0.5").await.as_deref(), Some("gzip"));
    assert_eq!(enc("br;q=0, gzip;q=0.2").await.as_deref(), Some("gzip"));
    assert_eq!(enc("identity").await, None);
    assert_eq!(enc("*;q=0.1").await.as_deref(), Some("zstd"));
    let (_o2, only_gzip) = setup("compress = { algorithms = [\"gzip\"] }").await;
    let g = get_with(
        web(&only_gzip),
        "a",
        "/",
        &[("accept-encoding", "zstd, br")],
    )
    .await;
    assert_eq!(g.header("content-encoding"), None);
    assert_eq!(g.body.len(), page().len());
}

#[tokio::test]
async fn what_is_not_compressed() {
    let (_o, gh) = setup("compress = { min_size = \"1KiB\" }").await;
    let a = web(&gh);
    for path in ["/small", "/png", "/encoded", "/no-transform", "/partial"] {
        let g = get_with(a, "a", path, &[("accept-encoding", "gzip")]).await;
        let ce = g.header("content-encoding");
        if path == "/encoded" {
            assert_eq!(ce, Some("gzip"), "the origin's own encoding is kept");
            assert_eq!(g.body.len(), page().len(), "and not encoded twice");
        } else {
            assert_eq!(ce, None, "{path}");
        }
    }
    // HEAD: left as it is.
    let g = send(
        a,
        Request::head("/")
            .header("host", "a")
            .header("accept-encoding", "gzip")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(g.header("content-encoding"), None);
    // JSON is in the default types.
    let g = get_with(a, "a", "/json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(g.header("content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn one_cached_copy_serves_every_client() {
    let (o, gh) = setup("cache = { enabled = true }\ncompress = { }").await;
    let a = web(&gh);
    for coding in ["gzip", "identity", "br", "zstd", "gzip"] {
        let g = get_with(a, "a", "/cached", &[("accept-encoding", coding)]).await;
        let body = match g.header("content-encoding") {
            Some(c) => decode(c, &g.body).await,
            None => g.body.to_vec(),
        };
        assert_eq!(body, page().as_bytes(), "{coding}");
    }
    assert_eq!(o.hits(), 1, "compressed on the way out of one stored copy");
}
