//! Hostile clients: sockets that send nothing or half a head, h2 connections that open
//! no stream, readers that never read, oversized heads, request smuggling. Each attack is
//! a real TCP (or h2) peer on loopback; each test asserts that the connection is ended by
//! the deadline that governs it and that a control request is answered meanwhile.
//!
//! Deadlines here are short (300-600 ms) so the tests are quick; the assertions only
//! bound from above with generous slack ("closed within 10 s"), never "closed after
//! exactly N ms", so a busy machine makes them slower, not red.

mod common;

use std::time::{Duration, Instant};

use bucketfront::config::{Dur, Size};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines for every phase, and objects up to `max_object` cached.
async fn start(max_object: u64) -> Env {
    Env::with(|c, _| {
        c.server.header_read_timeout = Dur(Duration::from_millis(300));
        c.server.idle_timeout = Dur(Duration::from_millis(600));
        c.server.send_timeout = Dur(Duration::from_millis(600));
        c.cache.max_object_size = Size(max_object);
    })
    .await
}

/// The default `max_object_size`.
const DEFAULT_MAX: u64 = 16 << 20;

/// Waits until the server closes `sock` (EOF or reset), reading and discarding what it
/// sends; returns the bytes read, or panics after `within`.
async fn closed_within(sock: &mut TcpStream, within: Duration) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the server closed the connection in time");
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }
}

async fn metric(env: &Env, name: &str) -> u64 {
    let text = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(text.bytes()).to_string();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn control(env: &Env) {
    let r = get(&env.proxy.url("/test-images/ok.png")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn silent_and_half_preface_sockets_are_closed_at_the_header_deadline() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(env.proxy.addr).await.unwrap());
    }
    // Half an h2 preface, and half an HTTP/1 head.
    let mut half_h2 = TcpStream::connect(env.proxy.addr).await.unwrap();
    half_h2.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut half_h1 = TcpStream::connect(env.proxy.addr).await.unwrap();
    half_h1
        .write_all(b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    control(&env).await;
    for mut s in silent.into_iter().chain([half_h2, half_h1]) {
        closed_within(&mut s, Duration::from_secs(10)).await;
    }
    control(&env).await;
    let ended = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"first_request_timeout\"}",
    )
    .await;
    assert!(ended >= 52, "{ended}");
    env.stop().await;
}

#[tokio::test]
async fn at_the_limit_a_silent_socket_makes_room_for_a_real_client() {
    let env = Env::with(|c, _| c.server.max_connections = 4).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(env.proxy.addr).await.unwrap());
    }
    // The header deadline here is 1 s; eviction does not wait for it.
    for _ in 0..3 {
        control(&env).await;
    }
    let evicted = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"evicted\"}",
    )
    .await;
    assert!(evicted >= 1, "{evicted}");
    env.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_and_a_slow_second_head_are_closed() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let head = b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\n\r\n";
    // Idle after one request: closed after idle_timeout.
    let mut idle = TcpStream::connect(env.proxy.addr).await.unwrap();
    idle.write_all(head).await.unwrap();
    let got = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(got > 0, "the first request was answered");
    // A second head that never ends: closed after header_read_timeout.
    let mut slow = answered_keep_alive(env.proxy.addr, "/test-images/ok.png").await;
    slow.write_all(b"GET /test-images/ok.png HTTP/1.1\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    closed_within(&mut slow, Duration::from_secs(10)).await;
    let idle = metric(&env, "bucketfront_connections_ended_total{reason=\"idle\"}").await;
    let slow = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"header_timeout\"}",
    )
    .await;
    assert!(idle >= 1 && slow >= 1, "idle {idle}, header {slow}");
    env.stop().await;
}

