//! model -> Snapshot: the only place that sees every part. Server states are looked up by
//! fingerprint so that unchanged servers keep their health, counters and pooled connections.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use gatehouse_config::model::{AccessLog, Config, Listener};

use crate::access_log::{AccessLogger, Target};
use crate::http::limit::RateLimiter;
use crate::upstream::{ServerState, Upstream, health};

/// A listener's run-time view: its settings and the routes that serve it, in order.
#[derive(Debug)]
pub struct ListenerRt {
    /// Settings (shared: every connection holds them while it lives).
    pub model: Arc<Listener>,
    /// Indexes into `config.routes`.
    pub routes: Vec<usize>,
    /// Certificates and TLS settings of an https listener.
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
}

/// Everything a request needs, immutable once built.
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Listeners in config order.
    pub listeners: Vec<ListenerRt>,
    /// Upstreams in config order (route actions index into this).
    pub upstreams: Vec<Arc<Upstream>>,
    /// The access log, if on.
    pub access_log: Option<Arc<AccessLogger>>,
    /// Route names as shared labels, by route index.
    pub route_names: Vec<Arc<str>>,
    /// The HTTP cache store, when a route caches.
    pub cache: Option<Arc<gatehouse_cache::Cache>>,
    /// The buckets of each `[rate_limits.NAME]`, by index of `config.rate_limits`.
    pub rate_limiters: Vec<Arc<RateLimiter>>,
}

impl Snapshot {
    /// Nothing configured (before the first config is applied).
    pub fn empty() -> Snapshot {
        Snapshot {
            config: Config {
                global: gatehouse_config::model::Global {
                    threads: None,
                    grace_period: std::time::Duration::from_secs(30),
                    access_log: AccessLog::Off,
                },
                admin: None,
                listeners: Vec::new(),
                routes: Vec::new(),
                upstreams: Vec::new(),
                acme: None,
                cache: None,
                rate_limits: Vec::new(),
            },
            listeners: Vec::new(),
            upstreams: Vec::new(),
            access_log: None,
            route_names: Vec::new(),
            cache: None,
            rate_limiters: Vec::new(),
        }
    }

    /// A listener by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerRt> {
        self.listeners.iter().find(|l| l.model.name == name)
    }
}

/// Builds the snapshot of a validated config. Every TLS file is read before anything starts, so
/// that a bad one refuses the config with every error at once.
pub(super) fn assemble(
    config: Config,
    servers: &mut HashMap<String, Weak<ServerState>>,
    prev_log: Option<&Arc<AccessLogger>>,
    prev_cache: Option<&Arc<gatehouse_cache::Cache>>,
    prev_limiters: &[Arc<RateLimiter>],
    counters: &gatehouse_cache::CacheCounters,
    challenges: &Arc<crate::acme::Challenges>,
) -> Result<Snapshot, Vec<String>> {
    let cache = cache_store(config.cache.as_ref(), prev_cache, counters)?;
    let access_log = access_logger(&config.global.access_log, prev_log)?;
    // TLS first: every certificate and key file is read now, so a bad file refuses the config.
    let mut errors = Vec::new();
    let listener_tls: Vec<_> = config
        .listeners
        .iter()
        .map(|l| listener_tls(l, &config, challenges, &mut errors))
        .collect();
    let upstream_tls: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| upstream_tls(u, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    servers.retain(|_, w| w.strong_count() > 0);
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .zip(&upstream_tls)
        .map(|(m, tls)| upstream(m, tls.as_ref(), servers))
        .collect();
    let listeners = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| ListenerRt {
            tls: listener_tls[i].clone(),
            model: Arc::new(l.clone()),
            routes: config
                .routes
                .iter()
                .enumerate()
                .filter(|(_, r)| r.listeners.contains(&i))
                .map(|(j, _)| j)
                .collect(),
        })
        .collect();
    let route_names = config
        .routes
        .iter()
        .map(|r| Arc::from(r.name.as_str()))
        .collect();
    let rate_limiters = (config.rate_limits.iter())
        .map(|m| rate_limiter(m, prev_limiters))
        .collect();
    Ok(Snapshot {
        rate_limiters,
        route_names,
        config,
        listeners,
        upstreams,
        access_log,
        cache,
    })
}

