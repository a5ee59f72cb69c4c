//! nginx as a real origin: static files over pooled keep-alive, forwarding headers as nginx sees
//! them, and nginx's own redirects mapped back to the public host.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream};
use crate::peer::{Peer, program, require};

struct Nginx {
    /// One process (master_process off): ending it leaves no orphan worker holding our pipes.
    _peer: Peer,
    port: u16,
    /// A server that expects a PROXY header and answers with the address it carried.
    pp_port: u16,
}

async fn start_nginx() -> Nginx {
    let mut peer = Peer::new("nginx");
    let dir = peer.dir().to_path_buf();
    std::fs::create_dir_all(dir.join("www/dir")).unwrap();
    std::fs::write(dir.join("www/index.html"), "x".repeat(1024)).unwrap();
    std::fs::write(dir.join("www/dir/index.html"), "in dir").unwrap();
    let port = free_port();
    let pp_port = free_port();
    let d = dir.display();
    let conf = format!(
        r#"
worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 10000;
  server {{
    listen 127.0.0.1:{pp_port} proxy_protocol;
    location / {{
      default_type text/plain;
      return 200 "pp=$proxy_protocol_addr";
    }}
  }}
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location = /echo {{
      default_type text/plain;
      return 200 "host=$host xff=$http_x_forwarded_for proto=$http_x_forwarded_proto conn=$connection req=$connection_requests\n";
    }}
  }}
}}
"#
    );
    let conf = peer.write("nginx.conf", conf);
    peer.log(dir.join("error.log")).spawn(
        Command::new(program("nginx"))
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log")),
    );
    peer.wait_tcp(port, Duration::from_secs(10)).await;
    Nginx {
        _peer: peer,
        port,
        pp_port,
    }
}

#[tokio::test]
async fn nginx_as_a_real_origin() {
    if !require("nginx") {
        return;
    }
    let n = start_nginx().await;
    let port = n.port;
    let cfg = Config::web()
        .route(
            Route::to("nginx")
                .path_prefix("/internal")
                .raw(r#"strip_prefix = "/internal""#)
                .raw(format!(r#"set_host = "127.0.0.1:{port}""#)),
        )
        .route(Route::to("nginx"))
        .upstream(
            "nginx",
            Upstream::servers([format!("127.0.0.1:{port}")])
                .raw(r#"health_check = { path = "/index.html", interval = "1s" }"#),
        )
        .toml();
    let gh = proxy(&cfg).await;
    let addr = web(&gh);
    let r = get(addr, "www.example.com", "/index.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
    assert_eq!(r.header("via"), Some("1.1 gatehouse"));

    // Keep-alive to nginx: the same upstream connection serves successive requests.
    let first = get(addr, "www.example.com", "/echo").await.text();
    let second = get(addr, "www.example.com", "/echo").await.text();
    assert!(
        first.starts_with("host=www.example.com xff=127.0.0.1 proto=http"),
        "{first}"
    );
    let conn = |s: &str| {
        s.split("conn=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        conn(&first),
        conn(&second),
        "pooled connection reused: {first} / {second}"
    );

    // nginx redirects /dir to http://127.0.0.1:PORT/dir/ (its own address): mapped back.
    let r = get(addr, "www.example.com", "/internal/dir").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://www.example.com/internal/dir/")
    );
    assert_eq!(
        get(addr, "www.example.com", "/internal/dir/").await.text(),
        "in dir"
    );
}

#[tokio::test]
async fn nginx_reads_the_proxy_header_gatehouse_sends() {
    if !require("nginx") {
        return;
    }
    let n = start_nginx().await;
    for version in ["v1", "v2"] {
        let cfg = Config::web()
            .listener(
                "public",
                Listener::http().proxy_protocol_from_loopback("any"),
            )
            .route(Route::to("nginx"))
            .upstream(
                "nginx",
                Upstream::servers([format!("127.0.0.1:{}", n.pp_port)])
                    .raw(format!(r#"proxy_protocol = "{version}""#)),
            )
            .toml();
        let gh = proxy(&cfg).await;
        assert_eq!(
            get(gh.listener_addrs("web")[0], "x", "/").await.text(),
            "pp=127.0.0.1",
            "{version}"
        );
        let mut req = gatehouse_wire::proxy_protocol::encode_v2(
            "203.0.113.5:1111".parse().unwrap(),
            "198.51.100.1:80".parse().unwrap(),
            &[],
        );
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw(
            gh.listener_addrs("public")[0],
            &req,
            std::time::Duration::from_millis(500),
        )
        .await;
        assert!(
            resp.ends_with("pp=203.0.113.5"),
            "{version}: nginx sees the real client: {resp}"
        );
    }
}
