//! The L4 forwarder: a `tcp` listener's connection becomes a byte pipe to a server of an
//! upstream chosen by the listener's routes (on the client's address and the address it reached)
//! or its default upstream. Bytes flow both ways with backpressure, a FIN is passed on while the
//! other direction keeps flowing (half-close), and the pipe ends after `idle_timeout` without a
//! byte either way.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use gatehouse_config::model::RouteAction;
use gatehouse_config::units::canonical_ip;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::runtime::Snapshot;
use crate::upstream::pool::ProxyHeader;
use crate::upstream::{ActiveGuard, fnv1a, now_ms};

/// A stream that stamps the time of its last byte, read or written, and counts what it reads.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
    read: prometheus_client::metrics::counter::Counter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.store(now_ms(), Ordering::Relaxed);
            self.read.inc_by(n as u64);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves a connection accepted by a tcp or tls listener: for tcp, terminate TLS first when the
/// listener has certificates; for tls, read the SNI of the ClientHello without consuming it.
pub async fn accepted(
    stream: TcpStream,
    settings: &gatehouse_config::model::Listener,
    tls: Option<Arc<crate::tls::ListenerTls>>,
    shared: Arc<crate::runtime::Shared>,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
) {
    use gatehouse_config::model::ListenerProtocol;
    let within = settings.client_header_timeout;
    match (settings.protocol, tls) {
        (ListenerProtocol::Tcp, Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            let Ok(Ok(stream)) = tokio::time::timeout(within, acceptor.accept(stream)).await else {
                tracing::debug!(listener, %peer, "TLS handshake failed or timed out");
                return;
            };
            let info = tls.info(stream.get_ref().1);
            let side = TlsSide {
                sni: info.sni,
                alpn: info.alpn,
                version: info.version,
            };
            serve(stream, &shared, listener, peer, local, Some(side)).await;
        }
        (ListenerProtocol::Tcp, None) => serve(stream, &shared, listener, peer, local, None).await,
        (ListenerProtocol::Tls, _) => {
            let Ok(sni) = peek_sni(&stream, within).await else {
                tracing::info!(listener, %peer, "no ClientHello in time: connection closed");
                return;
            };
            let side = TlsSide {
                sni,
                ..Default::default()
            };
            serve(stream, &shared, listener, peer, local, Some(side)).await;
        }
        // http/https are served by the HTTP engine; udp has no accepted connections.
        _ => {}
    }
}

