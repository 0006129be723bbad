//! Cross-account roles and upstream revalidation against moto in server mode (STS, IAM
//! and S3 with authentication enforced): a second S3 implementation beside the embedded
//! store, and the one that answers `304` to `If-None-Match`.
//!
//! One moto process serves every test of this binary; it exits when this process does
//! (it waits on its stdin, which closes then).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bucketfront::config::{AssumeRole, Config, Dur, Origin, Secret};
use common::*;

/// Tenants set up in moto; more than the SDK's default 64 identity-cache partitions.
const TENANTS: usize = 70;

struct Moto {
    endpoint: String,
    tenants: Vec<serde_json::Value>,
    access_key: String,
    secret_key: String,
    _child: Mutex<Child>,
}

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/moto_env.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), &TENANTS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!("moto did not start: install it with `pip install \"moto[server]\"` (scripts/test does)")
        });
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        // The proxy's own identity is the platform user, through the standard chain.
        // SAFETY: set once, before any test of this binary reads the environment.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", s("access_key"));
            std::env::set_var("AWS_SECRET_ACCESS_KEY", s("secret_key"));
            std::env::set_var("AWS_ENDPOINT_URL", s("endpoint"));
            std::env::set_var("AWS_REGION", "us-east-1");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        Moto {
            endpoint: s("endpoint"),
            tenants: v["tenants"].as_array().unwrap().clone(),
            access_key: s("access_key"),
            secret_key: s("secret_key"),
            _child: Mutex::new(child),
        }
    })
}

/// A config with tenants `0..n` assuming their roles (external IDs as given).
fn role_config(n: usize, external_id: impl Fn(usize) -> String) -> Config {
    let m = moto();
    let mut c = moto_config();
    for (i, t) in m.tenants.iter().take(n).enumerate() {
        let b = t["bucket"].as_str().unwrap();
        let mut tenant = tenant(&format!("t{i}"), &[b], &[]);
        tenant.assume_role = Some(AssumeRole {
            role_arn: t["role_arn"].as_str().unwrap().into(),
            external_id: Some(Secret::new(external_id(i))),
        });
        c.tenants.push(tenant);
        c.buckets.push(bucket(b, &m.endpoint, None));
    }
    c
}

/// Listeners on free ports, five seconds to the first byte (moto is slow to start
/// answering), one attempt; no tenants yet.
fn moto_config() -> Config {
    let mut c = fake_config("http://127.0.0.1:9");
    c.tenants.clear();
    c.buckets.clear();
    c.origin = Origin {
        first_byte_timeout: Dur::secs(5),
        max_attempts: 1,
        ..Origin::default()
    };
    c
}

#[tokio::test]
async fn objects_are_fetched_with_each_tenants_assumed_role() {
    let proxy = Proxy::start(role_config(2, |i| format!("ext-{i}")), None).await;
    // Interleaved, concurrent: each tenant's role can read only its own bucket, so a
    // tenant served with the other's credentials would get 404.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let url = proxy.url(&format!("/moto-t{}/logo.png", i % 2));
            tokio::spawn(async move { (i % 2, get(&url).await) })
        })
        .collect();
    for t in tasks {
        let (tenant, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "tenant {tenant}");
        assert_eq!(
            r.bytes().as_ref(),
            format!("logo of tenant {tenant}").as_bytes()
        );
    }
    // Presigned URLs carry each tenant's own temporary key, and work.
    let mut keys = Vec::new();
    for i in 0..2 {
        let r = get(&proxy.url(&format!("/_/presign/moto-t{i}/logo.png"))).await;
        assert_eq!(r.status, 200);
        let url = r.json()["url"].as_str().unwrap().to_string();
        let credential = url
            .split("X-Amz-Credential=")
            .nth(1)
            .unwrap()
            .split("%2F")
            .next()
            .unwrap()
            .to_string();
        assert_ne!(
            credential,
            moto().access_key,
            "signed with the assumed role, not the platform user"
        );
        keys.push(credential);
        // Credentials from AssumeRole live one hour: the URL may not outlive them.
        let expires = humantime::parse_rfc3339(r.json()["expires_at"].as_str().unwrap()).unwrap();
        let life = expires.duration_since(SystemTime::now()).unwrap();
        assert!(
            life <= Duration::from_secs(3600),
            "expires_at capped by the session: {life:?}"
        );
        // Fetching it is tested against the embedded store (tests/tenancy.rs): moto with
        // authentication on answers 500 to every presigned URL, boto3's included
        // (KeyError 'HTTP_AUTHORIZATION' in moto 5.2.1).
        assert!(
            url.contains("X-Amz-Security-Token="),
            "temporary credentials carry their token"
        );
    }
    assert_ne!(keys[0], keys[1], "tenants never share credentials");
    proxy.stop().await;
}

