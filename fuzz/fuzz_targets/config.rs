//! config.toml: any text is a valid config or a one-line error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = bucketfront::config::Config::parse(&text, std::path::Path::new("fuzz.toml")) {
        assert!(!e.to_string().contains('\n'));
    }
});
