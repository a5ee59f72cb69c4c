//! The client's side of an SMTP session: its socket (plain, then TLS after STARTTLS), what it
//! sent and we have not read yet, and the replies we owe it. Replies are queued and written
//! when the client has nothing more pipelined (RFC 2920 §3.1: one write for a pipelined group).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use gatehouse_wire::smtp::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Room for a read while commands are expected: a command line is short, and an idle session
/// should hold little (a larger buffer left from DATA is let go when empty).
pub(super) const COMMAND_CHUNK: usize = 1024;
/// Room for a read during DATA.
pub(super) const DATA_CHUNK: usize = 16 * 1024;

/// How long the last replies may take to leave when a session ends.
const CLOSE_WRITE: Duration = Duration::from_secs(5);

/// The client's socket.
pub(super) enum ClientIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// During the handshake.
    Gone,
}

/// A client connection.
pub(super) struct Client {
    io: ClientIo,
    /// What the client sent that no reader has consumed yet.
    pub(super) buf: BytesMut,
    out: Vec<u8>,
    /// The TLS version, once STARTTLS completed.
    pub(super) tls: Option<String>,
    /// Replies of 400 and above sent in this session (Postfix's `smtpd_hard_error_limit`).
    pub(super) errors: u32,
}

impl Client {
    pub(super) fn new(stream: TcpStream) -> Self {
        Client {
            io: ClientIo::Plain(stream),
            buf: BytesMut::new(),
            out: Vec::new(),
            tls: None,
            errors: 0,
        }
    }

    /// Whether the client spoke before `delay` was over (the pre-greeting check): a client that
    /// does not wait for the 220 is a spam engine, not an MTA (RFC 5321 §4.3.1 has the server
    /// speak first).
    pub(super) async fn talks_first(&self, delay: Duration) -> bool {
        let ClientIo::Plain(s) = &self.io else {
            return false;
        };
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(delay, s.peek(&mut byte)).await,
            Ok(Ok(n)) if n > 0
        )
    }

    /// Queues a reply.
    pub(super) fn reply(&mut self, r: &Reply) {
        if r.code >= 400 {
            self.errors += 1;
        }
        r.encode(&mut self.out);
    }

    /// Writes the queued replies.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = &self.out;
        let r = match &mut self.io {
            ClientIo::Plain(s) => s.write_all(out).await,
            ClientIo::Tls(s) => match s.write_all(out).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            ClientIo::Gone => Err(io::ErrorKind::NotConnected.into()),
        };
        self.out.clear();
        r
    }

    /// Writes the queued replies, then reads more from the client, all by `deadline` (a client
    /// that stops reading its replies is timed out as one that stops writing), with room for
    /// `chunk` bytes: the bytes read (0: it closed).
    pub(super) async fn read_more(&mut self, deadline: Instant, chunk: usize) -> io::Result<usize> {
        let work = async {
            self.flush().await?;
            if self.buf.is_empty() && self.buf.capacity() > chunk {
                self.buf = BytesMut::new();
            }
            self.buf.reserve(chunk);
            match &mut self.io {
                ClientIo::Plain(s) => s.read_buf(&mut self.buf).await,
                ClientIo::Tls(s) => s.read_buf(&mut self.buf).await,
                ClientIo::Gone => Ok(0),
            }
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes the queued replies by `deadline`.
    async fn flush_by(&mut self, deadline: Instant) -> io::Result<()> {
        tokio::time::timeout_at(deadline, self.flush())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// Drops `n` bytes the readers consumed.
    pub(super) fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// STARTTLS (RFC 3207): the 220 is written, whatever the client pipelined after the command
    /// is dropped (§4.2, CVE-2011-0411: it must not be read as if it came over TLS), and the
    /// handshake runs on the same socket.
    pub(super) async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        within: Duration,
    ) -> io::Result<()> {
        self.flush_by(Instant::now() + within).await?;
        self.buf.clear();
        let ClientIo::Plain(tcp) = std::mem::replace(&mut self.io, ClientIo::Gone) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = tokio::time::timeout(within, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        self.tls = tls
            .get_ref()
            .1
            .protocol_version()
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| Some("TLS".into()));
        self.io = ClientIo::Tls(Box::new(tls));
        Ok(())
    }

    /// Ends the connection: queued replies are written (for a few seconds at most), then the
    /// socket is shut down.
    pub(super) async fn close(mut self) {
        let _ = self.flush_by(Instant::now() + CLOSE_WRITE).await;
        match &mut self.io {
            ClientIo::Plain(s) => {
                let _ = s.shutdown().await;
            }
            ClientIo::Tls(s) => {
                let _ = s.shutdown().await;
            }
            ClientIo::Gone => {}
        }
    }
}
