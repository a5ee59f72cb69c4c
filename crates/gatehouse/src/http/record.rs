//! A request's record: what the access log and the metrics need of it, opened when the
//! request starts and finished when its answer's body ends, or with 499 when the client left
//! first. Every request is logged once.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use gatehouse_config::units::canonical_ip;
use http::Uri;
use http::request::Parts;

use super::body::{BodyStats, OnEnd};
use super::pipeline::ConnCtx;
use crate::runtime::{Shared, Snapshot};
use crate::upstream::ActiveGuard;

/// Everything the access log and metrics need, finished when the answer's body ends.
pub(crate) struct Finish {
    pub(crate) shared: Arc<Shared>,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) started: Instant,
    pub(crate) listener: Arc<str>,
    pub(crate) route: Arc<str>,
    pub(crate) upstream: Arc<str>,
    pub(crate) server: Arc<str>,
    pub(crate) client: IpAddr,
    pub(crate) method: http::Method,
    pub(crate) host: String,
    pub(crate) uri: Uri,
    pub(crate) status: u16,
    pub(crate) request_id: Arc<str>,
    pub(crate) stats: Option<Arc<BodyStats>>,
    pub(crate) guard: Option<ActiveGuard>,
    /// The Cache-Status value of a caching route's answer.
    pub(crate) cache_status: Option<String>,
    /// Whether the route's answers get our X-Request-Id (its `forward_headers`); gatehouse's
    /// own error answers always do.
    pub(crate) echo_request_id: bool,
}

impl Finish {
    /// The record of a request that starts now: labels for what is known yet.
    #[inline]
    pub(crate) fn open(
        conn: &ConnCtx,
        snapshot: &Arc<Snapshot>,
        parts: &Parts,
        request_id: &Arc<str>,
        started: Instant,
    ) -> Box<Finish> {
        Box::new(Finish {
            shared: conn.shared.clone(),
            snapshot: snapshot.clone(),
            started,
            listener: conn.listener.clone(),
            route: empty_label(),
            upstream: empty_label(),
            server: empty_label(),
            client: canonical_ip(conn.peer.ip()),
            method: parts.method.clone(),
            host: String::new(),
            uri: parts.uri.clone(),
            status: 0,
            request_id: request_id.clone(),
            stats: None,
            guard: None,
            cache_status: None,
            echo_request_id: true,
        })
    }

    /// A record for a request made on the side (a background revalidation): same labels,
    /// never logged.
    pub(crate) fn detached(&self) -> Finish {
        Finish {
            shared: self.shared.clone(),
            snapshot: self.snapshot.clone(),
            started: Instant::now(),
            listener: self.listener.clone(),
            route: self.route.clone(),
            upstream: self.upstream.clone(),
            server: empty_label(),
            client: self.client,
            method: self.method.clone(),
            host: self.host.clone(),
            uri: self.uri.clone(),
            status: 0,
            request_id: self.request_id.clone(),
            stats: None,
            guard: None,
            cache_status: None,
            echo_request_id: self.echo_request_id,
        }
    }
}

impl OnEnd for Finish {
    fn end(self: Box<Self>, bytes_out: u64, completed: bool) {
        let elapsed = self.started.elapsed();
        let bytes_in = self
            .stats
            .as_ref()
            .map_or(0, |s| s.bytes_in.load(Ordering::Relaxed));
        self.shared.metrics.observe_request(
            &self.listener,
            &self.route,
            &self.upstream,
            self.status,
            elapsed,
        );
        if let Some(log) = &self.snapshot.access_log {
            log.write(&crate::access_log::Entry {
                client: self.client,
                method: self.method.as_str(),
                host: &self.host,
                path: self.uri.path(),
                status: self.status,
                bytes_in,
                bytes_out,
                duration: elapsed,
                listener: &self.listener,
                route: &self.route,
                upstream: &self.upstream,
                server: &self.server,
                request_id: &self.request_id,
                completed,
            });
        }
        drop(self.guard);
    }
}

/// A request's record while its answer is being worked out. Dropped with it still inside (the
/// client left and its connection dropped the request's future), it finishes the record as
/// status 499, nginx's "client closed request": the access log and the metrics see every
/// request.
pub(crate) struct Unanswered(Option<Box<Finish>>);

impl Unanswered {
    /// Holds `fin` (boxed now, not when the answer takes it: the request's future stays
    /// smaller) until the answer takes it.
    #[inline]
    pub(crate) fn new(fin: Box<Finish>) -> Self {
        Unanswered(Some(fin))
    }

    /// The record, still open.
    pub(crate) fn record(&mut self) -> &mut Finish {
        self.0.as_mut().expect("taken only by `answered`")
    }

    /// The answer takes the record.
    pub(crate) fn answered(mut self) -> Box<Finish> {
        self.0.take().expect("taken only once")
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut fin) = self.0.take() {
            fin.status = CLIENT_CLOSED;
            fin.end(0, false);
        }
    }
}

/// The status logged for a request whose client left before its answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// The "" label, shared.
pub(crate) fn empty_label() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}
