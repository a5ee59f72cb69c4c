//! The client connection's socket and read buffer (`Wire`), shared by the connection loop and
//! the current request's body, and that body (`H1RequestBody`): it reads the socket itself
//! when the upstream asks for more, writing "100 Continue" first when it is owed.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use gatehouse_h1::chunked::{Step, decode_chunk, overlong};
use gatehouse_h1::request::BodyIn;
use gatehouse_h1::scan::HeadScan;

use super::{DRAIN_MAX, PARKED_READ, READ_CHUNK};
use crate::error::BoxError;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The socket and what was read from it, shared by the connection loop and the current
/// request's body.
pub(super) struct Wire<T> {
    /// None once an upgrade took the socket.
    pub(super) io: Option<T>,
    pub(super) rbuf: BytesMut,
    /// How far `rbuf` was searched for the end of a request head.
    pub(super) scan: HeadScan,
    pub(super) body: BodyIn,
    /// Bytes of "100 Continue" still to write before the body is read; None: not owed.
    pub(super) continue_at: Option<usize>,
    /// Which request's body the wire is on: a body handle from an earlier request (still held
    /// by an upstream that polls it from its own task) reads nothing of a later one.
    pub(super) generation: u64,
    /// The waker of a body reader waiting for bytes, woken when its request ends.
    pub(super) reader: Option<std::task::Waker>,
}

/// Locks a wire. The lock is never held across an await or a call into other code, so it is
/// never contended within a connection's task; a poisoned lock (a panic while held) is taken
/// as it is.
pub(super) fn lock<T>(w: &Mutex<Wire<T>>) -> MutexGuard<'_, Wire<T>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: AsyncRead + AsyncWrite + Unpin> Wire<T> {
    /// Reads once more into the buffer. A parked connection (no buffer) reads into the stack
    /// first, so that an idle connection never holds a buffer.
    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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
    pub(super) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
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
    #[inline]
    pub(super) fn end_request(&mut self) {
        self.generation += 1;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// What is left of the request body keeps the connection from carrying another request:
    /// "100 Continue" owed for a body not read, a failed body, or more left than is drained
    /// (`Conn::finish_body` decides the same way).
    #[inline]
    pub(super) fn unread_body_closes(&self) -> bool {
        let owed = self.continue_at == Some(0) && self.body != BodyIn::Done;
        owed || self.body == BodyIn::Failed
            || matches!(self.body, BodyIn::Length(n) if n > DRAIN_MAX)
    }
}

/// A request body read from an HTTP/1 client connection.
pub struct H1RequestBody {
    src: Arc<dyn BodySource>,
    generation: u64,
    ended: bool,
}

impl H1RequestBody {
    /// The body of the request the wire is on now.
    pub(super) fn new<T>(wire: &Arc<Mutex<Wire<T>>>) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        H1RequestBody {
            src: wire.clone(),
            generation: lock(wire).generation,
            ended: false,
        }
    }
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
