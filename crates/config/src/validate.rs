//! raw -> model. Each section is deserialized on its own so that one bad listener does not hide the
//! errors of the next; then every value is checked and every reference resolved, and every problem
//! is collected with its key path. Nothing here stops at the first error.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::ConfigError;
use crate::locate::{KeyPath, line_col, path_at, span_of};
use crate::model::*;
use crate::raw::*;
use crate::units::{Cidr, parse_duration, parse_host_port, parse_size, parse_status_range};

struct Pending {
    span: Option<Range<usize>>,
    path: Option<KeyPath>,
    message: String,
}

struct Validator {
    errors: Vec<Pending>,
    /// Directory of the config file: relative paths in it are relative to this.
    base: PathBuf,
}

impl Validator {
    fn path(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(Pending {
            span: None,
            path: Some(path.clone()),
            message: message.into(),
        });
    }

    fn de<T: DeserializeOwned>(&mut self, v: &Spanned<DeValue<'_>>) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(Pending {
                    span: Some(e.span().unwrap_or_else(|| v.span())),
                    path: None,
                    message: e.message().to_string(),
                });
                None
            }
        }
    }

    fn duration(&mut self, path: &KeyPath, v: Option<&str>, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.at(path, e);
                default
            }
        }
    }

    fn size(&mut self, path: &KeyPath, v: Option<&str>) -> Option<u64> {
        match v.map(parse_size) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                self.at(path, e);
                None
            }
        }
    }

    fn cidrs(&mut self, path: &KeyPath, v: &[String]) -> Vec<Cidr> {
        let mut out = Vec::new();
        for (i, s) in v.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => out.push(c),
                Err(e) => self.at(&path.index(i), e),
            }
        }
        out
    }

    fn header_ops(&mut self, path: &KeyPath, raw: &RawHeaderOps) -> HeaderOps {
        let mut ops = HeaderOps::default();
        for (kind, map, out) in [
            ("set", &raw.set, &mut ops.set),
            ("add", &raw.add, &mut ops.add),
        ] {
            for (k, v) in map {
                let p = path.key(kind).key(k);
                if http_token(k).is_err() {
                    self.at(&p, format!("`{k}` is not a valid header name"));
                } else if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    self.at(&p, "header value holds CR, LF or NUL");
                } else {
                    out.push((k.to_ascii_lowercase(), v.clone()));
                }
            }
        }
        for (i, k) in raw.remove.iter().enumerate() {
            if http_token(k).is_err() {
                self.at(
                    &path.key("remove").index(i),
                    format!("`{k}` is not a valid header name"),
                );
            } else {
                ops.remove.push(k.to_ascii_lowercase());
            }
        }
        ops
    }
}

/// RFC 9110 §5.6.2 token.
fn http_token(s: &str) -> Result<(), ()> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(()) }
}

const SECTIONS: &str = "global, admin, listeners, routes, upstreams, acme, cache";

pub(crate) fn parse_and_validate(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let (table, syntax) = DeTable::parse_recoverable(text);
    let locate = |span: Range<usize>, path: String, message: String| {
        let (line, col) = line_col(text, span.start);
        ConfigError {
            file: file.to_string(),
            line,
            col,
            path,
            message,
        }
    };
    if !syntax.is_empty() {
        return Err(syntax
            .into_iter()
            .map(|e| {
                let msg = e.message().trim().to_string();
                locate(e.span().unwrap_or(0..0), String::new(), msg)
            })
            .collect());
    }
    let span = table.span();
    let root = Spanned::new(span, DeValue::Table(table.into_inner()));
    let base = std::path::Path::new(file)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut v = Validator {
        errors: Vec::new(),
        base,
    };
    let config = validate(&mut v, &root);
    if v.errors.is_empty()
        && let Some(c) = config
    {
        return Ok(c);
    }
    let mut out: Vec<ConfigError> = v
        .errors
        .into_iter()
        .map(|p| {
            let (span, path) = match (p.span, p.path) {
                (Some(s), Some(p)) => (s, p),
                (Some(s), None) => {
                    let path = path_at(&root, s.start);
                    (s, path)
                }
                (None, Some(p)) => (span_of(&root, &p), p),
                (None, None) => (0..0, KeyPath::default()),
            };
            locate(span, path.to_string(), p.message)
        })
        .collect();
    out.sort_by_key(|e| (e.line, e.col));
    out.dedup();
    Err(out)
}

