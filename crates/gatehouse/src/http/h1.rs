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

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gatehouse_config::model::Listener;
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use gatehouse_h1::chunked::{Step, chunk_line, decode_chunk, overlong, put_last_chunk};
use gatehouse_h1::encode::{BodyOut, encode_answer};
use gatehouse_h1::request::{BodyIn, Parsed, Refusal, parse_request};
use gatehouse_h1::scan::HeadScan;

use super::pipeline::{self, ConnCtx};
use crate::error::BoxError;
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
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The socket and what was read from it, shared by the connection loop and the current
/// request's body.
struct Wire<T> {
    /// None once an upgrade took the socket.
    io: Option<T>,
    rbuf: BytesMut,
    /// How far `rbuf` was searched for the end of a request head.
    scan: HeadScan,
    body: BodyIn,
    /// Bytes of "100 Continue" still to write before the body is read; None: not owed.
    continue_at: Option<usize>,
    /// Which request's body the wire is on: a body handle from an earlier request (still held
    /// by an upstream that polls it from its own task) reads nothing of a later one.
    generation: u64,
    /// The waker of a body reader waiting for bytes, woken when its request ends.
    reader: Option<std::task::Waker>,
}

/// Locks a wire. The lock is never held across an await or a call into other code, so it is
/// never contended within a connection's task; a poisoned lock (a panic while held) is taken
/// as it is.
fn lock<T>(w: &Mutex<Wire<T>>) -> MutexGuard<'_, Wire<T>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: AsyncRead + AsyncWrite + Unpin> Wire<T> {
    /// Reads once more into the buffer. A parked connection (no buffer) reads into the stack
    /// first, so that an idle connection never holds a buffer.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.rbuf.capacity() == 0 {
            let mut tmp = [0u8; PARKED_READ];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(io).poll_read(cx, &mut rb))?;
            self.rbuf.extend_from_slice(rb.filled());
            return Poll::Ready(Ok(rb.filled().len()));
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.rbuf)
    }

    /// Writes what is owed of "100 Continue" (RFC 9110 §10.1.1), once the body is wanted.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(at) = self.continue_at {
            let io = self
                .io
                .as_mut()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            if at == CONTINUE.len() {
                ready!(Pin::new(io).poll_flush(cx))?;
                self.continue_at = None;
                break;
            }
            let n = ready!(Pin::new(io).poll_write(cx, &CONTINUE[at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_at = Some(at + n);
        }
        Poll::Ready(Ok(()))
    }

    fn fail_body(
        &mut self,
        e: impl Into<BoxError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.body = BodyIn::Failed;
        Poll::Ready(Some(Err(e.into())))
    }

    /// The next frame of the request body.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.body {
                BodyIn::Done => return Poll::Ready(None),
                BodyIn::Failed => {
                    return Poll::Ready(Some(
                        Err("the client's request body was cut short".into()),
                    ));
                }
                BodyIn::Length(0) => {
                    self.body = BodyIn::Done;
                    return Poll::Ready(None);
                }
                BodyIn::Length(left) => {
                    if !self.rbuf.is_empty() {
                        let take = (self.rbuf.len() as u64).min(left) as usize;
                        let data = self.rbuf.split_to(take).freeze();
                        self.body = BodyIn::Length(left - take as u64);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyIn::Chunked(state) => match decode_chunk(&mut self.rbuf, state) {
                    Err(e) => return self.fail_body(e),
                    Ok(Step::Data(data, next)) => {
                        self.body = BodyIn::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Next(next)) => {
                        self.body = BodyIn::Chunked(next);
                        continue;
                    }
                    Ok(Step::End(trailers)) => {
                        self.body = BodyIn::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Step::More) => {
                        if overlong(self.rbuf.len()) {
                            return self.fail_body("chunk line or trailers too long");
                        }
                    }
                },
            }
            // More bytes are needed.
            if let Err(e) = ready!(self.poll_continue(cx)) {
                return self.fail_body(e);
            }
            match ready!(self.poll_read_more(cx)) {
                Ok(0) => return self.fail_body("client closed the connection mid-body"),
                Ok(_) => {}
                Err(e) => return self.fail_body(e),
            }
        }
    }
}

