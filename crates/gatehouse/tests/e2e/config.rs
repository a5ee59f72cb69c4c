//! Config text for end-to-end tests, built from the shapes tests repeat (a listener, a route, an
//! upstream) instead of TOML copied into every test. It writes the same TOML a person would;
//! the rare keys go in as TOML lines with `.raw(…)`.
//!
//! ```ignore
//! let cfg = Config::web()
//!     .route(Route::to("app").path_prefix("/api/"))
//!     .upstream("app", Upstream::servers([origin.addr]).raw("retries = 1"))
//!     .toml();
//! ```

#![allow(dead_code)]

use std::fmt::{self, Display};

/// A TOML basic string: `s` in double quotes.
pub fn quoted(s: impl Display) -> String {
    let s = s.to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A TOML array of strings.
fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

/// Adds `line` to a table's lines, unless it is empty (a test's "no extra keys").
fn push_line(lines: &mut Vec<String>, line: String) {
    if !line.is_empty() {
        lines.push(line);
    }
}

/// Puts `value` under `name`: in the place of the entry of that name, else last.
fn set<T>(entries: &mut Vec<(String, T)>, name: &str, value: T) {
    match entries.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = value,
        None => entries.push((name.to_string(), value)),
    }
}

/// A whole config file: `[global]`, `[admin]`, `[cache]`, listeners, routes and upstreams, in
/// the order they were added, then the raw tables.
#[derive(Debug, Clone, Default)]
pub struct Config {
    global: Vec<String>,
    admin: bool,
    cache: Vec<String>,
    listeners: Vec<(String, Listener)>,
    routes: Vec<Route>,
    upstreams: Vec<(String, Upstream)>,
    raw: Vec<String>,
}

impl Config {
    /// A config with `access_log = "off"`: tests that read the log set `access_log` themselves.
    pub fn new() -> Config {
        Config::empty().global(r#"access_log = "off""#)
    }

    /// [`Config::new`] with an http listener named `web` on an ephemeral loopback port, the one
    /// `common::web` finds.
    pub fn web() -> Config {
        Config::new().listener("web", Listener::http())
    }

    /// [`Config::web`] with one route, to the upstream `app` that `u` describes: the shape
    /// most tests need.
    pub fn web_to(u: Upstream) -> Config {
        Config::web().route(Route::to("app")).upstream("app", u)
    }

    /// Nothing at all, not even `[global]` (so the access log goes where it goes by default).
    pub fn empty() -> Config {
        Config::default()
    }

    /// A `key = value` line in `[global]`; one for a key already there replaces it.
    pub fn global(mut self, line: impl Into<String>) -> Config {
        let line = line.into();
        let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_string();
        match self.global.iter_mut().find(|l| key(l) == key(&line)) {
            Some(l) => *l = line,
            None => self.global.push(line),
        }
        self
    }

    /// An `[admin]` listener on an ephemeral loopback port.
    pub fn admin(mut self) -> Config {
        self.admin = true;
        self
    }

    /// A `key = value` line in `[cache]` (the store; a route caches with its own `cache` key).
    pub fn cache(mut self, line: impl Into<String>) -> Config {
        self.cache.push(line.into());
        self
    }

    /// A listener; one already there with that name is replaced.
    pub fn listener(mut self, name: &str, l: Listener) -> Config {
        set(&mut self.listeners, name, l);
        self
    }

    /// A route after the ones already added (the first that matches wins).
    pub fn route(mut self, r: Route) -> Config {
        self.routes.push(r);
        self
    }

    /// An upstream; one already there with that name is replaced.
    pub fn upstream(mut self, name: &str, u: Upstream) -> Config {
        set(&mut self.upstreams, name, u);
        self
    }

    /// TOML text written after everything else, as it is: whole tables such as `[acme]`.
    pub fn raw(mut self, text: impl Into<String>) -> Config {
        self.raw.push(text.into());
        self
    }

    /// The config file's text.
    pub fn toml(&self) -> String {
        self.to_string()
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = |f: &mut fmt::Formatter<'_>, head: &str, lines: &[String]| {
            writeln!(f, "{head}")?;
            lines.iter().try_for_each(|l| writeln!(f, "{l}"))
        };
        if !self.global.is_empty() {
            table(f, "[global]", &self.global)?;
        }
        if self.admin {
            writeln!(f, "[admin]\nbind = \"127.0.0.1:0\"")?;
        }
        if !self.cache.is_empty() {
            table(f, "[cache]", &self.cache)?;
        }
        for (name, l) in &self.listeners {
            table(f, &format!("[listeners.{name}]"), &l.lines)?;
        }
        for r in &self.routes {
            table(f, "[[routes]]", &r.lines)?;
        }
        for (name, u) in &self.upstreams {
            writeln!(f, "[upstreams.{name}]")?;
            writeln!(f, "servers = [{}]", u.servers.join(", "))?;
            u.lines.iter().try_for_each(|l| writeln!(f, "{l}"))?;
        }
        self.raw.iter().try_for_each(|t| writeln!(f, "{t}"))
    }
}

/// One `[listeners.NAME]` table.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `bind = …` first, always.
    lines: Vec<String>,
}