fn validate(v: &mut Validator, root: &Spanned<DeValue<'_>>) -> Option<Config> {
    let DeValue::Table(top) = root.get_ref() else {
        return None;
    };
    let mut global = RawGlobal::default();
    let mut admin: Option<RawAdmin> = None;
    let mut listeners: Vec<(String, Option<RawListener>)> = Vec::new();
    let mut routes: Vec<Option<RawRoute>> = Vec::new();
    let mut acme: Option<RawAcme> = None;
    let mut cache: Option<RawCache> = None;
    let mut upstreams: Vec<(String, Option<RawUpstream>)> = Vec::new();
    for (key, val) in top.iter() {
        let path = KeyPath::default().key(key.get_ref());
        match key.get_ref().as_ref() {
            "global" => global = v.de(val).unwrap_or_default(),
            "admin" => admin = v.de(val),
            "acme" => acme = v.de(val),
            "cache" => cache = v.de(val),
            "listeners" | "upstreams" => {
                let Some(t) = val.get_ref().as_table() else {
                    v.at(&path, "expected a table of named entries");
                    continue;
                };
                for (name, entry) in t.iter() {
                    let name = name.get_ref().to_string();
                    if key.get_ref() == "listeners" {
                        listeners.push((name, v.de(entry)));
                    } else {
                        upstreams.push((name, v.de(entry)));
                    }
                }
            }
            "routes" => {
                let Some(a) = val.get_ref().as_array() else {
                    v.at(&path, "expected an array of tables ([[routes]])");
                    continue;
                };
                for entry in a.iter() {
                    routes.push(v.de(entry));
                }
            }
            other => v.at(
                &path,
                format!("unknown section `{other}`, expected one of {SECTIONS}"),
            ),
        }
    }

    let root_path = KeyPath::default();
    let gp = root_path.key("global");
    if global.threads == Some(0) {
        v.at(&gp.key("threads"), "must be at least 1");
    }
    let global_model = Global {
        threads: global.threads.filter(|t| *t > 0),
        grace_period: v.duration(
            &gp.key("grace_period"),
            global.grace_period.as_deref(),
            Duration::from_secs(30),
        ),
        access_log: match global.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some("") => {
                v.at(
                    &gp.key("access_log"),
                    "expected \"off\", \"stdout\" or a file path",
                );
                AccessLog::Off
            }
            Some(p) => AccessLog::File(PathBuf::from(p)),
        },
    };

    let admin_model = admin.and_then(|a| match a.bind.parse::<SocketAddr>() {
        Ok(s) => Some(s),
        Err(_) => {
            v.at(
                &root_path.key("admin").key("bind"),
                format!(
                    "`{}` is not an IP:port address like \"127.0.0.1:9901\"",
                    a.bind
                ),
            );
            None
        }
    });

    // Listeners
    let mut listener_models = Vec::new();
    let mut bound: BTreeMap<(SocketAddr, bool), String> = BTreeMap::new();
    for (name, raw) in &listeners {
        let Some(raw) = raw else { continue };
        let lp = root_path.key("listeners").key(name);
        let mut binds = Vec::new();
        if raw.bind.as_slice().is_empty() {
            v.at(&lp.key("bind"), "needs at least one address");
        }
        for (i, b) in raw.bind.as_slice().iter().enumerate() {
            let bp = match raw.bind {
                OneOrMany::One(_) => lp.key("bind"),
                OneOrMany::Many(_) => lp.key("bind").index(i),
            };
            match b.parse::<SocketAddr>() {
                Ok(addr) => {
                    // TCP and UDP ports are separate: a tcp and a udp listener may share one.
                    let udp = raw.protocol == RawListenerProtocol::Udp;
                    if addr.port() != 0
                        && let Some(other) = bound.insert((addr, udp), name.clone())
                    {
                        v.at(
                            &bp,
                            format!("{addr} is already bound by listener `{other}`"),
                        );
                    }
                    if Some(addr) == admin_model && addr.port() != 0 && !udp {
                        v.at(&bp, format!("{addr} is the admin listener's address"));
                    }
                    binds.push(addr);
                }
                Err(_) => v.at(
                    &bp,
                    format!(
                        "`{b}` is not an IP:port address like \"0.0.0.0:8080\" or \"[::]:8080\""
                    ),
                ),
            }
        }
        let max_header_size = v
            .size(&lp.key("max_header_size"), raw.max_header_size.as_deref())
            .unwrap_or(64 * 1024);
        if !(1024..=16 << 20).contains(&max_header_size) {
            v.at(&lp.key("max_header_size"), "must be between 1KiB and 16MiB");
        }
        if raw.max_connections == Some(0) {
            v.at(&lp.key("max_connections"), "must be at least 1");
        }
        let tls = listener_tls(v, &lp, raw);
        let proxy_protocol = match raw.proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyProtocol::V1),
            Some("v2") => Some(ProxyProtocol::V2),
            Some("any") => Some(ProxyProtocol::Any),
            Some(x) => {
                v.at(
                    &lp.key("proxy_protocol"),
                    format!("`{x}` is not one of v1, v2, any"),
                );
                None
            }
        };
        if proxy_protocol.is_some() && raw.trusted_proxies.is_empty() {
            v.at(
                &lp.key("proxy_protocol"),
                "needs trusted_proxies: a PROXY header is only accepted from them",
            );
        }
        listener_models.push(Listener {
            name: name.clone(),
            bind: binds,
            tls,
            proxy_protocol,
            upstream: None,
            udp_idle_timeout: v.duration(
                &lp.key("udp_idle_timeout"),
                raw.udp_idle_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            protocol: match raw.protocol {
                RawListenerProtocol::Http => ListenerProtocol::Http,
                RawListenerProtocol::Https => ListenerProtocol::Https,
                RawListenerProtocol::Tcp => ListenerProtocol::Tcp,
                RawListenerProtocol::Tls => ListenerProtocol::Tls,
                RawListenerProtocol::Udp => ListenerProtocol::Udp,
            },
            trusted_proxies: v.cidrs(&lp.key("trusted_proxies"), &raw.trusted_proxies),
            max_header_size: max_header_size.clamp(1024, 16 << 20) as usize,
            client_header_timeout: v.duration(
                &lp.key("client_header_timeout"),
                raw.client_header_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            keepalive_timeout: v.duration(
                &lp.key("keepalive_timeout"),
                raw.keepalive_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            max_connections: raw.max_connections.filter(|m| *m > 0),
        });
    }

    // Upstreams
    let mut upstream_models = Vec::new();
    for (name, raw) in &upstreams {
        let Some(raw) = raw else {
            // Keep the name known so routes naming it don't report a second error.
            upstream_models.push(None);
            continue;
        };
        let up = root_path.key("upstreams").key(name);
        upstream_models.push(Some(upstream(v, &up, name, raw)));
    }
    let upstream_index = |n: &str| upstreams.iter().position(|(name, _)| name == n);
    // listener_models holds the listeners that deserialized, in file order.
    let parsed = listeners
        .iter()
        .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)));
    for ((name, raw), model) in parsed.zip(listener_models.iter_mut()) {
        let lp = root_path.key("listeners").key(name);
        match (&raw.upstream, raw.protocol) {
            (
                Some(u),
                RawListenerProtocol::Tcp | RawListenerProtocol::Tls | RawListenerProtocol::Udp,
            ) => match upstream_index(u) {
                Some(i) => model.upstream = Some(i),
                None => v.at(&lp.key("upstream"), format!("no upstream named `{u}`")),
            },
            (Some(_), _) => v.at(
                &lp.key("upstream"),
                "only tcp and tls listeners have a default upstream (http listeners use routes)",
            ),
            (None, _) => {}
        }
    }

    // Routes
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
        let listeners_idx: Vec<usize> = match &raw.listeners {
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
        };
        let serves_tcp = listeners_idx.iter().any(|i| {
            listeners[*i].1.as_ref().is_some_and(|l| {
                matches!(
                    l.protocol,
                    RawListenerProtocol::Tcp | RawListenerProtocol::Tls | RawListenerProtocol::Udp
                )
            })
        });
        let serves_tls = listeners_idx.iter().any(|i| {
            listeners[*i]
                .1
                .as_ref()
                .is_some_and(|l| l.protocol == RawListenerProtocol::Tls)
        });
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
                Some(rest) if !rest.is_empty() => {
                    sni.push(HostPattern::Wildcard(format!(".{rest}")))
                }
                None if !h.is_empty() && !h.contains(['/', ' ', ':']) => {
                    sni.push(HostPattern::Exact(h))
                }
                _ => v.at(
                    &rp.key("sni").index(j),
                    format!("`{h}` is not a server name"),
                ),
            }
        }
        if serves_tcp {
            let http_only = [
                ("hosts", !raw.hosts.is_empty()),
                ("path_prefix", raw.path_prefix.is_some()),
                ("methods", !raw.methods.is_empty()),
                ("headers", !raw.headers.is_empty()),
                ("redirect", raw.redirect.is_some()),
                ("respond", raw.respond.is_some()),
            ];
            for (key, set) in http_only {
                if set {
                    v.at(
                        &rp.key(key),
                        "is HTTP-only: this route serves a tcp or tls listener (which match on sources, destinations and, for tls, sni)",
                    );
                }
            }
        }
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
        let actions = [
            raw.upstream.is_some(),
            raw.redirect.is_some(),
            raw.respond.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let action = if actions != 1 {
            v.at(
                &rp,
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
                    format!(
                        "{status} is not a redirect status: expected 301, 302, 303, 307 or 308"
                    ),
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
        };
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
        route_models.push(route);
    }

    let acme_model = acme.map(|a| {
        let ap = root_path.key("acme");
        if !(a.directory.starts_with("https://") || a.directory.starts_with("http://")) {
            v.at(&ap.key("directory"), "must be an http(s) URL");
        }
        let challenge = match a.challenge.as_deref() {
            None | Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some("http-01") => AcmeChallenge::Http01,
            Some(x) => {
                v.at(
                    &ap.key("challenge"),
                    format!("`{x}` is not one of tls-alpn-01, http-01"),
                );
                AcmeChallenge::TlsAlpn01
            }
        };
        if a.storage.is_empty() {
            v.at(&ap.key("storage"), "needs a directory");
        }
        Acme {
            directory: a.directory.clone(),
            email: a.email.clone(),
            storage: v.path(&a.storage),
            ca: a.ca.as_deref().map(|c| v.path(c)),
            challenge,
            renew_before: v.duration(
                &ap.key("renew_before"),
                a.renew_before.as_deref(),
                Duration::from_secs(30 * 86_400),
            ),
        }
    });
    let wants_acme = listener_models
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| !t.acme.is_empty()));
    if wants_acme && acme_model.is_none() {
        v.at(
            &root_path,
            "listeners name certificates in `tls.acme` but there is no [acme] section",
        );
    }
    if acme_model
        .as_ref()
        .is_some_and(|a| a.challenge == AcmeChallenge::Http01)
        && !listener_models
            .iter()
            .any(|l| l.protocol == ListenerProtocol::Http)
    {
        v.at(
            &root_path.key("acme").key("challenge"),
            "http-01 needs an http listener to answer on",
        );
    }
    let any_cache = route_models.iter().any(|r| r.cache.is_some());
    let cache_model = match &cache {
        Some(c) => Some(cache_store(v, &root_path.key("cache"), c)),
        None if any_cache => Some(CacheStore {
            memory: DEFAULT_CACHE_MEMORY,
            disk: None,
            max_object: DEFAULT_MAX_OBJECT,
        }),
        None => None,
    };
    Some(Config {
        cache: cache_model,
        acme: acme_model,
        global: global_model,
        admin: admin_model,
        listeners: listener_models,
        routes: route_models,
        upstreams: upstream_models.into_iter().collect::<Option<Vec<_>>>()?,
    })
}

