//! A mail transaction's record: from an accepted MAIL to the message's verdict (or the RSET,
//! EHLO, QUIT or disconnect that ended it), logged as one access-log line and counted.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::client::Client;
use super::session::Ctx;

/// A transaction in progress.
pub(super) struct Transaction {
    started: Instant,
    pub(super) sender: String,
    pub(super) recipients: usize,
    pub(super) refused_recipients: usize,
    /// The message's size (RFC 1870 counting), once read.
    pub(super) size: u64,
    /// The final reply's code.
    pub(super) status: u16,
    pub(super) queue_id: Option<String>,
    server: Arc<str>,
}

impl Transaction {
    /// A transaction whose MAIL the origin `server` accepted.
    pub(super) fn new(sender: String, server: Arc<str>) -> Self {
        Transaction {
            started: Instant::now(),
            sender,
            recipients: 0,
            refused_recipients: 0,
            size: 0,
            status: 0,
            queue_id: None,
            server,
        }
    }
}

/// One transaction, as logged.
#[derive(Serialize)]
struct Entry<'a> {
    protocol: &'static str,
    client: std::net::IpAddr,
    helo: &'a str,
    tls: bool,
    sender: &'a str,
    recipients: usize,
    refused_recipients: usize,
    size: u64,
    status: u16,
    /// delivered | refused | aborted | failed
    result: &'a str,
    queue_id: Option<&'a str>,
    listener: &'a str,
    route: &'a str,
    upstream: &'a str,
    server: &'a str,
}

/// Logs and counts a finished transaction.
pub(super) fn log(ctx: &Ctx<'_>, client: &Client, helo: &str, t: &Transaction, result: &str) {
    let shared = &ctx.shared;
    shared.metrics.smtp_transaction(ctx.listener, result);
    let snap = shared.snapshot();
    let Some(log) = &snap.access_log else {
        return;
    };
    let entry = Entry {
        protocol: "smtp",
        client: gatehouse_config::units::canonical_ip(ctx.who.peer.ip()),
        helo,
        tls: client.tls.is_some(),
        sender: &t.sender,
        recipients: t.recipients,
        refused_recipients: t.refused_recipients,
        size: t.size,
        status: t.status,
        result,
        queue_id: t.queue_id.as_deref(),
        listener: ctx.listener,
        route: &ctx.route,
        upstream: &ctx.up.model.name,
        server: &t.server,
    };
    log.write_any(&entry, t.started.elapsed());
}
