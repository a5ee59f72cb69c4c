//! Body wrappers on the request path: the client's request body (counted, bounded by `max_body`)
//! and the answer's body (counted; its end or its drop finishes the request: log, metrics, pool).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::error::{BoxError, ClientBodyFailed};
use gatehouse_h1::RawHead;

/// The body type of every answer to a client.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the pipeline learns about a request body while it streams.
#[derive(Debug, Default)]
pub struct BodyStats {
    /// Bytes of the request body read so far.
    pub bytes_in: AtomicU64,
    /// The body went over `max_body`.
    pub too_large: AtomicBool,
}

/// The error a request body yields when it goes over `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_body of {0} bytes")]
pub struct TooLarge(pub u64);

/// A client's request body as the connection delivers it.
pub enum ClientBody {
    /// No body (framed as none, or of length 0).
    Empty,
    /// Read from an HTTP/1 connection (ours).
    H1(super::h1::H1RequestBody),
    /// An HTTP/2 stream's data (hyper's).
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
            ClientBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// The client's request body on its way upstream.
pub struct RequestBody {
    inner: ClientBody,
    limit: Option<u64>,
    seen: u64,
    stats: Arc<BodyStats>,
}

impl RequestBody {
    /// Wraps `inner` with an optional size bound.
    pub fn new(inner: ClientBody, limit: Option<u64>, stats: Arc<BodyStats>) -> Self {
        RequestBody {
            inner,
            limit,
            seen: 0,
            stats,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    this.stats.bytes_in.store(this.seen, Ordering::Relaxed);
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        this.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed(e))))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once when an answer's body ends or is dropped.
pub trait OnEnd: Send + 'static {
    /// `bytes_out`: body bytes sent; `completed`: the body reached its end.
    fn end(self: Box<Self>, bytes_out: u64, completed: bool);
}

struct EndGuard {
    bytes: u64,
    completed: bool,
    on_end: Option<Box<dyn OnEnd>>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f.end(self.bytes, self.completed);
        }
    }
}

/// An answer's body, counted, finishing the request when it ends.
pub struct Observed {
    inner: ProxyBody,
    guard: EndGuard,
    /// The fields of an origin's answer kept as it sent them, written before the answer's
    /// header map (see `raw_head`); taken by the connection that writes the head.
    raw: Option<RawHead>,
}

impl Observed {
    /// Wraps `inner`; `on_end` runs at its end or drop.
    pub fn new(inner: ProxyBody, on_end: Box<dyn OnEnd>) -> Self {
        Observed {
            inner,
            guard: EndGuard {
                bytes: 0,
                completed: false,
                on_end: Some(on_end),
            },
            raw: None,
        }
    }

    /// With the origin's fields as it sent them, to be written before the header map.
    pub fn with_raw(mut self, raw: Option<RawHead>) -> Self {
        self.raw = raw;
        self
    }

    /// The origin's fields as it sent them, if the answer carries them so.
    pub fn take_raw(&mut self) -> Option<RawHead> {
        self.raw.take()
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.guard.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.guard.completed = true;
                }
            }
            Poll::Ready(None) => {
                this.guard.completed = true;
                // Finish now rather than when hyper drops the body: the log line then carries
                // the time the last byte was handed over.
                drop(std::mem::replace(
                    &mut this.guard,
                    EndGuard {
                        bytes: 0,
                        completed: true,
                        on_end: None,
                    },
                ));
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
