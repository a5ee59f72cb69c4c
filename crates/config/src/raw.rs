//! The file format, exactly as written: serde structs that reject unknown keys. Nothing at run time
//! reads these; `validate` turns them into the model. Values with a syntax of their own (durations,
//! sizes, CIDRs) stay strings here so that `validate` can report each bad one with its key path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Process-wide settings.
    #[serde(default)]
    pub global: RawGlobal,
    /// The admin listener (metrics, status, reload). Absent: none.
    pub admin: Option<RawAdmin>,
    /// Listeners by name.
    #[serde(default)]
    pub listeners: BTreeMap<String, RawListener>,
    /// Routes, tried in order; the first match serves.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Upstreams (server pools) by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Automatic certificates.
    pub acme: Option<RawAcme>,
    /// The HTTP cache store shared by every route that caches.
    pub cache: Option<RawCache>,
    /// Request rate limits by name; a route names one with `rate_limit`.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RawRateLimit>,
}

/// `[rate_limits.NAME]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What a bucket is kept per: "client_ip" | "header:NAME" | "cookie:NAME" | "route".
    pub key: String,
    /// The sustained rate: "N/s", "N/m" or "N/h".
    pub rate: String,
    /// Requests allowed at once above the rate. Default: the rate's count per second, at least 1.
    pub burst: Option<u64>,
}

/// `[cache]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bound on bytes held in memory. Default "256MiB".
    pub memory: Option<String>,
    /// Optional second tier on disk; survives restarts.
    pub disk: Option<RawCacheDisk>,
    /// Larger answers are passed through, not stored. Default "64MiB" (at most `memory`).
    pub max_object: Option<String>,
}

/// `disk = { path, size }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCacheDisk {
    /// Directory of the disk tier (created when missing).
    pub path: String,
    /// Bound on bytes held on disk.
    pub size: String,
}

/// A route's `cache = { ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    /// Cache this route's answers. Default true when the table is present.
    pub enabled: Option<bool>,
    /// Freshness of answers that give none and are not heuristically cacheable. Default "0s".
    pub default_ttl: Option<String>,
    /// Store answers that set cookies. Default false.
    #[serde(default)]
    pub cookies: bool,
    /// How long concurrent misses for one key wait for the first. Default "5s".
    pub lock_timeout: Option<String>,
}

/// A route's `compress = { ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCompress {
    /// Encodings offered, in our order of preference: "zstd", "br", "gzip". Default all three.
    pub algorithms: Option<Vec<String>>,
    /// Smaller answers are sent as they are. Default "1KiB".
    pub min_size: Option<String>,
    /// Media types to compress; "text/*" matches a whole type. Default: text/*,
    /// application/json, application/javascript, application/xml, image/svg+xml.
    pub types: Option<Vec<String>>,
}

/// `[acme]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// Directory URL of the ACME server.
    pub directory: String,
    /// Contact address for the account.
    pub email: Option<String>,
    /// Directory for the account key, certificates and keys.
    pub storage: String,
    /// PEM file of extra roots to trust for the directory (test CAs).
    pub ca: Option<String>,
    /// "tls-alpn-01" | "http-01". Default "tls-alpn-01".
    pub challenge: Option<String>,
    /// Renew this long before expiry. Default "30d".
    pub renew_before: Option<String>,
}

/// `[global]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    /// Worker threads; default: the number of cores.
    pub threads: Option<usize>,
    /// How long in-flight requests may run on after a stop signal. Default "30s".
    pub grace_period: Option<String>,
    /// "off" | "stdout" | a file path. Default "stdout".
    pub access_log: Option<String>,
}

/// `[admin]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener, e.g. "127.0.0.1:9901".
    pub bind: String,
}

/// One address or a list of them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "an address string or a list of address strings")]
pub enum OneOrMany {
    /// "0.0.0.0:8080"
    One(String),
    /// ["0.0.0.0:8080", "[::]:8080"]
    Many(Vec<String>),
}

impl OneOrMany {
    /// The addresses as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A listener's protocol engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawListenerProtocol {
    /// HTTP/1.1 and HTTP/2 by prior knowledge (h2c).
    #[default]
    Http,
    /// HTTP/1.1 and HTTP/2 over TLS (ALPN).
    Https,
    /// A byte pipe to an upstream.
    Tcp,
    /// TLS passthrough: route on the ClientHello's SNI, pass the bytes on untouched.
    Tls,
    /// Datagram flows keyed by client address and port.
    Udp,
    /// An SMTP application proxy in front of a mail server.
    Smtp,
}

