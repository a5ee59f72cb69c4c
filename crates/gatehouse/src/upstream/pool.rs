//! Connections to one server: connect (with timeout, over every resolved address), the HTTP/1.1 or
//! h2c handshake, and the pool of idle keep-alive connections. An HTTP/1.1 connection goes back to
//! the pool only when its response body was read to its exact end (`h1::H1Body`).

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
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ServerState;
use super::h1::{H1Body, H1Conn, UpIo};
use crate::error::BoxError;

/// The body type sent upstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle connections kept per server at most.
const MAX_IDLE: usize = 512;

/// A ready connection.
pub enum Conn {
    /// HTTP/1.1: one request at a time, on a connection we drive ourselves.
    H1(H1Conn),
    /// h2c: multiplexed, shared.
    H2(http2::SendRequest<UpBody>),
}

struct Idle {
    conn: H1Conn,
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
                while let Some(mut c) = idle.pop() {
                    // Closed by the origin, or idle past the timeout: dropped (closed).
                    if c.since.elapsed() < self.idle_timeout && c.conn.is_reusable() {
                        return Some(Conn::H1(c.conn));
                    }
                }
                None
            }
            // SMTP sessions are never pooled.
            UpstreamProtocol::Smtp => None,
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

    /// Keeps an HTTP/1.1 connection whose last answer was read to its end.
    pub(crate) fn put_h1(&self, conn: H1Conn) {
        if !self.shared {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push(Idle {
                conn,
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
        None if server.pool.protocol == UpstreamProtocol::Http1 => {
            Ok(Conn::H1(H1Conn::new(UpIo::Tcp(tcp))))
        }
        None => handshake_h2(server, tcp).await,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| format!("TLS handshake with {} timed out", server.spec.address))?
                .map_err(|e| format!("TLS handshake with {} failed: {e}", server.spec.address))?;
            if server.pool.protocol == UpstreamProtocol::Http1 {
                return Ok(Conn::H1(H1Conn::new(UpIo::Tls(Box::new(tls)))));
            }
            handshake_h2(server, tls).await
        }
    }
}

async fn handshake_h2<T>(server: &ServerState, io: T) -> Result<Conn, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    server.pool.put_h2(&sender);
    Ok(Conn::H2(sender))
}

/// An origin's answer body.
pub enum UpstreamBody {
    /// Read by our HTTP/1.1 client; pools its connection at the end.
    H1(H1Body),
    /// From hyper's HTTP/2 client.
    H2(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}
