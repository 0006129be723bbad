//! Image variants through the proxy (docs/variants.md), against the embedded store:
//! rendered once and cached like originals, negotiated by `Accept`, covered by the
//! signature, refused with 422 for sources that cannot be rendered, and following their
//! source through purges and changes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bucketfront::samples;
use common::*;

fn photo() -> Vec<u8> {
    samples::jpeg(&samples::picture(1200, 800), 85, None, None)
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("a decodable image");
    (img.width(), img.height())
}

async fn renders(proxy: &Proxy) -> f64 {
    metric(
        proxy,
        "bucketfront_variant_renders_total{outcome=\"rendered\"}",
    )
    .await
}

#[tokio::test]
async fn a_variant_is_rendered_once_for_concurrent_requests_and_then_cached() {
    let env = Env::start().await;
    env.put("test-images", "p.jpg", photo(), "image/jpeg").await;
    let url = Arc::new(env.proxy.url("/test-images/p.jpg?w=256&fmt=webp"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("content-type"), Some("image/webp"));
        bodies.push(r.bytes().clone());
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "one render, one answer"
    );
    assert_eq!(
        image::guess_format(&bodies[0]).unwrap(),
        image::ImageFormat::WebP
    );
    assert_eq!(dims(&bodies[0]), (256, 171));
    assert_eq!(env.gets(), 1, "one origin GET");
    assert_eq!(renders(&env.proxy).await, 1.0, "one render");

    let hit = get(&url).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert!(hit.header("age").is_some());
    assert_eq!(hit.bytes(), &bodies[0]);
    // Another variant and the original: from the source already in the cache.
    let small = get(&env.proxy.url("/test-images/p.jpg?w=64")).await;
    assert_eq!(small.header("content-type"), Some("image/jpeg"));
    assert_eq!(dims(small.bytes()), (64, 43));
    let original = get(&env.proxy.url("/test-images/p.jpg")).await;
    assert_eq!(original.header("x-cache"), Some("HIT"));
    assert_eq!(original.bytes().as_ref(), photo().as_slice());
    assert_eq!(env.gets(), 1, "still one origin GET");
    // Ranges and HEAD work on variants as on objects.
    let range = get_with(&url, &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.bytes().as_ref(), &bodies[0][..10]);
    let head = request(http::Method::HEAD, &url, &[]).await;
    assert_eq!(
        head.header("content-length"),
        Some(bodies[0].len().to_string().as_str())
    );
    assert!(head.bytes().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn fmt_auto_follows_accept_and_says_so_in_vary() {
    let env = Env::start().await;
    env.put("test-images", "a.jpg", photo(), "image/jpeg").await;
    let url = env.proxy.url("/test-images/a.jpg?w=128&fmt=auto");
    for (accept, want) in [
        (
            "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
            "image/webp",
        ),
        ("image/avif,image/*;q=0.8", "image/avif"),
        ("image/*,*/*;q=0.8", "image/jpeg"),
    ] {
        let r = get_with(&url, &[("accept", accept), ("origin", ALLOWED_ORIGIN)]).await;
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.header("content-type"), Some(want), "{accept}");
        let vary: Vec<&str> = r
            .headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert!(
            vary.contains(&"Accept") && vary.contains(&"Origin"),
            "{vary:?}"
        );
    }
    // A fixed format does not depend on Accept.
    let fixed = get(&env.proxy.url("/test-images/a.jpg?w=128&fmt=png")).await;
    assert!(fixed.headers.get_all("vary").iter().all(|v| v != "Accept"));
    env.stop().await;
}

#[tokio::test]
async fn the_signature_covers_the_variant() {
    let env = Env::start().await;
    env.put("sig-images", "s.jpg", photo(), "image/jpeg").await;
    let exp = in_an_hour();
    let signed = |variant: Option<&str>| {
        bucketfront::signed_variant_query(
            SIGNING_SECRET.as_bytes(),
            "sig-images",
            "s.jpg",
            exp,
            None,
            variant,
        )
    };
    let thumb = signed(Some("w=256&fmt=webp"));
    let ok = get(&env.proxy.url(&format!("/sig-images/s.jpg?{thumb}"))).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.header("content-type"), Some("image/webp"));
    // The original's signature does not cover a variant, nor one size another's.
    let plain = signed(None);
    for query in [
        format!("w=256&{plain}"),
        thumb.replace("w=256", "w=512"),
        thumb.replace("fmt=webp", "fmt=png"),
    ] {
        let r = get(&env.proxy.url(&format!("/sig-images/s.jpg?{query}"))).await;
        assert_eq!(r.status, 403, "{query}");
    }
    // A size not allowed is malformed: 400 before the signature is looked at.
    let r = get(&env.proxy.url("/sig-images/s.jpg?w=300")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    env.stop().await;
}

#[tokio::test]
async fn sources_without_a_variant_are_422_with_json() {
    let env = Env::with(|c, _| c.variants.max_source_pixels = 1_000_000).await;
    let mut corrupt = photo();
    corrupt.truncate(corrupt.len() / 3);
    env.put("test-images", "corrupt.jpg", corrupt.clone(), "image/jpeg")
        .await;
    env.put(
        "test-images",
        "anim.gif",
        samples::gif(32, 32, 3),
        "image/gif",
    )
    .await;
    let big = samples::jpeg(&samples::picture(1500, 1000), 70, None, None);
    env.put("test-images", "big.jpg", big, "image/jpeg").await;
    env.put("test-images", "icon.svg", "<svg/>", "image/svg+xml")
        .await;
    for key in ["corrupt.jpg", "anim.gif", "big.jpg", "icon.svg"] {
        let r = get(&env.proxy.url(&format!("/test-images/{key}?w=64"))).await;
        assert_eq!(r.status, 422, "{key}");
        assert_eq!(r.json()["error"], "unprocessable", "{key}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // The originals are still served as they are.
    let r = get(&env.proxy.url("/test-images/corrupt.jpg")).await;
    assert_eq!((r.status.as_u16(), r.bytes().len()), (200, corrupt.len()));
    let failed = "bucketfront_variant_renders_total{outcome=\"unprocessable\"}";
    assert_eq!(metric(&env.proxy, failed).await, 4.0);
    env.stop().await;
}

#[tokio::test]
async fn a_variant_follows_its_source_through_changes_and_purges() {
    let env = Env::start().await;
    let red = samples::jpeg(
        &image::RgbImage::from_pixel(400, 300, image::Rgb([250, 0, 0])),
        90,
        None,
        None,
    );
    let blue = samples::jpeg(
        &image::RgbImage::from_pixel(400, 300, image::Rgb([0, 0, 250])),
        90,
        None,
        None,
    );
    let url = env.proxy.url("/test-images/c.jpg?w=64&fmt=png");
    let center = |bytes: &[u8]| {
        *image::load_from_memory(bytes)
            .unwrap()
            .into_rgb8()
            .get_pixel(32, 24)
    };
    env.put("test-images", "c.jpg", red.clone(), "image/jpeg")
        .await;
    let first = get(&url).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert!(center(first.bytes())[0] > 200);
    let etag = first.header("etag").unwrap().to_string();

    // Expired, source unchanged: the source is revalidated, the variant kept (no render).
    let clock = &env.proxy.state.clock;
    clock.advance(Duration::from_secs(3601));
    let again = get(&url).await;
    assert_eq!(again.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(renders(&env.proxy).await, 1.0);
    assert_eq!(
        env.gets(),
        2,
        "one more GET: the conditional one (answered 304)"
    );

    // Expired, source changed: rendered again from the new source.
    env.put("test-images", "c.jpg", blue, "image/jpeg").await;
    clock.advance(Duration::from_secs(3601));
    let changed = get(&url).await;
    assert_eq!(changed.header("x-cache"), Some("MISS"));
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert!(center(changed.bytes())[2] > 200);

    // A purge of the object takes its variants with it.
    env.put("test-images", "c.jpg", red, "image/jpeg").await;
    let admin = format!("http://{}/purge", env.proxy.admin);
    let (status, body) = post_json(&admin, r#"{"bucket": "test-images", "key": "c.jpg"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(body["purged"], 2, "the object and its variant");
    let after = get(&url).await;
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert!(center(after.bytes())[0] > 200);
    env.stop().await;
}

#[tokio::test]
async fn variants_can_be_turned_off() {
    let env = Env::with(|c, _| c.variants.widths.clear()).await;
    env.put("test-images", "p.jpg", photo(), "image/jpeg").await;
    let r = get(&env.proxy.url("/test-images/p.jpg?fmt=webp")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("turned off"));
    env.stop().await;
}

#[tokio::test]
async fn bucketfront_sign_makes_variant_urls() {
    let env = Env::start().await;
    env.put("sig-images", "s.jpg", photo(), "image/jpeg").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[tenants]]\nname = \"signed\"\nbuckets = [\"sig-*\"]\nexpected_owner = \"111122223333\"\nsigning_keys = [{{ id = \"k1\", secret = \"{SIGNING_SECRET}\" }}]\n"
        ),
    )
    .unwrap();
    let sign = |variant: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bucketfront"))
            .args(["sign", "-c", config_path.to_str().unwrap()])
            .args([
                "--tenant",
                "signed",
                "--bucket",
                "sig-images",
                "--key",
                "s.jpg",
            ])
            .args(["--variant", variant, "--base", &env.proxy.url("")])
            .output()
            .unwrap()
    };
    let out = sign("w=256&fmt=webp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = get(&url).await;
    assert_eq!(r.status, 200, "{url}: {:?}", r.body);
    assert_eq!(r.header("content-type"), Some("image/webp"));
    for (bad, says) in [
        ("w=300", "allowed"),
        ("w=256&x=1", "only w, h"),
        ("", "give"),
    ] {
        let out = sign(bad);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad}: {err}");
    }
    env.stop().await;
}

/// A variant on disk is a HIT after a restart: no origin GET, no render.
#[tokio::test]
async fn variants_survive_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with(with_disk(dir.path())).await;
    env.put("test-images", "d.jpg", photo(), "image/jpeg").await;
    let path = "/test-images/d.jpg?w=128&fmt=webp";
    let first = get(&env.proxy.url(path)).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    env.restart_proxy().await;
    let gets = env.gets();
    let again = get(&env.proxy.url(path)).await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(again.bytes(), first.bytes());
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(env.gets(), gets, "no origin GET");
    assert_eq!(renders(&env.proxy).await, 0.0, "no render");
    env.stop().await;
}

