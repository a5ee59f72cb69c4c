//! Prometheus metrics. Request counters and the duration histogram are updated on the request
//! path; per-server gauges are filled from the live snapshot when /metrics is scraped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::runtime::Snapshot;

/// A label value shared with the snapshot: cloning it on the request path is a reference count.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: Label,
    route: Label,
    upstream: Label,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    listener: Label,
    direction: &'static str,
}

/// Counters of one udp listener, taken once so the datagram path does no map lookups.
#[derive(Clone, Debug)]
pub struct UdpCounters {
    /// Live flows.
    pub flows: Gauge,
    /// Datagrams client -> server.
    pub up: Counter,
    /// Datagrams server -> client.
    pub down: Counter,
    /// Datagrams dropped at the flow limit.
    pub dropped: Counter,
}

/// Counters of one tcp/tls listener.
#[derive(Clone, Debug)]
pub struct L4Counters {
    /// Connections relayed to a server.
    pub connections: Counter,
    /// Bytes client -> server.
    pub up: Counter,
    /// Bytes server -> client.
    pub down: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ListenerLabels, Histogram>,
    server_up: Family<ServerLabels, Gauge>,
    server_active: Family<ServerLabels, Gauge>,
    server_requests: Family<ServerLabels, Gauge>,
    server_failures: Family<ServerLabels, Gauge>,
    reloads: Family<Vec<(String, String)>, Counter>,
    /// Cache counters, shared with the store.
    pub cache: gatehouse_cache::CacheCounters,
    cache_bytes: Family<Vec<(String, String)>, Gauge>,
    udp_flows: Family<ListenerLabels, Gauge>,
    udp_datagrams: Family<DirectionLabels, Counter>,
    udp_dropped: Family<ListenerLabels, Counter>,
    l4_connections: Family<ListenerLabels, Counter>,
    l4_bytes: Family<DirectionLabels, Counter>,
    smtp_transactions: Family<Vec<(String, String)>, Counter>,
    smtp_refusals: Family<Vec<(String, String)>, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    connections_refused: Family<RefusedLabels, Counter>,
    /// Tells this registry's entries apart in the per-thread handle cache.
    id: u64,
}

/// Counter and histogram handles of recent label sets, per thread: a family lookup hashes every
/// label (SipHash) under a lock, on every request. Keys hold their `Arc<str>` labels, so that
/// comparing by pointer cannot mistake a freed label for a new one.
struct CachedRequest {
    metrics: u64,
    listener: Arc<str>,
    route: Arc<str>,
    upstream: Arc<str>,
    code: u16,
    counter: Counter,
    duration: Histogram,
}

/// Entries kept per thread (a thread serves few label sets at a time; the oldest goes first).
const CACHED_REQUESTS: usize = 32;

