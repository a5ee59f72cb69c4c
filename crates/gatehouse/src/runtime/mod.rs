//! Start, reload and stop. `assemble` turns a validated config into a `Snapshot` (routes,
//! upstream run-time state, access log), which is swapped atomically on reload: requests load the
//! snapshot once and finish on it. Listeners are bound, kept or closed to match the new config.

mod assemble;
mod listen;
mod per_ip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_config::model::{Config, Listener};
use tokio::sync::{Notify, watch};

pub use assemble::{ListenerRt, Snapshot};

use crate::metrics::Metrics;
use crate::upstream::ServerState;

/// Counts live client connections so that shutdown can wait for them.
#[derive(Default)]
pub struct ConnTracker {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by each client connection task.
pub struct ConnGuard(Arc<Shared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.conns.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.conns.idle.notify_waiters();
        }
    }
}

/// State shared by every task of the process.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Metrics,
    conns: ConnTracker,
    shutdown: watch::Sender<bool>,
    /// Set when shutdown starts, before `shutdown` tells its receivers (a load is cheaper than
    /// polling the channel per request).
    stopping: std::sync::atomic::AtomicBool,
    /// Server states by fingerprint, so that unchanged servers survive a reload.
    servers: Mutex<HashMap<String, Weak<ServerState>>>,
    /// Bound sockets by (listener name, configured address).
    bound: Mutex<HashMap<(String, SocketAddr), listen::Bound>>,
    admin: Mutex<Option<(SocketAddr, listen::Bound)>>,
    config_path: Option<PathBuf>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Open ACME challenges, answered by listeners.
    pub challenges: Arc<crate::acme::Challenges>,
}

/// Listener sockets bound by a reload but not started yet, by (listener name, configured address).
type Fresh = Vec<((String, SocketAddr), listen::Bound)>;

impl Shared {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Resolves when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has started.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Counts a new client connection.
    pub fn track(self: &Arc<Self>) -> ConnGuard {
        self.conns.live.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    /// Live client connections.
    pub fn live_connections(&self) -> usize {
        self.conns.live.load(Ordering::Acquire)
    }

    /// Rereads the config file and applies it. On error the old config keeps serving.
    pub async fn reload(self: &Arc<Self>) -> Result<(), Vec<String>> {
        let Some(path) = &self.config_path else {
            return Err(vec!["no config file to reload from".into()]);
        };
        let result = match gatehouse_config::load(path) {
            Ok(c) => self.apply(c).await,
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        };
        self.metrics.observe_reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
            Err(errs) => {
                for e in errs {
                    tracing::error!("reload refused: {e}");
                }
            }
        }
        result
    }

