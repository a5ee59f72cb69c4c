//! A caching route's request, top to bottom:
//!
//! ```text
//! unsafe method -> origin; on 2xx/3xx invalidate the URL, its Location and Content-Location
//! GET/HEAD -> lookup (memory, disk) -> decide (policy):
//!   fresh | max-stale ok          -> answer from the store (304 / 206 / 416 / 200), Age
//!   stale-while-revalidate        -> answer from the store, refresh in the background
//!   must validate | miss          -> join the URL's flight (one origin request; others wait
//!                                    up to lock_timeout) -> origin with our validators:
//!        304 -> refresh the stored head, answer from the store
//!        5xx / error within stale-if-error -> answer the stale copy
//!        else -> stream to the client while the store keeps a copy (if storable)
//! ```
//! Every answer carries Cache-Status (RFC 9211), set on `Finish` so error answers get it too.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use gatehouse_cache::entry::vary_key;
use gatehouse_cache::policy::{self, Directives, RangeAnswer, RouteRules, Use};
use gatehouse_cache::{Cache, Entry, Flight, FlightGuard, Lookup};
use gatehouse_config::model::RouteCache;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use super::body::BodyStats;
use super::pipeline::{Fetched, Finish, Origin};
use crate::error::{BoxError, ErrorKind, ProxyError};
use crate::upstream::pool::UpBody;

const NAME: &str = "gatehouse";

/// The absolute URL a request is stored under: scheme, lowercase host without its default
/// port, path and query as sent.
pub fn cache_key(scheme: &str, host: &str, uri: &Uri) -> String {
    let host = host.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default).unwrap_or(&host);
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{host}{pq}")
}