/// A source that may not be stored (`no-store`) gives variants that are not stored either:
/// `BYPASS`, rendered again for each request, and `no-store` downstream. The `url=` form
/// asks for variants as the path form does.
#[tokio::test]
async fn a_source_that_may_not_be_stored_gives_unstored_variants() {
    let env = Env::start().await;
    env.store
        .client()
        .put_object()
        .bucket("test-images")
        .key("ns.jpg")
        .body(bytes::Bytes::from(photo()).into())
        .content_type("image/jpeg")
        .cache_control("no-store")
        .send()
        .await
        .unwrap();
    let url = env
        .proxy
        .url("/_/fetch?url=s3%3A%2F%2Ftest-images%2Fns.jpg&w=64&fmt=png");
    for _ in 0..2 {
        let r = get(&url).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("x-cache"), Some("BYPASS"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("content-type"), Some("image/png"));
    }
    assert_eq!(renders(&env.proxy).await, 2.0);
    assert_eq!(env.gets(), 2);
    env.stop().await;
}

/// An expired variant whose source has left the cache is served `STALE` while the origin
/// is down (as the object itself would be), not turned into an error.
#[tokio::test]
async fn a_stale_variant_is_served_while_the_origin_is_down() {
    use bucketfront::config::Size;
    let env = Env::with(|c, _| {
        c.cache.max_memory = Size(2 << 20);
        c.cache.max_object_size = Size(2 << 20);
    })
    .await;
    let big = samples::jpeg(&samples::picture(2400, 1800), 95, None, None);
    assert!(big.len() > 700 << 10, "{}", big.len());
    env.put("test-images", "src.jpg", big, "image/jpeg").await;
    let url = env.proxy.url("/test-images/src.jpg?w=64&fmt=webp");
    let first = get(&url).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    // Newer objects push the source (least recently used) out of the 2 MiB cache; the
    // small variant, used after it, stays.
    let filler = bytes::Bytes::from(pattern(700 << 10, 1));
    for i in 0..2 {
        let key = format!("filler-{i}.png");
        env.put("test-images", &key, filler.clone(), "image/png")
            .await;
        assert_eq!(
            get(&env.proxy.url(&format!("/test-images/{key}")))
                .await
                .status,
            200
        );
    }
    let cache = &env.proxy.state.cache;
    cache.maintain().await;
    assert_eq!(
        cache.entry_count(),
        3,
        "the source was evicted, the variant kept"
    );
    env.proxy.state.clock.advance(Duration::from_secs(3601));
    env.stop_store();
    let stale = get(&url).await;
    assert_eq!(stale.status, 200, "{:?}", stale.body);
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.bytes(), first.bytes());
    env.stop().await;
}

