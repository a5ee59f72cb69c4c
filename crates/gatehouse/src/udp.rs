//! UDP flows: one flow per client address and port, each with its own socket to a server, so
//! answers find their client; answers go back from the listener's own socket (the address the
//! client sent to). A flow ends after `udp_idle_timeout` without a datagram either way; the number
//! of flows is bounded by the listener's `max_connections` (default 10,000), datagrams of clients
//! beyond it are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::runtime::{Shared, Snapshot};
use crate::upstream::{PickInput, ServerState, now_ms};

const DEFAULT_MAX_FLOWS: usize = 10_000;
/// Largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

struct Flow {
    upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
}

/// Serves a udp listener's socket until the task is aborted.
pub async fn serve(socket: Arc<UdpSocket>, shared: Arc<Shared>, listener: Arc<str>) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut dropped: u64 = 0;
    let counters = shared.metrics.udp(&listener);
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(listener = %listener, error = %e, "udp receive failed");
                    continue;
                }
            },
            Some(gone) = ended_rx.recv() => {
                if flows.remove(&gone).is_some() {
                    counters.flows.dec();
                }
                continue;
            }
        };
        if !flows.contains_key(&client) {
            let snap = shared.snapshot();
            let Some(settings) = snap.listener(&listener).map(|l| l.model.clone()) else {
                continue;
            };
            if flows.len() >= settings.max_connections.unwrap_or(DEFAULT_MAX_FLOWS) {
                dropped += 1;
                counters.dropped.inc();
                if dropped.is_power_of_two() {
                    tracing::warn!(listener = %listener, flows = flows.len(), dropped, "udp flow limit reached: datagrams dropped");
                }
                continue;
            }
            let Some(server) = pick_server(snap, &listener, client, local) else {
                continue;
            };
            let Some(upstream) = flow_socket(&server, &listener).await else {
                continue;
            };
            let flow = start_flow(
                upstream,
                &socket,
                client,
                settings.udp_idle_timeout,
                &ended_tx,
                &counters.down,
            );
            flows.insert(client, flow);
            counters.flows.inc();
        }
        if let Some(flow) = flows.get(&client) {
            flow.last.store(now_ms(), Ordering::Relaxed);
            if flow.upstream.send(&buf[..n]).await.is_ok() {
                counters.up.inc();
            }
        }
    }
}

/// The server a new flow from `client` goes to: the listener's upstream for it (the snapshot is
/// let go once chosen), balanced by the client's address.
fn pick_server(
    snap: Arc<Snapshot>,
    listener: &str,
    client: SocketAddr,
    local: SocketAddr,
) -> Option<Arc<ServerState>> {
    let up = crate::l4::choose_upstream(&snap, listener, client, local, None)?;
    drop(snap);
    let input = PickInput {
        hash: Some(crate::l4::client_hash(client)),
        sticky: None,
        exclude: &[],
    };
    let i = up.pick(&input)?;
    Some(up.servers[i].clone())
}

/// A new flow's own socket, connected to `server` (its first known address, else resolved now)
/// so that only its answers come in on it.
async fn flow_socket(server: &ServerState, listener: &str) -> Option<UdpSocket> {
    let target = match server.addrs.load().first().copied() {
        Some(a) => a,
        None => match crate::upstream::health::resolve(&server.spec.host, server.spec.port).await {
            Ok(a) => a[0],
            Err(_) => return None,
        },
    };
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap_or(target);
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(listener = %listener, error = %e, "cannot open a udp socket for a flow");
            return None;
        }
    };
    if upstream.connect(target).await.is_err() {
        return None;
    }
    Some(upstream)
}

/// Starts relaying the answers that come in on a new flow's socket back to `client`, and returns
/// the flow's entry.
fn start_flow(
    upstream: UdpSocket,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    idle: Duration,
    ended: &mpsc::UnboundedSender<SocketAddr>,
    down: &prometheus_client::metrics::counter::Counter,
) -> Flow {
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(now_ms()));
    tokio::spawn(relay_back(
        upstream.clone(),
        socket.clone(),
        client,
        last.clone(),
        idle,
        ended.clone(),
        down.clone(),
    ));
    Flow { upstream, last }
}

/// Sends the server's answers of one flow back to its client, until the flow is idle.
async fn relay_back(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    idle: Duration,
    ended: mpsc::UnboundedSender<SocketAddr>,
    down: prometheus_client::metrics::counter::Counter,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let quiet = Duration::from_millis(now_ms().saturating_sub(last.load(Ordering::Relaxed)));
        if quiet >= idle {
            break;
        }
        tokio::select! {
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    last.store(now_ms(), Ordering::Relaxed);
                    if listener.send_to(&buf[..n], client).await.is_ok() {
                        down.inc();
                    }
                }
                // ICMP port unreachable and the like: the server is not there (yet); keep the flow.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = tokio::time::sleep(idle - quiet) => {}
        }
    }
    let _ = ended.send(client);
}
