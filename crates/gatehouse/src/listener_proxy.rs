//! PROXY protocol, receiving: on a listener with `proxy_protocol`, the first bytes of a connection
//! from a trusted proxy are a PROXY header (bounded in size, read within
//! `client_header_timeout`); its source address becomes the client for everything downstream.
//! The header is read with MSG_PEEK and then consumed exactly, so the bytes after it reach the
//! HTTP or TLS engine untouched.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_config::model::{Listener, ProxyProtocol};
use gatehouse_wire::proxy_protocol::{self, Accept, V2_MAX};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Why a connection was closed before any request.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// PROXY headers are accepted only from `trusted_proxies`.
    #[error("PROXY header expected from {0}, which is not a trusted proxy")]
    Untrusted(SocketAddr),
    /// Malformed or too long.
    #[error("{0}")]
    Bad(#[from] proxy_protocol::Error),
    /// Nothing complete within the time.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The socket failed or closed.
    #[error("connection closed while reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header when the listener expects one; returns the (client, local) addresses
/// to use from now on.
pub async fn accept(
    stream: &mut TcpStream,
    settings: &Listener,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(SocketAddr, SocketAddr), Refused> {
    let Some(expect) = settings.proxy_protocol else {
        return Ok((peer, local));
    };
    if !settings
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer.ip()))
    {
        return Err(Refused::Untrusted(peer));
    }
    let accept = match expect {
        ProxyProtocol::V1 => Accept::V1,
        ProxyProtocol::V2 => Accept::V2,
        ProxyProtocol::Any => Accept::Any,
    };
    let limit = settings.client_header_timeout;
    let header = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; V2_MAX];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(Refused::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            match proxy_protocol::parse(&buf[..n], accept)? {
                Some(h) => return Ok(h),
                // Part of a header: wait for more (peek returns at once while data is queued).
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    })
    .await
    .map_err(|_| Refused::Timeout(limit))??;
    let mut consumed = vec![0u8; header.len];
    stream.read_exact(&mut consumed).await?;
    Ok(header.addrs.unwrap_or((peer, local)))
}