#[tokio::test]
async fn an_h2_connection_without_streams_is_closed() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    for requests in [0, 1] {
        let tcp = TcpStream::connect(env.proxy.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        // hyper's client answers PINGs and keeps the connection open as long as the
        // server does.
        let conn = tokio::spawn(conn);
        for _ in 0..requests {
            let req = http::Request::get(env.proxy.url("/test-images/ok.png"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let r = send.send_request(req).await.unwrap();
            assert_eq!(r.status(), 200);
            r.into_body().collect().await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the server ended the h2 connection")
            .unwrap()
            .ok();
    }
    env.stop().await;
}

#[tokio::test]
async fn a_100_kb_request_head_is_refused_with_431() {
    let env = start(DEFAULT_MAX).await;
    let mut sock = TcpStream::connect(env.proxy.addr).await.unwrap();
    let big = "a".repeat(100 * 1024);
    let head = format!("GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may close before taking all of it.
    let _ = sock.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    env.stop().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_and_its_memory_freed() {
    let env = start(32 << 20).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let big = Bytes::from(pattern(24 << 20, 9));
    env.put("test-images", "big.png", big.clone(), "image/png")
        .await;
    for cold in [true, false] {
        // A small receive buffer, so that the server's writes block early.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut sock = socket.connect(env.proxy.addr).await.unwrap();
        sock.write_all(b"GET /test-images/big.png HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Never read: the server must give up after send_timeout.
        let t0 = Instant::now();
        loop {
            let n = metric(
                &env,
                "bucketfront_connections_ended_total{reason=\"send_timeout\"}",
            )
            .await;
            if n >= if cold { 1 } else { 2 } {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no send timeout (cold {cold})"
            );
            control(&env).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = closed_within(&mut sock, Duration::from_secs(10)).await;
        assert!(got < big.len(), "the whole body went through ({got})");
    }
    env.proxy
        .all_requests_ended(Duration::from_secs(10), "nothing in flight")
        .await;
    env.stop().await;
}

/// `send_timeout` counts bytes the client takes, not whole frames or writes: a client
/// reading slowly but steadily keeps its download. A phone at 13 KB/s behind a 4 MB
/// socket buffer leaves every write of the server waiting minutes for half that buffer
/// to drain; here the same ratio: loopback's ~4 MB send buffer drained at ~640 KB/s (64
/// KiB every 100 ms) makes each write wait about 3 s, against a `send_timeout` of 2 s
/// (which also leaves a busy machine's test task room to be late).
#[tokio::test]
async fn a_slow_steady_reader_is_never_cut() {
    let env = Env::with(|c, _| c.server.send_timeout = Dur::secs(2)).await;
    let body = Bytes::from(pattern(6 << 20, 11));
    env.put("test-images", "slow.png", body.clone(), "image/png")
        .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let mut sock = socket.connect(env.proxy.addr).await.unwrap();
    sock.write_all(b"GET /test-images/slow.png HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("cut after {} bytes", got.len()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("cut after {} bytes: {e}", got.len()),
            Err(_) => panic!("stalled after {} bytes", got.len()),
        }
        if got.len() >= body.len() && got.ends_with(&body[body.len() - 64..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&got[head_end..], &body[..], "the whole body");
    let cut = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"send_timeout\"}",
    )
    .await;
    assert_eq!(cut, 0);
    env.stop().await;
}

#[tokio::test]
async fn an_h2_stream_with_a_closed_window_is_cut() {
    let env = start(32 << 20).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    env.put(
        "test-images",
        "big.png",
        Bytes::from(pattern(8 << 20, 3)),
        "image/png",
    )
    .await;
    let tcp = TcpStream::connect(env.proxy.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let mut heads = Vec::new();
    for _ in 0..20 {
        let req = http::Request::get(env.proxy.url("/test-images/big.png"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        // Response heads arrive; bodies are never read, so the windows stay closed.
        heads.push(send.send_request(req).await.unwrap());
    }
    control(&env).await;
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the server cut the stalled h2 connection")
        .unwrap()
        .ok();
    let cut = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"send_timeout\"}",
    )
    .await;
    assert!(cut >= 1);
    drop(heads);
    env.proxy
        .all_requests_ended(Duration::from_secs(10), "nothing in flight")
        .await;
    env.stop().await;
}

/// Requests that HTTP/1 parsers have disagreed on, each followed by a second request
/// that a confused parser would take from the first one's bytes. Each is refused with
/// 400, or (Content-Length with Transfer-Encoding, RFC 9112 section 6.3) answered once
/// and the connection closed: never two answers, never a kept-alive connection.
#[tokio::test]
async fn smuggling_corpus_is_refused() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let corpus: &[&[u8]] = &[
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
        b"GET /test-images/ok.png HTTP/1.1\rHost: x\r\n\r\n",
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\0y\r\n\r\n",
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ];
    for raw in corpus {
        let mut sock = TcpStream::connect(env.proxy.addr).await.unwrap();
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = sock.write_all(&bytes).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let what = String::from_utf8_lossy(raw);
        assert!(read.is_ok(), "{what:?}: connection kept open");
        assert!(text.matches("HTTP/1.1 ").count() <= 1, "{what:?} → {text}");
        assert!(
            text.is_empty()
                || text.starts_with("HTTP/1.1 400")
                || text.contains("connection: close"),
            "{what:?} → {text}"
        );
    }
    control(&env).await;
    env.stop().await;
}

/// A tenant whose origin stalls holds at most `max_concurrent_per_tenant` origin
/// requests; the rest of its requests get 503/504, and another tenant is served
/// throughout.
#[tokio::test]
async fn a_stalled_origin_takes_only_its_tenants_slots() {
    let fake = FakeOrigin::start(vec![Behaviour::Stall]).await;
    let env = Env::with(|c, _| {
        c.tenants.push(tenant("slow", &["slow-*"], &[]));
        c.buckets.push(bucket(
            "slow-bucket",
            &fake.endpoint,
            Some(("AKIDSLOW", "slow-secret")),
        ));
        c.origin.max_concurrent_per_tenant = 2;
    })
    .await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let slow: Vec<_> = (0..8)
        .map(|i| {
            let url = env.proxy.url(&format!("/slow-bucket/k{i}.png"));
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    // Served while the slow tenant's requests wait on their stalled origin.
    for _ in 0..20 {
        control(&env).await;
    }
    for r in slow {
        let status = r.await.unwrap();
        assert!(status == 503 || status == 504, "{status}");
    }
    // Without the cap all 8 reach the origin at once. With 2 slots, the 2 first stall
    // until first_byte_timeout; waiters give up after the same time, so at most the
    // few that got a freed slot in between reach it.
    assert!(fake.count() < 8, "{} origin requests", fake.count());
    control(&env).await;
    env.stop().await;
}

/// Runs one attack of `tests/support/h2_attacks.py` against the proxy; returns its report.
async fn h2_attack(env: &Env, attack: &str, path: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h2_attacks.py");
    let child = std::process::Command::new("python3")
        .args([
            script,
            attack,
            &env.proxy.addr.port().to_string(),
            path,
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs h2)");
    // The script ends by itself within its 20 s window (the proxy's socket closes, or
    // the window ends); its output is read to the end on a blocking thread.
    let out = tokio::task::spawn_blocking(move || child.wait_with_output());
    // The proxy answers others while the attack runs.
    for _ in 0..5 {
        control(env).await;
    }
    let out = out.await.unwrap().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{attack}: {e}: {line:?}"))
}

/// h2 floods and abuses, each on its own connection: the server ends the connection
/// (GOAWAY or close) within the attack's 20 s window, and serves others meanwhile.
#[tokio::test]
async fn h2_floods_end_the_attacking_connection() {
    let env = start(32 << 20).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    env.put(
        "test-images",
        "big.png",
        Bytes::from(pattern(2 << 20, 4)),
        "image/png",
    )
    .await;
    // The control: the same script's well-behaved client is answered and kept open.
    let polite = h2_attack(&env, "polite", "/test-images/ok.png").await;
    assert_eq!(
        (polite["responses"].as_u64(), polite["ended"].as_bool()),
        (Some(1), Some(false)),
        "{polite}"
    );
    for attack in [
        "rapid_reset",
        "continuation_flood",
        "settings_flood",
        "ping_flood",
        "zero_window_streams",
    ] {
        let report = h2_attack(&env, attack, "/test-images/big.png").await;
        eprintln!("{report}");
        assert_eq!(report["ended"], true, "{report}");
        if attack == "zero_window_streams" {
            // 100 streams asked for, 64 allowed: the rest are refused. The streams that
            // never get a window are cut by send_timeout: with a GOAWAY first.
            assert!(report["refused"].as_u64().unwrap() >= 36, "{report}");
            assert!(report["goaway"].is_number(), "{report}");
        }
        control(&env).await;
    }
    // A connection that never opens a stream is cut at the header deadline, with GOAWAY.
    let report = h2_attack(&env, "no_streams", "/").await;
    assert!(
        report["closed"].as_bool().unwrap() && report["goaway"].is_number(),
        "{report}"
    );
    // Floods are counted, not logged line by line.
    let protocol = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"protocol_error\"}",
    )
    .await;
    assert!(protocol >= 1, "{protocol}");
    env.stop().await;
}

/// `max_connection_age`: a connection that keeps sending requests is still told to
/// close (h2 GOAWAY) once it is that old, after the request in progress.
#[tokio::test]
async fn a_connection_older_than_max_connection_age_is_closed() {
    let env = Env::with(|c, _| c.server.max_connection_age = Dur(Duration::from_millis(500))).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let tcp = TcpStream::connect(env.proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let mut answered = 0;
    let t0 = Instant::now();
    // Busy all along (never idle for idle_timeout): only the age ends it.
    while !conn.is_finished() && t0.elapsed() < Duration::from_secs(20) {
        let req = http::Request::get(env.proxy.url("/test-images/ok.png"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        match send.send_request(req).await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                r.into_body().collect().await.unwrap();
                answered += 1;
            }
            Err(_) => break,
        }
    }
    assert!(answered > 0);
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the server closed the aged connection")
        .unwrap()
        .ok();
    let aged = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"max_age\"}",
    )
    .await;
    assert!(aged >= 1, "{aged}");
    env.stop().await;
}

/// Beyond `max_connections` (every connection busy, so none can be evicted), an h2
/// connection from the overflow pool gets its 503 and then GOAWAY.
#[tokio::test]
async fn an_overflow_h2_connection_gets_503_then_goaway() {
    let env = Env::with(|c, _| c.server.max_connections = 2).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let big = Bytes::from(pattern(8 << 20, 3));
    env.put("test-images", "big.png", big, "image/png").await;
    // Two connections with a response in progress that they do not read: busy, not
    // evictable (an idle keep-alive would be).
    let mut busy = Vec::new();
    for _ in 0..2 {
        busy.push(busy_connection(env.proxy.addr, "/test-images/big.png").await);
    }
    let tcp = TcpStream::connect(env.proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(env.proxy.url("/test-images/ok.png"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), 503);
    r.into_body().collect().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the server closed the overflow connection")
        .unwrap()
        .ok();
    let overflow = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"overflow\"}",
    )
    .await;
    assert!(overflow >= 1, "{overflow}");
    drop(busy);
    env.stop().await;
}

/// Keep-alive exhaustion: one address holds every connection with polite keep-alives
/// (one answered request each, re-used often enough to beat `idle_timeout`). A new
/// client from another address is still served: at `max_connections` the longest-idle
/// connection of the client holding the most makes room.
#[tokio::test]
async fn one_clients_keep_alives_leave_room_for_another_client() {
    let env = Env::with(|c, _| {
        c.server.max_connections = 40;
        c.server.max_connections_per_client = 256;
    })
    .await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(answered_keep_alive(env.proxy.addr, "/test-images/ok.png").await);
    }
    let mut others = Vec::new();
    for other in 2..5 {
        let t0 = Instant::now();
        let from = [127, 0, 0, other];
        others.push(answered_keep_alive_from(env.proxy.addr, "/test-images/ok.png", from).await);
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let evicted = metric(
        &env,
        "bucketfront_connections_ended_total{reason=\"evicted\"}",
    )
    .await;
    assert!(evicted >= 3, "{evicted}");
    // The attacker's oldest keep-alives were the ones closed.
    for s in held.iter_mut().take(3) {
        closed_within(s, Duration::from_secs(10)).await;
    }
    env.stop().await;
}

/// `max_connections_per_client`: one address's next connection closes its own
/// longest-idle one; it never holds more, whatever `max_connections` leaves free.
#[tokio::test]
async fn one_client_holds_at_most_its_share_of_connections() {
    let env = Env::with(|c, _| {
        c.server.max_connections = 500;
        c.server.max_connections_per_client = 10;
    })
    .await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(answered_keep_alive(env.proxy.addr, "/test-images/ok.png").await);
    }
    let (closed, open) = held.split_at_mut(20);
    for s in closed {
        closed_within(s, Duration::from_secs(10)).await;
    }
    // The newest ten are still open and answer.
    for s in open {
        s.write_all(b"GET /test-images/ok.png HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    // Another address is a client of its own.
    answered_keep_alive_from(env.proxy.addr, "/test-images/ok.png", [127, 0, 0, 2]).await;
    env.stop().await;
}

/// Slow readers of an uncached object hold their origin slots as long as they read; one
/// client's take at most a quarter of its tenant's `max_concurrent_per_tenant`, so
/// another client's cold object still gets a slot at once.
#[tokio::test]
async fn one_clients_slow_readers_take_only_their_share_of_origin_slots() {
    let env = Env::with(|c, _| {
        c.origin.max_concurrent_per_tenant = 8;
        c.cache.max_object_size = Size(1 << 20);
    })
    .await;
    let big = Bytes::from(pattern(16 << 20, 5));
    env.put("test-images", "big.png", big, "image/png").await;
    env.put("test-images", "cold.png", "cold", "image/png")
        .await;
    // Eight streams of an object too large to cache, never read.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(env.proxy.addr).await.unwrap();
        s.write_all(b"GET /test-images/big.png HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        streams.push(s);
    }
    let mut answered = Vec::new();
    for s in &mut streams {
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        answered.push(String::from_utf8_lossy(&head).to_string());
    }
    let streaming = answered.iter().filter(|h| h.ends_with("200")).count();
    assert_eq!(streaming, 2, "a quarter of 8 slots: {answered:?}");
    // Another client's cold object, while those two hold their slots.
    let mut other = connect_from(env.proxy.addr, [127, 0, 0, 2]).await;
    other
        .write_all(b"GET /test-images/cold.png HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(streams);
    env.stop().await;
}

/// A source URL names a region (`https://B.s3.REGION.amazonaws.com/K`); the origin
/// clients are never keyed by it, so 200 made-up regions (`zz-madeup-N`) make no client
/// (each used to be a client and its connections, memory an attacker picked).
#[tokio::test]
async fn regions_named_in_request_urls_make_no_clients() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "r.png", "region", "image/png").await;
    for i in 0..200 {
        let source = format!("https%3A%2F%2Ftest-images.s3.zz-madeup-{i}.amazonaws.com%2Fr.png");
        let r = get(&env.proxy.url(&format!("/_/fetch?url={source}"))).await;
        assert_eq!(r.status, 200, "{i}");
    }
    assert_eq!(env.proxy.state.origins.client_count(), 1);
    env.stop().await;
}

/// The admin listener (64 connections) under the attack that used to take it down: 100
/// silent sockets. `/healthz` and `/metrics` are still answered (the oldest silent socket
/// is evicted for each new client), and every silent socket is closed by the deadline.
#[tokio::test]
async fn the_admin_listener_survives_silent_sockets() {
    let env = start(DEFAULT_MAX).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(env.proxy.admin).await.unwrap());
    }
    for path in ["/healthz", "/metrics", "/readyz"] {
        let r = get(&format!("http://{}{path}", env.proxy.admin)).await;
        assert_eq!(r.status, 200, "{path}");
    }
    for mut s in silent {
        closed_within(&mut s, Duration::from_secs(10)).await;
    }
    env.stop().await;
}

/// h2's header list is limited to 16 KiB: a request with a 1 KB header is answered, one
/// with a 20 KB header (HEADERS + CONTINUATION) is not served (431, a reset stream, or the
/// connection ended), and the proxy keeps serving others.
#[tokio::test]
async fn an_h2_header_list_over_16_kib_is_refused() {
    let env = start(DEFAULT_MAX).await;
    env.put("test-images", "ok.png", "ok", "image/png").await;
    let small = h2_attack(&env, "header_list_1k", "/test-images/ok.png").await;
    assert_eq!(small["statuses"], serde_json::json!([200]), "{small}");
    let big = h2_attack(&env, "header_list_20k", "/test-images/ok.png").await;
    eprintln!("{big}");
    let statuses = big["statuses"].as_array().unwrap();
    assert!(
        !statuses.iter().any(|s| s == 200),
        "a 20 KB header list was served: {big}"
    );
    assert!(
        statuses.iter().any(|s| s == 431)
            || big["resets"].as_u64() > Some(0)
            || big["ended"] == true,
        "{big}"
    );
    control(&env).await;
    env.stop().await;
}
