//! `[rate_limits.NAME]`: the key a bucket is kept per, the rate ("N/s", "N/m", "N/h") and the
//! burst. Routes name a section with `rate_limit`; listeners' `max_connections_per_ip` is
//! checked with the listener.

use std::time::Duration;

use super::{Validator, http_token};
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

/// The sections that deserialized, in file order; None when any failed (the errors say why).
pub(super) fn rate_limits(
    v: &mut Validator,
    root_path: &KeyPath,
    raw: &[(String, Option<RawRateLimit>)],
) -> Option<Vec<RateLimit>> {
    let mut out = Vec::new();
    for (name, r) in raw {
        let r = r.as_ref()?;
        out.push(rate_limit(
            v,
            &root_path.key("rate_limits").key(name),
            name,
            r,
        ));
    }
    Some(out)
}

fn rate_limit(v: &mut Validator, p: &KeyPath, name: &str, raw: &RawRateLimit) -> RateLimit {
    let key = match rate_key(&raw.key) {
        Ok(k) => k,
        Err(e) => {
            v.at(&p.key("key"), e);
            RateKey::Route
        }
    };
    let (count, per) = match parse_rate(&raw.rate) {
        Ok(r) => r,
        Err(e) => {
            v.at(&p.key("rate"), e);
            (1, Duration::from_secs(1))
        }
    };
    let burst = raw.burst.unwrap_or_else(|| default_burst(count, per));
    if burst == 0 {
        v.at(&p.key("burst"), "must be at least 1");
    }
    RateLimit {
        name: name.to_string(),
        key,
        count,
        per,
        burst: burst.max(1),
    }
}

/// The default burst: the rate's count per second, at least 1 ("20/s" -> 20, "60/m" -> 1).
fn default_burst(count: u64, per: Duration) -> u64 {
    (count / per.as_secs().max(1)).max(1)
}

/// "client_ip" | "header:NAME" | "cookie:NAME" | "route".
fn rate_key(s: &str) -> Result<RateKey, String> {
    let bad_name = |n: &str| format!("`{n}` is not a valid header or cookie name");
    if s == "client_ip" {
        Ok(RateKey::ClientIp)
    } else if s == "route" {
        Ok(RateKey::Route)
    } else if let Some(n) = s.strip_prefix("header:") {
        http_token(n).map_err(|_| bad_name(n))?;
        Ok(RateKey::Header(n.to_ascii_lowercase()))
    } else if let Some(n) = s.strip_prefix("cookie:") {
        // RFC 6265 §4.1.1: a cookie-name is a token.
        http_token(n).map_err(|_| bad_name(n))?;
        Ok(RateKey::Cookie(n.to_string()))
    } else {
        Err(format!(
            "`{s}` is not one of \"client_ip\", \"header:NAME\", \"cookie:NAME\", \"route\""
        ))
    }
}

/// "N/s", "N/m" or "N/h" with N ≥ 1, at most one request a nanosecond.
pub(crate) fn parse_rate(s: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("`{s}` is not a rate like \"20/s\", \"100/m\" or \"1000/h\"");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    if u128::from(count) > per.as_nanos() {
        return Err(format!("`{s}`: more than one request a nanosecond"));
    }
    Ok((count, per))
}

/// A route's `rate_limit`: the index of the section it names.
pub(super) fn route_rate_limit(
    v: &mut Validator,
    rp: &KeyPath,
    raw: &RawRoute,
    sections: &[(String, Option<RawRateLimit>)],
) -> Option<usize> {
    let name = raw.rate_limit.as_deref()?;
    let i = sections.iter().position(|(n, _)| n == name);
    if i.is_none() {
        v.at(
            &rp.key("rate_limit"),
            format!("there is no [rate_limits.{name}] section"),
        );
    }
    i
}

/// A listener's `max_connections_per_ip`: at least 1, on listeners that take connections.
pub(super) fn max_connections_per_ip(
    v: &mut Validator,
    lp: &KeyPath,
    raw: &RawListener,
) -> Option<usize> {
    let m = raw.max_connections_per_ip?;
    let p = lp.key("max_connections_per_ip");
    if m == 0 {
        v.at(&p, "must be at least 1");
    }
    if raw.protocol == RawListenerProtocol::Udp {
        v.at(&p, "udp listeners take no connections");
    }
    Some(m).filter(|m| *m > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20/s"), Ok((20, Duration::from_secs(1))));
        assert_eq!(parse_rate("100/m"), Ok((100, Duration::from_secs(60))));
        assert_eq!(parse_rate(" 5 / h "), Ok((5, Duration::from_secs(3600))));
        for bad in [
            "",
            "20",
            "20/d",
            "x/s",
            "-1/s",
            "0/s",
            "2000000000/s",
            "1.5/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_bursts() {
        assert_eq!(default_burst(20, Duration::from_secs(1)), 20);
        assert_eq!(default_burst(60, Duration::from_secs(60)), 1);
        assert_eq!(default_burst(30, Duration::from_secs(60)), 1);
        assert_eq!(default_burst(7200, Duration::from_secs(3600)), 2);
    }

    #[test]
    fn keys() {
        assert_eq!(rate_key("client_ip"), Ok(RateKey::ClientIp));
        assert_eq!(rate_key("route"), Ok(RateKey::Route));
        assert_eq!(
            rate_key("header:X-Api-Key"),
            Ok(RateKey::Header("x-api-key".into()))
        );
        assert_eq!(rate_key("cookie:sid"), Ok(RateKey::Cookie("sid".into())));
        for bad in ["ip", "header:", "header:a b", "cookie:", "client_ip "] {
            assert!(rate_key(bad).is_err(), "{bad}");
        }
    }
}
