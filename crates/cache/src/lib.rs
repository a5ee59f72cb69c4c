//! The HTTP cache store: a memory tier and an optional disk tier, both keyed by absolute URL with
//! the URL's variants (Vary) under one key, both bounded by bytes with S3-FIFO eviction
//! (quick_cache: scan-resistant — a one-off sweep over many URLs passes through its small queue
//! without pushing out what is used again). Stored answers go to both tiers (write-through); a
//! disk hit is promoted to memory. `flight` coalesces concurrent misses for one URL.
//!
//! What may be stored and served is decided in `policy`; the request flow is in the binary's
//! `http::cache_flow`. A crate of its own so the store cannot reach into the proxy: it knows
//! the config model and HTTP types, nothing of listeners, routes or upstream pools.
#![deny(missing_docs)]

pub mod entry;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_config::model::CacheStore;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache as QCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use tokio::sync::watch;

pub use entry::Entry;
use entry::vary_matches;

/// Counters shared with /metrics; they outlive a store rebuilt by a reload.
#[derive(Clone, Debug, Default)]
pub struct CacheCounters {
    /// Answers served from the store without the origin.
    pub hits: Counter,
    /// Requests that found nothing usable and went to the origin.
    pub misses: Counter,
    /// Stale answers served (max-stale, stale-while-revalidate, stale-if-error).
    pub stale: Counter,
    /// Validations sent to the origin for stored answers.
    pub revalidations: Counter,
    /// Entries evicted from memory.
    pub evictions_memory: Counter,
    /// Entries evicted from disk.
    pub evictions_disk: Counter,
}

/// One URL's variants, newest first.
type Variants = Arc<[Arc<Entry>]>;

#[derive(Clone)]
struct MemWeight;

impl Weighter<Arc<str>, Variants> for MemWeight {
    fn weight(&self, _k: &Arc<str>, v: &Variants) -> u64 {
        v.iter().map(|e| e.weight()).sum::<u64>().max(1)
    }
}

#[derive(Clone)]
struct MemLife(Counter);

impl Lifecycle<Arc<str>, Variants> for MemLife {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _k: Arc<str>, _v: Variants) {
        self.0.inc();
    }
}

/// What the disk index knows of one stored variant.
#[derive(Debug, Clone)]
struct DiskVariant {
    file: PathBuf,
    size: u64,
    route: Arc<str>,
    vary: Vec<(http::HeaderName, Vec<u8>)>,
}

type DiskVariants = Arc<[DiskVariant]>;

#[derive(Clone)]
struct DiskWeight;

impl Weighter<Arc<str>, DiskVariants> for DiskWeight {
    fn weight(&self, _k: &Arc<str>, v: &DiskVariants) -> u64 {
        v.iter().map(|d| d.size).sum::<u64>().max(1)
    }
}

/// Files of evicted disk entries, deleted once the index's shard lock is released.
#[derive(Default)]
struct DeleteFiles(Vec<PathBuf>);

