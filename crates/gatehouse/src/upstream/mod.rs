//! Upstreams: pools of servers with their health, in-flight counts, pooled connections and the
//! balancing that picks one. This module knows nothing of routes or of the request pipeline.

pub mod h1;
pub mod health;
pub mod pool;
pub mod select;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gatehouse_config::model;

pub use pool::Pool;
use select::Selector;

/// Milliseconds since process start, for cheap atomic deadlines.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// FNV-1a, 64 bit: a stable hash (the same across runs and builds) for sticky ids and hash keys.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Keeps a server's in-flight count up while alive (a request, a tunnel, an L4 pipe or an SMTP
/// session): least_conn and the metrics read it.
pub struct ActiveGuard(pub Arc<ServerState>);

impl ActiveGuard {
    /// Counts one more in-flight request on `s`.
    pub fn new(s: Arc<ServerState>) -> Self {
        s.active.fetch_add(1, Ordering::Relaxed);
        s.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(s)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The run-time state of one server; shared across reloads while the server is unchanged.
#[derive(Debug)]
pub struct ServerState {
    /// Upstream name.
    pub upstream: String,
    /// The configured server.
    pub spec: model::Server,
    /// Opaque id for the sticky cookie (never the address).
    pub id: String,
    /// Resolved addresses (re-resolved periodically for names).
    pub addrs: ArcSwap<Vec<SocketAddr>>,
    /// Up by active health checks (starts up).
    up: AtomicBool,
    /// Passive ejection: out of rotation until this time (ms since start).
    down_until: AtomicU64,
    /// Consecutive passive failures.
    passive_failures: AtomicU32,
    /// In-flight requests.
    pub active: AtomicUsize,
    /// Requests sent, ever.
    pub requests: AtomicU64,
    /// Failures counted (connect errors, resets, 5xx), ever.
    pub failures: AtomicU64,
    /// Pooled connections.
    pub pool: Pool,
    /// The settings this state was made for; a change makes a new state.
    pub fingerprint: String,
    /// The address as a shared label for logs and metrics.
    pub label: Arc<str>,
    /// PROXY header to send on each new connection.
    pub proxy_protocol: Option<model::ProxyProtocol>,
    /// Local address of connections to this server.
    pub source_address: Option<model::SourceAddress>,
    /// TLS to this server: the client config and the name to verify and send as SNI.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl ServerState {
    /// A new server state; starts up.
    pub fn new(
        up: &model::Upstream,
        spec: &model::Server,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Arc<ServerState> {
        let tls = tls.and_then(|config| {
            let name = up
                .tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| spec.host.clone());
            rustls::pki_types::ServerName::try_from(name)
                .ok()
                .map(|n| (config.clone(), n))
        });
        let id = format!(
            "{:016x}",
            fnv1a(format!("{}/{}", up.name, spec.address).as_bytes())
        );
        let literal = spec
            .host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| vec![SocketAddr::new(ip, spec.port)])
            .unwrap_or_default();
        Arc::new(ServerState {
            upstream: up.name.clone(),
            spec: spec.clone(),
            id,
            addrs: ArcSwap::from_pointee(literal),
            up: AtomicBool::new(true),
            down_until: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            // A connection that carries one client's identity (PROXY header, or the client's
            // own source address) is never reused for another.
            pool: Pool::new(
                up.protocol,
                up.idle_timeout,
                up.proxy_protocol.is_none()
                    && up.source_address != Some(model::SourceAddress::Client),
            ),
            proxy_protocol: up.proxy_protocol,
            source_address: up.source_address,
            fingerprint: fingerprint(up, spec),
            label: Arc::from(spec.address.as_str()),
            tls,
        })
    }

    /// Up by health checks and not passively ejected.
    pub fn is_available(&self) -> bool {
        self.up.load(Ordering::Relaxed) && now_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// Up by active health checks.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Sets the active health verdict; returns whether it changed.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed) != up
    }

    /// Passively ejected right now.
    pub fn is_ejected(&self) -> bool {
        now_ms() < self.down_until.load(Ordering::Relaxed)
    }

    /// Passive health: an answer from the server counts against it when it is a 5xx, for it
    /// otherwise.
    pub fn record_answer(&self, status: http::StatusCode, passive: Option<&model::Passive>) {
        if status.is_server_error() {
            self.record_failure(passive);
        } else {
            self.record_success();
        }
    }

    /// Records a success for passive checks.
    pub fn record_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; ejects the server for `cooldown` after `fall` in a row.
    pub fn record_failure(&self, passive: Option<&model::Passive>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let Some(p) = passive else { return };
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= p.fall {
            self.passive_failures.store(0, Ordering::Relaxed);
            let until = now_ms() + p.cooldown.as_millis() as u64;
            self.down_until.store(until, Ordering::Relaxed);
            tracing::warn!(
                upstream = %self.upstream, server = %self.spec.address, failures = n,
                cooldown = ?p.cooldown, "server ejected after consecutive failures"
            );
        }
    }
}

/// What must be equal for a server's state to carry over a reload.
fn fingerprint(up: &model::Upstream, spec: &model::Server) -> String {
    format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        up.name,
        spec.address,
        up.protocol,
        up.idle_timeout,
        up.health_check,
        up.connect_timeout,
        up.tls,
        up.proxy_protocol,
        up.source_address
    )
}

