//! Our HTTP/1.1 server side: one client connection, one request at a time, driven in the
//! connection's own task.
//!
//! Why not hyper's server: it was a quarter of the proxy's instructions per request
//! (bench/RESULTS.md, session 3) — a dispatcher with its own buffers and channels between the
//! connection and the request body, a header map built at its default size and rehashed when
//! the forwarding headers join it, and no way to see the framing headers it resolved (it frames
//! a request with both Transfer-Encoding and Content-Length by chunked alone and drops the
//! length, so a byte-level watch had to run beside it). Here the head is parsed by httparse
//! straight from the read buffer, checked for ambiguous framing (RFC 9112 §6.1, §6.3) before
//! anything acts on it, its values are slices of that buffer, and the answer's head is encoded
//! from the pipeline's parts into one buffer that usually leaves with the body in one write.
//!
//! The socket and the read buffer live behind one uncontended mutex shared with the request's
//! body (`Wire`): the body reads the socket itself when the upstream asks for more, while this
//! loop writes the answer, which is how an origin can answer before the upload ends (full
//! duplex). Idle connections are parked: after `PARK_AFTER` without a byte their buffers are
//! freed and the next request starts in a small stack buffer.
//!
//! `wire` holds the socket and reads the request body, `idle` waits for the next head,
//! `exchange` serves one request and writes its answer through `out`, and `upgrade` hands the
//! socket to a tunnel after a 101.

mod exchange;
mod idle;
mod out;
mod upgrade;
mod wire;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use gatehouse_config::model::Listener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use gatehouse_h1::request::{BodyIn, Refusal};
use gatehouse_h1::scan::HeadScan;

use super::pipeline::ConnCtx;
use idle::Next;
use out::Out;
use wire::{Wire, lock};

pub use upgrade::{ClientUpgrade, Prefixed, UpgradeIo, Upgraded};
pub use wire::H1RequestBody;

/// Room made in the read buffer before a read.
pub(crate) const READ_CHUNK: usize = 8 * 1024;
/// A parked connection's first read goes to the stack, then into a buffer of its size.
const PARKED_READ: usize = 1024;
/// Data frames up to this size are copied after the head into one buffer; larger ones are
/// written from their own memory (vectored).
const COPY_MAX: usize = 4 * 1024;
/// Answer bytes queued before the body is asked for more.
const HIGH_WATER: usize = 256 * 1024;
/// A request body left unread when its answer ended is read and dropped up to this size (so the
/// connection can carry the next request); a longer one closes the connection.
const DRAIN_MAX: u64 = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// An HTTP/1 connection idle this long between requests is parked: its read and write buffers
/// are freed, and the socket waits for the next request with none.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Connections parked since start: the allocator's housekeeping (main.rs) returns freed memory
/// to the OS after parks.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// How many times an HTTP/1 connection was parked since the process started.
pub fn parked_total() -> u64 {
    PARKED.load(Ordering::Relaxed)
}

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Serves HTTP/1 on a client connection until it ends, is upgraded, or shutdown completes it.
/// `prefix`: bytes already read from the socket (protocol detection), in the buffer that reads
/// go on into.
pub fn serve<T>(
    io: T,
    prefix: BytesMut,
    settings: &Listener,
    ctx: Arc<ConnCtx>,
) -> impl Future<Output = ()> + Send + '_
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The stream goes into the shared wire here, before the future exists: an async fn keeps
    // its by-value arguments for its whole life, and a TLS stream is 1,216 bytes.
    let wire = Arc::new(Mutex::new(Wire {
        io: Some(io),
        rbuf: prefix,
        scan: HeadScan::default(),
        body: BodyIn::Done,
        continue_at: None,
        generation: 0,
        reader: None,
    }));
    serve_wire(wire, settings, ctx)
}

