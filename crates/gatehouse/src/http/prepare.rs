//! The request's head rewritten for the origin, and what balancing needs of it: hop-by-hop
//! fields out, the forwarding fields in (as lines for an HTTP/1 origin), Host, the route's
//! header operations, the target (prefixes, absolute form for HTTP/2), the version; then the
//! server choice's inputs (sticky cookie, hash key) and the PROXY header's addresses.
//!
//! Framing was settled by the HTTP/1 parser before this point, so removing hop-by-hop fields
//! cannot change how the body is delimited: the next hop gets a freshly framed message
//! (Content-Length kept, or chunked by the origin connection).

use std::net::IpAddr;

use gatehouse_config::model::{HashKey, Route, UpstreamProtocol};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Uri, Version};

use super::headers::{self, ClientInfo};
use super::pipeline::{ConnCtx, Origin, conn_scheme};
use crate::error::{ErrorKind, ProxyError};
use crate::upstream::fnv1a;
use crate::upstream::pool::ProxyHeader;

/// What the rewrite leaves for the steps after it.
pub(crate) struct Prepared {
    /// The Upgrade the client asked for (HTTP/1.1 `Connection: upgrade`), passed on.
    pub(crate) upgrade: Option<HeaderValue>,
    /// The client's side of that upgrade, taken from the request.
    pub(crate) client_upgrade: Option<super::h1::ClientUpgrade>,
    /// New fields as header lines, written after the map's (HTTP/1 origins).
    pub(crate) lines: Vec<u8>,
}

/// Rewrites `parts` for the origin of `o` (see the module's documentation).
#[inline]
pub(crate) fn request(o: &Origin, parts: &mut Parts) -> Result<Prepared, ProxyError> {
    let route = o.route_model();
    let upgrade = if parts.version == Version::HTTP_11 {
        headers::upgrade_request(&parts.headers)
    } else {
        None
    };
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<super::h1::ClientUpgrade>());
    let lines = fields(o, route, parts, upgrade.as_ref());
    let upstream_host = route.set_host.as_deref().unwrap_or(&o.host_full);
    let h = &mut parts.headers;
    if (route.set_host.is_some() || !h.contains_key(header::HOST))
        && let Ok(v) = HeaderValue::from_str(upstream_host)
    {
        h.insert(header::HOST, v);
    }
    headers::apply_ops(h, &route.request_headers);
    target(o.up.model.protocol, route, parts, upstream_host)?;
    Ok(Prepared {
        upgrade,
        client_upgrade,
        lines,
    })
}

/// The header fields: hop-by-hop out, TE and the upgrade's fields back, the forwarding fields,
/// the request id and the client certificate's fields in. Returns the lines that go after the
/// map's fields (empty when the new fields went into the map).
#[inline]
fn fields(o: &Origin, route: &Route, parts: &mut Parts, upgrade: Option<&HeaderValue>) -> Vec<u8> {
    let conn = &*o.conn;
    let up = &o.up;
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
    if let Some(u) = upgrade {
        f.map
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        f.map.insert(header::UPGRADE, u.clone());
    }
    let on = route.forward_headers;
    let client = ClientInfo {
        ip: o.client,
        trusted: o.trusted,
        proto: conn_scheme(conn),
        host: &o.host_full,
        version: version_label,
    };
    headers::set_forwarding(&mut f, &present, &client, on);
    if on.request_id {
        f.set(
            headers::X_REQUEST_ID,
            o.request_id.as_bytes(),
            present.request_id,
        );
    }
    if up.model.protocol != UpstreamProtocol::Http1 {
        // Ours or the client's: new at every request either way.
        headers::never_index_request_ids(f.map);
    }
    client_cert(conn, &mut f, present.client_cert);
    lines
}

/// The client certificate's fields: a client's own are removed, ours set from the handshake.
#[inline]
fn client_cert(conn: &ConnCtx, f: &mut headers::NewFields<'_>, present: bool) {
    if present {
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
}

/// The request target and version for the origin's protocol. An HTTP/1.1 origin gets the
/// target as the client sent it when nothing rewrites it: no copy, no second parse.
#[inline]
fn target(
    protocol: UpstreamProtocol,
    route: &Route,
    parts: &mut Parts,
    upstream_host: &str,
) -> Result<(), ProxyError> {
    let rewrite = route.strip_prefix.is_some() || route.add_prefix.is_some();
    let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
    if protocol != UpstreamProtocol::Http1 || rewrite || !origin_form {
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
        let uri = match protocol {
            // Validation keeps smtp upstreams off HTTP routes.
            UpstreamProtocol::Http1 | UpstreamProtocol::Smtp => new_pq.parse::<Uri>(),
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let authority = if upstream_host.is_empty() {
                    "localhost"
                } else {
                    upstream_host
                };
                let scheme = if protocol == UpstreamProtocol::H2 {
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
    parts.version = match protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Smtp => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
    };
    if protocol != UpstreamProtocol::Http1 {
        // HTTP/2 carries the authority in :authority; a Host beside it must agree or go.
        parts.headers.remove(header::HOST);
    }
    Ok(())
}

/// The sticky cookie's server id the client sent, if the upstream has sticky sessions.
#[inline]
pub(crate) fn sticky_in(o: &Origin, parts: &Parts) -> Option<String> {
    o.up.model
        .sticky_cookie
        .as_deref()
        .and_then(|c| cookie(parts, c))
        .map(str::to_string)
}

/// The request's hash key for the `hash` balancer.
#[inline]
pub(crate) fn hash_input(key: &HashKey, parts: &Parts, client: IpAddr) -> Option<u64> {
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

/// Who the client is, for a PROXY header or a transparent source address; None when the
/// upstream needs neither.
#[inline]
pub(crate) fn proxy_header(o: &Origin) -> Option<ProxyHeader> {
    let m = &o.up.model;
    let conn = &*o.conn;
    let needs_client = m.proxy_protocol.is_some() || m.source_address.is_some();
    needs_client.then(|| ProxyHeader {
        src: conn.peer,
        dst: conn.local,
        alpn: conn.tls.as_ref().and_then(|t| t.alpn.clone()),
        authority: conn.tls.as_ref().and_then(|t| t.sni.clone()),
        tls_version: conn.tls.as_ref().and_then(|t| t.version.clone()),
    })
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
