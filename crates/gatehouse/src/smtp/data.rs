//! DATA and AUTH, the two commands after which the client sends more than a command line.
//!
//! DATA: the message is read by the strict reader (`DataReader`): only CRLF "." CRLF ends it, a
//! bare CR, a bare LF or a NUL refuses it (550 5.6.11), and so does passing max_message_size
//! (552 5.3.4). Bytes reach the origin only once checked. A refused message's origin connection
//! is dropped before its end (an MTA discards an unfinished message; DATA has no RSET), the
//! refusal is answered after the client's own end of data, and the next transaction gets a new
//! origin connection. So the origin sees exactly the transactions the client made.

use gatehouse_wire::smtp::{Command, DataReader, Refusal, Reply, Verdict};

use super::client::{Client, DATA_CHUNK};

/// The wait for the origin's reply to the end of data (RFC 5321 §4.5.3.2.6).
const DATA_END: std::time::Duration = std::time::Duration::from_secs(600);
use super::session::{Ctx, Flow, Read, State, read_line};

/// DATA: the origin's 354, then the message streamed through the reader, then the verdict.
pub(super) async fn run(ctx: &Ctx<'_>, st: &mut State, client: &mut Client) -> Flow {
    let Some(origin) = st.origin_or_reply(ctx, client).await else {
        return Flow::Go;
    };
    let go = match origin.command(b"DATA\r\n").await {
        Ok(r) => r,
        Err(e) => return st.origin_lost(ctx, client, e),
    };
    st.session.on_reply(&Command::Data, &go);
    client.reply(&go);
    if go.code != 354 {
        return Flow::Go;
    }
    let mut reader = DataReader::new(ctx.cfg.max_message_size);
    let verdict = match stream(ctx, st, client, &mut reader).await {
        Ok(v) => v,
        Err(timed_out) => {
            // The client left or stalled mid-message: the origin's unfinished message is
            // dropped with its connection.
            st.origin = None;
            st.end_transaction(ctx, client, "aborted", 0);
            if timed_out {
                client.reply(&super::session::timed_out(ctx.cfg));
            }
            return Flow::Close;
        }
    };
    st.session.message_done();
    match verdict {
        Verdict::Ok { size } => delivered(ctx, st, client, size).await,
        Verdict::Refused(why) => {
            ctx.shared.metrics.smtp_refusal(refusal_reason(why));
            let r = why.reply();
            if let Some(t) = &mut st.tx {
                t.size = reader.size();
            }
            st.end_transaction(ctx, client, "refused", r.code);
            client.reply(&r);
            Flow::Go
        }
    }
}

/// Reads the message to its end, forwarding what the reader releases; Err: the client went
/// away (false) or sent nothing within `data_timeout` (true). At the first fault the origin
/// connection is dropped, unfinished.
async fn stream(
    ctx: &Ctx<'_>,
    st: &mut State,
    client: &mut Client,
    reader: &mut DataReader,
) -> Result<Verdict, bool> {
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let p = reader.feed(&client.buf, &mut out);
        client.consume(p.consumed);
        if reader.refusal().is_some() {
            st.origin = None;
        }
        if let Some(o) = &mut st.origin
            && !out.is_empty()
            && let Err(e) = o.write(&out).await
        {
            // Answered once the message ends: the origin is gone either way.
            tracing::warn!(listener = ctx.listener, error = %e, "smtp: origin lost during DATA");
            st.origin = None;
        }
        out.clear();
        if let Some(v) = p.done {
            return Ok(v);
        }
        match client
            .read_more(
                tokio::time::Instant::now() + ctx.cfg.data_timeout,
                DATA_CHUNK,
            )
            .await
        {
            Ok(n) if n > 0 => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(true),
            _ => return Err(false),
        }
    }
}

