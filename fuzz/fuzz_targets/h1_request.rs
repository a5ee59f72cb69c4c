//! Any bytes as a client's request head through our HTTP/1.1 server's parser and framing checks:
//! never panics, and a verdict reached on the first part of the bytes (a complete head, or a
//! refusal) is the verdict on all of them.
#![no_main]
use gatehouse_h1::request::check_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = check_head(data);
    let split = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let part = check_head(&data[..split]);
    if part != Ok(None) {
        assert_eq!(part, whole);
    }
});
