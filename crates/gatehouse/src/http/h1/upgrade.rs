//! Sockets with bytes in front (`Prefixed`), and the hand-over of a client's socket to a tunnel
//! after `101 Switching Protocols` (`ClientUpgrade`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::wire::{Wire, lock};

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
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl ClientUpgrade {
    /// The client's socket; None when the connection ended without switching.
    pub async fn wait(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }

    /// Puts a `ClientUpgrade` into a request's extensions; the sender hands it the socket.
    #[inline]
    pub(super) fn offer(extensions: &mut http::Extensions) -> oneshot::Sender<Upgraded> {
        let (tx, rx) = oneshot::channel();
        extensions.insert(ClientUpgrade(Arc::new(Mutex::new(Some(rx)))));
        tx
    }
}

/// After a 101 was written: the socket and the bytes read past the request's head go to the
/// tunnel waiting on `tx`.
pub(super) fn hand_over<T>(wire: &Mutex<Wire<T>>, tx: oneshot::Sender<Upgraded>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, pre) = {
        let mut w = lock(wire);
        (w.io.take(), w.rbuf.split().freeze())
    };
    if let Some(io) = io {
        let _ = tx.send(Prefixed::new(Box::new(io) as Box<dyn UpgradeIo>, pre));
    }
}
