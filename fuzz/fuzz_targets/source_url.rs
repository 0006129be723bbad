//! Source URLs: any string parses to a valid object reference or a 400, never panics,
//! and a parsed reference re-validates.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(obj) = bucketfront::parse_source_url(&text) {
        assert!(!obj.key.is_empty());
        assert!(bucketfront::ObjectRef::new(obj.provider, &obj.bucket, &obj.key).is_ok());
    }
    let _ = bucketfront::parse_path(&text);
});
