//! One SMTP session, command by command: each line read (bounded), parsed, checked for its place
//! in the session and against the listener's policy, passed to the origin in its canonical form,
//! and the origin's reply passed back (an EHLO reply rebuilt with only what the proxy allows).
//! Commands a client pipelined are taken from the buffer in order (RFC 2920): the proxy never
//! waits for a command already sent, and its replies leave in order, together.

use std::sync::Arc;

use gatehouse_config::model::{SmtpListener, StartTls};
use gatehouse_wire::smtp::{
    Command, EhloOffer, EnhancedCode, ForwardPath, Line, LineReader, Reply, Session, ehlo_reply,
};

use super::client::{COMMAND_CHUNK, Client};
use super::origin::{ClientId, Origin};
use super::record::Transaction;
use crate::runtime::Shared;
use crate::upstream::Upstream;

/// Errors (replies of 400 and above) a session may have before it is closed with 421, as
/// Postfix's `smtpd_hard_error_limit` (20): a client probing commands or addresses one by one
/// does not get to go on forever.
const ERROR_LIMIT: u32 = 20;

/// What a session needs of its listener and route.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a SmtpListener,
    /// The certificates for STARTTLS.
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    pub(super) listener: &'a str,
    pub(super) route: Arc<str>,
    pub(super) up: Arc<Upstream>,
    pub(super) who: ClientId,
    pub(super) shared: Arc<Shared>,
}

/// A session's moving parts.
pub(super) struct State {
    pub(super) session: Session,
    pub(super) lines: LineReader,
    /// The client's last accepted EHLO or HELO: its line, name, and whether it was EHLO;
    /// replayed on a fresh origin connection.
    pub(super) helo: Option<(Vec<u8>, String, bool)>,
    /// The mail transaction in progress.
    pub(super) tx: Option<Transaction>,
    /// None after the origin connection was dropped (a refused message, an origin that died):
    /// a new one is opened for the next command that needs it.
    pub(super) origin: Option<Origin>,
    /// Shutdown: a session waiting for a command is told 421 and closed.
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
}

/// A command line as read.
pub(super) enum Read {
    Command(Vec<u8>),
    TooLong,
    Invalid,
    /// The client closed, or a read failed.
    Gone,
    /// No command within `command_timeout`.
    TimedOut,
    /// The proxy is shutting down.
    Stopping,
}

/// `421 4.4.2`: the client took longer than its timeout.
pub(super) fn timed_out(cfg: &SmtpListener) -> Reply {
    Reply::with_status(
        421,
        EnhancedCode::new(4, 4, 2),
        &format!("{} Error: timeout exceeded", cfg.hostname),
    )
}

/// Whether the session goes on.
pub(super) enum Flow {
    Go,
    Close,
}

/// Serves the session to its end.
pub(super) async fn run(ctx: &Ctx<'_>, mut client: Client, origin: Origin) {
    let mut st = State {
        session: Session::new(),
        lines: LineReader::new(),
        helo: None,
        tx: None,
        origin: Some(origin),
        stop: ctx.shared.shutdown_signal(),
    };
    loop {
        // Every reply of 400 and above counts, the proxy's own refusals of unreadable lines too.
        if client.errors >= ERROR_LIMIT {
            ctx.shared.metrics.smtp_refusal("error_limit");
            client.reply(&Reply::with_status(
                421,
                EnhancedCode::new(4, 7, 0),
                &format!("{} Error: too many errors", ctx.cfg.hostname),
            ));
            break;
        }
        let line = match read_line(ctx, &mut client, &mut st.lines, &mut st.stop).await {
            Read::Command(line) => line,
            Read::TooLong => {
                ctx.shared.metrics.smtp_refusal("line_too_long");
                client.reply(&Reply::line_too_long());
                continue;
            }
            Read::Invalid => {
                ctx.shared.metrics.smtp_refusal("syntax");
                client.reply(&Reply::syntax_error());
                continue;
            }
            Read::TimedOut => {
                client.reply(&timed_out(ctx.cfg));
                break;
            }
            Read::Stopping => {
                // RFC 5321 §3.8: a server that must go away says so with 421.
                client.reply(&Reply::with_status(
                    421,
                    EnhancedCode::new(4, 3, 2),
                    &format!("{} Service shutting down", ctx.cfg.hostname),
                ));
                break;
            }
            Read::Gone => break,
        };
        let cmd = match Command::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                ctx.shared.metrics.smtp_refusal("syntax");
                client.reply(&e.reply());
                continue;
            }
        };
        if let Flow::Close = step(ctx, &mut st, &mut client, cmd).await {
            break;
        }
    }
    st.end_transaction(ctx, &client, "aborted", 0);
    if let Some(o) = st.origin.take() {
        o.quit().await;
    }
    client.close().await;
}

