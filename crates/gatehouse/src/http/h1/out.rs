//! The answer's write queue (`Out`): the head and small body frames gathered in one buffer,
//! large frames written from their own memory; and the answer body's framing on the wire
//! (`encode_frame`, `encode_end`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Frame;
use tokio::io::AsyncWrite;

use gatehouse_h1::chunked::{chunk_line, put_last_chunk};
use gatehouse_h1::encode::BodyOut;

use super::COPY_MAX;

/// Answer bytes waiting to be written: small pieces gathered in `tail`, large body frames
/// queued as they came.
#[derive(Default)]
pub(super) struct Out {
    bufs: VecDeque<Bytes>,
    tail: Vec<u8>,
    /// Bytes of `tail` already written.
    tail_at: usize,
    len: usize,
}

impl Out {
    #[inline]
    pub(super) fn small(&mut self, b: &[u8]) {
        self.tail.extend_from_slice(b);
        self.len += b.len();
    }

    /// Lets `f` append to the small pieces (an answer's head).
    #[inline]
    pub(super) fn extend<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
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

    /// Bytes queued and not yet written.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Writes until everything queued is written or the socket is full.
    pub(super) fn poll_write<T: AsyncWrite + Unpin>(
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
#[inline]
pub(super) fn encode_frame(
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
#[inline]
pub(super) fn encode_end(out: &mut Out, framing: BodyOut) -> Result<(), &'static str> {
    match framing {
        BodyOut::Length(n) if n > 0 => Err("answer body shorter than its Content-Length"),
        BodyOut::Chunked => {
            out.small(b"0\r\n\r\n");
            Ok(())
        }
        _ => Ok(()),
    }
}