/// `[listeners.NAME]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Addresses to listen on.
    pub bind: OneOrMany,
    /// Protocol engine; default "http".
    #[serde(default)]
    pub protocol: RawListenerProtocol,
    /// Clients whose X-Forwarded-For / Forwarded headers are trusted and appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest request header block; larger answers 431. Default "64KiB".
    pub max_header_size: Option<String>,
    /// Time a client has to send its request headers; then 408. Default "10s".
    pub client_header_timeout: Option<String>,
    /// Idle time allowed between requests on a client keep-alive connection. Default "60s".
    pub keepalive_timeout: Option<String>,
    /// Most concurrent client connections; more wait in the kernel's backlog. Default: no limit.
    pub max_connections: Option<usize>,
    /// Most concurrent connections from one client address; past it a new one is closed at
    /// accept. Default: no limit.
    pub max_connections_per_ip: Option<usize>,
    /// ALPN protocols offered on https listeners. Default ["h2", "http/1.1"].
    pub alpn: Option<Vec<String>>,
    /// Expect a PROXY protocol header first: "v1" | "v2" | "any"; only from trusted_proxies.
    pub proxy_protocol: Option<String>,
    /// tcp listeners: the upstream when no route matches.
    pub upstream: Option<String>,
    /// udp listeners: a flow without a datagram either way for this long ends. Default "30s".
    pub udp_idle_timeout: Option<String>,
    /// TLS settings of an https listener (and the certificates of an smtp listener's STARTTLS).
    pub tls: Option<RawListenerTls>,
    /// smtp listeners: the SMTP proxy's settings.
    pub smtp: Option<RawSmtp>,
}

/// `[listeners.NAME.smtp]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    /// Name in the 220 greeting and the EHLO reply. Default: the machine's host name.
    pub hostname: Option<String>,
    /// "offer" | "require" | "off". Default "offer" when `tls` is set, else "off".
    pub starttls: Option<String>,
    /// Advertised as SIZE and enforced while DATA streams. Default "25MiB".
    pub max_message_size: Option<String>,
    /// Recipients per transaction; the one past it gets 452 4.5.3. Default 100.
    pub max_recipients: Option<usize>,
    /// Relay control: RCPT outside these domains gets 550 5.7.1. Empty: any. Default empty.
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    /// Extra verbs passed to the origin: VRFY, EXPN. Never XCLIENT or XFORWARD.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Wait before the 220; a client that talks first gets 554. Default "0s".
    pub greeting_delay: Option<String>,
    /// Time a client may take for its next command (RFC 5321 §4.5.3.2: 5 minutes). Default "5m".
    pub command_timeout: Option<String>,
    /// Time a client may take between two reads of a message's data. Default "3m".
    pub data_timeout: Option<String>,
}

/// `{ cert, key, ocsp }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file: the certificate, then its chain.
    pub cert: String,
    /// PEM file: the private key (PKCS#8, SEC1 or RSA).
    pub key: String,
    /// DER file: an OCSP response to staple.
    pub ocsp: Option<String>,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawClientAuth {
    /// No client certificates asked for.
    #[default]
    None,
    /// Asked for; verified when given.
    Optional,
    /// Required and verified.
    Required,
}

/// `tls` of an https listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificates; SNI picks among them.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// "1.2" | "1.3". Default "1.2".
    pub min_version: Option<String>,
    /// Refuse handshakes whose SNI matches no certificate. Default false.
    #[serde(default)]
    pub strict_sni: bool,
    /// PEM file of CAs that sign client certificates.
    pub client_ca: Option<String>,
    /// "none" | "optional" | "required". Default "none".
    #[serde(default)]
    pub client_auth: RawClientAuth,
    /// Strict-Transport-Security value added to every answer.
    pub hsts: Option<String>,
    /// Names to obtain by ACME (needs `[acme]`).
    #[serde(default)]
    pub acme: Vec<String>,
}

/// `tls` of an upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of CAs to trust instead of the system roots.
    pub ca: Option<String>,
    /// Name to verify (and send as SNI). Default: the server's host.
    pub server_name: Option<String>,
    /// Base64 SHA-256 hashes of trusted SubjectPublicKeyInfo: replaces chain validation.
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    /// PEM client certificate for mTLS to the origin.
    pub client_cert: Option<String>,
    /// PEM key of `client_cert`.
    pub client_key: Option<String>,
    /// Accept any certificate. Loudly logged.
    #[serde(default)]
    pub dangerous_skip_verify: bool,
    /// smtp upstreams: TLS by STARTTLS after the origin's greeting (else TLS from the start).
    #[serde(default)]
    pub starttls: bool,
}

/// `redirect = { to, status }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// Target; `{host}`, `{path}`, `{path_and_query}`, `{query}` and `{scheme}` are replaced.
    pub to: String,
    /// 301, 302, 303, 307 or 308. Default 302.
    pub status: Option<u16>,
}

/// `respond = { status, body }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    /// Status code of the answer.
    pub status: u16,
    /// Body of the answer (text/plain). Default: empty.
    #[serde(default)]
    pub body: String,
}

