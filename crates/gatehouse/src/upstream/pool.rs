//! Connections to one server: connect (with timeout, over every resolved address), the HTTP/1.1 or
//! h2c handshake, and the pool of idle keep-alive connections. An HTTP/1.1 connection goes back to
//! the pool only when its response body was read to the end.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_config::model::UpstreamProtocol;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ServerState;
use crate::error::BoxError;

/// The body type sent upstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle connections kept per server at most.
const MAX_IDLE: usize = 512;

/// A ready connection.
pub enum Conn {
    /// HTTP/1.1: one request at a time.
    H1(http1::SendRequest<UpBody>),
    /// h2c: multiplexed, shared.
    H2(http2::SendRequest<UpBody>),
}

struct Idle {
    sender: http1::SendRequest<UpBody>,
    since: Instant,
}

/// Pooled connections of one server.
pub struct Pool {
    protocol: UpstreamProtocol,
    /// False when each connection carries one client's PROXY header: never reused.
    shared: bool,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<UpBody>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new(protocol: UpstreamProtocol, idle_timeout: Duration, shared: bool) -> Pool {
        Pool {
            protocol,
            shared,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        }
    }

    /// Idle HTTP/1.1 connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// A pooled connection that is still open and ready, if any.
    pub fn take(&self) -> Option<Conn> {
        if !self.shared {
            return None;
        }
        match self.protocol {
            UpstreamProtocol::Http1 => {
                let mut idle = self.idle.lock().ok()?;
                while let Some(c) = idle.pop() {
                    if c.sender.is_ready() && c.since.elapsed() < self.idle_timeout {
                        return Some(Conn::H1(c.sender));
                    }
                }
                None
            }
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let mut h2 = self.h2.lock().ok()?;
                match h2.as_ref() {
                    Some(s) if !s.is_closed() => Some(Conn::H2(s.clone())),
                    _ => {
                        *h2 = None;
                        None
                    }
                }
            }
        }
    }

    fn put_h1(&self, sender: http1::SendRequest<UpBody>) {
        if !self.shared {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn put_h2(&self, sender: &http2::SendRequest<UpBody>) {
        if !self.shared {
            return;
        }
        if let Ok(mut h2) = self.h2.lock() {
            *h2 = Some(sender.clone());
        }
    }
}

/// A socket for `addr`, bound as `source_address` says: a fixed address, or (transparent mode)
/// the client's own address with IP_TRANSPARENT, which needs CAP_NET_ADMIN and policy routing
/// that brings the replies back through this host (docs/operations.md).
fn socket_for(
    server: &ServerState,
    addr: SocketAddr,
    client: Option<SocketAddr>,
) -> io::Result<tokio::net::TcpSocket> {
    use gatehouse_config::model::SourceAddress;
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let bind_ip = match (server.source_address, client) {
        (Some(SourceAddress::Fixed(ip)), _) => Some(ip),
        (Some(SourceAddress::Client), Some(c)) => {
            let s = socket2::SockRef::from(&sock);
            if addr.is_ipv4() {
                s.set_ip_transparent_v4(true)?;
            } else {
                s.set_ip_transparent_v6(true)?;
            }
            Some(gatehouse_config::units::canonical_ip(c.ip()))
        }
        // Health checks and the like are the proxy's own connections.
        (Some(SourceAddress::Client), None) | (None, _) => None,
    };
    if let Some(ip) = bind_ip {
        if ip.is_ipv4() != addr.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source address {ip} and server {addr} are of different families"),
            ));
        }
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    Ok(sock)
}

/// Opens a TCP connection to one of the server's addresses within `timeout`; `client` is the
/// client's address, for transparent mode.
pub async fn connect_tcp(
    server: &ServerState,
    timeout: Duration,
    client: Option<SocketAddr>,
) -> io::Result<TcpStream> {
    let mut addrs: Vec<SocketAddr> = server.addrs.load().as_ref().clone();
    if addrs.is_empty() {
        addrs = super::health::resolve(&server.spec.host, server.spec.port).await?;
        server.addrs.store(Arc::new(addrs.clone()));
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let sock = match socket_for(server, addr, client) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match tokio::time::timeout(timeout, sock.connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out after {timeout:?}"),
                )
            }
        }
    }
    Err(last)
}

