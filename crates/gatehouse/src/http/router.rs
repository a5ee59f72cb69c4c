//! Route selection: the first route of the listener whose every match field holds.

use std::net::IpAddr;

use gatehouse_config::model::{Route, RouteMatch};
use http::request::Parts;

/// Whether `m` matches the request. `host` is lowercase and without port.
pub fn matches(m: &RouteMatch, parts: &Parts, host: &str, client: IpAddr, local: IpAddr) -> bool {
    (m.hosts.is_empty() || m.hosts.iter().any(|h| h.matches(host)))
        && m.path_prefix
            .as_deref()
            .is_none_or(|p| parts.uri.path().starts_with(p))
        && (m.methods.is_empty() || m.methods.iter().any(|x| x == parts.method.as_str()))
        && m.headers.iter().all(|(k, v)| {
            parts
                .headers
                .get_all(k.as_str())
                .iter()
                .any(|have| have.as_bytes() == v.as_bytes())
        })
        && (m.sources.is_empty() || m.sources.iter().any(|c| c.contains(client)))
        && (m.destinations.is_empty() || m.destinations.iter().any(|c| c.contains(local)))
}

/// The index of the first matching route among `candidates` (indexes into `routes`).
pub fn select(
    routes: &[Route],
    candidates: &[usize],
    parts: &Parts,
    host: &str,
    client: IpAddr,
    local: IpAddr,
) -> Option<usize> {
    candidates
        .iter()
        .copied()
        .find(|i| matches(&routes[*i].matcher, parts, host, client, local))
}

/// The host of a request as it named it (port included): Host header, else the URI authority.
pub fn request_host(parts: &Parts) -> Option<String> {
    Some(match parts.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => parts.uri.authority()?.as_str().to_string(),
    })
}

/// The host name routes and certificates match: lowercase, without port. Borrowed when the
/// client wrote it lowercase already (nearly always).
pub fn host_name(full: &str) -> std::borrow::Cow<'_, str> {
    let name = strip_port(full);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

/// "example.com:8080" -> "example.com"; "[::1]:80" -> "[::1]".
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn host_names_are_lowercase_without_port() {
        for (full, name, borrowed) in [
            ("shop.example", "shop.example", true),
            ("shop.example:8443", "shop.example", true),
            ("Shop.EXAMPLE:80", "shop.example", false),
            ("[::1]:8080", "[::1]", true),
            ("[FE80::1]", "[fe80::1]", false),
            ("", "", true),
        ] {
            let got = host_name(full);
            assert_eq!(got, name, "{full}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{full}");
        }
    }
}
