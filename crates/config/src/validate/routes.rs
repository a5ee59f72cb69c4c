//! `[[routes]]`: which listeners a route serves, what it matches (HTTP fields, or sources,
//! destinations and SNI for tcp and tls listeners), its one action and how it rewrites requests.

use std::collections::HashSet;

use super::cache::{compress, route_cache};
use super::{Validator, http_token};
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

pub(super) fn routes(
    v: &mut Validator,
    root_path: &KeyPath,
    routes: &[Option<RawRoute>],
    listeners: &[(String, Option<RawListener>)],
    upstreams: &[(String, Option<RawUpstream>)],
    rate_limits: &[(String, Option<RawRateLimit>)],
) -> Vec<Route> {
    let upstream_index = |n: &str| upstreams.iter().position(|(name, _)| name == n);
    let mut route_models = Vec::new();
    let mut names = HashSet::new();
    for (i, raw) in routes.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let rp = root_path.key("routes").index(i);
        let name = raw.name.clone().unwrap_or_else(|| format!("route{i}"));
        if !names.insert(name.clone()) {
            v.at(
                &rp.key("name"),
                format!("route name `{name}` is used twice"),
            );
        }
        let mut route = route(v, &rp, name, raw, listeners, &upstream_index);
        route.rate_limit = super::limits::route_rate_limit(v, &rp, raw, rate_limits);
        if let RouteAction::Upstream(u) = route.action {
            for i in &route.listeners {
                if let Some(l) = &listeners[*i].1 {
                    let up = upstreams[u].1.as_ref();
                    super::smtp::pairing(v, &rp.key("upstream"), l.protocol, up, "this route");
                }
            }
        }
        route_models.push(route);
    }
    route_models
}

fn route(
    v: &mut Validator,
    rp: &KeyPath,
    name: String,
    raw: &RawRoute,
    listeners: &[(String, Option<RawListener>)],
    upstream_index: &impl Fn(&str) -> Option<usize>,
) -> Route {
    let listeners_idx = route_listeners(v, rp, raw, listeners);
    let serves_tcp = listeners_idx.iter().any(|i| {
        listeners[*i].1.as_ref().is_some_and(|l| {
            matches!(
                l.protocol,
                RawListenerProtocol::Tcp
                    | RawListenerProtocol::Tls
                    | RawListenerProtocol::Udp
                    | RawListenerProtocol::Smtp
            )
        })
    });
    let serves_tls = listeners_idx.iter().any(|i| {
        listeners[*i]
            .1
            .as_ref()
            .is_some_and(|l| l.protocol == RawListenerProtocol::Tls)
    });
    let sni = sni(v, rp, raw, serves_tls);
    if serves_tcp {
        http_only(v, rp, raw);
    }
    let hosts = hosts(v, rp, raw);
    let methods = methods(v, rp, raw);
    let headers = headers(v, rp, raw);
    prefixes(v, rp, raw);
    let action = action(v, rp, raw, upstream_index);
    if let Some(h) = &raw.set_host
        && (h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b == b'/'))
    {
        v.at(&rp.key("set_host"), format!("`{h}` is not a host[:port]"));
    }
    let route = Route {
        name,
        listeners: listeners_idx,
        matcher: RouteMatch {
            hosts,
            path_prefix: raw.path_prefix.clone(),
            methods,
            headers,
            sources: v.cidrs(&rp.key("sources"), &raw.sources),
            destinations: v.cidrs(&rp.key("destinations"), &raw.destinations),
            sni,
        },
        action: action.unwrap_or(RouteAction::Respond {
            status: 500,
            body: String::new(),
        }),
        strip_prefix: raw.strip_prefix.clone(),
        add_prefix: raw.add_prefix.clone(),
        set_host: raw.set_host.clone(),
        max_body: v.size(&rp.key("max_body"), raw.max_body.as_deref()),
        rate_limit: None,
        forward_headers: forward_headers(
            v,
            &rp.key("forward_headers"),
            raw.forward_headers.as_deref(),
        ),
        request_headers: v.header_ops(&rp.key("request_headers"), &raw.request_headers),
        response_headers: v.header_ops(&rp.key("response_headers"), &raw.response_headers),
        cache: raw
            .cache
            .as_ref()
            .and_then(|c| route_cache(v, &rp.key("cache"), c)),
        compress: raw
            .compress
            .as_ref()
            .map(|c| compress(v, &rp.key("compress"), c)),
    };
    if raw.forward_headers.is_some() && !matches!(route.action, RouteAction::Upstream(_)) {
        v.at(
            &rp.key("forward_headers"),
            "only routes with an `upstream` forward requests",
        );
    }
    if route.cache.is_some() && !matches!(route.action, RouteAction::Upstream(_)) {
        v.at(&rp.key("cache"), "only routes with an `upstream` can cache");
    }
    route
}

