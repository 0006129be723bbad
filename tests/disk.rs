//! The disk tier (`[cache.disk]`, docs/http.md "The disk tier") end to end: a warm cache
//! after a restart, files that went bad (a miss, or the rest of the body from the origin,
//! never a wrong byte), a disk that cannot be used, revalidation and purge.

mod common;

use std::time::Duration;

use bucketfront::DISK_BLOCK as BLOCK;
use bucketfront::config::Dur;
use bytes::Bytes;
use common::*;

/// The files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// What was cached before a stop is a HIT after the next start on the same path, with
/// not one origin GET, and with the headers it was stored with.
#[tokio::test]
async fn the_disk_tier_keeps_the_cache_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let body = Bytes::from(pattern(300_000, 3));
    env.store
        .client()
        .put_object()
        .bucket("test-images")
        .key("a.svgz")
        .body(body.clone().into())
        .content_type("image/svg+xml")
        .content_encoding("gzip")
        .content_disposition("inline; filename=\"a.svgz\"")
        .cache_control("public, max-age=600")
        .send()
        .await
        .unwrap();
    for i in 0..20 {
        env.put(
            "test-images",
            &format!("k/{i}.png"),
            pattern(1000 + i, 4),
            "image/png",
        )
        .await;
    }
    let url = |p: &Proxy, k: &str| p.url(&format!("/test-images/{k}"));
    let miss = get(&url(&env.proxy, "a.svgz")).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    for i in 0..20 {
        assert_eq!(
            get(&url(&env.proxy, &format!("k/{i}.png"))).await.status,
            200
        );
    }
    let gets = env.gets();

    env.restart_proxy().await;
    env.proxy.state.clock.advance(Duration::from_secs(120));
    let hit = get(&url(&env.proxy, "a.svgz")).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.bytes(), &body);
    // Streamed from its file (two blocks), it says how old the copy is, as a hit from
    // memory does: not the zero of a fresh fetch.
    let age: u64 = hit
        .header("age")
        .expect("Age on a disk hit")
        .parse()
        .unwrap();
    assert!((120..600).contains(&age), "{age}");
    for name in [
        "content-type",
        "content-encoding",
        "content-disposition",
        "etag",
        "last-modified",
        "cache-control",
    ] {
        assert_eq!(hit.header(name), miss.header(name), "{name}");
    }
    for i in 0..20 {
        let r = get(&url(&env.proxy, &format!("k/{i}.png"))).await;
        assert_eq!(r.header("x-cache"), Some("HIT"));
        assert_eq!(r.bytes().as_ref(), pattern(1000 + i, 4));
    }
    assert_eq!(env.gets(), gets, "no origin GET after the restart");
    assert_eq!(
        metric(
            &env.proxy,
            "bucketfront_cache_tier_hits_total{tier=\"disk\"}"
        )
        .await,
        21.0
    );
    // Now in memory too.
    assert_eq!(
        get(&url(&env.proxy, "a.svgz")).await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(
        metric(
            &env.proxy,
            "bucketfront_cache_tier_hits_total{tier=\"memory\"}"
        )
        .await,
        1.0
    );
    env.stop().await;
}

/// The one object file under the disk path `dir`.
fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let files = files_under(&dir.join("objects"));
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Puts `body` as `key` in `test-images`, fetches it once (a MISS, written to disk) and
/// restarts the proxy on the same disk path `dir`, so the object is on disk only; its file.
async fn on_disk_only(
    env: &mut Env,
    dir: &std::path::Path,
    key: &str,
    body: &Bytes,
) -> std::path::PathBuf {
    env.put("test-images", key, body.clone(), "image/png").await;
    let r = get(&env.proxy.url(&format!("/test-images/{key}"))).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    env.restart_proxy().await;
    env.proxy.state.cache.disk_ready().await;
    only_file(dir)
}

