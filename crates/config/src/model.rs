//! The validated model the program runs on. Built only by `validate`, never deserialized: every value
//! here has been checked, every default filled in, every reference between sections resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::units::Cidr;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub global: Global,
    /// Admin listener address, if any.
    pub admin: Option<SocketAddr>,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Upstreams in file order.
    pub upstreams: Vec<Upstream>,
    /// Automatic certificates.
    pub acme: Option<Acme>,
    /// The cache store; present when any route caches.
    pub cache: Option<CacheStore>,
    /// `[rate_limits.NAME]` sections, in name order (routes index into this).
    pub rate_limits: Vec<RateLimit>,
}

/// `[rate_limits.NAME]`: a GCRA limit kept per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Its name in the file.
    pub name: String,
    /// What a bucket is kept per.
    pub key: RateKey,
    /// Requests allowed per `per`.
    pub count: u64,
    /// The rate's period: 1s, 1m or 1h.
    pub per: Duration,
    /// Requests allowed at once (the bucket's depth).
    pub burst: u64,
}

/// What a rate limit keeps a bucket per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (the PROXY-declared one, or from a trusted proxy's X-Forwarded-For).
    ClientIp,
    /// A request header's value (lower-case name); absent: the empty value.
    Header(String),
    /// A cookie's value; absent: the empty value.
    Cookie(String),
    /// One bucket for the whole route.
    Route,
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStore {
    /// Bytes held in memory at most.
    pub memory: u64,
    /// Disk tier.
    pub disk: Option<CacheDisk>,
    /// Largest answer stored.
    pub max_object: u64,
}

/// The disk tier of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDisk {
    /// Directory.
    pub path: PathBuf,
    /// Bytes held on disk at most.
    pub size: u64,
}

/// A route's caching settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness when the answer gives none and is not heuristically cacheable.
    pub default_ttl: Duration,
    /// Store answers that set cookies.
    pub cookies: bool,
    /// How long concurrent misses wait for the first.
    pub lock_timeout: Duration,
}

/// Content codings gatehouse can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// RFC 8878
    Zstd,
    /// RFC 7932
    Br,
    /// RFC 1952
    Gzip,
}

impl Coding {
    /// The token in Accept-Encoding / Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// A route's compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// Codings in our order of preference.
    pub algorithms: Vec<Coding>,
    /// Smaller answers are sent as they are.
    pub min_size: u64,
    /// Media types, lowercase; "text/*" matches a whole type.
    pub types: Vec<String>,
}

/// ACME challenge types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// Answered by the https listener (RFC 8737).
    TlsAlpn01,
    /// Answered under /.well-known/acme-challenge/ on every http listener.
    Http01,
}

/// `[acme]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// Directory URL.
    pub directory: String,
    /// Contact email.
    pub email: Option<String>,
    /// Storage directory.
    pub storage: PathBuf,
    /// Extra roots for the directory.
    pub ca: Option<PathBuf>,
    /// Challenge type.
    pub challenge: AcmeChallenge,
    /// Renew this long before expiry.
    pub renew_before: Duration,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Global {
    /// Worker threads; None: number of cores.
    pub threads: Option<usize>,
    /// Time in-flight requests get after a stop signal.
    pub grace_period: Duration,
    /// Where access log lines go.
    pub access_log: AccessLog,
}

/// Access log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// One JSON line per request on standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// Listener protocol engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 + h2c.
    Http,
    /// HTTP/1.1 + HTTP/2 over TLS.
    Https,
    /// A byte pipe to an upstream.
    Tcp,
    /// TLS passthrough routed on SNI.
    Tls,
    /// Datagram flows.
    Udp,
    /// The SMTP proxy.
    Smtp,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
    /// DER OCSP response to staple.
    pub ocsp: Option<PathBuf>,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Verified when given.
    Optional,
    /// Required.
    Required,
}

/// TLS settings of an https listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificates in file order; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// Lowest TLS version: 12 or 13.
    pub min_version: u8,
    /// No matching SNI: refuse the handshake.
    pub strict_sni: bool,
    /// CAs for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// Strict-Transport-Security value.
    pub hsts: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
    /// Names obtained by ACME.
    pub acme: Vec<String>,
}

