//! One request on a connection: the pipeline's answer awaited (watching for a client that
//! leaves), its head and body written, then whether the connection goes on: the rest of the
//! request's body drained, or the socket handed to a tunnel after a 101.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use gatehouse_h1::encode::{BodyOut, encode_answer};
use gatehouse_h1::request::{BodyIn, Parsed};

use super::out::{Out, encode_end, encode_frame};
use super::upgrade::{ClientUpgrade, hand_over};
use super::wire::{H1RequestBody, Wire, lock};
use super::{COPY_MAX, Conn, DRAIN_MAX, DRAIN_TIME, HIGH_WATER, Upgrade};
use crate::http::body::{ClientBody, Observed};
use crate::http::pipeline::{self, ConnCtx};

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

impl<T> Conn<'_, T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves one request: the pipeline's answer written to the client. Ok(true): the
    /// connection can carry another request.
    pub(super) async fn exchange(
        &mut self,
        p: Parsed,
        ctx: &Arc<ConnCtx>,
    ) -> Result<bool, Upgrade> {
        let Parsed {
            mut parts,
            body,
            mut close,
            upgrade,
            ..
        } = p;
        let head_request = parts.method == Method::HEAD;
        let client_10 = parts.version == Version::HTTP_10;
        let upgrade_tx = upgrade.then(|| ClientUpgrade::offer(&mut parts.extensions));
        let req_body = self.request_body(body);
        let mut handling = Box::pin(pipeline::handle(parts, req_body, ctx.clone()));
        let mut gone = GoneWatch::new(&mut self.sleep);
        let resp = poll_fn(|cx| self.poll_handling(handling.as_mut(), &mut gone, cx)).await;
        drop(handling);
        let Some(resp) = resp else {
            // Dropping the request's future cancelled its upstream request.
            tracing::info!(peer = %ctx.peer, "client left before its answer; request cancelled");
            lock(&self.wire).end_request();
            return Ok(false);
        };
        // Shutdown, or what is left of the request body, may keep the connection from carrying
        // another request: then the answer says so (`finish_body` decides the same way).
        if self.stopping || lock(&self.wire).unread_body_closes() {
            close = true;
        }
        let (rparts, mut rbody) = resp.into_parts();
        let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS && upgrade_tx.is_some();
        let framing = encode_head(
            &mut self.out,
            &rparts,
            &mut rbody,
            head_request,
            client_10,
            &mut close,
        );
        drop(rparts);
        let mut answer = AnswerBody::new(framing);
        let (wire, out, sleep) = (&self.wire, &mut self.out, &mut self.sleep);
        let max = self.settings.max_header_size;
        // A body with nothing to send (HEAD, 304) is still read to its end, so that its end is
        // noted (log, metrics) and an origin's connection goes back to its pool.
        let written = poll_fn(|cx| {
            if ready!(answer.poll_send(&mut rbody, out, wire, cx))? {
                return Poll::Ready(Ok(()));
            }
            // A stream that has gone quiet: the client may have left meanwhile.
            if gone.poll(wire, sleep, max, cx) {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
            }
            // The body registered its waker when it said Pending.
            Poll::Pending
        })
        .await;
        drop(rbody);
        lock(&self.wire).end_request();
        if !sent_whole(written, answer.failed) {
            return Ok(false);
        }
        if switching && let Some(tx) = upgrade_tx {
            hand_over(&self.wire, tx);
            return Err(Upgrade);
        }
        if close {
            return Ok(false);
        }
        Ok(self.finish_body().await)
    }

    /// Polls the request's future; None when the client left before its answer.
    #[inline]
    fn poll_handling<F: Future<Output = Response<Observed>>>(
        &mut self,
        handling: Pin<&mut F>,
        gone: &mut GoneWatch,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Response<Observed>>> {
        // Shutdown while the request is served: its answer says `connection: close`.
        self.poll_stop(cx);
        if let Poll::Ready(r) = handling.poll(cx) {
            return Poll::Ready(Some(r));
        }
        let max = self.settings.max_header_size;
        if gone.poll(&self.wire, &mut self.sleep, max, cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// The request's body as the pipeline reads it: none, or read from this connection.
    #[inline]
    fn request_body(&self, body: BodyIn) -> ClientBody {
        if body == BodyIn::Done {
            ClientBody::Empty
        } else {
            ClientBody::H1(H1RequestBody::new(&self.wire))
        }
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

/// Encodes the answer's head into `out` and returns its body's framing (Content-Length,
/// chunked, or close-delimited with `close` set), with room after it for a body small enough
/// to join it in one buffer.
#[inline]
fn encode_head(
    out: &mut Out,
    parts: &http::response::Parts,
    body: &mut Observed,
    head_request: bool,
    client_10: bool,
    close: &mut bool,
) -> BodyOut {
    let raw = body.take_raw();
    let exact = body.size_hint().exact();
    // A body small enough joins the head in one buffer.
    let room = exact.filter(|n| *n <= COPY_MAX as u64).unwrap_or(0) as usize;
    out.extend(|tail| {
        encode_answer(
            tail,
            parts,
            raw.as_ref(),
            exact,
            room,
            head_request,
            client_10,
            close,
        )
    })
}

/// Whether the answer went out whole (else why not is logged, and the connection closes).
#[inline]
fn sent_whole(written: io::Result<()>, failed: Option<&'static str>) -> bool {
    if let Err(e) = written {
        tracing::debug!(error = %e, "client connection ended while answering");
        return false;
    }
    if let Some(why) = failed {
        tracing::debug!(why, "answer cut short; closing the connection");
        return false;
    }
    true
}

/// The answer's body on its way to the client.
struct AnswerBody {
    framing: BodyOut,
    /// The body ended and its end is queued.
    done: bool,
    /// Why the answer was cut short: its body failed, or did not fit its framing.
    failed: Option<&'static str>,
}

impl AnswerBody {
    fn new(framing: BodyOut) -> Self {
        AnswerBody {
            framing,
            done: false,
            failed: None,
        }
    }

    /// Queues the body's frames and writes them, until the body has ended or failed (true) or
    /// is pending with everything queued written and flushed (false).
    #[inline]
    fn poll_send<T: AsyncWrite + Unpin>(
        &mut self,
        body: &mut Observed,
        out: &mut Out,
        wire: &Mutex<Wire<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        loop {
            let body_pending = self.pump(body, out, cx);
            let mut w = lock(wire);
            let Some(io) = w.io.as_mut() else {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
            };
            ready!(out.poll_write(io, cx))?;
            // Everything queued went out: flushed (TLS) before waiting on the body.
            ready!(Pin::new(io).poll_flush(cx))?;
            if self.done || self.failed.is_some() {
                return Poll::Ready(Ok(true));
            }
            if body_pending {
                return Poll::Ready(Ok(false));
            }
        }
    }

    /// Takes the body's frames into `out` until the body is pending, ends or fails, or
    /// `HIGH_WATER` bytes are queued. True: the body is pending (its waker is registered).
    #[inline]
    fn pump(&mut self, body: &mut Observed, out: &mut Out, cx: &mut Context<'_>) -> bool {
        while !self.done && self.failed.is_none() && out.len() < HIGH_WATER {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Err(e) = encode_frame(out, &mut self.framing, frame) {
                        self.failed = Some(e);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "answer body failed; closing the connection");
                    self.failed = Some("answer body failed");
                }
                Poll::Ready(None) => {
                    if let Err(e) = encode_end(out, self.framing) {
                        self.failed = Some(e);
                    }
                    self.done = true;
                }
                Poll::Pending => return true,
            }
        }
        false
    }
}