/// A flipped byte or a truncated file on disk: the client gets the origin's bytes and
/// the file is written again (a HIT from disk after the next restart).
#[tokio::test]
async fn a_corrupt_or_truncated_disk_file_is_a_miss_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let body = Bytes::from(pattern(200_000, 5));
    let file = &on_disk_only(&mut env, dir.path(), "c.png", &body).await;
    let url = |env: &Env| env.proxy.url("/test-images/c.png");
    let good = std::fs::read(file).unwrap();

    let mut flipped = good.clone();
    let at = flipped.len() - 50_000;
    flipped[at] ^= 0x20;
    std::fs::write(file, &flipped).unwrap();
    let r = get(&url(&env)).await;
    assert_eq!(
        r.bytes(),
        &body,
        "the origin's bytes, never the flipped ones"
    );
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(env.gets(), 2);
    assert_eq!(
        metric(&env.proxy, "bucketfront_disk_corrupt_total").await,
        1.0
    );
    env.restart_proxy().await;
    let rewritten = std::fs::read(file).unwrap();
    assert!(
        rewritten.len() == good.len() && rewritten.ends_with(&body),
        "rewritten whole (new fetch time, same bytes)"
    );
    assert_eq!(get(&url(&env)).await.header("x-cache"), Some("HIT"));
    assert_eq!(env.gets(), 2);

    env.restart_proxy().await;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(good.len() as u64 - 1).unwrap();
    let r = get(&url(&env)).await;
    assert_eq!(r.bytes(), &body);
    assert_eq!(env.gets(), 3);
    env.stop().await;
}

/// A disk path that cannot be used (here: a file where the directory should be) leaves
/// the proxy serving from memory, says so in a metric, and fails no request.
#[tokio::test]
async fn an_unusable_disk_path_degrades_to_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"in the way").unwrap();
    let env = Env::with(with_disk(&not_a_dir)).await;
    env.put("test-images", "m.png", pattern(5000, 1), "image/png")
        .await;
    let url = env.proxy.url("/test-images/m.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    assert_eq!(get(&url).await.header("x-cache"), Some("HIT"));
    assert_eq!(metric(&env.proxy, "bucketfront_disk_up").await, 0.0);
    assert!(metric(&env.proxy, "bucketfront_disk_errors_total{op=\"write\"}").await >= 1.0);
    assert_eq!(env.gets(), 1);
    env.stop().await;
}

/// An object found on disk after its `ttl` is revalidated with `If-None-Match`: a 304,
/// no body download, and the copy from disk is served.
#[tokio::test]
async fn an_expired_disk_entry_is_revalidated_not_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(pattern(50_000, 8));
    let origin = FakeOrigin::start(vec![
        Behaviour::Raw {
            head: format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nETag: \"r1\"",
                body.len()
            ),
            body: body.clone(),
        },
        Behaviour::Raw {
            head: "HTTP/1.1 304 Not Modified\r\nETag: \"r1\"".into(),
            body: Bytes::new(),
        },
    ])
    .await;
    let mut config = fake_config(&origin.endpoint);
    with_disk(dir.path())(&mut config, "");
    config.cache.ttl = Dur::secs(60);
    config.cache.stale_while_revalidate = Dur::secs(0);
    let proxy = Proxy::start(config.clone(), None).await;
    let url = |p: &Proxy| p.url("/test-fake/r.png");
    assert_eq!(get(&url(&proxy)).await.header("x-cache"), Some("MISS"));
    proxy.stop().await;

    let proxy = Proxy::start(config, None).await;
    proxy.state.clock.advance(Duration::from_secs(61));
    let r = get(&url(&proxy)).await;
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(r.bytes(), &body);
    assert_eq!(origin.count(), 2, "one conditional GET");
    assert!(
        origin.heads.lock().unwrap()[1]
            .to_lowercase()
            .contains("if-none-match: \"r1\"")
    );
    assert_eq!(get(&url(&proxy)).await.header("x-cache"), Some("HIT"));
    proxy.stop().await;
}