    /// Applies a validated config: binds what is new, builds and swaps the snapshot, then closes
    /// listeners that are gone. A bind failure leaves everything as it was.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<(), Vec<String>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let snapshot = self.build_snapshot(config)?;
        // Bind new sockets before the swap, so that a failure changes nothing.
        let mut errors = Vec::new();
        let fresh = self.bind_new(&snapshot.config, &mut errors)?;
        let admin_change = self.bind_admin_change(&snapshot.config, &mut errors)?;
        if !errors.is_empty() {
            for (_, b) in fresh {
                // Never started: dropping `b` closes its socket.
                b.stop();
            }
            return Err(errors);
        }
        let wanted: Vec<(String, SocketAddr)> = snapshot
            .config
            .listeners
            .iter()
            .flat_map(|l| l.bind.iter().map(move |a| (l.name.clone(), *a)))
            .collect();
        self.snapshot.store(snapshot);
        let mut closing = Vec::new();
        self.start_fresh_close_gone(fresh, &wanted, &mut closing);
        if let Some(change) = admin_change {
            self.swap_admin(change, &mut closing);
        }
        for task in closing {
            let _ = task.await;
        }
        Ok(())
    }

    /// The snapshot of `config`, built with the server states, access log and cache store of the
    /// one in force (so that what is unchanged carries over).
    fn build_snapshot(&self, config: Config) -> Result<Arc<Snapshot>, Vec<String>> {
        let mut servers = self
            .servers
            .lock()
            .map_err(|_| vec!["poisoned".to_string()])?;
        let prev = self.snapshot.load();
        Ok(Arc::new(assemble::assemble(
            config,
            &mut servers,
            prev.access_log.as_ref(),
            prev.cache.as_ref(),
            &prev.rate_limiters,
            &self.metrics.cache,
            &self.challenges,
        )?))
    }

    /// Binds the listener addresses of `config` not bound yet, keyed by (listener, address); not
    /// started. Bind failures go to `errors`.
    fn bind_new(
        self: &Arc<Self>,
        config: &Config,
        errors: &mut Vec<String>,
    ) -> Result<Fresh, Vec<String>> {
        let mut fresh = Vec::new();
        let bound = self
            .bound
            .lock()
            .map_err(|_| vec!["poisoned".to_string()])?;
        for l in &config.listeners {
            for addr in &l.bind {
                let key = (l.name.clone(), *addr);
                if bound.contains_key(&key) {
                    continue;
                }
                let bound = match l.protocol {
                    gatehouse_config::model::ListenerProtocol::Udp => {
                        listen::bind_udp(self, l, *addr)
                    }
                    _ => listen::bind_http(self, l, *addr),
                };
                match bound {
                    Ok(b) => fresh.push((key, b)),
                    Err(e) => {
                        errors.push(format!("listener `{}`: cannot bind {addr}: {e}", l.name))
                    }
                }
            }
        }
        Ok(fresh)
    }

    /// When the admin address changes: Some(the new admin socket, bound but not started, or None
    /// when the admin listener goes away). A bind failure goes to `errors`.
    fn bind_admin_change(
        self: &Arc<Self>,
        config: &Config,
        errors: &mut Vec<String>,
    ) -> Result<Option<Option<(SocketAddr, listen::Bound)>>, Vec<String>> {
        let admin = self
            .admin
            .lock()
            .map_err(|_| vec!["poisoned".to_string()])?;
        let current = admin.as_ref().map(|(a, _)| *a);
        if current == config.admin {
            return Ok(None);
        }
        Ok(match config.admin {
            Some(addr) => match listen::bind_admin(self, addr) {
                Ok(b) => Some(Some((addr, b))),
                Err(e) => {
                    errors.push(format!("admin: cannot bind {addr}: {e}"));
                    None
                }
            },
            None => Some(None),
        })
    }

    /// Starts the freshly bound listeners and stops those not `wanted` any more; the tasks to
    /// wait for go to `closing`.
    fn start_fresh_close_gone(
        &self,
        fresh: Fresh,
        wanted: &[(String, SocketAddr)],
        closing: &mut Vec<tokio::task::JoinHandle<()>>,
    ) {
        let Ok(mut bound) = self.bound.lock() else {
            return;
        };
        for (k, b) in fresh {
            b.start();
            bound.insert(k, b);
        }
        bound.retain(|k, b| {
            let keep = wanted.contains(k);
            if !keep {
                tracing::info!(listener = %k.0, addr = %b.local, "listener closed");
                closing.extend(b.stop());
            }
            keep
        });
    }

    /// Stops the admin listener in force, if any, and starts the new one, if any; the task to
    /// wait for goes to `closing`.
    fn swap_admin(
        &self,
        change: Option<(SocketAddr, listen::Bound)>,
        closing: &mut Vec<tokio::task::JoinHandle<()>>,
    ) {
        let Ok(mut admin) = self.admin.lock() else {
            return;
        };
        if let Some((_, old)) = admin.take() {
            closing.extend(old.stop());
        }
        if let Some((addr, b)) = change {
            b.start();
            *admin = Some((addr, b));
        }
    }
}

/// How often certificate, key and CA files are looked at for changes.
const TLS_WATCH_EVERY: Duration = Duration::from_secs(1);

