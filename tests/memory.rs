//! Memory bounds, measured as this process's resident set size. Kept in a test binary of
//! their own, run one after the other, so that no other test's allocations are counted.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn memory_stays_bounded() {
    cached_bytes_never_exceed_max_memory().await;
    a_300_mib_object_streams_in_bounded_memory().await;
}

async fn cached_bytes_never_exceed_max_memory() {
    let env = Env::start("[cache]\nmax_memory = \"4MiB\"\nmax_object_size = \"1MiB\"").await;
    let object = Bytes::from(pattern(256 << 10, 1));
    for i in 0..160 {
        env.put(
            "test-images",
            &format!("fill/{i}.png"),
            object.clone(),
            "image/png",
        )
        .await;
    }
    let base_rss = rss();
    for i in 0..160 {
        let r = get(&env.proxy.url(&format!("/test-images/fill/{i}.png"))).await;
        assert_eq!(r.bytes().len(), object.len());
        env.proxy.state.cache.maintain().await;
        assert!(
            env.proxy.state.cache.weighted_size() <= 4 << 20,
            "weighted size {} after {i}",
            env.proxy.state.cache.weighted_size()
        );
    }
    // 40 MiB went through a 4 MiB cache: resident memory stays near the bound.
    let grown = rss().saturating_sub(base_rss);
    assert!(grown < 48 << 20, "RSS grew by {} MiB", grown >> 20);
    env.stop().await;
}

async fn a_300_mib_object_streams_in_bounded_memory() {
    let env = Env::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = pattern(1 << 20, 2);
        for _ in 0..300 {
            f.write_all(&chunk).unwrap();
        }
    }
    let stream = aws_sdk_s3::primitives::ByteStream::from_path(&path)
        .await
        .unwrap();
    env.store
        .put("test-images", "huge.png", stream, "image/png")
        .await
        .unwrap();
    let base = rss();
    let resp = client()
        .get(env.proxy.url("/test-images/huge.png").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "BYPASS");
    let mut body = resp.into_body();
    let (mut total, mut peak) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
        peak = peak.max(rss().saturating_sub(base));
    }
    assert_eq!(total, 300 << 20);
    assert!(
        peak < 64 << 20,
        "RSS grew by {} MiB while streaming 300 MiB",
        peak >> 20
    );
    env.stop().await;
}