fn head_of(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

fn empty_body() -> UpBody {
    http_body_util::Empty::new()
        .map_err(|n| match n {})
        .boxed_unsync()
}

fn hit_status(e: &Entry, now: SystemTime, extra: &str) -> String {
    let age = policy::current_age(&e.timing, now).as_secs() as i64;
    let ttl = e.timing.freshness.as_secs() as i64 - age;
    format!("{NAME}; hit; ttl={ttl}{extra}")
}

/// Serves a request on a caching route.
pub(crate) async fn serve(
    cache: &Arc<Cache>,
    rc: &RouteCache,
    origin: &Origin,
    mut parts: Parts,
    body: UpBody,
    stats: Arc<BodyStats>,
    fin: &mut Finish,
) -> Result<Fetched, ProxyError> {
    let key: Arc<str> = Arc::from(cache_key(origin.scheme(), &origin.host_full, &parts.uri));
    let rules = RouteRules {
        default_ttl: rc.default_ttl,
        cookies: rc.cookies,
    };
    // Unsafe methods pass; success invalidates (RFC 9111 §4.4). Upgrades are tunnels, not
    // cacheable exchanges.
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    // A GET with a body is not a cacheable exchange either: the URL alone does not name it.
    if !safe || parts.headers.contains_key(header::UPGRADE) || !body.is_end_stream() {
        let invalidating = !matches!(parts.method, Method::OPTIONS | Method::TRACE) && !safe;
        let fwd = if safe { "bypass" } else { "method" };
        fin.cache_status = Some(format!("{NAME}; fwd={fwd}"));
        let out = origin.fetch(&mut parts, body, &stats, fin, false).await?;
        let st = out.resp.status();
        if invalidating && (st.is_success() || st.is_redirection()) {
            invalidate(cache, origin, &key, out.resp.headers());
        }
        fin.cache_status = Some(format!("{NAME}; fwd={fwd}; fwd-status={}", st.as_u16()));
        return Ok(out);
    }

    let ctx = Ctx {
        cache,
        rules,
        origin,
        epoch: cache.epoch(&key),
    };
    let req_cc = Directives::parse_request(&parts.headers);
    let route_name = origin.route_name();
    let mut waited = false;
    let mut guard: Option<FlightGuard> = None;
    let (stale, fwd) = loop {
        let now = SystemTime::now();
        let found = cache.lookup(&key, &route_name, &parts.headers).await;
        let fwd = match found {
            Lookup::Hit(e) => {
                let rcc = e.directives();
                match policy::decide(&e.timing, &rcc, &req_cc, now) {
                    Use::Fresh => {
                        cache.counters.hits.inc();
                        let extra = if waited { "; collapsed" } else { "" };
                        fin.cache_status = Some(hit_status(&e, now, extra));
                        return Ok(from_store(&e, &parts, now));
                    }
                    Use::StaleAllowed => {
                        cache.counters.hits.inc();
                        cache.counters.stale.inc();
                        fin.cache_status = Some(hit_status(&e, now, ""));
                        return Ok(from_store(&e, &parts, now));
                    }
                    Use::StaleWhileRevalidate => {
                        cache.counters.hits.inc();
                        cache.counters.stale.inc();
                        if let Flight::Leader(g) = cache.flight(&key) {
                            background_refresh(&ctx, &parts, e.clone(), g, fin);
                        }
                        fin.cache_status = Some(hit_status(&e, now, ""));
                        return Ok(from_store(&e, &parts, now));
                    }
                    Use::Validate if req_cc.only_if_cached => {
                        return Err(only_if_cached(fin));
                    }
                    Use::Validate => {
                        let fwd = if req_cc.no_cache { "request" } else { "stale" };
                        if req_cc.no_cache || waited {
                            break (Some(e), fwd);
                        }
                        fwd
                    }
                }
            }
            _ if req_cc.only_if_cached => return Err(only_if_cached(fin)),
            Lookup::VaryMiss => "vary-miss",
            Lookup::UriMiss => "uri-miss",
        };
        if waited {
            break (None, fwd);
        }
        match cache.flight(&key) {
            Flight::Leader(g) => {
                guard = Some(g);
                // Look once more: the previous leader may have stored it just now.
                waited = true;
            }
            Flight::Follower(mut rx) => {
                let _ = tokio::time::timeout(rc.lock_timeout, rx.changed()).await;
                waited = true;
            }
        }
    };
    match stale {
        Some(_) => cache.counters.revalidations.inc(),
        None => cache.counters.misses.inc(),
    };
    fin.cache_status = Some(format!("{NAME}; fwd={fwd}"));
    let client = head_of(&parts);
    let out = to_origin(
        &ctx,
        parts,
        &client,
        &req_cc,
        stale.clone(),
        body,
        &stats,
        fin,
        guard,
    )
    .await;
    let now = SystemTime::now();
    match out {
        Ok(Outcome::FromStore(e, code)) => {
            let code = code
                .map(|c| format!("; fwd-status={c}"))
                .unwrap_or_default();
            fin.cache_status = Some(format!("{NAME}; fwd={fwd}{code}"));
            Ok(from_store(&e, &client, now))
        }
        Ok(Outcome::Origin(f, stored)) => {
            let code = f.resp.status().as_u16();
            let stored = if stored { "; stored" } else { "" };
            fin.cache_status = Some(format!("{NAME}; fwd={fwd}; fwd-status={code}{stored}"));
            Ok(*f)
        }
        Err(e) => Err(e),
    }
}

fn only_if_cached(fin: &mut Finish) -> ProxyError {
    fin.cache_status = Some(format!("{NAME}; fwd=miss; detail=only-if-cached"));
    ProxyError::new(ErrorKind::UpstreamTimeout)
        .with("only-if-cached and nothing usable is stored (RFC 9111 §5.2.1.7)")
}

/// What the origin round trip produced.
enum Outcome {
    /// Answer from this stored entry (refreshed by a 304, or stale standing in for an error);
    /// the origin's status when it gave one, for Cache-Status.
    FromStore(Arc<Entry>, Option<u16>),
    /// The origin's own answer (boxed: an answer is larger than the other outcome); true when a
    /// copy is being stored.
    Origin(Box<Fetched>, bool),
}

/// What every origin round trip of a caching request shares.
struct Ctx<'a> {
    cache: &'a Arc<Cache>,
    rules: RouteRules,
    origin: &'a Origin,
    /// The URL's purge epoch when the request began (see `Cache::epoch`).
    epoch: u64,
}

/// Request headers gatehouse itself sets or rewrites on the way to the origin. An answer that
/// varies on one of them is not stored: the value the origin saw is not the client's, so the
/// stored variant could be served to the wrong client (a client certificate's subject, say).
fn proxy_controlled(name: &http::HeaderName, route: &gatehouse_config::model::Route) -> bool {
    const SET_BY_US: [&str; 9] = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-client-cert-subject",
        "x-client-cert-sha256",
        "x-request-id",
        "via",
        "host",
    ];
    let n = name.as_str();
    SET_BY_US.contains(&n)
        || route.request_headers.set.iter().any(|(k, _)| k == n)
        || route.request_headers.add.iter().any(|(k, _)| k == n)
        || route.request_headers.remove.iter().any(|k| k == n)
}

