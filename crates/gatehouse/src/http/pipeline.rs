//! THE order of work on one HTTP request: `handle`, `proxy` and `Origin::fetch` read as the
//! list of phases, each a function of the module that owns it.
//!
//! ```text
//! handle: snapshot -> request id -> record (record.rs) -> proxy -> own fields (answer.rs)
//!   proxy: [ACME http-01] -> host -> 421 -> route (router.rs) -> limits -> [rate limit] -> action:
//!     respond | redirect | upstream:
//!       [cache route: cache_flow (lookup, flight, validation) around the fetch below]
//!       Origin::fetch: prepare the request (prepare.rs) -> pick + send with retries
//!         (forward.rs) -> passive health -> the answer's fields (answer.rs)
//!         -> tunnel (101) | rewrite the head (hop-by-hop, Location, Via) -> sticky
//!       -> [compress (compress.rs)] -> finish_upstream (sticky cookie, response ops)
//! -> the access log + metrics when the answer's body ends (record.rs)
//! ```
//!
//! Errors are `ProxyError`s that `respond::error_response` alone turns into answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use gatehouse_config::model::{Route, RouteAction};
use gatehouse_config::units::canonical_ip;
use gatehouse_h1::RawHead;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::body::{BodyStats, ClientBody, Observed, RequestBody};
use super::forward::forward;
use super::record::{Finish, Unanswered};
use super::{ProxyBody, answer, headers, prepare, respond, router};
use crate::error::{ErrorKind, ProxyError};
use crate::runtime::{ListenerRt, Shared, Snapshot};
use crate::upstream::{PickInput, Upstream};

/// What a client connection tells each of its requests.
pub struct ConnCtx {
    /// Process state.
    pub shared: Arc<Shared>,
    /// Listener name.
    pub listener: Arc<str>,
    /// The client (or the proxy in front of it).
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// What the TLS handshake established; None on cleartext.
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
}

/// An answer and, for an HTTP/1 origin's, its fields as sent.
type Answer = (Response<ProxyBody>, Option<RawHead>);

/// Serves one request, of head `parts` and `body`. Never fails: every error becomes an answer
/// here. The head comes boxed and is borrowed below (see `forward`).
pub async fn handle(
    mut parts: Box<Parts>,
    body: ClientBody,
    conn: Arc<ConnCtx>,
) -> Response<Observed> {
    let started = Instant::now();
    let snapshot = conn.shared.snapshot();
    let request_id = headers::request_id(&parts.headers);
    let mut pending = Unanswered::new(Finish::open(&conn, &snapshot, &parts, &request_id, started));
    let fin = pending.record();
    let result = match proxy(&conn, &snapshot, &mut parts, fin) {
        Ok(Action::Answer(resp)) => Ok((resp, None)),
        Ok(Action::Upstream(origin)) => upstream(&origin, &mut parts, body, fin).await,
        Err(e) => Err(e),
    };
    let mut fin = pending.answered();
    // Our own error answers always name the request id: it points into our log.
    let (mut resp, mut raw, echo_id) = match result {
        Ok((resp, raw)) => (resp, raw, fin.echo_request_id),
        Err(e) => (respond::error_response(&e, &request_id), None, true),
    };
    answer::own_fields(&conn, &fin, &mut resp, &mut raw, echo_id);
    fin.status = resp.status().as_u16();
    let (head, body) = resp.into_parts();
    Response::from_parts(head, Observed::new(body, fin).with_raw(raw))
}

/// What the phases before the action decided.
enum Action {
    /// An answer of gatehouse's own (ACME, respond, redirect).
    Answer(Response<ProxyBody>),
    /// To the route's upstream.
    Upstream(Origin),
}

