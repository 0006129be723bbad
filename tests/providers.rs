//! Buckets beyond plain S3: GCS through its XML API (a local S3-compatible store stands
//! in for storage.googleapis.com), and S3 buckets whose region must be discovered.

mod common;

use bucketfront::config::{Bucket, Gcs, ProviderKind, Secret};
use bytes::Bytes;
use common::*;

#[tokio::test]
async fn gcs_buckets_through_the_xml_api_with_ranges() {
    let env = Env::with(|c, endpoint| {
        c.gcs = Some(Gcs {
            access_key: Secret::new("TESTACCESSKEY"),
            secret_key: Secret::new("test-secret-key"),
            endpoint: endpoint.into(),
        });
        c.tenants.push(tenant("g", &["gcs-images"], &[]));
        c.buckets.push(Bucket {
            name: "gcs-images".into(),
            provider: ProviderKind::Gcs,
            ..Default::default()
        });
    })
    .await;
    env.store
        .client()
        .create_bucket()
        .bucket("gcs-images")
        .send()
        .await
        .unwrap();
    let body = pattern(100_000, 5);
    env.put("gcs-images", "cats/1.png", body.clone(), "image/png")
        .await;
    for source in [
        "gs://gcs-images/cats/1.png",
        "https://storage.googleapis.com/gcs-images/cats/1.png",
    ] {
        let url = env.proxy.url(&format!(
            "/_/fetch?url={}",
            source.replace(':', "%3A").replace('/', "%2F")
        ));
        let r = get(&url).await;
        assert_eq!(r.status, 200, "{source}");
        assert!(r.bytes().as_ref() == body.as_slice());
        assert!(
            r.headers
                .keys()
                .all(|k| !k.as_str().starts_with("x-goog-") && !k.as_str().starts_with("x-amz-"))
        );
        let r = get_with(&url, &[("range", "bytes=10-19")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.bytes().as_ref(), &body[10..20]);
    }
    // A GCS bucket in the path form, and a ranged read of an uncached (large) object.
    let r = get(&env.proxy.url("/gcs-images/cats/1.png")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    env.stop().await;
}

#[tokio::test]
async fn the_region_is_discovered_from_s3s_answers() {
    let body = Bytes::from_static(b"bytes from eu-west-1");
    for hint in [true, false] {
        let origin = FakeOrigin::start(vec![Behaviour::Region {
            region: "eu-west-1",
            body: body.clone(),
            hint,
        }])
        .await;
        // No region in the config, none in the URL: the SDK signs for us-east-1 first.
        let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
        let r = get(&proxy.url("/test-fake/a.png")).await;
        assert_eq!(r.status, 200, "hint={hint}");
        assert_eq!(r.bytes(), &body);
        let first = origin.count();
        // Learnt once, per bucket: the next object goes straight to the right region.
        let r = get(&proxy.url("/test-fake/b.png")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            origin.count(),
            first + 1,
            "hint={hint}: no second wrong-region round trip"
        );
        proxy.stop().await;
    }
}

/// `bucketfront check` against a scripted origin; returns (exit 0?, stdout).
async fn check_against(script: Vec<Behaviour>) -> (bool, String) {
    let origin = FakeOrigin::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // The command reads a file: the same config as `fake_config`, as the file says it.
    let file = format!(
        "[origin]\nconnect_timeout = \"1s\"\nfirst_byte_timeout = \"1s\"\nmax_attempts = 1\n\
         [[tenants]]\nname = \"t1\"\nbuckets = [\"test-fake\"]\nrequire_signature = false\n\
         [[buckets]]\nname = \"test-fake\"\nendpoint = \"{}\"\npath_style = true\n\
         access_key = \"AKIDFAKE\"\nsecret_key = \"fake-secret\"\n",
        origin.endpoint
    );
    std::fs::write(&path, file).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bucketfront"))
            .args([
                "check",
                "-c",
                path.to_str().unwrap(),
                "s3://test-fake/a.png",
            ])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[tokio::test]
async fn check_explains_scripted_s3_errors() {
    let (ok, out) = check_against(vec![Behaviour::Full(Bytes::from_static(b"x"))]).await;
    assert!(ok, "{out}");
    let region = Behaviour::Region {
        region: "ap-southeast-2",
        body: Bytes::from_static(b"x"),
        hint: true,
    };
    let (ok, out) = check_against(vec![region]).await;
    assert!(
        ok && out.contains("set region = \"ap-southeast-2\""),
        "{out}"
    );
    let (ok, out) = check_against(vec![Behaviour::Status(403)]).await;
    assert!(!ok && out.contains("access denied"), "{out}");
    let (ok, out) = check_against(vec![Behaviour::Status(503)]).await;
    assert!(!ok && out.contains("FAIL GetObject"), "{out}");
    let (ok, out) = check_against(vec![Behaviour::Stall]).await;
    assert!(!ok && out.contains("did not answer in time"), "{out}");
}

#[tokio::test]
async fn expected_owner_is_sent_on_every_s3_call() {
    // Region discovery without a hint makes the proxy send GetObject, HeadBucket and
    // GetObject again: all three must carry the tenant's expected bucket owner.
    let origin = FakeOrigin::start(vec![Behaviour::Region {
        region: "eu-west-1",
        body: Bytes::from_static(b"owned"),
        hint: false,
    }])
    .await;
    let mut config = fake_config(&origin.endpoint);
    config.tenants[0].expected_owner = Some("111122223333".into());
    let proxy = Proxy::start(config, None).await;
    assert_eq!(get(&proxy.url("/test-fake/o.png")).await.status, 200);
    let heads = origin.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:#?}");
    assert!(heads[1].starts_with("HEAD "), "{}", heads[1]);
    for head in &heads {
        assert!(
            head.to_lowercase()
                .contains("x-amz-expected-bucket-owner: 111122223333"),
            "{head}"
        );
    }
    proxy.stop().await;
}
