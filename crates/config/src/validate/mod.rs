//! raw -> model. Each section is deserialized on its own so that one bad listener does not hide the
//! errors of the next; then every value is checked and every reference resolved, and every problem
//! is collected with its key path. Nothing here stops at the first error.
//!
//! This module holds the entry point, the error collector and the checks every section shares; each
//! section's checks live in a submodule of their own.

mod cache;
mod global;
mod limits;
mod listeners;
mod routes;
mod smtp;
mod tls;
mod upstreams;

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::ConfigError;
use crate::locate::{KeyPath, line_col, path_at, span_of};
use crate::model::*;
use crate::raw::*;
use crate::units::{Cidr, parse_duration, parse_size};

struct Pending {
    span: Option<Range<usize>>,
    path: Option<KeyPath>,
    message: String,
}

struct Validator {
    errors: Vec<Pending>,
    /// Directory of the config file: relative paths in it are relative to this.
    base: PathBuf,
}

impl Validator {
    fn path(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(Pending {
            span: None,
            path: Some(path.clone()),
            message: message.into(),
        });
    }

    fn de<T: DeserializeOwned>(&mut self, v: &Spanned<DeValue<'_>>) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(Pending {
                    span: Some(e.span().unwrap_or_else(|| v.span())),
                    path: None,
                    message: e.message().to_string(),
                });
                None
            }
        }
    }

    fn duration(&mut self, path: &KeyPath, v: Option<&str>, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.at(path, e);
                default
            }
        }
    }

    fn size(&mut self, path: &KeyPath, v: Option<&str>) -> Option<u64> {
        match v.map(parse_size) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                self.at(path, e);
                None
            }
        }
    }

    fn cidrs(&mut self, path: &KeyPath, v: &[String]) -> Vec<Cidr> {
        let mut out = Vec::new();
        for (i, s) in v.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => out.push(c),
                Err(e) => self.at(&path.index(i), e),
            }
        }
        out
    }

    fn header_ops(&mut self, path: &KeyPath, raw: &RawHeaderOps) -> HeaderOps {
        let mut ops = HeaderOps::default();
        for (kind, map, out) in [
            ("set", &raw.set, &mut ops.set),
            ("add", &raw.add, &mut ops.add),
        ] {
            for (k, v) in map {
                let p = path.key(kind).key(k);
                if http_token(k).is_err() {
                    self.at(&p, format!("`{k}` is not a valid header name"));
                } else if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    self.at(&p, "header value holds CR, LF or NUL");
                } else {
                    out.push((k.to_ascii_lowercase(), v.clone()));
                }
            }
        }
        for (i, k) in raw.remove.iter().enumerate() {
            if http_token(k).is_err() {
                self.at(
                    &path.key("remove").index(i),
                    format!("`{k}` is not a valid header name"),
                );
            } else {
                ops.remove.push(k.to_ascii_lowercase());
            }
        }
        ops
    }
}

/// RFC 9110 §5.6.2 token.
fn http_token(s: &str) -> Result<(), ()> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(()) }
}

const SECTIONS: &str = "global, admin, listeners, routes, upstreams, acme, cache, rate_limits";