impl Drop for DeleteFiles {
    fn drop(&mut self) {
        for f in self.0.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[derive(Clone)]
struct DiskLife(Counter);

impl Lifecycle<Arc<str>, DiskVariants> for DiskLife {
    type RequestState = DeleteFiles;
    fn on_evict(&self, state: &mut DeleteFiles, _k: Arc<str>, v: DiskVariants) {
        self.0.inc();
        state.0.extend(v.iter().map(|d| d.file.clone()));
    }
}

struct Disk {
    dir: PathBuf,
    index: QCache<Arc<str>, DiskVariants, DiskWeight, DefaultHashBuilder, DiskLife>,
}

/// FNV-1a, 64 bit, to spread URLs over the purge-epoch slots. The store's own copy (the
/// binary's `upstream::fnv1a` is the same function) so this crate depends on nothing of the
/// proxy; the slot only has to be stable within a run, so nothing outside need agree with it.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Variants kept per URL at most (each distinct Vary value set is one).
const MAX_VARIANTS: usize = 16;

/// A bounded cache of `n` bytes whose shards each hold at least `max_object` bytes.
fn options(capacity: u64, max_object: u64) -> quick_cache::Options {
    // quick_cache splits capacity across shards; an object must fit in one.
    let mut shards = 1usize;
    while shards < 64 && capacity / (shards as u64 * 2) >= max_object.max(1) * 2 {
        shards *= 2;
    }
    let mut b = OptionsBuilder::new();
    b.weight_capacity(capacity)
        .estimated_items_capacity((capacity / 16_384).clamp(64, 1 << 20) as usize)
        .shards(shards);
    b.build().unwrap_or_else(|_| {
        OptionsBuilder::new()
            .weight_capacity(capacity)
            .estimated_items_capacity(1024)
            .build()
            .expect("plain options build")
    })
}

/// The store.
pub struct Cache {
    /// Its settings.
    pub model: CacheStore,
    mem: QCache<Arc<str>, Variants, MemWeight, DefaultHashBuilder, MemLife>,
    disk: Option<Arc<Disk>>,
    flights: Arc<Mutex<HashMap<Arc<str>, watch::Receiver<()>>>>,
    /// Purge epochs by URL hash, and one for prefix purges (see `epoch`).
    epochs: Box<[AtomicU64]>,
    global_epoch: AtomicU64,
    /// Counters for /metrics.
    pub counters: CacheCounters,
}

/// The result of a lookup.
pub enum Lookup {
    /// A stored variant for this request.
    Hit(Arc<Entry>),
    /// The URL is stored, but no variant matches this request's headers.
    VaryMiss,
    /// Nothing stored under the URL.
    UriMiss,
}

/// Waiting for, or leading, the one origin request for a URL.
pub enum Flight {
    /// We go to the origin; others wait until this guard drops.
    Leader(FlightGuard),
    /// Someone else is fetching: wait on this.
    Follower(watch::Receiver<()>),
}

/// Held by the request fetching a URL; dropping it wakes the waiters.
pub struct FlightGuard {
    key: Arc<str>,
    flights: Arc<Mutex<HashMap<Arc<str>, watch::Receiver<()>>>>,
    _tx: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut f) = self.flights.lock() {
            f.remove(&self.key);
        }
        // _tx drops after this: every follower's `changed()` returns.
    }
}

impl Cache {
    /// Opens the store; with a disk tier, creates its directory and indexes what a previous run
    /// left there (damaged files are deleted).
    pub fn open(model: &CacheStore, counters: CacheCounters) -> Result<Cache, String> {
        let mem = QCache::with_options(
            options(model.memory, model.max_object),
            MemWeight,
            DefaultHashBuilder::default(),
            MemLife(counters.evictions_memory.clone()),
        );
        let disk = match &model.disk {
            None => None,
            Some(d) => {
                std::fs::create_dir_all(&d.path)
                    .map_err(|e| format!("cache disk {}: {e}", d.path.display()))?;
                let index = QCache::with_options(
                    options(d.size, model.max_object),
                    DiskWeight,
                    DefaultHashBuilder::default(),
                    DiskLife(counters.evictions_disk.clone()),
                );
                let disk = Disk {
                    dir: d.path.clone(),
                    index,
                };
                let (kept, dropped) = disk.scan();
                tracing::info!(dir = %d.path.display(), kept, dropped, "cache disk tier indexed");
                Some(Arc::new(disk))
            }
        };
        Ok(Cache {
            model: model.clone(),
            mem,
            disk,
            flights: Arc::new(Mutex::new(HashMap::new())),
            epochs: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            global_epoch: AtomicU64::new(0),
            counters,
        })
    }

