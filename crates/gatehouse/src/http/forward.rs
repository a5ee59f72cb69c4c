//! Forwarding one request to an upstream: pick a server, get a pooled or new connection, send,
//! wait for the response headers within `response_timeout`, and retry when that is safe.
//!
//! Retry rules: a connect error never consumed the request, so it is retried for any method; a
//! request whose head never fully reached the origin (the client hands its body back) likewise;
//! after that, only an idempotent request without a body is re-sent. A stale pooled connection
//! gets one fresh retry on the same server without counting against the server.

use std::sync::Arc;

use http::{Method, Request, Response, request::Parts};
use http_body_util::BodyExt;

use gatehouse_config::model::Upstream as UpstreamModel;

use super::body::TooLarge;
use crate::error::{BoxError, ClientBodyFailed, ErrorKind, ProxyError};
use crate::upstream::pool::{self, Conn, UpBody, UpstreamBody};
use crate::upstream::{ActiveGuard, PickInput, ServerState, Upstream};
use gatehouse_h1::RawHead;

/// A successful forward: the response and the server that gave it.
pub struct Forwarded {
    /// Response from the origin. From an HTTP/1 origin its header map is empty and the fields
    /// are in `raw`.
    pub response: Response<UpstreamBody>,
    /// The fields of an HTTP/1 origin's answer, as it sent them.
    pub raw: Option<RawHead>,
    /// The server.
    pub server: Arc<ServerState>,
}

impl Forwarded {
    fn new(
        response: Response<UpstreamBody>,
        raw: Option<RawHead>,
        server: Arc<ServerState>,
    ) -> Self {
        Forwarded {
            response,
            raw,
            server,
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn empty_body() -> UpBody {
    http_body_util::Empty::new()
        .map_err(|n| match n {})
        .boxed_unsync()
}

/// A copy of a request head with the added lines in its map, for hyper's HTTP/2 client (which
/// takes requests by value).
fn request_of(p: &Parts, lines: &[u8], body: UpBody) -> Request<UpBody> {
    let mut req = Request::new(body);
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    gatehouse_h1::raw_head::append_lines(req.headers_mut(), lines);
    req
}

/// The servers a request was sent to so far: a few inline (no allocation for the usual one or
/// two attempts), more on the heap.
#[derive(Default)]
struct Tried {
    inline: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    fn push(&mut self, i: usize) {
        if self.more.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = i;
            self.len += 1;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline[..self.len]);
            }
            self.more.push(i);
        }
    }