/// The disk failing while the proxy runs (here: its `tmp/` replaced by a file, so every
/// write fails): `bucketfront_disk_up` turns 0, errors are counted, and every request is
/// still answered, from memory and the origin.
#[tokio::test]
async fn a_disk_failing_at_run_time_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::with(with_disk(dir.path())).await;
    for k in ["a.png", "b.png"] {
        env.put("test-images", k, pattern(20_000, 2), "image/png")
            .await;
    }
    let url = |k: &str| env.proxy.url(&format!("/test-images/{k}"));
    assert_eq!(get(&url("a.png")).await.header("x-cache"), Some("MISS"));
    assert_eq!(metric(&env.proxy, "bucketfront_disk_up").await, 1.0);
    env.proxy.state.cache.flush().await;
    let tmp = dir.path().join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"in the way").unwrap();

    let r = get(&url("b.png")).await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-cache")),
        (200, Some("MISS"))
    );
    env.proxy.state.cache.flush().await;
    assert_eq!(metric(&env.proxy, "bucketfront_disk_up").await, 0.0);
    assert_eq!(
        metric(&env.proxy, "bucketfront_disk_errors_total{op=\"write\"}").await,
        1.0
    );
    for k in ["a.png", "b.png"] {
        let r = get(&url(k)).await;
        assert_eq!((r.status.as_u16(), r.header("x-cache")), (200, Some("HIT")));
        assert_eq!(r.bytes().as_ref(), pattern(20_000, 2));
    }
    assert_eq!(env.gets(), 2);
    env.stop().await;
}

/// A purged object's file goes with it: after a restart it is fetched again, while an
/// object that was not purged is still a HIT from disk.
#[tokio::test]
async fn a_purged_object_does_not_come_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    for k in ["cats/1.png", "dogs/1.png"] {
        env.put("test-images", k, pattern(3000, 7), "image/png")
            .await;
        assert_eq!(
            get(&env.proxy.url(&format!("/test-images/{k}")))
                .await
                .header("x-cache"),
            Some("MISS")
        );
    }
    env.proxy.state.cache.flush().await;
    let admin = format!("http://{}/purge", env.proxy.admin);
    let (status, body) = post_json(&admin, r#"{"bucket": "test-images", "prefix": "cats/"}"#).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)));
    env.restart_proxy().await;
    let url = |k: &str| env.proxy.url(&format!("/test-images/{k}"));
    assert_eq!(get(&url("dogs/1.png")).await.header("x-cache"), Some("HIT"));
    assert_eq!(
        get(&url("cats/1.png")).await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(env.gets(), 3);
    env.stop().await;
}

/// Objects of 128 KiB up to one block found on disk by a plain HTTP/1 request are sent
/// from their file (`sendfile`, after the block is checked) and not kept in memory:
/// whole, a range of them, a `304`, and two pipelined on one connection each get exactly
/// their bytes.
#[tokio::test]
async fn a_disk_hit_over_plain_http1_is_sent_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let (a, b) = (
        Bytes::from(pattern(250_000, 5)),
        Bytes::from(pattern(200_000, 6)),
    );
    for (k, body) in [("a.png", &a), ("b.png", &b)] {
        env.put("test-images", k, body.clone(), "image/png").await;
        let r = get(&env.proxy.url(&format!("/test-images/{k}"))).await;
        assert_eq!(r.header("x-cache"), Some("MISS"));
    }
    env.restart_proxy().await;
    env.proxy.state.cache.disk_ready().await;
    let url = env.proxy.url("/test-images/a.png");

    let whole = get(&url).await;
    assert_eq!(whole.header("x-cache"), Some("HIT"));
    assert_eq!(whole.header("content-length"), Some("250000"));
    assert!(whole.bytes() == &a);
    let part = get_with(&url, &[("range", "bytes=100000-200000")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 100000-200000/250000")
    );
    assert!(part.bytes() == &a.slice(100_000..=200_000));
    let etag = whole.header("etag").unwrap();
    let not_modified = get_with(&url, &[("if-none-match", etag)]).await;
    assert_eq!(not_modified.status, 304);

    let mut tcp = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    let ask = |k: &str, last: bool| {
        let close = if last { "connection: close\r\n" } else { "" };
        format!("GET /test-images/{k} HTTP/1.1\r\nhost: localhost\r\n{close}\r\n")
    };
    let both = ask("a.png", false) + &ask("b.png", true);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, both.as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut raw)
        .await
        .unwrap();
    let mut rest = &raw[..];
    for body in [&a, &b] {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(used) = head.parse(rest).unwrap() else {
            panic!("a whole head");
        };
        assert_eq!(head.code, Some(200));
        rest = &rest[used..];
        assert!(rest.len() >= body.len(), "a whole body");
        assert!(rest[..body.len()] == body[..], "exactly its bytes");
        rest = &rest[body.len()..];
    }
    assert!(rest.is_empty());

    let hits = |tier: &str| format!("bucketfront_cache_tier_hits_total{{tier=\"{tier}\"}}");
    assert_eq!(metric(&env.proxy, &hits("disk")).await, 5.0);
    assert_eq!(metric(&env.proxy, &hits("memory")).await, 0.0);
    env.stop().await;
}

