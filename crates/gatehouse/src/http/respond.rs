//! The one place that turns a `ProxyError` into a status code and a body, plus the small local
//! answers (respond, redirect) a route can make.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::error::{ErrorKind, ProxyError, Side};

/// A complete local answer with a text body.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let body: Bytes = body.into();
    let mut resp = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The status an error kind maps to.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NoRoute => StatusCode::NOT_FOUND,
        ErrorKind::NoHealthyServer => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ConnectFailed | ErrorKind::UpstreamReset => StatusCode::BAD_GATEWAY,
        ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        // RFC 6585 §4.
        ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Maps an error to its answer and logs it once.
pub fn error_response(err: &ProxyError, request_id: &str) -> Response<ProxyBody> {
    let status = status_of(err.kind);
    match err.side {
        Side::Client => {
            tracing::info!(request_id, status = status.as_u16(), error = %err, "request refused")
        }
        Side::Upstream => {
            tracing::warn!(request_id, status = status.as_u16(), error = %err, "upstream failed")
        }
        Side::Internal => {
            tracing::error!(request_id, status = status.as_u16(), error = %err, "internal error")
        }
    }
    let what = match err.kind {
        ErrorKind::NoRoute => "no route matches this request",
        ErrorKind::NoHealthyServer => "no healthy server is available",
        ErrorKind::ConnectFailed => "could not connect to an upstream server",
        ErrorKind::UpstreamReset => "the upstream server closed the connection",
        ErrorKind::UpstreamTimeout => "the upstream server did not answer in time",
        ErrorKind::BodyTooLarge => "request body too large",
        ErrorKind::BadRequest => "malformed request",
        ErrorKind::Misdirected => "this connection's certificate does not cover that host",
        ErrorKind::RateLimited { .. } => "too many requests, retry later",
        ErrorKind::Internal => "internal error",
    };
    let mut resp = text(
        status,
        format!(
            "{} {}: {what}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    );
    if let ErrorKind::RateLimited { retry_after } = err.kind {
        // RFC 6585 §4, RFC 9110 §10.2.3: delay-seconds.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    if err.kind == ErrorKind::BodyTooLarge || err.kind == ErrorKind::BadRequest {
        // The rest of the request body is unread: this connection cannot carry another request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