    /// Bytes held in memory and on disk.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.mem.weight(),
            self.disk.as_ref().map_or(0, |d| d.index.weight()),
        )
    }

    /// Finds the variant of `key` stored by `route` for a request with these headers: memory
    /// first, then disk (promoted to memory when found).
    pub async fn lookup(&self, key: &str, route: &str, req: &HeaderMap) -> Lookup {
        let mut known = false;
        if let Some(vs) = self.mem.get(key) {
            known = true;
            if let Some(e) = vs
                .iter()
                .find(|e| &*e.route == route && vary_matches(&e.vary, req))
            {
                return Lookup::Hit(e.clone());
            }
        }
        let Some(disk) = &self.disk else {
            return if known {
                Lookup::VaryMiss
            } else {
                Lookup::UriMiss
            };
        };
        let Some(dvs) = disk.index.get(key) else {
            return if known {
                Lookup::VaryMiss
            } else {
                Lookup::UriMiss
            };
        };
        let Some(dv) = dvs
            .iter()
            .find(|d| &*d.route == route && vary_matches(&d.vary, req))
            .cloned()
        else {
            return Lookup::VaryMiss;
        };
        let file = dv.file.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(&file)).await;
        let entry = match read {
            Ok(Ok(buf)) => Entry::decode(&buf).filter(|e| &*e.key == key),
            _ => None,
        };
        match entry {
            Some(e) => {
                let e = Arc::new(e);
                self.put_memory(e.clone());
                Lookup::Hit(e)
            }
            None => {
                tracing::warn!(file = %dv.file.display(), url = key, "damaged cache file dropped");
                disk.drop_variant(key, &dv.file);
                Lookup::VaryMiss
            }
        }
    }

    fn put_memory(&self, e: Arc<Entry>) {
        let mut list: Vec<Arc<Entry>> = vec![e.clone()];
        // Removed, then inserted: quick_cache reports a replaced value to the lifecycle as an
        // eviction, which would count it as one.
        if let Some((_, old)) = self.mem.remove(&*e.key) {
            list.extend(
                old.iter()
                    .filter(|o| o.vary != e.vary || o.route != e.route)
                    .cloned(),
            );
        }
        list.truncate(MAX_VARIANTS);
        self.mem.insert(e.key.clone(), list.into());
    }

    /// The purge epoch of a URL: it changes whenever the URL (or a prefix of it) is purged or
    /// invalidated. A store that began under one epoch is dropped if it ends under another, so
    /// an answer fetched before a purge cannot land after it.
    pub fn epoch(&self, key: &str) -> u64 {
        let slot = fnv1a(key.as_bytes()) as usize % self.epochs.len();
        self.epochs[slot].load(Ordering::Acquire) + self.global_epoch.load(Ordering::Acquire)
    }

    fn bump(&self, key: &str) {
        let slot = fnv1a(key.as_bytes()) as usize % self.epochs.len();
        self.epochs[slot].fetch_add(1, Ordering::AcqRel);
    }

    /// Stores an answer fetched under `epoch`: in memory now, on disk in the background; not at
    /// all when its URL was purged since.
    pub fn insert(self: &Arc<Self>, e: Entry, epoch: u64) {
        if e.body.len() as u64 > self.model.max_object || self.epoch(&e.key) != epoch {
            return;
        }
        let e = Arc::new(e);
        self.put_memory(e.clone());
        if self.disk.is_some() {
            let cache = self.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(disk) = &cache.disk {
                    disk.write(&e, || cache.epoch(&e.key) == epoch);
                }
            });
        }
    }

    /// Drops one URL with all its variants; true when anything was stored.
    pub fn purge(&self, key: &str) -> bool {
        self.bump(key);
        let m = self.mem.remove(key).is_some();
        let d = self.disk.as_ref().is_some_and(|d| d.remove(key));
        m || d
    }

    /// Drops every URL starting with `prefix`; returns how many URLs were dropped.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.global_epoch.fetch_add(1, Ordering::AcqRel);
        let dropped: Mutex<HashSet<Arc<str>>> = Mutex::new(HashSet::new());
        let note = |k: &Arc<str>| {
            if let Ok(mut d) = dropped.lock() {
                d.insert(k.clone());
            }
        };
        self.mem.retain(|k, _| {
            let hit = k.starts_with(prefix);
            if hit {
                note(k);
            }
            !hit
        });
        if let Some(disk) = &self.disk {
            let files: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
            disk.index.retain(|k, v| {
                let hit = k.starts_with(prefix);
                if hit {
                    note(k);
                    if let Ok(mut f) = files.lock() {
                        f.extend(v.iter().map(|d| d.file.clone()));
                    }
                }
                !hit
            });
            drop(DeleteFiles(files.into_inner().unwrap_or_default()));
        }
        dropped.into_inner().map(|d| d.len()).unwrap_or(0)
    }

    /// Joins or starts the one origin fetch for `key`.
    pub fn flight(&self, key: &Arc<str>) -> Flight {
        let Ok(mut f) = self.flights.lock() else {
            // A poisoned map only loses coalescing, never correctness.
            let (tx, _) = watch::channel(());
            return Flight::Leader(FlightGuard {
                key: key.clone(),
                flights: self.flights.clone(),
                _tx: tx,
            });
        };
        if let Some(rx) = f.get(key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        f.insert(key.clone(), rx);
        Flight::Leader(FlightGuard {
            key: key.clone(),
            flights: self.flights.clone(),
            _tx: tx,
        })
    }
}

