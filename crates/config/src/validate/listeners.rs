//! `[listeners.NAME]`: addresses (each bound once per transport), limits, PROXY protocol and the
//! default upstream of tcp, tls and udp listeners. Their `tls` is checked in `tls`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::Validator;
use super::smtp::{pairing, smtp_listener};
use super::tls::listener_tls;
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

/// The listeners that deserialized, in file order.
pub(super) fn listeners(
    v: &mut Validator,
    root_path: &KeyPath,
    listeners: &[(String, Option<RawListener>)],
    admin_model: Option<SocketAddr>,
) -> Vec<Listener> {
    let mut listener_models = Vec::new();
    let mut bound: BTreeMap<(SocketAddr, bool), String> = BTreeMap::new();
    for (name, raw) in listeners {
        let Some(raw) = raw else { continue };
        let lp = root_path.key("listeners").key(name);
        let binds = binds(v, &lp, name, raw, &mut bound, admin_model);
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
        let proxy_protocol = proxy_protocol(v, &lp, raw);
        let smtp = smtp_listener(v, &lp, raw);
        listener_models.push(Listener {
            smtp,
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
                RawListenerProtocol::Smtp => ListenerProtocol::Smtp,
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
            max_connections_per_ip: super::limits::max_connections_per_ip(v, &lp, raw),
        });
    }
    listener_models
}

/// `bind`: each address parsed, and taken by one listener per transport, not the admin's.
fn binds(
    v: &mut Validator,
    lp: &KeyPath,
    name: &str,
    raw: &RawListener,
    bound: &mut BTreeMap<(SocketAddr, bool), String>,
    admin_model: Option<SocketAddr>,
) -> Vec<SocketAddr> {
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
                    && let Some(other) = bound.insert((addr, udp), name.to_string())
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
                format!("`{b}` is not an IP:port address like \"0.0.0.0:8080\" or \"[::]:8080\""),
            ),
        }
    }
    binds
}

/// `proxy_protocol`, which needs `trusted_proxies`.
fn proxy_protocol(v: &mut Validator, lp: &KeyPath, raw: &RawListener) -> Option<ProxyProtocol> {
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
    proxy_protocol
}

/// The default upstream of tcp, tls, udp and smtp listeners, resolved once the upstreams are
/// known.
pub(super) fn listener_upstreams(
    v: &mut Validator,
    root_path: &KeyPath,
    listeners: &[(String, Option<RawListener>)],
    listener_models: &mut [Listener],
    upstreams: &[(String, Option<RawUpstream>)],
) {
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
                RawListenerProtocol::Tcp
                | RawListenerProtocol::Tls
                | RawListenerProtocol::Udp
                | RawListenerProtocol::Smtp,
            ) => match upstream_index(u) {
                Some(i) => {
                    model.upstream = Some(i);
                    let up = upstreams[i].1.as_ref();
                    pairing(v, &lp.key("upstream"), raw.protocol, up, "`upstream`");
                }
                None => v.at(&lp.key("upstream"), format!("no upstream named `{u}`")),
            },
            (Some(_), _) => v.at(
                &lp.key("upstream"),
                "only tcp, tls, udp and smtp listeners have a default upstream (http listeners use routes)",
            ),
            (None, _) => {}
        }
    }
}
