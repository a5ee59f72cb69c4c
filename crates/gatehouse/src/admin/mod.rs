//! The admin listener: `GET /metrics` (Prometheus text), `GET /status` (JSON), `POST /reload`,
//! `PURGE /cache?url=...` / `PURGE /cache?prefix=...`, and `GET /` (a small status page). It only reads handles; it changes nothing but through
//! `Shared::reload`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::runtime::{Shared, Snapshot};

/// Serves one admin connection.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, &shared).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(&shared.snapshot()),
        ),
        (&Method::GET, "/status") => reply(
            StatusCode::OK,
            "application/json",
            status_json(&shared.snapshot(), shared).to_string(),
        ),
        (&Method::POST, "/reload") => match shared.reload().await {
            Ok(()) => reply(
                StatusCode::OK,
                "application/json",
                json!({"ok": true}).to_string(),
            ),
            Err(errors) => reply(
                StatusCode::BAD_REQUEST,
                "application/json",
                json!({"ok": false, "errors": errors}).to_string(),
            ),
        },
        (m, "/cache") if m.as_str() == "PURGE" => purge(req.uri().query(), &shared.snapshot()),
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard(&shared.snapshot()),
        ),
        (_, "/metrics" | "/status" | "/reload" | "/" | "/cache") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Decodes %XX escapes; None when one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The cache key of an absolute URL given to purge.
fn purge_key(url: &str) -> Option<String> {
    let u: http::Uri = url.parse().ok()?;
    let scheme = u.scheme_str()?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = u.authority()?.as_str();
    Some(crate::http::cache_flow::cache_key(scheme, host, &u))
}

/// `PURGE /cache?url=<absolute URL>` drops one URL with its variants; `?prefix=<absolute URL
/// prefix>` drops every URL under it. Answers `{"purged": N}`.
fn purge(query: Option<&str>, snap: &Snapshot) -> Response<Full<Bytes>> {
    let bad = |msg: &str| {
        reply(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({ "error": msg }).to_string(),
        )
    };
    let Some(cache) = &snap.cache else {
        return reply(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": "no route caches: there is no cache to purge"}).to_string(),
        );
    };
    let param = query.unwrap_or("").split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        matches!(k, "url" | "prefix").then_some((k, v))
    });
    let Some((kind, raw)) = param else {
        return bad("expected ?url=<absolute URL> or ?prefix=<absolute URL prefix>");
    };
    let Some(key) = percent_decode(raw).as_deref().and_then(purge_key) else {
        return bad("not a percent-encoded absolute http(s) URL");
    };
    let purged = if kind == "url" {
        usize::from(cache.purge(&key))
    } else {
        // "http://h" keys as "http://h/": everything on that host.
        cache.purge_prefix(&key)
    };
    tracing::info!(kind, url = %key, purged, "cache purge");
    reply(
        StatusCode::OK,
        "application/json",
        json!({ "purged": purged }).to_string(),
    )
}

/// Every upstream, its servers, health, in-flight requests and totals.
pub fn status_json(snap: &Snapshot, shared: &Shared) -> serde_json::Value {
    let upstreams: Vec<serde_json::Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let servers: Vec<serde_json::Value> = u
                .servers
                .iter()
                .map(|s| {
                    json!({
                        "address": s.spec.address,
                        "weight": s.spec.weight,
                        "backup": s.spec.backup,
                        "up": s.is_up(),
                        "ejected": s.is_ejected(),
                        "available": s.is_available(),
                        "active": s.active.load(Ordering::Relaxed),
                        "requests": s.requests.load(Ordering::Relaxed),
                        "failures": s.failures.load(Ordering::Relaxed),
                        "idle_connections": s.pool.idle_count(),
                    })
                })
                .collect();
            json!({
                "name": u.model.name,
                "balance": format!("{:?}", u.model.balance),
                "servers_up": u.primaries_up(),
                "servers": servers,
            })
        })
        .collect();
    let listeners: Vec<serde_json::Value> = snap
        .listeners
        .iter()
        .map(|l| json!({"name": l.model.name, "bind": l.model.bind.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "routes": l.routes.len()}))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connections": shared.live_connections(),
        "listeners": listeners,
        "upstreams": upstreams,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn dashboard(snap: &Snapshot) -> String {
    let mut rows = String::new();
    for u in &snap.upstreams {
        for s in &u.servers {
            let state = if s.is_available() {
                "<td class=up>up</td>"
            } else if s.is_ejected() {
                "<td class=down>ejected</td>"
            } else {
                "<td class=down>down</td>"
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}{}</td>{state}<td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.model.name),
                esc(&s.spec.address),
                if s.spec.backup { " (backup)" } else { "" },
                s.active.load(Ordering::Relaxed),
                s.requests.load(Ordering::Relaxed),
                s.failures.load(Ordering::Relaxed),
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>gatehouse</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px}}\
         .up{{background:#cfc}}.down{{background:#fcc}}</style></head><body>\
         <h1>gatehouse {}</h1><table><tr><th>upstream</th><th>server</th><th>state</th>\
         <th>in flight</th><th>requests</th><th>failures</th></tr>{rows}</table>\
         <p><a href=/metrics>metrics</a> · <a href=/status>status JSON</a></p></body></html>",
        env!("CARGO_PKG_VERSION")
    )
}