const DEFAULT_CACHE_MEMORY: u64 = 256 << 20;
const DEFAULT_MAX_OBJECT: u64 = 64 << 20;

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

fn cache_store(v: &mut Validator, p: &KeyPath, raw: &RawCache) -> CacheStore {
    let memory = v
        .size(&p.key("memory"), raw.memory.as_deref())
        .unwrap_or(DEFAULT_CACHE_MEMORY);
    let max_object = v.size(&p.key("max_object"), raw.max_object.as_deref());
    if memory < 1 << 20 {
        v.at(&p.key("memory"), "must be at least 1MiB");
    }
    if let Some(m) = max_object
        && m > memory
    {
        v.at(
            &p.key("max_object"),
            format!("{m} bytes is more than `memory` ({memory} bytes)"),
        );
    }
    let disk = raw.disk.as_ref().map(|d| {
        let dp = p.key("disk");
        if d.path.is_empty() {
            v.at(&dp.key("path"), "needs a directory");
        }
        let size = v.size(&dp.key("size"), Some(&d.size)).unwrap_or(0);
        if size < 1 << 20 && parse_size(&d.size).is_ok() {
            v.at(&dp.key("size"), "must be at least 1MiB");
        }
        CacheDisk {
            path: v.path(&d.path),
            size,
        }
    });
    CacheStore {
        memory,
        disk,
        max_object: max_object.unwrap_or(DEFAULT_MAX_OBJECT.min(memory)),
    }
}