impl Disk {
    fn file_for(&self, e: &Entry) -> PathBuf {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(e.key.as_bytes());
        ctx.update(b"\0");
        ctx.update(e.route.as_bytes());
        for (n, v) in &e.vary {
            ctx.update(b"\0");
            ctx.update(n.as_str().as_bytes());
            ctx.update(b"\0");
            ctx.update(v);
        }
        let d = ctx.finish();
        let name: String = d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{name}.ghc"))
    }

    /// Writes an entry (temporary file, then rename: a crash leaves the old file or the new
    /// one, never half of one) and indexes it.
    fn write(&self, e: &Entry, still_wanted: impl Fn() -> bool) {
        let file = self.file_for(e);
        let buf = e.encode();
        let tmp = self.dir.join(format!(".tmp-{:016x}", fastrand::u64(..)));
        let res = std::fs::write(&tmp, &buf).and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(err) = res {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %file.display(), error = %err, "cache disk write failed");
            return;
        }
        if !still_wanted() {
            // Purged while it was being written.
            let _ = std::fs::remove_file(&file);
            return;
        }
        self.index_variant(
            e.key.clone(),
            DiskVariant {
                file,
                size: buf.len() as u64,
                route: e.route.clone(),
                vary: e.vary.clone(),
            },
        );
    }

    fn index_variant(&self, key: Arc<str>, dv: DiskVariant) {
        let mut list = vec![dv.clone()];
        if let Some(old) = self.index.get(&key) {
            list.extend(old.iter().filter(|o| o.file != dv.file).cloned());
        }
        let extra: Vec<PathBuf> = list
            .iter()
            .skip(MAX_VARIANTS)
            .map(|d| d.file.clone())
            .collect();
        list.truncate(MAX_VARIANTS);
        // Removed, then inserted: quick_cache hands a replaced value to the lifecycle's
        // `on_evict`, which would delete the files the new list still names.
        self.index.remove(&key);
        self.index.insert(key, list.into());
        drop(DeleteFiles(extra));
    }

    fn drop_variant(&self, key: &str, file: &Path) {
        let _ = std::fs::remove_file(file);
        if let Some(old) = self.index.get(key) {
            let rest: Vec<DiskVariant> = old.iter().filter(|d| d.file != file).cloned().collect();
            self.index.remove(key);
            if !rest.is_empty() {
                self.index.insert(Arc::from(key), rest.into());
            }
        }
    }

    fn remove(&self, key: &str) -> bool {
        match self.index.remove(key) {
            Some((_, v)) => {
                drop(DeleteFiles(v.iter().map(|d| d.file.clone()).collect()));
                true
            }
            None => false,
        }
    }

    /// Indexes the directory: (files kept, files deleted as damaged or left over).
    fn scan(&self) -> (usize, usize) {
        let (mut kept, mut dropped) = (0, 0);
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        for ent in rd.flatten() {
            let path = ent.path();
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(&path);
                dropped += 1;
                continue;
            }
            if !name.ends_with(".ghc") {
                continue;
            }
            match read_head(&path) {
                Some((head, len)) if head.file_len() == Some(len) => {
                    self.index_variant(
                        head.key,
                        DiskVariant {
                            file: path,
                            size: len,
                            route: head.route,
                            vary: head.vary,
                        },
                    );
                    kept += 1;
                }
                _ => {
                    tracing::warn!(file = %path.display(), "damaged cache file dropped");
                    let _ = std::fs::remove_file(&path);
                    dropped += 1;
                }
            }
        }
        (kept, dropped)
    }
}

/// Reads a file's head (up to 1 MiB of meta) and its length on disk.
fn read_head(path: &Path) -> Option<(entry::Head, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
    f.read_exact(&mut buf).ok()?;
    Some((entry::decode_head(&buf)?, len))
}
