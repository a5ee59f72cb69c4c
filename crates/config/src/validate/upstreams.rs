//! `[upstreams.NAME]`: servers, balancing, stickiness, health checks, timeouts, PROXY protocol and
//! source address. Their `tls` is checked in `tls`.

use std::time::Duration;

use super::tls::upstream_tls;
use super::{Validator, http_token};
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;
use crate::units::{parse_host_port, parse_status_range};

/// One entry per upstream in file order; `None` for one that did not deserialize.
pub(super) fn upstreams(
    v: &mut Validator,
    root_path: &KeyPath,
    upstreams: &[(String, Option<RawUpstream>)],
) -> Vec<Option<Upstream>> {
    let mut upstream_models = Vec::new();
    for (name, raw) in upstreams {
        let Some(raw) = raw else {
            // Keep the name known so routes naming it don't report a second error.
            upstream_models.push(None);
            continue;
        };
        let up = root_path.key("upstreams").key(name);
        upstream_models.push(Some(upstream(v, &up, name, raw)));
    }
    upstream_models
}

fn upstream(v: &mut Validator, up: &KeyPath, name: &str, raw: &RawUpstream) -> Upstream {
    let servers = servers(v, up, raw);
    let hash_key = hash_key(v, up, raw);
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
    let smtp = raw.protocol == RawUpstreamProtocol::Smtp;
    let health_check = raw
        .health_check
        .as_ref()
        .map(|h| health_check(v, up, h, smtp));
    let passive = raw.passive.as_ref().map(|p| passive(v, up, p));
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
            RawUpstreamProtocol::Smtp => UpstreamProtocol::Smtp,
        },
        tls: upstream_tls(v, up, raw),
        proxy_protocol: proxy_protocol(v, up, raw),
        source_address: source_address(v, up, raw),
        client_address: super::smtp::client_address(v, up, raw),
    }
}

/// `servers`: addresses, weights and backups; at least one server that is not a backup.
fn servers(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> Vec<Server> {
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
    servers
}

fn hash_key(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> HashKey {
    match raw.hash_key.as_deref() {
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
    }
}

/// `health_check`; an smtp upstream's is a tcp check (an HTTP GET is no SMTP).
fn health_check(v: &mut Validator, up: &KeyPath, h: &RawHealthCheck, smtp: bool) -> HealthCheck {
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
            None if smtp => true,
            Some("http") if smtp => {
                v.at(&hp.key("type"), "an smtp upstream is checked by \"tcp\"");
                true
            }
            None | Some("http") => false,
            Some("tcp") => true,
            Some(x) => {
                v.at(&hp.key("type"), format!("`{x}` is not one of http, tcp"));
                false
            }
        },
    }
}

fn passive(v: &mut Validator, up: &KeyPath, p: &RawPassive) -> Passive {
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
}

fn proxy_protocol(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> Option<ProxyProtocol> {
    match raw.proxy_protocol.as_deref() {
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
    }
}

fn source_address(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> Option<SourceAddress> {
    match raw.source_address.as_deref() {
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
    }
}
