//! The HTTP/1.1 codec both sides of gatehouse share, sans-I/O: bytes in, heads and body frames
//! out, and heads encoded to bytes. No sockets, no runtime: the server loop (`http::h1` in the
//! binary) and the origin client (`upstream::h1`) keep the I/O and their state machines, and
//! call this crate for every byte of framing.
//!
//! Framing is where request smuggling lives (RFC 9112 §6), so every refusal is here, once:
//! - [`request`]: a client's request head, with each framing refusal the server makes;
//! - [`answer`]: an origin's answer head, parsed as strictly (an error is a 502);
//! - [`encode`]: request heads for origins and answer heads for clients;
//! - [`chunked`]: chunked bodies both ways, with trailers;
//! - [`raw_head`]: an origin's answer fields kept as sent, each classified once;
//! - [`scan`]: when a head that arrives in pieces is worth parsing.
//!
//! A crate of its own rather than a module of `gatehouse-wire`: the wire crate depends on
//! nothing but `thiserror`, and this one needs `http`, `bytes` and `httparse`. Pingora's
//! `protocols/http/v1/{common,server,client}.rs` and hyper's `proto/h1/role.rs` are the models
//! of the split.
#![deny(missing_docs)]

pub mod answer;
pub mod chunked;
pub mod encode;
pub mod raw_head;
pub mod request;
pub mod scan;

pub use raw_head::{Kind, RawHead};

/// Why bytes from a peer cannot be read as HTTP/1.1: the message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub std::borrow::Cow<'static, str>);

impl From<&'static str> for Error {
    fn from(s: &'static str) -> Self {
        Error(s.into())
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s.into())
    }
}

/// Whether `value` is a valid field value: no control byte but HTAB (RFC 9110 §5.5).
#[inline]
pub fn valid_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