/// The TLS files a config names, with their modification time and size.
fn tls_file_stamps(config: &Config) -> Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            for c in &t.certificates {
                paths.push(c.cert.clone());
                paths.push(c.key.clone());
                paths.extend(c.ocsp.clone());
            }
            paths.extend(t.client_ca.clone());
        }
    }
    for u in &config.upstreams {
        if let Some(t) = &u.tls {
            paths.extend(t.ca.clone());
            if let Some((c, k)) = &t.client_cert {
                paths.push(c.clone());
                paths.push(k.clone());
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let stamp = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, stamp)
        })
        .collect()
}

/// Re-applies the config in force when one of its TLS files changes on disk: new handshakes get
/// the new certificate; open connections keep theirs. A broken file is reported once per change
/// and the old certificates keep serving. Ends with the process's shared state.
async fn watch_tls_files(shared: Weak<Shared>) {
    let mut seen = shared
        .upgrade()
        .map(|s| tls_file_stamps(&s.snapshot().config))
        .unwrap_or_default();
    loop {
        tokio::time::sleep(TLS_WATCH_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let snap = shared.snapshot();
        let stamps = tls_file_stamps(&snap.config);
        if stamps == seen {
            continue;
        }
        seen = stamps;
        match shared.apply(snap.config.clone()).await {
            Ok(()) => tracing::info!("TLS files changed on disk: certificates reloaded"),
            Err(errs) => {
                for e in errs {
                    tracing::error!("TLS files changed on disk but cannot be used: {e}");
                }
            }
        }
    }
}

/// A running gatehouse: the handle `main` and the tests hold.
pub struct Gatehouse {
    shared: Arc<Shared>,
}

impl Gatehouse {
    /// Binds every listener and starts serving `config`.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Gatehouse> {
        let empty = Snapshot::empty();
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(empty),
            metrics: Metrics::new(),
            conns: ConnTracker::default(),
            shutdown,
            stopping: std::sync::atomic::AtomicBool::new(false),
            servers: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            admin: Mutex::new(None),
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
            challenges: Arc::default(),
        });
        shared
            .apply(config)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
        tokio::spawn(watch_tls_files(Arc::downgrade(&shared)));
        crate::acme::spawn(Arc::downgrade(&shared));
        Ok(Gatehouse { shared })
    }

    /// Shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The addresses actually bound for listener `name` (ports resolved when 0 was asked).
    pub fn listener_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let bound = match self.shared.bound.lock() {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        };
        let mut v: Vec<SocketAddr> = bound
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, b)| b.local)
            .collect();
        v.sort();
        v
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared
            .admin
            .lock()
            .ok()?
            .as_ref()
            .map(|(_, b)| b.local)
    }

    /// Rereads the config file.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        self.shared.reload().await
    }

    /// Applies a config directly.
    pub async fn apply(&self, config: Config) -> Result<(), Vec<String>> {
        self.shared.apply(config).await
    }

    /// Stops accepting, asks every connection to finish its in-flight requests, and waits up to
    /// `grace`. Returns the connections still open when it gave up.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let mut closing = Vec::new();
        if let Ok(mut bound) = self.shared.bound.lock() {
            for (_, b) in bound.drain() {
                closing.extend(b.stop());
            }
        }
        if let Ok(mut admin) = self.shared.admin.lock()
            && let Some((_, b)) = admin.take()
        {
            closing.extend(b.stop());
        }
        // Once these end, every listening socket is closed.
        for task in closing {
            let _ = task.await;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.shared.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.shared.conns.idle.notified();
            let live = self.shared.live_connections();
            if live == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                let live = self.shared.live_connections();
                tracing::warn!(
                    connections = live,
                    "grace period over; closing what is left"
                );
                return live;
            }
        }
    }

    /// Listener settings by name in the current snapshot.
    pub fn listener(&self, name: &str) -> Option<Listener> {
        self.shared
            .snapshot()
            .listener(name)
            .map(|l| Listener::clone(&l.model))
    }
}
