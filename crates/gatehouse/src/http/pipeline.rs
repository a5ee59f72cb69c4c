//! THE order of work on one HTTP request. Read `handle` and `proxy` top to bottom:
//!
//! ```text
//! snapshot -> request id -> host -> route match -> limits -> action:
//!   respond | redirect | upstream:
//!     [cache route: cache_flow (store lookup, flight, validation) around the fetch below]
//!     Origin::fetch: rewrite request (hop-by-hop, forwarding, host, path, ops)
//!       -> pick server + forward (pool, timeouts, retries) -> passive health
//!       -> upgrade tunnel (101) | rewrite response (hop-by-hop, Location, Via)
//!     -> [compress] -> finish_response (sticky cookie, response ops)
//! -> x-request-id, Cache-Status on the answer -> access log + metrics when the body ends
//! ```
//!
//! Each phase is a plain function in its own module; errors are `ProxyError`s that
//! `respond::error_response` alone turns into answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use gatehouse_config::model::{HashKey, Route, RouteAction, UpstreamProtocol};
use gatehouse_config::units::canonical_ip;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;

use super::body::{BodyStats, ClientBody, Observed, OnEnd, RequestBody};
use super::forward::{ActiveGuard, forward};
use super::headers::{self, ClientInfo, LocationMap};
use super::{ProxyBody, respond, router};
use crate::error::{ErrorKind, ProxyError};
use crate::runtime::{Shared, Snapshot};
use crate::upstream::{PickInput, Upstream, fnv1a};
use gatehouse_h1::{Kind, RawHead};

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

/// Everything the access log and metrics need, finished when the answer's body ends.
pub(crate) struct Finish {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    started: Instant,
    listener: Arc<str>,
    route: Arc<str>,
    upstream: Arc<str>,
    server: Arc<str>,
    client: IpAddr,
    method: http::Method,
    host: String,
    uri: Uri,
    status: u16,
    request_id: Arc<str>,
    stats: Option<Arc<BodyStats>>,
    guard: Option<ActiveGuard>,
    /// The Cache-Status value of a caching route's answer.
    pub(crate) cache_status: Option<String>,
    /// Whether the route's answers get our X-Request-Id (its `forward_headers`); gatehouse's
    /// own error answers always do.
    echo_request_id: bool,
}

impl Finish {
    /// A record for a request made on the side (a background revalidation): same labels,
    /// never logged.
    pub(crate) fn detached(&self) -> Finish {
        Finish {
            shared: self.shared.clone(),
            snapshot: self.snapshot.clone(),
            started: Instant::now(),
            listener: self.listener.clone(),
            route: self.route.clone(),
            upstream: self.upstream.clone(),
            server: empty_label(),
            client: self.client,
            method: self.method.clone(),
            host: self.host.clone(),
            uri: self.uri.clone(),
            status: 0,
            request_id: self.request_id.clone(),
            stats: None,
            guard: None,
            cache_status: None,
            echo_request_id: self.echo_request_id,
        }
    }
}

impl OnEnd for Finish {
    fn end(self: Box<Self>, bytes_out: u64, completed: bool) {
        let elapsed = self.started.elapsed();
        let bytes_in = self
            .stats
            .as_ref()
            .map_or(0, |s| s.bytes_in.load(Ordering::Relaxed));
        self.shared.metrics.observe_request(
            &self.listener,
            &self.route,
            &self.upstream,
            self.status,
            elapsed,
        );
        if let Some(log) = &self.snapshot.access_log {
            log.write(&crate::access_log::Entry {
                client: self.client,
                method: self.method.as_str(),
                host: &self.host,
                path: self.uri.path(),
                status: self.status,
                bytes_in,
                bytes_out,
                duration: elapsed,
                listener: &self.listener,
                route: &self.route,
                upstream: &self.upstream,
                server: &self.server,
                request_id: &self.request_id,
                completed,
            });
        }
        drop(self.guard);
    }
}

/// A request's record while its answer is being worked out. Dropped with it still inside (the
/// client left and its connection dropped the request's future), it finishes the record as
/// status 499, nginx's "client closed request": the access log and the metrics see every
/// request.
struct Unanswered(Option<Box<Finish>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut fin) = self.0.take() {
            fin.status = CLIENT_CLOSED;
            fin.end(0, false);
        }
    }
}

