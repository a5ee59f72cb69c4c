//! Sans-I/O wire formats: parsers take `&[u8]` and return a value or "need more"; encoders write
//! bytes. No sockets, no runtime. Each parser has unit tests from its spec's examples and a fuzz
//! target.
#![deny(missing_docs)]

pub mod proxy_protocol;
pub mod smtp;
pub mod tls_hello;
