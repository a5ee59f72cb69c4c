//! One client connection: tell HTTP/2 (prior knowledge preface) from HTTP/1, enforce the header
//! and keep-alive timeouts on HTTP/1, serve requests through the pipeline, and shut down
//! gracefully on request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse_config::model::Listener;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::framing::FramingWatch;
use super::pipeline::{self, ConnCtx};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Whether a request is being served on an HTTP/1 connection (between the end of its headers
/// and the end of its answer), which pauses the header and keep-alive timers.
#[derive(Debug, Default)]
pub struct ConnTimer {
    in_request: AtomicBool,
    /// Requests answered so far: lets the IO notice a request that came and went without it
    /// being polled in between (head and body in one read).
    answered: AtomicU64,
    /// When the connection last became idle between requests (ms clock); 0 while a request
    /// head is arriving or being served.
    idle_since: AtomicU64,
    /// Set while the connection is being parked: hyper's closing of the socket is skipped.
    parking: AtomicBool,
    /// The current request's body has not been seen to its end: hyper may still be reading
    /// (or draining) it, so the connection is not idle whatever the socket looks like.
    body_open: AtomicBool,
    /// Framing verdicts of the heads read so far (uncontended: one connection's reads and
    /// requests take turns).
    framing: Mutex<FramingWatch>,
}

impl ConnTimer {
    /// The pipeline got a request head. Returns whether that head had ambiguous framing.
    pub fn begin_request(&self) -> bool {
        self.in_request.store(true, Ordering::Relaxed);
        self.framing
            .lock()
            .map(|mut f| f.next_verdict())
            .unwrap_or(false)
    }
    /// The answer's body ended.
    pub fn end_request(&self) {
        self.in_request.store(false, Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Relaxed);
    }
    /// Whether the request that just began has a body still to come.
    pub fn body_open(&self, open: bool) {
        self.body_open.store(open, Ordering::Relaxed);
    }
    /// The request's body was read to its end.
    pub fn body_done(&self) {
        self.body_open.store(false, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Some bytes of a request head came; the rest must come before the deadline.
    Headers,
    /// A request is being served.
    InRequest,
}

/// The client socket as hyper sees it: replays the bytes read to detect the protocol, and on
/// HTTP/1 answers 408 to a client too slow to send its headers (hyper itself would only close).
pub struct ClientIo<T> {
    inner: T,
    prefix: Bytes,
    /// How many leading bytes of `prefix` the framing watch has seen already (bytes hyper had
    /// read before the connection was parked).
    prescanned: usize,
    timer: Option<Arc<ConnTimer>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    phase: Phase,
    /// `ConnTimer::answered` when this IO last looked.
    answered: u64,
}

impl<T> ClientIo<T> {
    /// Feeds bytes read from the client to the framing watch; `fresh_request`: the connection was
    /// idle, so these bytes start a new head.
    fn scan(&self, bytes: &[u8], fresh_request: bool) {
        let Some(timer) = &self.timer else { return };
        if let Ok(mut f) = timer.framing.lock() {
            if fresh_request {
                f.resync();
            }
            f.feed(bytes);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            let head = this.prefix.split_to(n);
            let seen = this.prescanned.min(n);
            this.prescanned -= seen;
            this.scan(&head[seen..], false);
            return Poll::Ready(Ok(()));
        }
        let Some(timer) = &this.timer else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if timer.in_request.load(Ordering::Relaxed) {
            this.phase = Phase::InRequest;
            let before = buf.filled().len();
            let res = Pin::new(&mut this.inner).poll_read(cx, buf);
            // Body bytes, or a pipelined next request: the watch tells them apart.
            this.scan(&buf.filled()[before..], false);
            return res;
        }
        let answered = timer.answered.load(Ordering::Relaxed);
        if this.phase == Phase::InRequest || answered != this.answered {
            // A request was answered since the last read (even one we never saw in flight):
            // whatever was read before belongs to it; the connection is idle now.
            this.answered = answered;
            this.phase = Phase::Idle;
            this.sleep
                .as_mut()
                .reset(Instant::now() + this.idle_timeout);
            timer
                .idle_since
                .store(crate::upstream::now_ms().max(1), Ordering::Relaxed);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh_request = this.phase == Phase::Idle;
                if buf.filled().len() > before && fresh_request {
                    this.phase = Phase::Headers;
                    timer.idle_since.store(0, Ordering::Relaxed);
                    this.sleep
                        .as_mut()
                        .reset(Instant::now() + this.header_timeout);
                }
                this.scan(&buf.filled()[before..], fresh_request);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.phase {
                    Phase::Headers => {
                        // Best effort: a fresh 408 fits in any socket buffer; if it does not go
                        // out now the client was not listening anyway.
                        let _ = Pin::new(&mut this.inner).poll_write(cx, RESPONSE_408);
                        tracing::info!("client too slow to send request headers: 408");
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client header timeout",
                        )))
                    }
                    // Idle keep-alive connection: end it quietly (EOF).
                    _ => Poll::Ready(Ok(())),
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self
            .timer
            .as_ref()
            .is_some_and(|t| t.parking.load(Ordering::Relaxed))
        {
            // Parking: hyper lets go of the connection, the socket stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads until the HTTP/2 preface is confirmed or ruled out. None: the client left or stalled.
async fn sniff(stream: &mut TcpStream, timeout: Duration) -> Option<(bool, Bytes)> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    let work = async {
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let n = stream.read_buf(&mut buf).await.ok()?;
            if n == 0 {
                return None;
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
    Some((h2, buf.freeze()))
}

/// Resolves when shutdown starts (never holds the watch borrow across an await).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves a cleartext client connection until it ends or shutdown completes it.
pub async fn serve(mut stream: TcpStream, settings: &Listener, ctx: ConnCtx) {
    let _ = stream.set_nodelay(true);
    let Some((h2, prefix)) = sniff(&mut stream, settings.client_header_timeout).await else {
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
    let stream =
        match tokio::time::timeout(settings.client_header_timeout, acceptor.accept(stream)).await {
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
    serve_io(stream, h2, Bytes::new(), settings, ctx).await;
}

/// An HTTP/1 connection idle this long between requests is parked: hyper lets go of it (and
/// of its read and write buffers, 16-24 KiB), and the socket waits for the next request with no
/// buffer at all. A busy keep-alive connection never idles this long and stays with hyper.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Connections parked since start: the allocator's housekeeping (main.rs) returns freed memory
/// to the OS after parks.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// How many times an HTTP/1 connection was parked since the process started.
pub fn parked_total() -> u64 {
    PARKED.load(Ordering::Relaxed)
}

/// Bytes read from a parked connection at once: the start of the next request (hyper reads the
/// rest). Small, because it lives in every parked connection's task.
const PARKED_READ: usize = 64;

/// What an HTTP/1 connection keeps while parked, and hands to the next hyper connection.
struct Parked<T> {
    io: T,
    /// Bytes read but not parsed, in stream order.
    carried: BytesMut,
    /// How many leading bytes of `carried` the framing watch has seen.
    prescanned: usize,
}

/// Serves a connection whose protocol is known: HTTP/2, or HTTP/1 with parking between requests.
///
/// Every long state here is boxed so that the connection's task stays small while it is parked
/// (a task is as large as its future's largest state, for its whole life): hyper's connection,
/// the HTTP/2 path, and the select that drives a hyper connection.
async fn serve_io<T>(stream: T, h2: bool, prefix: Bytes, settings: &Listener, ctx: ConnCtx)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        Box::pin(serve_h2(stream, prefix, settings, ctx)).await;
        return;
    }
    let timer = Arc::new(ConnTimer::default());
    let ctx = Arc::new(ConnCtx {
        timer: Some(timer.clone()),
        ..ctx
    });
    let mut shutdown = ctx.shared.shutdown_signal();
    let mut next = Parked {
        io: stream,
        carried: BytesMut::from(&prefix[..]),
        prescanned: 0,
    };
    drop(prefix);
    loop {
        let Some(mut parked) = Box::pin(serve_h1(next, settings, &ctx, &mut shutdown)).await else {
            return;
        };
        PARKED.fetch_add(1, Ordering::Relaxed);
        if parked.carried.is_empty() {
            let since = timer.idle_since.load(Ordering::Relaxed);
            let waited = Duration::from_millis(crate::upstream::now_ms().saturating_sub(since));
            let left = settings.keepalive_timeout.saturating_sub(waited);
            let mut first = [0u8; PARKED_READ];
            let n = tokio::select! {
                r = tokio::time::timeout(left, parked.io.read(&mut first)) => match r {
                    Ok(Ok(n)) if n > 0 => n,
                    // Closed, failed, or idle past keepalive_timeout: end quietly.
                    _ => {
                        close_quietly(&mut parked.io).await;
                        return;
                    }
                },
                _ = stopped(&mut shutdown) => {
                    close_quietly(&mut parked.io).await;
                    return;
                }
            };
            parked.carried.extend_from_slice(&first[..n]);
            // A new head starts here: a watch that had given up starts afresh.
            if let Ok(mut f) = timer.framing.lock() {
                f.resync();
            }
        }
        if *shutdown.borrow() {
            // Stopping: no new connection for bytes that came in meanwhile.
            close_quietly(&mut parked.io).await;
            return;
        }
        next = parked;
    }
}

/// An HTTP/2 connection, to its end.
async fn serve_h2<T>(stream: T, prefix: Bytes, settings: &Listener, ctx: ConnCtx)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = ctx.shared.shutdown_signal();
    let ctx = Arc::new(ctx);
    let service = service_fn(move |req| Box::pin(pipeline::handle(req, ctx.clone())));
    let io = TokioIo::new(client_io(stream, prefix, 0, None, settings));
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let mut conn = b.serve_connection(io, service);
    let res = until_done(Pin::new(&mut conn), &mut shutdown, |c| {
        c.graceful_shutdown()
    })
    .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "h2 client connection ended with an error");
    }
}

/// Our IO around a client socket.
fn client_io<T>(
    inner: T,
    prefix: Bytes,
    prescanned: usize,
    timer: Option<Arc<ConnTimer>>,
    settings: &Listener,
) -> ClientIo<T> {
    ClientIo {
        inner,
        phase: if prefix.is_empty() {
            Phase::Idle
        } else {
            Phase::Headers
        },
        answered: timer
            .as_ref()
            .map_or(0, |t| t.answered.load(Ordering::Relaxed)),
        prefix,
        prescanned,
        timer,
        header_timeout: settings.client_header_timeout,
        idle_timeout: settings.keepalive_timeout,
        sleep: Box::pin(tokio::time::sleep(settings.client_header_timeout)),
    }
}

/// One hyper HTTP/1 connection over the socket, until the connection ends (None) or has been
/// idle for `PARK_AFTER` (Some: the socket and the bytes read but not parsed).
async fn serve_h1<T>(
    from: Parked<T>,
    settings: &Listener,
    ctx: &Arc<ConnCtx>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Parked<T>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timer = ctx.timer.clone()?;
    let mut b = hyper::server::conn::http1::Builder::new();
    // hyper refuses a read buffer under 8 KiB; a larger head answers 431.
    b.max_buf_size(settings.max_header_size.max(8192))
        .keep_alive(true)
        .max_headers(256);
    // Only an answered request makes a connection idle (then `ClientIo` stamps the time): one
    // that has not sent its first request yet stays under `client_header_timeout`.
    timer.idle_since.store(0, Ordering::Relaxed);
    let io = TokioIo::new(client_io(
        from.io,
        from.carried.freeze(),
        from.prescanned,
        Some(timer.clone()),
        settings,
    ));
    // Boxed: hyper's HTTP/1 dispatcher allocates a slot the size of the service's future for
    // every connection, for its whole life (`in_flight: Pin<Box<Option<F>>>`). The pipeline's
    // future is large (it holds the cache flow and the forward), so unboxed it costs every
    // connection ~12 KiB more; boxed, the slot is a pointer and the allocation lives only while
    // a request does.
    let conn_ctx = ctx.clone();
    let service = service_fn(move |req| Box::pin(pipeline::handle(req, conn_ctx.clone())));
    let mut conn = b.serve_connection(io, service).with_upgrades();
    let mut tick = tokio::time::interval(PARK_AFTER);
    let parked = loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                break false;
            }
            _ = stopped(shutdown) => {
                Pin::new(&mut conn).graceful_shutdown();
                if let Err(e) = (&mut conn).await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return None;
            }
            _ = tick.tick() => {
                let since = timer.idle_since.load(Ordering::Relaxed);
                // Idle: an answer went out, its request's body was read to the end, and no
                // byte has come since (the first byte of a head clears `idle_since`).
                let idle = since != 0
                    && !timer.in_request.load(Ordering::Relaxed)
                    && !timer.body_open.load(Ordering::Relaxed)
                    && crate::upstream::now_ms().saturating_sub(since)
                        >= PARK_AFTER.as_millis() as u64;
                if idle {
                    // hyper closes an idle connection at once on graceful shutdown (no answer
                    // in flight, no head begun: our IO saw no byte since it went idle); the
                    // socket itself stays open (`parking`).
                    timer.parking.store(true, Ordering::Relaxed);
                    Pin::new(&mut conn).graceful_shutdown();
                    let r = (&mut conn).await;
                    timer.parking.store(false, Ordering::Relaxed);
                    break r.is_ok();
                }
            }
        }
    };
    if !parked {
        return None;
    }
    // Upgraded connections have no parts (the tunnel owns the socket).
    let parts = conn.into_parts()?;
    let ClientIo {
        inner: io,
        prefix: left,
        prescanned: left_seen,
        ..
    } = parts.io.into_inner();
    // In stream order: what hyper had read but not parsed (the framing watch has seen it), then
    // what our IO had not handed to hyper yet. Copied, so hyper's buffer is freed.
    let mut carried = BytesMut::new();
    carried.extend_from_slice(&parts.read_buf);
    let mut prescanned = parts.read_buf.len() + left_seen.min(left.len());
    carried.extend_from_slice(&left);
    if carried.iter().all(|b| *b == b'\r' || *b == b'\n') {
        // Only empty lines before the next request line, which a server may ignore (RFC 9112
        // §2.2): dropped, with the framing watch's view of them.
        carried = BytesMut::new();
        prescanned = 0;
        if let Ok(mut f) = timer.framing.lock() {
            *f = super::framing::FramingWatch::default();
        }
    }
    Some(Parked {
        io,
        carried,
        prescanned,
    })
}

/// Ends a parked connection: a TLS stream sends its close_notify, a TCP one its FIN.
async fn close_quietly<T: AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
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
