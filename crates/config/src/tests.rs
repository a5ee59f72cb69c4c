use super::*;
use crate::model::*;

const FULL: &str = r#"
[global]
threads = 2
grace_period = "30s"
access_log = "stdout"

[admin]
bind = "127.0.0.1:9901"

[listeners.web]
bind = ["0.0.0.0:8080", "[::]:8080"]
protocol = "http"
trusted_proxies = ["10.0.0.0/8"]
max_header_size = "64KiB"

[[routes]]
listeners = ["web"]
hosts = ["app.example.com", "*.example.com"]
path_prefix = "/api/"
methods = ["GET", "POST"]
headers = { "x-canary" = "1" }
sources = ["192.0.2.0/24"]
upstream = "app"
strip_prefix = "/api"
add_prefix = "/v1"
set_host = "app.internal"
max_body = "10MiB"
request_headers  = { set = { "x-env" = "prod" }, remove = ["x-debug"] }
response_headers = { set = { "x-frame-options" = "DENY" }, remove = ["server", "x-powered-by"] }

[[routes]]
redirect = { to = "https://{host}{path_and_query}", status = 301 }

[[routes]]
respond  = { status = 503, body = "down for maintenance" }

[upstreams.app]
servers = ["127.0.0.1:9001", { address = "[::1]:9002", weight = 3 }, { address = "app3.internal:80", backup = true }]
balance = "round_robin"
hash_key = "client_ip"
sticky = { cookie = "GH_SRV" }
health_check = { path = "/healthz", interval = "2s", timeout = "1s", rise = 2, fall = 2, expect = "200-399" }
passive = { fall = 3, cooldown = "10s" }
retries = 2
connect_timeout = "2s"
response_timeout = "30s"
idle_timeout = "60s"
protocol = "http1"
"#;