/// Goes to the origin for `client`'s request, validating `stale` when there is one.
#[allow(clippy::too_many_arguments)]
async fn to_origin(
    ctx: &Ctx<'_>,
    mut parts: Parts,
    client: &Parts,
    req_cc: &Directives,
    stale: Option<Arc<Entry>>,
    body: UpBody,
    stats: &Arc<BodyStats>,
    fin: &mut Finish,
    guard: Option<FlightGuard>,
) -> Result<Outcome, ProxyError> {
    let (cache, rules, origin) = (ctx.cache, ctx.rules, ctx.origin);
    if let Some(e) = &stale {
        // Our validators replace the client's: a 304 must be about what we hold.
        let h = &mut parts.headers;
        for n in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ] {
            h.remove(n);
        }
        if let Some(v) = e.headers.get(header::ETAG) {
            h.insert(header::IF_NONE_MATCH, v.clone());
        }
        if let Some(v) = e.headers.get(header::LAST_MODIFIED) {
            h.insert(header::IF_MODIFIED_SINCE, v.clone());
        }
    }
    let request_time = SystemTime::now();
    let result = origin.fetch(&mut parts, body, stats, fin, false).await;
    let response_time = SystemTime::now();
    let stale_ok =
        |e: &Entry| policy::stale_if_error(&e.timing, &e.directives(), req_cc, response_time);
    let fetched = match (result, &stale) {
        (Err(err), Some(e)) if stale_ok(e) => {
            tracing::info!(url = &*e.key, error = %err, "origin failed: serving stale (stale-if-error)");
            cache.counters.stale.inc();
            return Ok(Outcome::FromStore(e.clone(), None));
        }
        (Err(err), _) => return Err(err),
        (Ok(f), _) => f,
    };
    let status = fetched.resp.status();
    if let Some(e) = &stale {
        if status == StatusCode::NOT_MODIFIED {
            let refreshed = refresh(
                e,
                fetched.resp.headers(),
                &rules,
                request_time,
                response_time,
            );
            // The merged answer must still be storable (§3): a 304 may add Set-Cookie,
            // `private` or `no-store`. Then nothing stays stored and only this client gets it.
            let still = policy::storable(
                &Method::GET,
                &client.headers,
                req_cc,
                refreshed.status,
                &refreshed.headers,
                &rules,
                (request_time, response_time),
            );
            if let Err(why) = still {
                tracing::debug!(url = &*e.key, reason = ?why, "not storable after a 304: dropped");
                cache.purge(&e.key);
            } else {
                cache.insert(refreshed.clone(), ctx.epoch);
            }
            return Ok(Outcome::FromStore(Arc::new(refreshed), Some(304)));
        }
        if status.is_server_error() && stale_ok(e) {
            cache.counters.stale.inc();
            return Ok(Outcome::FromStore(e.clone(), Some(status.as_u16())));
        }
    }
    // A HEAD is answered from a stored GET but never fills the store itself: hyper does not
    // read the body of a HEAD answer, so there would be nothing to store.
    let timing = policy::storable(
        &client.method,
        &client.headers,
        req_cc,
        status,
        fetched.resp.headers(),
        &rules,
        (request_time, response_time),
    );
    let too_big = fetched
        .resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|l| l > cache.model.max_object);
    let timing = match timing {
        Ok(t) if !too_big => t,
        why => {
            tracing::debug!(url = %client.uri, reason = ?why.err(), too_big, "not stored");
            return Ok(Outcome::Origin(Box::new(fetched), false));
        }
    };
    let route = &origin.snap.config.routes[origin.route];
    let names = match policy::vary_names(fetched.resp.headers()) {
        Ok(n) if !n.iter().any(|n| proxy_controlled(n, route)) => n,
        _ => return Ok(Outcome::Origin(Box::new(fetched), false)),
    };
    let mut headers = fetched.resp.headers().clone();
    headers.remove(header::AGE);
    let template = Entry {
        key: Arc::from(cache_key(origin.scheme(), &origin.host_full, &client.uri)),
        route: origin.route_name(),
        vary: vary_key(&client.headers, &names),
        status,
        headers,
        body: Bytes::new(),
        timing,
    };
    // hyper never polls a body that is already at its end (Content-Length: 0, 204): store it now.
    if fetched.resp.body().is_end_stream() {
        cache.insert(template, ctx.epoch);
        drop(guard);
        return Ok(Outcome::Origin(Box::new(fetched), true));
    }
    let Fetched { resp, sticky, .. } = fetched;
    let stall = origin.up.model.response_timeout;
    let resp = resp.map(|b| {
        fill(
            b,
            Pending {
                entry: template,
                cache: cache.clone(),
                epoch: ctx.epoch,
                guard,
            },
            stall,
        )
    });
    Ok(Outcome::Origin(
        Box::new(Fetched {
            resp,
            raw: None,
            sticky,
        }),
        true,
    ))
}