#[tokio::test]
async fn a_wrong_external_id_is_refused_quickly_and_not_retried_per_request() {
    let proxy = Proxy::start(role_config(1, |_| "not-the-external-id".into()), None).await;
    for _ in 0..5 {
        // A hang guard, not a timing assertion: a refused role is answered at once.
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            get(&proxy.url("/moto-t0/logo.png")),
        )
        .await
        .expect("answered, not hung");
        assert!(matches!(r.status.as_u16(), 404 | 502), "{}", r.status);
        let body = String::from_utf8_lossy(r.bytes()).to_string();
        assert!(
            !body.contains("AssumeRole") && !body.contains("arn:"),
            "no upstream detail leaks: {body}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn more_than_64_tenants_keep_their_own_credentials() {
    let mut config = role_config(TENANTS, |i| format!("ext-{i}"));
    config.cache.ttl = Dur(Duration::from_millis(1));
    let proxy = Proxy::start(config, None).await;
    for round in 0..2 {
        for i in 0..TENANTS {
            let r = get(&proxy.url(&format!("/moto-t{i}/logo.png"))).await;
            assert_eq!(r.status, 200, "round {round}, tenant {i}");
            assert_eq!(r.bytes().as_ref(), format!("logo of tenant {i}").as_bytes());
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn expired_entries_revalidate_with_304_then_pick_up_changes() {
    let m = moto();
    let mut config = moto_config();
    config.cache.ttl = Dur(Duration::from_millis(500));
    config.tenants.push(tenant("own", &["moto-own"], &[]));
    config.buckets.push(bucket("moto-own", &m.endpoint, None));
    let proxy = Proxy::start(config, None).await;
    let s3 = platform_s3();
    let put = |body: &'static str| {
        s3.put_object()
            .bucket("moto-own")
            .key("r.png")
            .content_type("image/png")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(
                body.as_bytes(),
            ))
            .send()
    };
    put("first version").await.unwrap();
    // Stored headers pass through from moto as from the embedded store.
    s3.put_object()
        .bucket("moto-own")
        .key("meta.svgz")
        .content_type("image/svg+xml")
        .content_encoding("gzip")
        .content_disposition("attachment; filename=\"m.svgz\"")
        .content_language("de")
        .cache_control("max-age=60, must-revalidate")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"gzipped"))
        .send()
        .await
        .unwrap();
    for want in ["MISS", "HIT"] {
        let r = get(&proxy.url("/moto-own/meta.svgz")).await;
        assert_eq!(r.header("x-cache"), Some(want));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"m.svgz\"")
        );
        assert_eq!(r.header("content-language"), Some("de"));
        assert_eq!(
            r.header("cache-control"),
            Some("private, max-age=0, must-revalidate"),
            "ttl (500 ms) caps the object's 60 s"
        );
    }
    let url = proxy.url("/moto-own/r.png");
    let first = get(&url).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    proxy.state.clock.advance(Duration::from_millis(600));
    let r = get(&url).await;
    assert_eq!(
        r.header("x-cache"),
        Some("REVALIDATED"),
        "moto answered 304"
    );
    assert_eq!(r.bytes().as_ref(), b"first version");
    assert_eq!(
        get(&url).await.header("x-cache"),
        Some("HIT"),
        "the 304 refreshed the entry"
    );
    put("second version").await.unwrap();
    proxy.state.clock.advance(Duration::from_millis(600));
    let r = get(&url).await;
    assert_eq!(
        r.header("x-cache"),
        Some("MISS"),
        "a changed object is downloaded again"
    );
    assert_eq!(r.bytes().as_ref(), b"second version");
    assert_ne!(r.header("etag"), first.header("etag"));
    proxy.stop().await;
}

/// An S3 client of moto with the platform user's keys (it may write `moto-own`).
fn platform_s3() -> aws_sdk_s3::Client {
    let m = moto();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&m.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_credential_types::Credentials::new(
                &m.access_key,
                &m.secret_key,
                None,
                None,
                "test",
            ))
            .build(),
    )
}

