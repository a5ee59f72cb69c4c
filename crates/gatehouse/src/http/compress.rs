//! Response compression: negotiate a coding from Accept-Encoding (q-values, RFC 9110 §12.5.3),
//! decide whether the answer is a candidate, and stream it through an encoder
//! (async-compression). Runs after the cache, so one stored identity copy serves every client.

use std::io;

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::TryStreamExt;
use gatehouse_cache::policy::Directives;
use gatehouse_config::model::{Coding, Compress};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use super::ProxyBody;

/// The q-value of `coding` in an Accept-Encoding value: explicit, else `*`'s, else 0.
fn qvalue(accept: &str, coding: &str) -> f32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| v.trim().parse::<f32>().ok())?
            })
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

/// The coding to use: the highest q-value above 0; ties go to the earlier in `ours`.
pub fn negotiate(accept: Option<&HeaderValue>, ours: &[Coding]) -> Option<Coding> {
    let accept = accept?.to_str().ok()?;
    let mut best: Option<(Coding, f32)> = None;
    for &c in ours {
        let q = qvalue(accept, c.token());
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
}

fn type_matches(content_type: &str, types: &[String]) -> bool {
    let mt = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, _)) = mt.split_once('/') else {
        return false;
    };
    types
        .iter()
        .any(|t| t == &mt || t.strip_suffix("/*").is_some_and(|tt| tt == top))
}

/// Would this answer be compressed for a client that accepts it?
fn candidate(resp: &Response<ProxyBody>, c: &Compress) -> bool {
    let status = resp.status();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    let h = resp.headers();
    if h.get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        || h.contains_key(header::CONTENT_RANGE)
        || Directives::parse(h).no_transform
    {
        return false;
    }
    if !h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| type_matches(t, &c.types))
    {
        return false;
    }
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Unknown length (streamed): compressed; known and small: not worth it.
    len.is_none_or(|l| l >= c.min_size)
}

/// Adds `Accept-Encoding` to Vary unless it is there (or `*` is).
fn add_vary(h: &mut http::HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !present {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Compresses `resp` when the route, the answer and the client allow it.
pub fn apply(
    resp: Response<ProxyBody>,
    c: &Compress,
    accept: Option<&HeaderValue>,
    head: bool,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::NOT_MODIFIED {
        // A 304 must carry the ETag and Vary the 200 would have (RFC 9110 §15.4.5): when this
        // client would get the answer encoded, that is the weakened ETag.
        return not_modified(resp, c, accept);
    }
    if !candidate(&resp, c) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The answer depends on Accept-Encoding whether or not this client gets it compressed.
    add_vary(&mut parts.headers);
    // HEAD is answered as it is: there is no body to encode, and a HEAD must not promise a
    // Content-Encoding its GET might not get.
    let Some(coding) = negotiate(accept, &c.algorithms).filter(|_| !head) else {
        return Response::from_parts(parts, body);
    };
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    // A strong ETag names these exact bytes; ours differ (RFC 9110 §8.8.1).
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok())
        && etag.starts_with('"')
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        h.insert(header::ETAG, weak);
    }
    let reader = StreamReader::new(
        body.into_data_stream()
            .map_err(|e| io::Error::other(e.to_string())),
    );
    // Levels for on-the-fly work: the ones nginx/Caddy users run in production, not maximums.
    let body: ProxyBody = match coding {
        Coding::Gzip => encoded(GzipEncoder::with_quality(reader, Level::Precise(5))),
        Coding::Br => encoded(BrotliEncoder::with_quality(reader, Level::Precise(4))),
        Coding::Zstd => encoded(ZstdEncoder::with_quality(reader, Level::Precise(3))),
    };
    Response::from_parts(parts, body)
}

fn not_modified(
    mut resp: Response<ProxyBody>,
    c: &Compress,
    accept: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let h = resp.headers_mut();
    let typed_out = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| !type_matches(t, &c.types));
    if typed_out || Directives::parse(h).no_transform {
        return resp;
    }
    add_vary(h);
    if negotiate(accept, &c.algorithms).is_some()
        && let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok())
        && etag.starts_with('"')
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        h.insert(header::ETAG, weak);
    }
    resp
}

/// A Range with a date If-Range, from a client that gets this route's answers encoded: the
/// date matches the encoded and the identity bytes alike, so a 206 of identity bytes could be
/// spliced into an encoded copy. Such requests get the whole answer (RFC 9110 §13.1.5 allows
/// ignoring Range). An ETag If-Range needs no help: encoded answers carry a weak ETag, which
/// never matches strongly.
pub fn guard_range(h: &mut http::HeaderMap, c: &Compress) {
    let accept = h.get(header::ACCEPT_ENCODING).cloned();
    let date_if_range = h.get(header::IF_RANGE).is_some_and(|v| {
        let b = v.as_bytes();
        !(b.starts_with(b"\"") || b.starts_with(b"W/"))
    });
    if date_if_range
        && h.contains_key(header::RANGE)
        && negotiate(accept.as_ref(), &c.algorithms).is_some()
    {
        h.remove(header::RANGE);
        h.remove(header::IF_RANGE);
    }
}

fn encoded<R: tokio::io::AsyncRead + Send + 'static>(r: R) -> ProxyBody {
    let stream = ReaderStream::with_capacity(r, 16 * 1024)
        .map_ok(|b: Bytes| Frame::data(b))
        .map_err(|e| -> crate::error::BoxError { Box::new(e) });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values_then_our_order() {
        let all = [Coding::Zstd, Coding::Br, Coding::Gzip];
        let n = |s: &'static str| negotiate(Some(&HeaderValue::from_static(s)), &all);
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Coding::Zstd));
        assert_eq!(n("gzip;q=1.0, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(n("br;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(n("*;q=0.5, zstd;q=0"), Some(Coding::Br));
        assert_eq!(n("identity"), None);
        assert_eq!(n("gzip;q=0"), None);
        assert_eq!(negotiate(None, &all), None);
        assert!(type_matches("text/html; charset=utf-8", &["text/*".into()]));
        assert!(!type_matches("image/png", &["text/*".into()]));
    }
}
