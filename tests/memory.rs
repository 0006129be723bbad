//! Memory bounds, measured as this process's resident set size. Kept in a test binary of
//! their own, run one after the other, so that no other test's allocations are counted.

mod common;

/// The allocator and settings the binary runs with, so that what is measured is what
/// production holds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use bucketfront::config::{Dur, Size};
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn memory_stays_bounded() {
    bucketfront::return_freed_pages_soon();
    hostile_readers_stay_within_the_documented_bound().await;
    cached_bytes_never_exceed_max_memory().await;
    a_300_mib_object_streams_in_bounded_memory().await;
    renders_stay_within_the_documented_bound().await;
    abandoned_fills_stay_within_the_documented_bound().await;
    a_burst_is_given_back().await;
}

/// Peak resident memory (VmHWM) of `process` (a pid or `self`).
fn peak_rss(process: &str) -> u64 {
    proc_status_bytes(process, "VmHWM")
}

/// Resets VmHWM to the current RSS of `process` (a pid or `self`; Linux: `5` to
/// `/proc/PROCESS/clear_refs`).
fn reset_peak_rss(process: &str) {
    std::fs::write(format!("/proc/{process}/clear_refs"), "5").unwrap();
}

/// 48 distinct cold 4 MiB objects (192 MiB), each asked for by a client that never
/// reads and by one that leaves right after the response head. Before fills had a
/// budget and connections a send deadline, each fill held its object twice for as long
/// as its reader sat there: ~384 MiB here. Now the peak stays within the documented
/// bound: max_memory + fill_memory + connections × per-connection bound (docs/design.md).
async fn hostile_readers_stay_within_the_documented_bound() {
    use tokio::io::AsyncWriteExt;
    const OBJECTS: usize = 48;
    let env = Env::with(|c, _| {
        c.cache.max_memory = Size(16 << 20);
        c.cache.fill_memory = Size(16 << 20);
        c.cache.max_object_size = Size(8 << 20);
        c.server.send_timeout = Dur::secs(1);
    })
    .await;
    for i in 0..OBJECTS {
        let body = Bytes::from(pattern(4 << 20, i as u8));
        env.put("test-images", &format!("h/{i}.png"), body, "image/png")
            .await;
    }
    reset_peak_rss("self");
    let base = rss();
    let mut sockets = Vec::new();
    for i in 0..OBJECTS {
        for _ in 0..2 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut s = socket.connect(env.proxy.addr).await.unwrap();
            let head = format!("GET /test-images/h/{i}.png HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            sockets.push(s);
        }
    }
    // Half the clients leave at once (after sending their head); the others never read.
    let mut stalled = Vec::new();
    for (i, s) in sockets.into_iter().enumerate() {
        if i % 2 == 1 {
            stalled.push(s);
        }
    }
    // The control request is answered while all this goes on.
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let r = get(&env.proxy.url("/test-images/ok.png")).await;
    assert_eq!(r.status, 200);
    // Wait for the send deadline to cut every stalled reader.
    env.proxy
        .all_requests_ended(Duration::from_secs(20), "stalled readers were cut")
        .await;
    assert_eq!(
        env.proxy.state.metrics.in_flight.get(),
        0,
        "stalled readers were cut"
    );
    let peak = peak_rss("self").saturating_sub(base);
    // 16 + 16 MiB of cache and fills, 96 connections at < 0.5 MiB each, and slack for
    // the allocator and the in-process store that serves the GETs.
    let bound = (16 + 16 + 48 + 64) << 20;
    eprintln!(
        "hostile readers: VmHWM grew by {} MiB (bound {} MiB)",
        peak >> 20,
        bound >> 20
    );
    assert!(peak < bound, "VmHWM grew by {} MiB", peak >> 20);
    drop(stalled);
    env.stop().await;
}