/// The phases before the action, and the action of the route: an answer, or the origin to
/// ask. Not async: the upstream's exchange is awaited by `handle` itself, one future level
/// fewer for every request.
fn proxy(
    conn: &Arc<ConnCtx>,
    snap: &Arc<Snapshot>,
    parts: &mut Parts,
    fin: &mut Finish,
) -> Result<Action, ProxyError> {
    if let Some(answer) = acme_http01(conn, parts) {
        return Ok(Action::Answer(answer));
    }
    let Some(listener) = snap.listener(&conn.listener) else {
        return Err(ProxyError::new(ErrorKind::NoRoute).with("listener removed by a reload"));
    };
    let host_full = request_host(parts)?;
    let host = router::host_name(&host_full);
    if snap.access_log.is_some() {
        fin.host = host.to_string();
    }
    certificate_covers(conn, &host)?;
    let route_index = route(conn, snap, listener, parts, &host)?;
    let route = &snap.config.routes[route_index];
    fin.route = snap.route_names[route_index].clone();
    // For every answer of the route, a cache hit's too.
    fin.echo_request_id = route.forward_headers.request_id;
    limits(route, parts)?;
    if let Some(limit) = route.rate_limit {
        rate_limit(conn, snap, listener, route_index, limit, parts)?;
    }
    match &route.action {
        RouteAction::Respond { status, body } => Ok(Action::Answer(respond::text(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            body.clone(),
        ))),
        RouteAction::Redirect { to, status } => {
            Ok(Action::Answer(redirect(conn, parts, &host, to, *status)?))
        }
        RouteAction::Upstream(i) => {
            let client = canonical_ip(conn.peer.ip());
            let origin = Origin {
                conn: conn.clone(),
                snap: snap.clone(),
                route: route_index,
                up: snap.upstreams[*i].clone(),
                client,
                trusted: (listener.model.trusted_proxies.iter()).any(|c| c.contains(client)),
                host_full,
                request_id: fin.request_id.clone(),
            };
            fin.upstream = origin.up.name.clone();
            Ok(Action::Upstream(origin))
        }
    }
}

/// ACME http-01 answers come before any route (RFC 8555 §8.3), on cleartext listeners.
#[inline]
fn acme_http01(conn: &ConnCtx, parts: &Parts) -> Option<Response<ProxyBody>> {
    if conn.tls.is_some() {
        return None;
    }
    let token = parts
        .uri
        .path()
        .strip_prefix("/.well-known/acme-challenge/")?;
    let answer = conn.shared.challenges.http_answer(token)?;
    Some(respond::text(StatusCode::OK, answer))
}

/// The request's Host, with any port: HTTP/1.1 requires one (RFC 9112 §3.2); HTTP/2 carries
/// it as :authority; HTTP/1.0 may have none.
#[inline]
fn request_host(parts: &Parts) -> Result<String, ProxyError> {
    match router::request_host(parts) {
        Some(h) => Ok(h),
        None if parts.version == Version::HTTP_10 => Ok(String::new()),
        None => Err(ProxyError::new(ErrorKind::BadRequest).with("missing or invalid Host header")),
    }
}

/// No domain fronting across certificates: the Host must be a name the served certificate
/// covers (RFC 9110 §15.5.20: 421 Misdirected Request).
#[inline]
fn certificate_covers(conn: &ConnCtx, host: &str) -> Result<(), ProxyError> {
    match &conn.tls {
        Some(tls) if !host.is_empty() && !crate::tls::covers(&tls.names, host) => {
            Err(ProxyError::new(ErrorKind::Misdirected).with(format!(
                "host `{host}` is not covered by this connection's certificate"
            )))
        }
        _ => Ok(()),
    }
}

/// The index of the route that serves the request (the listener's routes, first match).
#[inline]
fn route(
    conn: &ConnCtx,
    snap: &Snapshot,
    listener: &ListenerRt,
    parts: &Parts,
    host: &str,
) -> Result<usize, ProxyError> {
    router::select(
        &snap.config.routes,
        &listener.routes,
        parts,
        host,
        canonical_ip(conn.peer.ip()),
        canonical_ip(conn.local.ip()),
    )
    .ok_or_else(|| {
        ProxyError::new(ErrorKind::NoRoute)
            .with(format!("host `{host}` path `{}`", parts.uri.path()))
    })
}

/// Limits known from the head: a declared body over the route's `max_body` (413). The rate
/// limit (429) follows, for routes that have one.
#[inline]
fn limits(route: &Route, parts: &Parts) -> Result<(), ProxyError> {
    if let (Some(max), Some(len)) = (route.max_body, content_length(parts))
        && len > max
    {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge)
            .with(format!("content-length {len} > max_body {max}")));
    }
    Ok(())
}

