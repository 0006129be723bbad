//! RFC 9111 conformance, from outside: a real origin peer on loopback answers each case
//! with the framing and header fields the case needs, and the proxy's answers (and the
//! requests the origin sees) are checked against the rule, whose section each test
//! names. The pure rules are table-tested in `src/object.rs` and `src/cache/freshness.rs`;
//! this is the same ground walked through the whole request path.

mod common;

use std::time::{Duration, SystemTime};

use bucketfront::config::{Config, Dur, Size};
use bytes::Bytes;
use common::*;
use http::Method;

/// An HTTP date `offset` seconds from now (negative: in the past).
fn date(offset: i64) -> String {
    let now = SystemTime::now();
    let at = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// A `200` head for `len` bytes of `image/png` with ETag `"v1"` and `fields`.
fn ok(len: usize, fields: &[(&str, String)]) -> String {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len}\r\nETag: \"v1\""
    );
    for (name, value) in fields {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    head
}

fn answer(body: &[u8], fields: &[(&str, String)]) -> Behaviour {
    Behaviour::Raw {
        head: ok(body.len(), fields),
        body: Bytes::copy_from_slice(body),
    }
}

/// A `304` for ETag `"v1"` carrying `fields`.
fn not_modified(fields: &[(&str, String)]) -> Behaviour {
    let mut head = "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"".to_string();
    for (name, value) in fields {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    Behaviour::Raw {
        head,
        body: Bytes::new(),
    }
}

/// `body` in the chunked transfer coding, `size` bytes a chunk (RFC 9112 §7.1).
fn chunked(body: &[u8], size: usize) -> Bytes {
    let mut out = Vec::new();
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    Bytes::from(out)
}

const CHUNKED_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nETag: \"v1\"\r\nTransfer-Encoding: chunked";
/// No `Content-Length`, no `Transfer-Encoding`: the body ends when the connection does.
const CLOSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nETag: \"v1\"";

/// The shipped cache defaults (`stale_while_revalidate = "1m"` included, which the
/// harness's base config turns off) for tenant `t1` on the fake origin.
fn defaults(origin: &FakeOrigin) -> Config {
    let mut c = fake_config(&origin.endpoint);
    c.cache = Config::default().cache;
    c
}

async fn start(script: Vec<Behaviour>) -> (FakeOrigin, Proxy) {
    let origin = FakeOrigin::start(script).await;
    let proxy = Proxy::start(defaults(&origin), None).await;
    (origin, proxy)
}

fn advance(proxy: &Proxy, secs: u64) {
    proxy.state.clock.advance(Duration::from_secs(secs));
}

/// Contract §6, RFC 9112 §6.3 and §7.1: a body without `Content-Length` (chunked, or
/// delimited by the close) is delivered whole, and cached once it arrived whole.
#[tokio::test]
async fn bodies_without_a_length_are_delivered_whole_and_cached() {
    let body = pattern(300_000, 1);
    for framing in ["chunked", "close"] {
        let first = match framing {
            "chunked" => Behaviour::Raw {
                head: CHUNKED_HEAD.into(),
                body: chunked(&body, 7_000),
            },
            _ => Behaviour::Closing {
                head: CLOSE_HEAD.into(),
                body: Bytes::from(body.clone()),
            },
        };
        let (origin, proxy) = start(vec![first, Behaviour::Status(500)]).await;
        let url = proxy.url("/test-fake/unsized.png");
        let r = get(&url).await;
        assert_eq!(r.status, 200, "{framing}");
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert_eq!(r.bytes().as_ref(), body.as_slice(), "{framing}: whole");
        assert_ne!(r.header("content-length"), Some("0"), "{framing}");
        let hit = get(&url).await;
        assert_eq!(hit.header("x-cache"), Some("HIT"), "{framing}");
        assert_eq!(hit.header("content-length"), Some("300000"));
        assert_eq!(hit.bytes().as_ref(), body.as_slice());
        let part = get_with(&url, &[("range", "bytes=1000-1999")]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.bytes().as_ref(), &body[1000..2000]);
        assert_eq!(origin.count(), 1, "{framing}: one GET");
        proxy.stop().await;
    }
}

/// RFC 9112 §8: a chunked body without its last chunk is incomplete: the client sees a
/// broken transfer, and nothing is cached.
#[tokio::test]
async fn a_chunked_body_cut_short_is_not_cached() {
    let body = pattern(200_000, 2);
    let whole = chunked(&body, 10_000);
    let (origin, proxy) = start(vec![
        Behaviour::Closing {
            head: CHUNKED_HEAD.into(),
            body: whole.slice(..whole.len() / 2),
        },
        Behaviour::Raw {
            head: CHUNKED_HEAD.into(),
            body: whole.clone(),
        },
    ])
    .await;
    let url = proxy.url("/test-fake/cut.png");
    let r = get(&url).await;
    assert!(r.body.is_err(), "a broken transfer, not a short 200");
    let again = get(&url).await;
    assert_eq!(again.header("x-cache"), Some("MISS"));
    assert_eq!(again.bytes().as_ref(), body.as_slice());
    assert_eq!(origin.count(), 2);
    assert_eq!(get(&url).await.header("x-cache"), Some("HIT"));
    proxy.stop().await;
}

/// A body of unknown length larger than `max_object_size` reaches its clients whole and
/// is not kept; later requests stream from the origin (`BYPASS`). `HEAD` and `Range`,
/// which need the length, wait for a body of unknown length that will be kept.
#[tokio::test]
async fn an_unsized_body_over_max_object_size_streams_whole_uncached() {
    let big = pattern(1 << 20, 3);
    let origin = FakeOrigin::start(vec![Behaviour::Raw {
        head: CHUNKED_HEAD.into(),
        body: chunked(&big, 16 << 10),
    }])
    .await;
    let mut config = defaults(&origin);
    config.cache.max_object_size = Size(256 << 10);
    let proxy = Proxy::start(config, None).await;
    let url = proxy.url("/test-fake/big.png");
    let first = get(&url).await;
    assert_eq!(first.bytes().as_ref(), big.as_slice(), "never truncated");
    let second = get(&url).await;
    assert_eq!(second.header("x-cache"), Some("BYPASS"));
    assert_eq!(second.bytes().as_ref(), big.as_slice());
    assert_eq!(origin.count(), 2);
    proxy.stop().await;

    let small = pattern(50_000, 4);
    let (origin, proxy) = start(vec![Behaviour::Raw {
        head: CHUNKED_HEAD.into(),
        body: chunked(&small, 4_000),
    }])
    .await;
    let url = proxy.url("/test-fake/small.png");
    let part = get_with(&url, &[("range", "bytes=-100")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 49900-49999/50000")
    );
    assert_eq!(part.bytes().as_ref(), &small[49_900..]);
    let head = request(Method::HEAD, &url, &[]).await;
    assert_eq!(head.header("content-length"), Some("50000"));
    assert_eq!(origin.count(), 1);
    proxy.stop().await;
}

/// The disk tier keeps a body that came without a length, with its length, across a
/// restart.
#[tokio::test]
async fn an_unsized_body_is_kept_on_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(700_000, 5);
    let origin = FakeOrigin::start(vec![
        Behaviour::Raw {
            head: CHUNKED_HEAD.into(),
            body: chunked(&body, 32_000),
        },
        Behaviour::Status(500),
    ])
    .await;
    let mut config = defaults(&origin);
    with_disk(dir.path())(&mut config, "");
    let proxy = Proxy::start(config.clone(), None).await;
    let url = proxy.url("/test-fake/disk.png");
    assert_eq!(get(&url).await.bytes().as_ref(), body.as_slice());
    proxy.stop().await;
    let proxy = Proxy::start(config, None).await;
    proxy.state.cache.disk_ready().await;
    let r = get(&proxy.url("/test-fake/disk.png")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("content-length"), Some("700000"));
    assert_eq!(r.bytes().as_ref(), body.as_slice());
    assert_eq!(origin.count(), 1);
    proxy.stop().await;
}

/// A variant's source that arrives without a length is rendered like any other.
#[tokio::test]
async fn a_variant_of_an_unsized_source() {
    let png = bucketfront::samples::png(&bucketfront::samples::picture(300, 200), None);
    let (origin, proxy) = start(vec![Behaviour::Raw {
        head: CHUNKED_HEAD.into(),
        body: chunked(&png, 5_000),
    }])
    .await;
    let r = get(&proxy.url("/test-fake/pic.png?w=64&fmt=png")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("image/png"));
    let source = get(&proxy.url("/test-fake/pic.png")).await;
    assert_eq!(source.header("x-cache"), Some("HIT"));
    assert_eq!(source.bytes().as_ref(), png.as_slice());
    assert_eq!(origin.count(), 1);
    proxy.stop().await;
}

/// Contract §6 and RFC 5861: the config's `stale_while_revalidate` is for objects with
/// no freshness of their own. Each of these the owner marked expired (§4.2.1, §5.3): the
/// origin is asked before the copy is used again, never `STALE`.
#[tokio::test]
async fn objects_marked_expired_are_never_served_stale() {
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("max-age=0", vec![("Cache-Control", "max-age=0".into())]),
        ("Expires in the past", vec![("Expires", date(-60))]),
        (
            "Expires equal to Date",
            vec![("Date", date(0)), ("Expires", date(0))],
        ),
        (
            "negative max-age",
            vec![("Cache-Control", "max-age=-1".into())],
        ),
        (
            "quoted max-age",
            vec![("Cache-Control", "max-age=\"60\"".into())],
        ),
        ("invalid Expires", vec![("Expires", "0".into())]),
    ];
    for (case, fields) in cases {
        let (origin, proxy) = start(vec![answer(b"expired", &fields), not_modified(&[])]).await;
        let url = proxy.url("/test-fake/expired.png");
        let first = get(&url).await;
        assert_eq!(first.header("x-cache"), Some("MISS"), "{case}");
        assert!(
            first.header("cache-control").unwrap().contains("max-age=0"),
            "{case}: {:?}",
            first.header("cache-control")
        );
        advance(&proxy, 1);
        let second = get(&url).await;
        assert_eq!(second.header("x-cache"), Some("REVALIDATED"), "{case}");
        assert_eq!(second.bytes().as_ref(), b"expired");
        assert_eq!(origin.count(), 2, "{case}: asked before use");
        proxy.stop().await;
    }
}