/// `listeners`, as indexes; absent: every listener that is not known to be tcp, tls, udp or
/// smtp.
fn route_listeners(
    v: &mut Validator,
    rp: &KeyPath,
    raw: &RawRoute,
    listeners: &[(String, Option<RawListener>)],
) -> Vec<usize> {
    match &raw.listeners {
        None => listeners
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| {
                l.as_ref().is_none_or(|l| {
                    matches!(
                        l.protocol,
                        RawListenerProtocol::Http | RawListenerProtocol::Https
                    )
                })
            })
            .map(|(i, _)| i)
            .collect(),
        Some(ls) => {
            let mut out = Vec::new();
            for (j, l) in ls.iter().enumerate() {
                match listeners.iter().position(|(n, _)| n == l) {
                    Some(i) => out.push(i),
                    None => v.at(
                        &rp.key("listeners").index(j),
                        format!("no listener named `{l}`"),
                    ),
                }
            }
            out
        }
    }
}

fn sni(v: &mut Validator, rp: &KeyPath, raw: &RawRoute, serves_tls: bool) -> Vec<HostPattern> {
    if !raw.sni.is_empty() && !serves_tls {
        v.at(
            &rp.key("sni"),
            "only routes that serve a tls listener match on SNI",
        );
    }
    let mut sni = Vec::new();
    for (j, h) in raw.sni.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(rest) if !rest.is_empty() => sni.push(HostPattern::Wildcard(format!(".{rest}"))),
            None if !h.is_empty() && !h.contains(['/', ' ', ':']) => {
                sni.push(HostPattern::Exact(h))
            }
            _ => v.at(
                &rp.key("sni").index(j),
                format!("`{h}` is not a server name"),
            ),
        }
    }
    sni
}

/// A route serving a tcp, tls, udp or smtp listener sets none of the HTTP-only keys.
fn http_only(v: &mut Validator, rp: &KeyPath, raw: &RawRoute) {
    let http_only = [
        ("hosts", !raw.hosts.is_empty()),
        ("path_prefix", raw.path_prefix.is_some()),
        ("methods", !raw.methods.is_empty()),
        ("headers", !raw.headers.is_empty()),
        ("redirect", raw.redirect.is_some()),
        ("respond", raw.respond.is_some()),
        ("rate_limit", raw.rate_limit.is_some()),
    ];
    for (key, set) in http_only {
        if set {
            v.at(
                &rp.key(key),
                "is HTTP-only: this route serves a tcp, tls, udp or smtp listener (which match on sources, destinations and, for tls, sni)",
            );
        }
    }
}

fn hosts(v: &mut Validator, rp: &KeyPath, raw: &RawRoute) -> Vec<HostPattern> {
    let mut hosts = Vec::new();
    for (j, h) in raw.hosts.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        let (pat, name) = match h.strip_prefix("*.") {
            Some(rest) => (HostPattern::Wildcard(format!(".{rest}")), rest.to_string()),
            None => (HostPattern::Exact(h.clone()), h.clone()),
        };
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if ok {
            hosts.push(pat);
        } else {
            v.at(
                &rp.key("hosts").index(j),
                format!("`{h}` is not a host name or \"*.domain\" pattern"),
            );
        }
    }
    hosts
}