/// The route's rate limit: the request's key counted in the section's buckets (limit.rs).
#[inline(never)]
fn rate_limit(
    conn: &ConnCtx,
    snap: &Snapshot,
    listener: &ListenerRt,
    route_index: usize,
    limit: usize,
    parts: &Parts,
) -> Result<(), ProxyError> {
    let Some(limiter) = snap.rate_limiters.get(limit) else {
        return Ok(());
    };
    let route = &snap.route_names[route_index];
    let key = limiter.request_key(
        parts,
        conn.peer.ip(),
        &listener.model.trusted_proxies,
        route,
    );
    let Err(wait) = limiter.check(key) else {
        return Ok(());
    };
    conn.shared.metrics.rate_limited(route);
    let retry_after = super::limit::retry_after_secs(wait);
    Err(
        ProxyError::new(ErrorKind::RateLimited { retry_after }).with(format!(
            "rate limit `{}` of route `{route}`: retry after {retry_after}s",
            limiter.model.name
        )),
    )
}

/// A redirect route's answer: its template filled from the request.
fn redirect(
    conn: &ConnCtx,
    parts: &Parts,
    host: &str,
    to: &str,
    status: u16,
) -> Result<Response<ProxyBody>, ProxyError> {
    let target = expand_redirect(to, parts, host, conn_scheme(conn));
    let mut resp = respond::text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
        Bytes::new(),
    );
    resp.headers_mut().remove(header::CONTENT_TYPE);
    let loc = HeaderValue::from_str(&target)
        .map_err(|e| ProxyError::new(ErrorKind::BadRequest).with(e))?;
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

/// An upstream route's request: [cache] around the origin's fetch, then [compress] and the
/// last touches every answer of the route gets.
async fn upstream(
    origin: &Origin,
    parts: &mut Parts,
    body: ClientBody,
    fin: &mut Finish,
) -> Result<Answer, ProxyError> {
    let route = origin.route_model();
    let snap = &origin.snap;
    // What compression needs of the request, before the head is rewritten.
    let accept = parts.headers.get(header::ACCEPT_ENCODING).cloned();
    let head = parts.method == http::Method::HEAD;
    // The origin's fields may pass as it sent them when nothing on the way reads them
    // (see `gatehouse_h1::raw_head`), to an HTTP/1 client (hyper's HTTP/2 server writes maps).
    let keep_raw = route.cache.is_none()
        && route.compress.is_none()
        && route.response_headers.is_empty()
        && parts.version != Version::HTTP_2;
    if let Some(c) = &route.compress {
        super::compress::guard_range(&mut parts.headers, c);
    }
    let stats = Arc::new(BodyStats::default());
    fin.stats = Some(stats.clone());
    let req_body = RequestBody::new(body, route.max_body, stats.clone()).boxed_unsync();
    let fetched = match (&route.cache, &snap.cache) {
        // Boxed: the cache flow's future is large, and every request's future (moved
        // into its box per request) would carry room for it.
        (Some(rc), Some(cache)) => {
            let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
            Box::pin(super::cache_flow::serve(
                cache, rc, origin, parts, req_body, stats, fin,
            ))
            .await?
        }
        _ => origin.fetch(parts, req_body, &stats, fin, keep_raw).await?,
    };
    let mut resp = fetched.resp;
    if let Some(c) = &route.compress {
        resp = super::compress::apply(resp, c, accept.as_ref(), head);
    }
    let resp = answer::finish_upstream(resp, &origin.up, route, fetched.sticky);
    Ok((resp, fetched.raw))
}

/// "https" on a TLS connection, else "http".
pub(crate) fn conn_scheme(conn: &ConnCtx) -> &'static str {
    if conn.tls.is_some() { "https" } else { "http" }
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Fills a redirect template: {scheme}, {host} (no port), {path}, {query}, {path_and_query}.
fn expand_redirect(to: &str, parts: &Parts, host: &str, scheme: &str) -> String {
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    to.replace("{scheme}", scheme)
        .replace("{host}", host)
        .replace("{path_and_query}", pq)
        .replace("{path}", parts.uri.path())
        .replace("{query}", parts.uri.query().unwrap_or(""))
}