/// A render holds a ticket from before its source is fetched, `max_concurrent_renders`
/// × 4 of them, and `render_timeout` runs from when it gets one. The origin here answers
/// only when the test lets it, so the four ticket holders are certainly still waiting on
/// their source when the fifth gives up (503), and past their own deadline once it
/// arrives (503 without a render): no timing luck either way. The source they waited for
/// is cached, so a retry would not wait again.
#[tokio::test]
async fn renders_that_wait_past_render_timeout_are_503_and_the_source_is_kept() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let origin = FakeOrigin::start(vec![Behaviour::Gated {
        gate: gate.clone(),
        body: photo().into(),
    }])
    .await;
    let mut config = fake_config(&origin.endpoint);
    config.origin.first_byte_timeout = bucketfront::config::Dur::secs(60);
    config.variants.max_concurrent_renders = 1;
    config.variants.render_timeout = bucketfront::config::Dur::secs(1);
    let proxy = Proxy::start(config, None).await;
    // Five variants of one object: one source GET, four tickets, one waiter.
    let mut tasks: Vec<_> = [64, 128, 256, 512, 1024]
        .into_iter()
        .map(|w| {
            let url = proxy.url(&format!("/test-fake/p.jpg?w={w}&fmt=png"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let (first, _, rest) = futures_util::future::select_all(tasks.drain(..)).await;
    let first = first.unwrap();
    assert_eq!(first.status, 503, "{:?}", first.body);
    assert_eq!(first.json()["error"], "overloaded");
    assert_eq!(origin.count(), 1, "one source GET for every variant");
    gate.notify_one();
    for t in rest {
        let r = t.await.unwrap();
        assert_eq!(r.status, 503, "{:?}", r.body);
    }
    let outcome = |o: &'static str| {
        let proxy = &proxy;
        async move {
            let series = format!("bucketfront_variant_renders_total{{outcome=\"{o}\"}}");
            metric(proxy, &series).await
        }
    };
    assert_eq!(outcome("timed_out").await, 5.0);
    assert_eq!(
        outcome("rendered").await,
        0.0,
        "no render past its deadline"
    );
    let source = get(&proxy.url("/test-fake/p.jpg")).await;
    assert_eq!(source.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count(), 1);
    proxy.stop().await;
}