#[test]
fn the_contract_example_parses() {
    // hash_key with round_robin is reported: the contract example lists every key, so drop that one.
    let text = FULL.replace("hash_key = \"client_ip\"\n", "");
    let c = parse(&text, "full.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.global.threads, Some(2));
    assert_eq!(c.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(c.listeners[0].bind.len(), 2);
    assert_eq!(c.listeners[0].max_header_size, 65536);
    assert_eq!(c.routes.len(), 3);
    let r = &c.routes[0];
    assert_eq!(r.max_body, Some(10 << 20));
    assert!(r.matcher.hosts[1].matches("a.b.example.com"));
    assert!(!r.matcher.hosts[1].matches("example.com"));
    assert!(matches!(r.action, RouteAction::Upstream(0)));
    assert!(matches!(
        c.routes[1].action,
        RouteAction::Redirect { status: 301, .. }
    ));
    let u = &c.upstreams[0];
    assert_eq!(u.servers[1].host, "::1");
    assert_eq!(u.servers[1].weight, 3);
    assert!(u.servers[2].backup);
    assert_eq!(u.health_check.as_ref().unwrap().fall, 2);
    assert_eq!(u.sticky_cookie.as_deref(), Some("GH_SRV"));
}

#[test]
fn every_error_is_reported_with_line_and_path() {
    let text = r#"
[global]
grace_period = "30 parsecs"

[listeners.web]
bind = "nonsense"
bogus = 1

[listeners.other]
bind = "127.0.0.1:8081"
max_header_size = "lots"

[[routes]]
upstream = "nope"

[[routes]]
upstream = "app"
respond = { status = 200 }

[upstreams.app]
servers = ["127.0.0.1:1", { address = "h:2", weight = 0 }]
balance = "fastest"
"#;
    let errs = parse(text, "bad.toml").unwrap_err().0;
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = shown.join("\n");
    for needle in [
        "bad.toml:3:16: global.grace_period: `30 parsecs` has unknown unit",
        "bad.toml:7:1: listeners.web.bogus: unknown field `bogus`",
        "bad.toml:11:19: listeners.other.max_header_size: `lots` is not a size",
        "bad.toml:14:12: routes[0].upstream: no upstream named `nope`",
        "routes[1]: needs exactly one action",
        "bad.toml:22:11: upstreams.app.balance: unknown variant `fastest`",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn semantic_errors_in_a_valid_upstream_are_all_reported() {
    let text = r#"
[listeners.web]
bind = "127.0.0.1:8080"
[[routes]]
upstream = "app"
[upstreams.app]
servers = ["127.0.0.1:1", { address = "h:2", weight = 0 }, "::1:80"]
health_check = { expect = "500-200", interval = "0s" }
hash_key = "md5"
"#;
    let errs = parse(text, "x.toml").unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = all.join("\n");
    for needle in [
        "upstreams.app.servers[1].weight: must be between 1 and 1000",
        "upstreams.app.servers[2]: `::1:80` is not an address",
        "upstreams.app.health_check.expect:",
        "upstreams.app.health_check.interval: must be more than zero",
        "upstreams.app.hash_key: `md5` is not one of",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(errs.iter().all(|e| e.line >= 7), "{all}");
}

#[test]
fn syntax_errors_have_a_line() {
    let errs = parse("[global\nthreads = 2\n", "s.toml").unwrap_err().0;
    assert_eq!(errs[0].file, "s.toml");
    assert_eq!(errs[0].line, 1);
}

#[test]
fn unknown_section_and_duplicate_bind() {
    let text = r#"
[listners.web]
bind = "x"
[listeners.a]
bind = "127.0.0.1:8080"
[listeners.b]
bind = "127.0.0.1:8080"
"#;
    let all = parse(text, "t.toml").unwrap_err().to_string();
    assert!(all.contains("unknown section `listners`"), "{all}");
    assert!(
        all.contains("listeners.b.bind: 127.0.0.1:8080 is already bound by listener `a`"),
        "{all}"
    );
}

#[test]
fn schema_is_json() {
    let s = json_schema();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(v["properties"]["upstreams"].is_object());
}

#[test]
fn tcp_and_udp_listeners_may_share_a_port() {
    let text = r#"
[listeners.turn]
bind = "127.0.0.1:5349"
protocol = "tcp"
upstream = "turn"
[listeners.turn_udp]
bind = "127.0.0.1:5349"
protocol = "udp"
upstream = "turn"
[upstreams.turn]
servers = ["127.0.0.1:3478"]
"#;
    crate::parse(text, "t.toml").expect("tcp and udp on one port");
    let twice = text.replace("protocol = \"udp\"", "protocol = \"tcp\"");
    let err = crate::parse(&twice, "t.toml").unwrap_err().to_string();
    assert!(err.contains("already bound by listener `turn`"), "{err}");
}

#[test]
fn forward_headers_pick_fields_and_name_bad_ones() {
    let ok = r#"
[listeners.web]
bind = "127.0.0.1:8080"
[[routes]]
upstream = "app"
forward_headers = ["X-Forwarded-For", "via"]
[[routes]]
upstream = "app"
[upstreams.app]
servers = ["127.0.0.1:1"]
"#;
    let c = parse(ok, "f.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.routes[0].forward_headers,
        ForwardHeaders {
            x_forwarded_for: true,
            via: true,
            ..ForwardHeaders::NONE
        }
    );
    assert_eq!(c.routes[1].forward_headers, ForwardHeaders::ALL);

    let bad = r#"
[listeners.web]
bind = "127.0.0.1:8080"
[[routes]]
upstream = "app"
forward_headers = ["x-forwarded-for", "x-real-ip", "x-forwarded-for"]
[[routes]]
respond = { status = 200 }
forward_headers = []
[upstreams.app]
servers = ["127.0.0.1:1"]
"#;
    let errs = parse(bad, "f.toml").unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = all.join("\n");
    for needle in [
        "f.toml:6:39: routes[0].forward_headers[1]: `x-real-ip` is not one of x-forwarded-for, x-forwarded-proto, x-forwarded-host, forwarded, via, x-request-id",
        "f.toml:6:52: routes[0].forward_headers[2]: `x-forwarded-for` is listed twice",
        "f.toml:9:19: routes[1].forward_headers: only routes with an `upstream` forward requests",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn smtp_listeners_and_upstreams() {
    let text = r#"
[listeners.mx]
bind = "127.0.0.1:2525"
protocol = "smtp"
upstream = "mail"

[listeners.mx.smtp]
hostname = "mx.example.org"
max_message_size = "10MiB"
max_recipients = 5
recipient_domains = ["Example.org"]
commands = ["vrfy"]

[[routes]]
listeners = ["mx"]
sources = ["10.20.0.0/16"]
upstream = "internal"

[upstreams.mail]
servers = ["127.0.0.1:25"]
protocol = "smtp"
client_address = "xclient"
health_check = { interval = "5s" }

[upstreams.internal]
servers = ["127.0.0.1:26"]
protocol = "smtp"
proxy_protocol = "v2"
"#;
    let c = parse(text, "smtp.toml").unwrap_or_else(|e| panic!("{e}"));
    let s = c.listeners[0].smtp.as_ref().expect("smtp settings");
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::Smtp);
    assert_eq!(s.hostname, "mx.example.org");
    assert_eq!(
        s.starttls,
        StartTls::Off,
        "no certificates: no STARTTLS by default"
    );
    assert_eq!(s.max_message_size, 10 << 20);
    assert_eq!(s.max_recipients, 5);
    assert_eq!(s.recipient_domains, ["example.org"]);
    assert_eq!(s.commands, ["VRFY"]);
    assert_eq!(s.command_timeout, std::time::Duration::from_secs(300));
    assert_eq!(c.upstreams[0].protocol, UpstreamProtocol::Smtp);
    assert_eq!(c.upstreams[0].client_address, ClientAddress::Xclient);
    assert!(
        c.upstreams[0]
            .health_check
            .as_ref()
            .is_some_and(|h| h.tcp_only),
        "an smtp upstream's check is a tcp check"
    );
    assert_eq!(c.routes[0].listeners, [0]);
}

#[test]
fn smtp_errors_name_their_keys() {
    let text = r#"
[listeners.mx]
bind = "127.0.0.1:2525"
protocol = "smtp"
upstream = "web"

[listeners.mx.smtp]
starttls = "require"
commands = ["XCLIENT"]
max_recipients = 0

[listeners.web]
bind = "127.0.0.1:8080"
smtp = { hostname = "x" }

[[routes]]
listeners = ["web"]
upstream = "mail"

[upstreams.web]
servers = ["127.0.0.1:80"]
client_address = "xclient"
tls = { starttls = true }

[upstreams.mail]
servers = ["127.0.0.1:25"]
protocol = "smtp"
client_address = "proxy"
health_check = { type = "http" }
"#;
    let errs = parse(text, "bad.toml").unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = all.join("\n");
    for needle in [
        "bad.toml:8:12: listeners.mx.smtp.starttls: needs certificates",
        "listeners.mx.smtp.commands[0]: `XCLIENT` cannot be passed",
        "listeners.mx.smtp.max_recipients: must be at least 1",
        "listeners.mx.upstream: `upstream` serves an smtp listener: its upstream needs protocol = \"smtp\"",
        "listeners.web.smtp: only smtp listeners take `smtp`",
        "routes[0].upstream: this route serves an http listener: an smtp upstream cannot answer HTTP",
        "upstreams.web.client_address: only smtp upstreams take `client_address`",
        "upstreams.web.tls.starttls: only smtp upstreams use STARTTLS",
        "upstreams.mail.client_address: `proxy` is not one of xclient, none",
        "upstreams.mail.health_check.type: an smtp upstream is checked by \"tcp\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn rate_limits_and_connection_limits_parse() {
    let text = r#"
[listeners.web]
bind = "127.0.0.1:8080"
max_connections_per_ip = 100

[[routes]]
name = "api"
rate_limit = "per_ip"
respond = { status = 200 }

[[routes]]
rate_limit = "per_key"
respond = { status = 200 }

[rate_limits.per_ip]
key = "client_ip"
rate = "20/s"

[rate_limits.per_key]
key = "header:X-Api-Key"
rate = "600/m"
burst = 40
"#;
    let c = parse(text, "r.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners[0].max_connections_per_ip, Some(100));
    assert_eq!(c.rate_limits.len(), 2);
    let by_name = |n: &str| c.rate_limits.iter().position(|r| r.name == n);
    assert_eq!(c.routes[0].rate_limit, by_name("per_ip"));
    assert_eq!(c.routes[1].rate_limit, by_name("per_key"));
    let ip = &c.rate_limits[by_name("per_ip").unwrap()];
    assert_eq!(ip.key, RateKey::ClientIp);
    assert_eq!((ip.count, ip.per.as_secs(), ip.burst), (20, 1, 20));
    let key = &c.rate_limits[by_name("per_key").unwrap()];
    assert_eq!(key.key, RateKey::Header("x-api-key".into()));
    assert_eq!((key.count, key.per.as_secs(), key.burst), (600, 60, 40));
    // Without the keys: nothing limited.
    let plain = parse(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\n[[routes]]\nrespond = { status = 200 }\n",
        "p.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.rate_limits.is_empty());
    assert_eq!(plain.routes[0].rate_limit, None);
    assert_eq!(plain.listeners[0].max_connections_per_ip, None);
}

#[test]
fn rate_limit_errors_name_their_keys() {
    let text = r#"
[listeners.web]
bind = "127.0.0.1:8080"
max_connections_per_ip = 0

[listeners.raw]
bind = "127.0.0.1:9000"
protocol = "tcp"
upstream = "app"

[listeners.dns]
bind = "127.0.0.1:5353"
protocol = "udp"
upstream = "app"
max_connections_per_ip = 5

[[routes]]
listeners = ["web"]
rate_limit = "nope"
respond = { status = 200 }

[[routes]]
listeners = ["raw"]
rate_limit = "bad"
upstream = "app"

[rate_limits.bad]
key = "ip"
rate = "20/d"
burst = 0

[rate_limits.worse]
key = "header:a b"
rate = "0/s"
per = "1s"

[upstreams.app]
servers = ["127.0.0.1:1"]
"#;
    let errs = parse(text, "l.toml").unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = all.join("\n");
    for needle in [
        "l.toml:4:26: listeners.web.max_connections_per_ip: must be at least 1",
        "l.toml:15:26: listeners.dns.max_connections_per_ip: udp listeners take no connections",
        "l.toml:19:14: routes[0].rate_limit: there is no [rate_limits.nope] section",
        "l.toml:24:14: routes[1].rate_limit: is HTTP-only",
        "l.toml:28:7: rate_limits.bad.key: `ip` is not one of",
        "l.toml:29:8: rate_limits.bad.rate: `20/d` is not a rate",
        "l.toml:30:9: rate_limits.bad.burst: must be at least 1",
        "l.toml:35:1: rate_limits.worse.per: unknown field `per`",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}
