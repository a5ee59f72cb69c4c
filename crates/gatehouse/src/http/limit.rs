//! Request rate limits (`[rate_limits.NAME]`): a GCRA bucket per key, kept in a bounded table
//! of sharded maps. The pipeline's `limits` phase asks `RateLimiter::check` with the key of the
//! request (`request_key`); over the limit, the request is answered 429 with Retry-After.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical arrival
//! time (TAT) of the next request: each request moves it one emission interval `T = per / count`
//! later, and a request is refused when that would put the TAT more than `burst * T` ahead of
//! now. `burst` requests pass at once; then one every `T`.
//!
//! The table holds the hash of a key (SipHash with a per-process random seed), not the key:
//! no allocation per request, 16 bytes an entry, and a client cannot choose keys that collide.
//! It has 64 shards, each a `Mutex<HashMap>` held for one lookup and one insert; requests of
//! different keys rarely meet on a shard. Each shard holds at most `MAX_KEYS / SHARDS` keys:
//! when a new key finds its shard full, the keys whose TAT has passed are dropped (they are
//! exactly as a fresh key would be: nothing is lost), and if that frees less than an eighth of
//! the shard, the eighth of keys nearest to their TAT go too (those keys get a fresh bucket:
//! the cost of a flood of addresses is a limit briefly forgotten, never memory).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_config::model::{RateKey, RateLimit};
use gatehouse_config::units::{Cidr, canonical_ip};
use http::header;
use http::request::Parts;

/// Shards of a table (a power of two).
const SHARDS: usize = 64;
/// Keys a table holds at most (across its shards).
pub const MAX_KEYS: usize = 65_536;

/// The keys of a table are SipHash values already: the shard maps take them multiplied by an
/// odd constant, no second hash. Not as they are: a shard's keys share their top 6 bits (the
/// shard's number), and hashbrown takes its 7-bit tags from the top; the product's top bits
/// depend on every bit of the key, its low bits (the bucket) on the key's random low bits.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

/// One `[rate_limits.NAME]` section's buckets, shared by the routes that name it.
pub struct RateLimiter {
    /// The section, as configured (a reload keeps the limiter when it is unchanged).
    pub model: RateLimit,
    /// The emission interval `T`, in nanoseconds.
    interval: u64,
    /// `burst * T`: how far ahead of now a TAT may be.
    tolerance: u64,
    /// The origin of TATs.
    start: Instant,
    seed: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_keys: usize,
}

impl RateLimiter {
    /// An empty table for `model`.
    pub fn new(model: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(model, MAX_KEYS)
    }

    /// An empty table holding at most `max_keys` keys (rounded up to a multiple of the shards).
    pub fn with_capacity(model: RateLimit, max_keys: usize) -> RateLimiter {
        let interval = (model.per.as_nanos() / u128::from(model.count.max(1))).max(1);
        let interval = u64::try_from(interval).unwrap_or(u64::MAX);
        RateLimiter {
            tolerance: interval.saturating_mul(model.burst.max(1)),
            interval,
            model,
            start: Instant::now(),
            seed: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_keys: max_keys.div_ceil(SHARDS).max(8),
        }
    }