/// What a PROXY header sent to a server says about the client.
#[derive(Debug, Clone)]
pub struct ProxyHeader {
    /// The client.
    pub src: std::net::SocketAddr,
    /// The address the client connected to.
    pub dst: std::net::SocketAddr,
    /// ALPN the client negotiated with us (v2 TLV).
    pub alpn: Option<Vec<u8>>,
    /// SNI the client sent (v2 TLV).
    pub authority: Option<String>,
    /// TLS version when we terminated TLS (v2 SSL TLV).
    pub tls_version: Option<String>,
}

impl ProxyHeader {
    /// The header bytes for `version`.
    pub fn encode(&self, version: gatehouse_config::model::ProxyProtocol) -> Vec<u8> {
        use gatehouse_wire::proxy_protocol::{encode_v1, encode_v2, tlv};
        if version == gatehouse_config::model::ProxyProtocol::V1 {
            return encode_v1(self.src, self.dst);
        }
        let mut ssl = Vec::new();
        if let Some(v) = &self.tls_version {
            // PP2_CLIENT_SSL, verify = 0, then the SSL_VERSION sub-TLV (spec §2.2.5).
            ssl.push(0x01);
            ssl.extend_from_slice(&0u32.to_be_bytes());
            ssl.push(tlv::SSL_VERSION);
            ssl.extend_from_slice(&(v.len() as u16).to_be_bytes());
            ssl.extend_from_slice(v.as_bytes());
        }
        let mut tlvs: Vec<(u8, &[u8])> = Vec::new();
        if let Some(a) = &self.alpn {
            tlvs.push((tlv::ALPN, a));
        }
        if let Some(a) = &self.authority {
            tlvs.push((tlv::AUTHORITY, a.as_bytes()));
        }
        if !ssl.is_empty() {
            tlvs.push((tlv::SSL, &ssl));
        }
        encode_v2(self.src, self.dst, &tlvs)
    }
}

/// A new connection with the handshakes (PROXY header, TLS when configured, then HTTP) done.
pub async fn connect(
    server: &ServerState,
    timeout: Duration,
    proxy: Option<&ProxyHeader>,
) -> Result<Conn, BoxError> {
    let mut tcp = connect_tcp(server, timeout, proxy.map(|p| p.src)).await?;
    if let (Some(version), Some(h)) = (server.proxy_protocol, proxy) {
        use tokio::io::AsyncWriteExt;
        tcp.write_all(&h.encode(version)).await?;
    }
    match &server.tls {
        None => handshake(server, tcp).await,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| format!("TLS handshake with {} timed out", server.spec.address))?
                .map_err(|e| format!("TLS handshake with {} failed: {e}", server.spec.address))?;
            handshake(server, tls).await
        }
    }
}

async fn handshake<T>(server: &ServerState, io: T) -> Result<Conn, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    match server.pool.protocol {
        UpstreamProtocol::Http1 => {
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::H1(sender))
        }
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            server.pool.put_h2(&sender);
            Ok(Conn::H2(sender))
        }
    }
}

/// Hands an HTTP/1.1 connection back to its pool once it can take another request.
pub fn release(server: Arc<ServerState>, mut sender: http1::SendRequest<UpBody>) {
    if sender.is_ready() {
        server.pool.put_h1(sender);
    } else if !sender.is_closed() {
        // The connection task has not yet seen the end of the response: wait for it briefly.
        tokio::spawn(async move {
            let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                server.pool.put_h1(sender);
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body that returns its HTTP/1.1 connection to the pool when read to the end.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        ret: Option<(Arc<ServerState>, http1::SendRequest<UpBody>)>,
    }
}

impl PooledBody {
    /// Wraps `inner`; `ret` is the connection to release at the end, if pooling applies.
    pub fn new(
        inner: Incoming,
        ret: Option<(Arc<ServerState>, http1::SendRequest<UpBody>)>,
    ) -> Self {
        PooledBody { inner, ret }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        // hyper stops polling a body whose announced length was sent: the end is seen either as
        // the final None or as the stream reporting its own end after the last data frame.
        let ended = match &res {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        match &res {
            _ if ended => {
                if let Some((server, sender)) = this.ret.take() {
                    release(server, sender);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.ret.take();
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
