//! `gatehouse demo`: three small origins on loopback and a proxy balancing them, to try gatehouse
//! with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts one demo origin named `name` on an ephemeral loopback port; returns its address.
pub async fn start_origin(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, &req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = serde_json::json!({
        "origin": name,
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "headers": headers,
    });
    let mut r = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The demo's config text for origins at `origins`.
pub fn config(bind: &str, admin: &str, origins: &[SocketAddr]) -> String {
    let servers: Vec<String> = origins.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[global]
access_log = "stdout"
grace_period = "5s"

[admin]
bind = "{admin}"

[listeners.web]
bind = "{bind}"

[[routes]]
name = "demo"
upstream = "demo"
response_headers = {{ set = {{ "x-served-by" = "gatehouse-demo" }} }}

[upstreams.demo]
servers = [{}]
balance = "round_robin"
health_check = {{ path = "/healthz", interval = "2s", timeout = "1s", rise = 2, fall = 2 }}
passive = {{ fall = 3, cooldown = "10s" }}
"#,
        servers.join(", ")
    )
}
