//! TLS: the certificate store and SNI resolver of https listeners, client-certificate checks,
//! and the connector for HTTPS upstreams (internal CA, SPKI pins, mTLS, or no verification).
//!
//! Crypto provider: ring. It builds in seconds where aws-lc-rs needs a C toolchain run of over a
//! minute; aws-lc-rs has faster handshakes, which the TLS benchmark will weigh.

mod certs;
mod upstream;

pub use certs::{ACME_TLS_ALPN, ListenerTls, TlsInfo, check_files, covers};
pub use upstream::client_config;

/// The provider every config is built with.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
