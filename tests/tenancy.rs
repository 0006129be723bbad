//! Tenancy and signed URLs: refusals are uniform and cost no upstream call, tenants never
//! see each other's bytes, hostile paths stay inside their bucket, presigned URLs work.

mod common;

use std::sync::Arc;

use bucketfront::config::Dur;
use common::*;
use http::Method;

/// A well-signed URL whose `exp` is 8 days ahead (the default limit is 7).
fn signed_path_far_ahead(bucket: &str, key: &str) -> String {
    let exp = in_an_hour() + 8 * 24 * 3600;
    format!("/{bucket}/{key}?{}", signed_query(bucket, key, exp))
}

/// The `sig` value of a signed query.
fn sig_of(query: &str) -> String {
    query
        .split("sig=")
        .nth(1)
        .unwrap_or("")
        .split('&')
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn refusals_are_403_json_and_never_reach_the_origin() {
    let env = Env::start().await;
    env.put("sig-images", "cat.png", "meow", "image/png").await;
    env.put("sig-images", "dog.png", "woof", "image/png").await;
    let exp = in_an_hour();
    let good = signed_query("sig-images", "cat.png", exp);
    let past = 1_000_000;
    let expired = signed_query("sig-images", "cat.png", past);
    let other_tenant = {
        let sig = bucketfront::sign(b"some-other-tenants-secret", "sig-images", "cat.png", exp);
        format!("exp={exp}&sig={sig}")
    };
    let for_dog = signed_query("sig-images", "dog.png", exp);
    let wrong_kid = format!("{good}&kid=k2");
    let cases = [
        ("/sig-images/cat.png".to_string(), "missing"),
        (format!("/sig-images/cat.png?exp={exp}"), "no sig"),
        ("/sig-images/cat.png?sig=abc".to_string(), "no exp"),
        (
            "/sig-images/cat.png?exp=soon&sig=abc".to_string(),
            "malformed exp",
        ),
        (
            format!("/sig-images/cat.png?exp={exp}&sig=%25%25"),
            "malformed sig",
        ),
        (format!("/sig-images/cat.png?{expired}"), "expired"),
        (
            format!("/sig-images/cat.png?{other_tenant}"),
            "other tenant's key",
        ),
        (format!("/sig-images/cat.png?{for_dog}"), "tampered key"),
        (format!("/sig-images/cat.png?{wrong_kid}"), "wrong kid"),
        (format!("/sig-images/cat.png?{good}&kid=k9"), "unknown kid"),
        (format!("/sig-other/cat.png?{good}"), "tampered bucket"),
        (format!("/unowned/cat.png?{good}"), "bucket of no tenant"),
        (
            signed_path_far_ahead("sig-images", "cat.png"),
            "exp beyond max_signature_ttl",
        ),
        (
            format!("/sig-images/cat.png?exp=0{exp}&sig={}", sig_of(&good)),
            "0-padded exp",
        ),
        (
            format!("/_/fetch?url=s3%3A%2F%2Fsig-images%2Fdog.png&{good}"),
            "url form, other key",
        ),
        (
            format!("/_/presign/sig-images/dog.png?{good}"),
            "presign, other key",
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (path, why) in &cases {
        let r = get(&env.proxy.url(path)).await;
        assert_eq!(r.status, 403, "{why}: {path}");
        assert_eq!(r.json()["error"], "forbidden", "{why}");
        messages.insert(r.json()["message"].to_string());
    }
    // One message for every refusal: no tenant oracle.
    assert_eq!(messages.len(), 1, "{messages:?}");
    // Security parameters given twice, and a provider the bucket is not read from: 400.
    for path in [
        format!("/sig-images/cat.png?{good}&exp={exp}"),
        format!("/sig-images/cat.png?{good}&sig=x"),
        format!("/sig-images/cat.png?{good}&kid=k1&kid=k2"),
        format!(
            "/_/fetch?url=s3%3A%2F%2Fsig-images%2Fcat.png&url=s3%3A%2F%2Fsig-images%2Fdog.png&{good}"
        ),
        format!("/_/fetch?url=gs%3A%2F%2Fsig-images%2Fcat.png&{good}"),
    ] {
        let r = get(&env.proxy.url(&path)).await;
        assert_eq!(r.status, 400, "{path}");
    }
    // Expired and missing answer the same status and code; only the log says which.
    assert_eq!(env.gets(), 0, "no refusal reached the origin");
    // The one valid signature works on every route form.
    for path in [
        format!("/sig-images/cat.png?{good}"),
        format!("/_/fetch?url=s3%3A%2F%2Fsig-images%2Fcat.png&{good}"),
        format!(
            "/_/fetch?url=https%3A%2F%2Fsig-images.s3.eu-west-1.amazonaws.com%2Fcat.png&{good}"
        ),
    ] {
        let r = get(&env.proxy.url(&path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.bytes().as_ref(), b"meow");
    }
    // Re-signed URLs (a new exp, the second key) hit the same cache entry.
    let resigned = {
        let sig = bucketfront::sign(
            b"second-signing-secret-xyz",
            "sig-images",
            "cat.png",
            exp + 60,
        );
        format!("exp={}&sig={sig}&kid=k2", exp + 60)
    };
    let r = get(&env.proxy.url(&format!("/sig-images/cat.png?{resigned}"))).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(env.gets(), 1);
    // POST is refused before anything else.
    let r = request(
        Method::POST,
        &env.proxy.url(&format!("/sig-images/cat.png?{good}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 405);
    env.stop().await;
}

#[tokio::test]
async fn a_removed_key_stops_working() {
    let env = Env::start().await;
    env.put("sig-images", "k.png", "data", "image/png").await;
    let exp = in_an_hour();
    let sig = bucketfront::sign(b"second-signing-secret-xyz", "sig-images", "k.png", exp);
    let path = format!("/sig-images/k.png?exp={exp}&sig={sig}");
    assert_eq!(get(&env.proxy.url(&path)).await.status, 200);
    // The same store, a config where tenant `signed` kept only k1.
    let mut rotated = config(&env.store.endpoint);
    rotated.tenants[1].signing_keys.retain(|k| k.id != "k2");
    assert_eq!(rotated.tenants[1].signing_keys.len(), 1);
    let proxy = Proxy::start(rotated, Some(&env.store)).await;
    assert_eq!(get(&proxy.url(&path)).await.status, 403);
    proxy.stop().await;
    env.stop().await;
}

/// A hit's target is remembered past the route, source and signature phases
/// (`proxy/memo.rs`): each test below first shows it is, then that what those phases
/// would refuse is still refused, and that the cache still decides what is served.
#[tokio::test]
async fn a_remembered_url_is_checked_again_at_each_use() {
    let env = Env::start().await;
    env.put("sig-images", "m.png", "remembered", "image/png")
        .await;
    let now = bucketfront::unix_secs(env.proxy.app.state().clock.wall());
    let path = format!(
        "/sig-images/m.png?{}",
        signed_query("sig-images", "m.png", now + 60)
    );
    let xcache = |r: &Resp| r.header("x-cache").unwrap_or("").to_string();
    assert_eq!(xcache(&get(&env.proxy.url(&path)).await), "MISS");
    assert!(
        !env.proxy.app.state().remembers(&path),
        "a miss is not remembered"
    );
    let r = get(&env.proxy.url(&path)).await;
    assert_eq!((r.status.as_u16(), xcache(&r)), (200, "HIT".into()));
    assert!(env.proxy.app.state().remembers(&path), "a hit is");

    // HEAD of the same target: its head, no body.
    let r = request(Method::HEAD, &env.proxy.url(&path), &[]).await;
    assert_eq!((r.status.as_u16(), xcache(&r)), (200, "HIT".into()));
    assert_eq!(r.header("content-length"), Some("10"));
    assert!(r.bytes().is_empty());
    // One byte of the signature changed: another target, checked, refused.
    let sig = sig_of(&path);
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = path.replace(&sig, &format!("{flipped}{}", &sig[1..]));
    assert_eq!(get(&env.proxy.url(&tampered)).await.status, 403);
    // Purged: the lookup still runs, so it is fetched again.
    let admin = format!("http://{}/purge", env.proxy.admin);
    let (status, _) = post_json(&admin, r#"{"bucket": "sig-images", "key": "m.png"}"#).await;
    assert_eq!(status, 200);
    assert!(env.proxy.app.state().remembers(&path));
    let r = get(&env.proxy.url(&path)).await;
    assert_eq!((r.status.as_u16(), xcache(&r)), (200, "MISS".into()));
    assert_eq!(r.bytes().as_ref(), b"remembered");
    // Past its `exp`: refused, remembered or not.
    assert_eq!(xcache(&get(&env.proxy.url(&path)).await), "HIT");
    assert!(env.proxy.app.state().remembers(&path));
    env.proxy
        .app
        .state()
        .clock
        .advance(std::time::Duration::from_secs(61));
    let r = get(&env.proxy.url(&path)).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");

    // Signed with k2, remembered; a reload that removes k2 forgets it.
    let now = bucketfront::unix_secs(env.proxy.app.state().clock.wall());
    let sig = bucketfront::sign(
        b"second-signing-secret-xyz",
        "sig-images",
        "m.png",
        now + 60,
    );
    let path = format!("/sig-images/m.png?exp={}&sig={sig}", now + 60);
    get(&env.proxy.url(&path)).await;
    assert_eq!(xcache(&get(&env.proxy.url(&path)).await), "HIT");
    assert!(env.proxy.app.state().remembers(&path));
    let mut rotated = config(&env.store.endpoint);
    rotated.tenants[1].signing_keys.retain(|k| k.id != "k2");
    env.proxy.app.reload(rotated).await.unwrap();
    assert!(!env.proxy.app.state().remembers(&path));
    assert_eq!(get(&env.proxy.url(&path)).await.status, 403);
    env.stop().await;
}

#[tokio::test]
async fn tenants_never_get_each_others_bytes_under_load() {
    let env = Env::start().await;
    env.put("test-images", "logo.png", "logo of tenant one", "image/png")
        .await;
    env.put(
        "sig-images",
        "logo.png",
        "LOGO OF THE SIGNED TENANT",
        "image/png",
    )
    .await;
    let exp = in_an_hour();
    let urls = Arc::new([
        env.proxy.url("/test-images/logo.png"),
        env.proxy.url(&format!(
            "/sig-images/logo.png?{}",
            signed_query("sig-images", "logo.png", exp)
        )),
    ]);
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let urls = urls.clone();
            tokio::spawn(async move { (i % 2, get(&urls[i % 2]).await) })
        })
        .collect();
    for t in tasks {
        let (which, r) = t.await.unwrap();
        let want: &[u8] = if which == 0 {
            b"logo of tenant one"
        } else {
            b"LOGO OF THE SIGNED TENANT"
        };
        assert_eq!(r.bytes().as_ref(), want);
    }
    assert_eq!(env.gets(), 2);
    env.stop().await;
}

#[tokio::test]
async fn hostile_keys_stay_inside_their_bucket() {
    let env = Env::start().await;
    env.put(
        "test-other",
        "secret.png",
        "other bucket's secret",
        "image/png",
    )
    .await;
    env.put("test-images", "a%2Fb.png", "literal percent", "image/png")
        .await;
    env.put("test-images", "a/b.png", "nested", "image/png")
        .await;
    // Escapes via dot segments are refused on a path-style endpoint.
    for path in [
        "/test-images/../test-other/secret.png",
        "/test-images/%2E%2E/test-other/secret.png",
        "/test-images/x/%2e%2e/%2e%2e/test-other/secret.png",
        "/_/fetch?url=https%3A%2F%2Fs3.amazonaws.com%2Ftest-images%2F..%2Ftest-other%2Fsecret.png",
    ] {
        let r = get(&env.proxy.url(path)).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 404),
            "{path}: {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(r.bytes()).contains("secret"),
            "{path}"
        );
    }
    // Encoded separators are decoded exactly once and stay part of the key.
    assert_eq!(
        get(&env.proxy.url("/test-images/a%2Fb.png"))
            .await
            .bytes()
            .as_ref(),
        b"nested"
    );
    assert_eq!(
        get(&env.proxy.url("/test-images/a%252Fb.png"))
            .await
            .bytes()
            .as_ref(),
        b"literal percent"
    );
    // NUL and CR/LF never become headers or another object.
    for path in [
        "/test-images/a%00b.png",
        "/test-images/a%0D%0AX-Evil:%201.png",
    ] {
        let r = get(&env.proxy.url(path)).await;
        assert!(
            r.status.is_client_error() || r.status.is_server_error(),
            "{path}"
        );
        assert!(r.header("x-evil").is_none());
    }
    env.stop().await;
}

#[tokio::test]
async fn presigned_urls_work_are_cached_and_refused_when_tampered() {
    let env = Env::start().await;
    env.put("sig-images", "p.png", "presigned bytes", "image/png")
        .await;
    let exp = in_an_hour();
    let q = signed_query("sig-images", "p.png", exp);
    let r = get(&env.proxy.url(&format!("/_/presign/sig-images/p.png?{q}"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let url = v["url"].as_str().unwrap().to_string();
    let expires_at = v["expires_at"].as_str().unwrap();
    let expires = humantime::parse_rfc3339(expires_at).unwrap();
    let life = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    // 24h by default, but never beyond the exp of the signed request (1 h here).
    assert!((3_500..=3_600).contains(&life), "got {life}s");
    // The store verifies the presigned signature: the URL fetches the object.
    let fetched = get(&url).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.bytes().as_ref(), b"presigned bytes");
    let tampered = url.replace("p.png", "q.png");
    assert_eq!(get(&tampered).await.status, 403);
    // Cached: the same URL again, also through the url= form.
    let again = get(&env
        .proxy
        .url(&format!("/_/presign?url=s3%3A%2F%2Fsig-images%2Fp.png&{q}")))
    .await;
    assert_eq!(again.json()["url"], v["url"]);
    assert_eq!(again.header("x-cache"), Some("HIT"));
    // redirect=1 answers 302 with a short Cache-Control.
    let r = get(&env
        .proxy
        .url(&format!("/_/presign/sig-images/p.png?{q}&redirect=1")))
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(url.as_str()));
    let cc = r.header("cache-control").unwrap_or("");
    let max_age: u64 = cc.trim_start_matches("private, max-age=").parse().unwrap();
    assert!((3_500..=3_600).contains(&max_age), "{cc}");
    env.stop().await;
}

#[tokio::test]
async fn presigned_urls_are_reused_until_refresh_before_with_a_controlled_clock() {
    let env = Env::with(|c, _| {
        c.presign.expires_in = Dur::secs(2 * 3600);
        c.presign.refresh_before = Dur::secs(30 * 60);
    })
    .await;
    let state = env.proxy.state.clone();
    let tenant = state.tenants.for_bucket("sig-images").unwrap().clone();
    let obj = bucketfront::ObjectRef::new(Default::default(), "sig-images", "clock.png").unwrap();
    env.put("sig-images", "clock.png", "png", "image/png").await;
    env.put("test-images", "clock.png", "png", "image/png")
        .await;
    let images: std::sync::Arc<[_]> = [bucketfront::MediaRange::parse("image/*").unwrap()].into();
    let request = |tenant: &std::sync::Arc<bucketfront::Tenant>, obj: &bucketfront::ObjectRef| {
        bucketfront::ObjectRequest {
            origins: state.origins.clone(),
            tenant: tenant.clone(),
            client: bucketfront::ClientKey::of(std::net::Ipv4Addr::LOCALHOST.into()),
            obj: obj.clone(),
            allowed: images.clone(),
            head: false,
            passthrough: Default::default(),
            spans: None,
        }
    };
    let t0 = std::time::SystemTime::now();
    let at = |secs: u64| t0 + std::time::Duration::from_secs(secs);
    let (first, s) = state
        .presigner
        .get(&request(&tenant, &obj), t0, None)
        .await
        .unwrap();
    assert_eq!(s.as_str(), "MISS");
    assert_eq!(first.expires_at, at(7200));
    // Reused while more than 30 minutes of validity are left ...
    let (same, s) = state
        .presigner
        .get(&request(&tenant, &obj), at(5399), None)
        .await
        .unwrap();
    assert_eq!((same.url.as_str(), s.as_str()), (first.url.as_str(), "HIT"));
    // ... and replaced once less is left.
    let (fresh, s) = state
        .presigner
        .get(&request(&tenant, &obj), at(5401), None)
        .await
        .unwrap();
    assert_eq!(s.as_str(), "REVALIDATED");
    assert_ne!(fresh.url, first.url);
    assert_eq!(fresh.expires_at, at(5401 + 7200));
    // Another tenant asking for the same bucket/key name never gets this URL.
    let other = state.tenants.for_bucket("test-images").unwrap().clone();
    let (theirs, _) = state
        .presigner
        .get(&request(&other, &obj), at(5402), None)
        .await
        .unwrap();
    assert_ne!(theirs.url, fresh.url);
    // A request signed to expire in 10 minutes gets a URL that ends with it.
    let (capped, _) = state
        .presigner
        .get(&request(&tenant, &obj), at(5403), Some(at(6003)))
        .await
        .unwrap();
    assert_eq!(capped.expires_at, at(6003));
    // An object the proxy would answer 415 for gets no presigned URL either.
    env.put("sig-images", "page.html", "<p>", "text/html").await;
    let html = bucketfront::ObjectRef::new(Default::default(), "sig-images", "page.html").unwrap();
    let refused = state
        .presigner
        .get(&request(&tenant, &html), at(5404), None)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 415);
    let metrics = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(metrics.bytes()).to_string();
    for outcome in ["hit", "miss", "refresh"] {
        assert!(
            text.contains(&format!(
                "bucketfront_presign_cache_total{{outcome=\"{outcome}\"}}"
            )),
            "{text}"
        );
    }
    env.stop().await;
}

/// `/metrics` counts requests, bytes answered, origin GETs and origin bytes per tenant.
#[tokio::test]
async fn metrics_per_tenant() {
    let env = Env::start().await;
    env.put("test-images", "m.png", "12345", "image/png").await;
    env.put("sig-images", "m.png", "1234567", "image/png").await;
    for _ in 0..3 {
        assert_eq!(get(&env.proxy.url("/test-images/m.png")).await.status, 200);
    }
    let signed = format!(
        "/sig-images/m.png?{}",
        signed_query("sig-images", "m.png", in_an_hour())
    );
    assert_eq!(get(&env.proxy.url(&signed)).await.status, 200);
    let text = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(text.bytes()).to_string();
    for line in [
        "bucketfront_tenant_requests_total{tenant=\"t1\"} 3",
        "bucketfront_tenant_bytes_total{tenant=\"t1\"} 15",
        "bucketfront_tenant_origin_requests_total{tenant=\"t1\"} 1",
        "bucketfront_tenant_origin_bytes_total{tenant=\"t1\"} 5",
        "bucketfront_tenant_requests_total{tenant=\"signed\"} 1",
        "bucketfront_tenant_origin_bytes_total{tenant=\"signed\"} 7",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    env.stop().await;
}

/// Every metric the shipped Grafana dashboard queries exists in `/metrics`.
#[tokio::test]
async fn the_grafana_dashboard_queries_metrics_that_exist() {
    let env = Env::start().await;
    env.put("test-images", "g.png", "g", "image/png").await;
    get(&env.proxy.url("/test-images/g.png")).await;
    let text = get(&format!("http://{}/metrics", env.proxy.admin)).await;
    let text = String::from_utf8_lossy(text.bytes()).to_string();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana-dashboard.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut names = Vec::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("bucketfront_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    assert!(names.len() > 10);
    for name in names {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_total"))
            .unwrap_or(&name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
    env.stop().await;
}

/// Each AWS partition is part of an object's identity: a bucket configured in one is
/// never reached through a URL naming another (the same name there is another owner's).
#[tokio::test]
async fn a_bucket_is_reached_only_in_its_partition() {
    let env = Env::with(|c, endpoint| {
        let mut cn = bucket("test-cn", endpoint, None);
        cn.region = Some("cn-north-1".into());
        c.buckets.push(cn);
    })
    .await;
    env.put("test-images", "p.png", "commercial", "image/png")
        .await;
    let fetch = |url: &str| {
        let url = percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC);
        env.proxy.url(&format!("/_/fetch?url={url}"))
    };
    for (url, want) in [
        ("https://test-images.s3.eu-west-1.amazonaws.com/p.png", 200),
        ("https://test-images.s3.amazonaws.com/p.png", 200),
        ("s3://test-images/p.png", 200),
        (
            "https://test-images.s3.cn-north-1.amazonaws.com.cn/p.png",
            400,
        ),
        (
            "https://test-images.s3.us-gov-west-1.amazonaws.com/p.png",
            400,
        ),
        ("https://test-cn.s3.eu-west-1.amazonaws.com/p.png", 400),
        ("https://test-cn.s3.amazonaws.com/p.png", 400),
    ] {
        let r = get(&fetch(url)).await;
        assert_eq!(r.status, want, "{url}: {:?}", r.body);
    }
    let r = get(&fetch(
        "https://test-cn.s3.cn-north-1.amazonaws.com.cn/p.png",
    ))
    .await;
    assert_ne!(r.status, 400, "its own partition passes the source phase");
    env.stop().await;
}

/// Access point aliases, Object Lambda aliases and directory buckets are bucket-shaped
/// names for another owner's data: refused (400) unless configured by their exact name,
/// even when a tenant's glob matches them.
#[tokio::test]
async fn alias_bucket_names_need_an_exact_configuration() {
    let env = Env::with(|c, endpoint| {
        c.buckets.push(bucket("test-exact-s3alias", endpoint, None));
    })
    .await;
    for name in [
        "test-ap-s3alias",
        "test-olap--ol-s3",
        "test-dir--usw2-az1--x-s3",
    ] {
        let r = get(&env.proxy.url(&format!("/{name}/k.png"))).await;
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(r.json()["error"], "bad_request");
    }
    // Configured exactly: past the source phase (no such bucket in the store: 404).
    let r = get(&env.proxy.url("/test-exact-s3alias/k.png")).await;
    assert_eq!(r.status, 404);
    env.stop().await;
}
