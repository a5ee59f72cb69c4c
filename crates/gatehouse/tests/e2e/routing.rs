//! Routes: match fields, first match wins, actions, path and host rewriting, header operations.

use crate::common::*;
use crate::config::{Config, Route, Upstream};

#[tokio::test]
async fn routes_match_on_every_field_and_first_match_wins() {
    let api = named("api").await;
    let wild = named("wild").await;
    let canary = named("canary").await;
    let zone = named("zone").await;
    let methods = r#"methods = ["GET", "POST"]"#;
    let cfg = Config::web()
        .route(
            Route::to("canary")
                .hosts(["app.example.com"])
                .path_prefix("/api/")
                .raw(methods)
                .raw(r#"headers = { "x-canary" = "1" }"#),
        )
        .route(
            Route::to("api")
                .hosts(["app.example.com"])
                .path_prefix("/api/")
                .raw(methods),
        )
        .route(
            Route::to("zone")
                .hosts(["*.example.com"])
                .raw(r#"sources = ["10.0.0.0/8"]"#),
        )
        .route(
            Route::to("wild")
                .hosts(["*.example.com"])
                .raw(r#"sources = ["127.0.0.0/8"]"#),
        )
        .upstream("api", Upstream::servers([api.addr]))
        .upstream("wild", Upstream::servers([wild.addr]))
        .upstream("canary", Upstream::servers([canary.addr]))
        .upstream("zone", Upstream::servers([zone.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    assert_eq!(get(a, "app.example.com", "/api/x").await.text(), "api");
    assert_eq!(
        get(a, "APP.example.com:8080", "/api/x").await.text(),
        "api",
        "host is matched without port, any case"
    );
    assert_eq!(
        get_with(a, "app.example.com", "/api/x", &[("x-canary", "1")])
            .await
            .text(),
        "canary"
    );
    assert_eq!(
        get_with(a, "app.example.com", "/api/x", &[("x-canary", "2")])
            .await
            .text(),
        "api"
    );
    // wrong method falls through to the wildcard routes; 10/8 zone does not match loopback
    let r = send(
        a,
        http::Request::delete("/api/x")
            .header("host", "app.example.com")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.text(), "wild");
    assert_eq!(get(a, "deep.sub.example.com", "/").await.text(), "wild");
    assert_eq!(
        get(a, "example.com", "/").await.status,
        404,
        "*.example.com does not match the apex"
    );
    let r = get(a, "other.org", "/").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no route"), "{}", r.text());
    assert_eq!(zone.hits(), 0);
}

#[tokio::test]
async fn redirect_and_respond_actions() {
    let gh = proxy(
        &Config::web()
            .route(Route::respond(503, "down for maintenance").path_prefix("/maintenance"))
            .route(
                Route::new()
                    .raw(r#"redirect = { to = "https://{host}{path_and_query}", status = 308 }"#),
            )
            .toml(),
    )
    .await;
    let a = web(&gh);
    let r = get(a, "shop.example.org:8080", "/a/b?c=d").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.org/a/b?c=d")
    );
    let r = get(a, "x", "/maintenance").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "down for maintenance");
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn prefixes_host_and_header_operations() {
    let o = origin(|req| async move {
        let mut r = text(
            200,
            format!("{} {}", req.uri(), req.headers()["host"].to_str().unwrap()),
        );
        r.headers_mut()
            .insert("server", "secret-origin/1.0".parse().unwrap());
        r.headers_mut()
            .insert("x-powered-by", "php".parse().unwrap());
        r
    })
    .await;
    let cfg = Config::web()
        .route(
            Route::to("app")
                .path_prefix("/api/")
                .raw(r#"strip_prefix = "/api""#)
                .raw(r#"add_prefix = "/v1""#)
                .raw(r#"set_host = "app.internal""#)
                .raw(r#"request_headers = { set = { "x-env" = "prod" }, remove = ["x-debug"] }"#)
                .raw(
                    r#"response_headers = { set = { "x-frame-options" = "DENY" }, remove = ["server", "x-powered-by"] }"#,
                ),
        )
        .route(Route::to("app"))
        .upstream("app", Upstream::servers([o.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    let r = get_with(a, "www.example.com", "/api/users?id=7", &[("x-debug", "1")]).await;
    assert_eq!(r.text(), "/v1/users?id=7 app.internal");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.header("server").is_none() && r.header("x-powered-by").is_none());
    let seen = o.last();
    assert_eq!(seen.headers["x-env"], "prod");
    assert!(seen.headers.get("x-debug").is_none());
    // Without set_host the client's Host goes through unchanged.
    let r = get(a, "www.example.com:8080", "/plain").await;
    assert_eq!(r.text(), "/plain www.example.com:8080");
}

#[tokio::test]
async fn location_headers_are_mapped_back_to_the_public_host_and_prefix() {
    let o = origin(|req| async move {
        let mut r = text(302, "");
        let loc = match req.uri().path() {
            "/v1/login" => "http://app.internal/v1/home?x=1",
            "/v1/rel" => "/v1/next",
            _ => "https://elsewhere.example/v1/keep",
        };
        r.headers_mut().insert("location", loc.parse().unwrap());
        r
    })
    .await;
    let cfg = Config::web()
        .route(
            Route::to("app")
                .raw(r#"strip_prefix = "/api""#)
                .raw(r#"add_prefix = "/v1""#)
                .raw(r#"set_host = "app.internal""#),
        )
        .upstream("app", Upstream::servers([o.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let a = web(&gh);
    assert_eq!(
        get(a, "www.example.com", "/api/login")
            .await
            .header("location"),
        Some("http://www.example.com/api/home?x=1")
    );
    assert_eq!(
        get(a, "www.example.com", "/api/rel")
            .await
            .header("location"),
        Some("/api/next")
    );
    assert_eq!(
        get(a, "www.example.com", "/api/other")
            .await
            .header("location"),
        Some("https://elsewhere.example/v1/keep")
    );
}