/// What a request to the origin needs besides its head and body. Owned, so that a background
/// revalidation can carry it past the client's request.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) conn: Arc<ConnCtx>,
    pub(crate) snap: Arc<Snapshot>,
    /// Index of the route in the snapshot's config.
    pub(crate) route: usize,
    pub(crate) up: Arc<Upstream>,
    /// The client's Host, with any port.
    pub(crate) host_full: String,
    pub(crate) client: IpAddr,
    /// The client is a trusted proxy (its forwarding headers are kept).
    pub(crate) trusted: bool,
    pub(crate) request_id: Arc<str>,
}

/// An origin's answer, its head rewritten for the client.
pub(crate) struct Fetched {
    /// With `raw`, the header map holds only what the proxy added.
    pub(crate) resp: Response<ProxyBody>,
    /// The origin's fields as it sent them, written before the header map; only when `fetch`
    /// was asked to keep them so.
    pub(crate) raw: Option<RawHead>,
    /// Server id to set in the sticky cookie, when the client does not have it yet.
    pub(crate) sticky: Option<Arc<str>>,
}

impl Origin {
    /// The route's name (a shared label).
    pub(crate) fn route_name(&self) -> Arc<str> {
        self.snap.route_names[self.route].clone()
    }

    /// The route's model.
    pub(crate) fn route_model(&self) -> &Route {
        &self.snap.config.routes[self.route]
    }

    /// "https" or "http": how the client reached us.
    pub(crate) fn scheme(&self) -> &'static str {
        conn_scheme(&self.conn)
    }

    /// Rewrites the request for the origin, forwards it, and rewrites the answer's head.
    /// `keep_raw`: the caller reads no answer header and writes none but by insert (replacing
    /// the origin's of that name, in the raw fields too) or append, so an HTTP/1 origin's fields
    /// may stay as it sent them (`Fetched::raw`); otherwise the answer has them all in its map.
    pub(crate) async fn fetch(
        &self,
        parts: &mut Parts,
        req_body: crate::upstream::pool::UpBody,
        stats: &Arc<BodyStats>,
        fin: &mut Finish,
        keep_raw: bool,
    ) -> Result<Fetched, ProxyError> {
        let up = &self.up;
        let prepared = prepare::request(self, parts)?;
        let sticky_in = prepare::sticky_in(self, parts);
        let pick = PickInput {
            hash: prepare::hash_input(&up.model.hash_key, parts, self.client),
            sticky: sticky_in.as_deref(),
            exclude: &[],
        };
        let proxy_header = prepare::proxy_header(self);
        let upgrade = prepared.upgrade.is_some();
        let lines = &prepared.lines;
        let result = forward(
            up,
            parts,
            req_body,
            lines,
            pick,
            upgrade,
            proxy_header.as_ref(),
        );
        let (fwd, guard) = match result.await {
            Ok(x) => x,
            Err(e) if stats.too_large.load(Ordering::Relaxed) => {
                return Err(ProxyError::new(ErrorKind::BodyTooLarge).with(e));
            }
            Err(e) => return Err(e),
        };
        let server = fwd.server;
        fin.server = server.label.clone();
        fin.guard = Some(guard);
        let mut resp = fwd.response;
        let mut raw = answer::settle_fields(&mut resp, fwd.raw, keep_raw);
        server.record_answer(resp.status(), up.model.passive.as_ref());
        // Protocol switch: tunnel only when the origin accepted it with 101.
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let out = answer::tunnel(up, &server, &resp, prepared.client_upgrade)?;
            return Ok(Fetched {
                resp: out,
                raw: None,
                sticky: None,
            });
        }
        answer::rewrite_head(self, &server, resp.headers_mut(), &mut raw);
        Ok(Fetched {
            sticky: answer::sticky_out(up, &server, sticky_in.as_deref()),
            resp: resp.map(|b| b.boxed_unsync()),
            raw,
        })
    }
}
