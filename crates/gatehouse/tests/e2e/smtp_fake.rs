//! An SMTP origin written for the tests, deliberately lenient the way the MTAs of the 2023 SMTP
//! smuggling reports were: it ends a message at `\n.\n`, `\n.\r\n`, `\r.\r` and `\r\n.\n` as
//! well as at CRLF "." CRLF. It records every command line, every message and a PROXY v1 line.
//! And a small SMTP client for the tests' side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake MTA saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Command lines, in order, over every session.
    pub lines: Vec<String>,
    /// Messages ended (by any end it accepts), raw.
    pub messages: Vec<Vec<u8>>,
    /// PROXY v1 lines received.
    pub proxy: Vec<String>,
    /// Sessions accepted.
    pub sessions: usize,
}

pub struct FakeMta {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMta {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMta {
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Whether any command line seen starts with `prefix`.
    pub fn saw(&self, prefix: &str) -> bool {
        self.seen().lines.iter().any(|l| l.starts_with(prefix))
    }
}

/// Starts the fake MTA on an ephemeral loopback port.
pub async fn fake_mta() -> FakeMta {
    fake_mta_on("127.0.0.1:0").await
}

pub async fn fake_mta_on(bind: &str) -> FakeMta {
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            s.lock().unwrap().sessions += 1;
            tokio::spawn(mta_session(c, s.clone()));
        }
    });
    FakeMta { addr, seen, task }
}

const EHLO: &str = "250-fake.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-XCLIENT ADDR NAME PROTO HELO\r\n250-ETRN\r\n250-CHUNKING\r\n250-AUTH PLAIN\r\n250 ENHANCEDSTATUSCODES\r\n";

async fn mta_session(mut c: TcpStream, seen: Arc<Mutex<Seen>>) {
    if c.write_all(b"220 fake.example ESMTP\r\n").await.is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut queued = 0;
    loop {
        let Some(line) = take_line(&mut c, &mut buf).await else {
            return;
        };
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("PROXY ") {
            seen.lock().unwrap().proxy.push(line);
            continue;
        }
        seen.lock().unwrap().lines.push(line.clone());
        let reply: &[u8] = match upper.split(' ').next().unwrap_or("") {
            "EHLO" => EHLO.as_bytes(),
            "HELO" => b"250 fake.example\r\n",
            "XCLIENT" => b"220 fake.example ESMTP\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "VRFY" => b"252 2.0.0 maybe\r\n",
            "AUTH" => {
                // One SASL round: a challenge, the client's response, success.
                if c.write_all(b"334 \r\n").await.is_err() {
                    return;
                }
                let Some(response) = take_line(&mut c, &mut buf).await else {
                    return;
                };
                seen.lock().unwrap().lines.push(response);
                b"235 2.7.0 Authentication successful\r\n"
            }
            "QUIT" => {
                let _ = c.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            "DATA" => {
                if c.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let Some(msg) = take_message(&mut c, &mut buf).await else {
                    return;
                };
                queued += 1;
                seen.lock().unwrap().messages.push(msg);
                let r = format!("250 2.0.0 Ok: queued as Q{queued}\r\n");
                if c.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            _ => b"500 5.5.1 unknown\r\n",
        };
        if c.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// A line ended by LF (a CR before it dropped), leniently.
async fn take_line(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        if !read_more(c, buf).await {
            return None;
        }
    }
}

/// A message up to the first end this lenient MTA accepts; None if the connection closed
/// first (an unfinished message is discarded, as MTAs do).
async fn take_message(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    const ENDS: [&[u8]; 5] = [b"\r\n.\r\n", b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n"];
    loop {
        // The message starts at a line start: search as if CRLF came before it.
        let mut hay = b"\r\n".to_vec();
        hay.extend_from_slice(buf);
        let found = ENDS
            .iter()
            .filter_map(|e| find(&hay, e).map(|i| (i, e.len())))
            .min();
        if let Some((i, len)) = found {
            let msg = hay[2..i.max(2)].to_vec();
            let end = i + len - 2;
            buf.drain(..end.min(buf.len()));
            return Some(msg);
        }
        if !read_more(c, buf).await {
            return None;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(c: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match c.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// The tests' SMTP client: whole replies, as (code, lines).
pub struct Client<S> {
    pub io: S,
    buf: Vec<u8>,
}

pub type Reply = (u16, Vec<String>);

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        Client {
            io: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn wrap(io: S) -> Client<S> {
        Client {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next reply; panics after 10 s without one.
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), self.try_reply())
            .await
            .expect("a reply within 10 s")
            .expect("a reply, not the end of the connection")
    }

    /// The next reply, or None when the connection ends first.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            while let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                let line = String::from_utf8_lossy(&line[..i]).into_owned();
                let code: u16 = line.get(..3)?.parse().ok()?;
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line.get(4..).unwrap_or("").to_string());
                if last {
                    return Some((code, lines));
                }
            }
            let mut tmp = [0u8; 8192];
            match self.io.read(&mut tmp).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Sends `line` and returns the reply's code.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Unwraps the stream (after STARTTLS's 220), with nothing left unread.
    pub fn into_inner(self) -> S {
        assert!(self.buf.is_empty(), "bytes after the reply: {:?}", self.buf);
        self.io
    }
}