async fn cached_bytes_never_exceed_max_memory() {
    let env = Env::with(|c, _| {
        c.cache.max_memory = Size(4 << 20);
        c.cache.max_object_size = Size(1 << 20);
    })
    .await;
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
    let env = Env::start().await;
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

/// 16 distinct cold sources (1.5 MP PNGs, about 4.5 MiB of pixels each) asked for as
/// thumbnails at once, with two render slots: the peak stays within the bound of
/// docs/variants.md ("Limits and memory") plus max_memory and fill_memory, although the
/// sources and their pixels add up to ~130 MiB. `fill_memory` is smaller than the eight
/// sources fetched at once, so some renders fetch their source outside the cache (and
/// still answer 200).
async fn renders_stay_within_the_documented_bound() {
    use bucketfront::samples;
    const SOURCES: usize = 16;
    let env = Env::with(|c, _| {
        c.cache.max_memory = Size(32 << 20);
        c.cache.fill_memory = Size(16 << 20);
        c.cache.max_object_size = Size(8 << 20);
        c.variants.max_concurrent_renders = 2;
        c.variants.max_source_pixels = 2_000_000;
        // Memory is measured here, not speed: sixteen renders queued behind two slots of
        // an unoptimized build on a busy machine took longer than the default 10 s.
        c.variants.render_timeout = Dur::secs(300);
    })
    .await;
    let png = Bytes::from(samples::png(&samples::picture(1500, 1000), None));
    for i in 0..SOURCES {
        env.put(
            "test-images",
            &format!("r/{i}.png"),
            png.clone(),
            "image/png",
        )
        .await;
    }
    reset_peak_rss("self");
    let base = rss();
    let tasks: Vec<_> = (0..SOURCES)
        .map(|i| {
            let url = env
                .proxy
                .url(&format!("/test-images/r/{i}.png?w=256&fmt=webp"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("content-type"), Some("image/webp"));
    }
    let peak = peak_rss("self").saturating_sub(base);
    let (slots, object, pixels) = (2u64, 8u64 << 20, 2_000_000u64);
    let bound =
        (32 << 20) + (16 << 20) + slots * (object + 8 * pixels + (64 << 20)) + 4 * slots * object;
    eprintln!(
        "renders: VmHWM grew by {} MiB (bound {} MiB)",
        peak >> 20,
        bound >> 20
    );
    assert!(peak < bound, "VmHWM grew by {} MiB", peak >> 20);
    env.stop().await;
}

/// 60 cold 8 MiB objects, each asked for by a client that leaves right after the
/// response head, twice over, with `max_memory = fill_memory = 64 MiB`: eight fills go on
/// without their clients, the other objects stream past the cache until their clients
/// are gone. VmHWM stays within docs/design.md's bound for the proxy (max_memory +
/// fill_memory + 60 connections × 320 KiB) plus what the in-process store serving the 60
/// GETs holds (about 1 MiB each). The release binary with the store in another process
/// stays within the proxy's bound alone (BENCHMARKS.md, "Memory").
async fn abandoned_fills_stay_within_the_documented_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const OBJECTS: usize = 60;
    let env = Env::with(|c, _| {
        c.cache.max_memory = Size(64 << 20);
        c.cache.fill_memory = Size(64 << 20);
        c.server.send_timeout = Dur::secs(3);
    })
    .await;
    for i in 0..OBJECTS {
        let body = Bytes::from(pattern(8 << 20, i as u8));
        env.put("test-images", &format!("a/{i}.png"), body, "image/png")
            .await;
    }
    reset_peak_rss("self");
    let base = rss();
    for _wave in 0..2 {
        let mut clients = Vec::new();
        for i in 0..OBJECTS {
            let addr = env.proxy.addr;
            clients.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = format!("GET /test-images/a/{i}.png HTTP/1.1\r\nHost: x\r\n\r\n");
                s.write_all(head.as_bytes()).await.unwrap();
                let mut status = [0u8; 12];
                s.read_exact(&mut status).await.unwrap();
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        env.proxy
            .all_requests_ended(Duration::from_secs(30), "every response ended")
            .await;
    }
    let peak = peak_rss("self").saturating_sub(base);
    let proxy_bound = (64 << 20) + (64 << 20) + OBJECTS as u64 * (320 << 10);
    let store = OBJECTS as u64 * (1 << 20);
    eprintln!(
        "abandoned fills: VmHWM grew by {} MiB (bound {} MiB for the proxy + {} MiB for the store)",
        peak >> 20,
        proxy_bound >> 20,
        store >> 20
    );
    assert!(
        peak < proxy_bound + store,
        "VmHWM grew by {} MiB",
        peak >> 20
    );
    env.stop().await;
}

/// 128 clients each ask for a cold 512 KiB object at once: fills, origin connections and
/// response buffers make the resident set jump. Once the burst is over, the process gives
/// that memory back, but for its idle origin connections (at most 32 per host, each with
/// the read buffer its body grew: 0.6 MiB measured, docs/design.md); once the pool has
/// closed those (20-40 s after they went idle), but for the cache's own bytes. It fails
/// when the pool keeps idle connections for its default 90 s (checked by hand).
///
/// The proxy runs as `bucketfront serve`, a process of its own, as in production: its
/// worker threads and allocator settings are the binary's, and neither the store's side of
/// the idle connections nor the clients are counted. Measured in this process, with the
/// store and the clients beside it, the same burst left 35-53 MiB, and the test failed.
async fn a_burst_is_given_back() {
    const CLIENTS: usize = 128;
    const OBJECT: usize = 512 << 10;
    const MAX_MEMORY: u64 = 8 << 20;
    let env = Env::start().await;
    for i in 0..CLIENTS {
        let body = Bytes::from(pattern(OBJECT, i as u8));
        env.put("test-images", &format!("burst/{i}.png"), body, "image/png")
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = format!(
        "[cache]\nmax_memory = \"{}MiB\"\nfill_memory = \"32MiB\"\nmax_object_size = \"1MiB\"",
        MAX_MEMORY >> 20
    );
    let (proxy, port, admin) = serve_child(
        dir.path(),
        &env.store.endpoint,
        "max_connections_per_client = 10000",
        &cache,
    );
    accepting(port, "bucketfront").await;
    let url = |key: &str| format!("http://127.0.0.1:{port}/test-images/{key}");
    // One miss first, so that what every first request builds once (the origin client,
    // the code pages of the request path) is in the baseline, not counted as the burst's.
    env.put(
        "test-images",
        "warm.png",
        Bytes::from(pattern(OBJECT, 0)),
        "image/png",
    )
    .await;
    assert_eq!(get(&url("warm.png")).await.bytes().len(), OBJECT);
    let pid = proxy.id().to_string();
    let rss = || proc_status_bytes(&pid, "VmRSS");
    reset_peak_rss(&pid);
    let base = rss();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = url(&format!("burst/{i}.png"));
            tokio::spawn(async move { get(&url).await.bytes().len() })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), OBJECT);
    }
    let admin = ([127, 0, 0, 1], admin).into();
    eventually(Duration::from_secs(30), "every response ended", || async {
        metric_at(admin, "bucketfront_in_flight_requests").await == 0.0
    })
    .await;
    let peak = peak_rss(&pid).saturating_sub(base);
    let after = rss().saturating_sub(base);
    // What may stay while the pool keeps its connections: the cache's own bytes, 32 idle
    // origin connections at 1 MiB each (hyper's read buffer grows to 408 KiB, which its
    // buffer's growth and the allocator round up: 0.62 MiB measured) and 12 MiB for the
    // allocator's pages and the rest (1-2 MiB measured). Measured: +24-44 MiB right after
    // the end, +29-33 MiB a second later (VmHWM +47-60 MiB).
    const SLACK: u64 = 12 << 20;
    let with_pool = MAX_MEMORY + 32 * (1 << 20) + SLACK;
    // Once the pool has closed them: +9-10 MiB measured. Were they kept, they would add
    // their 20 MiB, more than the slack.
    let without_pool = MAX_MEMORY + SLACK;
    eprintln!(
        "burst: VmHWM grew by {} MiB, the resident set by {} MiB right after (bounds {} MiB \
         with the idle origin connections, {} MiB once they are closed)",
        peak >> 20,
        after >> 20,
        with_pool >> 20,
        without_pool >> 20
    );
    // Within the pool's idle timeout: the connections it keeps are still open.
    eventually(
        Duration::from_secs(15),
        "the burst's memory given back but for the idle origin connections",
        || async { rss().saturating_sub(base) <= with_pool },
    )
    .await;
    // The pool looks for idle connections every 20 s and closes those idle for 20 s.
    eventually(
        Duration::from_secs(60),
        "the burst's memory given back once the idle origin connections closed",
        || async { rss().saturating_sub(base) <= without_pool },
    )
    .await;
    drop(proxy);
    env.stop().await;
}
