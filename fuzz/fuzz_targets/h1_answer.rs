//! Any bytes as an origin's answer through our HTTP/1.1 client's head parser and chunked
//! decoder: never panics, the result does not depend on where the reads split, and every field
//! passed as the origin sent it is one a header map takes (the HTTP/2 and caching paths) and
//! reads the same copied in runs as written one by one.
#![no_main]
use gatehouse_h1::answer::{FIELDS_LOST, LINES_DIFFER, decode_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let whole = decode_answer(data, data.len());
    let parts = decode_answer(data, split);
    // A head or body that a read boundary made incomplete may differ only as "incomplete".
    if let (Ok(w), Ok(p)) = (&whole, &parts) {
        assert_eq!(w, p);
    }
    assert_ne!(whole.as_ref().err().map(String::as_str), Some(FIELDS_LOST));
    assert_ne!(whole.as_ref().err().map(String::as_str), Some(LINES_DIFFER));
    if whole.is_ok() {
        assert!(parts.is_ok(), "{parts:?}");
    }
});
