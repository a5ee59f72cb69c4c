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
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, Sleep};

use super::ServerState;
use super::pool::UpBody;
use crate::error::BoxError;
use crate::http::body::ClientBodyFailed;
use crate::http::raw_head::{Kind, RawHead};

/// Most header lines in an origin's answer.
const MAX_HEADERS: usize = 128;
/// Longest answer head (status line and headers) taken from an origin.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) and trailer section.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
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

/// How the request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Exactly this many bytes still to send.
    Length(u64),
    Chunked,
}

/// How the answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Length(u64),
    Chunked(Chunk),
    /// Until the origin closes: the connection is not reused.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
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
        let (head, out) = match encode_head(req, lines, &body) {
            Ok(x) => x,
            Err(e) => {
                return Err(SendError {
                    error: e,
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
        let mut up = Sending {
            queue,
            out,
            head_written: false,
            // Chunked framing is chosen only for a body that has not ended.
            body_done: empty,
            body: Some(body),
            body_polled: false,
            unflushed: false,
            failed: None,
        };
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
            let rest = self.rbuf.split().freeze();
            let tunnel = OriginUpgrade(Arc::new(Mutex::new(Some((self.io, rest)))));
            let mut resp = Response::from_parts(parts, H1Body::empty());
            resp.extensions_mut().insert(tunnel);
            return Ok((resp, raw));
        }
        let framing = if head_only
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
        {
            In::Done
        } else {
            framing
        };
        // The origin answered before the whole request was sent. An error answer, or one that
        // closes, ends the upload (RFC 9112 §9.6); otherwise the origin may be streaming both
        // ways, and the body keeps being sent while the answer is read.
        let upload = (unfinished
            && up.failed.is_none()
            && !close
            && !parts.status.is_client_error()
            && !parts.status.is_server_error())
        .then(|| Box::new(up));
        let reuse = pool && !close && !unfinished && framing != In::Close;
        let mut body = H1Body {
            conn: Some(self),
            framing,
            ret: reuse.then_some(server),
            trailers: None,
            upload,
        };
        if body.framing == In::Done || body.framing == In::Length(0) {
            body.framing = In::Done;
            body.finish();
        }
        Ok((Response::from_parts(parts, body), raw))
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
                let mut slices = [io::IoSlice::new(&[]); 8];
                let mut n = 0;
                for (s, b) in slices.iter_mut().zip(self.queue.iter()) {
                    *s = io::IoSlice::new(b);
                    n += 1;
                }
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => {
                        self.failed = Some(io::ErrorKind::WriteZero.into());
                    }
                    Poll::Ready(Ok(mut w)) => {
                        progress = true;
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
                    }
                    Poll::Ready(Err(e)) => self.failed = Some(e),
                    Poll::Pending => break,
                }
                continue;
            }
            if self.body_done {
                if self.unflushed {
                    match Pin::new(&mut *io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            self.unflushed = false;
                            progress = true;
                        }
                        Poll::Ready(Err(e)) => self.failed = Some(e),
                        Poll::Pending => {}
                    }
                }
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
                }
                Poll::Ready(Some(Err(e))) => return Err(SendError::new(e)),
                Poll::Pending => {
                    // Bytes queued before this body frame was awaited go out now.
                    if self.unflushed {
                        match Pin::new(&mut *io).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(e)) => self.failed = Some(e),
                            Poll::Pending => {}
                        }
                    }
                    break;
                }
            }
        }
        Ok(progress)
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

