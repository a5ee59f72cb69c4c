//! The tee of a caching route's answer: the origin's body read in a task of its own, a copy
//! kept for the store, the frames handed to the client through a channel.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc::{Sender, error::TrySendError};

use super::super::ProxyBody;
use crate::error::BoxError;
use gatehouse_cache::{Cache, Entry, FlightGuard};

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// Frames queued for the client while the store reads ahead.
const CLIENT_QUEUE: usize = 16;

/// An answer on its way into the store.
pub(super) struct Pending {
    pub(super) entry: Entry,
    pub(super) cache: Arc<Cache>,
    pub(super) epoch: u64,
    pub(super) guard: Option<FlightGuard>,
}

impl Pending {
    /// Stores the answer with this body and ends the flight.
    fn store(mut self, chunks: Vec<Bytes>, len: u64) {
        let mut body = BytesMut::with_capacity(len as usize);
        for c in chunks {
            body.extend_from_slice(&c);
        }
        self.entry.body = body.freeze();
        self.cache.insert(self.entry, self.epoch);
        drop(self.guard);
    }
}

/// Reads the origin's body in a task of its own, keeping a copy for the store, and hands it to
/// the client through a channel. The store does not wait for the client: a slow first client
/// does not hold the others (waiting on the URL's flight) back, and one that goes away does not
/// stop the copy. While storing, frames the client has not taken yet wait in a backlog (bounded
/// by `max_object`, since every one of them is also in the copy); past `max_object`, or at
/// trailers, storing stops and the task relays with the client's backpressure. With no client
/// left, a stalled origin is given up after `stall` (the upstream's response timeout).
pub(super) fn fill(origin_body: ProxyBody, pending: Pending, stall: Duration) -> ProxyBody {
    let hint = origin_body.size_hint();
    let (tx, rx) = tokio::sync::mpsc::channel::<FrameResult>(CLIENT_QUEUE);
    let tee = Tee {
        limit: pending.cache.model.max_object,
        body: origin_body,
        pending: Some(pending),
        chunks: Vec::new(),
        len: 0,
        backlog: VecDeque::new(),
        client: Some(tx),
    };
    tokio::spawn(tee.run(stall));
    ChannelBody(rx, hint).boxed_unsync()
}

/// The task of `fill`.
struct Tee {
    limit: u64,
    body: ProxyBody,
    /// The store's copy is wanted (not past `limit`, no trailers, no error yet).
    pending: Option<Pending>,
    chunks: Vec<Bytes>,
    len: u64,
    /// Frames the client has not taken yet.
    backlog: VecDeque<Frame<Bytes>>,
    /// None once the client went away.
    client: Option<Sender<FrameResult>>,
}

impl Tee {
    async fn run(mut self, stall: Duration) {
        loop {
            self.give_ready();
            if self.pending.is_none() {
                // Not storing (any more): a plain relay, paced by the client.
                self.relay().await;
                return;
            }
            let next = if self.client.is_some() {
                self.body.frame().await
            } else {
                match tokio::time::timeout(stall, self.body.frame()).await {
                    Ok(f) => f,
                    Err(_) => return,
                }
            };
            match next {
                None => {
                    if let Some(p) = self.pending.take() {
                        p.store(std::mem::take(&mut self.chunks), self.len);
                    }
                    self.flush_backlog().await;
                    return;
                }
                Some(Err(e)) => {
                    // Nothing stored (`pending` drops with the task, ending the flight); the
                    // client sees what it was sent, then the error.
                    if self.flush_backlog().await
                        && let Some(tx) = &self.client
                    {
                        let _ = tx.send(Err(e)).await;
                    }
                    return;
                }
                Some(Ok(f)) => self.keep(f),
            }
        }
    }

    /// Gives the client what it will take now, without waiting.
    fn give_ready(&mut self) {
        while let Some(tx) = &self.client
            && let Some(f) = self.backlog.pop_front()
        {
            match tx.try_send(Ok(f)) {
                Ok(()) => {}
                Err(TrySendError::Full(Ok(f))) => {
                    self.backlog.push_front(f);
                    break;
                }
                Err(_) => {
                    self.client = None;
                    self.backlog.clear();
                }
            }
        }
    }

    /// Sends the client the whole backlog; false if it went away (or was gone).
    async fn flush_backlog(&mut self) -> bool {
        let Some(tx) = &self.client else {
            return false;
        };
        for f in self.backlog.drain(..) {
            if tx.send(Ok(f)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The backlog, then the rest of the body, to the client at its pace.
    async fn relay(&mut self) {
        if !self.flush_backlog().await {
            return;
        }
        let Some(tx) = &self.client else { return };
        while let Some(f) = self.body.frame().await {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    }

    /// A frame from the origin: copied for the store while it is wanted, queued for the client.
    fn keep(&mut self, f: Frame<Bytes>) {
        match f.data_ref() {
            Some(d) => {
                self.len += d.len() as u64;
                if self.len > self.limit {
                    self.pending = None;
                    self.chunks.clear();
                } else {
                    self.chunks.push(d.clone());
                }
            }
            // Trailers are not stored; an answer that has them is not stored.
            None => {
                self.pending = None;
                self.chunks.clear();
            }
        }
        if self.client.is_some() {
            self.backlog.push_back(f);
        }
    }
}

/// The client's end of `fill`, with the origin body's size hint (its exact length, when known,
/// frames the answer to the client as before).
struct ChannelBody(tokio::sync::mpsc::Receiver<FrameResult>, SizeHint);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.1
    }
}