/// [`serve`], from the wire on.
async fn serve_wire<T>(wire: Arc<Mutex<Wire<T>>>, settings: &Listener, ctx: Arc<ConnCtx>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn {
        wire,
        settings,
        stop: Box::pin(stopped(ctx.shared.shutdown_signal())),
        stop_registered: false,
        stopping: false,
        shared: ctx.shared.clone(),
        sleep: Box::pin(tokio::time::sleep(settings.client_header_timeout)),
        out: Out::default(),
        served: 0,
        parked: false,
        refused: false,
    };
    loop {
        let idle_since = Instant::now();
        let parsed = match conn.next_head(idle_since).await {
            Next::Head(p) => p,
            Next::Close => break,
            Next::Timeout => {
                conn.write_raw(RESPONSE_408).await;
                tracing::info!("client too slow to send request headers: 408");
                break;
            }
            Next::Refuse(refusal) => {
                let answer = refusal_answer(&ctx, refusal);
                conn.write_raw(answer.as_bytes()).await;
                conn.refused = true;
                break;
            }
        };
        match Box::pin(conn.exchange(parsed, &ctx)).await {
            Ok(true) => conn.served += 1,
            Ok(false) => break,
            Err(Upgrade) => return,
        }
    }
    // Ends the connection: a TLS stream sends its close_notify, a TCP one its FIN.
    let (io, unread) = {
        let mut w = lock(&conn.wire);
        (
            w.io.take(),
            conn.refused || w.body != BodyIn::Done || !w.rbuf.is_empty(),
        )
    };
    drop(conn);
    // A cleartext connection with nothing left unread just closes: the close sends the same
    // FIN a shutdown would, one system call sooner. TLS sends its close_notify first, and a
    // connection with bytes unread shuts its side down, then drains them (`linger`).
    let plain_done = ctx.tls.is_none() && !unread;
    // Boxed for the last awaits: held inline, the stream would widen the future for its life.
    if let Some(mut io) = io.filter(|_| !plain_done).map(Box::new) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncWriteExt::shutdown(&mut io),
        )
        .await;
        if unread {
            // Boxed: its buffer would otherwise sit in every connection's task.
            Box::pin(linger(&mut io)).await;
        }
    }
}

/// A request refused before the pipeline, counted and logged: its answer, which closes the
/// connection.
fn refusal_answer(ctx: &ConnCtx, Refusal(status, why): Refusal) -> String {
    // Counted, and logged at debug: a flood of malformed requests must not become
    // a flood of log lines.
    tracing::debug!(peer = %ctx.peer, %status, why, "request refused");
    // Counted like any answer, without a route or an upstream.
    let none: Arc<str> = Arc::from("");
    ctx.shared.metrics.observe_request(
        &ctx.listener,
        &none,
        &none,
        status.as_u16(),
        Duration::ZERO,
    );
    let body = format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

/// Reads and drops what the client still sends after our last answer, for a little while:
/// closing a socket with unread bytes resets it, and the reset can destroy the answer before
/// the client reads it (the "lingering close" of nginx and Apache).
async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < 4 * 1024 * 1024 {
            match tokio::io::AsyncReadExt::read(io, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// The connection was handed to a tunnel.
struct Upgrade;

/// Resolves when shutdown starts.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// One client connection: its shared wire, timers and answer queue.
struct Conn<'a, T> {
    wire: Arc<Mutex<Wire<T>>>,
    settings: &'a Listener,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stop_registered: bool,
    stopping: bool,
    shared: Arc<crate::runtime::Shared>,
    /// One timer per connection, moved only when it must fire earlier than it is set to (see
    /// `wait_read`): a busy connection does not touch the timer wheel per request.
    sleep: Pin<Box<Sleep>>,
    out: Out,
    served: u64,
    parked: bool,
    /// A request was refused before the pipeline: the client may still be sending its body.
    refused: bool,
}

impl<T> Conn<'_, T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Polls the shutdown signal (once it fired, never again).
    ///
    /// The signal's future is polled once to register this task, then again only once the
    /// process says it is stopping: polling it per request costs a lock on the channel that
    /// every connection shares.
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stopping || (self.stop_registered && !self.shared.stopping()) {
            return self.stopping;
        }
        self.stop_registered = true;
        if self.stop.as_mut().poll(cx).is_ready() {
            self.stopping = true;
        }
        self.stopping
    }

    /// Writes bytes of our own (a refusal, a 408), best effort within a second.
    async fn write_raw(&mut self, bytes: &[u8]) {
        self.out.small(bytes);
        let wire = &self.wire;
        let out = &mut self.out;
        let write = poll_fn(|cx| {
            let mut w = lock(wire);
            let Some(io) = w.io.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            ready!(out.poll_write(io, cx))?;
            Pin::new(io).poll_flush(cx)
        });
        let _: Result<io::Result<()>, _> =
            tokio::time::timeout(Duration::from_secs(1), write).await;
    }
}