/// TLS to an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// CAs instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Name verified and sent as SNI; None: the server's host.
    pub server_name: Option<String>,
    /// SPKI SHA-256 pins (base64), replacing chain validation.
    pub pin_sha256: Vec<String>,
    /// Client certificate and key for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any certificate.
    pub dangerous_skip_verify: bool,
    /// smtp: TLS by STARTTLS after the greeting.
    pub starttls: bool,
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Its name in the file.
    pub name: String,
    /// Addresses to bind.
    pub bind: Vec<SocketAddr>,
    /// Protocol engine.
    pub protocol: ListenerProtocol,
    /// Networks whose forwarding headers are trusted.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request header block in bytes.
    pub max_header_size: usize,
    /// Time to receive request headers.
    pub client_header_timeout: Duration,
    /// Idle time between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Most concurrent connections.
    pub max_connections: Option<usize>,
    /// Most concurrent connections from one client address.
    pub max_connections_per_ip: Option<usize>,
    /// TLS, for https listeners.
    pub tls: Option<ListenerTls>,
    /// Expect a PROXY protocol header first (from trusted_proxies only).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// tcp listeners: index of the upstream used when no route matches.
    pub upstream: Option<usize>,
    /// udp listeners: flow idle timeout.
    pub udp_idle_timeout: Duration,
    /// smtp listeners: the SMTP proxy's settings.
    pub smtp: Option<SmtpListener>,
}

/// STARTTLS on an smtp listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Not offered.
    Off,
    /// Offered in the EHLO reply.
    Offer,
    /// Offered, and MAIL before it gets 530 5.7.0.
    Require,
}

/// An smtp listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpListener {
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
    /// STARTTLS policy.
    pub starttls: StartTls,
    /// Largest message in bytes (SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Domains RCPT may name (lowercase); empty: any.
    pub recipient_domains: Vec<String>,
    /// Extra verbs passed to the origin (uppercase).
    pub commands: Vec<String>,
    /// Wait before the greeting.
    pub greeting_delay: Duration,
    /// Time for the client's next command.
    pub command_timeout: Duration,
    /// Time between reads of a message's data.
    pub data_timeout: Duration,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Text.
    V1,
    /// Binary.
    V2,
    /// Either (accepting only).
    Any,
}

/// A host pattern: exact name or "*.suffix".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// "app.example.com" (lowercase).
    Exact(String),
    /// "*.example.com": stores ".example.com"; matches any deeper name.
    Wildcard(String),
}

impl HostPattern {
    /// Whether a request host (lowercase, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// What a route matches; every present field must match.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Any of these hosts.
    pub hosts: Vec<HostPattern>,
    /// Path starts with this.
    pub path_prefix: Option<String>,
    /// Any of these methods (uppercase).
    pub methods: Vec<String>,
    /// Each header present with this exact value (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Client address in any of these networks.
    pub sources: Vec<Cidr>,
    /// Local address the client connected to in any of these networks.
    pub destinations: Vec<Cidr>,
    /// SNI in any of these (tls listeners).
    pub sni: Vec<HostPattern>,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to the upstream with this index in `Config::upstreams`.
    Upstream(usize),
    /// Redirect to a template.
    Redirect {
        /// Template with {host}, {path}, {path_and_query}, {query}, {scheme}.
        to: String,
        /// 301, 302, 303, 307, 308.
        status: u16,
    },
    /// Answer directly.
    Respond {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
}

/// Header changes.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Set (replace).
    pub set: Vec<(String, String)>,
    /// Add (append).
    pub add: Vec<(String, String)>,
    /// Remove (lowercase names).
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// No changes at all.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// The fields gatehouse sets on a forwarded request (`forward_headers`): all by default.
///
/// One left out is not added. Its copy from the client still goes when the client is not a
/// trusted proxy (X-Forwarded-*, Forwarded), so no client can forge its address to the origin
/// whatever the choice; Via and X-Request-Id from the client pass as they came. `via` also
/// governs the answer's Via, and `request_id` the X-Request-Id on the answer; the access log
/// keeps a request id either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardHeaders {
    /// X-Forwarded-For.
    pub x_forwarded_for: bool,
    /// X-Forwarded-Proto.
    pub x_forwarded_proto: bool,
    /// X-Forwarded-Host.
    pub x_forwarded_host: bool,
    /// Forwarded (RFC 7239).
    pub forwarded: bool,
    /// Via, both ways.
    pub via: bool,
    /// X-Request-Id, both ways.
    pub request_id: bool,
}

