//! Binding and accepting: one accept task per bound address. A socket is bound before a reload
//! commits and starts accepting only after it does; stopping it closes the socket while open
//! connections carry on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use gatehouse_config::model::Listener;
use gatehouse_config::units::canonical_ip;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::Shared;
use super::per_ip::{PerIp, PerIpSlot};
use crate::http::pipeline::ConnCtx;

/// Starts a bound socket's accept task.
type Starter = Box<dyn FnOnce() -> JoinHandle<()> + Send>;

/// A bound socket and, once started, its accept task.
pub struct Bound {
    /// The address bound (port resolved).
    pub local: SocketAddr,
    pending: Mutex<Option<Starter>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Bound {
    /// Starts accepting.
    pub fn start(&self) {
        let start = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(start) = start
            && let Ok(mut t) = self.task.lock()
        {
            *t = Some(start());
        }
    }

    /// Stops accepting and closes the socket.
    /// Stops accepting. The socket closes when the aborted task is dropped: await the returned
    /// handle to know it is closed (so that the address can be bound again at once).
    pub fn stop(&self) -> Option<JoinHandle<()>> {
        if let Ok(mut p) = self.pending.lock() {
            p.take();
        }
        let task = self.task.lock().ok()?.take()?;
        task.abort();
        Some(task)
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "[::]:8080" and "0.0.0.0:8080" may both be listed: keep the families apart.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Binds an HTTP listener address; accepting starts with `Bound::start`.
pub fn bind_http(shared: &Arc<Shared>, l: &Listener, addr: SocketAddr) -> std::io::Result<Bound> {
    let listener = bind_tcp(addr)?;
    let local = listener.local_addr()?;
    let shared = shared.clone();
    let name: Arc<str> = Arc::from(l.name.as_str());
    let limit = l.max_connections.map(|m| Arc::new(Semaphore::new(m)));
    tracing::info!(listener = %name, %local, "listening");
    let start = move || {
        let per_ip = Arc::new(PerIp::default());
        tokio::spawn(accept_loop(listener, local, limit, per_ip, shared, name))
    };
    Ok(Bound {
        local,
        pending: Mutex::new(Some(Box::new(start))),
        task: Mutex::new(None),
    })
}

/// The next connection, within the listener's connection limit (the permit is held while the
/// connection lives). None: the limit's semaphore was closed.
async fn accept_next(
    listener: &TcpListener,
    limit: &Option<Arc<Semaphore>>,
) -> Option<(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>)> {
    loop {
        let permit = match limit {
            Some(s) => Some(s.clone().acquire_owned().await.ok()?),
            None => None,
        };
        match listener.accept().await {
            Ok((stream, peer)) => return Some((stream, peer, permit)),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections and serves each in a task of its own: the PROXY header when expected,
/// then the listener's engine (HTTP, SMTP, or L4).
async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    limit: Option<Arc<Semaphore>>,
    per_ip: Arc<PerIp>,
    shared: Arc<Shared>,
    name: Arc<str>,
) {
    while let Some((mut stream, peer, permit)) = accept_next(&listener, &limit).await {
        let shared = shared.clone();
        let name = name.clone();
        let per_ip = per_ip.clone();
        let fut = async move {
            let _permit = permit;
            let _guard = shared.track();
            let Some((settings, tls)) = settings_now(&shared, &name) else {
                return;
            };
            // Boxed (as the serving paths below): a task is as large as the largest
            // state of its future, for its whole life, and every idle connection would
            // otherwise carry room for reading a PROXY header.
            let accepted = if settings.proxy_protocol.is_some() {
                Box::pin(crate::listener_proxy::accept(
                    &mut stream,
                    &settings,
                    peer,
                    local,
                ))
                .await
            } else {
                Ok((peer, local))
            };
            let (peer, local) = match accepted {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::warn!(listener = %name, %peer, error = %e, "connection closed");
                    return;
                }
            };
            let Ok(_slot) = ip_slot(&per_ip, &settings, peer, &shared, &name) else {
                return;
            };
            if settings.protocol == gatehouse_config::model::ListenerProtocol::Smtp {
                Box::pin(crate::smtp::serve(
                    stream, &settings, tls, shared, &name, peer, local,
                ))
                .await;
                return;
            }
            if settings.protocol != gatehouse_config::model::ListenerProtocol::Http
                && settings.protocol != gatehouse_config::model::ListenerProtocol::Https
            {
                Box::pin(crate::l4::accepted(
                    stream, &settings, tls, shared, &name, peer, local,
                ))
                .await;
                return;
            }
            let ctx = ConnCtx {
                shared: shared.clone(),
                listener: name,
                peer,
                local,
                tls: None,
            };
            // Boxed too: the task stays ~300 bytes and the serving future is allocated
            // once at its own size (unboxed, rustc lays it out with copies of its
            // arguments and the task grows to ~2 KiB).
            match tls {
                Some(tls) => {
                    Box::pin(crate::http::server::serve_tls(stream, tls, &settings, ctx)).await
                }
                None => Box::pin(crate::http::server::serve(stream, &settings, ctx)).await,
            }
        };
        tokio::spawn(fut);
    }
}

/// The listener's settings and certificates as of this accept: a reload changes them for new
/// connections only.
fn settings_now(
    shared: &Shared,
    name: &str,
) -> Option<(Arc<Listener>, Option<Arc<crate::tls::ListenerTls>>)> {
    let snap = shared.snapshot();
    snap.listener(name)
        .map(|l| (l.model.clone(), l.tls.clone()))
}

/// A slot of the client's address under `max_connections_per_ip` (None when there is no
/// limit); Err: the address has all its slots, and the connection is to be closed (counted).
fn ip_slot(
    per_ip: &Arc<PerIp>,
    settings: &Listener,
    peer: SocketAddr,
    shared: &Shared,
    name: &Arc<str>,
) -> Result<Option<PerIpSlot>, ()> {
    let Some(max) = settings.max_connections_per_ip else {
        return Ok(None);
    };
    match per_ip.acquire(canonical_ip(peer.ip()), max) {
        Some(slot) => Ok(Some(slot)),
        None => {
            shared.metrics.connection_refused(name, "per_ip");
            tracing::debug!(listener = %name, %peer, max, "connection closed: max_connections_per_ip");
            Err(())
        }
    }
}

/// Binds a udp listener address; serving starts with `Bound::start`.
pub fn bind_udp(shared: &Arc<Shared>, l: &Listener, addr: SocketAddr) -> std::io::Result<Bound> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket = Arc::new(tokio::net::UdpSocket::from_std(socket.into())?);
    let local = socket.local_addr()?;
    let shared = shared.clone();
    let name: Arc<str> = Arc::from(l.name.as_str());
    tracing::info!(listener = %name, %local, "listening (udp)");
    let start = move || tokio::spawn(crate::udp::serve(socket, shared, name));
    Ok(Bound {
        local,
        pending: Mutex::new(Some(Box::new(start))),
        task: Mutex::new(None),
    })
}

/// Binds the admin listener.
pub fn bind_admin(shared: &Arc<Shared>, addr: SocketAddr) -> std::io::Result<Bound> {
    let listener = bind_tcp(addr)?;
    let local = listener.local_addr()?;
    let shared = shared.clone();
    tracing::info!(%local, "admin listening");
    let start = move || {
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(crate::admin::serve(stream, shared.clone()));
            }
        })
    };
    Ok(Bound {
        local,
        pending: Mutex::new(Some(Box::new(start))),
        task: Mutex::new(None),
    })
}
