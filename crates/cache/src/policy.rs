//! RFC 9111 (and RFC 5861) as pure functions: what may be stored, for how long, and whether a
//! stored answer may serve a request as it is, stale, or only after validation.
//!
//! Written here rather than taken from `http-cache-semantics` because our contract differs from
//! its defaults in ways that would have to be patched around it: `default_ttl` for answers that
//! give no freshness, answers with zero freshness stored only with a validator, Set-Cookie refused
//! unless the route allows it, `private` never stored (we are a shared cache), and stale serving
//! (RFC 5861) decided by us. Every rule below names its section.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// Cache-Control directives of a request or a response (RFC 9111 §5.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// no-store
    pub no_store: bool,
    /// no-cache (a qualified `no-cache="field"` counts as unqualified: stricter, never wrong)
    pub no_cache: bool,
    /// private (any form: a shared cache stores none of it)
    pub private: bool,
    /// public
    pub public: bool,
    /// max-age=N
    pub max_age: Option<u64>,
    /// s-maxage=N
    pub s_maxage: Option<u64>,
    /// must-revalidate
    pub must_revalidate: bool,
    /// proxy-revalidate
    pub proxy_revalidate: bool,
    /// no-transform
    pub no_transform: bool,
    /// max-stale[=N]: Some(None) accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    /// min-fresh=N
    pub min_fresh: Option<u64>,
    /// only-if-cached
    pub only_if_cached: bool,
    /// stale-while-revalidate=N (RFC 5861 §3)
    pub stale_while_revalidate: Option<u64>,
    /// stale-if-error=N (RFC 5861 §4)
    pub stale_if_error: Option<u64>,
}

/// Delta-seconds (RFC 9111 §1.2.2): digits; too large saturates; anything else is invalid.
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31))
}

/// Splits a header list on commas outside quoted strings.
fn split_list(s: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty())
}

impl Directives {
    /// Every Cache-Control field line of `headers`, directive names case-insensitive
    /// (§5.2). A directive with an invalid argument is treated as absent, except `max-age`
    /// in a response, which then means stale (§4.2.1 — "invalid means stale" handled by
    /// the caller through `max_age_invalid`).
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for v in headers.get_all(header::CACHE_CONTROL) {
            let Ok(s) = v.to_str() else { continue };
            for item in split_list(s) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim())),
                    None => (item, None),
                };
                let num = arg.and_then(delta_seconds);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    // Duplicates: the most restrictive (smallest) wins.
                    "max-age" => d.max_age = Some(min_opt(d.max_age, num.unwrap_or(0))),
                    "s-maxage" => d.s_maxage = Some(min_opt(d.s_maxage, num.unwrap_or(0))),
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "no-transform" => d.no_transform = true,
                    // An argument that is not delta-seconds makes the directive invalid: ignored.
                    "max-stale" => match (arg, num) {
                        (None, _) => d.max_stale = Some(None),
                        (Some(_), Some(n)) => d.max_stale = Some(Some(n)),
                        (Some(_), None) => {}
                    },
                    "min-fresh" => d.min_fresh = num,
                    "only-if-cached" => d.only_if_cached = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = num,
                    "stale-if-error" => d.stale_if_error = num,
                    _ => {}
                }
            }
        }
        d
    }

    /// A request's directives, with `Pragma: no-cache` counted as `no-cache` when the request
    /// has no Cache-Control (RFC 9111 §5.4, for HTTP/1.0 clients).
    pub fn parse_request(headers: &HeaderMap) -> Directives {
        let mut d = Directives::parse(headers);
        if !headers.contains_key(header::CACHE_CONTROL)
            && headers.get_all(header::PRAGMA).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache"))
            })
        {
            d.no_cache = true;
        }
        d
    }
}

fn min_opt(a: Option<u64>, b: u64) -> u64 {
    a.map_or(b, |a| a.min(b))
}