/// The request head in wire form, and how its body is framed.
/// A request's head for the origin: the map's fields, then `lines` (already encoded), then
/// the framing.
fn encode_head(
    req: &http::request::Parts,
    lines: &[u8],
    body: &UpBody,
) -> Result<(Bytes, Out), BoxError> {
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let h = &req.headers;
    let mut out = Out::Length(0);
    let mut add_length: Option<u64> = None;
    let mut add_chunked = false;
    if let Some(v) = h.get(header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(parse_length)
            .ok_or("invalid Content-Length in the request")?;
        out = Out::Length(n);
    } else if http_body::Body::is_end_stream(body) {
        if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
            add_length = Some(0);
        }
    } else if let Some(n) = http_body::Body::size_hint(body).exact() {
        out = Out::Length(n);
        add_length = Some(n);
    } else {
        out = Out::Chunked;
        add_chunked = true;
    }
    let mut digits = itoa::Buffer::new();
    let length = add_length.map(|n| digits.format(n).as_bytes());
    // The exact size: a Vec whose capacity is its length becomes `Bytes` without another
    // allocation.
    let size = req.method.as_str().len()
        + 1
        + pq.len()
        + 11
        + h.iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + lines.len()
        + length.map_or(0, |l| 18 + l.len())
        + if add_chunked { 28 } else { 0 }
        + 2;
    let mut w = Vec::with_capacity(size);
    w.extend_from_slice(req.method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(pq.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in h {
        put_field(&mut |b| w.extend_from_slice(b), name, value);
    }
    w.extend_from_slice(lines);
    if let Some(l) = length {
        w.extend_from_slice(b"content-length: ");
        w.extend_from_slice(l);
        w.extend_from_slice(b"\r\n");
    }
    if add_chunked {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    w.extend_from_slice(b"\r\n");
    debug_assert_eq!(w.len(), size);
    Ok((Bytes::from(w), out))
}

/// One header field as a line, `name: value\r\n`, through `put` (heads and trailer sections,
/// both directions).
pub(crate) fn put_field(put: &mut impl FnMut(&[u8]), name: &HeaderName, value: &HeaderValue) {
    put_line(put, name.as_str().as_bytes(), value.as_bytes());
}

/// [`put_field`] of a name and value already checked (an origin's fields kept as sent).
pub(crate) fn put_line(put: &mut impl FnMut(&[u8]), name: &[u8], value: &[u8]) {
    put(name);
    put(b": ");
    put(value);
    put(b"\r\n");
}

/// The end of a chunked body: the last chunk, the trailer fields, the empty line.
pub(crate) fn put_last_chunk(put: &mut impl FnMut(&[u8]), trailers: &HeaderMap) {
    put(b"0\r\n");
    for (name, value) in trailers {
        put_field(put, name, value);
    }
    put(b"\r\n");
}

/// The chunk-size line for `n` bytes of data (hex digits, CRLF), written into `buf`.
pub(crate) fn chunk_line(buf: &mut [u8; 18], mut n: usize) -> &[u8] {
    let mut i = 16;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// A Content-Length value: 1*DIGIT (RFC 9110 §8.6), no sign, no list.
pub(crate) fn parse_length(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `buf` holds the end of a head (an empty line): until it does, nothing is parsed.
pub(crate) fn head_complete(buf: &[u8]) -> bool {
    // The usual end, CRLF CRLF, in one vector search; then the lenient ends (bare LF) line by
    // line, which costs a search per line.
    static CRLFCRLF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    if CRLFCRLF.find(buf).is_some() {
        return true;
    }
    memchr::memchr_iter(b'\n', buf).any(|i| match buf.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => buf.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Whether a head is worth parsing yet. The first try on a new head parses at once: a head
/// usually arrives whole, and then one pass of the parser is all it costs. After a try found
/// the head incomplete, a new try waits until an empty line has arrived, and only the bytes
/// read since are searched for it. So a head that trickles in is searched once over, not
/// parsed again on every read.
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// Bytes at the start of the buffer known to hold no head's end; 0: not tried yet.
    searched: usize,
}

impl HeadScan {
    /// Whether to try parsing the head at the start of `buf`.
    pub(crate) fn ready(&self, buf: &[u8]) -> bool {
        // A buffer shorter than what was searched is not the one searched: try it.
        if self.searched == 0 || self.searched > buf.len() {
            return true;
        }
        // From three bytes back: an end that the last read split.
        head_complete(&buf[self.searched.saturating_sub(3)..])
    }

    /// A try found the head in `buf` incomplete.
    pub(crate) fn incomplete(&mut self, buf: &[u8]) {
        self.searched = buf.len();
    }

    /// A head was taken from the buffer: the next one is tried at once.
    pub(crate) fn reset(&mut self) {
        self.searched = 0;
    }
}

/// An answer's head (its fields as sent), how its body is delimited, and whether the
/// connection closes after it.
type Head = (http::response::Parts, RawHead, In, bool);

/// Parses an answer head at the start of `buf` and consumes it. None: not complete yet.
fn parse_head(buf: &mut BytesMut, scan: &mut HeadScan) -> Result<Option<Head>, BoxError> {
    if buf.is_empty() || !scan.ready(buf) {
        return Ok(None);
    }
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        // Not all here yet; or an empty line that does not end a head (one before the
        // status line).
        Ok(httparse::Status::Partial) => {
            scan.incomplete(buf);
            return Ok(None);
        }
        Err(e) => return Err(format!("malformed answer from the origin: {e}").into()),
    };
    // The head alone, copied once: fields are places in it, so a stored answer (the cache)
    // holds its head and not the connection's whole read buffer.
    let code = resp.code.ok_or("answer without a status")?;
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut raw = RawHead::new(Bytes::copy_from_slice(&buf[..n]), resp.headers.len());
    // Where a name or value the parser returned is in the head (always inside it).
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| -> Result<(usize, usize), BoxError> {
        let off = (s.as_ptr() as usize)
            .checked_sub(base)
            .filter(|o| o + s.len() <= n)
            .ok_or("a header field outside the answer's head")?;
        Ok((off, s.len()))
    };
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(final coding is chunked)
    let (mut close_token, mut keep_alive_token) = (false, false);
    for hd in resp.headers.iter() {
        if hd.name.len() > usize::from(u16::MAX) {
            // Longer than a header map takes: refused as before fields were kept as sent.
            return Err("a header name longer than 65535 bytes".into());
        }
        let kind = Kind::of(hd.name.as_bytes());
        match kind {
            Kind::ContentLength => {
                let s = std::str::from_utf8(hd.value).map_err(|_| "invalid Content-Length")?;
                let n = parse_length(s.trim())
                    .ok_or_else(|| format!("invalid Content-Length {s:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("Content-Length headers that disagree".into());
                }
                length = Some(n);
            }
            Kind::TransferEncoding => {
                let s = std::str::from_utf8(hd.value).map_err(|_| "invalid Transfer-Encoding")?;
                for coding in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    if te == Some(true) {
                        // chunked must be the last coding, applied once (RFC 9112 §6.1).
                        return Err("Transfer-Encoding with a coding after chunked".into());
                    }
                    te = Some(coding.eq_ignore_ascii_case("chunked"));
                }
            }
            Kind::Connection => {
                let s = std::str::from_utf8(hd.value).unwrap_or("");
                let mut names_others = false;
                for tok in s.split(',').map(str::trim) {
                    let close = tok.eq_ignore_ascii_case("close");
                    let keep = tok.eq_ignore_ascii_case("keep-alive");
                    close_token |= close;
                    keep_alive_token |= keep;
                    names_others |= !(close || keep || tok.is_empty());
                }
                if !names_others {
                    // Hop-by-hop and fully read here: the pipeline would only remove it again.
                    continue;
                }
            }
            Kind::HopByHop if hd.name.eq_ignore_ascii_case("keep-alive") => continue,
            _ => {}
        }
        raw.push(at(hd.name.as_bytes())?, at(hd.value)?, kind);
    }
    // `close` wins over `keep-alive`; an HTTP/1.0 answer closes unless it says keep-alive.
    let close = close_token || (version == Version::HTTP_10 && !keep_alive_token);
    let framing = match (te, length) {
        (Some(_), Some(_)) => {
            return Err("answer with both Transfer-Encoding and Content-Length".into());
        }
        // RFC 9112 §6.1: Transfer-Encoding from an HTTP/1.0 server is faulty framing.
        (Some(_), None) if version == Version::HTTP_10 => {
            return Err("HTTP/1.0 answer with Transfer-Encoding".into());
        }
        (Some(true), None) => In::Chunked(Chunk::Size),
        // A coding other than chunked last would reach the client undecoded and unlabelled
        // (Transfer-Encoding is hop-by-hop): refused rather than passed on.
        (Some(false), None) => {
            return Err("answer with a transfer coding other than chunked".into());
        }
        (None, Some(n)) => In::Length(n),
        (None, None) => In::Close,
    };
    buf.advance(n);
    scan.reset();
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    Ok(Some((parts, raw, framing, close)))
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
                        if conn.rbuf.len() > MAX_TRAILERS + MAX_CHUNK_LINE {
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

/// What the chunked decoder made of the buffer.
pub(crate) enum Step {
    /// Some data, and the state after it.
    Data(Bytes, Chunk),
    /// A line was consumed.
    Next(Chunk),
    /// The body ended (with trailers, if any).
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// One step of chunked decoding (RFC 9112 §7.1) over the bytes at the start of `buf`.
pub(crate) fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> Result<Step, BoxError> {
    match state {
        Chunk::Size => {
            let Some(eol) = find(buf, b"\r\n", MAX_CHUNK_LINE)? else {
                return Ok(Step::More);
            };
            let line = &buf[..eol];
            let digits = line
                .iter()
                .position(|b| !b.is_ascii_hexdigit())
                .unwrap_or(line.len());
            if digits == 0 || digits > 15 {
                return Err("invalid chunk size".into());
            }
            // After the size: nothing, or chunk extensions (ignored), possibly after spaces;
            // no control characters (a bare LF among them).
            let rest = &line[digits..];
            if rest
                .iter()
                .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
            {
                return Err("control character in a chunk size line".into());
            }
            let rest_ok = rest.is_empty() || {
                let t = rest.iter().position(|b| *b != b' ' && *b != b'\t');
                t.is_some_and(|i| rest[i] == b';')
            };
            if !rest_ok {
                return Err("invalid chunk size line".into());
            }
            let size = u64::from_str_radix(
                std::str::from_utf8(&line[..digits]).map_err(|_| "invalid chunk size")?,
                16,
            )
            .map_err(|_| "invalid chunk size")?;
            buf.advance(eol + 2);
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            Ok(Step::Data(
                data,
                if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                },
            ))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::End(None));
            }
            // Trailer fields up to the empty line.
            let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILERS)? else {
                return Ok(Step::More);
            };
            let mut trailers = HeaderMap::new();
            for line in buf[..end].split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    return Err("malformed trailer line".into());
                };
                let name =
                    HeaderName::from_bytes(&line[..colon]).map_err(|_| "invalid trailer name")?;
                let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
                    .map_err(|_| "invalid trailer value")?;
                trailers.append(name, value);
            }
            buf.advance(end + 4);
            Ok(Step::End(Some(trailers)))
        }
    }
}

/// Position of the first `needle` within `limit` bytes; an error past the limit.
fn find(buf: &[u8], needle: &[u8], limit: usize) -> Result<Option<usize>, BoxError> {
    match buf.windows(needle.len()).position(|w| w == needle) {
        Some(i) if i <= limit => Ok(Some(i)),
        Some(_) => Err("line too long in a chunked body".into()),
        None if buf.len() > limit => Err("line too long in a chunked body".into()),
        None => Ok(None),
    }
}

/// What [`decode_answer`] says when a field the parser accepted is not one a header map takes.
#[doc(hidden)]
pub const FIELDS_LOST: &str = "fields lost in a header map";

/// What [`decode_answer`] returns when the fields copied in runs differ from the same fields
/// written one by one (`RawHead::write_lines`); a bug.
#[doc(hidden)]
pub const LINES_DIFFER: &str = "header lines copied in runs differ";

/// An answer as it comes from an origin, head and body in `wire`, split into two reads at
/// `split`: the decoded body and trailers, or the error the proxy would answer 502 for. For the
/// fuzzer (`fuzz/fuzz_targets/h1_answer.rs`): it must never panic, and where the split falls
/// must not change the result.
#[doc(hidden)]
pub fn decode_answer(wire: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
    let split = split.min(wire.len());
    let mut buf = BytesMut::from(&wire[..split]);
    let mut rest = &wire[split..];
    let mut feed = |buf: &mut BytesMut| -> bool {
        if rest.is_empty() {
            return false;
        }
        buf.extend_from_slice(rest);
        rest = &[];
        true
    };
    let mut scan = HeadScan::default();
    let framing = loop {
        match parse_head(&mut buf, &mut scan).map_err(|e| e.to_string())? {
            Some((_, raw, framing, _)) => {
                // The fields copied in runs must read as written one by one.
                let (mut runs, mut one_by_one) = (Vec::new(), Vec::new());
                raw.write_lines(&mut |b| runs.extend_from_slice(b), |_| false);
                for (name, value, _) in raw.iter() {
                    put_line(&mut |b| one_by_one.extend_from_slice(b), name, value);
                }
                if runs != one_by_one {
                    return Err(LINES_DIFFER.into());
                }
                // Every field kept as sent must survive the header map the other paths use.
                let kept = raw.iter().count();
                if raw.into_map(HeaderMap::new()).len() != kept {
                    return Err(FIELDS_LOST.into());
                }
                break framing;
            }
            None if feed(&mut buf) => {}
            None => return Err("incomplete head".into()),
        }
    };
    let mut body = Vec::new();
    let mut state = match framing {
        In::Chunked(c) => c,
        In::Length(n) => {
            feed(&mut buf);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if buf.len() < n {
                return Err("body shorter than its length".into());
            }
            return Ok((buf[..n].to_vec(), None));
        }
        In::Close | In::Done => {
            feed(&mut buf);
            return Ok((buf.to_vec(), None));
        }
    };
    loop {
        match decode_chunk(&mut buf, state).map_err(|e| e.to_string())? {
            Step::Data(d, next) => {
                body.extend_from_slice(&d);
                state = next;
            }
            Step::Next(next) => state = next,
            Step::End(trailers) => return Ok((body, trailers)),
            Step::More if feed(&mut buf) => {}
            Step::More => return Err("incomplete body".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let mut buf = BytesMut::from(wire);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match decode_chunk(&mut buf, state)? {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::Next(next) => state = next,
                Step::End(t) => {
                    assert!(buf.is_empty(), "bytes after the body");
                    return Ok((out, t));
                }
                Step::More => return Err("incomplete".into()),
            }
        }
    }

    #[test]
    fn answers_decode_the_same_however_the_reads_split() {
        let wire =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: 1\r\n\r\n";
        let whole = decode_answer(wire, wire.len()).unwrap();
        assert_eq!(whole.0, b"hello");
        for split in 0..wire.len() {
            assert_eq!(
                decode_answer(wire, split).unwrap(),
                whole,
                "split at {split}"
            );
        }
    }

    #[test]
    fn chunked_bodies() {
        let (b, t) = decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(b, b"hello world");
        assert!(t.is_none());
        let (b, t) = decode_all(b"3\r\nabc\r\n0\r\nx-sum: 7\r\nx-b: c\r\n\r\n").unwrap();
        assert_eq!(b, b"abc");
        let t = t.unwrap();
        assert_eq!(t["x-sum"], "7");
        assert_eq!(t["x-b"], "c");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"z\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"-1\r\n",
            b"1 2\r\nx\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"5;x\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(wire).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    fn head(wire: &str) -> Result<Option<Head>, BoxError> {
        parse_head(
            &mut BytesMut::from(wire.as_bytes()),
            &mut HeadScan::default(),
        )
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut req = http::Request::post("/p?q=1")
            .header("host", "example.com")
            .header("x-a", "b")
            .body(())
            .unwrap();
        req.headers_mut()
            .append("x-a", HeaderValue::from_static("c"));
        let (parts, ()) = req.into_parts();
        let sized = |body: UpBody| {
            let (head, _) = encode_head(&parts, b"", &body).unwrap();
            String::from_utf8(head.to_vec()).unwrap()
        };
        use http_body_util::BodyExt;
        let empty = http_body_util::Empty::<Bytes>::new()
            .map_err(|n| match n {})
            .boxed_unsync();
        assert_eq!(
            sized(empty),
            "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: b\r\nx-a: c\r\ncontent-length: 0\r\n\r\n"
        );
        let stream =
            http_body_util::StreamBody::new(futures_util::stream::iter(vec![Ok::<_, BoxError>(
                Frame::data(Bytes::from_static(b"x")),
            )]))
            .boxed_unsync();
        let head = sized(stream);
        assert!(
            head.ends_with("x-a: c\r\ntransfer-encoding: chunked\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn heads_end_at_an_empty_line() {
        for (wire, done) in [
            (&b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"[..], true),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", true),
            (b"HTTP/1.1 200 OK\nA: b\n\n", true),
            (b"HTTP/1.1 200 OK\nA: b\n\r\n", true),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n\r", false),
            (b"", false),
        ] {
            assert_eq!(
                head_complete(wire),
                done,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn fields_copied_in_runs_read_as_written_one_by_one() {
        for wire in [
            "HTTP/1.1 200 OK\r\nServer: a\r\nDate: b\r\nContent-Length: 0\r\nETag: \"c\"\r\n\r\n",
            // A dropped field (Connection) in the middle, a removed one (the request id),
            // lines not written as `name: value` CRLF, an empty value.
            "HTTP/1.1 200 OK\r\nA: 1\r\nConnection: keep-alive\r\nB: 2\r\nx-request-id: o\r\nC:3\r\nD: 4  \r\nE: 5\nF:  6\r\nG: \r\nH: 8\r\nI: 9\r\n\r\n",
            "HTTP/1.1 200 OK\nA: 1\nB: 2\n\n",
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
        ] {
            let (_, mut raw, ..) = head(wire).unwrap().unwrap();
            raw.remove(Kind::RequestId);
            let skip = |k| k == Kind::TransferEncoding;
            let mut runs = Vec::new();
            raw.write_lines(&mut |b| runs.extend_from_slice(b), skip);
            let mut one_by_one = Vec::new();
            for (name, value, kind) in raw.iter() {
                if !skip(kind) {
                    put_line(&mut |b| one_by_one.extend_from_slice(b), name, value);
                }
            }
            assert_eq!(
                String::from_utf8_lossy(&runs),
                String::from_utf8_lossy(&one_by_one),
                "{wire:?}"
            );
            assert!(!runs.is_empty());
        }
    }

    #[test]
    fn a_head_that_trickles_in_is_parsed_when_its_last_byte_comes() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"HTTP/1.1 204 No Content\nA: b\n\n",
            b"HTTP/1.1 204 No Content\r\nA: b\n\r\n",
        ] {
            let end = wire.len() - if wire.ends_with(b"hi") { 2 } else { 0 };
            // Byte by byte, and in two reads split at every place.
            let mut buf = BytesMut::new();
            let mut scan = HeadScan::default();
            for (i, b) in wire.iter().enumerate() {
                buf.extend_from_slice(&[*b]);
                let got = parse_head(&mut buf, &mut scan).unwrap();
                assert_eq!(got.is_some(), i + 1 == end, "byte {i} of {wire:?}");
                if got.is_some() {
                    break;
                }
            }
            for split in 0..end {
                let mut buf = BytesMut::from(&wire[..split]);
                let mut scan = HeadScan::default();
                assert!(parse_head(&mut buf, &mut scan).unwrap().is_none());
                buf.extend_from_slice(&wire[split..]);
                let (p, ..) = parse_head(&mut buf, &mut scan).unwrap().expect("parsed");
                assert!(p.status.is_success());
                assert_eq!(&buf[..], &wire[end..]);
                // The next head is tried at once.
                assert_eq!(scan.searched, 0);
            }
        }
    }

    #[test]
    fn answer_framing() {
        let (p, _, f, c) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(f, In::Length(5));
        assert!(!c);
        let (_, _, f, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(f, In::Chunked(Chunk::Size));
        let (_, _, f, c) = head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(f, In::Close);
        assert!(c);
        let (_, _, _, c) =
            head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(c);
        let (_, _, f, _) =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(f, In::Length(3));
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ambiguous_answers_are_errors() {
        for wire in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(head(wire).is_err(), "{wire:?}");
        }
    }
}
