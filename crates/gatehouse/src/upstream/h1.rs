//! Our HTTP/1.1 client side to origins: one request at a time on a connection we own, driven
//! inside the request's own task.
//!
//! Why not hyper's client: hyper runs every upstream connection as a task of its own and hands
//! each request and its answer across channels (request -> connection task -> response, and the
//! body again through a channel), which is two task switches and several allocations per
//! request on the proxy's hottest path (bench/RESULTS.md). Here the request future writes the
//! head, streams the body, parses the answer's head (httparse) and the answer's body reads the
//! socket directly; the connection goes back to the pool when that body ends.
//!
//! Framing is strict (RFC 9112 §6): a response with both Transfer-Encoding and Content-Length,
//! or with Content-Lengths that disagree, or a malformed chunk, is an error (502), never a
//! guess; a connection is reused only after a response framed by length or chunks was read to
//! its exact end with nothing after it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, Sleep};

use gatehouse_h1::RawHead;
use gatehouse_h1::answer::{Head, In, parse_head};
use gatehouse_h1::chunked::{Step, chunk_line, decode_chunk, overlong, put_last_chunk};
use gatehouse_h1::encode::{BodySize, Out, encode_request};
use gatehouse_h1::scan::HeadScan;

use super::ServerState;
use super::pool::UpBody;
use crate::error::{BoxError, ClientBodyFailed};

/// Longest answer head (status line and headers) taken from an origin.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The socket to an origin: plain TCP or TLS.
pub enum UpIo {
    /// Cleartext.
    Tcp(TcpStream),
    /// TLS to an HTTPS origin.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Tcp(s) => s.is_write_vectored(),
            UpIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to an origin, between requests.
pub struct H1Conn {
    io: UpIo,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The answer-head deadline's timer, kept for the connection's life (see `poll_deadline`).
    timer: Option<Pin<Box<Sleep>>>,
    /// How far `rbuf` was searched for the end of an answer head.
    scan: HeadScan,
}

/// A failed send; the request's `body` is given back when not the whole head reached the
/// origin (so the origin cannot have acted on the request), so that it may be sent elsewhere
/// whatever its method.
pub struct SendError {
    /// What went wrong.
    pub error: BoxError,
    /// The untouched body.
    pub body: Option<UpBody>,
    /// No answer head came before the deadline.
    pub timed_out: bool,
}

impl SendError {
    fn new(error: impl Into<BoxError>) -> Self {
        SendError {
            error: error.into(),
            body: None,
            timed_out: false,
        }
    }
}

/// The origin's side of a tunnel after `101 Switching Protocols`: the socket and the bytes that
/// came after the answer's head. Found in the 101 answer's extensions.
#[derive(Clone)]
pub struct OriginUpgrade(Arc<Mutex<Option<(UpIo, Bytes)>>>);

impl OriginUpgrade {
    /// Takes the socket (once).
    pub fn take(&self) -> Option<(UpIo, Bytes)> {
        self.0.lock().ok()?.take()
    }
}

impl H1Conn {
    /// A connection over `io`.
    pub fn new(io: UpIo) -> Self {
        H1Conn {
            io,
            rbuf: BytesMut::new(),
            timer: None,
            scan: HeadScan::default(),
        }
    }

    /// Ready once `deadline` has passed. One timer serves all the connection's requests
    /// (`lazy_timer`): a request touches the runtime's timer wheel about once per timeout
    /// period, not twice per request as a timer of its own would.
    fn poll_deadline(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        crate::lazy_timer::poll_until(timer, deadline, cx)
    }