/// The next command line, reading from the client as needed; a session waiting for one stops
/// when the proxy shuts down.
pub(super) async fn read_line(
    ctx: &Ctx<'_>,
    client: &mut Client,
    lines: &mut LineReader,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Read {
    // RFC 5321 §4.5.3.2.7: the timeout is for the command, not for each of its reads.
    let deadline = tokio::time::Instant::now() + ctx.cfg.command_timeout;
    loop {
        let read = lines.read(&client.buf);
        let got = match read.line {
            Some(Line::Command(b)) => Some(Read::Command(b.to_vec())),
            Some(Line::TooLong) => Some(Read::TooLong),
            Some(Line::Invalid(_)) => Some(Read::Invalid),
            None => None,
        };
        client.consume(read.consumed);
        if let Some(got) = got {
            return got;
        }
        if *stop.borrow() {
            return Read::Stopping;
        }
        let read = tokio::select! {
            r = client.read_more(deadline, COMMAND_CHUNK) => r,
            // The sender lives as long as the process state: an error is shutdown too.
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return Read::Stopping,
            },
        };
        match read {
            Ok(0) => return Read::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Read::TimedOut,
            Err(_) => return Read::Gone,
        }
    }
}

/// One command.
async fn step(ctx: &Ctx<'_>, st: &mut State, client: &mut Client, cmd: Command) -> Flow {
    if let Err(r) = st.session.check(&cmd) {
        ctx.shared.metrics.smtp_refusal("sequence");
        client.reply(&r);
        return Flow::Go;
    }
    match &cmd {
        Command::Ehlo(name) | Command::Helo(name) => {
            let esmtp = matches!(cmd, Command::Ehlo(_));
            hello(ctx, st, client, &cmd, name.clone(), esmtp).await
        }
        Command::Mail { params, .. } => {
            if ctx.cfg.starttls == StartTls::Require && client.tls.is_none() {
                ctx.shared.metrics.smtp_refusal("starttls_required");
                client.reply(&Reply::with_status(
                    530,
                    EnhancedCode::new(5, 7, 0),
                    "Must issue a STARTTLS command first",
                ));
                return Flow::Go;
            }
            if params.size.is_some_and(|s| s > ctx.cfg.max_message_size) {
                ctx.shared.metrics.smtp_refusal("size");
                client.reply(&Reply::with_status(
                    552,
                    EnhancedCode::new(5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ));
                return Flow::Go;
            }
            pass(ctx, st, client, &cmd).await
        }
        Command::Rcpt { to, .. } => rcpt(ctx, st, client, &cmd, to).await,
        Command::Data => super::data::run(ctx, st, client).await,
        Command::Rset => {
            st.end_transaction(ctx, client, "aborted", 0);
            match st.origin.is_some() {
                true => pass(ctx, st, client, &cmd).await,
                false => {
                    let ok = Reply::with_status(250, EnhancedCode::new(2, 0, 0), "Ok");
                    st.session.on_reply(&cmd, &ok);
                    client.reply(&ok);
                    Flow::Go
                }
            }
        }
        Command::Noop(_) => {
            client.reply(&Reply::with_status(250, EnhancedCode::new(2, 0, 0), "Ok"));
            Flow::Go
        }
        Command::Help(_) => {
            client.reply(&Reply::new(214, "2.0.0 See RFC 5321"));
            Flow::Go
        }
        Command::Quit => {
            client.reply(&Reply::with_status(221, EnhancedCode::new(2, 0, 0), "Bye"));
            Flow::Close
        }
        Command::StartTls => start_tls(ctx, st, client).await,
        Command::Auth { .. } => super::data::auth(ctx, st, client, &cmd).await,
        Command::Vrfy(_) | Command::Expn(_) if allowed(ctx.cfg, &cmd) => {
            pass(ctx, st, client, &cmd).await
        }
        Command::Other(_) => {
            ctx.shared.metrics.smtp_refusal("command");
            client.reply(&Reply::unrecognized());
            Flow::Go
        }
        _ => {
            ctx.shared.metrics.smtp_refusal("command");
            client.reply(&Reply::not_implemented());
            Flow::Go
        }
    }
}

/// Whether a VRFY or EXPN may pass (the listener's `commands`).
fn allowed(cfg: &SmtpListener, cmd: &Command) -> bool {
    let verb = match cmd {
        Command::Vrfy(_) => "VRFY",
        Command::Expn(_) => "EXPN",
        _ => return false,
    };
    cfg.commands.iter().any(|c| c == verb)
}

/// EHLO or HELO: to the origin (after XCLIENT when configured); our own reply, with only the
/// extensions we pass. Any transaction ends (RFC 5321 §4.1.4).
async fn hello(
    ctx: &Ctx<'_>,
    st: &mut State,
    client: &mut Client,
    cmd: &Command,
    name: String,
    esmtp: bool,
) -> Flow {
    let mut line = Vec::new();
    cmd.encode(&mut line);
    let Some(origin) = st.origin_or_reply(ctx, client).await else {
        return Flow::Go;
    };
    // With XCLIENT first, the origin's session starts over whatever it answers the EHLO.
    let resets = origin.hello_resets();
    let r = match origin.hello(&ctx.who, &line, &name, esmtp).await {
        Ok(r) => r,
        Err(e) => return st.origin_lost(ctx, client, e),
    };
    let reply = match (r.code, esmtp) {
        (250, true) => {
            let offer = EhloOffer {
                hostname: ctx.cfg.hostname.clone(),
                max_message_size: ctx.cfg.max_message_size,
                starttls: ctx.tls.is_some()
                    && ctx.cfg.starttls != StartTls::Off
                    && client.tls.is_none(),
                auth: client.tls.is_some(),
            };
            ehlo_reply(&offer, &origin.extensions)
        }
        (250, false) => Reply::new(250, ctx.cfg.hostname.clone()),
        _ => r.clone(),
    };
    // The session follows the origin's: an accepted EHLO ends any transaction (RFC 5321
    // §4.1.4); a refused one ends it only where XCLIENT started the origin's session over.
    if r.code == 250 || resets {
        st.end_transaction(ctx, client, "aborted", 0);
        st.helo = None;
    }
    if r.code != 250 && resets {
        st.session = Session::new();
    }
    st.session.on_reply(cmd, &r);
    if r.code == 250 {
        st.helo = Some((line, name, esmtp));
    }
    client.reply(&reply);
    Flow::Go
}

/// RCPT: relay control and the recipient limit first, then the origin.
async fn rcpt(
    ctx: &Ctx<'_>,
    st: &mut State,
    client: &mut Client,
    cmd: &Command,
    to: &ForwardPath,
) -> Flow {
    let cfg = ctx.cfg;
    let domain_ok = match to {
        // RFC 5321 §4.5.1: mail to the postmaster is always accepted.
        ForwardPath::Postmaster => true,
        ForwardPath::Mailbox(m) => {
            cfg.recipient_domains.is_empty()
                || cfg
                    .recipient_domains
                    .contains(&m.domain.to_ascii_lowercase())
        }
    };
    let accepted = st.tx.as_ref().map_or(0, |t| t.recipients);
    let refusal = if !domain_ok {
        Some((
            "relay",
            550,
            EnhancedCode::new(5, 7, 1),
            "Relay access denied",
        ))
    } else if accepted >= cfg.max_recipients {
        Some((
            "recipients",
            452,
            EnhancedCode::new(4, 5, 3),
            "Too many recipients",
        ))
    } else {
        None
    };
    if let Some((reason, code, status, text)) = refusal {
        ctx.shared.metrics.smtp_refusal(reason);
        if let Some(t) = &mut st.tx {
            t.refused_recipients += 1;
        }
        client.reply(&Reply::with_status(code, status, text));
        return Flow::Go;
    }
    pass(ctx, st, client, cmd).await
}

/// Passes a command to the origin and its reply back; MAIL opens the transaction, RCPT counts.
pub(super) async fn pass(
    ctx: &Ctx<'_>,
    st: &mut State,
    client: &mut Client,
    cmd: &Command,
) -> Flow {
    let mut line = Vec::new();
    cmd.encode(&mut line);
    let Some(origin) = st.origin_or_reply(ctx, client).await else {
        return Flow::Go;
    };
    let server = origin.server.label.clone();
    let r = match origin.command(&line).await {
        Ok(r) => r,
        Err(e) => return st.origin_lost(ctx, client, e),
    };
    match cmd {
        Command::Mail { from, .. } if r.is_positive() => {
            st.tx = Some(Transaction::new(from.to_string(), server));
        }
        Command::Rcpt { .. } => {
            if let Some(t) = &mut st.tx {
                match r.is_positive() {
                    true => t.recipients += 1,
                    false => t.refused_recipients += 1,
                }
            }
        }
        _ => {}
    }
    st.session.on_reply(cmd, &r);
    client.reply(&r);
    Flow::Go
}

/// STARTTLS with the listener's certificates. The session starts over: a new EHLO is needed
/// (RFC 3207 §4.2), and what the client pipelined after the command is dropped.
async fn start_tls(ctx: &Ctx<'_>, st: &mut State, client: &mut Client) -> Flow {
    let Some(config) = ctx
        .tls
        .clone()
        .filter(|_| ctx.cfg.starttls != StartTls::Off)
    else {
        client.reply(&Reply::not_implemented());
        return Flow::Go;
    };
    if client.tls.is_some() {
        client.reply(&Reply::bad_sequence("TLS already active"));
        return Flow::Go;
    }
    let ready = Reply::with_status(220, EnhancedCode::new(2, 0, 0), "Ready to start TLS");
    client.reply(&ready);
    if let Err(e) = client.start_tls(config, ctx.cfg.command_timeout).await {
        tracing::debug!(listener = ctx.listener, peer = %ctx.who.peer, error = %e, "smtp: STARTTLS handshake failed");
        return Flow::Close;
    }
    st.session.on_reply(&Command::StartTls, &ready);
    st.lines = LineReader::new();
    st.helo = None;
    Flow::Go
}

impl State {
    /// The origin connection, opened anew when the last one was dropped: greeting, then the
    /// client's EHLO or HELO again (with XCLIENT) so the origin's session is where the
    /// client's is.
    pub(super) async fn origin(&mut self, ctx: &Ctx<'_>) -> Result<&mut Origin, Reply> {
        if self.origin.is_none() {
            let unavailable = || {
                ctx.shared.metrics.smtp_refusal("no_origin");
                Reply::with_status(
                    451,
                    EnhancedCode::new(4, 4, 2),
                    "Temporary failure: the mail server is not available",
                )
            };
            let mut o = Origin::connect(&ctx.up, &ctx.who, &ctx.cfg.hostname)
                .await
                .map_err(|_| unavailable())?;
            if let Some((line, name, esmtp)) = &self.helo {
                let r = o.hello(&ctx.who, line, name, *esmtp).await;
                if !r.is_ok_and(|r| r.code == 250) {
                    return Err(unavailable());
                }
            }
            self.origin = Some(o);
        }
        self.origin
            .as_mut()
            .ok_or_else(|| Reply::new(451, "4.4.2 no origin"))
    }

    /// [`State::origin`], or its failure's reply queued for the client (the command then ends).
    pub(super) async fn origin_or_reply(
        &mut self,
        ctx: &Ctx<'_>,
        client: &mut Client,
    ) -> Option<&mut Origin> {
        match self.origin(ctx).await {
            Ok(o) => Some(o),
            Err(r) => {
                client.reply(&r);
                None
            }
        }
    }

    /// The origin died or stopped answering: 451 4.4.2 (RFC 5321 §4.2.2), the transaction is
    /// over, and the next command that needs the origin opens a new connection.
    pub(super) fn origin_lost(
        &mut self,
        ctx: &Ctx<'_>,
        client: &mut Client,
        e: std::io::Error,
    ) -> Flow {
        tracing::warn!(listener = ctx.listener, peer = %ctx.who.peer, error = %e, "smtp: origin lost");
        self.origin = None;
        self.end_transaction(ctx, client, "failed", 451);
        self.session.message_done();
        if matches!(
            self.session.state(),
            gatehouse_wire::smtp::State::Mail | gatehouse_wire::smtp::State::Rcpt
        ) {
            // The origin's transaction is gone with its connection: so is ours.
            let reset = Reply::with_status(250, EnhancedCode::new(2, 0, 0), "Ok");
            self.session.on_reply(&Command::Rset, &reset);
        }
        client.reply(&Reply::with_status(
            451,
            EnhancedCode::new(4, 4, 2),
            "Connection to the mail server lost",
        ));
        Flow::Go
    }

    /// Ends the transaction in progress, if any: one access-log line and the counter.
    pub(super) fn end_transaction(
        &mut self,
        ctx: &Ctx<'_>,
        client: &Client,
        result: &str,
        status: u16,
    ) {
        if let Some(mut t) = self.tx.take() {
            t.status = status;
            let helo = self.helo.as_ref().map_or("", |h| h.1.as_str());
            super::record::log(ctx, client, helo, &t, result);
        }
    }
}
