//! The origin's answer on its way back: where its fields live (as sent, or in a map), the
//! protocol switch (a tunnel after 101), the head's fix-ups (hop-by-hop fields, Location mapped
//! back to the public host, Via), and the last touches every answer of an upstream route gets
//! (sticky cookie, the route's header operations), then the fields gatehouse itself owns on
//! every answer (request id, Cache-Status, HSTS).

use std::sync::Arc;

use gatehouse_config::model::Route;
use gatehouse_h1::{Kind, RawHead};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::ProxyBody;
use super::headers::{self, LocationMap};
use super::pipeline::{ConnCtx, Origin, conn_scheme};
use super::record::Finish;
use crate::error::{ErrorKind, ProxyError};
use crate::upstream::{ServerState, Upstream};

/// Puts the origin's fields in the answer's map unless they may pass as sent: the caller reads
/// none (`keep_raw`) and nothing on the way rewrites them (a Location to map back, a Connection
/// naming other fields, a protocol switch).
#[inline]
pub(crate) fn settle_fields<B>(
    resp: &mut Response<B>,
    raw: Option<RawHead>,
    keep_raw: bool,
) -> Option<RawHead> {
    let status = resp.status();
    let mut raw = raw;
    if let Some(r) = raw.take_if(|r| {
        !keep_raw
            || status == StatusCode::SWITCHING_PROTOCOLS
            || r.has(Kind::Location)
            || r.has(Kind::Connection)
    }) {
        let added = std::mem::take(resp.headers_mut());
        *resp.headers_mut() = r.into_map(added);
    }
    raw
}

/// The answer's head for the client: hop-by-hop fields out, Location and Content-Location
/// mapped back to the public host, Via added when the route sets it.
#[inline]
pub(crate) fn rewrite_head(
    o: &Origin,
    server: &ServerState,
    h: &mut http::HeaderMap,
    raw: &mut Option<RawHead>,
) {
    let route = o.route_model();
    if let Some(r) = raw {
        // No Connection field (see `settle_fields`): hop-by-hop fields go by their names.
        r.remove(Kind::HopByHop);
        r.remove(Kind::TransferEncoding);
    }
    headers::remove_hop_by_hop(h);
    let mut internal: Vec<&str> = vec![server.spec.address.as_str()];
    if let Some(sh) = &route.set_host {
        internal.push(sh.as_str());
    }
    let map = LocationMap {
        internal: &internal,
        public_host: &o.host_full,
        public_scheme: conn_scheme(&o.conn),
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
    match raw {
        _ if !route.forward_headers.via => {}
        // A Via of the origin's stays a line of its own: the same list (RFC 9110 §5.3).
        Some(r) => r.add("via", b"1.1 gatehouse"),
        None => headers::append_via(h, "1.1"),
    }
}

/// The server id to set in the sticky cookie, when the client does not have it yet.
#[inline]
pub(crate) fn sticky_out(
    up: &Upstream,
    server: &ServerState,
    sticky_in: Option<&str>,
) -> Option<Arc<str>> {
    up.model
        .sticky_cookie
        .as_ref()
        .filter(|_| sticky_in != Some(server.id.as_str()))
        .map(|_| Arc::from(server.id.as_str()))
}

/// The origin accepted the client's upgrade with 101: the tunnel starts once the client's
/// connection has written the 101 and handed over its socket; the answer carries only the
/// fields of the switch.
pub(crate) fn tunnel<B>(
    up: &Upstream,
    server: &ServerState,
    resp: &Response<B>,
    client_upgrade: Option<super::h1::ClientUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
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
    *out.status_mut() = resp.status();
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
    Ok(out)
}

/// The last touches on an upstream's answer, on every path (origin or cache): the sticky
/// cookie of the server that served, then the route's header changes.
#[inline]
pub(crate) fn finish_upstream(
    mut resp: Response<ProxyBody>,
    up: &Upstream,
    route: &Route,
    sticky: Option<Arc<str>>,
) -> Response<ProxyBody> {
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
    resp
}

/// The fields gatehouse sets on every answer, replacing the origin's (in its fields kept as
/// sent too): the request id (`echo_id`), Cache-Status of a caching route, and the listener's
/// HSTS on TLS.
#[inline]
pub(crate) fn own_fields<B>(
    conn: &ConnCtx,
    fin: &Finish,
    resp: &mut Response<B>,
    raw: &mut Option<RawHead>,
    echo_id: bool,
) {
    let request_id = &fin.request_id;
    if echo_id {
        if let Some(r) = raw {
            r.remove(Kind::RequestId);
            r.add("x-request-id", request_id.as_bytes());
        } else if let Ok(v) = HeaderValue::from_str(request_id) {
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
        if let Some(r) = raw {
            r.remove(Kind::Hsts);
            r.add("strict-transport-security", hsts.as_bytes());
        } else {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
    }
}
