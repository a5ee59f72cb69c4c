//! IPv4 <-> IPv6 bridging, server names, the access log file, max_connections, and the demo.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream, quoted};
use crate::peer::{Peer, gatehouse_command};

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test]
async fn ipv4_clients_reach_ipv6_servers_and_back() {
    if !ipv6_loopback() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no IPv6 loopback under CI=true"
        );
        eprintln!("\n\n*** SKIPPING: no IPv6 loopback on this machine ***\n\n");
        return;
    }
    let v6 = origin_on("[::1]:0", |req| async move {
        text(
            200,
            format!(
                "v6 xff={}",
                req.headers()["x-forwarded-for"].to_str().unwrap()
            ),
        )
    })
    .await;
    let v4 = origin(|req| async move {
        text(
            200,
            format!("v4 fwd={}", req.headers()["forwarded"].to_str().unwrap()),
        )
    })
    .await;
    let cfg = Config::new()
        .listener("web", Listener::http().binds(["127.0.0.1:0", "[::1]:0"]))
        .route(Route::to("six").path_prefix("/six"))
        .route(Route::to("four"))
        .upstream("six", Upstream::servers([v6.addr]))
        .upstream("four", Upstream::servers([v4.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let addrs = gh.listener_addrs("web");
    let (l4, l6) = (
        addrs.iter().find(|a| a.is_ipv4()).unwrap(),
        addrs.iter().find(|a| a.is_ipv6()).unwrap(),
    );
    assert_eq!(get(*l4, "x", "/six").await.text(), "v6 xff=127.0.0.1");
    assert_eq!(
        get(*l6, "x", "/").await.text(),
        "v4 fwd=for=\"[::1]\";host=x;proto=http"
    );
}

#[tokio::test]
async fn servers_may_be_host_names() {
    let o = named("by-name").await;
    let cfg = Config::web_to(Upstream::servers([format!("localhost:{}", o.addr.port())])).toml();
    let gh = proxy(&cfg).await;
    // localhost may resolve to ::1 first where the origin is not listening: the next address is tried.
    assert_eq!(get(web(&gh), "x", "/").await.text(), "by-name");
}

/// A proxy whose access log goes to a new file (returned), route "main" to `origin`.
async fn proxy_logging(origin: std::net::SocketAddr) -> (gatehouse::Gatehouse, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "gatehouse-access-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let cfg = Config::web()
        .global(format!("access_log = {}", quoted(path.display())))
        .route(Route::to("app").name("main"))
        .upstream("app", Upstream::servers([origin]))
        .toml();
    (proxy(&cfg).await, path)
}

/// The first line of an access log once it is written (within 4 s), parsed.
async fn first_log_line(path: &std::path::Path) -> serde_json::Value {
    let mut line = String::new();
    assert!(
        eventually(Duration::from_secs(4), async || {
            line = std::fs::read_to_string(path).unwrap_or_default();
            line.ends_with('\n')
        })
        .await,
        "no access log line"
    );
    serde_json::from_str(line.lines().next().unwrap_or_default()).unwrap()
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let o = named("o").await;
    let (gh, path) = proxy_logging(o.addr).await;
    let r = get_with(
        web(&gh),
        "shop.example",
        "/a?b=1",
        &[("x-request-id", "log-me")],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = first_log_line(&path).await;
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "shop.example");
    assert_eq!(v["path"], "/a");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_out"], 1);
    assert_eq!(v["route"], "main");
    assert_eq!(v["upstream"], "app");
    assert_eq!(v["server"], o.addr.to_string());
    assert_eq!(v["request_id"], "log-me");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_request_whose_client_left_is_logged_as_499() {
    let slow = origin(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        text(200, "late")
    })
    .await;
    let (gh, path) = proxy_logging(slow.addr).await;
    let mut c = tokio::net::TcpStream::connect(web(&gh)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut c, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    let v = first_log_line(&path).await;
    assert_eq!(v["status"], 499, "{v}");
    assert_eq!(v["path"], "/slow");
    assert_eq!(v["completed"], false);
    assert_eq!(v["server"], "", "no server answered it");
    // Its slot on the server is free again.
    let snap = gh.shared().snapshot();
    let active = snap.upstreams[0].servers[0]
        .active
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(active, 0);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn max_connections_holds_extra_clients_in_the_backlog() {
    let o = named("o").await;
    let cfg = Config::web_to(Upstream::servers([o.addr]))
        .listener("web", Listener::http().raw("max_connections = 1"))
        .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    let second = tokio::spawn(async move { get(addr, "x", "/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served while the first is open"
    );
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(3), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_balances_three_origins() {
    let (port, admin) = (free_port(), free_port());
    let mut demo = Peer::new("demo");
    demo.spawn(gatehouse_command().args([
        "demo",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]));
    demo.wait_tcp(port, Duration::from_secs(10)).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut origins = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = get(addr, "anything.example", "/hello").await;
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        origins.insert(v["origin"].as_str().unwrap().to_string());
    }
    assert_eq!(origins.len(), 3, "{origins:?}");
    let status = get(
        format!("127.0.0.1:{admin}").parse().unwrap(),
        "admin",
        "/status",
    )
    .await;
    assert!(
        status.text().contains("\"servers_up\":3"),
        "{}",
        status.text()
    );
    demo.signal("-INT");
    let code = demo.exit_status(Duration::from_secs(30)).await;
    assert!(code.success());
}