/// §4.2.1 and §5.2.2.10: `s-maxage` is this shared cache's lifetime, over `max-age`.
#[tokio::test]
async fn s_maxage_shorter_than_max_age_is_the_lifetime() {
    let fields = [("Cache-Control", "max-age=3600, s-maxage=5".to_string())];
    let (origin, proxy) = start(vec![answer(b"short", &fields), not_modified(&[])]).await;
    let url = proxy.url("/test-fake/s.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    advance(&proxy, 3);
    assert_eq!(get(&url).await.header("x-cache"), Some("HIT"));
    advance(&proxy, 3);
    assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(origin.count(), 2);
    proxy.stop().await;
}

/// RFC 5861 §3: an object's own `stale-while-revalidate=N`, capped by the config.
#[tokio::test]
async fn an_objects_own_stale_while_revalidate_is_honoured_and_capped() {
    let fields = [(
        "Cache-Control",
        "max-age=1, stale-while-revalidate=600".to_string(),
    )];
    let (origin, proxy) = start(vec![
        answer(b"swr", &fields),
        answer(b"swr", &fields),
        answer(b"swr", &fields),
    ])
    .await;
    let url = proxy.url("/test-fake/swr.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    advance(&proxy, 30);
    assert_eq!(get(&url).await.header("x-cache"), Some("STALE"));
    let url_ = url.clone();
    eventually(
        Duration::from_secs(10),
        "the background revalidation stored its answer",
        || async { get(&url_).await.header("x-cache") == Some("HIT") },
    )
    .await;
    assert_eq!(origin.count(), 2);
    // The config caps the object's 600 s at 60 s.
    advance(&proxy, 100);
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    assert_eq!(origin.count(), 3);
    proxy.stop().await;
}

/// §4.2.4, §5.2.2.10 and RFC 5861 §4: while the origin fails, an expired copy is served
/// only as far as the object allows: its own `stale-if-error=N` (or, with no freshness
/// of its own, the config's), never past `s-maxage`, `must-revalidate` or `no-cache`.
#[tokio::test]
async fn stale_if_error_as_far_as_the_object_allows() {
    let cases = [
        ("max-age=2, stale-if-error=600", true),
        ("", true),
        ("max-age=2", false),
        ("max-age=2, s-maxage=2, stale-if-error=600", false),
        ("max-age=2, must-revalidate, stale-if-error=600", false),
        ("no-cache, stale-if-error=600", false),
    ];
    for (cc, stale) in cases {
        let fields: Vec<(&str, String)> = if cc.is_empty() {
            vec![]
        } else {
            vec![("Cache-Control", cc.to_string())]
        };
        let origin = FakeOrigin::start(vec![answer(b"old", &fields), Behaviour::Status(503)]).await;
        let mut config = defaults(&origin);
        config.cache.ttl = Dur::secs(10);
        let proxy = Proxy::start(config, None).await;
        let url = proxy.url("/test-fake/sie.png");
        assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
        // Past every lifetime here (at most the 10 s ttl) and the config's 60 s
        // stale-while-revalidate, within its hour of stale-if-error.
        advance(&proxy, 100);
        let r = get(&url).await;
        if stale {
            assert_eq!(r.header("x-cache"), Some("STALE"), "{cc:?}");
            assert_eq!(r.bytes().as_ref(), b"old");
        } else {
            assert_eq!(r.status, 502, "{cc:?}: {:?}", r.header("x-cache"));
        }
        assert_eq!(origin.count(), 2, "{cc:?}");
        proxy.stop().await;
    }
}

/// §4.3.4: a `304` updates the stored header fields it carries, and the new lifetime is
/// used at once; in memory and in the disk file.
#[tokio::test]
async fn a_304_updates_the_stored_entry() {
    let dir = tempfile::tempdir().unwrap();
    let expires = date(7200);
    let (origin, proxy) = {
        let origin = FakeOrigin::start(vec![
            answer(b"updated", &[("Cache-Control", "max-age=1".into())]),
            not_modified(&[
                ("Cache-Control", "max-age=3600".into()),
                ("Expires", expires.clone()),
                ("Content-Type", "image/webp".into()),
            ]),
            Behaviour::Status(500),
        ])
        .await;
        let mut config = defaults(&origin);
        with_disk(dir.path())(&mut config, "");
        let proxy = Proxy::start(config, None).await;
        (origin, proxy)
    };
    let url = proxy.url("/test-fake/u.png");
    assert_eq!(get(&url).await.header("content-type"), Some("image/png"));
    advance(&proxy, 2);
    let r = get(&url).await;
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(r.header("expires"), Some(expires.as_str()));
    assert_eq!(r.header("cache-control"), Some("private, max-age=3600"));
    assert!(
        origin.heads.lock().unwrap()[1]
            .to_ascii_lowercase()
            .contains("if-none-match: \"v1\"")
    );
    // The new lifetime at once: no origin request for the next hour.
    for _ in 0..5 {
        advance(&proxy, 60);
        let r = get(&url).await;
        assert_eq!(r.header("x-cache"), Some("HIT"));
        assert_eq!(r.header("content-type"), Some("image/webp"));
    }
    assert_eq!(origin.count(), 2);
    // The disk file's metadata too: a new process reads the updated entry.
    let config = Config::clone(&proxy.state.config);
    proxy.stop().await;
    let proxy = Proxy::start(config, None).await;
    proxy.state.cache.disk_ready().await;
    let r = get(&proxy.url("/test-fake/u.png")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(r.header("expires"), Some(expires.as_str()));
    assert_eq!(origin.count(), 2);
    proxy.stop().await;
}

/// §4.3.4: a `304` naming another strong validator is not about the stored copy: the
/// object is fetched again, whole.
#[tokio::test]
async fn a_304_for_another_version_updates_nothing() {
    let (origin, proxy) = start(vec![
        answer(b"first", &[("Cache-Control", "max-age=1".into())]),
        Behaviour::Raw {
            head: "HTTP/1.1 304 Not Modified\r\nETag: \"v2\"".into(),
            body: Bytes::new(),
        },
        Behaviour::Raw {
            head: "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 6\r\nETag: \"v2\""
                .into(),
            body: Bytes::from_static(b"second"),
        },
    ])
    .await;
    let url = proxy.url("/test-fake/v.png");
    assert_eq!(get(&url).await.bytes().as_ref(), b"first");
    advance(&proxy, 2);
    let r = get(&url).await;
    assert_eq!(r.bytes().as_ref(), b"second");
    assert_eq!(r.header("etag"), Some("\"v2\""));
    assert_eq!(origin.count(), 3);
    proxy.stop().await;
}

/// §4.2.3: the age counts from the origin's `Date` (and its `Age`), not from when the
/// copy was stored; §4.2.1: `Expires` is measured from `Date`.
#[tokio::test]
async fn age_counts_from_the_origins_date() {
    // Expires 300 s after the origin's now, Date 400 s after it: already stale.
    let fields = [("Date", date(400)), ("Expires", date(300))];
    let (origin, proxy) = start(vec![answer(b"dated", &fields), not_modified(&[])]).await;
    let url = proxy.url("/test-fake/d.png");
    let first = get(&url).await;
    assert!(
        first.header("cache-control").unwrap().contains("max-age=0"),
        "{:?}",
        first.header("cache-control")
    );
    assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
    proxy.stop().await;
    drop(origin);

    // Sent 100 s ago: 100 s of its 300 s are gone before it arrives.
    let fields = [
        ("Date", date(-100)),
        ("Cache-Control", "max-age=300".into()),
    ];
    let (origin, proxy) = start(vec![answer(b"aged", &fields), not_modified(&[])]).await;
    let url = proxy.url("/test-fake/a.png");
    let first = get(&url).await;
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!((100..=102).contains(&age), "Age {age} on the MISS");
    advance(&proxy, 150);
    let hit = get(&url).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((250..=252).contains(&age), "Age {age} on the HIT");
    advance(&proxy, 60);
    assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(origin.count(), 2);
    proxy.stop().await;

    // An upstream cache's Age counts too.
    let fields = [("Age", "50".into()), ("Cache-Control", "max-age=60".into())];
    let (_origin, proxy) = start(vec![answer(b"relayed", &fields), not_modified(&[])]).await;
    let url = proxy.url("/test-fake/r.png");
    assert_eq!(get(&url).await.header("age"), Some("50"));
    advance(&proxy, 15);
    assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
    proxy.stop().await;
}

/// RFC 9110 §5.3: field lines of one name are one comma-separated list. Here the second
/// line makes the object expire at once; read as one list, it is revalidated.
#[tokio::test]
async fn repeated_cache_control_lines_are_one_list() {
    let (origin, proxy) = start(vec![
        Behaviour::Raw {
            head: format!(
                "{}\r\nCache-Control: max-age=0",
                ok(5, &[("Cache-Control", "public".into())])
            ),
            body: Bytes::from_static(b"whole"),
        },
        not_modified(&[]),
    ])
    .await;
    let url = proxy.url("/test-fake/two.png");
    let r = get(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes().as_ref(), b"whole");
    assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(origin.count(), 2);
    proxy.stop().await;
}

/// §4 and RFC 9110 §6.6.1: a cached answer is the stored response: its `Date` and
/// `Expires` as stored, with `Age`; a `304` repeats them (RFC 9110 §15.4.5).
#[tokio::test]
async fn date_and_expires_are_passed_on_as_stored() {
    let (sent, expires) = (date(-2), date(3000));
    let fields = [("Date", sent.clone()), ("Expires", expires.clone())];
    let (_origin, proxy) = start(vec![answer(b"stored", &fields)]).await;
    let url = proxy.url("/test-fake/date.png");
    let miss = get(&url).await;
    assert_eq!(miss.header("date"), Some(sent.as_str()));
    assert_eq!(miss.header("expires"), Some(expires.as_str()));
    advance(&proxy, 30);
    let hit = get(&url).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("date"), Some(sent.as_str()), "not regenerated");
    assert_eq!(hit.header("expires"), Some(expires.as_str()));
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((32..=34).contains(&age), "Age {age}");
    let revalidated = get_with(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("date"), Some(sent.as_str()));
    assert_eq!(revalidated.header("expires"), Some(expires.as_str()));
    proxy.stop().await;
}

/// RFC 9110 §13.1.2: `If-None-Match` matches the stored ETag whether or not either side
/// quoted it (the weak comparison).
#[tokio::test]
async fn if_none_match_with_or_without_quotes() {
    let (_origin, proxy) = start(vec![Behaviour::Raw {
        head: "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 4\r\nETag: bare"
            .into(),
        body: Bytes::from_static(b"bare"),
    }])
    .await;
    let url = proxy.url("/test-fake/q.png");
    assert_eq!(get(&url).await.status, 200);
    for inm in ["\"bare\"", "bare", "W/\"bare\"", "\"x\", bare"] {
        let r = get_with(&url, &[("if-none-match", inm)]).await;
        assert_eq!(r.status, 304, "{inm}");
    }
    proxy.stop().await;
}

/// §5.2.2.4: `no-cache` is stored and revalidated before every use, even with the
/// config's `stale_while_revalidate`.
#[tokio::test]
async fn no_cache_is_revalidated_before_every_use() {
    let fields = [("Cache-Control", "no-cache".to_string())];
    let (origin, proxy) = start(vec![answer(b"nc", &fields), not_modified(&[])]).await;
    let url = proxy.url("/test-fake/nc.png");
    assert_eq!(get(&url).await.header("x-cache"), Some("MISS"));
    for n in 2..5 {
        assert_eq!(get(&url).await.header("x-cache"), Some("REVALIDATED"));
        assert_eq!(origin.count(), n);
    }
    proxy.stop().await;
}

/// §5.2.2.5 and §5.2.2.7: `no-store` and `private` answers are passed on, never
/// stored; the second request goes to the origin again.
#[tokio::test]
async fn no_store_and_private_are_never_stored() {
    for cc in ["no-store", "private, max-age=600"] {
        let fields = [("Cache-Control", cc.to_string())];
        let (origin, proxy) = start(vec![answer(b"mine", &fields)]).await;
        let url = proxy.url("/test-fake/p.png");
        for _ in 0..2 {
            let r = get(&url).await;
            assert_eq!(r.header("x-cache"), Some("BYPASS"), "{cc}");
            assert_eq!(r.bytes().as_ref(), b"mine");
        }
        assert_eq!(origin.count(), 2, "{cc}");
        proxy.stop().await;
    }
}
