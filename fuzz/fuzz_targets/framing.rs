//! Any byte stream, split anywhere, through the HTTP/1 framing watch: never panics, and the same
//! bytes give the same verdicts however they are split.
#![no_main]
use gatehouse::http::framing::FramingWatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let (mut whole, mut parts) = (FramingWatch::default(), FramingWatch::default());
    whole.feed(data);
    parts.feed(&data[..split]);
    parts.feed(&data[split..]);
    for _ in 0..64 {
        assert_eq!(whole.next_verdict(), parts.next_verdict());
    }
});
