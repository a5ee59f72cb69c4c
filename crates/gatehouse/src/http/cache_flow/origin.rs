//! A caching request's trip to the origin: our validators on a stale copy, then what the
//! answer does to the store (a 304 refreshes it, an error may be answered by the stale copy
//! within stale-if-error, a storable answer is teed into it), and the background refresh of
//! stale-while-revalidate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use super::super::body::BodyStats;
use super::super::pipeline::Fetched;
use super::super::record::Finish;
use super::fill::{Pending, fill};
use super::{Ctx, Outcome, cache_key, empty_body, head_of};
use crate::error::ProxyError;
use crate::upstream::pool::UpBody;
use gatehouse_cache::entry::vary_key;
use gatehouse_cache::policy::{self, Directives, RouteRules};
use gatehouse_cache::{Entry, FlightGuard};

/// When the origin was asked and when it answered (RFC 9111 §4.2.3).
type Times = (SystemTime, SystemTime);

/// Goes to the origin for `client`'s request, validating `stale` when there is one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn to_origin(
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
    if let Some(e) = &stale {
        validators(&mut parts.headers, e);
    }
    let request_time = SystemTime::now();
    let result = ctx.origin.fetch(&mut parts, body, stats, fin, false).await;
    let times = (request_time, SystemTime::now());
    let stale_ok = |e: &Entry| policy::stale_if_error(&e.timing, &e.directives(), req_cc, times.1);
    let fetched = match (result, &stale) {
        (Err(err), Some(e)) if stale_ok(e) => {
            tracing::info!(url = &*e.key, error = %err, "origin failed: serving stale (stale-if-error)");
            ctx.cache.counters.stale.inc();
            return Ok(Outcome::FromStore(e.clone(), None));
        }
        (Err(err), _) => return Err(err),
        (Ok(f), _) => f,
    };
    let status = fetched.resp.status();
    if let Some(e) = &stale {
        if status == StatusCode::NOT_MODIFIED {
            return Ok(not_modified(ctx, e, &fetched, client, req_cc, times));
        }
        if status.is_server_error() && stale_ok(e) {
            ctx.cache.counters.stale.inc();
            return Ok(Outcome::FromStore(e.clone(), Some(status.as_u16())));
        }
    }
    match storable(ctx, &fetched, client, req_cc, times) {
        Some(template) => Ok(tee(ctx, fetched, template, guard)),
        None => Ok(Outcome::Origin(Box::new(fetched), false)),
    }
}

/// Our validators replace the client's: a 304 must be about what we hold.
fn validators(h: &mut HeaderMap, e: &Entry) {
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

/// A 304 to our validation: the stored entry refreshed and answered from.
fn not_modified(
    ctx: &Ctx<'_>,
    e: &Entry,
    fetched: &Fetched,
    client: &Parts,
    req_cc: &Directives,
    times: Times,
) -> Outcome {
    let refreshed = refresh(e, fetched.resp.headers(), &ctx.rules, times.0, times.1);
    // The merged answer must still be storable (§3): a 304 may add Set-Cookie,
    // `private` or `no-store`. Then nothing stays stored and only this client gets it.
    let still = policy::storable(
        &Method::GET,
        &client.headers,
        req_cc,
        refreshed.status,
        &refreshed.headers,
        &ctx.rules,
        times,
    );
    if let Err(why) = still {
        tracing::debug!(url = &*e.key, reason = ?why, "not storable after a 304: dropped");
        ctx.cache.purge(&e.key);
    } else {
        ctx.cache.insert(refreshed.clone(), ctx.epoch);
    }
    Outcome::FromStore(Arc::new(refreshed), Some(304))
}

/// The entry the origin's answer is stored as (its body still to come), or None when it is
/// not to be stored. A HEAD is answered from a stored GET but never fills the store itself:
/// hyper does not read the body of a HEAD answer, so there would be nothing to store.
fn storable(
    ctx: &Ctx<'_>,
    fetched: &Fetched,
    client: &Parts,
    req_cc: &Directives,
    times: Times,
) -> Option<Entry> {
    let (cache, origin) = (ctx.cache, ctx.origin);
    let status = fetched.resp.status();
    let headers = fetched.resp.headers();
    let timing = policy::storable(
        &client.method,
        &client.headers,
        req_cc,
        status,
        headers,
        &ctx.rules,
        times,
    );
    let too_big = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|l| l > cache.model.max_object);
    let timing = match timing {
        Ok(t) if !too_big => t,
        why => {
            tracing::debug!(url = %client.uri, reason = ?why.err(), too_big, "not stored");
            return None;
        }
    };
    let route = origin.route_model();
    let names = match policy::vary_names(headers) {
        Ok(n) if !n.iter().any(|n| proxy_controlled(n, route)) => n,
        _ => return None,
    };
    let mut headers = headers.clone();
    headers.remove(header::AGE);
    Some(Entry {
        key: Arc::from(cache_key(origin.scheme(), &origin.host_full, &client.uri)),
        route: origin.route_name(),
        vary: vary_key(&client.headers, &names),
        status,
        headers,
        body: Bytes::new(),
        timing,
    })
}

/// The answer goes to the client while the store keeps a copy (`fill`); one that has ended
/// already is stored at once.
fn tee(ctx: &Ctx<'_>, fetched: Fetched, template: Entry, guard: Option<FlightGuard>) -> Outcome {
    // hyper never polls a body that is already at its end (Content-Length: 0, 204): store it now.
    if fetched.resp.body().is_end_stream() {
        ctx.cache.insert(template, ctx.epoch);
        drop(guard);
        return Outcome::Origin(Box::new(fetched), true);
    }
    let Fetched { resp, sticky, .. } = fetched;
    let stall = ctx.origin.up.model.response_timeout;
    let pending = Pending {
        entry: template,
        cache: ctx.cache.clone(),
        epoch: ctx.epoch,
        guard,
    };
    let resp = resp.map(|b| fill(b, pending, stall));
    let fetched = Fetched {
        resp,
        raw: None,
        sticky,
    };
    Outcome::Origin(Box::new(fetched), true)
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
pub(super) fn background_refresh(
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
