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

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use gatehouse_config::model::RouteCache;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use super::body::BodyStats;
use super::pipeline::{Fetched, Origin};
use super::record::Finish;
use crate::error::{ErrorKind, ProxyError};
use crate::upstream::pool::UpBody;
use gatehouse_cache::policy::{self, Directives, RangeAnswer, RouteRules, Use};
use gatehouse_cache::{Cache, Entry, Flight, FlightGuard, Lookup};

mod fill;
mod origin;

use origin::{background_refresh, to_origin};

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
    // Unsafe methods pass; success invalidates (RFC 9111 §4.4). Upgrades are tunnels, not
    // cacheable exchanges.
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    // A GET with a body is not a cacheable exchange either: the URL alone does not name it.
    if !safe || parts.headers.contains_key(header::UPGRADE) || !body.is_end_stream() {
        return pass(cache, origin, &key, &mut parts, body, &stats, fin).await;
    }
    let ctx = Ctx {
        cache,
        rules: RouteRules {
            default_ttl: rc.default_ttl,
            cookies: rc.cookies,
        },
        origin,
        epoch: cache.epoch(&key),
    };
    let req_cc = Directives::parse_request(&parts.headers);
    let (stale, fwd, guard) = match lookup(&ctx, rc, &key, &parts, &req_cc, fin).await? {
        Found::Answer(f) => return Ok(*f),
        Found::Go { stale, fwd, guard } => (stale, fwd, guard),
    };
    match stale {
        Some(_) => cache.counters.revalidations.inc(),
        None => cache.counters.misses.inc(),
    };
    fin.cache_status = Some(format!("{NAME}; fwd={fwd}"));
    let client = head_of(&parts);
    let out = to_origin(
        &ctx, parts, &client, &req_cc, stale, body, &stats, fin, guard,
    )
    .await?;
    let now = SystemTime::now();
    Ok(match out {
        Outcome::FromStore(e, code) => {
            let code = code
                .map(|c| format!("; fwd-status={c}"))
                .unwrap_or_default();
            fin.cache_status = Some(format!("{NAME}; fwd={fwd}{code}"));
            from_store(&e, &client, now)
        }
        Outcome::Origin(f, stored) => {
            let code = f.resp.status().as_u16();
            let stored = if stored { "; stored" } else { "" };
            fin.cache_status = Some(format!("{NAME}; fwd={fwd}; fwd-status={code}{stored}"));
            *f
        }
    })
}

/// A request the cache does not answer (an unsafe method, an upgrade, a GET with a body):
/// to the origin; an unsafe method that succeeded invalidates what is stored of its URL.
async fn pass(
    cache: &Cache,
    origin: &Origin,
    key: &str,
    parts: &mut Parts,
    body: UpBody,
    stats: &Arc<BodyStats>,
    fin: &mut Finish,
) -> Result<Fetched, ProxyError> {
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    let invalidating = !matches!(parts.method, Method::OPTIONS | Method::TRACE) && !safe;
    let fwd = if safe { "bypass" } else { "method" };
    fin.cache_status = Some(format!("{NAME}; fwd={fwd}"));
    let out = origin.fetch(parts, body, stats, fin, false).await?;
    let st = out.resp.status();
    if invalidating && (st.is_success() || st.is_redirection()) {
        invalidate(cache, origin, key, out.resp.headers());
    }
    fin.cache_status = Some(format!("{NAME}; fwd={fwd}; fwd-status={}", st.as_u16()));
    Ok(out)
}

/// What the store has for a request.
enum Found {
    /// An answer from the store (boxed: larger than the other outcome).
    Answer(Box<Fetched>),
    /// To the origin, validating `stale` when there is one; `fwd` says why (Cache-Status);
    /// `guard`: this request leads the URL's flight.
    Go {
        stale: Option<Arc<Entry>>,
        fwd: &'static str,
        guard: Option<FlightGuard>,
    },
}

/// Looks the request up; on a miss or a copy to validate, joins the URL's flight: the leader
/// looks once more (the previous leader may have stored it just now) and goes to the origin,
/// a follower waits up to `lock_timeout` for the leader's answer and looks again.
async fn lookup(
    ctx: &Ctx<'_>,
    rc: &RouteCache,
    key: &Arc<str>,
    parts: &Parts,
    req_cc: &Directives,
    fin: &mut Finish,
) -> Result<Found, ProxyError> {
    let cache = ctx.cache;
    let route_name = ctx.origin.route_name();
    let mut waited = false;
    let mut guard: Option<FlightGuard> = None;
    loop {
        let now = SystemTime::now();
        let found = cache.lookup(key, &route_name, &parts.headers).await;
        let fwd = match found {
            Lookup::Hit(e) => match use_stored(ctx, key, parts, e, req_cc, now, waited, fin)? {
                Stored::Answer(f) => return Ok(Found::Answer(f)),
                Stored::Validate(e, fwd) => {
                    return Ok(Found::Go {
                        stale: Some(e),
                        fwd,
                        guard,
                    });
                }
                Stored::Miss(fwd) => fwd,
            },
            _ if req_cc.only_if_cached => return Err(only_if_cached(fin)),
            Lookup::VaryMiss => "vary-miss",
            Lookup::UriMiss => "uri-miss",
        };
        if waited {
            return Ok(Found::Go {
                stale: None,
                fwd,
                guard,
            });
        }
        match cache.flight(key) {
            Flight::Leader(g) => guard = Some(g),
            Flight::Follower(mut rx) => {
                let _ = tokio::time::timeout(rc.lock_timeout, rx.changed()).await;
            }
        }
        waited = true;
    }
}

/// What a stored copy is good for.
enum Stored {
    Answer(Box<Fetched>),
    /// Validate this copy with the origin now.
    Validate(Arc<Entry>, &'static str),
    /// Must be validated, but first join the flight (as for a miss).
    Miss(&'static str),
}

/// Decides on a stored copy (RFC 9111 §4, RFC 5861): answer from it (fresh, stale allowed,
/// stale while a background refresh runs), or validate it.
#[allow(clippy::too_many_arguments)]
fn use_stored(
    ctx: &Ctx<'_>,
    key: &Arc<str>,
    parts: &Parts,
    e: Arc<Entry>,
    req_cc: &Directives,
    now: SystemTime,
    waited: bool,
    fin: &mut Finish,
) -> Result<Stored, ProxyError> {
    let cache = ctx.cache;
    let rcc = e.directives();
    let extra = match policy::decide(&e.timing, &rcc, req_cc, now) {
        Use::Fresh => {
            if waited {
                "; collapsed"
            } else {
                ""
            }
        }
        Use::StaleAllowed => {
            cache.counters.stale.inc();
            ""
        }
        Use::StaleWhileRevalidate => {
            cache.counters.stale.inc();
            if let Flight::Leader(g) = cache.flight(key) {
                background_refresh(ctx, parts, e.clone(), g, fin);
            }
            ""
        }
        Use::Validate if req_cc.only_if_cached => return Err(only_if_cached(fin)),
        Use::Validate => {
            let fwd = if req_cc.no_cache { "request" } else { "stale" };
            if req_cc.no_cache || waited {
                return Ok(Stored::Validate(e, fwd));
            }
            return Ok(Stored::Miss(fwd));
        }
    };
    cache.counters.hits.inc();
    fin.cache_status = Some(hit_status(&e, now, extra));
    Ok(Stored::Answer(Box::new(from_store(&e, parts, now))))
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