fn route_cache(v: &mut Validator, p: &KeyPath, raw: &RawRouteCache) -> Option<RouteCache> {
    let c = RouteCache {
        default_ttl: v.duration(
            &p.key("default_ttl"),
            raw.default_ttl.as_deref(),
            Duration::ZERO,
        ),
        cookies: raw.cookies,
        lock_timeout: v.duration(
            &p.key("lock_timeout"),
            raw.lock_timeout.as_deref(),
            Duration::from_secs(5),
        ),
    };
    raw.enabled.unwrap_or(true).then_some(c)
}

fn compress(v: &mut Validator, p: &KeyPath, raw: &RawCompress) -> Compress {
    let mut algorithms = Vec::new();
    match &raw.algorithms {
        None => algorithms = vec![Coding::Zstd, Coding::Br, Coding::Gzip],
        Some(list) => {
            if list.is_empty() {
                v.at(&p.key("algorithms"), "needs at least one of zstd, br, gzip");
            }
            for (i, a) in list.iter().enumerate() {
                let c = match a.as_str() {
                    "zstd" => Coding::Zstd,
                    "br" => Coding::Br,
                    "gzip" => Coding::Gzip,
                    other => {
                        v.at(
                            &p.key("algorithms").index(i),
                            format!("`{other}` is not one of zstd, br, gzip"),
                        );
                        continue;
                    }
                };
                if algorithms.contains(&c) {
                    v.at(
                        &p.key("algorithms").index(i),
                        format!("`{a}` is listed twice"),
                    );
                }
                algorithms.push(c);
            }
        }
    }
    let types = match &raw.types {
        None => [
            "text/*",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, t) in list.iter().enumerate() {
                let ok = t.split_once('/').is_some_and(|(a, b)| {
                    http_token(a).is_ok() && (b == "*" || http_token(b).is_ok())
                });
                if ok {
                    out.push(t.to_ascii_lowercase());
                } else {
                    v.at(
                        &p.key("types").index(i),
                        format!("`{t}` is not a media type like `text/html` or `text/*`"),
                    );
                }
            }
            out
        }
    };
    Compress {
        algorithms,
        min_size: v
            .size(&p.key("min_size"), raw.min_size.as_deref())
            .unwrap_or(1024),
        types,
    }
}