#[tokio::test]
async fn archived_objects_answer_409_until_restored() {
    let m = moto();
    let s3 = platform_s3();
    for (key, class) in [
        ("deep.png", "DEEP_ARCHIVE"),
        ("flexible.png", "GLACIER"),
        ("instant.png", "GLACIER_IR"),
        ("tiered.png", "INTELLIGENT_TIERING"),
    ] {
        s3.put_object()
            .bucket("moto-own")
            .key(key)
            .content_type("image/png")
            .storage_class(class.into())
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"cold"))
            .send()
            .await
            .unwrap();
    }
    let mut config = moto_config();
    config.tenants.push(tenant("own", &["moto-own"], &[]));
    config.buckets.push(bucket("moto-own", &m.endpoint, None));
    let proxy = Proxy::start(config, None).await;
    for key in ["deep.png", "flexible.png"] {
        // Twice: an archived object is neither a 404 to remember nor an origin failure.
        for _ in 0..2 {
            let r = get(&proxy.url(&format!("/moto-own/{key}"))).await;
            assert_eq!(r.status, 409, "{key}");
            let text = String::from_utf8_lossy(r.bytes()).to_string();
            assert!(
                text.contains("archived") && text.contains("restored"),
                "{text}"
            );
        }
    }
    let r = get(&proxy.url("/moto-own/deep.png")).await;
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("x-amz-")));
    for key in ["instant.png", "tiered.png"] {
        let r = get(&proxy.url(&format!("/moto-own/{key}"))).await;
        assert_eq!(r.status, 200, "{key} is read directly");
        assert_eq!(r.bytes().as_ref(), b"cold");
    }
    let (ok, out) = check(&tenant_config("moto-own", None), "s3://moto-own/deep.png");
    assert!(!ok);
    assert!(
        out.contains("archived (DEEP_ARCHIVE)") && out.contains("restore-object"),
        "{out}"
    );
    // Restored, it is served (moto restores at once).
    s3.restore_object()
        .bucket("moto-own")
        .key("flexible.png")
        .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
        .send()
        .await
        .unwrap();
    let r = get(&proxy.url("/moto-own/flexible.png")).await;
    assert_eq!(r.status, 200);
    proxy.stop().await;
}

/// Runs `bucketfront check` with `config`; returns (exit 0?, stdout).
fn check(config: &str, url: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bucketfront"))
        .args(["check", "-c", path.to_str().unwrap(), url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn tenant_config(bucket: &str, role: Option<(&str, &str)>) -> String {
    let m = moto();
    let role = role
        .map(|(arn, ext)| {
            format!("assume_role = {{ role_arn = \"{arn}\", external_id = \"{ext}\" }}\n")
        })
        .unwrap_or_default();
    format!(
        "[[tenants]]\nname = \"c\"\nbuckets = [\"{bucket}\"]\nrequire_signature = false\n{role}[[buckets]]\nname = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\n",
        m.endpoint
    )
}

#[tokio::test]
async fn check_walks_the_access_path_and_explains_failures() {
    let m = moto();
    let role0 = m.tenants[0]["role_arn"].as_str().unwrap();
    let (ok, out) = check(
        &tenant_config("moto-t0", Some((role0, "ext-0"))),
        "s3://moto-t0/logo.png",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("ok   role: assuming it without the right external ID is refused"),
        "{out}"
    );
    assert!(out.contains("ok   content type: image/png"), "{out}");

    let (ok, out) = check(
        &tenant_config("moto-t0", Some((role0, "wrong"))),
        "s3://moto-t0/logo.png",
    );
    assert!(!ok);
    assert!(
        out.contains("FAIL GetObject: no usable credentials"),
        "{out}"
    );

    // Role 0 may read only moto-t0: reading moto-t1 with it is AccessDenied.
    let (ok, out) = check(
        &tenant_config("moto-t1", Some((role0, "ext-0"))),
        "s3://moto-t1/logo.png",
    );
    assert!(!ok);
    assert!(
        out.contains("access denied") && out.contains("bucket policy"),
        "{out}"
    );

    let (ok, out) = check(
        &tenant_config("moto-own", None),
        "https://moto-own.s3.us-east-1.amazonaws.com/nope.png",
    );
    assert!(!ok);
    assert!(out.contains("no such key"), "{out}");

    let unsafe_role = role0.replace("reader-0", "unsafe");
    let (ok, out) = check(
        &tenant_config("moto-own", Some((&unsafe_role, "anything"))),
        "s3://moto-own/nope.png",
    );
    assert!(!ok);
    assert!(
        out.contains("can be assumed WITHOUT the right external ID"),
        "{out}"
    );

    let (ok, out) = check(&tenant_config("moto-own", None), "s3://other-bucket/a.png");
    assert!(!ok);
    assert!(out.contains("belongs to no tenant"), "{out}");
}
