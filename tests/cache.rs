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
    env.proxy
        .state
        .cache
        .clock()
        .advance(Duration::from_millis(1200));
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
    proxy
        .state
        .cache
        .clock()
        .advance(Duration::from_millis(300));
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
    proxy
        .state
        .cache
        .clock()
        .advance(Duration::from_millis(300));
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
    proxy
        .state
        .cache
        .clock()
        .advance(Duration::from_millis(1100));
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
    env.proxy
        .state
        .cache
        .clock()
        .advance(Duration::from_millis(1100));
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
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open = env.store.stats.open.get();
        if open <= open_before {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "upstream connection still open after the client left"
    );
    let in_flight = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(in_flight.bytes()).to_string();
    assert!(
        text.contains("bucketfront_in_flight_requests 0"),
        "nothing in flight:\n{text}"
    );
    env.stop().await;
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
