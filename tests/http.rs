//! HTTP semantics of the public listener against the embedded store: bodies, headers,
//! statuses, ranges, conditionals, CORS, timeouts and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use bucketfront::MediaRange;
use bucketfront::config::{Dur, Size};
use common::*;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/bucket/demo-images");

/// Seeds the sample images into `test-images` and returns (key, bytes).
async fn seed_samples(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(SAMPLES)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let key = path
                .strip_prefix(SAMPLES)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let bytes = std::fs::read(&path).unwrap();
            env.put(
                "test-images",
                &key,
                bytes.clone(),
                bucketfront::content_type_for(&key),
            )
            .await;
            out.push((key, bytes));
        }
    }
    assert!(out.len() >= 6);
    assert!(out.iter().any(|(k, _)| k.contains(' ')));
    assert!(out.iter().any(|(k, _)| k.contains('+')));
    assert!(out.iter().any(|(k, _)| !k.is_ascii()));
    out
}

fn enc(key: &str) -> String {
    bucketfront::encode_path(key)
}

#[tokio::test]
async fn every_sample_is_byte_exact_through_both_routes() {
    let env = Env::start().await;
    for (key, bytes) in seed_samples(&env).await {
        let by_path = get(&env.proxy.url(&format!("/test-images/{}", enc(&key)))).await;
        assert_eq!(by_path.status, StatusCode::OK, "{key}");
        assert_eq!(by_path.bytes().as_ref(), bytes.as_slice(), "{key}");
        let source = format!(
            "https://test-images.s3.us-east-1.amazonaws.com/{}",
            enc(&key)
        );
        let by_url = get(&env.proxy.url(&format!(
            "/_/fetch?url={}",
            enc(&source).replace('/', "%2F")
        )))
        .await;
        assert_eq!(by_url.status, StatusCode::OK, "{key}");
        assert_eq!(by_url.bytes().as_ref(), bytes.as_slice(), "{key}");
        assert_eq!(
            by_url.header("x-cache"),
            Some("HIT"),
            "same cache entry for both forms"
        );
        for h in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert_eq!(by_path.header(h), by_url.header(h), "{h} identical");
        }
        // `+` is a literal plus in the path form.
        if key.contains('+') {
            let r = get(&env.proxy.url(&format!("/test-images/{key}"))).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn headers_of_a_200() {
    let env = Env::start().await;
    env.put("test-images", "a.png", vec![7u8; 1000], "image/png")
        .await;
    let r = get_with(
        &env.proxy.url("/test-images/a.png"),
        &[("origin", ALLOWED_ORIGIN)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").unwrap().starts_with('"'));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; sandbox")
    );
    assert_eq!(r.header("cache-control"), Some("private, max-age=3600"));
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(r.header("x-request-id").map(str::len), Some(16));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("Content-Length, Content-Range, ETag, X-Cache")
    );
    for (name, _) in r.headers.iter() {
        assert!(!name.as_str().starts_with("x-amz-"), "{name} leaked");
    }
    let again = get(&env.proxy.url("/test-images/a.png")).await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_ne!(again.header("x-request-id"), r.header("x-request-id"));
    env.stop().await;
}

#[tokio::test]
async fn ranges_conditionals_and_head() {
    let env = Env::start().await;
    let body = pattern(1000, 1);
    env.put("test-images", "r.png", body.clone(), "image/png")
        .await;
    let url = env.proxy.url("/test-images/r.png");
    let etag = get(&url).await.header("etag").unwrap().to_string();
    let cases: [(&str, u16, &[u8], Option<&str>); 5] = [
        ("bytes=0-9", 206, &body[0..10], Some("bytes 0-9/1000")),
        ("bytes=990-", 206, &body[990..], Some("bytes 990-999/1000")),
        ("bytes=-5", 206, &body[995..], Some("bytes 995-999/1000")),
        ("bytes=10-5", 200, &body[..], None),
        ("bytes=0-0,5-6", 200, &body[..], None),
    ];
    for (range, status, want, content_range) in cases {
        let r = get_with(&url, &[("range", range)]).await;
        assert_eq!(r.status.as_u16(), status, "{range}");
        assert_eq!(r.bytes().as_ref(), want, "{range}");
        assert_eq!(r.header("content-range"), content_range, "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(want.len().to_string().as_str())
        );
    }
    let r = get_with(&url, &[("range", "bytes=1000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    assert_eq!(r.json()["error"], "range_not_satisfiable");
    let r = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.bytes().is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("private, max-age=3600"));
    let lm = get(&url).await.header("last-modified").unwrap().to_string();
    assert_eq!(
        get_with(&url, &[("if-modified-since", &lm)]).await.status,
        304
    );
    assert_eq!(
        get_with(&url, &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );
    let r = request(Method::HEAD, &url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.bytes().is_empty());
    assert_eq!(
        env.gets(),
        1,
        "everything above was answered from one fetch"
    );
    env.stop().await;
}

#[tokio::test]
async fn error_statuses_are_json_with_cors() {
    let env = Env::start().await;
    env.put("test-images", "notes.txt", "hello", "text/plain")
        .await;
    let o = &[("origin", ALLOWED_ORIGIN)];
    let cases = [
        (Method::GET, "/test-images/missing.png", 404, "not_found"),
        (Method::GET, "/test-nobucket/missing.png", 404, "not_found"),
        (
            Method::GET,
            "/test-images/notes.txt",
            415,
            "unsupported_media_type",
        ),
        (Method::GET, "/unowned-bucket/a.png", 403, "forbidden"),
        (Method::GET, "/Bad_Bucket/a.png", 400, "bad_request"),
        (Method::GET, "/test-images/", 400, "bad_request"),
        (
            Method::GET,
            "/_/fetch?url=https%3A%2F%2Fevil.example.com%2Fb%2Fk",
            400,
            "bad_request",
        ),
        (Method::GET, "/", 404, "not_found"),
        (
            Method::POST,
            "/test-images/a.png",
            405,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            "/test-images/a.png",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = request(method.clone(), &env.proxy.url(path), o).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}");
        assert_eq!(r.json()["error"], code, "{path}");
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(ALLOWED_ORIGIN),
            "{path}"
        );
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("x-request-id").is_some());
        if status == 405 {
            assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
        }
    }
    // Missing key and missing bucket answer the very same body: no existence oracle.
    let a = get(&env.proxy.url("/test-images/missing.png")).await;
    let b = get(&env.proxy.url("/test-nobucket/missing.png")).await;
    assert_eq!(a.bytes(), b.bytes());
    env.stop().await;
}

#[tokio::test]
async fn cors_allowed_wildcard_and_other_origins() {
    let env = Env::start().await;
    env.put("test-images", "c.png", vec![1u8; 10], "image/png")
        .await;
    let url = env.proxy.url("/test-images/c.png");
    for (origin, allowed) in [
        (ALLOWED_ORIGIN, true),
        ("https://cdn.example.com", true),
        ("https://a.b.example.com", true),
        ("https://example.com", false),
        ("http://cdn.example.com", false),
        ("https://evil.test", false),
    ] {
        let r = get_with(&url, &[("origin", origin)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("vary"), Some("Origin"));
        if allowed {
            assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        } else {
            let acx = r
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("access-control-"))
                .count();
            assert_eq!(acx, 0, "{origin}: no Access-Control-* at all");
        }
        let pre = request(
            Method::OPTIONS,
            &url,
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range"),
            ],
        )
        .await;
        assert_eq!(pre.status, 204, "{origin}");
        if allowed {
            assert_eq!(pre.header("access-control-allow-origin"), Some(origin));
            assert_eq!(
                pre.header("access-control-allow-methods"),
                Some("GET, HEAD, OPTIONS")
            );
            assert_eq!(pre.header("access-control-allow-headers"), Some("range"));
            assert_eq!(pre.header("access-control-max-age"), Some("600"));
        } else {
            assert!(pre.header("access-control-allow-origin").is_none());
        }
    }
    // Preflight for the other routes too.
    for path in [
        "/_/fetch?url=s3%3A%2F%2Ftest-images%2Fc.png",
        "/_/presign/test-images/c.png",
    ] {
        let pre = request(
            Method::OPTIONS,
            &env.proxy.url(path),
            &[("origin", ALLOWED_ORIGIN)],
        )
        .await;
        assert_eq!(pre.status, 204, "{path}");
        assert_eq!(
            pre.header("access-control-allow-origin"),
            Some(ALLOWED_ORIGIN)
        );
    }
    assert_eq!(env.gets(), 1, "preflights never reach the origin");
    env.stop().await;
}

#[tokio::test]
async fn a_slow_header_sender_is_cut_off() {
    let env = Env::start().await;
    let mut sock = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    let started = Instant::now();
    let request = b"GET /test-images/a.png HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut closed = false;
    for byte in request {
        if sock.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // hyper answers 408 before closing
                break;
            }
            Err(_) => {}
        }
    }
    // One byte a second: the whole head would take 45 s; closed before it was complete
    // means the head deadline (1 s from its first byte) ended it.
    assert!(
        closed,
        "connection still open after {:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn origin_timeouts_and_failures_map_to_504_and_502() {
    let stall = FakeOrigin::start(vec![Behaviour::Stall]).await;
    let proxy = Proxy::start(fake_config(&stall.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/slow.png")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "gateway_timeout");
    proxy.stop().await;

    let failing = FakeOrigin::start(vec![Behaviour::Status(503)]).await;
    let proxy = Proxy::start(fake_config(&failing.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/x.png")).await;
    assert_eq!(r.status, 502);
    let text = String::from_utf8_lossy(r.bytes()).to_string();
    assert!(
        !text.contains("secret upstream text") && !text.contains("InternalError"),
        "{text}"
    );
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("x-amz-")));
    proxy.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_an_inflight_download_finish() {
    let env = Env::with(|c, _| c.cache.max_object_size = Size(1 << 20)).await;
    let body = pattern(8 << 20, 3);
    env.put("test-images", "big.png", body.clone(), "image/png")
        .await;
    let url = env.proxy.url("/test-images/big.png");
    let resp = client()
        .get(url.parse().unwrap())
        .await
        .expect("response headers");
    assert_eq!(resp.status(), 200);
    // Headers are in; now ask the server to stop, then read the body slowly.
    env.proxy.shutdown_token().cancel();
    refused_within(env.proxy.addr, Duration::from_secs(10)).await;
    use http_body_util::BodyExt;
    let got = resp
        .into_body()
        .collect()
        .await
        .expect("body completes during drain")
        .to_bytes();
    assert_eq!(got.len(), body.len());
    assert!(got.as_ref() == body.as_slice());
    env.stop().await;
}

#[tokio::test]
async fn admin_health_ready_and_metrics() {
    let env = Env::start().await;
    env.put("test-images", "m.png", vec![1u8; 10], "image/png")
        .await;
    get(&env.proxy.url("/test-images/m.png")).await;
    get(&env.proxy.url("/test-images/m.png")).await;
    let admin = |p: &str| format!("http://{}{}", env.proxy.admin, p);
    assert_eq!(get(&admin("/healthz")).await.status, 200);
    assert_eq!(get(&admin("/readyz")).await.status, 200);
    let m = get(&admin("/metrics")).await;
    let text = String::from_utf8_lossy(m.bytes()).to_string();
    for needle in [
        "bucketfront_requests_total{route=\"object\",status=\"200\"} 2",
        "bucketfront_cache_lookups_total{status=\"HIT\"} 1",
        "bucketfront_cache_lookups_total{status=\"MISS\"} 1",
        "bucketfront_upstream_requests_total{outcome=\"ok\"} 1",
        "bucketfront_cache_bytes",
        "bucketfront_in_flight_requests",
        "bucketfront_resident_memory_bytes",
        "bucketfront_upstream_latency_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    env.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_same_port() {
    let env = Env::start().await;
    env.put("test-images", "h2.png", "over h2c", "image/png")
        .await;
    let tcp = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(env.proxy.url("/test-images/h2.png"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    assert_eq!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .as_ref(),
        b"over h2c"
    );
    env.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_answers_503() {
    let env = Env::with(|c, _| c.server.max_connections = 2).await;
    env.put("test-images", "c.png", "x", "image/png").await;
    let big = bytes::Bytes::from(pattern(8 << 20, 3));
    env.put("test-images", "big.png", big, "image/png").await;
    // Two connections with a response in progress hold both permits (idle keep-alives
    // would be closed to make room) ...
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(busy_connection(env.proxy.addr, "/test-images/big.png").await);
    }
    // ... so a third gets an immediate 503 through the normal error path, and is closed,
    let gets = env.gets();
    let r = get_with(
        &env.proxy.url("/test-images/c.png"),
        &[("origin", ALLOWED_ORIGIN)],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(env.gets(), gets, "an overloaded request does no work");
    // and a new connection is served again as soon as one of the two closes.
    drop(held.pop());
    eventually(
        Duration::from_secs(5),
        "served again once under the limit",
        || async { get(&env.proxy.url("/test-images/c.png")).await.status == 200 },
    )
    .await;
    drop(held);
    env.stop().await;
}

#[tokio::test]
async fn a_reload_applies_to_the_next_request_and_keeps_the_cache() {
    let env = Env::start().await;
    env.put("test-images", "notes.txt", "plain text", "text/plain")
        .await;
    env.put("test-images", "kept.png", "cached before", "image/png")
        .await;
    assert_eq!(
        get(&env.proxy.url("/test-images/kept.png"))
            .await
            .header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        get(&env.proxy.url("/test-images/notes.txt")).await.status,
        415
    );
    let mut new = config(&env.store.endpoint);
    new.server.allowed_content_types = ["image/*", "text/plain"]
        .iter()
        .map(|t| MediaRange::parse(t).unwrap())
        .collect();
    env.proxy.app.reload(new).await.unwrap();
    let r = get(&env.proxy.url("/test-images/notes.txt")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes().as_ref(), b"plain text");
    assert_eq!(
        get(&env.proxy.url("/test-images/kept.png"))
            .await
            .header("x-cache"),
        Some("HIT"),
        "cache survived"
    );
    let mut new = config(&env.store.endpoint);
    new.cache.ttl = Dur::secs(300);
    let err = env.proxy.app.reload(new).await.unwrap_err();
    assert!(
        matches!(&err, bucketfront::WiringError::NeedsRestart(names) if names == &["cache"]),
        "{err}"
    );
    env.stop().await;
}

/// `POST /purge` on the admin listener drops one object, a prefix, or a tenant's
/// objects; `bucketfront purge` sends the same to each `--peers` address.
#[tokio::test]
async fn purge_by_object_prefix_and_tenant() {
    let env = Env::start().await;
    for key in ["a.png", "b/1.png", "b/2.png"] {
        env.put("test-images", key, "x", "image/png").await;
    }
    let url = |k: &str| env.proxy.url(&format!("/test-images/{k}"));
    let xcache = |r: Resp| r.header("x-cache").unwrap_or("").to_string();
    for key in ["a.png", "b/1.png", "b/2.png"] {
        get(&url(key)).await;
        assert_eq!(xcache(get(&url(key)).await), "HIT");
    }
    let admin = format!("http://{}/purge", env.proxy.admin);
    let post = |body: &'static str| post_json(&admin, body);
    let (status, body) = post(r#"{"bucket": "test-images", "key": "a.png"}"#).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)));
    assert_eq!(xcache(get(&url("a.png")).await), "MISS");
    assert_eq!(xcache(get(&url("b/1.png")).await), "HIT");

    // The command, to three instances named in [fleet] peers, each holding b/1 and b/2.
    let others = [
        Proxy::start(config(&env.store.endpoint), Some(&env.store)).await,
        Proxy::start(config(&env.store.endpoint), Some(&env.store)).await,
    ];
    for p in &others {
        for key in ["b/1.png", "b/2.png"] {
            get(&p.url(&format!("/test-images/{key}"))).await;
        }
    }
    let peers: Vec<String> = [env.proxy.admin, others[0].admin, others[1].admin]
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[fleet]\npeers = [{}]\n[[tenants]]\nname = \"t1\"\nbuckets = [\"test-*\"]\nexpected_owner = \"111122223333\"\nrequire_signature = false\n",
            peers.join(", ")
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bucketfront"))
            .args(["purge", "-c", file.to_str().unwrap()])
            .args(["--bucket", "test-images", "--prefix", "b/"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with("{\"purged\":2}"))
            .count(),
        3,
        "one answer per instance: {stdout}"
    );
    for p in &others {
        let r = get(&p.url("/test-images/b/1.png")).await;
        assert_eq!(r.header("x-cache"), Some("MISS"));
    }
    for p in others {
        p.stop().await;
    }
    assert_eq!(xcache(get(&url("b/1.png")).await), "MISS");

    let (status, body) = post(r#"{"tenant": "t1"}"#).await;
    // a.png and b/1.png, fetched again since; b/2.png went with the prefix.
    assert_eq!((status, body["purged"].as_u64()), (200, Some(2)));
    assert_eq!(xcache(get(&url("a.png")).await), "MISS");

    for bad in [
        r#"{"bucket": "test-images"}"#,
        r#"{"tenant": "nobody"}"#,
        "not json",
    ] {
        let (status, body) = post(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], "bad_request");
    }
    env.stop().await;
}

/// hyper moves a request's future into a task of its own (h2) or its dispatcher (h1):
/// the miss, pass-through, presign and variant paths are boxed so that a hit does not
/// copy their state. Unboxed it was 15 KB and its copies took ~8% of the CPU of 4 KiB
/// hits over h2 (BENCHMARKS.md, "Per-core runtimes").
#[tokio::test]
async fn the_request_future_stays_small() {
    let env = Env::start().await;
    let (parts, ()) = http::Request::get("/test-images/a.png")
        .body(())
        .unwrap()
        .into_parts();
    let request = bucketfront::handle(env.proxy.app.state(), parts);
    let size = std::mem::size_of_val(&request);
    assert!(size <= 4096, "proxy::handle's future is {size} bytes");
}