thread_local! {
    static REQUEST_HANDLES: std::cell::RefCell<std::collections::VecDeque<CachedRequest>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("gatehouse");
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // Fields are evaluated in order: the metrics are registered in this order.
        Metrics {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: family(&mut r, "http_requests", "HTTP requests answered"),
            duration: durations(&mut r),
            server_up: family(
                &mut r,
                "upstream_server_up",
                "1 when the server takes traffic",
            ),
            server_active: family(
                &mut r,
                "upstream_active_connections",
                "Requests in flight to the server",
            ),
            server_requests: family(
                &mut r,
                "upstream_server_requests",
                "Requests sent to the server since it was configured",
            ),
            server_failures: family(
                &mut r,
                "upstream_server_failures",
                "Connect errors, resets and 5xx from the server since it was configured",
            ),
            reloads: family(&mut r, "config_reloads", "Config reloads by result"),
            cache: cache_counters(&mut r),
            cache_bytes: family(&mut r, "cache_bytes", "Bytes held by the cache, by tier"),
            udp_flows: family(&mut r, "udp_flows", "Live UDP flows"),
            udp_datagrams: family(
                &mut r,
                "udp_datagrams",
                "UDP datagrams relayed, up (client to server) and down",
            ),
            udp_dropped: family(
                &mut r,
                "udp_dropped",
                "UDP datagrams dropped at the flow limit",
            ),
            l4_connections: family(
                &mut r,
                "l4_connections",
                "tcp/tls listener connections relayed to a server",
            ),
            l4_bytes: family(
                &mut r,
                "l4_bytes",
                "Bytes relayed by tcp/tls listeners, up (client to server) and down",
            ),
            smtp_transactions: family(
                &mut r,
                "smtp_transactions",
                "SMTP mail transactions by listener and result (delivered, refused, aborted, failed)",
            ),
            smtp_refusals: family(
                &mut r,
                "smtp_refusals",
                "SMTP commands and messages the proxy refused, by reason",
            ),
            rate_limited: family(
                &mut r,
                "rate_limited",
                "Requests refused by their route's rate limit (429)",
            ),
            connections_refused: family(
                &mut r,
                "connections_refused",
                "Client connections closed at accept, by listener and reason (per_ip)",
            ),
            registry: r,
        }
    }

    /// Counts a request refused by its route's rate limit.
    pub fn rate_limited(&self, route: &Arc<str>) {
        let l = RouteLabels {
            route: Label(route.clone()),
        };
        self.rate_limited.get_or_create(&l).inc();
    }

    /// Counts a connection closed at accept (`reason`: "per_ip").
    pub fn connection_refused(&self, listener: &Arc<str>, reason: &'static str) {
        let l = RefusedLabels {
            listener: Label(listener.clone()),
            reason,
        };
        self.connections_refused.get_or_create(&l).inc();
    }

    /// Counts one answered request.
    pub fn observe_request(
        &self,
        listener: &Arc<str>,
        route: &Arc<str>,
        upstream: &Arc<str>,
        code: u16,
        took: Duration,
    ) {
        let secs = took.as_secs_f64();
        // `try_with`: during thread teardown the cache is gone and the lookup below serves.
        let hit = REQUEST_HANDLES.try_with(|c| {
            let c = c.borrow();
            c.iter()
                .find(|e| {
                    e.metrics == self.id
                        && e.code == code
                        && Arc::ptr_eq(&e.route, route)
                        && Arc::ptr_eq(&e.upstream, upstream)
                        && Arc::ptr_eq(&e.listener, listener)
                })
                .map(|e| {
                    e.counter.inc();
                    e.duration.observe(secs);
                })
                .is_some()
        });
        if hit == Ok(true) {
            return;
        }
        // Each family member taken in its own statement (a guard must be gone before the next
        // lookup may insert).
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                listener: Label(listener.clone()),
                route: Label(route.clone()),
                upstream: Label(upstream.clone()),
                code,
            })
            .clone();
        let duration = self
            .duration
            .get_or_create(&ListenerLabels {
                listener: Label(listener.clone()),
            })
            .clone();
        counter.inc();
        duration.observe(secs);
        let _ = REQUEST_HANDLES.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHED_REQUESTS {
                c.pop_front();
            }
            c.push_back(CachedRequest {
                metrics: self.id,
                listener: listener.clone(),
                route: route.clone(),
                upstream: upstream.clone(),
                code,
                counter,
                duration,
            });
        });
    }

    /// The counters of a udp listener (each taken in its own statement: a family member's
    /// guard must be gone before the next lookup may insert).
    pub fn udp(&self, listener: &Arc<str>) -> UdpCounters {
        let l = ListenerLabels {
            listener: Label(listener.clone()),
        };
        let dir = |direction| DirectionLabels {
            listener: Label(listener.clone()),
            direction,
        };
        let flows = self.udp_flows.get_or_create(&l).clone();
        let up = self.udp_datagrams.get_or_create(&dir("up")).clone();
        let down = self.udp_datagrams.get_or_create(&dir("down")).clone();
        let dropped = self.udp_dropped.get_or_create(&l).clone();
        UdpCounters {
            flows,
            up,
            down,
            dropped,
        }
    }

    /// The counters of a tcp or tls listener.
    pub fn l4(&self, listener: &str) -> L4Counters {
        let listener: Arc<str> = Arc::from(listener);
        let l = ListenerLabels {
            listener: Label(listener.clone()),
        };
        let dir = |direction| DirectionLabels {
            listener: Label(listener.clone()),
            direction,
        };
        let connections = self.l4_connections.get_or_create(&l).clone();
        let up = self.l4_bytes.get_or_create(&dir("up")).clone();
        let down = self.l4_bytes.get_or_create(&dir("down")).clone();
        L4Counters {
            connections,
            up,
            down,
        }
    }

    /// Counts a finished SMTP transaction.
    pub fn smtp_transaction(&self, listener: &str, result: &str) {
        let labels = vec![
            ("listener".to_string(), listener.to_string()),
            ("result".to_string(), result.to_string()),
        ];
        self.smtp_transactions.get_or_create(&labels).inc();
    }

    /// Counts an SMTP refusal of the proxy's own (`reason`: relay, recipients, size, bare_lf,
    /// bare_cr, nul, starttls_required, sequence, syntax, command, line_too_long, pregreet,
    /// no_origin).
    pub fn smtp_refusal(&self, reason: &str) {
        let labels = vec![("reason".to_string(), reason.to_string())];
        self.smtp_refusals.get_or_create(&labels).inc();
    }

    /// Counts a reload attempt.
    pub fn observe_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
    }

    /// The text exposition, with server gauges taken from `snap`.
    pub fn encode(&self, snap: &Snapshot) -> String {
        self.server_up.clear();
        self.server_active.clear();
        self.server_requests.clear();
        self.server_failures.clear();
        for up in &snap.upstreams {
            for s in &up.servers {
                let l = ServerLabels {
                    upstream: up.model.name.clone(),
                    server: s.spec.address.clone(),
                };
                self.server_up
                    .get_or_create(&l)
                    .set(i64::from(s.is_available()));
                self.server_active
                    .get_or_create(&l)
                    .set(s.active.load(Ordering::Relaxed) as i64);
                self.server_requests
                    .get_or_create(&l)
                    .set(s.requests.load(Ordering::Relaxed) as i64);
                self.server_failures
                    .get_or_create(&l)
                    .set(s.failures.load(Ordering::Relaxed) as i64);
            }
        }
        let (mem, disk) = snap.cache.as_ref().map_or((0, 0), |c| c.bytes());
        for (tier, v) in [("memory", mem), ("disk", disk)] {
            self.cache_bytes
                .get_or_create(&vec![("tier".to_string(), tier.to_string())])
                .set(v as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The request latency histogram, registered.
fn durations(registry: &mut Registry) -> Family<ListenerLabels, Histogram> {
    let duration = Family::<ListenerLabels, Histogram>::new_with_constructor(|| {
        Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    });
    registry.register(
        "http_request_duration_seconds",
        "Time from request head to the end of the answer",
        duration.clone(),
    );
    duration
}

/// A metric of type `T` registered under `name` with `help`.
fn family<T: prometheus_client::registry::Metric + Default + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> T {
    let metric = T::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The cache's counters, registered; the eviction counters are members of one family by tier.
fn cache_counters(registry: &mut Registry) -> gatehouse_cache::CacheCounters {
    let cache = gatehouse_cache::CacheCounters::default();
    for (name, help, c) in [
        ("cache_hits", "Answers served from the cache", &cache.hits),
        (
            "cache_misses",
            "Cacheable requests that found nothing usable",
            &cache.misses,
        ),
        (
            "cache_stale_served",
            "Stale answers served (max-stale, stale-while-revalidate, stale-if-error)",
            &cache.stale,
        ),
        (
            "cache_revalidations",
            "Stored answers validated with the origin",
            &cache.revalidations,
        ),
    ] {
        registry.register(name, help, c.clone());
    }
    let evictions: Family<Vec<(String, String)>, Counter> = family(
        registry,
        "cache_evictions",
        "Entries evicted from the cache, by tier",
    );
    // The eviction counters are the family's members, so the store increments them directly.
    // (One statement each: a member's read guard must be gone before the next insert.)
    let evictions_memory = evictions
        .get_or_create(&vec![("tier".to_string(), "memory".to_string())])
        .clone();
    let evictions_disk = evictions
        .get_or_create(&vec![("tier".to_string(), "disk".to_string())])
        .clone();
    gatehouse_cache::CacheCounters {
        evictions_memory,
        evictions_disk,
        ..cache
    }
}