/// A bad block in an object sent from its file is found before the answer starts: a
/// miss (the origin's bytes, whole), never a cut transfer; the file is removed.
#[tokio::test]
async fn a_bad_block_in_an_object_sent_from_its_file_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let body = Bytes::from(pattern(250_000, 7));
    on_disk_only(&mut env, dir.path(), "c.png", &body).await;
    flip_in_block(dir.path(), body.len(), 0);
    let gets = env.gets();
    let r = get(&env.proxy.url("/test-images/c.png")).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert!(r.bytes() == &body);
    assert_eq!(env.gets(), gets + 1);
    assert_eq!(
        metric(&env.proxy, "bucketfront_disk_corrupt_total").await,
        1.0
    );
    env.stop().await;
}

/// A `304` for an object that would be sent from its file reads only the file's header:
/// its body is not checked, since none is sent. With a bad block in the body, the `304` is
/// still a disk hit, with no origin request and nothing found corrupt; the next request
/// that needs the body finds the bad block (a miss, the origin's bytes).
#[tokio::test]
async fn a_304_for_an_object_sent_from_its_file_does_not_read_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let body = Bytes::from(pattern(250_000, 8));
    on_disk_only(&mut env, dir.path(), "d.png", &body).await;
    flip_in_block(dir.path(), body.len(), 0);
    let (gets, url) = (env.gets(), env.proxy.url("/test-images/d.png"));
    let corrupt = "bucketfront_disk_corrupt_total";

    let not_modified = get_with(&url, &[("if-none-match", "*")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("x-cache"), Some("HIT"));
    assert!(not_modified.bytes().is_empty());
    assert_eq!(env.gets(), gets, "no origin request");
    assert_eq!(
        metric(&env.proxy, corrupt).await,
        0.0,
        "the body was not read"
    );

    let whole = get(&url).await;
    assert_eq!(whole.header("x-cache"), Some("MISS"));
    assert!(whole.bytes() == &body);
    assert_eq!(env.gets(), gets + 1);
    assert_eq!(metric(&env.proxy, corrupt).await, 1.0);
    env.stop().await;
}

/// A `200` from a [`FakeOrigin`] with ETag `etag` and `body`.
fn full(etag: &str, body: &Bytes) -> Behaviour {
    Behaviour::Raw {
        head: format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nETag: \"{etag}\"",
            body.len()
        ),
        body: body.clone(),
    }
}

