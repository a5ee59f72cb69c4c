//! Any bytes as the start of a TLS connection: the ClientHello reader answers, asks for more or
//! refuses, and never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gatehouse_wire::tls_hello::parse(data);
});