fn upstream(v: &mut Validator, up: &KeyPath, name: &str, raw: &RawUpstream) -> Upstream {
    let mut servers: Vec<Server> = Vec::new();
    if raw.servers.is_empty() {
        v.at(&up.key("servers"), "needs at least one server");
    }
    for (i, s) in raw.servers.iter().enumerate() {
        let sp = up.key("servers").index(i);
        let (address, weight, backup, ap) = match s {
            RawServer::Address(a) => (a, 1, false, sp.clone()),
            RawServer::Full(f) => (
                &f.address,
                f.weight.unwrap_or(1),
                f.backup,
                sp.key("address"),
            ),
        };
        if weight == 0 || weight > 1000 {
            v.at(&sp.key("weight"), "must be between 1 and 1000");
        }
        match parse_host_port(address) {
            Ok((host, port)) => {
                if servers.iter().any(|s| s.address == *address) {
                    v.at(&ap, format!("server `{address}` is listed twice"));
                }
                servers.push(Server {
                    address: address.clone(),
                    host,
                    port,
                    weight: weight.clamp(1, 1000),
                    backup,
                });
            }
            Err(e) => v.at(&ap, e),
        }
    }
    if !servers.is_empty() && servers.iter().all(|s| s.backup) {
        v.at(
            &up.key("servers"),
            "needs at least one server that is not a backup",
        );
    }
    let hash_key = match raw.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some("path") => HashKey::Path,
        Some(k) => {
            if let Some(h) = k.strip_prefix("header:").filter(|h| http_token(h).is_ok()) {
                HashKey::Header(h.to_ascii_lowercase())
            } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                HashKey::Cookie(c.to_string())
            } else {
                v.at(
                    &up.key("hash_key"),
                    format!("`{k}` is not one of client_ip, header:NAME, cookie:NAME, path"),
                );
                HashKey::ClientIp
            }
        }
    };
    if raw.hash_key.is_some() && raw.balance != RawBalance::Hash {
        v.at(&up.key("hash_key"), "only used with balance = \"hash\"");
    }
    if let Some(s) = &raw.sticky
        && (s.cookie.is_empty() || http_token(&s.cookie).is_err())
    {
        v.at(
            &up.key("sticky").key("cookie"),
            "is not a valid cookie name",
        );
    }
    let health_check = raw.health_check.as_ref().map(|h| {
        let hp = up.key("health_check");
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            v.at(&hp.key("path"), "must start with `/`");
        }
        let expect = match h.expect.as_deref().map(parse_status_range) {
            None => (200, 399),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                v.at(&hp.key("expect"), e);
                (200, 399)
            }
        };
        for (k, n) in [("rise", h.rise), ("fall", h.fall)] {
            if n == Some(0) {
                v.at(&hp.key(k), "must be at least 1");
            }
        }
        let interval = v.duration(
            &hp.key("interval"),
            h.interval.as_deref(),
            Duration::from_secs(2),
        );
        if interval.is_zero() {
            v.at(&hp.key("interval"), "must be more than zero");
        }
        HealthCheck {
            path,
            interval,
            timeout: v.duration(
                &hp.key("timeout"),
                h.timeout.as_deref(),
                Duration::from_secs(1),
            ),
            rise: h.rise.unwrap_or(2).max(1),
            fall: h.fall.unwrap_or(3).max(1),
            expect,
            host: h.host.clone(),
            tcp_only: match h.kind.as_deref() {
                None | Some("http") => false,
                Some("tcp") => true,
                Some(x) => {
                    v.at(&hp.key("type"), format!("`{x}` is not one of http, tcp"));
                    false
                }
            },
        }
    });
    let passive = raw.passive.as_ref().map(|p| {
        let pp = up.key("passive");
        if p.fall == Some(0) {
            v.at(&pp.key("fall"), "must be at least 1");
        }
        Passive {
            fall: p.fall.unwrap_or(3).max(1),
            cooldown: v.duration(
                &pp.key("cooldown"),
                p.cooldown.as_deref(),
                Duration::from_secs(10),
            ),
        }
    });
    Upstream {
        name: name.to_string(),
        servers,
        balance: match raw.balance {
            RawBalance::RoundRobin => Balance::RoundRobin,
            RawBalance::LeastConn => Balance::LeastConn,
            RawBalance::RandomTwo => Balance::RandomTwo,
            RawBalance::Hash => Balance::Hash,
        },
        hash_key,
        sticky_cookie: raw.sticky.as_ref().map(|s| s.cookie.clone()),
        health_check,
        passive,
        retries: raw.retries.unwrap_or(2),
        connect_timeout: v.duration(
            &up.key("connect_timeout"),
            raw.connect_timeout.as_deref(),
            Duration::from_secs(2),
        ),
        response_timeout: v.duration(
            &up.key("response_timeout"),
            raw.response_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        idle_timeout: v.duration(
            &up.key("idle_timeout"),
            raw.idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        protocol: match raw.protocol {
            RawUpstreamProtocol::Http1 => UpstreamProtocol::Http1,
            RawUpstreamProtocol::H2c => UpstreamProtocol::H2c,
            RawUpstreamProtocol::H2 => UpstreamProtocol::H2,
        },
        tls: upstream_tls(v, up, raw),
        proxy_protocol: match raw.proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyProtocol::V1),
            Some("v2") => Some(ProxyProtocol::V2),
            Some(x) => {
                v.at(
                    &up.key("proxy_protocol"),
                    format!("`{x}` is not one of v1, v2"),
                );
                None
            }
        },
        source_address: match raw.source_address.as_deref() {
            None => None,
            Some("client") => Some(SourceAddress::Client),
            Some(x) => match x.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(SourceAddress::Fixed(ip)),
                Err(_) => {
                    v.at(
                        &up.key("source_address"),
                        format!("`{x}` is neither \"client\" nor an IP address"),
                    );
                    None
                }
            },
        },
    }
}

