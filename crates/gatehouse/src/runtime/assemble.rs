//! model -> Snapshot: the only place that sees every part. Server states are looked up by
//! fingerprint so that unchanged servers keep their health, counters and pooled connections.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use gatehouse_config::model::{AccessLog, Config, Listener};

use crate::access_log::{AccessLogger, Target};
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
            },
            listeners: Vec::new(),
            upstreams: Vec::new(),
            access_log: None,
            route_names: Vec::new(),
            cache: None,
        }
    }

    /// A listener by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerRt> {
        self.listeners.iter().find(|l| l.model.name == name)
    }
}

pub(super) fn assemble(
    config: Config,
    servers: &mut HashMap<String, Weak<ServerState>>,
    prev_log: Option<&Arc<AccessLogger>>,
    prev_cache: Option<&Arc<gatehouse_cache::Cache>>,
    counters: &gatehouse_cache::CacheCounters,
    challenges: &Arc<crate::acme::Challenges>,
) -> Result<Snapshot, Vec<String>> {
    // The store survives a reload that leaves `[cache]` as it was.
    let cache = match &config.cache {
        None => None,
        Some(m) => match prev_cache {
            Some(c) if c.model == *m => Some(c.clone()),
            _ => Some(Arc::new(
                gatehouse_cache::Cache::open(m, counters.clone()).map_err(|e| vec![e])?,
            )),
        },
    };
    let access_log = match &config.global.access_log {
        AccessLog::Off => None,
        other => {
            let target = match other {
                AccessLog::File(p) => Target::File(p.clone()),
                _ => Target::Stdout,
            };
            match prev_log {
                Some(l) if *l.target() == target => Some(l.clone()),
                _ => Some(Arc::new(AccessLogger::start(target).map_err(|e| {
                    vec![format!("global.access_log: cannot open: {e}")]
                })?)),
            }
        }
    };
    // TLS first: every certificate and key file is read now, so a bad file refuses the config.
    let mut errors = Vec::new();
    let mut listener_tls = Vec::new();
    for l in &config.listeners {
        listener_tls.push(match &l.tls {
            Some(t) => {
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
            None => None,
        });
    }
    let mut upstream_tls = Vec::new();
    for u in &config.upstreams {
        upstream_tls.push(match &u.tls {
            Some(t) => match crate::tls::client_config(t, u.protocol) {
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
            },
            None => None,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    servers.retain(|_, w| w.strong_count() > 0);
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .zip(&upstream_tls)
        .map(|(m, tls)| {
            let up = Upstream::new(m, tls.as_ref(), |fp| {
                servers.get(fp).and_then(Weak::upgrade)
            });
            for s in &up.servers {
                if !servers.contains_key(&s.fingerprint) {
                    servers.insert(s.fingerprint.clone(), Arc::downgrade(s));
                    health::spawn(s, m.health_check.clone(), m.connect_timeout);
                }
            }
            Arc::new(up)
        })
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
    Ok(Snapshot {
        route_names,
        config,
        listeners,
        upstreams,
        access_log,
        cache,
    })
}
