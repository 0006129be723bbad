//! Cache semantics (docs/http.md, "X-Cache and the cache") against the embedded store and against origins
//! that misbehave on purpose: coalescing, never caching a short body, revalidation,
//! stale-on-error, negative caching, the memory bound and streaming.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bucketfront::config::{Dur, Size};
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn one_upstream_get_for_100_concurrent_cold_requests() {
    let env = Env::start().await;
    let body = pattern(3 << 20, 9);
    env.put("test-images", "hot.png", body.clone(), "image/png")
        .await;
    let url = Arc::new(env.proxy.url("/test-images/hot.png"));
    let before = env.gets();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.bytes().as_ref() == body.as_slice(),
            "identical, complete body"
        );
    }
    assert_eq!(env.gets() - before, 1, "exactly one upstream GET");
    env.stop().await;
}

#[tokio::test]
async fn first_bytes_arrive_before_the_object_has() {
    // The origin sends half the body and then stalls: a streaming proxy has already
    // forwarded that half; a buffering one has sent nothing.
    let body = Bytes::from(pattern(1 << 20, 4));
    let origin = FakeOrigin::start(vec![Behaviour::Cut {
        body,
        cut: 512 << 10,
    }])
    .await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let resp = client()
        .get(proxy.url("/test-fake/s.png").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "bytes before the end of the object"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_body_cut_short_is_never_cached_or_served_whole() {
    let body = Bytes::from(pattern(1 << 20, 5));
    let origin = FakeOrigin::start(vec![
        Behaviour::Cut {
            body: body.clone(),
            cut: 512 << 10,
        },
        Behaviour::Full(body.clone()),
    ])
    .await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let url = proxy.url("/test-fake/cut.png");
    // The first client and two joiners of the same fill all see a broken transfer.
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for a in attempts {
        let r = a.await.unwrap();
        assert_eq!(r.status, 200, "headers were sent before the cut");
        assert!(
            r.body.is_err(),
            "a short body must fail, got {:?} bytes",
            r.body.as_ref().map(|b| b.len())
        );
    }
    assert_eq!(origin.count(), 1);
    let r = get(&url).await;
    assert_eq!(r.header("x-cache"), Some("MISS"), "nothing was cached");
    assert!(r.bytes() == &body);
    assert_eq!(get(&url).await.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn expired_entries_are_refetched_and_replaced() {
    let env = Env::with(|c, _| c.cache.ttl = Dur::secs(1)).await;
    env.put("test-images", "v.png", "version-one", "image/png")
        .await;
    let url = env.proxy.url("/test-images/v.png");
    let first = get(&url).await;
    assert_eq!(first.bytes().as_ref(), b"version-one");
    env.put("test-images", "v.png", "version-two!", "image/png")
        .await;
    assert_eq!(
        get(&url).await.bytes().as_ref(),
        b"version-one",
        "fresh entry served"
    );
    env.proxy.state.clock.advance(Duration::from_millis(1200));
    let r = get(&url).await;
    assert_eq!(r.bytes().as_ref(), b"version-two!");
    assert_ne!(r.header("etag"), first.header("etag"));
    assert_eq!(get(&url).await.header("x-cache"), Some("HIT"));
    env.stop().await;
}

#[tokio::test]
async fn stale_is_served_while_the_origin_fails_and_5xx_never_replaces_it() {
    let body = Bytes::from(pattern(1000, 6));
    let origin =
        FakeOrigin::start(vec![Behaviour::Full(body.clone()), Behaviour::Status(503)]).await;
    let cache = |endpoint: &str| {
        let mut c = fake_config(endpoint);
        c.cache.ttl = Dur(Duration::from_millis(200));
        c.cache.stale_if_error = Dur::secs(3600);
        c
    };
    let proxy = Proxy::start(cache(&origin.endpoint), None).await;
    let url = proxy.url("/test-fake/st.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    proxy.state.clock.advance(Duration::from_millis(300));
    for _ in 0..3 {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("STALE"));
        assert!(r.bytes() == &body);
    }
    proxy.stop().await;

    // A stalled origin (timeout) and a dead one (connection refused) serve stale too.
    let origin = FakeOrigin::start(vec![Behaviour::Full(body.clone()), Behaviour::Stall]).await;
    let proxy = Proxy::start(cache(&origin.endpoint), None).await;
    let url = proxy.url("/test-fake/st.png");
    get(&url).await;
    proxy.state.clock.advance(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(get(&url).await.header("x-cache"), Some("STALE"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the first waited for the timeout"
    );
    // During the backoff the next requests do not go to the stalled origin again.
    let requests = origin.count();
    assert_eq!(get(&url).await.header("x-cache"), Some("STALE"));
    assert_eq!(origin.count(), requests);
    proxy.state.clock.advance(Duration::from_millis(1100));
    let addr = origin.addr();
    drop(origin);
    refused_within(addr, Duration::from_secs(10)).await;
    assert_eq!(get(&url).await.header("x-cache"), Some("STALE"));
    proxy.stop().await;
}

#[tokio::test]
async fn not_found_is_remembered_for_negative_ttl() {
    let env = Env::with(|c, _| c.cache.negative_ttl = Dur::secs(1)).await;
    let url = env.proxy.url("/test-images/later.png");
    assert_eq!(get(&url).await.status, 404);
    let gets = env.gets();
    env.put("test-images", "later.png", "now here", "image/png")
        .await;
    let r = get(&url).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(env.gets(), gets, "no upstream call inside negative_ttl");
    env.proxy.state.clock.advance(Duration::from_millis(1100));
    assert_eq!(get(&url).await.status, 200);
    env.stop().await;
}

#[tokio::test]
async fn errors_other_than_404_are_not_cached() {
    let origin = FakeOrigin::start(vec![
        Behaviour::Status(503),
        Behaviour::Status(403),
        Behaviour::Full(Bytes::from("ok")),
    ])
    .await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let url = proxy.url("/test-fake/e.png");
    assert_eq!(get(&url).await.status, 502);
    assert_eq!(
        get(&url).await.status,
        404,
        "403 upstream is a 404 to clients"
    );
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(origin.count(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn ranges_of_cold_objects() {
    let env = Env::with(|c, _| c.cache.max_object_size = Size(64 << 10)).await;
    let small = pattern(10_000, 7);
    let large = pattern(200_000, 8);
    env.put("test-images", "small.png", small.clone(), "image/png")
        .await;
    env.put("test-images", "large.png", large.clone(), "image/png")
        .await;
    // Small: the whole object is fetched once, then ranges come from memory.
    let r = get_with(
        &env.proxy.url("/test-images/small.png"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.bytes().as_ref(), &small[100..200]);
    let r = get_with(
        &env.proxy.url("/test-images/small.png"),
        &[("range", "bytes=-10")],
    )
    .await;
    assert_eq!(r.bytes().as_ref(), &small[9990..]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(env.gets(), 1);
    // Large: the range is forwarded upstream and the object is never cached.
    for _ in 0..2 {
        let r = get_with(
            &env.proxy.url("/test-images/large.png"),
            &[("range", "bytes=1000-1999")],
        )
        .await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/200000"));
        assert_eq!(r.bytes().as_ref(), &large[1000..2000]);
        assert_eq!(r.header("x-cache"), Some("BYPASS"));
    }
    // An If-Range that cannot be checked upstream gets the whole object.
    let r = get_with(
        &env.proxy.url("/test-images/large.png"),
        &[("range", "bytes=0-9"), ("if-range", "\"an-old-etag\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(&env.proxy.url("/test-images/large.png")).await;
    assert!(r.bytes().as_ref() == large.as_slice());
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    env.stop().await;
}

#[tokio::test]
async fn a_client_hanging_up_releases_the_upstream_connection() {
    let env = Env::with(|c, _| c.cache.max_object_size = Size(1 << 20)).await;
    env.put("test-images", "long.png", pattern(64 << 20, 3), "image/png")
        .await;
    let open_before = env.store.stats.open.get();
    let resp = client()
        .get(env.proxy.url("/test-images/long.png").parse().unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    // The proxy drops the origin body, which closes that upstream connection.
    eventually(
        Duration::from_secs(5),
        "the upstream connection closed after the client left",
        || async { env.store.stats.open.get() <= open_before },
    )
    .await;
    // The request ends as its response does (the gauge follows the body's drop).
    env.proxy
        .all_requests_ended(Duration::from_secs(5), "nothing in flight")
        .await;
    env.stop().await;
}

/// A burst of cold requests holds one origin connection each; once they are answered,
/// the pool keeps at most 32 of them per origin host (each holds the read buffer its body
/// grew), not the whole burst until the origin closes them (docs/design.md, worst case).
#[tokio::test]
async fn a_burst_leaves_at_most_32_idle_origin_connections() {
    const BURST: u64 = 48;
    let gate = Arc::new(tokio::sync::Notify::new());
    let origin = FakeOrigin::start(vec![Behaviour::Gated {
        gate: gate.clone(),
        body: Bytes::from_static(b"one of the burst"),
    }])
    .await;
    let mut config = fake_config(&origin.endpoint);
    config.origin.first_byte_timeout = Dur::secs(120);
    let proxy = Proxy::start(config, None).await;
    let clients: Vec<_> = (0..BURST)
        .map(|i| {
            let url = proxy.url(&format!("/test-fake/burst-{i}.png"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Every request waits at the origin, so each has a connection of its own.
    eventually(
        Duration::from_secs(60),
        "the whole burst at the origin",
        || async { origin.count() == BURST },
    )
    .await;
    assert_eq!(origin.open(), BURST);
    // Released together (again and again: a request between its count and its wait on
    // the gate would miss one release).
    eventually(Duration::from_secs(60), "every client answered", || async {
        gate.notify_waiters();
        clients.iter().all(|c| c.is_finished())
    })
    .await;
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes().as_ref(), b"one of the burst");
    }
    // The cap closes the rest as they come back to the pool, well before the pool's
    // 20 s idle timeout (`origin::pool::IDLE_TIMEOUT`) would close any of them.
    eventually(
        Duration::from_secs(10),
        "at most 32 idle origin connections",
        || async { origin.open() <= 32 },
    )
    .await;
    proxy.stop().await;
}

/// A cold object larger than what is left of `fill_memory` is not fetched into memory:
/// it streams through uncached (`BYPASS`), whole; one that fits is filled (`MISS`).
#[tokio::test]
async fn a_cold_object_beyond_fill_memory_streams_uncached() {
    let env = Env::with(|c, _| {
        c.cache.fill_memory = Size(1 << 20);
        c.cache.max_object_size = Size(8 << 20);
    })
    .await;
    let big = pattern(2 << 20, 8);
    env.put("test-images", "big.png", big.clone(), "image/png")
        .await;
    env.put(
        "test-images",
        "small.png",
        pattern(256 << 10, 9),
        "image/png",
    )
    .await;
    for _ in 0..2 {
        let r = get(&env.proxy.url("/test-images/big.png")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("BYPASS"));
        assert!(r.bytes().as_ref() == big.as_slice());
    }
    let r = get(&env.proxy.url("/test-images/small.png")).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = get(&env.proxy.url("/test-images/small.png")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let metrics = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(metrics.bytes()).to_string();
    assert!(
        text.contains("bucketfront_cache_fill_budget_exhausted_total 2"),
        "{text}"
    );
    env.stop().await;
}

/// An object stored with `Content-Encoding`, `Content-Disposition`, `Content-Language`
/// and its own `Cache-Control` is served with them, the HIT with exactly the MISS's
/// headers (plus `Age`), a range as a range of the encoded bytes, and a 304 with the
/// validators and `Cache-Control` (RFC 9110 §15.4.5).
#[tokio::test]
async fn stored_headers_are_passed_on_from_the_origin_and_from_memory() {
    let env = Env::start().await;
    let body = Bytes::from(pattern(5000, 9));
    env.store
        .client()
        .put_object()
        .bucket("test-images")
        .key("icons/a.svgz")
        .body(body.clone().into())
        .content_type("image/svg+xml")
        .content_encoding("gzip")
        .content_disposition("inline; filename=\"a.svgz\"")
        .content_language("fr")
        .cache_control("public, max-age=600")
        .send()
        .await
        .unwrap();
    let url = env.proxy.url("/test-images/icons/a.svgz");
    let miss = get(&url).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.bytes(), &body, "the encoded bytes, untouched");
    assert_eq!(miss.header("content-encoding"), Some("gzip"));
    assert_eq!(
        miss.header("content-disposition"),
        Some("inline; filename=\"a.svgz\"")
    );
    assert_eq!(miss.header("content-language"), Some("fr"));
    // The server's `private, max-age=3600`, capped by the object's 600 s.
    assert_eq!(miss.header("cache-control"), Some("private, max-age=600"));
    assert_eq!(miss.header("age"), None);
    env.proxy.state.clock.advance(Duration::from_secs(30));
    let hit = get(&url).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("age"), Some("30"));
    let without = |r: &Resp| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "x-cache" | "x-request-id" | "age" | "date"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(
        without(&hit),
        without(&miss),
        "a HIT carries the MISS's headers"
    );
    let part = get_with(&url, &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-encoding"), Some("gzip"));
    assert_eq!(part.bytes().as_ref(), &body[10..20]);
    let etag = miss.header("etag").unwrap().to_string();
    let not_modified = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(
        not_modified.header("cache-control"),
        Some("private, max-age=600")
    );
    env.stop().await;
}

/// The object's own `Cache-Control`, as a shared cache must read it: `no-store` and
/// `private` are never stored (`BYPASS`, one GET per request), `no-cache` is revalidated
/// before every use, `max-age` shortens the freshness below `ttl`.
#[tokio::test]
async fn the_objects_own_cache_control_is_honoured() {
    let env = Env::start().await;
    for (key, cc) in [
        ("ns.png", "no-store"),
        ("pv.png", "private, max-age=600"),
        ("short.png", "max-age=5"),
    ] {
        env.store
            .client()
            .put_object()
            .bucket("test-images")
            .key(key)
            .body(Bytes::from_static(b"png bytes").into())
            .content_type("image/png")
            .cache_control(cc)
            .send()
            .await
            .unwrap();
    }
    let url = |k: &str| env.proxy.url(&format!("/test-images/{k}"));
    for key in ["ns.png", "pv.png"] {
        let before = env.gets();
        for _ in 0..2 {
            let r = get(&url(key)).await;
            assert_eq!(r.status, 200, "{key}");
            assert_eq!(r.header("x-cache"), Some("BYPASS"), "{key}");
            assert_eq!(r.bytes().as_ref(), b"png bytes");
        }
        assert_eq!(env.gets(), before + 2, "{key}: one GET per request");
    }
    assert_eq!(
        get(&url("ns.png")).await.header("cache-control"),
        Some("no-store")
    );
    assert_eq!(
        get(&url("pv.png")).await.header("cache-control"),
        Some("private, max-age=600")
    );
    // max-age=5: fresh for 5 s, not for the hour of `ttl`. (The embedded store answers
    // a conditional GET with the whole object, so the revalidation is a MISS here.)
    assert_eq!(get(&url("short.png")).await.header("x-cache"), Some("MISS"));
    assert_eq!(get(&url("short.png")).await.header("x-cache"), Some("HIT"));
    env.proxy.state.clock.advance(Duration::from_secs(6));
    let before = env.gets();
    assert_eq!(get(&url("short.png")).await.header("x-cache"), Some("MISS"));
    assert_eq!(env.gets(), before + 1);
    env.stop().await;

    // no-cache: stored, then revalidated (If-None-Match → 304) before every use.
    let body = Bytes::from_static(b"revalidated bytes");
    let origin = FakeOrigin::start(vec![
        Behaviour::Raw {
            head: format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nETag: \"n\"\r\nCache-Control: no-cache",
                body.len()
            ),
            body: body.clone(),
        },
        Behaviour::Raw {
            head: "HTTP/1.1 304 Not Modified\r\nETag: \"n\"".into(),
            body: Bytes::new(),
        },
    ])
    .await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let url = proxy.url("/test-fake/nc.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    for n in 2..4 {
        let r = get(&url).await;
        assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
        assert_eq!(r.bytes(), &body);
        assert_eq!(origin.count(), n, "one conditional GET per use");
        assert!(
            origin.heads.lock().unwrap()[n as usize - 1]
                .to_ascii_lowercase()
                .contains("if-none-match: \"n\"")
        );
    }
    proxy.stop().await;
}

/// `must-revalidate` (and `proxy-revalidate`, `no-cache`) forbid serving a stale copy:
/// with the origin failing after expiry, the client gets a 502, not `STALE`.
#[tokio::test]
async fn must_revalidate_objects_are_never_served_stale() {
    let body = Bytes::from_static(b"strict bytes");
    for cc in ["max-age=1, must-revalidate", "max-age=1, proxy-revalidate"] {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nETag: \"s\"\r\nCache-Control: {cc}",
            body.len()
        );
        let origin = FakeOrigin::start(vec![
            Behaviour::Raw {
                head,
                body: body.clone(),
            },
            Behaviour::Status(503),
        ])
        .await;
        let mut config = fake_config(&origin.endpoint);
        config.cache.stale_if_error = Dur::secs(3600);
        let proxy = Proxy::start(config, None).await;
        let url = proxy.url("/test-fake/strict.png");
        assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
        proxy.state.clock.advance(Duration::from_secs(2));
        let r = get(&url).await;
        assert_eq!(r.status, 502, "{cc}: {:?}", r.header("x-cache"));
        assert_eq!(origin.count(), 2);
        proxy.stop().await;
    }
}

/// Answers no S3 gives, from an S3-compatible origin: a `206` to a GET without `Range`
/// (which used to go out under 200 headers and then be cut), a field the SDK reads once
/// sent twice, and duplicate `Cache-Control` lines (one list: RFC 9110 §5.3). The
/// client gets a whole answer: a clean 502, or the object.
#[tokio::test]
async fn an_origin_breaking_the_protocol_gets_a_clean_502() {
    let partial = Behaviour::Raw {
        head: "HTTP/1.1 206 Partial Content\r\nContent-Type: image/png\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10".into(),
        body: Bytes::from_static(b"0123456789"),
    };
    let origin = FakeOrigin::start(vec![partial]).await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/part.png")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
    proxy.stop().await;

    let doubled = Behaviour::Raw {
        head: "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\nCache-Control: public".into(),
        body: Bytes::from_static(b"whole"),
    };
    let origin = FakeOrigin::start(vec![doubled]).await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/doubled.png")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes().as_ref(), b"whole");
    proxy.stop().await;

    let two_types = Behaviour::Raw {
        head: "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Type: image/gif\r\nContent-Length: 5".into(),
        body: Bytes::from_static(b"which"),
    };
    let origin = FakeOrigin::start(vec![two_types]).await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/types.png")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
    proxy.stop().await;
}

/// Within `stale_while_revalidate` after its lifetime, an entry's old copy is served at
/// once (`STALE`) while one background revalidation runs; once it has finished, the new
/// version is a HIT. The origin here answers the revalidation only when the test lets
/// it, so "at once" is checked without a clock: the stale answers arrive while the
/// origin has not answered yet.
#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_in_the_background() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let origin = FakeOrigin::start(vec![
        Behaviour::Full(Bytes::from_static(b"version 1")),
        Behaviour::Gated {
            gate: gate.clone(),
            body: Bytes::from_static(b"version 2"),
        },
        Behaviour::Full(Bytes::from_static(b"version 3")),
    ])
    .await;
    let mut config = fake_config(&origin.endpoint);
    config.cache.ttl = Dur::secs(60);
    config.cache.stale_while_revalidate = Dur::secs(30);
    config.origin.first_byte_timeout = Dur::secs(60);
    let proxy = Proxy::start(config, None).await;
    let url = proxy.url("/test-fake/swr.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    proxy.state.clock.advance(Duration::from_secs(70));
    for _ in 0..3 {
        let r = get(&url).await;
        assert_eq!(r.header("x-cache"), Some("STALE"));
        assert_eq!(r.bytes().as_ref(), b"version 1");
    }
    // One revalidation for the three, still waiting on the origin.
    eventually(Duration::from_secs(5), "one revalidation", || async {
        origin.count() == 2
    })
    .await;
    gate.notify_one();
    let r = eventually_some(
        Duration::from_secs(5),
        "the background revalidation stored the new version",
        || async {
            let r = get(&url).await;
            (r.header("x-cache") == Some("HIT")).then_some(r)
        },
    )
    .await;
    assert_eq!(r.bytes().as_ref(), b"version 2");
    assert_eq!(origin.count(), 2);
    // Past lifetime + stale_while_revalidate, the revalidation is in the foreground again.
    proxy.state.clock.advance(Duration::from_secs(100));
    let r = get(&url).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(r.bytes().as_ref(), b"version 3");
    proxy.stop().await;
}