pub(crate) fn parse_and_validate(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let (table, syntax) = DeTable::parse_recoverable(text);
    let locate = |span: Range<usize>, path: String, message: String| {
        let (line, col) = line_col(text, span.start);
        ConfigError {
            file: file.to_string(),
            line,
            col,
            path,
            message,
        }
    };
    if !syntax.is_empty() {
        return Err(syntax
            .into_iter()
            .map(|e| {
                let msg = e.message().trim().to_string();
                locate(e.span().unwrap_or(0..0), String::new(), msg)
            })
            .collect());
    }
    let span = table.span();
    let root = Spanned::new(span, DeValue::Table(table.into_inner()));
    let base = std::path::Path::new(file)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut v = Validator {
        errors: Vec::new(),
        base,
    };
    let config = validate(&mut v, &root);
    if v.errors.is_empty()
        && let Some(c) = config
    {
        return Ok(c);
    }
    let mut out: Vec<ConfigError> = v
        .errors
        .into_iter()
        .map(|p| {
            let (span, path) = match (p.span, p.path) {
                (Some(s), Some(p)) => (s, p),
                (Some(s), None) => {
                    let path = path_at(&root, s.start);
                    (s, path)
                }
                (None, Some(p)) => (span_of(&root, &p), p),
                (None, None) => (0..0, KeyPath::default()),
            };
            locate(span, path.to_string(), p.message)
        })
        .collect();
    out.sort_by_key(|e| (e.line, e.col));
    out.dedup();
    Err(out)
}

fn validate(v: &mut Validator, root: &Spanned<DeValue<'_>>) -> Option<Config> {
    let DeValue::Table(top) = root.get_ref() else {
        return None;
    };
    let mut global = RawGlobal::default();
    let mut admin: Option<RawAdmin> = None;
    let mut listeners: Vec<(String, Option<RawListener>)> = Vec::new();
    let mut routes: Vec<Option<RawRoute>> = Vec::new();
    let mut acme: Option<RawAcme> = None;
    let mut cache: Option<RawCache> = None;
    let mut upstreams: Vec<(String, Option<RawUpstream>)> = Vec::new();
    let mut rate_limits: Vec<(String, Option<RawRateLimit>)> = Vec::new();
    for (key, val) in top.iter() {
        let path = KeyPath::default().key(key.get_ref());
        match key.get_ref().as_ref() {
            "global" => global = v.de(val).unwrap_or_default(),
            "admin" => admin = v.de(val),
            "acme" => acme = v.de(val),
            "cache" => cache = v.de(val),
            "listeners" | "upstreams" | "rate_limits" => {
                let Some(t) = val.get_ref().as_table() else {
                    v.at(&path, "expected a table of named entries");
                    continue;
                };
                for (name, entry) in t.iter() {
                    let name = name.get_ref().to_string();
                    match key.get_ref().as_ref() {
                        "listeners" => listeners.push((name, v.de(entry))),
                        "upstreams" => upstreams.push((name, v.de(entry))),
                        _ => rate_limits.push((name, v.de(entry))),
                    }
                }
            }
            "routes" => {
                let Some(a) = val.get_ref().as_array() else {
                    v.at(&path, "expected an array of tables ([[routes]])");
                    continue;
                };
                for entry in a.iter() {
                    routes.push(v.de(entry));
                }
            }
            other => v.at(
                &path,
                format!("unknown section `{other}`, expected one of {SECTIONS}"),
            ),
        }
    }

    let root_path = KeyPath::default();
    let global_model = global::global(v, &root_path, &global);
    let admin_model = global::admin(v, &root_path, admin);
    let mut listener_models = listeners::listeners(v, &root_path, &listeners, admin_model);
    let upstream_models = upstreams::upstreams(v, &root_path, &upstreams);
    listeners::listener_upstreams(v, &root_path, &listeners, &mut listener_models, &upstreams);
    let rate_limit_models = limits::rate_limits(v, &root_path, &rate_limits);
    let route_models = routes::routes(v, &root_path, &routes, &listeners, &upstreams, &rate_limits);
    let acme_model = global::acme(v, &root_path, acme);
    global::acme_listeners(v, &root_path, acme_model.as_ref(), &listener_models);
    let cache_model = cache::cache_model(v, &root_path, cache.as_ref(), &route_models);
    Some(Config {
        cache: cache_model,
        acme: acme_model,
        global: global_model,
        admin: admin_model,
        listeners: listener_models,
        routes: route_models,
        upstreams: upstream_models.into_iter().collect::<Option<Vec<_>>>()?,
        rate_limits: rate_limit_models?,
    })
}
