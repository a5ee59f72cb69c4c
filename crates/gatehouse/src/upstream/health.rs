//! Active health checks and periodic re-resolution of server names: one task per server state,
//! which ends by itself once no snapshot holds that server any more.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_config::model::HealthCheck;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::{RESOLVE_EVERY, ServerState};

/// Resolves a host name (or literal) to socket addresses.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        ));
    }
    Ok(addrs)
}

/// One health check: GET the path on a fresh connection, status in the expected range.
pub async fn check_once(
    server: &ServerState,
    hc: &HealthCheck,
    connect_timeout: Duration,
) -> Result<(), String> {
    let work = async {
        let mut tcp = super::pool::connect_tcp(server, connect_timeout, None)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if let Some(v) = server.proxy_protocol {
            // The check is our own connection: v1 UNKNOWN / v2 LOCAL, as HAProxy's check-send-proxy.
            use tokio::io::AsyncWriteExt;
            let local = gatehouse_wire::proxy_protocol::encode_local(
                v == gatehouse_config::model::ProxyProtocol::V2,
            );
            tcp.write_all(&local)
                .await
                .map_err(|e| format!("PROXY header: {e}"))?;
        }
        if hc.tcp_only {
            return Ok(());
        }
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let host = hc
            .host
            .clone()
            .unwrap_or_else(|| server.spec.address.clone());
        let req = http::Request::get(&hc.path)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "gatehouse-health-check")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        if (hc.expect.0..=hc.expect.1).contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "status {status} outside {}-{}",
                hc.expect.0, hc.expect.1
            ))
        }
    };
    match tokio::time::timeout(hc.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
    }
}

/// Starts the server's background task: re-resolve names, run health checks.
pub fn spawn(server: &Arc<ServerState>, hc: Option<HealthCheck>, connect_timeout: Duration) {
    let is_name = server.spec.host.parse::<std::net::IpAddr>().is_err();
    if !is_name && hc.is_none() {
        return;
    }
    let weak: Weak<ServerState> = Arc::downgrade(server);
    tokio::spawn(async move {
        let mut next_resolve = tokio::time::Instant::now();
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            let Some(server) = weak.upgrade() else { return };
            if is_name && tokio::time::Instant::now() >= next_resolve {
                match resolve(&server.spec.host, server.spec.port).await {
                    Ok(addrs) => server.addrs.store(Arc::new(addrs)),
                    Err(e) => tracing::warn!(
                        upstream = %server.upstream, server = %server.spec.address,
                        error = %e, "cannot resolve server; keeping the last addresses"
                    ),
                }
                next_resolve = tokio::time::Instant::now() + RESOLVE_EVERY;
            }
            let sleep = match &hc {
                Some(hc) => {
                    match check_once(&server, hc, connect_timeout).await {
                        Ok(()) => {
                            ok_run += 1;
                            fail_run = 0;
                            if ok_run >= hc.rise && server.set_up(true) {
                                tracing::info!(upstream = %server.upstream, server = %server.spec.address, "server is up");
                            }
                        }
                        Err(why) => {
                            fail_run += 1;
                            ok_run = 0;
                            if fail_run >= hc.fall && server.set_up(false) {
                                tracing::warn!(upstream = %server.upstream, server = %server.spec.address, reason = %why, "server is down");
                            } else {
                                tracing::debug!(upstream = %server.upstream, server = %server.spec.address, reason = %why, "health check failed");
                            }
                        }
                    }
                    hc.interval
                }
                None => RESOLVE_EVERY,
            };
            drop(server);
            tokio::time::sleep(sleep).await;
        }
    });
}
