//! Lifecycle: reload (admin and SIGHUP) with a request in flight, a refused reload, listeners
//! added and removed, graceful shutdown, metrics and status, and a 256 MiB body each way through
//! the real binary with bounded memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};
use crate::peer::Peer;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-test-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: AtomicU64 = AtomicU64::new(0);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ N.fetch_add(1, Ordering::SeqCst) << 48
}

async fn slow_and_named(name: &'static str) -> Origin {
    origin(move |req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        text(200, name)
    })
    .await
}

fn two_route_cfg(admin: bool, upstream: std::net::SocketAddr, extra_listener: bool) -> String {
    let mut cfg = Config::new();
    if admin {
        cfg = cfg.admin();
    }
    cfg = cfg.listener("web", Listener::http());
    if extra_listener {
        cfg = cfg.listener("extra", Listener::http());
    }
    cfg.route(Route::to("app").name("main"))
        .upstream("app", Upstream::servers([upstream]))
        .toml()
}

async fn admin_call(addr: std::net::SocketAddr, method: &str, path: &str) -> Got {
    send(
        addr,
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .body(empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn reload_is_atomic_for_new_requests_and_in_flight_ones_finish() {
    let old = slow_and_named("old").await;
    let new = slow_and_named("new").await;
    let path = temp_file("gh.toml", &two_route_cfg(true, old.addr, false));
    let model = gatehouse_config::load(&path).unwrap();
    let gh = gatehouse::Gatehouse::start(model, Some(path.clone()))
        .await
        .unwrap();
    let addr = web(&gh);
    let admin = gh.admin_addr().unwrap();
    assert!(gh.listener_addrs("extra").is_empty());

    let in_flight = tokio::spawn(async move { get(addr, "x", "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&path, two_route_cfg(true, new.addr, true)).unwrap();
    let r = admin_call(admin, "POST", "/reload").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(addr, "x", "/").await.text(),
        "new",
        "new requests use the new config"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "old"),
        "the in-flight request finished on the old one"
    );
    let extra = gh.listener_addrs("extra");
    assert_eq!(extra.len(), 1, "listener added by reload");
    assert_eq!(get(extra[0], "x", "/").await.text(), "new");

    // A broken file: refused with every error, the old config keeps serving.
    std::fs::write(
        &path,
        "[listeners.web]\nbind = 12\n[[routes]]\nupstream = \"nope\"\n",
    )
    .unwrap();
    let r = admin_call(admin, "POST", "/reload").await;
    assert_eq!(r.status, 400);
    let body = r.text();
    assert!(
        body.contains("gh.toml:2:8") && body.contains("listeners.web.bind"),
        "{body}"
    );
    assert!(body.contains("no upstream named `nope`"), "{body}");
    assert_eq!(get(addr, "x", "/").await.text(), "new");

    // Removing a listener closes it; the others keep serving.
    std::fs::write(&path, two_route_cfg(true, new.addr, false)).unwrap();
    assert_eq!(admin_call(admin, "POST", "/reload").await.status, 200);
    assert!(
        tokio::net::TcpStream::connect(extra[0]).await.is_err(),
        "removed listener still accepts"
    );
    assert_eq!(get(addr, "x", "/").await.text(), "new");
}

#[tokio::test]
async fn unchanged_servers_keep_health_and_pool_across_reload() {
    let o = named("o").await;
    let cfg = two_route_cfg(false, o.addr, false);
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    get(addr, "x", "/").await;
    let before = gh.shared().snapshot().upstreams[0].servers[0].clone();
    assert!(
        eventually(Duration::from_secs(2), async || before.pool.idle_count()
            == 1)
        .await
    );
    gh.apply(
        gatehouse_config::parse(&cfg.replace("name = \"main\"", "name = \"renamed\""), "t")
            .unwrap(),
    )
    .await
    .unwrap();
    let after = gh.shared().snapshot().upstreams[0].servers[0].clone();
    assert!(Arc::ptr_eq(&before, &after), "server state was rebuilt");
    assert_eq!(after.pool.idle_count(), 1);
}

#[tokio::test]
async fn metrics_and_status() {
    let o = named("o").await;
    let gh = proxy(&two_route_cfg(true, o.addr, false)).await;
    let addr = web(&gh);
    for _ in 0..3 {
        get(addr, "x", "/").await;
    }
    let admin = gh.admin_addr().unwrap();
    let m = admin_call(admin, "GET", "/metrics").await.text();
    for needle in [
        "gatehouse_http_requests_total{listener=\"web\",route=\"main\",upstream=\"app\",code=\"200\"} 3",
        "gatehouse_http_request_duration_seconds_bucket{",
        &format!(
            "gatehouse_upstream_server_up{{upstream=\"app\",server=\"{}\"}} 1",
            o.addr
        ),
        &format!(
            "gatehouse_upstream_active_connections{{upstream=\"app\",server=\"{}\"}} 0",
            o.addr
        ),
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    let s: serde_json::Value =
        serde_json::from_str(&admin_call(admin, "GET", "/status").await.text()).unwrap();
    let server = &s["upstreams"][0]["servers"][0];
    assert_eq!(server["address"], o.addr.to_string());
    assert_eq!(server["up"], true);
    assert_eq!(server["requests"], 3);
    let page = admin_call(admin, "GET", "/").await;
    assert!(page.text().contains(&o.addr.to_string()));
    assert_eq!(admin_call(admin, "GET", "/nope").await.status, 404);
    assert_eq!(
        admin_call(admin, "POST", "/reload").await.status,
        400,
        "no file to reload from"
    );
}

/// The gatehouse binary running `cfg`, once it listens on `port`.
async fn binary(cfg: &str, port: u16) -> Peer {
    let mut p = Peer::gatehouse(cfg);
    p.wait_tcp(port, Duration::from_secs(10)).await;
    p
}

/// The peak resident memory of process `pid` (VmHWM), in KiB.
fn hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn proc_cfg(port: u16, upstream: std::net::SocketAddr, grace: &str) -> String {
    Config::web_to(Upstream::servers([upstream]).raw(r#"response_timeout = "60s""#))
        .global("threads = 2")
        .global(format!(r#"grace_period = "{grace}""#))
        .listener("web", Listener::http().port(port))
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let o = slow_and_named("o").await;
    let port = free_port();
    let mut p = binary(&proc_cfg(port, o.addr, "10s"), port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "x", "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "o"));
    let status = p.exit_status(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file() {
    let a = named("a").await;
    let b = named("b").await;
    let port = free_port();
    let p = binary(&proc_cfg(port, a.addr, "1s"), port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "x", "/").await.text(), "a");
    std::fs::write(p.path("gatehouse.toml"), proc_cfg(port, b.addr, "1s")).unwrap();
    p.signal("-HUP");
    assert!(
        eventually(Duration::from_secs(5), async || get(addr, "x", "/")
            .await
            .text()
            == "b")
        .await
    );
    // A broken file on SIGHUP changes nothing.
    std::fs::write(p.path("gatehouse.toml"), "this is not toml").unwrap();
    p.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(addr, "x", "/").await.text(), "b");
}

const BIG: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_body_streams_both_ways_in_bounded_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let o = origin(move |req| {
        let received = r2.clone();
        async move {
            if req.method() == http::Method::POST {
                let mut body = req.into_body();
                while let Some(f) = body.frame().await {
                    if let Ok(d) = f.map(|f| f.into_data()) {
                        received
                            .fetch_add(d.map(|d| d.len() as u64).unwrap_or(0), Ordering::SeqCst);
                    } else {
                        break;
                    }
                }
                text(200, "stored")
            } else {
                let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
                let stream = futures_util::stream::iter(
                    (0..BIG / (64 * 1024))
                        .map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
                );
                http::Response::new(StreamBody::new(stream).boxed_unsync())
            }
        }
    })
    .await;
    let port = free_port();
    let p = binary(&proc_cfg(port, o.addr, "1s"), port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = hwm_kib(p.pid());

    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let up = futures_util::stream::iter(
        (0..BIG / (64 * 1024)).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    let req = http::Request::post("/upload")
        .header("host", "x")
        .body(StreamBody::new(up).boxed_unsync())
        .unwrap();
    let r = send(addr, req).await;
    assert_eq!((r.status, r.text().as_str()), (200, "stored"));
    assert_eq!(received.load(Ordering::SeqCst), BIG);

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            http::Request::get("/download")
                .header("host", "x")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(f) = body.frame().await {
        total += f.unwrap().into_data().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(total, BIG);
    let grown = hwm_kib(p.pid()).saturating_sub(base);
    assert!(
        grown < 48 * 1024,
        "peak memory grew by {grown} KiB for 2 x 256 MiB"
    );
}