    fn as_slice(&self) -> &[usize] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Sends the request of head `parts` and `body` to a server of `up`, with header `lines`
/// (`name: value\r\n`) after its map's; `upgrade`: keep the connection out of the pool (it
/// becomes a tunnel). Returns the response with the server's in-flight guard.
///
/// The head is borrowed, as by every step below `pipeline::handle`: a request's futures nest
/// five deep, and each async fn keeps its by-value arguments twice (as passed, and as its own
/// locals), so a head passed by value made every level 450 bytes larger and was copied at each.
pub async fn forward(
    up: &Upstream,
    parts: &Parts,
    body: UpBody,
    lines: &[u8],
    pick: PickInput<'_>,
    upgrade: bool,
    proxy: Option<&pool::ProxyHeader>,
) -> Result<(Forwarded, ActiveGuard), ProxyError> {
    let m = &up.model;
    // With retries allowed, an idempotent request without a body can be sent again as often as
    // needed; any request while its body is untouched (given back by a send that did not write
    // the whole head).
    let replayable =
        m.retries > 0 && idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
    let mut body = Some(body);
    let mut tries = Attempts::default();
    while tries.attempts <= m.retries {
        let Some((i, reuse_ok)) = tries.next_server(up, &pick) else {
            break;
        };
        let server = up.servers[i].clone();
        let Some(b) = body.take().or_else(|| replayable.then(empty_body)) else {
            break;
        };
        // Counted in flight from the moment it is picked, so that concurrent picks see it.
        let guard = ActiveGuard::new(server.clone());
        let pooled = if reuse_ok { server.pool.take() } else { None };
        let reused = pooled.is_some();
        let conn = match pooled {
            Some(c) => c,
            // Boxed: connecting (TLS handshake included) is a large future that pooled
            // requests never need.
            None => match Box::pin(pool::connect(&server, m.connect_timeout, proxy)).await {
                Ok(c) => c,
                Err(e) => {
                    tries.connect_failed(&server, m, e);
                    body = Some(b);
                    continue;
                }
            },
        };
        let sent: Result<Sent, Unsent> = match conn {
            Conn::H1(c) => {
                let fut = c.send(
                    parts,
                    lines,
                    b,
                    server.clone(),
                    !upgrade,
                    m.response_timeout,
                );
                match fut.await {
                    Ok((resp, raw)) => Ok((resp.map(UpstreamBody::H1), Some(raw))),
                    Err(e) if e.timed_out => return Err(timed_out(&server, m)),
                    Err(e) => Err((e.body, e.error)),
                }
            }
            Conn::H2(sender) => {
                match send_h2(sender, request_of(parts, lines, b), m.response_timeout).await {
                    Some(sent) => sent,
                    None => return Err(timed_out(&server, m)),
                }
            }
        };
        let (given_back, err) = match sent {
            Ok((response, raw)) => return Ok((Forwarded::new(response, raw, server), guard)),
            Err(failed) => failed,
        };
        drop(guard);
        let replay = given_back.or_else(|| replayable.then(empty_body));
        match tries.send_failed(&server, m, i, reused, err, replay.is_some())? {
            true => body = replay,
            false => break,
        }
    }
    Err(tries.last.unwrap_or_else(|| {
        ProxyError::new(ErrorKind::NoHealthyServer).with(format!("upstream `{}`", m.name))
    }))
}

/// An answer and, from an HTTP/1 origin, its fields as sent.
type Sent = (Response<UpstreamBody>, Option<RawHead>);
/// A send that failed: the body when it was given back untouched, and why.
type Unsent = (Option<UpBody>, BoxError);

/// Sends a request on an HTTP/2 connection; None: no answer within `timeout`.
async fn send_h2(
    mut sender: hyper::client::conn::http2::SendRequest<UpBody>,
    req: Request<UpBody>,
    timeout: std::time::Duration,
) -> Option<Result<Sent, Unsent>> {
    match tokio::time::timeout(timeout, sender.try_send_request(req)).await {
        Ok(Ok(resp)) => Some(Ok((resp.map(UpstreamBody::H2), None))),
        Ok(Err(mut e)) => Some(Err((
            e.take_message().map(|r| r.into_body()),
            e.into_error().into(),
        ))),
        Err(_) => None,
    }
}

/// The servers a request has tried, and why the last try failed.
#[derive(Default)]
struct Attempts {
    tried: Tried,
    last: Option<ProxyError>,
    /// A server to try again at once on a new connection (its pooled one was closed).
    fresh_retry: Option<usize>,
    attempts: u32,
}

impl Attempts {
    /// The next server to try and whether a pooled connection may serve: the one whose pooled
    /// connection failed, on a new one; else a pick among those not tried yet, or among all
    /// once every server was tried (go round again rather than fail early).
    fn next_server(&mut self, up: &Upstream, pick: &PickInput<'_>) -> Option<(usize, bool)> {
        if let Some(i) = self.fresh_retry.take() {
            return Some((i, false));
        }
        let input = PickInput {
            exclude: self.tried.as_slice(),
            ..*pick
        };
        let i = up.pick(&input).or_else(|| {
            if self.tried.is_empty() {
                None
            } else {
                up.pick(&PickInput {
                    exclude: &[],
                    ..input
                })
            }
        })?;
        self.attempts += 1;
        self.tried.push(i);
        Some((i, true))
    }

    /// A connection could not be made: counted against the server, retryable.
    fn connect_failed(&mut self, server: &ServerState, m: &UpstreamModel, e: BoxError) {
        tracing::warn!(upstream = %m.name, server = %server.spec.address, error = %e, "connect failed");
        server.record_failure(m.passive.as_ref());
        let err = ProxyError::new(ErrorKind::ConnectFailed).with(e);
        self.last = Some(err.retryable(true));
    }

    /// A send of server `i` failed with `err`: the client's own failure ends the request; a
    /// pooled connection the origin had closed is retried once on a new one; otherwise the
    /// failure counts against the server. Ok(true): try again (`can_replay`: the body is still
    /// there to send).
    fn send_failed(
        &mut self,
        server: &ServerState,
        m: &UpstreamModel,
        i: usize,
        reused: bool,
        err: BoxError,
        can_replay: bool,
    ) -> Result<bool, ProxyError> {
        if caused_by::<TooLarge>(&*err) {
            return Err(ProxyError::new(ErrorKind::BodyTooLarge).with(err));
        }
        if caused_by::<ClientBodyFailed>(&*err) {
            // The client's doing: not counted against the server, not retried.
            return Err(ProxyError::new(ErrorKind::BadRequest).with(err));
        }
        tracing::debug!(upstream = %m.name, server = %server.spec.address, reused, error = %err, "send failed");
        if reused && can_replay {
            self.fresh_retry = Some(i);
            return Ok(true);
        }
        server.record_failure(m.passive.as_ref());
        self.last = Some(ProxyError::new(ErrorKind::UpstreamReset).with(err));
        Ok(can_replay)
    }
}

/// The answer did not come within `response_timeout`: counted against the server, not retried
/// (the origin may still be working on it).
fn timed_out(server: &ServerState, m: &UpstreamModel) -> ProxyError {
    server.record_failure(m.passive.as_ref());
    ProxyError::new(ErrorKind::UpstreamTimeout).with(format!(
        "no response from {} within {:?}",
        server.spec.address, m.response_timeout
    ))
}

/// Whether an `E` is in `err`'s chain of causes.
fn caused_by<E: std::error::Error + 'static>(
    err: &(dyn std::error::Error + Send + Sync + 'static),
) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<E>() {
            return true;
        }
        cur = e.source();
    }
    false
}
