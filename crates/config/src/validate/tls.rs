//! `tls` of listeners (certificates, ACME names, versions, client auth, HSTS, ALPN) and of
//! upstreams (trust, pins, client certificates, server name).

use super::Validator;
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

pub(super) fn listener_tls(
    v: &mut Validator,
    lp: &KeyPath,
    raw: &RawListener,
) -> Option<ListenerTls> {
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
            | RawListenerProtocol::Udp
            | RawListenerProtocol::Smtp,
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
        // https, tcp terminating TLS in front of its byte pipe, smtp's STARTTLS.
        (
            RawListenerProtocol::Https | RawListenerProtocol::Tcp | RawListenerProtocol::Smtp,
            Some(_),
        ) => {}
    }
    let t = raw.tls.as_ref()?;
    if t.certificates.is_empty() && t.acme.is_empty() {
        v.at(
            &tp.key("certificates"),
            "needs at least one { cert, key } (or names in `tls.acme`)",
        );
    }
    acme_names(v, &tp, t);
    let certificates = t
        .certificates
        .iter()
        .map(|c| CertificateFiles {
            cert: v.path(&c.cert),
            key: v.path(&c.key),
            ocsp: c.ocsp.as_deref().map(|o| v.path(o)),
        })
        .collect();
    let min_version = min_version(v, &tp, t);
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
    let alpn = alpn(v, lp, raw);
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

/// `tls.acme`: names gatehouse can obtain by tls-alpn-01 or http-01.
fn acme_names(v: &mut Validator, tp: &KeyPath, t: &RawListenerTls) {
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
}

fn min_version(v: &mut Validator, tp: &KeyPath, t: &RawListenerTls) -> u8 {
    match t.min_version.as_deref() {
        None | Some("1.2") => 12,
        Some("1.3") => 13,
        Some(x) => {
            v.at(
                &tp.key("min_version"),
                format!("`{x}` is not a TLS version gatehouse offers: expected \"1.2\" or \"1.3\""),
            );
            12
        }
    }
}

/// `alpn`: what the listener offers; an https listener offers only what it speaks.
fn alpn(v: &mut Validator, lp: &KeyPath, raw: &RawListener) -> Vec<String> {
    match &raw.alpn {
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
    }
}

pub(super) fn upstream_tls(
    v: &mut Validator,
    up: &KeyPath,
    raw: &RawUpstream,
) -> Option<UpstreamTls> {
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
        starttls: t.starttls,
    })
}
