//! The origin MTA's side of an SMTP session: a server picked from the upstream (failing over in
//! order of health), the PROXY header or transparent source address, TLS from the start or by
//! STARTTLS, the greeting, XCLIENT, and commands answered by replies.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use gatehouse_config::model::ClientAddress;
use gatehouse_wire::smtp::{Extensions, Reply, ReplyReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::upstream::h1::UpIo;
use crate::upstream::pool::{ProxyHeader, connect_tcp};
use crate::upstream::{ActiveGuard, ServerState, Upstream};

/// Who the client is, for XCLIENT and the PROXY header.
#[derive(Debug, Clone)]
pub(super) struct ClientId {
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
}

/// A session with an origin server.
pub(super) struct Origin {
    io: UpIo,
    buf: BytesMut,
    replies: ReplyReader,
    timeout: Duration,
    pub(super) server: Arc<ServerState>,
    /// What the origin offered in its last EHLO reply.
    pub(super) extensions: Extensions,
    xclient: bool,
    _guard: ActiveGuard,
}

impl Origin {
    /// Opens a session with a server of `up`: the first that connects and greets with 220,
    /// trying others (round the upstream's balance, healthy first) up to `retries` more times.
    pub(super) async fn connect(
        up: &Upstream,
        client: &ClientId,
        hostname: &str,
    ) -> Result<Origin, String> {
        let m = &up.model;
        let mut last = format!("upstream `{}` has no server to try", m.name);
        for server in up.connection_picks(crate::l4::client_hash(client.peer)) {
            match Origin::open(up, server.clone(), client, hostname).await {
                Ok(o) => {
                    server.record_success();
                    return Ok(o);
                }
                Err(e) => {
                    tracing::warn!(upstream = %m.name, server = %server.spec.address, error = %e, "smtp origin failed");
                    server.record_failure(m.passive.as_ref());
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// One server: connect, PROXY header, TLS, greeting, STARTTLS.
    async fn open(
        up: &Upstream,
        server: Arc<ServerState>,
        client: &ClientId,
        hostname: &str,
    ) -> Result<Origin, String> {
        let m = &up.model;
        let guard = ActiveGuard::new(server.clone());
        let mut tcp = connect_tcp(&server, m.connect_timeout, Some(client.peer))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if let Some(v) = server.proxy_protocol {
            let header = ProxyHeader {
                src: client.peer,
                dst: client.local,
                alpn: None,
                authority: None,
                tls_version: None,
            };
            tcp.write_all(&header.encode(v))
                .await
                .map_err(|e| format!("PROXY header: {e}"))?;
        }
        let starttls = m.tls.as_ref().is_some_and(|t| t.starttls);
        let io = match &server.tls {
            Some(tls) if !starttls => {
                UpIo::Tls(Box::new(handshake(tls, tcp, m.connect_timeout).await?))
            }
            _ => UpIo::Tcp(tcp),
        };
        let mut o = Origin {
            io,
            buf: BytesMut::new(),
            replies: ReplyReader::new(),
            timeout: m.response_timeout,
            server: server.clone(),
            extensions: Extensions::default(),
            xclient: m.client_address == ClientAddress::Xclient,
            _guard: guard,
        };
        // The greeting is part of connecting: an origin that accepts but never greets is
        // failed over (and the client answered 421) within the connect timeout.
        let greeting = o
            .reply_within(m.connect_timeout)
            .await
            .map_err(|e| format!("greeting: {e}"))?;
        if greeting.code != 220 {
            return Err(format!("greeted with {}", greeting.code));
        }
        if let (true, Some(tls)) = (starttls, &server.tls) {
            o = o.start_tls(tls, hostname, m.connect_timeout).await?;
        }
        Ok(o)
    }

    /// STARTTLS to the origin (RFC 3207): EHLO, STARTTLS, handshake; the session then starts
    /// over (the client's EHLO is passed on next).
    async fn start_tls(
        mut self,
        tls: &(
            Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        ),
        hostname: &str,
        within: Duration,
    ) -> Result<Origin, String> {
        let ehlo = self
            .command(format!("EHLO {hostname}\r\n").as_bytes())
            .await
            .map_err(|e| format!("EHLO: {e}"))?;
        let offers = Extensions::from_reply(&ehlo).is_some_and(|x| x.has("STARTTLS"));
        if !offers {
            return Err("the origin does not offer STARTTLS".into());
        }
        let r = self
            .command(b"STARTTLS\r\n")
            .await
            .map_err(|e| format!("STARTTLS: {e}"))?;
        if r.code != 220 {
            return Err(format!("STARTTLS answered {}", r.code));
        }
        // Anything the origin sent after its 220 is not to be trusted across the handshake.
        self.buf.clear();
        let UpIo::Tcp(tcp) = self.io else {
            return Err("STARTTLS on a TLS connection".into());
        };
        Ok(Origin {
            io: UpIo::Tls(Box::new(handshake(tls, tcp, within).await?)),
            ..self
        })
    }

    /// Whether a HELO or EHLO resets the origin's session whatever it answers: XCLIENT goes
    /// first, and Postfix starts the session over on it.
    pub(super) fn hello_resets(&self) -> bool {
        self.xclient
    }

    /// The client said EHLO or HELO `name`: with XCLIENT, the client's address goes first
    /// (Postfix answers it with a new greeting: the session starts over), then the command.
    pub(super) async fn hello(
        &mut self,
        client: &ClientId,
        line: &[u8],
        name: &str,
        esmtp: bool,
    ) -> io::Result<Reply> {
        if self.xclient {
            let addr = match client.peer.ip() {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => v4.to_string(),
                    None => format!("IPV6:{a}"),
                },
            };
            let proto = if esmtp { "ESMTP" } else { "SMTP" };
            let xclient = format!(
                "XCLIENT ADDR={addr} PORT={} PROTO={proto} HELO={} NAME=[UNAVAILABLE]\r\n",
                client.peer.port(),
                xtext(name)
            );
            let r = self.command(xclient.as_bytes()).await?;
            if r.code != 220 {
                // Fail closed: passing the session on would make every client look like the
                // proxy to the origin, which may well trust the proxy's address.
                tracing::error!(server = %self.server.spec.address, code = r.code, "XCLIENT refused: is this host in smtpd_authorized_xclient_hosts? session closed");
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the origin refused XCLIENT ({})", r.code),
                ));
            }
        }
        let r = self.command(line).await?;
        if let Some(x) = Extensions::from_reply(&r) {
            self.extensions = x;
        }
        Ok(r)
    }

    /// Sends a command line (CRLF included) and reads its reply.
    pub(super) async fn command(&mut self, line: &[u8]) -> io::Result<Reply> {
        self.write(line).await?;
        self.reply().await
    }

    /// Writes bytes (a command, or message data).
    pub(super) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// Reads one reply within the upstream's response timeout.
    pub(super) async fn reply(&mut self) -> io::Result<Reply> {
        self.reply_within(self.timeout).await
    }

    /// Reads one reply within `timeout`.
    pub(super) async fn reply_within(&mut self, timeout: Duration) -> io::Result<Reply> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.replies.read(&self.buf) {
                Ok(read) => {
                    self.buf.advance(read.consumed);
                    if let Some(r) = read.reply {
                        return Ok(r);
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if self.buf.is_empty() && self.buf.capacity() > 1024 {
                // An idle session keeps no large buffer.
                self.buf = BytesMut::new();
            }
            self.buf.reserve(1024);
            let n = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Ends the session politely (QUIT, not waiting long for the 221).
    pub(super) async fn quit(mut self) {
        self.timeout = self.timeout.min(Duration::from_secs(2));
        let _ = self.command(b"QUIT\r\n").await;
    }
}

async fn handshake(
    tls: &(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
    tcp: tokio::net::TcpStream,
    within: Duration,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let connector = tokio_rustls::TlsConnector::from(tls.0.clone());
    tokio::time::timeout(within, connector.connect(tls.1.clone(), tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// XCLIENT's xtext (RFC 1891 §5, as Postfix reads it): `+`, `=`, controls and spaces as `+XX`.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn xtext_escapes() {
        assert_eq!(super::xtext("mail.example"), "mail.example");
        assert_eq!(super::xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}
