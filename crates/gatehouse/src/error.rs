//! The one proxy-shaped error. Every failure on the request path becomes a `ProxyError`, and exactly
//! one function (`http::respond::error_response`) turns it into a status code and a body.

use std::fmt;

/// Boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a request body yields when the client's side of it failed: the client went away
/// mid-body, framed it badly, or sent more or less than its Content-Length. Not the origin's
/// failure: the request is answered 400 and the server is not marked down for it.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyFailed(pub BoxError);

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong.
    Client,
    /// The origin failed.
    Upstream,
    /// We did.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched the request.
    NoRoute,
    /// The upstream has no server up.
    NoHealthyServer,
    /// Connecting to the server failed or timed out.
    ConnectFailed,
    /// The connection failed before or while reading the response headers.
    UpstreamReset,
    /// The response headers did not come within `response_timeout`.
    UpstreamTimeout,
    /// The request body exceeded the route's `max_body`.
    BodyTooLarge,
    /// The request is malformed or ambiguous.
    BadRequest,
    /// The Host is not a name this TLS connection's certificate covers.
    Misdirected,
    /// The route's rate limit refused the request; a request of its key passes again in
    /// `retry_after` seconds (rounded up).
    RateLimited {
        /// Seconds until a request of the same key would pass: at most one emission interval,
        /// so at most 3600 ("1/h"). A u16 keeps `ErrorKind` (and every `ProxyError`) as small
        /// as before.
        retry_after: u16,
    },
    /// A bug or an unexpected local failure.
    Internal,
}

/// A failure on the request path.
#[derive(Debug)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Who is at fault.
    pub side: Side,
    /// Whether trying another server is safe (nothing of the request was consumed).
    pub retryable: bool,
    /// The cause, for the log.
    pub source: Option<BoxError>,
}

impl ProxyError {
    /// A new error of `kind`, side derived from the kind.
    pub fn new(kind: ErrorKind) -> Self {
        let side = match kind {
            ErrorKind::NoRoute
            | ErrorKind::BodyTooLarge
            | ErrorKind::BadRequest
            | ErrorKind::Misdirected
            | ErrorKind::RateLimited { .. } => Side::Client,
            ErrorKind::Internal => Side::Internal,
            _ => Side::Upstream,
        };
        ProxyError {
            kind,
            side,
            retryable: false,
            source: None,
        }
    }

    /// With a cause.
    pub fn with(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marked as safe to retry.
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?} side)", self.kind, self.side)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
            let mut cur = s.source();
            while let Some(c) = cur {
                write!(f, ": {c}")?;
                cur = c.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {}