fn methods(v: &mut Validator, rp: &KeyPath, raw: &RawRoute) -> Vec<String> {
    let mut methods = Vec::new();
    for (j, m) in raw.methods.iter().enumerate() {
        if http_token(m).is_err() {
            v.at(
                &rp.key("methods").index(j),
                format!("`{m}` is not a method"),
            );
        } else {
            methods.push(m.to_ascii_uppercase());
        }
    }
    methods
}

fn headers(v: &mut Validator, rp: &KeyPath, raw: &RawRoute) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (k, val) in &raw.headers {
        if http_token(k).is_err() {
            v.at(
                &rp.key("headers").key(k),
                format!("`{k}` is not a header name"),
            );
        } else {
            headers.push((k.to_ascii_lowercase(), val.clone()));
        }
    }
    headers
}

/// `path_prefix`, `strip_prefix` and `add_prefix` are paths.
fn prefixes(v: &mut Validator, rp: &KeyPath, raw: &RawRoute) {
    for (key, p) in [
        ("path_prefix", &raw.path_prefix),
        ("strip_prefix", &raw.strip_prefix),
        ("add_prefix", &raw.add_prefix),
    ] {
        if let Some(p) = p
            && !p.starts_with('/')
        {
            v.at(&rp.key(key), format!("`{p}` must start with `/`"));
        }
    }
}

/// Exactly one of `upstream`, `redirect` and `respond`; `None` if that fails.
fn action(
    v: &mut Validator,
    rp: &KeyPath,
    raw: &RawRoute,
    upstream_index: &impl Fn(&str) -> Option<usize>,
) -> Option<RouteAction> {
    let actions = [
        raw.upstream.is_some(),
        raw.redirect.is_some(),
        raw.respond.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if actions != 1 {
        v.at(
            rp,
            "needs exactly one action: `upstream`, `redirect` or `respond`",
        );
        None
    } else if let Some(u) = &raw.upstream {
        match upstream_index(u) {
            Some(i) => Some(RouteAction::Upstream(i)),
            None => {
                v.at(&rp.key("upstream"), format!("no upstream named `{u}`"));
                None
            }
        }
    } else if let Some(r) = &raw.redirect {
        let status = r.status.unwrap_or(302);
        if ![301, 302, 303, 307, 308].contains(&status) {
            v.at(
                &rp.key("redirect").key("status"),
                format!("{status} is not a redirect status: expected 301, 302, 303, 307 or 308"),
            );
        }
        Some(RouteAction::Redirect {
            to: r.to.clone(),
            status,
        })
    } else if let Some(r) = &raw.respond {
        if !(200..=599).contains(&r.status) {
            v.at(
                &rp.key("respond").key("status"),
                format!("{} is not a final status (200-599)", r.status),
            );
        }
        Some(RouteAction::Respond {
            status: r.status,
            body: r.body.clone(),
        })
    } else {
        None
    }
}

/// `forward_headers`: the listed fields on, the others off; absent: all on.
fn forward_headers(v: &mut Validator, path: &KeyPath, raw: Option<&[String]>) -> ForwardHeaders {
    let Some(names) = raw else {
        return ForwardHeaders::ALL;
    };
    let mut on = ForwardHeaders::NONE;
    for (i, n) in names.iter().enumerate() {
        match on.flag(&n.to_ascii_lowercase()) {
            Some(f) if *f => v.at(&path.index(i), format!("`{n}` is listed twice")),
            Some(f) => *f = true,
            None => v.at(
                &path.index(i),
                format!(
                    "`{n}` is not one of x-forwarded-for, x-forwarded-proto, x-forwarded-host, \
                     forwarded, via, x-request-id"
                ),
            ),
        }
    }
    on
}