/// `request_headers` / `response_headers`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    /// Headers to set (replacing any with the same name).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to add (keeping existing ones).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Header names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `[[routes]]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A name for metrics and logs. Default "route<N>" (N counts from 0 in file order).
    pub name: Option<String>,
    /// Listeners this route serves. Default: every http/https listener.
    pub listeners: Option<Vec<String>>,
    /// Host names; "*.example.com" matches any deeper name.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix to match.
    pub path_prefix: Option<String>,
    /// Methods to match.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client networks (a "zone").
    #[serde(default)]
    pub sources: Vec<String>,
    /// Local addresses the client connected to.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// tls listeners: server names from the ClientHello; "*.example.com" matches deeper names.
    #[serde(default)]
    pub sni: Vec<String>,
    /// Action: forward to this upstream.
    pub upstream: Option<String>,
    /// Action: redirect.
    pub redirect: Option<RawRedirect>,
    /// Action: answer directly.
    pub respond: Option<RawRespond>,
    /// Remove this prefix from the path before forwarding.
    pub strip_prefix: Option<String>,
    /// Add this prefix to the path before forwarding (after strip_prefix).
    pub add_prefix: Option<String>,
    /// Host header sent upstream instead of the client's.
    pub set_host: Option<String>,
    /// Largest request body; larger answers 413. Default: no limit.
    pub max_body: Option<String>,
    /// The `[rate_limits.NAME]` that limits this route's requests (429). Default: none.
    pub rate_limit: Option<String>,
    /// Fields gatehouse itself sets on the way: any of "x-forwarded-for", "x-forwarded-proto",
    /// "x-forwarded-host", "forwarded", "via", "x-request-id". Default: all six.
    pub forward_headers: Option<Vec<String>>,
    /// Header changes on the request sent upstream.
    #[serde(default)]
    pub request_headers: RawHeaderOps,
    /// Header changes on the response sent to the client.
    #[serde(default)]
    pub response_headers: RawHeaderOps,
    /// HTTP caching of this route's answers (RFC 9111).
    pub cache: Option<RawRouteCache>,
    /// Compression of this route's answers.
    pub compress: Option<RawCompress>,
}

/// A server: "host:port" or `{ address, weight, backup }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a server address string or a table { address, weight, backup }"
)]
pub enum RawServer {
    /// "127.0.0.1:9001"
    Address(String),
    /// { address = "[::1]:9002", weight = 3 }
    Full(RawServerFull),
}

/// `{ address, weight, backup }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServerFull {
    /// "host:port", "[v6]:port".
    pub address: String,
    /// Relative weight; default 1.
    pub weight: Option<u32>,
    /// Gets traffic only when no primary server is up.
    #[serde(default)]
    pub backup: bool,
}

/// Balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    /// Smooth weighted round robin, process-wide.
    #[default]
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Power of two random choices.
    RandomTwo,
    /// Consistent hash (Maglev) on `hash_key`.
    Hash,
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawUpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext by prior knowledge (gRPC origins).
    H2c,
    /// HTTP/2 over TLS (needs `tls`).
    H2,
    /// SMTP (the origin of smtp listeners).
    Smtp,
}

/// `sticky = { cookie }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Cookie name.
    pub cookie: String,
}

/// `health_check = { ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path requested by GET. Default "/".
    pub path: Option<String>,
    /// Time between checks. Default "2s".
    pub interval: Option<String>,
    /// Time a check may take. Default "1s".
    pub timeout: Option<String>,
    /// Successes to come back up. Default 2.
    pub rise: Option<u32>,
    /// Failures to go down. Default 3.
    pub fall: Option<u32>,
    /// Status range that counts as success. Default "200-399".
    pub expect: Option<String>,
    /// Host header of the check. Default: the server's address.
    pub host: Option<String>,
    /// "http" (GET `path`, status in `expect`) or "tcp" (a connection opens). Default "http".
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `passive = { fall, cooldown }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    /// Consecutive connect errors or 5xx that take a server out. Default 3.
    pub fall: Option<u32>,
    /// How long it stays out. Default "10s".
    pub cooldown: Option<String>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The servers.
    pub servers: Vec<RawServer>,
    /// Balancing algorithm. Default "round_robin".
    #[serde(default)]
    pub balance: RawBalance,
    /// For `hash`: "client_ip" | "header:NAME" | "cookie:NAME" | "path". Default "client_ip".
    pub hash_key: Option<String>,
    /// Cookie affinity on top of any balance.
    pub sticky: Option<RawSticky>,
    /// Active health checks. Absent: none.
    pub health_check: Option<RawHealthCheck>,
    /// Passive ejection on errors. Absent: none.
    pub passive: Option<RawPassive>,
    /// Extra tries on another server after a connect error or reset. Default 2.
    pub retries: Option<u32>,
    /// Default "2s".
    pub connect_timeout: Option<String>,
    /// Time to the response headers. Default "30s".
    pub response_timeout: Option<String>,
    /// How long a pooled connection may stay idle. Default "60s".
    pub idle_timeout: Option<String>,
    /// "http1" | "h2c" | "h2". Default "http1".
    #[serde(default)]
    pub protocol: RawUpstreamProtocol,
    /// TLS to the servers. Absent: cleartext.
    pub tls: Option<RawUpstreamTls>,
    /// Send a PROXY protocol header on each new connection: "v1" | "v2".
    pub proxy_protocol: Option<String>,
    /// Local address of connections to the servers: "client" (transparent) or an IP address.
    pub source_address: Option<String>,
    /// smtp upstreams: how the origin learns the client's address: "xclient" | "none".
    /// Default "none" (a PROXY header instead: `proxy_protocol`).
    pub client_address: Option<String>,
}