/// The stored entry after a 304 (RFC 9111 §4.3.4): headers updated, timing recomputed.
fn refresh(
    e: &Entry,
    not_modified: &HeaderMap,
    rules: &RouteRules,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Entry {
    let mut n = e.clone();
    policy::update_headers(&mut n.headers, not_modified);
    n.headers.remove(header::AGE);
    let cc = Directives::parse(&n.headers);
    n.timing = policy::Timing {
        freshness: if cc.no_cache {
            Duration::ZERO
        } else {
            policy::freshness(n.status.as_u16(), &n.headers, &cc, rules)
        },
        initial_age: policy::initial_age(not_modified, request_time, response_time),
        response_time,
    };
    n
}

/// Refreshes a stale entry while the client is answered from it (RFC 5861 §3). Always a GET,
/// whatever the client sent: a HEAD could not refill the store.
fn background_refresh(
    ctx: &Ctx<'_>,
    parts: &Parts,
    stale: Arc<Entry>,
    guard: FlightGuard,
    fin: &Finish,
) {
    let (cache, origin, rules, epoch) =
        (ctx.cache.clone(), ctx.origin.clone(), ctx.rules, ctx.epoch);
    let mut client = head_of(parts);
    client.method = Method::GET;
    let mut bg = fin.detached();
    tokio::spawn(async move {
        cache.counters.revalidations.inc();
        let ctx = Ctx {
            cache: &cache,
            rules,
            origin: &origin,
            epoch,
        };
        let stats = Arc::new(BodyStats::default());
        let req = head_of(&client);
        let res = to_origin(
            &ctx,
            req,
            &client,
            &Directives::default(),
            Some(stale),
            empty_body(),
            &stats,
            &mut bg,
            Some(guard),
        )
        .await;
        match res {
            // Reading the body to its end is what stores it; frames are dropped as they come.
            Ok(Outcome::Origin(f, true)) => {
                let mut body = f.resp.into_body();
                while let Some(frame) = body.frame().await {
                    if let Err(e) = frame {
                        tracing::debug!(url = %client.uri, error = %e, "background refresh body failed");
                        break;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::info!(url = %client.uri, error = %e, "background refresh failed"),
        }
    });
}

/// Invalidation after an unsafe method succeeded: the target and the Location /
/// Content-Location URLs on the same origin (RFC 9111 §4.4).
fn invalidate(cache: &Cache, origin: &Origin, key: &str, resp: &HeaderMap) {
    cache.purge(key);
    let base = format!("{}://", origin.scheme());
    let host_key = cache_key(origin.scheme(), &origin.host_full, &Uri::from_static("/"));
    let host_prefix = host_key.trim_end_matches('/');
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = resp.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let target = if v.starts_with('/') {
            format!("{host_prefix}{v}")
        } else if v.starts_with(&base) {
            match v.parse::<Uri>() {
                Ok(u) => cache_key(
                    origin.scheme(),
                    u.authority().map(|a| a.as_str()).unwrap_or(""),
                    &u,
                ),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        // Only the same host: another host's entries are not ours to drop (§4.4).
        if target.starts_with(&format!("{host_prefix}/")) {
            cache.purge(&target);
        }
    }
}

/// An answer made from a stored entry for this request: 304 when the client's validators
/// match, 206/416 for a single byte range of a 200, else the whole answer; Age always.
fn from_store(e: &Entry, req: &Parts, now: SystemTime) -> Fetched {
    let age = policy::current_age(&e.timing, now).as_secs();
    let mut headers = e.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(age));
    let full = |status: StatusCode, headers: HeaderMap, body: Bytes| {
        let mut r = Response::new(Full::new(body).map_err(|n| match n {}).boxed_unsync());
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        Fetched {
            resp: r,
            raw: None,
            sticky: None,
        }
    };
    if e.status.is_success() && policy::not_modified(&req.headers, &e.headers) {
        // RFC 9110 §15.4.5: the 304 carries the validators and caching headers only.
        let mut h = HeaderMap::new();
        for n in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::LAST_MODIFIED,
            header::AGE,
        ] {
            for v in headers.get_all(&n) {
                h.append(n.clone(), v.clone());
            }
        }
        return full(StatusCode::NOT_MODIFIED, h, Bytes::new());
    }
    if e.status == StatusCode::OK {
        let len = e.body.len() as u64;
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        match policy::range(&req.headers, &e.headers, len) {
            RangeAnswer::Full => {}
            RangeAnswer::Partial(a, b) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {a}-{b}/{len}"))
                        .unwrap_or(HeaderValue::from_static("bytes */0")),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a + 1));
                let body = e.body.slice(a as usize..=b as usize);
                return full(StatusCode::PARTIAL_CONTENT, headers, body);
            }
            RangeAnswer::Unsatisfiable => {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                h.insert(header::AGE, HeaderValue::from(age));
                return full(StatusCode::RANGE_NOT_SATISFIABLE, h, Bytes::new());
            }
        }
    }
    full(e.status, headers, e.body.clone())
}

