//! Any bytes as the start of a connection: the PROXY header parser answers header, need-more or
//! error, never panics, and a header never claims more bytes than it was given.
#![no_main]
use gatehouse_wire::proxy_protocol::{Accept, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for accept in [Accept::V1, Accept::V2, Accept::Any] {
        if let Ok(Some(h)) = parse(data, accept) {
            assert!(h.len <= data.len());
        }
    }
});