/// The status logged for a request whose client left before its answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// The "" label, shared.
fn empty_label() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

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
    // Boxed now, not when the answer takes it: the request's future stays smaller.
    let mut pending = Unanswered(Some(Box::new(Finish {
        shared: conn.shared.clone(),
        snapshot: snapshot.clone(),
        started,
        listener: conn.listener.clone(),
        route: empty_label(),
        upstream: empty_label(),
        server: empty_label(),
        client: canonical_ip(conn.peer.ip()),
        method: parts.method.clone(),
        host: String::new(),
        uri: parts.uri.clone(),
        status: 0,
        request_id: request_id.clone(),
        stats: None,
        guard: None,
        cache_status: None,
        echo_request_id: true,
    })));
    let fin = pending.0.as_mut().expect("set above");
    let result = proxy(&conn, &snapshot, &mut parts, body, &request_id, fin).await;
    let mut fin = pending.0.take().expect("set above");
    // Our own error answers always name the request id: it points into our log.
    let (mut resp, mut raw, echo_id) = match result {
        Ok((resp, raw)) => (resp, raw, fin.echo_request_id),
        Err(e) => (respond::error_response(&e, &request_id), None, true),
    };
    // Headers set here replace the origin's: fields kept as it sent them go too.
    if echo_id {
        if let Some(r) = &mut raw {
            r.remove(Kind::RequestId);
            r.add("x-request-id", request_id.as_bytes());
        } else if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(headers::X_REQUEST_ID, v);
        }
    }
    // Only a caching route sets Cache-Status, and its answers always have their fields in the
    // map (`keep_raw`), where the insert below replaces the origin's.
    debug_assert!(raw.is_none() || fin.cache_status.is_none());
    if let Some(cs) = fin
        .cache_status
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert("cache-status", cs);
    }
    if let Some(hsts) = conn.tls.as_ref().and_then(|t| t.hsts.clone()) {
        if let Some(r) = &mut raw {
            r.remove(Kind::Hsts);
            r.add("strict-transport-security", hsts.as_bytes());
        } else {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
    }
    fin.status = resp.status().as_u16();
    let (head, body) = resp.into_parts();
    Response::from_parts(head, Observed::new(body, fin).with_raw(raw))
}

async fn proxy(
    conn: &Arc<ConnCtx>,
    snap: &Arc<Snapshot>,
    parts: &mut Parts,
    body: ClientBody,
    request_id: &Arc<str>,
    fin: &mut Finish,
) -> Result<(Response<ProxyBody>, Option<RawHead>), ProxyError> {
    // ACME http-01 answers come before any route (RFC 8555 §8.3), on cleartext listeners.
    if conn.tls.is_none()
        && let Some(token) = parts
            .uri
            .path()
            .strip_prefix("/.well-known/acme-challenge/")
        && let Some(answer) = conn.shared.challenges.http_answer(token)
    {
        return Ok((respond::text(StatusCode::OK, answer), None));
    }
    let Some(listener) = snap.listener(&conn.listener) else {
        return Err(ProxyError::new(ErrorKind::NoRoute).with("listener removed by a reload"));
    };
    let client = canonical_ip(conn.peer.ip());

    // Host: HTTP/1.1 requires one (RFC 9112 §3.2); HTTP/2 carries it as :authority.
    let host_full = match router::request_host(parts) {
        Some(h) => h,
        None if parts.version == Version::HTTP_10 => String::new(),
        None => {
            return Err(
                ProxyError::new(ErrorKind::BadRequest).with("missing or invalid Host header")
            );
        }
    };
    let host = router::host_name(&host_full);
    if snap.access_log.is_some() {
        fin.host = host.to_string();
    }
    // No domain fronting across certificates: the Host must be a name the served certificate
    // covers (RFC 9110 §15.5.20: 421 Misdirected Request).
    if let Some(tls) = &conn.tls
        && !host.is_empty()
        && !crate::tls::covers(&tls.names, &host)
    {
        return Err(ProxyError::new(ErrorKind::Misdirected).with(format!(
            "host `{host}` is not covered by this connection's certificate"
        )));
    }

    // Route
    let route_index = router::select(
        &snap.config.routes,
        &listener.routes,
        parts,
        &host,
        client,
        canonical_ip(conn.local.ip()),
    )
    .ok_or_else(|| {
        ProxyError::new(ErrorKind::NoRoute)
            .with(format!("host `{host}` path `{}`", parts.uri.path()))
    })?;
    let route = &snap.config.routes[route_index];
    fin.route = snap.route_names[route_index].clone();
    // For every answer of the route, a cache hit's too.
    fin.echo_request_id = route.forward_headers.request_id;

    // Limits known from the head
    if let (Some(max), Some(len)) = (route.max_body, content_length(parts))
        && len > max
    {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge)
            .with(format!("content-length {len} > max_body {max}")));
    }

    // Action
    match &route.action {
        RouteAction::Respond { status, body } => Ok((
            respond::text(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                body.clone(),
            ),
            None,
        )),
        RouteAction::Redirect { to, status } => {
            let target = expand_redirect(to, parts, &host, conn_scheme(conn));
            let mut resp = respond::text(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
                Bytes::new(),
            );
            resp.headers_mut().remove(header::CONTENT_TYPE);
            let loc = HeaderValue::from_str(&target)
                .map_err(|e| ProxyError::new(ErrorKind::BadRequest).with(e))?;
            resp.headers_mut().insert(header::LOCATION, loc);
            Ok((resp, None))
        }
        RouteAction::Upstream(i) => {
            let up = &snap.upstreams[*i];
            fin.upstream = up.name.clone();
            let trusted = listener
                .model
                .trusted_proxies
                .iter()
                .any(|c| c.contains(client));
            let origin = Origin {
                conn: conn.clone(),
                snap: snap.clone(),
                route: route_index,
                up: up.clone(),
                host_full,
                client,
                trusted,
                request_id: request_id.clone(),
            };
            // What compression needs of the request, before the head is rewritten.
            let accept = parts.headers.get(header::ACCEPT_ENCODING).cloned();
            let head = parts.method == http::Method::HEAD;
            // The origin's fields may pass as it sent them when nothing on the way reads them
            // (see `raw_head`), to an HTTP/1 client (hyper's HTTP/2 server writes maps).
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
                        cache, rc, &origin, parts, req_body, stats, fin,
                    ))
                    .await?
                }
                _ => origin.fetch(parts, req_body, &stats, fin, keep_raw).await?,
            };
            let mut resp = fetched.resp;
            if let Some(c) = &route.compress {
                resp = super::compress::apply(resp, c, accept.as_ref(), head);
            }
            Ok((
                finish_response(resp, up, route, fetched.sticky)?,
                fetched.raw,
            ))
        }
    }
}