    /// Counts a request of `key` (a hash from `request_key`): Ok when it passes, else how long
    /// until one would.
    pub fn check(&self, key: u64) -> Result<(), Duration> {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The high bits pick the shard; the map takes the low ones for its buckets.
        let shard = &self.shards[(key >> 58) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = map.get(&key).copied();
        let next = gcra(tat.unwrap_or(now), now, self.interval, self.tolerance)
            .map_err(Duration::from_nanos)?;
        if tat.is_none() && map.len() >= self.shard_keys {
            evict(&mut map, now, self.shard_keys);
        }
        map.insert(key, next);
        Ok(())
    }

    /// The hash of a key's bytes (seeded per limiter).
    pub fn hash(&self, kind: u8, bytes: &[u8]) -> u64 {
        let mut h = self.seed.build_hasher();
        h.write_u8(kind);
        h.write(bytes);
        h.finish()
    }

    /// Keys held now (a flood of keys leaves at most `MAX_KEYS`).
    pub fn keys(&self) -> usize {
        (self.shards.iter())
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// The request's key: its bytes hashed. Absent header or cookie: the empty value (one
    /// bucket shared by every request without it).
    pub fn request_key(
        &self,
        parts: &Parts,
        peer: IpAddr,
        trusted_proxies: &[Cidr],
        route: &str,
    ) -> u64 {
        match &self.model.key {
            RateKey::ClientIp => match client_ip(parts, canonical_ip(peer), trusted_proxies) {
                IpAddr::V4(a) => self.hash(4, &a.octets()),
                IpAddr::V6(a) => self.hash(6, &a.octets()),
            },
            RateKey::Header(name) => {
                let v = parts.headers.get(name.as_str());
                self.hash(b'h', v.map(|v| v.as_bytes()).unwrap_or_default())
            }
            RateKey::Cookie(name) => self.hash(b'c', cookie(parts, name).unwrap_or_default()),
            RateKey::Route => self.hash(b'r', route.as_bytes()),
        }
    }
}

/// GCRA: the TAT after a request at `now`, or the nanoseconds to wait before one would pass.
/// `tat` is the key's TAT (`now` for a new key), `interval` the emission interval and
/// `tolerance` `burst * interval`.
#[inline]
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let next = tat.max(now).saturating_add(interval);
    let ahead = next - now;
    if ahead > tolerance {
        Err(ahead - tolerance)
    } else {
        Ok(next)
    }
}

/// Room in a full shard: keys whose TAT has passed go; if that frees less than an eighth of
/// `cap`, the keys nearest their TAT go too, an eighth of `cap` at least.
fn evict(map: &mut Shard, now: u64, cap: usize) {
    map.retain(|_, tat| *tat > now);
    let want = cap / 8;
    if map.len() + want <= cap {
        return;
    }
    let mut tats: Vec<u64> = map.values().copied().collect();
    let n = (want.max(1)).min(tats.len()) - 1;
    let (_, cut, _) = tats.select_nth_unstable(n);
    let cut = *cut;
    map.retain(|_, tat| *tat > cut);
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost
/// X-Forwarded-For entry that is not a trusted proxy itself (the entries left of it are
/// the client's to write). An entry that does not parse ends the walk at the last trusted hop.
fn client_ip(parts: &Parts, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for v in parts
        .headers
        .get_all(header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .rev()
    {
        let Ok(v) = v.to_str() else { return client };
        for item in v.rsplit(',') {
            let item = item.trim();
            let ip = item
                .parse::<IpAddr>()
                .or_else(|_| item.parse::<std::net::SocketAddr>().map(|s| s.ip()));
            let Ok(ip) = ip else { return client };
            client = canonical_ip(ip);
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

/// A cookie's value from the request's Cookie fields (RFC 6265 §5.4: "name=value; ...").
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a [u8]> {
    for v in parts.headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(value) = pair
                .strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                return Some(value);
            }
        }
    }
    None
}

/// Retry-After in whole seconds, rounded up (RFC 9110 §10.2.3). A wait is at most one
/// emission interval, at most an hour: u16 holds it.
pub fn retry_after_secs(wait: Duration) -> u16 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u16::try_from(secs).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn model(key: RateKey, count: u64, per: u64, burst: u64) -> RateLimit {
        RateLimit {
            name: "t".into(),
            key,
            count,
            per: Duration::from_secs(per),
            burst,
        }
    }

    #[test]
    fn gcra_lets_a_burst_through_then_one_per_interval() {
        // 10/s, burst 3: T = 100ms, tolerance 300ms.
        let (t, tol) = (S / 10, 3 * S / 10);
        let mut tat = 0;
        for i in 1..=3 {
            tat = gcra(tat, 0, t, tol).unwrap();
            assert_eq!(tat, i * t);
        }
        assert_eq!(gcra(tat, 0, t, tol), Err(t), "the 4th waits one interval");
        assert_eq!(gcra(tat, t / 2, t, tol), Err(t / 2));
        let tat = gcra(tat, t, t, tol).unwrap();
        assert_eq!(tat, 4 * t, "after one interval, one more passes");
        assert!(gcra(tat, t, t, tol).is_err());
        // Long idle: a full burst again, not more.
        let mut tat = gcra(tat, 100 * S, t, tol).unwrap();
        for _ in 0..2 {
            tat = gcra(tat, 100 * S, t, tol).unwrap();
        }
        assert!(gcra(tat, 100 * S, t, tol).is_err());
    }

    #[test]
    fn gcra_of_a_slow_rate() {
        // 1/m, burst 1: one request, then 60s to wait.
        let t = 60 * S;
        let tat = gcra(0, 5, t, t).unwrap();
        assert_eq!(gcra(tat, 5, t, t), Err(t));
        assert_eq!(gcra(tat, 30 * S + 5, t, t), Err(30 * S));
        assert!(gcra(tat, t + 5, t, t).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn limiter_keys_are_independent_and_the_table_is_bounded() {
        let l = RateLimiter::with_capacity(model(RateKey::Route, 1, 3600, 2), 1024);
        let (a, b) = (l.hash(0, b"a"), l.hash(0, b"b"));
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(3590), "{wait:?}");
        assert!(l.check(b).is_ok(), "another key has its own bucket");
        for i in 0..100_000u32 {
            let _ = l.check(l.hash(1, &i.to_be_bytes()));
        }
        assert!(l.keys() <= 1024, "{} keys", l.keys());
        assert!(l.keys() >= 512, "{} keys", l.keys());
    }

    #[test]
    fn keys_from_the_request() {
        let req = http::Request::get("/")
            .header("x-api-key", "k1")
            .header("cookie", "a=1; sid=abc; z=2")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.7")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(cookie(&parts, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&parts, "si"), None);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        assert_eq!(client_ip(&parts, peer, &[]), peer, "no trusted proxies");
        assert_eq!(
            client_ip(&parts, peer, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "the rightmost untrusted hop"
        );
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(&parts, other, &trusted), other, "untrusted peer");
        let l = RateLimiter::new(model(RateKey::Header("x-api-key".into()), 1, 1, 1));
        assert_eq!(l.request_key(&parts, peer, &[], "r"), l.hash(b'h', b"k1"));
    }
}