/// An upstream at run time.
#[derive(Debug)]
pub struct Upstream {
    /// The validated settings.
    pub model: model::Upstream,
    /// The name as a shared label for logs and metrics.
    pub name: Arc<str>,
    /// Servers in config order (primaries and backups).
    pub servers: Vec<Arc<ServerState>>,
    selector: Selector,
}

/// What balancing may look at.
#[derive(Debug, Default)]
pub struct PickInput<'a> {
    /// Hash of the configured hash key, for `hash`.
    pub hash: Option<u64>,
    /// Value of the sticky cookie, if the request had one.
    pub sticky: Option<&'a str>,
    /// Servers already tried by this request (indexes).
    pub exclude: &'a [usize],
}

/// See [`Upstream::connection_picks`].
pub struct ConnectionPicks<'a> {
    up: &'a Upstream,
    hash: u64,
    tried: Vec<usize>,
}

impl Iterator for ConnectionPicks<'_> {
    type Item = Arc<ServerState>;

    fn next(&mut self) -> Option<Arc<ServerState>> {
        if self.tried.len() > self.up.model.retries as usize {
            return None;
        }
        let input = PickInput {
            hash: Some(self.hash),
            sticky: None,
            exclude: &self.tried,
        };
        let i = self.up.pick(&input)?;
        self.tried.push(i);
        Some(self.up.servers[i].clone())
    }
}

impl Upstream {
    /// Builds the run-time upstream, reusing `existing` server states that are unchanged.
    pub fn new(
        model: &model::Upstream,
        tls: Option<&Arc<rustls::ClientConfig>>,
        mut existing: impl FnMut(&str) -> Option<Arc<ServerState>>,
    ) -> Upstream {
        let servers: Vec<Arc<ServerState>> = model
            .servers
            .iter()
            .map(|s| {
                let fp = fingerprint(model, s);
                existing(&fp).unwrap_or_else(|| ServerState::new(model, s, tls))
            })
            .collect();
        let selector = Selector::new(model);
        Upstream {
            model: model.clone(),
            name: Arc::from(model.name.as_str()),
            servers,
            selector,
        }
    }

    /// The servers to try for one client's connection (L4, SMTP): picked as the upstream
    /// balances, with `hash` (the client address's) for `hash`, each at most once, 1 + `retries`
    /// of them at most.
    pub fn connection_picks(&self, hash: u64) -> ConnectionPicks<'_> {
        ConnectionPicks {
            up: self,
            hash,
            tried: Vec::new(),
        }
    }

    /// Picks a server index, or None when no server is available.
    pub fn pick(&self, input: &PickInput<'_>) -> Option<usize> {
        if let Some(id) = input.sticky
            && let Some(i) = self.servers.iter().position(|s| s.id == id)
            && self.servers[i].is_available()
            && !input.exclude.contains(&i)
        {
            return Some(i);
        }
        self.selector.pick(&self.servers, input)
    }

    /// Number of servers up (not counting backups).
    pub fn primaries_up(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| !s.spec.backup && s.is_available())
            .count()
    }
}

/// How often host names of servers are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
