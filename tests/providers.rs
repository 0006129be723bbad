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
    check_bucket(script, "").await
}

/// As [`check_against`], with `extra` lines in the bucket's entry.
async fn check_bucket(script: Vec<Behaviour>, extra: &str) -> (bool, String) {
    let origin = FakeOrigin::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // The command reads a file: the same config as `fake_config`, as the file says it.
    let file = format!(
        "[origin]\nconnect_timeout = \"1s\"\nfirst_byte_timeout = \"1s\"\nmax_attempts = 1\n\
         [[tenants]]\nname = \"t1\"\nbuckets = [\"test-fake\"]\nrequire_signature = false\n\
         [[buckets]]\nname = \"test-fake\"\nendpoint = \"{}\"\npath_style = true\n\
         access_key = \"AKIDFAKE\"\nsecret_key = \"fake-secret\"\n{extra}\n",
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

#[tokio::test]
async fn requester_pays_buckets_are_read_when_configured_and_diagnosed_when_not() {
    let body = Bytes::from_static(b"paid for");
    let origin = FakeOrigin::start(vec![Behaviour::RequesterPays(body.clone())]).await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    assert_eq!(get(&proxy.url("/test-fake/a.png")).await.status, 404);
    proxy.stop().await;
    let mut config = fake_config(&origin.endpoint);
    config.buckets[0].request_payer = true;
    let proxy = Proxy::start(config, None).await;
    let r = get(&proxy.url("/test-fake/a.png")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), &body);
    let heads = origin.heads.lock().unwrap().clone();
    assert!(
        heads
            .last()
            .unwrap()
            .to_lowercase()
            .contains("x-amz-request-payer: requester"),
        "{heads:#?}"
    );
    proxy.stop().await;

    let (ok, out) = check_against(vec![Behaviour::RequesterPays(body.clone())]).await;
    assert!(!ok);
    assert!(
        out.contains("Requester Pays bucket: set request_payer = true"),
        "{out}"
    );
    let (ok, out) =
        check_bucket(vec![Behaviour::RequesterPays(body)], "request_payer = true").await;
    assert!(ok, "{out}");
}

#[tokio::test]
async fn kms_denials_name_the_missing_permission_and_the_key() {
    let key = "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let xml = format!(
        "<Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::111122223333:assumed-role/bf/s \
         is not authorized to perform: kms:Decrypt on resource: {key} because no resource-based \
         policy allows the kms:Decrypt action</Message></Error>"
    );
    let denied = Behaviour::Raw {
        head: format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}",
            xml.len()
        ),
        body: Bytes::from(xml),
    };
    let (ok, out) = check_against(vec![denied.clone()]).await;
    assert!(!ok);
    assert!(
        out.contains("kms:Decrypt") && out.contains(&format!("key policy of {key}")),
        "{out}"
    );
    // The proxy answers 404 like any denial (no existence oracle), without the detail.
    let origin = FakeOrigin::start(vec![denied]).await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    let r = get(&proxy.url("/test-fake/secret.png")).await;
    assert_eq!(r.status, 404);
    assert!(!String::from_utf8_lossy(r.bytes()).contains("kms"));
    proxy.stop().await;
}

#[tokio::test]
async fn archived_objects_are_409_and_not_remembered() {
    let xml = "<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the \
               object's storage class</Message><StorageClass>GLACIER</StorageClass></Error>";
    let origin = FakeOrigin::start(vec![Behaviour::Raw {
        head: format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}",
            xml.len()
        ),
        body: Bytes::from_static(xml.as_bytes()),
    }])
    .await;
    let proxy = Proxy::start(fake_config(&origin.endpoint), None).await;
    for n in 1..=2 {
        let r = get(&proxy.url("/test-fake/cold.png")).await;
        assert_eq!(r.status, 409);
        let text = String::from_utf8_lossy(r.bytes()).to_string();
        assert!(text.contains("archived (GLACIER)"), "{text}");
        assert_eq!(origin.count(), n, "asked again: not a remembered 404");
    }
    proxy.stop().await;
}