/// An answer on its way into the store.
struct Pending {
    entry: Entry,
    cache: Arc<Cache>,
    epoch: u64,
    guard: Option<FlightGuard>,
}

impl Pending {
    /// Stores the answer with this body and ends the flight.
    fn store(mut self, chunks: Vec<Bytes>, len: u64) {
        let mut body = BytesMut::with_capacity(len as usize);
        for c in chunks {
            body.extend_from_slice(&c);
        }
        self.entry.body = body.freeze();
        self.cache.insert(self.entry, self.epoch);
        drop(self.guard);
    }
}

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// Frames queued for the client while the store reads ahead.
const CLIENT_QUEUE: usize = 16;

/// Reads the origin's body in a task of its own, keeping a copy for the store, and hands it to
/// the client through a channel. The store does not wait for the client: a slow first client
/// does not hold the others (waiting on the URL's flight) back, and one that goes away does not
/// stop the copy. While storing, frames the client has not taken yet wait in a backlog (bounded
/// by `max_object`, since every one of them is also in the copy); past `max_object`, or at
/// trailers, storing stops and the task relays with the client's backpressure. With no client
/// left, a stalled origin is given up after `stall` (the upstream's response timeout).
fn fill(origin_body: ProxyBody, pending: Pending, stall: Duration) -> ProxyBody {
    let limit = pending.cache.model.max_object;
    let hint = origin_body.size_hint();
    let (tx, rx) = tokio::sync::mpsc::channel::<FrameResult>(CLIENT_QUEUE);
    tokio::spawn(async move {
        let mut body = origin_body;
        let mut pending = Some(pending);
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0u64;
        let mut backlog: std::collections::VecDeque<Frame<Bytes>> = Default::default();
        let mut client = true;
        loop {
            // Give the client what it will take now, without waiting.
            while client && let Some(f) = backlog.pop_front() {
                match tx.try_send(Ok(f)) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(Ok(f))) => {
                        backlog.push_front(f);
                        break;
                    }
                    Err(_) => {
                        client = false;
                        backlog.clear();
                    }
                }
            }
            if pending.is_none() {
                // Not storing (any more): a plain relay, paced by the client.
                if !client {
                    return;
                }
                for f in backlog.drain(..) {
                    if tx.send(Ok(f)).await.is_err() {
                        return;
                    }
                }
                while let Some(f) = body.frame().await {
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let next = if client {
                body.frame().await
            } else {
                match tokio::time::timeout(stall, body.frame()).await {
                    Ok(f) => f,
                    Err(_) => return,
                }
            };
            match next {
                None => {
                    if let Some(p) = pending.take() {
                        p.store(std::mem::take(&mut chunks), len);
                    }
                    for f in backlog.drain(..) {
                        if !client || tx.send(Ok(f)).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                Some(Err(e)) => {
                    // Nothing stored (`pending` drops with the task, ending the flight); the
                    // client sees what it was sent, then the error.
                    if client {
                        for f in backlog.drain(..) {
                            if tx.send(Ok(f)).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(Err(e)).await;
                    }
                    return;
                }
                Some(Ok(f)) => {
                    match f.data_ref() {
                        Some(d) => {
                            len += d.len() as u64;
                            if len > limit {
                                pending = None;
                                chunks.clear();
                            } else {
                                chunks.push(d.clone());
                            }
                        }
                        // Trailers are not stored; an answer that has them is not stored.
                        None => {
                            pending = None;
                            chunks.clear();
                        }
                    }
                    if client {
                        backlog.push_back(f);
                    }
                }
            }
        }
    });
    ChannelBody(rx, hint).boxed_unsync()
}

/// The client's end of `fill`, with the origin body's size hint (its exact length, when known,
/// frames the answer to the client as before).
struct ChannelBody(tokio::sync::mpsc::Receiver<FrameResult>, SizeHint);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_default_ports_and_case() {
        let u: Uri = "/a?b=1".parse().unwrap();
        assert_eq!(
            cache_key("http", "Static.Example.org:80", &u),
            "http://static.example.org/a?b=1"
        );
        assert_eq!(cache_key("https", "x:443", &u), "https://x/a?b=1");
        assert_eq!(cache_key("http", "x:8080", &u), "http://x:8080/a?b=1");
    }
}
