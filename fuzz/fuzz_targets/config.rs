//! Any text as a config file: `parse` returns a model or located errors, and never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gatehouse_config::parse(text, "fuzz.toml");
    }
});
