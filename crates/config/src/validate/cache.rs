//! `[cache]` (the store, sized from defaults when only routes ask for caching) and the per-route
//! `cache` and `compress` settings.

use std::time::Duration;

use super::{Validator, http_token};
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;
use crate::units::parse_size;

const DEFAULT_CACHE_MEMORY: u64 = 256 << 20;
const DEFAULT_MAX_OBJECT: u64 = 64 << 20;

/// The store: as configured, or the defaults when there is no `[cache]` but a route caches.
pub(super) fn cache_model(
    v: &mut Validator,
    root_path: &KeyPath,
    cache: Option<&RawCache>,
    route_models: &[Route],
) -> Option<CacheStore> {
    let any_cache = route_models.iter().any(|r| r.cache.is_some());
    match cache {
        Some(c) => Some(cache_store(v, &root_path.key("cache"), c)),
        None if any_cache => Some(CacheStore {
            memory: DEFAULT_CACHE_MEMORY,
            disk: None,
            max_object: DEFAULT_MAX_OBJECT,
        }),
        None => None,
    }
}

fn cache_store(v: &mut Validator, p: &KeyPath, raw: &RawCache) -> CacheStore {
    let memory = v
        .size(&p.key("memory"), raw.memory.as_deref())
        .unwrap_or(DEFAULT_CACHE_MEMORY);
    let max_object = v.size(&p.key("max_object"), raw.max_object.as_deref());
    if memory < 1 << 20 {
        v.at(&p.key("memory"), "must be at least 1MiB");
    }
    if let Some(m) = max_object
        && m > memory
    {
        v.at(
            &p.key("max_object"),
            format!("{m} bytes is more than `memory` ({memory} bytes)"),
        );
    }
    let disk = raw.disk.as_ref().map(|d| {
        let dp = p.key("disk");
        if d.path.is_empty() {
            v.at(&dp.key("path"), "needs a directory");
        }
        let size = v.size(&dp.key("size"), Some(&d.size)).unwrap_or(0);
        if size < 1 << 20 && parse_size(&d.size).is_ok() {
            v.at(&dp.key("size"), "must be at least 1MiB");
        }
        CacheDisk {
            path: v.path(&d.path),
            size,
        }
    });
    CacheStore {
        memory,
        disk,
        max_object: max_object.unwrap_or(DEFAULT_MAX_OBJECT.min(memory)),
    }
}

pub(super) fn route_cache(
    v: &mut Validator,
    p: &KeyPath,
    raw: &RawRouteCache,
) -> Option<RouteCache> {
    let c = RouteCache {
        default_ttl: v.duration(
            &p.key("default_ttl"),
            raw.default_ttl.as_deref(),
            Duration::ZERO,
        ),
        cookies: raw.cookies,
        lock_timeout: v.duration(
            &p.key("lock_timeout"),
            raw.lock_timeout.as_deref(),
            Duration::from_secs(5),
        ),
    };
    raw.enabled.unwrap_or(true).then_some(c)
}

pub(super) fn compress(v: &mut Validator, p: &KeyPath, raw: &RawCompress) -> Compress {
    let mut algorithms = Vec::new();
    match &raw.algorithms {
        None => algorithms = vec![Coding::Zstd, Coding::Br, Coding::Gzip],
        Some(list) => {
            if list.is_empty() {
                v.at(&p.key("algorithms"), "needs at least one of zstd, br, gzip");
            }
            for (i, a) in list.iter().enumerate() {
                let c = match a.as_str() {
                    "zstd" => Coding::Zstd,
                    "br" => Coding::Br,
                    "gzip" => Coding::Gzip,
                    other => {
                        v.at(
                            &p.key("algorithms").index(i),
                            format!("`{other}` is not one of zstd, br, gzip"),
                        );
                        continue;
                    }
                };
                if algorithms.contains(&c) {
                    v.at(
                        &p.key("algorithms").index(i),
                        format!("`{a}` is listed twice"),
                    );
                }
                algorithms.push(c);
            }
        }
    }
    let types = match &raw.types {
        None => [
            "text/*",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, t) in list.iter().enumerate() {
                let ok = t.split_once('/').is_some_and(|(a, b)| {
                    http_token(a).is_ok() && (b == "*" || http_token(b).is_ok())
                });
                if ok {
                    out.push(t.to_ascii_lowercase());
                } else {
                    v.at(
                        &p.key("types").index(i),
                        format!("`{t}` is not a media type like `text/html` or `text/*`"),
                    );
                }
            }
            out
        }
    };
    Compress {
        algorithms,
        min_size: v
            .size(&p.key("min_size"), raw.min_size.as_deref())
            .unwrap_or(1024),
        types,
    }
}