/// The cache store of `[cache]`: the previous one when the section is unchanged (its entries
/// survive the reload), else opened anew.
fn cache_store(
    model: Option<&gatehouse_config::model::CacheStore>,
    prev: Option<&Arc<gatehouse_cache::Cache>>,
    counters: &gatehouse_cache::CacheCounters,
) -> Result<Option<Arc<gatehouse_cache::Cache>>, Vec<String>> {
    let Some(m) = model else {
        return Ok(None);
    };
    Ok(Some(match prev {
        Some(c) if c.model == *m => c.clone(),
        _ => Arc::new(gatehouse_cache::Cache::open(m, counters.clone()).map_err(|e| vec![e])?),
    }))
}

/// The buckets of a `[rate_limits.NAME]`: the previous ones when the section is unchanged
/// (name, key, rate and burst), so a reload neither forgives nor forgets a client; else new.
fn rate_limiter(
    m: &gatehouse_config::model::RateLimit,
    prev: &[Arc<RateLimiter>],
) -> Arc<RateLimiter> {
    match prev.iter().find(|l| l.model == *m) {
        Some(l) => l.clone(),
        None => Arc::new(RateLimiter::new(m.clone())),
    }
}

/// The access logger of `global.access_log`: the previous one when it writes to the same
/// target, else started anew.
fn access_logger(
    setting: &AccessLog,
    prev: Option<&Arc<AccessLogger>>,
) -> Result<Option<Arc<AccessLogger>>, Vec<String>> {
    let target = match setting {
        AccessLog::Off => return Ok(None),
        AccessLog::File(p) => Target::File(p.clone()),
        _ => Target::Stdout,
    };
    Ok(Some(match prev {
        Some(l) if *l.target() == target => l.clone(),
        _ => Arc::new(
            AccessLogger::start(target)
                .map_err(|e| vec![format!("global.access_log: cannot open: {e}")])?,
        ),
    }))
}

/// A listener's TLS, its files read; their errors go to `errors`, named by the listener.
fn listener_tls(
    l: &Listener,
    config: &Config,
    challenges: &Arc<crate::acme::Challenges>,
    errors: &mut Vec<String>,
) -> Option<Arc<crate::tls::ListenerTls>> {
    let t = l.tls.as_ref()?;
    match crate::tls::ListenerTls::new(t, config.acme.as_ref(), challenges.clone()) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            errors.extend(
                e.into_iter()
                    .map(|e| format!("listeners.{}.tls: {e}", l.name)),
            );
            None
        }
    }
}

/// An upstream's TLS client config, its files read; an error goes to `errors`, named by the
/// upstream.
fn upstream_tls(
    u: &gatehouse_config::model::Upstream,
    errors: &mut Vec<String>,
) -> Option<Arc<rustls::ClientConfig>> {
    let t = u.tls.as_ref()?;
    match crate::tls::client_config(t, u.protocol) {
        Ok(c) => {
            if t.dangerous_skip_verify {
                tracing::warn!(upstream = %u.name, "TLS to this upstream is NOT verified (dangerous_skip_verify)");
            }
            Some(c)
        }
        Err(e) => {
            errors.push(format!("upstreams.{}.tls: {e}", u.name));
            None
        }
    }
}

/// An upstream's run-time state. Servers already known by fingerprint keep their state; new
/// ones are registered and get their health check started.
fn upstream(
    m: &gatehouse_config::model::Upstream,
    tls: Option<&Arc<rustls::ClientConfig>>,
    servers: &mut HashMap<String, Weak<ServerState>>,
) -> Arc<Upstream> {
    let up = Upstream::new(m, tls, |fp| servers.get(fp).and_then(Weak::upgrade));
    for s in &up.servers {
        if !servers.contains_key(&s.fingerprint) {
            servers.insert(s.fingerprint.clone(), Arc::downgrade(s));
            health::spawn(s, m.health_check.clone(), m.connect_timeout);
        }
    }
    Arc::new(up)
}