fn listener_tls(v: &mut Validator, lp: &KeyPath, raw: &RawListener) -> Option<ListenerTls> {
    let tp = lp.key("tls");
    match (raw.protocol, &raw.tls) {
        (RawListenerProtocol::Http, Some(_)) => {
            v.at(
                &tp,
                "only https listeners take `tls` (set protocol = \"https\")",
            );
            return None;
        }
        (RawListenerProtocol::Tls | RawListenerProtocol::Udp, Some(_)) => {
            v.at(
                &tp,
                "tls listeners pass TLS through and udp has none: to terminate TLS in front of a byte pipe use protocol = \"tcp\" with `tls`",
            );
            return None;
        }
        (
            RawListenerProtocol::Http
            | RawListenerProtocol::Tcp
            | RawListenerProtocol::Tls
            | RawListenerProtocol::Udp,
            None,
        ) => {
            if raw.alpn.is_some() {
                v.at(&lp.key("alpn"), "only https listeners negotiate ALPN");
            }
            return None;
        }
        (RawListenerProtocol::Https, None) => {
            v.at(lp, "an https listener needs `tls.certificates`");
            return None;
        }
        // https, or tcp terminating TLS in front of its byte pipe.
        (RawListenerProtocol::Https | RawListenerProtocol::Tcp, Some(_)) => {}
    }
    let t = raw.tls.as_ref()?;
    if t.certificates.is_empty() && t.acme.is_empty() {
        v.at(
            &tp.key("certificates"),
            "needs at least one { cert, key } (or names in `tls.acme`)",
        );
    }
    for (i, n) in t.acme.iter().enumerate() {
        let ok = !n.is_empty()
            && !n.starts_with("*.")
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            v.at(
                &tp.key("acme").index(i),
                format!(
                    "`{n}` is not a DNS name gatehouse can obtain (no wildcards: they need dns-01)"
                ),
            );
        }
    }
    let certificates = t
        .certificates
        .iter()
        .map(|c| CertificateFiles {
            cert: v.path(&c.cert),
            key: v.path(&c.key),
            ocsp: c.ocsp.as_deref().map(|o| v.path(o)),
        })
        .collect();
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => 12,
        Some("1.3") => 13,
        Some(x) => {
            v.at(
                &tp.key("min_version"),
                format!("`{x}` is not a TLS version gatehouse offers: expected \"1.2\" or \"1.3\""),
            );
            12
        }
    };
    let client_auth = match t.client_auth {
        RawClientAuth::None => ClientAuth::None,
        RawClientAuth::Optional => ClientAuth::Optional,
        RawClientAuth::Required => ClientAuth::Required,
    };
    if client_auth != ClientAuth::None && t.client_ca.is_none() {
        v.at(
            &tp.key("client_ca"),
            "needed when client_auth is optional or required",
        );
    }
    if let Some(h) = &t.hsts
        && (h.is_empty() || h.bytes().any(|b| b.is_ascii_control()))
    {
        v.at(&tp.key("hsts"), "is not a valid header value");
    }
    let alpn = match &raw.alpn {
        // A byte pipe speaks whatever the origin speaks: offer nothing unless told.
        None if raw.protocol == RawListenerProtocol::Tcp => Vec::new(),
        None => vec!["h2".to_string(), "http/1.1".to_string()],
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                if raw.protocol == RawListenerProtocol::Https && a != "h2" && a != "http/1.1" {
                    v.at(
                        &lp.key("alpn").index(i),
                        format!("`{a}` is not offered: expected \"h2\" or \"http/1.1\""),
                    );
                }
            }
            if list.is_empty() {
                v.at(&lp.key("alpn"), "needs at least one protocol");
            }
            list.clone()
        }
    };
    Some(ListenerTls {
        certificates,
        min_version,
        strict_sni: t.strict_sni,
        client_ca: t.client_ca.as_deref().map(|c| v.path(c)),
        client_auth,
        hsts: t.hsts.clone(),
        alpn,
        acme: t.acme.iter().map(|n| n.to_ascii_lowercase()).collect(),
    })
}

