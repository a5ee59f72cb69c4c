//! Forwarding one request to an upstream: pick a server, get a pooled or new connection, send,
//! wait for the response headers within `response_timeout`, and retry when that is safe.
//!
//! Retry rules: a connect error never consumed the request, so it is retried for any method; a
//! request whose head never fully reached the origin (the client hands its body back) likewise;
//! after that, only an idempotent request without a body is re-sent. A stale pooled connection
//! gets one fresh retry on the same server without counting against the server.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, request::Parts};
use http_body_util::BodyExt;

use super::body::TooLarge;
use crate::error::ClientBodyFailed;
use crate::error::{BoxError, ErrorKind, ProxyError};
use crate::upstream::pool::{self, Conn, UpBody, UpstreamBody};
use crate::upstream::{PickInput, ServerState, Upstream};
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

/// Keeps a server's in-flight count up while alive.
pub struct ActiveGuard(pub Arc<ServerState>);

impl ActiveGuard {
    /// Counts one more in-flight request on `s`.
    pub fn new(s: Arc<ServerState>) -> Self {
        s.active.fetch_add(1, Ordering::Relaxed);
        s.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(s)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
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
    let mut tried = Tried::default();
    let mut last: Option<ProxyError> = None;
    let mut fresh_retry: Option<usize> = None;
    let mut attempts = 0;
    while attempts <= m.retries {
        let (i, reuse_ok) = match fresh_retry.take() {
            Some(i) => (i, false),
            None => {
                let input = PickInput {
                    exclude: tried.as_slice(),
                    ..pick
                };
                let Some(i) = up.pick(&input).or_else(|| {
                    // Every server was tried: go round again rather than fail early.
                    if tried.is_empty() {
                        None
                    } else {
                        up.pick(&PickInput {
                            exclude: &[],
                            ..input
                        })
                    }
                }) else {
                    break;
                };
                attempts += 1;
                tried.push(i);
                (i, true)
            }
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
                    tracing::warn!(upstream = %m.name, server = %server.spec.address, error = %e, "connect failed");
                    server.record_failure(m.passive.as_ref());
                    last = Some(
                        ProxyError::new(ErrorKind::ConnectFailed)
                            .with(e)
                            .retryable(true),
                    );
                    body = Some(b);
                    continue;
                }
            },
        };
        type Sent = (Response<UpstreamBody>, Option<RawHead>);
        let sent: Result<Sent, (Option<UpBody>, BoxError)> = match conn {
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
            Conn::H2(mut sender) => {
                let fut = sender.try_send_request(request_of(parts, lines, b));
                match tokio::time::timeout(m.response_timeout, fut).await {
                    Ok(Ok(resp)) => Ok((resp.map(UpstreamBody::H2), None)),
                    Ok(Err(mut e)) => Err((
                        e.take_message().map(|r| r.into_body()),
                        e.into_error().into(),
                    )),
                    Err(_) => return Err(timed_out(&server, m)),
                }
            }
        };
        match sent {
            Ok((response, raw)) => {
                return Ok((
                    Forwarded {
                        response,
                        raw,
                        server,
                    },
                    guard,
                ));
            }
            Err((given_back, err)) => {
                drop(guard);
                if caused_by::<TooLarge>(&*err) {
                    return Err(ProxyError::new(ErrorKind::BodyTooLarge).with(err));
                }
                if caused_by::<ClientBodyFailed>(&*err) {
                    // The client's doing: not counted against the server, not retried.
                    return Err(ProxyError::new(ErrorKind::BadRequest).with(err));
                }
                tracing::debug!(upstream = %m.name, server = %server.spec.address, reused, error = %err, "send failed");
                let replay = given_back.or_else(|| replayable.then(empty_body));
                if reused && replay.is_some() {
                    // A pooled connection the origin had closed: try once more on a new one.
                    fresh_retry = Some(i);
                    body = replay;
                    continue;
                }
                server.record_failure(m.passive.as_ref());
                last = Some(ProxyError::new(ErrorKind::UpstreamReset).with(err));
                match replay {
                    Some(r) => body = Some(r),
                    None => break,
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ProxyError::new(ErrorKind::NoHealthyServer).with(format!("upstream `{}`", m.name))
    }))
}

/// The answer did not come within `response_timeout`: counted against the server, not retried
/// (the origin may still be working on it).
fn timed_out(server: &ServerState, m: &gatehouse_config::model::Upstream) -> ProxyError {
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