/// What a request's body reads from, without the socket's type.
trait BodySource: Send + Sync {
    fn poll_body(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>;
    fn remaining(&self, generation: u64) -> SizeHint;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> BodySource for Mutex<Wire<T>> {
    fn poll_body(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut w = lock(self);
        if w.generation != generation {
            return Poll::Ready(Some(Err(
                "the request ended before its body was read".into()
            )));
        }
        let res = w.poll_body(cx);
        if res.is_pending() {
            w.reader = Some(cx.waker().clone());
        }
        res
    }
    fn remaining(&self, generation: u64) -> SizeHint {
        let w = lock(self);
        match w.body {
            _ if w.generation != generation => SizeHint::default(),
            BodyIn::Length(n) => SizeHint::with_exact(n),
            BodyIn::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl<T> Wire<T> {
    /// The current request is over: its body handle, wherever it is, reads no more (and a
    /// reader waiting for bytes is woken to hear so).
    fn end_request(&mut self) {
        self.generation += 1;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// A request body read from an HTTP/1 client connection.
pub struct H1RequestBody {
    src: Arc<dyn BodySource>,
    generation: u64,
    ended: bool,
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let res = self.src.poll_body(self.generation, cx);
        if let Poll::Ready(None) = res {
            self.ended = true;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.src.remaining(self.generation)
        }
    }
}

/// A socket with bytes already read from it in front: they are read first (protocol detection
/// before HTTP/2, bytes past the head before a tunnel); writes go to the socket.
pub struct Prefixed<T> {
    inner: T,
    prefix: Bytes,
}

impl<T> Prefixed<T> {
    /// `inner`, read after `prefix`.
    pub fn new(inner: T, prefix: Bytes) -> Self {
        Prefixed { inner, prefix }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An emptied slice still holds its whole buffer (the sniff's 8 KiB): let it go.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
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
        bufs: &[IoSlice<'_>],
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's side of a tunnel after `101 Switching Protocols`: the socket and the bytes read
/// past the request's head.
pub type Upgraded = Prefixed<Box<dyn UpgradeIo>>;

/// A client socket of any kind (TCP, TLS), for a tunnel.
pub trait UpgradeIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradeIo for T {}

/// In the extensions of a request that asked to switch protocols: resolves to the client's
/// socket once a 101 answer has been written to it.
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl ClientUpgrade {
    /// The client's socket; None when the connection ended without switching.
    pub async fn wait(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// Answer bytes waiting to be written: small pieces gathered in `tail`, large body frames
/// queued as they came.
#[derive(Default)]
struct Out {
    bufs: VecDeque<Bytes>,
    tail: Vec<u8>,
    /// Bytes of `tail` already written.
    tail_at: usize,
    len: usize,
}

impl Out {
    fn small(&mut self, b: &[u8]) {
        self.tail.extend_from_slice(b);
        self.len += b.len();
    }

    /// Lets `f` append to the small pieces (an answer's head).
    fn extend<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let before = self.tail.len();
        let r = f(&mut self.tail);
        self.len += self.tail.len() - before;
        r
    }

    fn data(&mut self, b: Bytes) {
        if b.len() <= COPY_MAX {
            self.small(&b);
            return;
        }
        if self.tail.len() > self.tail_at {
            let mut t = std::mem::take(&mut self.tail);
            t.drain(..self.tail_at);
            self.tail_at = 0;
            self.bufs.push_back(Bytes::from(t));
        }
        self.len += b.len();
        self.bufs.push_back(b);
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes until everything queued is written or the socket is full.
    fn poll_write<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let n = if io.is_write_vectored() && !self.bufs.is_empty() {
                let mut slices = [IoSlice::new(&[]); 16];
                let mut k = 0;
                for b in self.bufs.iter().take(15) {
                    slices[k] = IoSlice::new(b);
                    k += 1;
                }
                // The tail comes after every queued buffer, so only when all of them are in.
                if k == self.bufs.len() && self.tail.len() > self.tail_at {
                    slices[k] = IoSlice::new(&self.tail[self.tail_at..]);
                    k += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?
            } else if let Some(b) = self.bufs.front() {
                ready!(Pin::new(&mut *io).poll_write(cx, b))?
            } else {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.tail[self.tail_at..]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            if let Some(b) = self.bufs.front_mut() {
                if n >= b.len() {
                    n -= b.len();
                    self.bufs.pop_front();
                } else {
                    b.advance(n);
                    n = 0;
                }
            } else {
                self.tail_at += n;
                n = 0;
            }
        }
        if self.tail_at == self.tail.len() {
            self.tail.clear();
            self.tail_at = 0;
        }
    }
}

/// Queues one frame of the answer's body. Err: the body does not fit its framing.
fn encode_frame(
    out: &mut Out,
    framing: &mut BodyOut,
    frame: Frame<Bytes>,
) -> Result<(), &'static str> {
    let data = match frame.into_data() {
        Ok(d) => d,
        Err(frame) => {
            if let (BodyOut::Chunked, Ok(trailers)) = (*framing, frame.into_trailers()) {
                put_last_chunk(&mut |b| out.small(b), &trailers);
                *framing = BodyOut::None;
            }
            return Ok(());
        }
    };
    match framing {
        BodyOut::None => {}
        BodyOut::Close => out.data(data),
        BodyOut::Length(left) => {
            if data.len() as u64 > *left {
                return Err("answer body longer than its Content-Length");
            }
            *left -= data.len() as u64;
            out.data(data);
        }
        BodyOut::Chunked => {
            if !data.is_empty() {
                let mut line = [0u8; 18];
                out.small(chunk_line(&mut line, data.len()));
                out.data(data);
                out.small(b"\r\n");
            }
        }
    }
    Ok(())
}

/// Ends the answer's body on the wire. Err: it ended short of its Content-Length.
fn encode_end(out: &mut Out, framing: BodyOut) -> Result<(), &'static str> {
    match framing {
        BodyOut::Length(n) if n > 0 => Err("answer body shorter than its Content-Length"),
        BodyOut::Chunked => {
            out.small(b"0\r\n\r\n");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What waiting for the next head ended with.
enum Next {
    Head(Parsed),
    Close,
    Refuse(Refusal),
    Timeout,
}

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
            Next::Refuse(Refusal(status, why)) => {
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
                let head = format!(
                    "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    body.len()
                );
                conn.write_raw(head.as_bytes()).await;
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

/// How long a request may be served before its socket is watched for the client leaving.
/// Watching costs a read per request (the socket still reads as ready from the head), so short
/// requests are not watched; long polls and quiet streams are.
const WATCH_AFTER: Duration = Duration::from_secs(1);

/// Notices a client that closes its connection while its request is served or its answer
/// streams, so that the upstream request is cancelled (as hyper did; nginx does the same,
/// HAProxy only with `abortonclose`).
struct GoneWatch {
    from: Instant,
    on: bool,
}

impl GoneWatch {
    /// Starts the watch's clock; the connection's timer fires at `from` at the latest.
    fn new(sleep: &mut Pin<Box<Sleep>>) -> Self {
        let from = Instant::now() + WATCH_AFTER;
        crate::lazy_timer::pull_in(sleep, from);
        GoneWatch { from, on: false }
    }

    /// True when the client has left. Reads only when no body is being read from the socket,
    /// keeping what it reads (a pipelined request) up to `max` bytes.
    fn poll<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &Mutex<Wire<T>>,
        sleep: &mut Pin<Box<Sleep>>,
        max: usize,
        cx: &mut Context<'_>,
    ) -> bool {
        if !self.on {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() < self.from {
                sleep.as_mut().reset(self.from);
                let _ = sleep.as_mut().poll(cx);
                return false;
            }
            self.on = true;
        }
        let mut w = lock(wire);
        loop {
            if w.body != BodyIn::Done || w.rbuf.len() >= max {
                return false;
            }
            match w.poll_read_more(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
    }
}

/// What one wait for bytes ended with.
enum Wait {
    Bytes,
    Eof,
    Stop,
    Deadline,
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

    /// Reads once, or waits until `deadline` passes (`Wait::Deadline`), or shutdown starts
    /// while `idle`.
    async fn wait_read(&mut self, deadline: Instant, idle: bool) -> io::Result<Wait> {
        poll_fn(|cx| {
            if self.poll_stop(cx) && idle {
                return Poll::Ready(Ok(Wait::Stop));
            }
            match lock(&self.wire).poll_read_more(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Wait::Eof)),
                Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Wait::Bytes)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            ready!(crate::lazy_timer::poll_until(&mut self.sleep, deadline, cx));
            Poll::Ready(Ok(Wait::Deadline))
        })
        .await
    }

    /// Waits for a complete request head.
    async fn next_head(&mut self, idle_since: Instant) -> Next {
        let s = self.settings;
        // Before the first request a connection has the header timeout to start one.
        let idle_limit = if self.served == 0 {
            s.client_header_timeout
        } else {
            s.keepalive_timeout
        };
        let mut head_since: Option<Instant> = None;
        loop {
            let idle = {
                let mut w = lock(&self.wire);
                // Empty lines before a request line may be ignored (RFC 9112 §2.2).
                let blank = w
                    .rbuf
                    .iter()
                    .position(|b| *b != b'\r' && *b != b'\n')
                    .unwrap_or(w.rbuf.len());
                if blank > 0 {
                    w.rbuf.advance(blank);
                    w.scan.reset();
                }
                if w.rbuf.is_empty() {
                    true
                } else {
                    let w = &mut *w;
                    match parse_request(&mut w.rbuf, &mut w.scan, s.max_header_size) {
                        Ok(Some(mut p)) => {
                            w.body = p.body;
                            if p.expect_continue {
                                w.continue_at = Some(0);
                            }
                            if self.stopping {
                                p.close = true;
                            }
                            return Next::Head(p);
                        }
                        Ok(None) if w.rbuf.len() > s.max_header_size => {
                            return Next::Refuse(Refusal(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "request head too large",
                            ));
                        }
                        Ok(None) => false,
                        Err(r) => return Next::Refuse(r),
                    }
                }
            };
            if idle && self.stopping {
                return Next::Close;
            }
            if !idle && head_since.is_none() {
                head_since = Some(Instant::now());
            }
            let deadline = match head_since {
                Some(t) => t + s.client_header_timeout,
                None if !self.parked && self.served > 0 => {
                    (idle_since + PARK_AFTER).min(idle_since + idle_limit)
                }
                None => idle_since + idle_limit,
            };
            match self.wait_read(deadline, idle).await {
                Ok(Wait::Bytes) => {
                    self.parked = false;
                }
                Ok(Wait::Eof) | Err(_) | Ok(Wait::Stop) => return Next::Close,
                Ok(Wait::Deadline) => {
                    if head_since.is_some() {
                        return Next::Timeout;
                    }
                    if Instant::now() >= idle_since + idle_limit {
                        // Idle past the keep-alive timeout: end quietly.
                        return Next::Close;
                    }
                    self.park();
                }
            }
        }
    }

    /// Frees the connection's buffers while it waits for its next request.
    fn park(&mut self) {
        let mut w = lock(&self.wire);
        if w.rbuf.is_empty() {
            w.rbuf = BytesMut::new();
        }
        self.out = Out::default();
        self.parked = true;
        PARKED.fetch_add(1, Ordering::Relaxed);
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

    /// Serves one request: the pipeline's answer written to the client. Ok(true): the
    /// connection can carry another request.
    async fn exchange(&mut self, p: Parsed, ctx: &Arc<ConnCtx>) -> Result<bool, Upgrade> {
        let Parsed {
            mut parts,
            body,
            mut close,
            upgrade,
            ..
        } = p;
        let head_request = parts.method == Method::HEAD;
        let client_10 = parts.version == Version::HTTP_10;
        let mut upgrade_tx = None;
        if upgrade {
            let (tx, rx) = tokio::sync::oneshot::channel();
            upgrade_tx = Some(tx);
            parts
                .extensions
                .insert(ClientUpgrade(Arc::new(Mutex::new(Some(rx)))));
        }
        let req_body = if body == BodyIn::Done {
            super::body::ClientBody::Empty
        } else {
            super::body::ClientBody::H1(H1RequestBody {
                src: self.wire.clone(),
                generation: lock(&self.wire).generation,
                ended: false,
            })
        };
        let mut handling = Box::pin(pipeline::handle(parts, req_body, ctx.clone()));
        let mut gone = GoneWatch::new(&mut self.sleep);
        let resp = poll_fn(|cx| {
            // Shutdown while the request is served: its answer says `connection: close`.
            self.poll_stop(cx);
            if let Poll::Ready(r) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            let max = self.settings.max_header_size;
            if gone.poll(&self.wire, &mut self.sleep, max, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        drop(handling);
        let Some(resp) = resp else {
            // Dropping the request's future cancelled its upstream request.
            tracing::info!(peer = %ctx.peer, "client left before its answer; request cancelled");
            lock(&self.wire).end_request();
            return Ok(false);
        };
        if self.stopping {
            close = true;
        }
        {
            // What is left of the request body may keep the connection from carrying another
            // request: then the answer says so (`finish_body` decides the same way).
            let w = lock(&self.wire);
            let owed = w.continue_at == Some(0) && w.body != BodyIn::Done;
            if owed
                || w.body == BodyIn::Failed
                || matches!(w.body, BodyIn::Length(n) if n > DRAIN_MAX)
            {
                close = true;
            }
        }
        let (rparts, mut rbody) = resp.into_parts();
        let raw = rbody.take_raw();
        let exact = rbody.size_hint().exact();
        let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS && upgrade_tx.is_some();
        // A body small enough joins the head in one buffer.
        let room = exact.filter(|n| *n <= COPY_MAX as u64).unwrap_or(0) as usize;
        let mut framing = self.out.extend(|tail| {
            encode_answer(
                tail,
                &rparts,
                raw.as_ref(),
                exact,
                room,
                head_request,
                client_10,
                &mut close,
            )
        });
        drop((rparts, raw));
        let wire = &self.wire;
        let out = &mut self.out;
        let sleep = &mut self.sleep;
        let max = self.settings.max_header_size;
        let mut body_done = false;
        let mut failed: Option<&'static str> = None;
        // A body with nothing to send (HEAD, 304) is still read to its end, so that its end is
        // noted (log, metrics) and an origin's connection goes back to its pool.
        let written = poll_fn(|cx| {
            loop {
                let mut body_pending = false;
                while !body_done && failed.is_none() && out.len < HIGH_WATER {
                    match Pin::new(&mut rbody).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Err(e) = encode_frame(out, &mut framing, frame) {
                                failed = Some(e);
                            }
                        }
                        Poll::Ready(Some(Err(e))) => {
                            tracing::debug!(error = %e, "answer body failed; closing the connection");
                            failed = Some("answer body failed");
                        }
                        Poll::Ready(None) => {
                            if let Err(e) = encode_end(out, framing) {
                                failed = Some(e);
                            }
                            body_done = true;
                        }
                        Poll::Pending => {
                            body_pending = true;
                            break;
                        }
                    }
                }
                let mut w = lock(wire);
                let Some(io) = w.io.as_mut() else {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
                };
                ready!(out.poll_write(io, cx))?;
                // Everything queued went out: flushed (TLS) before waiting on the body.
                ready!(Pin::new(io).poll_flush(cx))?;
                if body_done || failed.is_some() {
                    return Poll::Ready(Ok(()));
                }
                if body_pending {
                    drop(w);
                    // A stream that has gone quiet: the client may have left meanwhile.
                    if gone.poll(wire, sleep, max, cx) {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
                    }
                    // The body registered its waker when it said Pending.
                    return Poll::Pending;
                }
            }
        })
        .await;
        drop(rbody);
        lock(&self.wire).end_request();
        if let Err(e) = written {
            tracing::debug!(error = %e, "client connection ended while answering");
            return Ok(false);
        }
        if let Some(why) = failed {
            tracing::debug!(why, "answer cut short; closing the connection");
            return Ok(false);
        }
        if switching && let Some(tx) = upgrade_tx {
            let (io, pre) = {
                let mut w = lock(&self.wire);
                (w.io.take(), w.rbuf.split().freeze())
            };
            if let Some(io) = io {
                let _ = tx.send(Prefixed::new(Box::new(io) as Box<dyn UpgradeIo>, pre));
            }
            return Err(Upgrade);
        }
        if close {
            return Ok(false);
        }
        Ok(self.finish_body().await)
    }

    /// After an answer: the rest of the request's body is read and dropped (within limits), so
    /// the next request starts where it should. False: the connection cannot go on.
    async fn finish_body(&mut self) -> bool {
        let (body, owed) = {
            let mut w = lock(&self.wire);
            // A client still waiting for "100 Continue" has not sent the body: closing is all
            // that is left (RFC 9110 §10.1.1).
            (w.body, w.continue_at.take() == Some(0))
        };
        match body {
            BodyIn::Done => return true,
            _ if owed => return false,
            BodyIn::Failed => return false,
            BodyIn::Length(n) if n > DRAIN_MAX => return false,
            _ => {}
        }
        let wire = &self.wire;
        let mut seen = 0u64;
        let drain = poll_fn(|cx| {
            loop {
                let mut w = lock(wire);
                match ready!(w.poll_body(cx)) {
                    None => return Poll::Ready(true),
                    Some(Err(_)) => return Poll::Ready(false),
                    Some(Ok(frame)) => {
                        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if seen > DRAIN_MAX {
                            return Poll::Ready(false);
                        }
                    }
                }
            }
        });
        tokio::time::timeout(DRAIN_TIME, drain)
            .await
            .unwrap_or(false)
    }
}
