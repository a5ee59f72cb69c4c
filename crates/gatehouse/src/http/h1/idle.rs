//! Between requests: waiting for the next request head under the header and keep-alive
//! timers, parking a connection that stays idle, and closing idle ones at shutdown.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::task::{Poll, ready};

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use gatehouse_h1::request::{Parsed, Refusal, parse_request};

use super::out::Out;
use super::wire::lock;
use super::{Conn, PARK_AFTER, PARKED};

/// What waiting for the next head ended with.
pub(super) enum Next {
    Head(Parsed),
    Close,
    Refuse(Refusal),
    Timeout,
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
    pub(super) async fn next_head(&mut self, idle_since: Instant) -> Next {
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
}