/// TLS passthrough: the server name of the ClientHello at the start of `stream`, read with
/// MSG_PEEK so that every byte still goes to the origin untouched. None: no SNI, not TLS, or
/// malformed (the listener's default upstream then applies). Err: nothing came in time.
#[allow(clippy::result_unit_err)]
pub async fn peek_sni(stream: &TcpStream, within: Duration) -> Result<Option<String>, ()> {
    use gatehouse_wire::tls_hello;
    let work = async {
        let mut buf = vec![0u8; tls_hello::MAX];
        loop {
            let n = stream.peek(&mut buf).await.map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            match tls_hello::parse(&buf[..n]) {
                Ok(Some(h)) => return Ok(h.sni),
                // Part of the record: wait for more (peek returns at once while data is queued).
                Ok(None) if n < buf.len() => tokio::time::sleep(Duration::from_millis(2)).await,
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    };
    tokio::time::timeout(within, work).await.map_err(|_| ())?
}

/// The upstream for a connection or flow of an L4 listener: the first route naming the listener
/// whose sources, destinations and (tls) SNI match, else the listener's default upstream.
pub fn choose_upstream(
    snap: &Snapshot,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
    sni: Option<&str>,
) -> Option<Arc<crate::upstream::Upstream>> {
    choose_route(snap, listener, peer, local, sni).map(|(up, _)| up)
}

/// [`choose_upstream`], and the index of the route that chose it (None: the listener's default
/// upstream), for those that log the route (the SMTP proxy).
pub fn choose_route(
    snap: &Snapshot,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
    sni: Option<&str>,
) -> Option<(Arc<crate::upstream::Upstream>, Option<usize>)> {
    let l = snap.listener(listener)?;
    let (src, dst) = (canonical_ip(peer.ip()), canonical_ip(local.ip()));
    let routed = l.routes.iter().copied().find(|i| {
        let m = &snap.config.routes[*i].matcher;
        (m.sources.is_empty() || m.sources.iter().any(|c| c.contains(src)))
            && (m.destinations.is_empty() || m.destinations.iter().any(|c| c.contains(dst)))
            && (m.sni.is_empty() || sni.is_some_and(|s| m.sni.iter().any(|p| p.matches(s))))
    });
    let (index, route) = match routed.map(|i| (i, &snap.config.routes[i].action)) {
        Some((r, RouteAction::Upstream(i))) => (Some(*i), Some(r)),
        _ => (l.model.upstream, None),
    };
    index.map(|i| (snap.upstreams[i].clone(), route))
}

/// What the client side of an L4 connection said about TLS: the SNI of a passed-through
/// ClientHello, or everything of a handshake a tcp listener terminated.
#[derive(Debug, Default, Clone)]
pub struct TlsSide {
    /// Server name.
    pub sni: Option<String>,
    /// ALPN negotiated (terminated TLS only).
    pub alpn: Option<Vec<u8>>,
    /// "TLSv1.3" (terminated TLS only).
    pub version: Option<String>,
}

/// The hash a client address balances by.
pub fn client_hash(peer: SocketAddr) -> u64 {
    match canonical_ip(peer.ip()) {
        std::net::IpAddr::V4(a) => fnv1a(&a.octets()),
        std::net::IpAddr::V6(a) => fnv1a(&a.octets()),
    }
}

/// Both directions of a pipe, to their end: bytes (up, down).
type Relay<'a> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<(u64, u64)>> + Send + 'a>>;

/// A client stream that may be a plain TCP socket: then the pipe to the origin uses splice(2).
pub trait MaybeTcp {
    /// The socket, when the stream is one (no TLS of ours on it).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl MaybeTcp for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl<T> MaybeTcp for tokio_rustls::server::TlsStream<T> {}

/// Serves one tcp- or tls-listener connection to its end. `sni`: what a tls listener read from
/// the ClientHello.
pub async fn serve<C>(
    client: C,
    shared: &crate::runtime::Shared,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<TlsSide>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + MaybeTcp,
{
    let snap = shared.snapshot();
    let sni = tls.as_ref().and_then(|t| t.sni.as_deref());
    let Some(up) = choose_upstream(&snap, listener, peer, local, sni) else {
        tracing::info!(listener, %peer, "no route and no default upstream: connection closed");
        return;
    };
    drop(snap);
    let Some((origin, _guard)) = connect_origin(&up, &peer, &local, tls.as_ref()).await else {
        tracing::warn!(listener, %peer, upstream = %up.model.name, "no server reachable: connection closed");
        return;
    };
    let m = &up.model;
    let last = Arc::new(AtomicU64::new(now_ms()));
    let idle = m.idle_timeout;
    let counters = shared.metrics.l4(listener);
    counters.connections.inc();
    // Plain TCP on both sides: splice(2), no copy through user space. Otherwise (TLS we
    // terminated) copy through buffers.
    let mut copy: Relay<'_> = match client.tcp() {
        Some(c) => splice_relay(c, &origin, &last, &counters),
        None => copy_relay(client, origin, &last, &counters),
    };
    match until_idle(&mut copy, &last, idle).await {
        Ok((up_bytes, down_bytes)) => {
            tracing::debug!(listener, %peer, upstream = %m.name, up_bytes, down_bytes, "tcp pipe closed")
        }
        Err(e) => {
            tracing::debug!(listener, %peer, upstream = %m.name, error = %e, "tcp pipe ended")
        }
    }
}

/// A connection to a server of `up` for the client `peer`: servers are tried as the balancer
/// picks them (each at most once, up to `retries` more after the first), a failed connect or
/// PROXY header counting against the server. With the guard that counts it as active there.
async fn connect_origin(
    up: &crate::upstream::Upstream,
    peer: &SocketAddr,
    local: &SocketAddr,
    tls: Option<&TlsSide>,
) -> Option<(TcpStream, ActiveGuard)> {
    for server in up.connection_picks(client_hash(*peer)) {
        let guard = ActiveGuard::new(server.clone());
        match crate::upstream::pool::connect_tcp(&server, up.model.connect_timeout, Some(*peer))
            .await
        {
            Ok(mut s) => {
                if let Some(v) = server.proxy_protocol {
                    let header = proxy_header(*peer, *local, tls);
                    if let Err(e) = s.write_all(&header.encode(v)).await {
                        tracing::warn!(upstream = %up.model.name, server = %server.spec.address, error = %e, "PROXY header not sent");
                        server.record_failure(up.model.passive.as_ref());
                        continue;
                    }
                }
                server.record_success();
                return Some((s, guard));
            }
            Err(e) => {
                tracing::warn!(upstream = %up.model.name, server = %server.spec.address, error = %e, "connect failed");
                server.record_failure(up.model.passive.as_ref());
            }
        }
    }
    None
}

/// The PROXY header telling a server who the client is and, when we terminated TLS, what the
/// handshake said.
fn proxy_header(peer: SocketAddr, local: SocketAddr, tls: Option<&TlsSide>) -> ProxyHeader {
    ProxyHeader {
        src: peer,
        dst: local,
        alpn: tls.and_then(|t| t.alpn.clone()),
        authority: tls.and_then(|t| t.sni.clone()),
        tls_version: tls.and_then(|t| t.version.clone()),
    }
}

/// The pipe between two plain TCP sockets, by splice(2): each move stamps `last` and counts
/// its bytes.
fn splice_relay<'a>(
    client: &'a TcpStream,
    origin: &'a TcpStream,
    last: &Arc<AtomicU64>,
    counters: &crate::metrics::L4Counters,
) -> Relay<'a> {
    let last = last.clone();
    let counters = counters.clone();
    Box::pin(async move {
        let moved = move |up: bool, n: u64| {
            last.store(now_ms(), Ordering::Relaxed);
            if up { &counters.up } else { &counters.down }.inc_by(n);
        };
        crate::splice::relay(client, origin, &moved).await
    })
}

/// The pipe between a client stream with our TLS on it and the origin, copied through buffers;
/// both streams are stamped and counted by `Watched`, and end with the pipe.
fn copy_relay<'a, C>(
    client: C,
    origin: TcpStream,
    last: &'a Arc<AtomicU64>,
    counters: &'a crate::metrics::L4Counters,
) -> Relay<'a>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    Box::pin(async move {
        let mut a = Watched {
            inner: client,
            last: last.clone(),
            read: counters.up.clone(),
        };
        let mut b = Watched {
            inner: origin,
            last: last.clone(),
            read: counters.down.clone(),
        };
        tokio::io::copy_bidirectional(&mut a, &mut b).await
    })
}

/// Drives the pipe to its end, or ends it with a TimedOut error once no byte has moved either
/// way (`last`) for `idle`.
async fn until_idle(
    copy: &mut Relay<'_>,
    last: &AtomicU64,
    idle: Duration,
) -> std::io::Result<(u64, u64)> {
    loop {
        let quiet = Duration::from_millis(now_ms().saturating_sub(last.load(Ordering::Relaxed)));
        if quiet >= idle {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle timeout",
            ));
        }
        tokio::select! {
            r = &mut *copy => return r,
            _ = tokio::time::sleep(idle - quiet) => {}
        }
    }
}