fn upstream_tls(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> Option<UpstreamTls> {
    let tp = up.key("tls");
    match (&raw.tls, raw.protocol) {
        (None, RawUpstreamProtocol::H2) => {
            v.at(
                &up.key("protocol"),
                "\"h2\" needs `tls` (for cleartext HTTP/2 use \"h2c\")",
            );
            return None;
        }
        (Some(_), RawUpstreamProtocol::H2c) => {
            v.at(
                &up.key("protocol"),
                "\"h2c\" is cleartext: with `tls` use \"h2\"",
            );
        }
        _ => {}
    }
    let t = raw.tls.as_ref()?;
    for (i, pin) in t.pin_sha256.iter().enumerate() {
        let ok = pin.len() == 44
            && pin.ends_with('=')
            && pin[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if !ok {
            v.at(
                &tp.key("pin_sha256").index(i),
                "is not a base64 SHA-256 hash (44 characters ending in `=`)",
            );
        }
    }
    if t.client_cert.is_some() != t.client_key.is_some() {
        v.at(&tp, "client_cert and client_key go together");
    }
    if t.dangerous_skip_verify && (t.ca.is_some() || !t.pin_sha256.is_empty()) {
        v.at(
            &tp.key("dangerous_skip_verify"),
            "contradicts `ca` / `pin_sha256`: choose one way to trust the origin",
        );
    }
    if let Some(n) = &t.server_name
        && (n.is_empty() || n.contains(['/', ' ', ':']) && n.parse::<std::net::IpAddr>().is_err())
    {
        v.at(&tp.key("server_name"), format!("`{n}` is not a host name"));
    }
    Some(UpstreamTls {
        ca: t.ca.as_deref().map(|c| v.path(c)),
        server_name: t.server_name.clone(),
        pin_sha256: t.pin_sha256.clone(),
        client_cert: match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => Some((v.path(c), v.path(k))),
            _ => None,
        },
        dangerous_skip_verify: t.dangerous_skip_verify,
    })
}
