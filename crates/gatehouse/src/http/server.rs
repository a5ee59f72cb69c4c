//! One client connection: tell HTTP/2 (prior knowledge preface) from HTTP/1, then serve it:
//! HTTP/1 by our own loop (`h1`), HTTP/2 by hyper's server; shut down gracefully on request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse_config::model::Listener;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::ClientBody;
use super::headers;
use super::pipeline::{self, ConnCtx};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Reads until the HTTP/2 preface is confirmed or ruled out. None: the client left or stalled.
/// The bytes read are the connection's first read buffer: the first read takes what the client
/// sent (usually its whole first request) in one system call, and the buffer is allocated only
/// once there are bytes to read, so a connection that sends nothing holds none.
async fn sniff(stream: &mut TcpStream, timeout: Duration) -> Option<(bool, BytesMut)> {
    let mut buf = BytesMut::new();
    let work = async {
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            stream.readable().await.ok()?;
            if buf.capacity() == buf.len() {
                buf.reserve(super::h1::READ_CHUNK);
            }
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        Some(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Some(())) => {}
        Ok(None) => return None,
        Err(_) => {
            if !buf.is_empty() {
                let _ = stream.write_all(RESPONSE_408).await;
            }
            return None;
        }
    }
    let h2 = buf.starts_with(H2_PREFACE);
    Some((h2, buf))
}

/// Resolves when shutdown starts (never holds the watch borrow across an await).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves a cleartext client connection until it ends or shutdown completes it.
pub async fn serve(mut stream: TcpStream, settings: &Listener, ctx: ConnCtx) {
    let _ = stream.set_nodelay(true);
    // Boxed: its readiness wait would otherwise widen every connection's task for its life.
    let Some((h2, prefix)) = Box::pin(sniff(&mut stream, settings.client_header_timeout)).await
    else {
        return;
    };
    serve_io(stream, h2, prefix, settings, ctx).await;
}

/// Serves a TLS client connection: handshake (within `client_header_timeout`), then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
pub async fn serve_tls(
    stream: TcpStream,
    tls: std::sync::Arc<crate::tls::ListenerTls>,
    settings: &Listener,
    mut ctx: ConnCtx,
) {
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    // Boxed: the handshake's state (1,328 bytes) is freed once it is done.
    let handshake = Box::pin(tokio::time::timeout(
        settings.client_header_timeout,
        acceptor.accept(stream),
    ));
    // The stream (1,216 bytes) lives in this block only: a local moved out at the await below
    // would still take its room in this future's state.
    let serving = {
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %ctx.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %ctx.peer, "TLS handshake timed out");
                return;
            }
        };
        let (_, conn) = stream.get_ref();
        if conn.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
            // An ACME tls-alpn-01 validation: the handshake was the answer (RFC 8737 §3).
            return;
        }
        let h2 = conn.alpn_protocol() == Some(b"h2");
        ctx.tls = Some(Arc::new(tls.info(conn)));
        serve_io(stream, h2, BytesMut::new(), settings, ctx)
    };
    serving.await;
}

/// Serves a connection whose protocol is known.
///
/// Each path is boxed so that the connection's task stays small while it waits (a task is as
/// large as its future's largest state, for its whole life).
///
/// Not an async fn: one would keep `stream` (a TLS stream is 1,216 bytes) in its state for the
/// connection's life.
fn serve_io<T>(
    stream: T,
    h2: bool,
    prefix: BytesMut,
    settings: &Listener,
    ctx: ConnCtx,
) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        Box::pin(serve_h2(stream, prefix.freeze(), settings, ctx))
    } else {
        Box::pin(super::h1::serve(stream, prefix, settings, Arc::new(ctx)))
    }
}

/// An HTTP/2 connection, to its end.
///
/// Not an async fn: one would keep `stream` in its state beside the connection that took it (a
/// TLS stream is 1,216 bytes). The connection is built here, then driven.
fn serve_h2<T>(
    stream: T,
    prefix: Bytes,
    settings: &Listener,
    ctx: ConnCtx,
) -> impl Future<Output = ()> + Send + 'static
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = ctx.shared.shutdown_signal();
    let ctx = Arc::new(ctx);
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut resp = pipeline::handle(Box::new(parts), ClientBody::H2(body), ctx).await;
            // hyper writes the header map alone: fields kept as an origin sent them would join it
            // (the pipeline keeps none for HTTP/2 clients today; this keeps it so if that changes).
            if let Some(raw) = resp.body_mut().take_raw() {
                let added = std::mem::take(resp.headers_mut());
                *resp.headers_mut() = raw.into_map(added);
            }
            headers::never_index_request_ids(resp.headers_mut());
            Ok::<_, std::convert::Infallible>(resp)
        })
    });
    // The bytes read to detect the protocol are read again by hyper.
    let io = TokioIo::new(super::h1::Prefixed::new(stream, prefix));
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // The guards hyper's h2 has, pinned here at the values we rely on (hyper's and h2's
    // defaults as of hyper 1.12 / h2 0.4.20, so pinning changes nothing today):
    // - 200 concurrent streams a connection (RFC 9113 §5.1.2);
    // - 20 streams reset by the client before we accepted them, then GOAWAY (the "rapid
    //   reset" attack, CVE-2023-44487);
    // - 1024 streams we reset for the client's errors, then GOAWAY (CVE-2024-2653's kin);
    // - our PING every 30s, the connection closed when its ack takes more than 20s.
    // h2 has no count of the client's PING or SETTINGS frames: it acks each one, holding at
    // most one pending ack (it reads no further frame until the ack is buffered), so a flood
    // costs CPU and bandwidth but no memory, and is never closed. See tests/e2e/h2_guards.rs.
    b.timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_size as u32)
        .max_concurrent_streams(200)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut conn = b.serve_connection(io, service);
    let mut shutdown = shutdown;
    // A block, not an async fn: a function would move `conn` (1,520 bytes) from its argument
    // into a local, and keep room for both.
    async move {
        let res = until_done(Pin::new(&mut conn), &mut shutdown, |c| {
            c.graceful_shutdown()
        })
        .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "h2 client connection ended with an error");
        }
    }
}

/// Runs a connection to its end; when shutdown starts, asks it to finish the requests in flight
/// (`graceful`) and waits for that.
async fn until_done<C, E>(
    mut conn: Pin<&mut C>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    graceful: fn(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(shutdown) => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}
