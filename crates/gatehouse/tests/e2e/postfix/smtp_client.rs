//! A minimal SMTP client for raw conversations in tests: one command, one (possibly multi-line)
//! reply, asserting the reply code.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::DOMAIN;

/// A client on `S`: a TCP stream, or a TLS stream after STARTTLS.
pub struct Smtp<S> {
    pub io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    pub fn new(io: S) -> Smtp<S> {
        Smtp {
            io: BufReader::new(io),
        }
    }

    /// Reads one reply: its code and its lines joined with '\n'.
    pub async fn reply(&mut self) -> (u16, String) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read_line(&mut line))
                .await
                .expect("SMTP reply within 5 s")
                .unwrap();
            assert!(n > 0, "connection closed after {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines[0][..3].parse().unwrap();
        (code, lines.join("\n"))
    }

    /// Sends `line` and expects a reply with `code`.
    pub async fn cmd(&mut self, line: &str, code: u16) -> String {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let (got, text) = self.reply().await;
        assert_eq!(got, code, "{line}: {text}");
        text
    }

    /// MAIL, RCPT, DATA for one message whose Subject is `subject`; the reply to the message
    /// must have `code`, and its text is returned. `body` is sent as it is (bare LFs too).
    pub async fn send_mail(&mut self, subject: &str, body: &str, code: u16) -> String {
        self.cmd("MAIL FROM:<sender@example.org>", 250).await;
        self.cmd(&format!("RCPT TO:<user@{DOMAIN}>"), 250).await;
        self.cmd("DATA", 354).await;
        let data = format!(
            "From: sender@example.org\r\nTo: user@{DOMAIN}\r\nSubject: {subject}\r\n\r\n{body}\r\n."
        );
        self.cmd(&data, code).await
    }
}