impl Listener {
    /// HTTP on an ephemeral loopback port.
    pub fn http() -> Listener {
        Listener {
            lines: vec![r#"bind = "127.0.0.1:0""#.to_string()],
        }
    }

    /// HTTPS (give it a `tls = …` line with [`Listener::raw`]).
    pub fn https() -> Listener {
        Listener::http().raw(r#"protocol = "https""#)
    }

    /// A TCP byte pipe to `upstream` unless a route says otherwise.
    pub fn tcp(upstream: &str) -> Listener {
        Listener::l4("tcp", upstream)
    }

    /// TLS passed through untouched, routed on SNI, to `upstream` by default.
    pub fn tls(upstream: &str) -> Listener {
        Listener::l4("tls", upstream)
    }

    /// UDP flows to `upstream`.
    pub fn udp(upstream: &str) -> Listener {
        Listener::l4("udp", upstream)
    }

    fn l4(protocol: &str, upstream: &str) -> Listener {
        Listener::http()
            .raw(format!("protocol = {}", quoted(protocol)))
            .raw(format!("upstream = {}", quoted(upstream)))
    }

    /// Binds `addr` (an address or `host:port` text) instead of an ephemeral port.
    pub fn bind(mut self, addr: impl Display) -> Listener {
        self.lines[0] = format!("bind = {}", quoted(addr));
        self
    }

    /// Binds every address in `addrs`.
    pub fn binds<T: Display>(mut self, addrs: impl IntoIterator<Item = T>) -> Listener {
        self.lines[0] = format!("bind = {}", list(addrs));
        self
    }

    /// Expects a PROXY header (`v1`, `v2` or `any`) from loopback peers, trusted for it.
    pub fn proxy_protocol_from_loopback(self, version: &str) -> Listener {
        self.raw(format!("proxy_protocol = {}", quoted(version)))
            .raw(r#"trusted_proxies = ["127.0.0.0/8"]"#)
    }

    /// Binds `127.0.0.1:port`.
    pub fn port(self, port: u16) -> Listener {
        self.bind(format!("127.0.0.1:{port}"))
    }

    /// A `key = value` line of the listener's.
    pub fn raw(mut self, line: impl Into<String>) -> Listener {
        push_line(&mut self.lines, line.into());
        self
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Default)]
pub struct Route {
    lines: Vec<String>,
}

impl Route {
    /// A route that matches everything and has no action yet.
    pub fn new() -> Route {
        Route::default()
    }

    /// A route to `upstream`.
    pub fn to(upstream: &str) -> Route {
        Route::new().upstream(upstream)
    }

    /// A route answering `status` with `body` itself.
    pub fn respond(status: u16, body: &str) -> Route {
        Route::new().raw(format!(
            "respond = {{ status = {status}, body = {} }}",
            quoted(body)
        ))
    }

    /// The name metrics and the access log give the route.
    pub fn name(self, name: &str) -> Route {
        self.raw(format!("name = {}", quoted(name)))
    }

    pub fn upstream(self, name: &str) -> Route {
        self.raw(format!("upstream = {}", quoted(name)))
    }

    pub fn hosts<T: Display>(self, hosts: impl IntoIterator<Item = T>) -> Route {
        self.raw(format!("hosts = {}", list(hosts)))
    }

    pub fn path_prefix(self, prefix: &str) -> Route {
        self.raw(format!("path_prefix = {}", quoted(prefix)))
    }

    /// Only connections to these listeners.
    pub fn listeners<T: Display>(self, names: impl IntoIterator<Item = T>) -> Route {
        self.raw(format!("listeners = {}", list(names)))
    }

    /// A `key = value` line of the route's.
    pub fn raw(mut self, line: impl Into<String>) -> Route {
        push_line(&mut self.lines, line.into());
        self
    }
}

/// One `[upstreams.NAME]` table.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    servers: Vec<String>,
    lines: Vec<String>,
}

impl Upstream {
    /// An upstream of these servers (socket addresses or `host:port` text).
    pub fn servers<T: Display>(addrs: impl IntoIterator<Item = T>) -> Upstream {
        Upstream::default().and(addrs)
    }

    /// More servers.
    pub fn and<T: Display>(mut self, addrs: impl IntoIterator<Item = T>) -> Upstream {
        self.servers.extend(addrs.into_iter().map(quoted));
        self
    }

    /// One more server with keys of its own: `server_with(addr, "weight = 3")`.
    pub fn server_with(mut self, addr: impl Display, keys: &str) -> Upstream {
        self.servers
            .push(format!("{{ address = {}, {keys} }}", quoted(addr)));
        self
    }

    /// A backup server: used only when no other is up.
    pub fn backup(self, addr: impl Display) -> Upstream {
        self.server_with(addr, "backup = true")
    }

    /// The balancing algorithm (`least_conn`, `random_two`, `hash`, …).
    pub fn balance(self, algorithm: &str) -> Upstream {
        self.raw(format!("balance = {}", quoted(algorithm)))
    }

    /// A `key = value` line of the upstream's.
    pub fn raw(mut self, line: impl Into<String>) -> Upstream {
        push_line(&mut self.lines, line.into());
        self
    }
}