    /// Whether an idle connection is still usable: the origin has not closed it and sent
    /// nothing unasked.
    pub fn is_reusable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        // Unconstrained: with the task's cooperative budget spent, tokio would answer Pending
        // whatever the socket holds, and a closed connection would pass for a live one.
        let read = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_read(cx, &mut buf));
        let mut read = std::pin::pin!(tokio::task::coop::unconstrained(read));
        matches!(read.as_mut().poll(&mut cx), Poll::Pending)
    }

    /// Sends `req` and waits for the answer's head, for up to `timeout`: its status and the
    /// fields as the origin sent them (the answer's header map is empty). The answer's body
    /// returns the connection to `server`'s pool when read to its end (unless `pool` is false).
    pub async fn send(
        mut self,
        req: &http::request::Parts,
        lines: &[u8],
        body: UpBody,
        server: Arc<ServerState>,
        pool: bool,
        timeout: Duration,
    ) -> Result<(Response<H1Body>, RawHead), SendError> {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86400 * 365));
        let head_only = req.method == Method::HEAD;
        let mut up = Sending::start(req, lines, body)?;
        let parsed = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = self.poll_exchange(cx, &mut up) {
                return Poll::Ready(r);
            }
            ready!(self.poll_deadline(deadline, cx));
            Poll::Ready(Err(SendError {
                timed_out: true,
                ..SendError::new("no answer head before the deadline")
            }))
        })
        .await;
        let (parts, raw, framing, close) = match parsed {
            Ok(x) => x,
            Err(mut e) => {
                if !up.head_written && !up.body_polled {
                    e.body = up.body.take();
                }
                return Err(e);
            }
        };
        let unfinished = !up.is_done();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if unfinished {
                // Request bytes still owed would land inside the tunnel's stream.
                return Err(SendError::new(
                    "origin switched protocols before the request was sent",
                ));
            }
            return Ok(self.tunnel(parts, raw));
        }
        let framing = body_framing(framing, head_only, parts.status);
        // The origin answered before the whole request was sent: the body may keep being sent
        // while the answer is read (`Sending::goes_on`).
        let upload = (unfinished && up.goes_on(close, parts.status)).then(|| Box::new(up));
        let reuse = pool && !close && !unfinished && framing != In::Close;
        let body = H1Body::new(self, framing, reuse.then_some(server), upload);
        Ok((Response::from_parts(parts, body), raw))
    }

    /// The 101 hand-off: the answer carries the socket and the bytes after its head to the
    /// tunnel (`OriginUpgrade` in its extensions), and has no body.
    #[inline]
    fn tunnel(mut self, parts: http::response::Parts, raw: RawHead) -> (Response<H1Body>, RawHead) {
        let rest = self.rbuf.split().freeze();
        let tunnel = OriginUpgrade(Arc::new(Mutex::new(Some((self.io, rest)))));
        let mut resp = Response::from_parts(parts, H1Body::empty());
        resp.extensions_mut().insert(tunnel);
        (resp, raw)
    }

    /// One step of sending the request and reading the answer's head, both at once: an origin
    /// may answer before it has read the whole body (and stop reading it).
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        up: &mut Sending,
    ) -> Poll<Result<Head, SendError>> {
        loop {
            let mut progress = up.poll_send(&mut self.io, cx)?;
            // Read the answer's head.
            loop {
                match parse_head(&mut self.rbuf, &mut self.scan) {
                    Ok(Some(head)) => {
                        if head.0.status.is_informational()
                            && head.0.status != StatusCode::SWITCHING_PROTOCOLS
                        {
                            // 100 Continue, 103 Early Hints: not forwarded; the final answer
                            // follows.
                            progress = true;
                            continue;
                        }
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(SendError::new(e))),
                }
                if self.rbuf.len() >= MAX_HEAD {
                    return Poll::Ready(Err(SendError::new(format!(
                        "origin's answer head is larger than {MAX_HEAD} bytes"
                    ))));
                }
                match poll_fill(&mut self.io, &mut self.rbuf, cx, 8192) {
                    Poll::Ready(Ok(0)) => {
                        let e = up.failed.take().map_or_else(
                            || "origin closed the connection before answering".into(),
                            BoxError::from,
                        );
                        return Poll::Ready(Err(SendError::new(e)));
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(e)) => {
                        let e = up.failed.take().map_or_else(|| e.into(), BoxError::from);
                        return Poll::Ready(Err(SendError::new(e)));
                    }
                    Poll::Pending => {
                        if let Some(e) = up.failed.take() {
                            // The write failed and no answer is waiting to be read.
                            return Poll::Ready(Err(SendError::new(e)));
                        }
                        break;
                    }
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// The answer's body framing: none after HEAD, a 204 or a 304, whatever the head says
/// (RFC 9112 §6.3).
#[inline]
fn body_framing(framing: In, head_only: bool, status: StatusCode) -> In {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        In::Done
    } else {
        framing
    }
}

/// The request being sent.
struct Sending {
    queue: VecDeque<Bytes>,
    out: Out,
    /// The whole head reached the socket: from here on the request is not given back.
    head_written: bool,
    body_done: bool,
    body: Option<UpBody>,
    /// The body was polled: it is no longer whole, whatever the head's fate.
    body_polled: bool,
    /// Bytes were written since the last flush (TLS buffers them).
    unflushed: bool,
    /// Writing failed: the origin may still have answered (an error it sent before closing),
    /// so the answer is read before this error is reported.
    failed: Option<io::Error>,
}

impl Sending {
    /// Encodes the request's head from `req` and the fields in `lines`, framed for `body`,
    /// and queues it. Err: the head cannot be encoded (the body is given back), or an ended
    /// body is shorter than the request's Content-Length.
    #[inline]
    fn start(req: &http::request::Parts, lines: &[u8], body: UpBody) -> Result<Self, SendError> {
        let size = if http_body::Body::is_end_stream(&body) {
            BodySize::Empty
        } else {
            http_body::Body::size_hint(&body)
                .exact()
                .map_or(BodySize::Unknown, BodySize::Exact)
        };
        let (head, out) = match encode_request(req, lines, size) {
            Ok(x) => x,
            Err(e) => {
                return Err(SendError {
                    error: e.into(),
                    body: Some(body),
                    timed_out: false,
                });
            }
        };
        let empty = http_body::Body::is_end_stream(&body);
        if empty && matches!(out, Out::Length(n) if n > 0) {
            return Err(SendError::new(
                "request body shorter than its Content-Length",
            ));
        }
        let mut queue: VecDeque<Bytes> = VecDeque::with_capacity(4);
        queue.push_back(head);
        Ok(Sending {
            queue,
            out,
            head_written: false,
            // Chunked framing is chosen only for a body that has not ended.
            body_done: empty,
            body: Some(body),
            body_polled: false,
            unflushed: false,
            failed: None,
        })
    }

    /// After an answer that came before the whole request was sent: whether the rest keeps
    /// being sent. An error answer, or one that closes, ends the upload (RFC 9112 §9.6), as
    /// does a failed write; otherwise the origin may be streaming both ways.
    #[inline]
    fn goes_on(&self, close: bool, status: StatusCode) -> bool {
        self.failed.is_none() && !close && !status.is_client_error() && !status.is_server_error()
    }

    /// Everything was sent and flushed.
    fn is_done(&self) -> bool {
        self.body_done && self.queue.is_empty() && !self.unflushed && self.failed.is_none()
    }

    /// Writes what is queued, takes the next body frames, flushes. Returns whether anything
    /// moved; an error only when the request body failed (the client's side).
    fn poll_send(&mut self, io: &mut UpIo, cx: &mut Context<'_>) -> Result<bool, SendError> {
        let mut progress = false;
        while self.failed.is_none() {
            if !self.queue.is_empty() {
                match self.poll_write_queue(io, cx) {
                    Poll::Ready(wrote) => progress |= wrote,
                    Poll::Pending => break,
                }
                continue;
            }
            if self.body_done {
                progress |= self.flush(io, cx);
                break;
            }
            let Some(body) = self.body.as_mut() else {
                break;
            };
            self.body_polled = true;
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    progress = true;
                    self.queue_frame(frame)?;
                }
                Poll::Ready(None) => {
                    progress = true;
                    self.end_body()?;
                }
                Poll::Ready(Some(Err(e))) => return Err(SendError::new(e)),
                Poll::Pending => {
                    // Bytes queued before this body frame was awaited go out now.
                    self.flush(io, cx);
                    break;
                }
            }
        }
        Ok(progress)
    }

    /// Writes what is queued, once. Ready(true): bytes went out; Ready(false): writing failed
    /// (`failed` says why); Pending: the socket is full.
    #[inline]
    fn poll_write_queue(&mut self, io: &mut UpIo, cx: &mut Context<'_>) -> Poll<bool> {
        let mut slices = [io::IoSlice::new(&[]); 8];
        let mut n = 0;
        for (s, b) in slices.iter_mut().zip(self.queue.iter()) {
            *s = io::IoSlice::new(b);
            n += 1;
        }
        match ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n])) {
            Ok(0) => {
                self.failed = Some(io::ErrorKind::WriteZero.into());
                Poll::Ready(false)
            }
            Ok(mut w) => {
                self.unflushed = true;
                while w > 0 {
                    let Some(b) = self.queue.front_mut() else {
                        break;
                    };
                    if w >= b.len() {
                        w -= b.len();
                        self.queue.pop_front();
                    } else {
                        b.advance(w);
                        w = 0;
                    }
                }
                if self.queue.is_empty() {
                    self.head_written = true;
                }
                Poll::Ready(true)
            }
            Err(e) => {
                self.failed = Some(e);
                Poll::Ready(false)
            }
        }
    }

    /// Flushes what was written since the last flush (TLS buffers it). True: flushed now.
    #[inline]
    fn flush(&mut self, io: &mut UpIo, cx: &mut Context<'_>) -> bool {
        if !self.unflushed {
            return false;
        }
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                true
            }
            Poll::Ready(Err(e)) => {
                self.failed = Some(e);
                false
            }
            Poll::Pending => false,
        }
    }

    /// The request body ended: its framing's end is queued. Err: it ended short of its
    /// Content-Length.
    #[inline]
    fn end_body(&mut self) -> Result<(), SendError> {
        match self.out {
            Out::Length(0) => {}
            Out::Length(_) => {
                return Err(SendError::new(ClientBodyFailed(
                    "request body shorter than its Content-Length".into(),
                )));
            }
            Out::Chunked => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
        }
        self.body_done = true;
        self.body = None;
        Ok(())
    }

    /// Queues one body frame in the request's framing.
    fn queue_frame(&mut self, frame: Frame<Bytes>) -> Result<(), SendError> {
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                match &mut self.out {
                    Out::Length(left) => {
                        if data.len() as u64 > *left {
                            return Err(SendError::new(ClientBodyFailed(
                                "request body longer than its Content-Length".into(),
                            )));
                        }
                        *left -= data.len() as u64;
                        self.queue.push_back(data);
                    }
                    Out::Chunked => {
                        let mut line = [0u8; 18];
                        self.queue
                            .push_back(Bytes::copy_from_slice(chunk_line(&mut line, data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                }
            }
            Err(frame) => {
                // Trailers: sent with a chunked body, dropped with a sized one.
                if let (Out::Chunked, Ok(trailers)) = (self.out, frame.into_trailers()) {
                    let mut end = Vec::new();
                    put_last_chunk(&mut |b| end.extend_from_slice(b), &trailers);
                    self.queue.push_back(Bytes::from(end));
                    self.body_done = true;
                    self.body = None;
                }
            }
        }
        Ok(())
    }
}

/// Reads once into `buf` (at least `want` bytes of room).
#[inline]
fn poll_fill(
    io: &mut UpIo,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// What `Body::poll_frame` returns.
type PollFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// An origin's answer body, read from the connection; hands the connection back to the pool
/// at its exact end.
pub struct H1Body {
    conn: Option<H1Conn>,
    framing: In,
    /// Where the connection goes back when this body ends, if it may be reused.
    ret: Option<Arc<ServerState>>,
    trailers: Option<HeaderMap>,
    /// The rest of the request, still being sent while the answer streams (a full-duplex
    /// origin); such a connection is never reused.
    upload: Option<Box<Sending>>,
}

impl H1Body {
    /// The body of an answer framed by `framing` on `conn`, going back to `ret`'s pool at its
    /// end; one with nothing to read ends (and is pooled) at once.
    #[inline]
    fn new(
        conn: H1Conn,
        framing: In,
        ret: Option<Arc<ServerState>>,
        upload: Option<Box<Sending>>,
    ) -> Self {
        let mut body = H1Body {
            conn: Some(conn),
            framing,
            ret,
            trailers: None,
            upload,
        };
        if body.framing == In::Done || body.framing == In::Length(0) {
            body.framing = In::Done;
            body.finish();
        }
        body
    }

    fn empty() -> Self {
        H1Body {
            conn: None,
            framing: In::Done,
            ret: None,
            trailers: None,
            upload: None,
        }
    }

    /// The body ended: back to the pool when nothing follows it.
    fn finish(&mut self) {
        self.framing = In::Done;
        self.upload = None;
        let conn = self.conn.take();
        if let (Some(server), Some(conn)) = (self.ret.take(), conn)
            && conn.rbuf.is_empty()
        {
            server.pool.put_h1(conn);
        }
    }

    /// Reads more of a delimited body: None when bytes came, else what `poll_frame` returns now
    /// (pending, or the failure of a body cut short).
    fn read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Option<PollFrame> {
        let conn = self.conn.as_mut()?;
        match poll_fill(&mut conn.io, &mut conn.rbuf, cx, want) {
            Poll::Ready(Ok(0)) => Some(self.fail("origin closed the connection mid-body")),
            Poll::Ready(Ok(_)) => None,
            Poll::Ready(Err(e)) => Some(self.fail(e)),
            Poll::Pending => Some(Poll::Pending),
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> PollFrame {
        self.framing = In::Done;
        self.conn = None;
        self.ret = None;
        self.upload = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let (Some(up), Some(conn)) = (this.upload.as_mut(), this.conn.as_mut()) {
            // Wakes this body when the socket can take more of the request, or the client's
            // body has more.
            let sent = up.poll_send(&mut conn.io, cx);
            if sent.is_err() || up.is_done() || up.failed.is_some() {
                this.upload = None;
            }
        }
        loop {
            if this.framing == In::Done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing {
                In::Done => unreachable!("handled above"),
                In::Length(left) => {
                    if conn.rbuf.is_empty() {
                        let want = (left as usize).clamp(1, READ_CHUNK);
                        if let Some(now) = this.read_more(cx, want) {
                            return now;
                        }
                        continue;
                    }
                    let take = (conn.rbuf.len() as u64).min(left) as usize;
                    let data = conn.rbuf.split_to(take).freeze();
                    let left = left - take as u64;
                    this.framing = In::Length(left);
                    if left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                In::Close => {
                    if conn.rbuf.is_empty() {
                        match poll_fill(&mut conn.io, &mut conn.rbuf, cx, READ_CHUNK) {
                            Poll::Ready(Ok(0)) => {
                                this.framing = In::Done;
                                this.conn = None;
                                return Poll::Ready(None);
                            }
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(e)) => return this.fail(e),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    let data = conn.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                In::Chunked(state) => match decode_chunk(&mut conn.rbuf, state) {
                    Err(e) => return this.fail(e),
                    Ok(Step::Data(data, next)) => {
                        this.framing = In::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Next(next)) => this.framing = In::Chunked(next),
                    Ok(Step::End(trailers)) => {
                        this.trailers = trailers;
                        this.finish();
                    }
                    Ok(Step::More) => {
                        if overlong(conn.rbuf.len()) {
                            return this.fail("chunk line or trailers too long");
                        }
                        if let Some(now) = this.read_more(cx, READ_CHUNK) {
                            return now;
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == In::Done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            In::Length(n) => SizeHint::with_exact(n),
            In::Done if self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