/// An HTTP-date (RFC 9110 §5.6.7) in any of its three forms.
pub fn parse_date(v: &HeaderValue) -> Option<SystemTime> {
    let s = v.to_str().ok()?.trim();
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT
    // asctime:     Sun Nov  6 08:49:37 1994
    let (day, mon, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        let rest = rest.trim_end_matches(" GMT");
        if rest.contains('-') {
            let (date, time) = rest.split_once(' ')?;
            let mut p = date.split('-');
            let (d, m, y) = (p.next()?, p.next()?, p.next()?);
            let y: i64 = y.parse().ok()?;
            // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past.
            let y = if y < 100 {
                if y < 70 { 2000 + y } else { 1900 + y }
            } else {
                y
            };
            (d.parse::<i64>().ok()?, m, y, time)
        } else {
            let mut p = rest.split(' ');
            let (d, m, y, t) = (p.next()?, p.next()?, p.next()?, p.next()?);
            (d.parse().ok()?, m, y.parse().ok()?, t)
        }
    } else {
        let mut p = s.split_whitespace();
        let (_, m, d, t, y) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
        (d.parse().ok()?, m, y.parse().ok()?, t)
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(mon))? as i64
        + 1;
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as an IMF-fixdate.
pub fn fmt_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Statuses a cache may give heuristic freshness to (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The settings of the route that decide storage.
#[derive(Debug, Clone, Copy)]
pub struct RouteRules {
    /// Freshness when the answer gives none and its status is heuristically cacheable.
    pub default_ttl: Duration,
    /// Store answers that set cookies.
    pub cookies: bool,
}

/// Why an answer was not stored (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Only GET answers are stored.
    Method,
    /// Interim, partial, 304 or a status we do not cache without explicit freshness.
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`.
    Private,
    /// A request with Authorization whose answer does not allow sharing.
    Authorization,
    /// Set-Cookie on a route with `cookies = false`.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// No freshness and no validator: every use would go to the origin anyway.
    NoFreshnessNoValidator,
}

/// How long a stored answer is fresh, and how old it was when received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Freshness lifetime (§4.2.1).
    pub freshness: Duration,
    /// Corrected initial age (§4.2.3).
    pub initial_age: Duration,
    /// When the answer was received.
    pub response_time: SystemTime,
}

/// Freshness lifetime of a response (§4.2.1, §4.2.2), with the route's `default_ttl` last.
pub fn freshness(status: u16, h: &HeaderMap, cc: &Directives, rules: &RouteRules) -> Duration {
    if let Some(s) = cc.s_maxage {
        return Duration::from_secs(s);
    }
    if let Some(m) = cc.max_age {
        return Duration::from_secs(m);
    }
    let date = h.get(header::DATE).and_then(parse_date);
    if let Some(e) = h.get(header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired (§5.3).
        return match (parse_date(e), date) {
            (Some(e), Some(d)) => e.duration_since(d).unwrap_or_default(),
            (Some(e), None) => e.duration_since(SystemTime::now()).unwrap_or_default(),
            _ => Duration::ZERO,
        };
    }
    if !heuristically_cacheable(status) {
        return Duration::ZERO;
    }
    if let Some(lm) = h.get(header::LAST_MODIFIED).and_then(parse_date) {
        let base = date.unwrap_or_else(SystemTime::now);
        let age = base.duration_since(lm).unwrap_or_default();
        // §4.2.2: a fraction of the time since last modification; 10% as the RFC suggests.
        return age / 10;
    }
    rules.default_ttl
}

/// Corrected initial age (§4.2.3).
pub fn initial_age(h: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Duration {
    let date = h.get(header::DATE).and_then(parse_date);
    let apparent = date
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let age_value = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(delta_seconds)
        .map(Duration::from_secs)
        .unwrap_or_default();
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent.max(age_value + delay)
}

/// Has a validator to revalidate with.
pub fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

/// The header names of `Vary`, lowercase; `Err` for `Vary: *`.
pub fn vary_names(h: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
    let mut out: Vec<HeaderName> = Vec::new();
    for v in h.get_all(header::VARY) {
        let Ok(s) = v.to_str() else {
            return Err(NotStored::VaryStar);
        };
        for n in split_list(s) {
            if n == "*" {
                return Err(NotStored::VaryStar);
            }
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(n) if !out.contains(&n) => out.push(n),
                Ok(_) => {}
                Err(_) => return Err(NotStored::VaryStar),
            }
        }
    }
    Ok(out)
}

/// Whether a response may be stored (§3), and with what timing.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    req_cc: &Directives,
    status: StatusCode,
    resp: &HeaderMap,
    rules: &RouteRules,
    (request_time, response_time): (SystemTime, SystemTime),
) -> Result<Timing, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    let code = status.as_u16();
    // Final, complete answers only: no 1xx, no 206 (partial), no 304 (not a full answer).
    if code < 200 || code == 206 || code == 304 {
        return Err(NotStored::Status);
    }
    let cc = Directives::parse(resp);
    if cc.no_store || req_cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    // §3.5: a shared cache stores an answer to an authenticated request only when allowed.
    if req.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if !rules.cookies && resp.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    vary_names(resp)?;
    let explicit =
        cc.s_maxage.is_some() || cc.max_age.is_some() || resp.contains_key(header::EXPIRES);
    // §3: explicit freshness, `public`, or a status with heuristic freshness.
    if !(explicit || cc.public || heuristically_cacheable(code)) {
        return Err(NotStored::Status);
    }
    let freshness = if cc.no_cache {
        Duration::ZERO
    } else {
        freshness(code, resp, &cc, rules)
    };
    if freshness.is_zero() && !has_validator(resp) {
        return Err(NotStored::NoFreshnessNoValidator);
    }
    Ok(Timing {
        freshness,
        initial_age: initial_age(resp, request_time, response_time),
        response_time,
    })
}

/// What a stored answer can do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Fresh enough: serve it.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first.
    Validate,
}

/// The stored answer's current age (§4.2.3).
pub fn current_age(t: &Timing, now: SystemTime) -> Duration {
    t.initial_age + now.duration_since(t.response_time).unwrap_or_default()
}

/// May stale copies of this answer ever be served? Not with must-revalidate, proxy-revalidate
/// or s-maxage (§5.2.2.2, §5.2.2.8, §5.2.2.10).
pub fn stale_forbidden(resp_cc: &Directives) -> bool {
    resp_cc.must_revalidate || resp_cc.proxy_revalidate || resp_cc.s_maxage.is_some()
}

/// Decides how a stored answer may serve a request (§4.2, §4.2.4, §5.2.1, RFC 5861 §3).
pub fn decide(t: &Timing, resp_cc: &Directives, req_cc: &Directives, now: SystemTime) -> Use {
    if req_cc.no_cache || resp_cc.no_cache {
        return Use::Validate;
    }
    let age = current_age(t, now);
    if let Some(max) = req_cc.max_age
        && age > Duration::from_secs(max)
    {
        return Use::Validate;
    }
    if age < t.freshness {
        // Fresh; with min-fresh, fresh for at least that much longer.
        let left = t.freshness - age;
        return if left >= Duration::from_secs(req_cc.min_fresh.unwrap_or(0)) {
            Use::Fresh
        } else {
            Use::Validate
        };
    }
    if stale_forbidden(resp_cc) {
        return Use::Validate;
    }
    let staleness = age - t.freshness;
    if let Some(ms) = req_cc.max_stale
        && ms.is_none_or(|m| staleness <= Duration::from_secs(m))
    {
        return Use::StaleAllowed;
    }
    if let Some(swr) = resp_cc.stale_while_revalidate
        && staleness <= Duration::from_secs(swr)
    {
        return Use::StaleWhileRevalidate;
    }
    Use::Validate
}

/// May a stale answer stand in for a failed origin (RFC 5861 §4)?
pub fn stale_if_error(
    t: &Timing,
    resp_cc: &Directives,
    req_cc: &Directives,
    now: SystemTime,
) -> bool {
    if stale_forbidden(resp_cc) {
        return false;
    }
    let age = current_age(t, now);
    let staleness = age.saturating_sub(t.freshness);
    [resp_cc.stale_if_error, req_cc.stale_if_error]
        .into_iter()
        .flatten()
        .any(|s| staleness <= Duration::from_secs(s))
}

/// Headers a 304 must not change in the stored answer (§3.2: framing and encoding describe the
/// stored body, not the 304).
const KEEP_ON_UPDATE: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// Folds a 304's headers into the stored ones (§4.3.4).
pub fn update_headers(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut names: Vec<&HeaderName> = not_modified.keys().collect();
    names.dedup();
    for name in names {
        if KEEP_ON_UPDATE.contains(name) {
            continue;
        }
        stored.remove(name);
        for v in not_modified.get_all(name) {
            stored.append(name.clone(), v.clone());
        }
    }
}

/// Strong comparison of two entity tags (RFC 9110 §8.8.3.2).
fn strong_eq(a: &str, b: &str) -> bool {
    !a.starts_with("W/") && !b.starts_with("W/") && a == b
}

/// Weak comparison of two entity tags.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// Evaluates a GET/HEAD request's If-None-Match / If-Modified-Since against a stored answer
/// (RFC 9110 §13.2.2): true when the answer is "not modified" for this client.
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        return split_list(inm).any(|t| t == "*" || etag.is_some_and(|e| weak_eq(t, e)));
    }
    if let (Some(ims), Some(lm)) = (
        req.get(header::IF_MODIFIED_SINCE).and_then(parse_date),
        stored.get(header::LAST_MODIFIED).and_then(parse_date),
    ) {
        return lm <= ims;
    }
    false
}

/// A satisfiable byte range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No (usable) Range: send the whole answer.
    Full,
    /// 206 with these inclusive bounds.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Interprets a Range header for a stored representation of `len` bytes (RFC 9110 §14). One
/// range is served as 206; several, or a unit other than bytes, are answered in full (allowed:
/// a server may ignore Range). If-Range must match the strong ETag or the exact Last-Modified.
pub fn range(req: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    let Some(r) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if let Some(ir) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let ir = ir.trim();
        let ok = if ir.starts_with('"') || ir.starts_with("W/") {
            stored
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|e| strong_eq(ir, e))
        } else {
            stored
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|lm| lm == ir)
        };
        if !ok {
            return RangeAnswer::Full;
        }
    }
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Partial(len.saturating_sub(n), len - 1),
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        },
        (first, "") => match num(first) {
            Some(f) if f < len => RangeAnswer::Partial(f, len - 1),
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        },
        (first, last) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f <= l => {
                if f < len {
                    RangeAnswer::Partial(f, l.min(len - 1))
                } else {
                    RangeAnswer::Unsatisfiable
                }
            }
            _ => RangeAnswer::Full,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const RULES: RouteRules = RouteRules {
        default_ttl: Duration::ZERO,
        cookies: false,
    };

    #[test]
    fn dates_in_all_three_forms() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_date(&HeaderValue::from_static(s)), Some(want), "{s}");
        }
        assert_eq!(fmt_date(want), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_date(&HeaderValue::from_static("0")), None);
    }

    #[test]
    fn directives_parse_with_quotes_and_case() {
        let d = Directives::parse(&hm(&[(
            "cache-control",
            "Max-Age=60, private=\"set-cookie, x\", s-maxage=\"10\"",
        )]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(10));
        assert!(d.private);
        let r = Directives::parse_request(&hm(&[("pragma", "no-cache")]));
        assert!(r.no_cache);
        let r = Directives::parse(&hm(&[("cache-control", "max-stale")]));
        assert_eq!(r.max_stale, Some(None));
        let r = Directives::parse(&hm(&[("cache-control", "max-stale=soon")]));
        assert_eq!(
            r.max_stale, None,
            "an invalid argument is ignored, not 'any'"
        );
        assert_eq!(
            parse_date(&HeaderValue::from_static(
                "Sun, 06 Nov 99999999999 08:49:37 GMT"
            )),
            None
        );
    }

    #[test]
    fn freshness_order_and_heuristic() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let h = hm(&[
            ("date", date),
            ("cache-control", "max-age=5, s-maxage=7"),
            ("expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
        ]);
        assert_eq!(
            freshness(200, &h, &Directives::parse(&h), &RULES),
            Duration::from_secs(7)
        );
        let h = hm(&[("date", date), ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")]);
        assert_eq!(
            freshness(200, &h, &Directives::parse(&h), &RULES),
            Duration::from_secs(3600)
        );
        let h = hm(&[
            ("date", date),
            ("last-modified", "Sun, 06 Nov 1994 07:49:37 GMT"),
        ]);
        assert_eq!(
            freshness(200, &h, &Directives::parse(&h), &RULES),
            Duration::from_secs(360)
        );
        // Not heuristically cacheable: no heuristic, no default_ttl.
        let rules = RouteRules {
            default_ttl: Duration::from_secs(9),
            cookies: false,
        };
        assert_eq!(
            freshness(302, &h, &Directives::parse(&h), &rules),
            Duration::ZERO
        );
        assert_eq!(
            freshness(200, &hm(&[]), &Directives::default(), &rules),
            Duration::from_secs(9)
        );
    }

    #[test]
    fn what_is_never_stored() {
        let now = SystemTime::now();
        let get = Method::GET;
        let try_store = |m: &Method, req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]| {
            let req = hm(req);
            storable(
                m,
                &req,
                &Directives::parse_request(&req),
                StatusCode::from_u16(status).unwrap(),
                &hm(resp),
                &RULES,
                (now, now),
            )
            .map(|t| t.freshness)
        };
        let ok = [("cache-control", "max-age=60")];
        assert_eq!(try_store(&get, &[], 200, &ok), Ok(Duration::from_secs(60)));
        assert_eq!(
            try_store(&Method::POST, &[], 200, &ok),
            Err(NotStored::Method)
        );
        assert_eq!(
            try_store(&get, &[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            try_store(&get, &[("cache-control", "no-store")], 200, &ok),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            try_store(&get, &[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            try_store(&get, &[("authorization", "Basic x")], 200, &ok),
            Err(NotStored::Authorization)
        );
        assert!(
            try_store(
                &get,
                &[("authorization", "Basic x")],
                200,
                &[("cache-control", "s-maxage=60")]
            )
            .is_ok()
        );
        assert_eq!(
            try_store(
                &get,
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            try_store(
                &get,
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "*")]
            ),
            Err(NotStored::VaryStar)
        );
        assert_eq!(try_store(&get, &[], 206, &ok), Err(NotStored::Status));
        assert_eq!(try_store(&get, &[], 302, &[]), Err(NotStored::Status));
        assert_eq!(
            try_store(&get, &[], 200, &[]),
            Err(NotStored::NoFreshnessNoValidator)
        );
        assert_eq!(
            try_store(&get, &[], 200, &[("etag", "\"a\"")]),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn decisions() {
        let now = SystemTime::now();
        let t = Timing {
            freshness: Duration::from_secs(60),
            initial_age: Duration::from_secs(30),
            response_time: now,
        };
        let none = Directives::default();
        let req = |s: &str| Directives::parse(&hm(&[("cache-control", s)]));
        assert_eq!(decide(&t, &none, &none, now), Use::Fresh);
        assert_eq!(decide(&t, &none, &req("max-age=10"), now), Use::Validate);
        assert_eq!(decide(&t, &none, &req("min-fresh=40"), now), Use::Validate);
        assert_eq!(decide(&t, &none, &req("min-fresh=20"), now), Use::Fresh);
        assert_eq!(decide(&t, &none, &req("no-cache"), now), Use::Validate);
        let later = now + Duration::from_secs(40); // 10 s stale
        assert_eq!(decide(&t, &none, &none, later), Use::Validate);
        assert_eq!(
            decide(&t, &none, &req("max-stale=20"), later),
            Use::StaleAllowed
        );
        assert_eq!(decide(&t, &none, &req("max-stale=5"), later), Use::Validate);
        assert_eq!(
            decide(&t, &none, &req("max-stale"), later),
            Use::StaleAllowed
        );
        let swr = req("stale-while-revalidate=30");
        assert_eq!(decide(&t, &swr, &none, later), Use::StaleWhileRevalidate);
        let mr = req("must-revalidate, stale-while-revalidate=30");
        assert_eq!(decide(&t, &mr, &req("max-stale"), later), Use::Validate);
        assert!(stale_if_error(&t, &req("stale-if-error=60"), &none, later));
        assert!(!stale_if_error(&t, &req("stale-if-error=5"), &none, later));
        assert!(!stale_if_error(
            &t,
            &req("proxy-revalidate, stale-if-error=60"),
            &none,
            later
        ));
    }

    #[test]
    fn conditionals_and_ranges() {
        let stored = hm(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(not_modified(
            &hm(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &stored
        ));
        assert!(!not_modified(&hm(&[("if-none-match", "\"x\"")]), &stored));
        assert!(not_modified(
            &hm(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            &stored
        ));
        let r = |v: &str| range(&hm(&[("range", v)]), &stored, 100);
        assert_eq!(r("bytes=0-9"), RangeAnswer::Partial(0, 9));
        assert_eq!(r("bytes=90-"), RangeAnswer::Partial(90, 99));
        assert_eq!(r("bytes=-10"), RangeAnswer::Partial(90, 99));
        assert_eq!(r("bytes=95-200"), RangeAnswer::Partial(95, 99));
        assert_eq!(r("bytes=100-"), RangeAnswer::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeAnswer::Full);
        assert_eq!(r("items=0-1"), RangeAnswer::Full);
        let ir = hm(&[("range", "bytes=0-1"), ("if-range", "\"v0\"")]);
        assert_eq!(range(&ir, &stored, 100), RangeAnswer::Full);
        let ir = hm(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]);
        assert_eq!(range(&ir, &stored, 100), RangeAnswer::Partial(0, 1));
    }

    #[test]
    fn not_modified_update_keeps_framing() {
        let mut stored = hm(&[("content-length", "10"), ("etag", "\"a\""), ("x", "1")]);
        update_headers(
            &mut stored,
            &hm(&[
                ("content-length", "0"),
                ("etag", "\"a\""),
                ("x", "2"),
                ("x", "3"),
            ]),
        );
        assert_eq!(stored.get("content-length").unwrap(), "10");
        assert_eq!(stored.get_all("x").iter().count(), 2);
    }
}