/// A `206` from a [`FakeOrigin`]: `body` from byte `from` on, as ETag `etag`.
fn partial(etag: &str, from: usize, total: usize, body: Bytes) -> Behaviour {
    Behaviour::Raw {
        head: format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: image/png\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{total}\r\nETag: \"{etag}\"",
            body.len(),
            total - 1
        ),
        body,
    }
}

/// Flips one byte of the body block `block` in the only file under `dir`'s objects.
fn flip_in_block(dir: &std::path::Path, body_len: usize, block: usize) {
    let file = only_file(dir);
    let mut raw = std::fs::read(&file).unwrap();
    let at = raw.len() - body_len + block * BLOCK as usize + 100;
    raw[at] ^= 0x08;
    std::fs::write(&file, raw).unwrap();
}

/// A large object streams from its disk file block by block; a block found bad half-way
/// (after the headers and the good blocks were sent) is replaced by the origin's bytes:
/// the rest of the same version, asked for with `Range` and `If-Match`. The client gets
/// the right bytes, whole, and the file is written again.
#[tokio::test]
async fn a_bad_block_mid_body_is_replaced_by_the_rest_from_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(pattern((1 << 20) + 1000, 9));
    let good = 2 * BLOCK as usize;
    let origin = FakeOrigin::start(vec![
        full("v1", &body),
        partial("v1", good, body.len(), body.slice(good..)),
    ])
    .await;
    let mut config = fake_config(&origin.endpoint);
    with_disk(dir.path())(&mut config, "");
    let proxy = Proxy::start(config.clone(), None).await;
    let url = |p: &Proxy| p.url("/test-fake/big.png");
    assert_eq!(get(&url(&proxy)).await.header("x-cache"), Some("MISS"));
    proxy.stop().await;

    flip_in_block(dir.path(), body.len(), 2);
    let proxy = Proxy::start(config.clone(), None).await;
    let r = get(&url(&proxy)).await;
    assert_eq!(r.header("x-cache"), Some("HIT"), "headers sent from disk");
    assert!(r.bytes() == &body, "the origin's bytes after the bad block");
    assert_eq!(origin.count(), 2);
    let resumed = origin.heads.lock().unwrap()[1].to_lowercase();
    assert!(
        resumed.contains(&format!("range: bytes={good}-")),
        "{resumed}"
    );
    assert!(resumed.contains("if-match: \"v1\""), "{resumed}");
    assert_eq!(metric(&proxy, "bucketfront_disk_corrupt_total").await, 1.0);
    assert_eq!(get(&url(&proxy)).await.header("x-cache"), Some("HIT"));
    proxy.stop().await;

    // Written again whole: the next start serves it from disk with no origin request.
    let proxy = Proxy::start(config, None).await;
    let r = get(&url(&proxy)).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.bytes() == &body);
    assert_eq!(origin.count(), 2);
    proxy.stop().await;
}

/// When the origin cannot give the rest of the same version (it answers 412 to
/// `If-Match`, or a store that ignores `If-Match` sends another version's bytes), the
/// transfer is cut: the client never gets a body made of two versions. The file is gone,
/// so the next request is an ordinary miss.
#[tokio::test]
async fn a_bad_block_mid_body_without_the_same_version_upstream_cuts_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(pattern(700_000, 10));
    let good = 2 * BLOCK as usize;
    let origin = FakeOrigin::start(vec![
        full("v1", &body),
        Behaviour::Raw {
            head: "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0".into(),
            body: Bytes::new(),
        },
        full("v1", &body),
        partial(
            "v2",
            good,
            body.len(),
            Bytes::from(pattern(body.len() - good, 11)),
        ),
    ])
    .await;
    let mut config = fake_config(&origin.endpoint);
    with_disk(dir.path())(&mut config, "");
    let url = |p: &Proxy| p.url("/test-fake/v.png");
    let proxy = Proxy::start(config.clone(), None).await;
    assert_eq!(get(&url(&proxy)).await.header("x-cache"), Some("MISS"));
    proxy.stop().await;

    for (attempt, refetch) in [(1, true), (3, false)] {
        flip_in_block(dir.path(), body.len(), 2);
        let proxy = Proxy::start(config.clone(), None).await;
        let r = get(&url(&proxy)).await;
        assert_eq!(r.status, 200, "headers were sent before the bad block");
        assert!(
            r.body.is_err(),
            "attempt {attempt}: a cut transfer, not a mixed body"
        );
        assert_eq!(origin.count(), attempt + 1);
        if refetch {
            // No file, nothing in memory: fetched again, whole.
            let r = get(&url(&proxy)).await;
            assert_eq!(r.header("x-cache"), Some("MISS"));
            assert!(r.bytes() == &body);
        }
        proxy.stop().await;
    }
}