impl ForwardHeaders {
    /// Every field: the default.
    pub const ALL: ForwardHeaders = ForwardHeaders {
        x_forwarded_for: true,
        x_forwarded_proto: true,
        x_forwarded_host: true,
        forwarded: true,
        via: true,
        request_id: true,
    };
    /// None of them.
    pub const NONE: ForwardHeaders = ForwardHeaders {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        x_forwarded_host: false,
        forwarded: false,
        via: false,
        request_id: false,
    };

    /// The flag of a field name as `forward_headers` spells it (lowercase).
    pub fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "x-forwarded-for" => &mut self.x_forwarded_for,
            "x-forwarded-proto" => &mut self.x_forwarded_proto,
            "x-forwarded-host" => &mut self.x_forwarded_host,
            "forwarded" => &mut self.forwarded,
            "via" => &mut self.via,
            "x-request-id" => &mut self.request_id,
            _ => return None,
        })
    }
}

impl Default for ForwardHeaders {
    fn default() -> Self {
        ForwardHeaders::ALL
    }
}

/// A route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name for metrics and logs.
    pub name: String,
    /// Indexes into `Config::listeners` that this route serves.
    pub listeners: Vec<usize>,
    /// Match conditions.
    pub matcher: RouteMatch,
    /// The action.
    pub action: RouteAction,
    /// Prefix removed from the path.
    pub strip_prefix: Option<String>,
    /// Prefix added to the path.
    pub add_prefix: Option<String>,
    /// Host header sent upstream.
    pub set_host: Option<String>,
    /// Largest request body.
    pub max_body: Option<u64>,
    /// Index into `Config::rate_limits` of the route's rate limit.
    pub rate_limit: Option<usize>,
    /// The fields gatehouse sets itself.
    pub forward_headers: ForwardHeaders,
    /// Request header changes.
    pub request_headers: HeaderOps,
    /// Response header changes.
    pub response_headers: HeaderOps,
    /// Caching, when on.
    pub cache: Option<RouteCache>,
    /// Compression, when on.
    pub compress: Option<Compress>,
}

/// A server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// As written: "127.0.0.1:9001", "[::1]:9002", "app3.internal:80".
    pub address: String,
    /// Host part without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight (>= 1).
    pub weight: u32,
    /// Backup server.
    pub backup: bool,
}

/// Balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted least in-flight requests.
    LeastConn,
    /// Power of two choices.
    RandomTwo,
    /// Consistent hash (Maglev).
    Hash,
}

/// What `hash` balancing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address.
    ClientIp,
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The request path.
    Path,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path for GET.
    pub path: String,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Successes to go up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Inclusive status range of success.
    pub expect: (u16, u16),
    /// Host header.
    pub host: Option<String>,
    /// Only open a TCP connection (no HTTP request).
    pub tcp_only: bool,
}

/// Passive ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    /// Consecutive failures.
    pub fall: u32,
    /// Time out of rotation.
    pub cooldown: Duration,
}

/// Upstream protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 cleartext, prior knowledge.
    H2c,
    /// HTTP/2 over TLS.
    H2,
    /// SMTP.
    Smtp,
}

/// How an smtp upstream learns the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// It does not (or by `proxy_protocol` / `source_address`).
    None,
    /// XCLIENT after each EHLO (Postfix `smtpd_authorized_xclient_hosts`).
    Xclient,
}

/// An upstream: a pool of servers.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name in the file.
    pub name: String,
    /// Servers in file order.
    pub servers: Vec<Server>,
    /// Algorithm.
    pub balance: Balance,
    /// For `Hash`.
    pub hash_key: HashKey,
    /// Sticky cookie name.
    pub sticky_cookie: Option<String>,
    /// Active checks.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection.
    pub passive: Option<Passive>,
    /// Extra tries.
    pub retries: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub response_timeout: Duration,
    /// Pooled connection idle time.
    pub idle_timeout: Duration,
    /// Protocol to the servers.
    pub protocol: UpstreamProtocol,
    /// TLS to the servers.
    pub tls: Option<UpstreamTls>,
    /// PROXY header sent on each new connection (such connections are never pooled).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Local address of connections to the servers.
    pub source_address: Option<SourceAddress>,
    /// smtp: how the origin learns the client's address.
    pub client_address: ClientAddress,
}

/// Where connections to servers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAddress {
    /// The client's own address (IP_TRANSPARENT; such connections are never pooled).
    Client,
    /// A fixed local address.
    Fixed(std::net::IpAddr),
}