/// A clean message was sent whole with its end: the origin's reply, with the queue id.
async fn delivered(ctx: &Ctx<'_>, st: &mut State, client: &mut Client, size: u64) -> Flow {
    if let Some(t) = &mut st.tx {
        t.size = size;
    }
    let reply = match &mut st.origin {
        // RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the end of data (content filters
        // may take long), or the upstream's response timeout if longer.
        Some(o) => {
            o.reply_within(DATA_END.max(ctx.up.model.response_timeout))
                .await
        }
        None => Err(std::io::ErrorKind::NotConnected.into()),
    };
    let r = match reply {
        Ok(r) => r,
        Err(e) => return st.origin_lost(ctx, client, e),
    };
    if let Some(t) = &mut st.tx {
        t.queue_id = queue_id(&r);
    }
    let result = if r.is_positive() {
        "delivered"
    } else {
        "refused"
    };
    st.end_transaction(ctx, client, result, r.code);
    client.reply(&r);
    Flow::Go
}

/// The metric label of a refused message.
fn refusal_reason(why: Refusal) -> &'static str {
    match why {
        Refusal::BareLf => "bare_lf",
        Refusal::BareCr => "bare_cr",
        Refusal::Nul => "nul",
        Refusal::TooBig => "size",
    }
}

/// The queue id in an origin's 250 to the end of data: Postfix's "queued as ID", Exim's
/// "id=ID".
fn queue_id(r: &Reply) -> Option<String> {
    let text = r.lines.last()?;
    let id = if let Some(i) = text.find("queued as ") {
        &text[i + "queued as ".len()..]
    } else if let Some(i) = text.find("id=") {
        &text[i + 3..]
    } else {
        return None;
    };
    let id: String = id
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// AUTH (RFC 4954), only under TLS and only when the origin offers it: the exchange is passed
/// line by line, the client's responses read as AUTH lines (up to 12,288 bytes).
pub(super) async fn auth(
    ctx: &Ctx<'_>,
    st: &mut State,
    client: &mut Client,
    cmd: &Command,
) -> Flow {
    let offered = st.origin.as_ref().is_some_and(|o| o.extensions.has("AUTH"));
    if client.tls.is_none() || !offered {
        ctx.shared.metrics.smtp_refusal("command");
        client.reply(&Reply::not_implemented());
        return Flow::Go;
    }
    let mut line = Vec::new();
    cmd.encode(&mut line);
    loop {
        let Some(o) = &mut st.origin else {
            return Flow::Go;
        };
        let r = match o.command(&line).await {
            Ok(r) => r,
            Err(e) => {
                st.lines.set_sasl(false);
                return st.origin_lost(ctx, client, e);
            }
        };
        client.reply(&r);
        if r.code != 334 {
            st.lines.set_sasl(false);
            st.session.on_reply(cmd, &r);
            return Flow::Go;
        }
        st.lines.set_sasl(true);
        line = match sasl_line(ctx, st, client).await {
            Some(l) => l,
            None => return Flow::Close,
        };
    }
}

/// The client's next SASL response line, CRLF included; None: it went away. A line that is no
/// response (too long, or with a bare CR or LF) cancels the exchange as `*` does (RFC 4954 §4).
async fn sasl_line(ctx: &Ctx<'_>, st: &mut State, client: &mut Client) -> Option<Vec<u8>> {
    let mut line = match read_line(ctx, client, &mut st.lines, &mut st.stop).await {
        Read::Command(l) => l,
        Read::TooLong | Read::Invalid => b"*".to_vec(),
        Read::Gone | Read::TimedOut | Read::Stopping => return None,
    };
    line.extend_from_slice(b"\r\n");
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids() {
        let r = Reply::new(250, "2.0.0 Ok: queued as 4Xz9Lq0k2Wz1");
        assert_eq!(queue_id(&r).as_deref(), Some("4Xz9Lq0k2Wz1"));
        let r = Reply::new(250, "OK id=1tQ2-000ABC-3x");
        assert_eq!(queue_id(&r).as_deref(), Some("1tQ2-000ABC-3x"));
        assert_eq!(queue_id(&Reply::new(250, "Ok")), None);
    }
}