/// The last touches on an upstream's answer, on every path (origin or cache): the sticky
/// cookie of the server that served, then the route's header changes.
fn finish_response(
    mut resp: Response<ProxyBody>,
    up: &Upstream,
    route: &Route,
    sticky: Option<Arc<str>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let h = resp.headers_mut();
    if let (Some(name), Some(id)) = (&up.model.sticky_cookie, sticky)
        && let Ok(v) =
            HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly; SameSite=Lax"))
    {
        h.append(header::SET_COOKIE, v);
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        headers::apply_ops(resp.headers_mut(), &route.response_headers);
    }
    Ok(resp)
}

/// "https" on a TLS connection, else "http".
fn conn_scheme(conn: &ConnCtx) -> &'static str {
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

/// The value of cookie `name` in the request, if any.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn hash_input(key: &HashKey, parts: &Parts, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(a) => fnv1a(&a.octets()),
            IpAddr::V6(a) => fnv1a(&a.octets()),
        }),
        HashKey::Header(h) => parts.headers.get(h.as_str()).map(|v| fnv1a(v.as_bytes())),
        HashKey::Cookie(c) => cookie(parts, c).map(|v| fnv1a(v.as_bytes())),
        HashKey::Path => Some(fnv1a(parts.uri.path().as_bytes())),
    }
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
        let conn = &*self.conn;
        let up = &self.up;
        let route = &self.snap.config.routes[self.route];
        let (client, trusted, request_id) = (self.client, self.trusted, &*self.request_id);
        let host_full = self.host_full.as_str();
        // Rewrite the request head. Framing was settled by the HTTP/1 parser before this point, so
        // removing hop-by-hop headers cannot change how the body is delimited: the next hop gets a
        // freshly framed message (Content-Length kept, or chunked by the client connection).
        let upgrade = if parts.version == Version::HTTP_11 {
            headers::upgrade_request(&parts.headers)
        } else {
            None
        };
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<super::h1::ClientUpgrade>());
        let version_label = match parts.version {
            Version::HTTP_2 => "2",
            Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        let te_trailers = headers::remove_hop_by_hop(&mut parts.headers);
        let present = headers::Present::scan(&parts.headers);
        // New fields go to an HTTP/1 origin as lines after the map's, unless the route's header
        // operations or a hash on a header are to see them.
        let as_lines = up.model.protocol == UpstreamProtocol::Http1
            && route.request_headers.is_empty()
            && !matches!(up.model.hash_key, HashKey::Header(_));
        let mut lines = Vec::with_capacity(if as_lines { 320 } else { 0 });
        let mut f = headers::NewFields {
            map: &mut parts.headers,
            lines: as_lines.then_some(&mut lines),
        };
        if te_trailers {
            f.map
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(u) = &upgrade {
            f.map
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            f.map.insert(header::UPGRADE, u.clone());
        }
        let on = route.forward_headers;
        headers::set_forwarding(
            &mut f,
            &present,
            &ClientInfo {
                ip: client,
                trusted,
                proto: conn_scheme(conn),
                host: host_full,
                version: version_label,
            },
            on,
        );
        if on.request_id {
            f.set(
                headers::X_REQUEST_ID,
                request_id.as_bytes(),
                present.request_id,
            );
        }
        if up.model.protocol != UpstreamProtocol::Http1 {
            // Ours or the client's: new at every request either way.
            headers::never_index_request_ids(f.map);
        }
        if present.client_cert {
            f.map.remove(headers::CLIENT_CERT_SUBJECT);
            f.map.remove(headers::CLIENT_CERT_SHA256);
        }
        if let Some(tls) = &conn.tls {
            if let Some(s) = tls.client_subject.as_deref() {
                f.set_foreign(headers::CLIENT_CERT_SUBJECT, s.as_bytes(), false);
            }
            if let Some(s) = tls.client_sha256.as_deref() {
                f.set_foreign(headers::CLIENT_CERT_SHA256, s.as_bytes(), false);
            }
        }
        let h = &mut parts.headers;
        let upstream_host = route.set_host.as_deref().unwrap_or(host_full);
        if (route.set_host.is_some() || !h.contains_key(header::HOST))
            && let Ok(v) = HeaderValue::from_str(upstream_host)
        {
            h.insert(header::HOST, v);
        }
        headers::apply_ops(h, &route.request_headers);

        let rewrite = route.strip_prefix.is_some() || route.add_prefix.is_some();
        let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
        // An HTTP/1.1 origin gets the target as the client sent it when nothing rewrites it: no
        // copy, no second parse.
        if up.model.protocol != UpstreamProtocol::Http1 || rewrite || !origin_form {
            let pq = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let new_pq = if rewrite {
                headers::rewrite_path(
                    pq,
                    route.strip_prefix.as_deref(),
                    route.add_prefix.as_deref(),
                )
            } else {
                pq.to_string()
            };
            let uri = match up.model.protocol {
                UpstreamProtocol::Http1 => new_pq.parse::<Uri>(),
                UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                    let authority = if upstream_host.is_empty() {
                        "localhost"
                    } else {
                        upstream_host
                    };
                    let scheme = if up.model.protocol == UpstreamProtocol::H2 {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://{authority}{new_pq}").parse::<Uri>()
                }
            }
            .map_err(|e| ProxyError::new(ErrorKind::BadRequest).with(e))?;
            parts.uri = uri;
        }
        parts.version = match up.model.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
        };
        if up.model.protocol != UpstreamProtocol::Http1 {
            // HTTP/2 carries the authority in :authority; a Host header beside it must agree or go.
            parts.headers.remove(header::HOST);
        }

        // Balance and forward
        let sticky_in = up
            .model
            .sticky_cookie
            .as_deref()
            .and_then(|c| cookie(parts, c))
            .map(str::to_string);
        let hash = hash_input(&up.model.hash_key, parts, client);
        let pick = PickInput {
            hash,
            sticky: sticky_in.as_deref(),
            exclude: &[],
        };
        // Who the client is, for a PROXY header or a transparent source address.
        let needs_client = up.model.proxy_protocol.is_some() || up.model.source_address.is_some();
        let proxy_header = needs_client.then(|| crate::upstream::pool::ProxyHeader {
            src: conn.peer,
            dst: conn.local,
            alpn: conn.tls.as_ref().and_then(|t| t.alpn.clone()),
            authority: conn.tls.as_ref().and_then(|t| t.sni.clone()),
            tls_version: conn.tls.as_ref().and_then(|t| t.version.clone()),
        });
        let result = forward(
            up,
            parts,
            req_body,
            &lines,
            pick,
            upgrade.is_some(),
            proxy_header.as_ref(),
        )
        .await;
        let (fwd, guard) = match result {
            Ok(x) => x,
            Err(e) if stats.too_large.load(Ordering::Relaxed) => {
                return Err(ProxyError::new(ErrorKind::BodyTooLarge).with(e));
            }
            Err(e) => return Err(e),
        };
        let server = fwd.server.clone();
        fin.server = server.label.clone();
        fin.guard = Some(guard);
        let mut resp = fwd.response;
        let status = resp.status();
        // Fields that need the map's rewriting (a Location to map back, a Connection naming
        // other fields), a protocol switch, or a caller that reads them: all in the map.
        let mut raw = fwd.raw;
        if let Some(r) = raw.take_if(|r| {
            !keep_raw
                || status == StatusCode::SWITCHING_PROTOCOLS
                || r.has(Kind::Location)
                || r.has(Kind::Connection)
        }) {
            let added = std::mem::take(resp.headers_mut());
            *resp.headers_mut() = r.into_map(added);
        }
        if status.is_server_error() {
            server.record_failure(up.model.passive.as_ref());
        } else {
            server.record_success();
        }

        // Protocol switch: tunnel only when the origin accepted it with 101.
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_on) = client_upgrade else {
                return Err(ProxyError::new(ErrorKind::UpstreamReset)
                    .with("origin switched protocols without being asked"));
            };
            let Some(origin) = resp
                .extensions()
                .get::<crate::upstream::h1::OriginUpgrade>()
                .and_then(|u| u.take())
            else {
                return Err(ProxyError::new(ErrorKind::UpstreamReset)
                    .with("origin switched protocols on a connection that cannot tunnel"));
            };
            let (up_name, addr) = (up.model.name.clone(), server.spec.address.clone());
            tokio::spawn(async move {
                match client_on.wait().await {
                    Some(mut c) => {
                        let (mut o, early) = origin;
                        // Bytes the origin sent right after its 101 belong to the tunnel.
                        let res = async {
                            if !early.is_empty() {
                                tokio::io::AsyncWriteExt::write_all(&mut c, &early).await?;
                                tokio::io::AsyncWriteExt::flush(&mut c).await?;
                            }
                            tokio::io::copy_bidirectional(&mut c, &mut o).await
                        };
                        if let Err(e) = res.await {
                            tracing::debug!(upstream = %up_name, server = %addr, error = %e, "tunnel ended");
                        }
                    }
                    None => {
                        tracing::warn!(upstream = %up_name, server = %addr, "upgrade failed: the client connection ended")
                    }
                }
            });
            let mut out = Response::new(
                http_body_util::Empty::new()
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            );
            *out.status_mut() = status;
            for name in [
                header::UPGRADE,
                header::SEC_WEBSOCKET_ACCEPT,
                header::SEC_WEBSOCKET_PROTOCOL,
                header::SEC_WEBSOCKET_EXTENSIONS,
            ] {
                if let Some(v) = resp.headers().get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            out.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Ok(Fetched {
                resp: out,
                raw: None,
                sticky: None,
            });
        }

        // Rewrite the response head
        let h = resp.headers_mut();
        if let Some(r) = &mut raw {
            // No Connection field (see above): hop-by-hop fields go by their names.
            r.remove(Kind::HopByHop);
            r.remove(Kind::TransferEncoding);
        }
        headers::remove_hop_by_hop(h);
        let server_addr = server.spec.address.as_str();
        let mut internal: Vec<&str> = vec![server_addr];
        if let Some(sh) = &route.set_host {
            internal.push(sh.as_str());
        }
        let map = LocationMap {
            internal: &internal,
            public_host: host_full,
            public_scheme: conn_scheme(conn),
            public_prefix: route.strip_prefix.as_deref().unwrap_or(""),
            internal_prefix: route.add_prefix.as_deref().unwrap_or(""),
        };
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(v) = h.get(&name).and_then(|v| v.to_str().ok())
                && let Some(mapped) = headers::map_location(v, &map)
                && let Ok(nv) = HeaderValue::from_str(&mapped)
            {
                h.insert(name, nv);
            }
        }
        match &mut raw {
            _ if !on.via => {}
            // A Via of the origin's stays a line of its own: the same list (RFC 9110 §5.3).
            Some(r) => r.add("via", b"1.1 gatehouse"),
            None => headers::append_via(h, "1.1"),
        }
        let sticky = up
            .model
            .sticky_cookie
            .as_ref()
            .filter(|_| sticky_in.as_deref() != Some(server.id.as_str()))
            .map(|_| Arc::from(server.id.as_str()));
        Ok(Fetched {
            resp: resp.map(|b| b.boxed_unsync()),
            raw,
            sticky,
        })
    }
}