/// The real binary as a service manager runs it: what it cached before SIGTERM is a HIT
/// after a new start on the same disk path, and the origin sees no GET for it (small
/// objects and ones that stream from disk block by block).
#[tokio::test]
async fn after_sigterm_and_a_new_start_cached_objects_are_hits_without_an_origin_get() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let objects: Vec<(String, Bytes)> = [(3_000, 1), (300_000, 2), (700_000, 3)]
        .into_iter()
        .map(|(len, seed)| (format!("svc/{len}.png"), Bytes::from(pattern(len, seed))))
        .collect();
    for (key, body) in &objects {
        env.put("test-images", key, body.clone(), "image/png").await;
    }
    let start = || {
        let disk = format!(
            "[cache.disk]\npath = \"{}\"\nmax_size = \"1GiB\"",
            dir.path().join("cache").display()
        );
        let (child, port, _) = serve_child(
            dir.path(),
            &env.store.endpoint,
            "drain_timeout = \"2s\"",
            &disk,
        );
        (child, port)
    };
    let stop = |child: Reaped| async move {
        signal(child.id(), "-TERM");
        let status = tokio::task::spawn_blocking(move || child.take().wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    };

    let (child, port) = start();
    accepting(port, "bucketfront").await;
    for (key, body) in &objects {
        let r = get(&format!("http://127.0.0.1:{port}/test-images/{key}")).await;
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert!(r.bytes() == body);
    }
    stop(child).await;
    let gets = env.gets();

    let (child, port) = start();
    accepting(port, "bucketfront").await;
    for (key, body) in &objects {
        let r = get(&format!("http://127.0.0.1:{port}/test-images/{key}")).await;
        assert_eq!(r.header("x-cache"), Some("HIT"), "{key}");
        assert!(r.bytes() == body, "{key}");
    }
    assert_eq!(env.gets(), gets, "no origin GET after the restart");
    stop(child).await;
    env.stop().await;
}

/// A disk that hangs (here the object's file replaced by a named pipe nobody writes:
/// opening it blocks, as a read from a stalled volume does) fails no request: the read is
/// given up after its deadline and the origin answers; reads pause, and the metrics say so.
#[tokio::test]
async fn a_hung_disk_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    let body = Bytes::from(pattern(20_000, 12));
    let pipe = on_disk_only(&mut env, dir.path(), "h.png", &body).await;
    let url = |env: &Env| env.proxy.url("/test-images/h.png");
    std::fs::remove_file(&pipe).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&pipe).status();
    assert!(made.unwrap().success());

    let r = get(&url(&env)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("MISS"), "from the origin");
    assert!(r.bytes() == &body);
    assert_eq!(env.gets(), 2);
    assert_eq!(metric(&env.proxy, "bucketfront_disk_up").await, 0.0);
    assert_eq!(
        metric(&env.proxy, "bucketfront_disk_errors_total{op=\"read\"}").await,
        1.0
    );
    // The disk answers at last; the thread blocked on it ends. (Non-blocking: with no
    // reader left, this open fails instead of waiting for one.)
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&pipe);
    env.stop().await;
}
