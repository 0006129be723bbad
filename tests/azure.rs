//! Azure Blob Storage as a provider, against Azurite (the Blob emulator) over HTTPS in its
//! OAuth mode: the Entra ID token path (the token endpoint is the one stand-in, Entra
//! cannot run locally), the customer's SAS, presigned user delegation SAS, and `check`'s
//! diagnosis of each failure. Denials Azurite cannot make (it has no RBAC and no
//! firewall) come from a real TCP peer answering as Azure does.
//!

mod common;

use std::time::Duration;

use bucketfront::config::Config;
use bytes::Bytes;
use common::azure::*;
use common::*;

#[tokio::test]
async fn blobs_are_streamed_cached_ranged_and_revalidated_with_the_apps_token() {
    let a = azurite();
    let mut c = azure_config(&["images"]);
    with_app(&mut c, "images", "dir-main", &a.endpoint, &a.account);
    let proxy = Proxy::start(c, None).await;
    let before = token_requests("dir-main").await;

    let want = body_of("images", "cats/1.jpg");
    let r = get_with(
        &proxy.url("/images/cats/1.jpg"),
        &[("origin", ALLOWED_ORIGIN)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes().as_ref(), want.as_slice());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert!(
        r.headers.keys().all(|k| !k.as_str().starts_with("x-ms-")),
        "no x-ms-* header reaches a client: {:?}",
        r.headers
    );
    // The blob's own Cache-Control is its freshness (capped by ttl).
    assert!(r.header("cache-control").unwrap().contains("max-age="));
    let r = get(&proxy.url("/images/cats/1.jpg")).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));

    // The same blob named by its Azure URL and by az:// is the same object.
    for source in [
        "https://devstoreaccount1.blob.core.windows.net/images/cats/1.jpg",
        "az://images/cats/1.jpg",
    ] {
        let url = proxy.url(&format!(
            "/_/fetch?url={}",
            source.replace(':', "%3A").replace('/', "%2F")
        ));
        let r = get(&url).await;
        assert_eq!(r.status, 200, "{source}");
        assert_eq!(r.header("x-cache"), Some("HIT"), "{source}");
    }
    // Another account's container of that name is not this one.
    let r = get(&proxy.url(
        "/_/fetch?url=https%3A%2F%2Fotheraccount.blob.core.windows.net%2Fimages%2Fcats%2F1.jpg",
    ))
    .await;
    assert_eq!(r.status, 400);

    // A blob stored gzip-encoded goes through as stored, its encoding said.
    let r = get(&proxy.url("/images/gz/icon.svg")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.bytes().as_ref(),
        body_of("images", "gz/icon.svg").as_slice()
    );

    // A range of a cached blob, and of one read cold.
    let r = get_with(
        &proxy.url("/images/cats/1.jpg"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.bytes().as_ref(), &want[100..200]);
    let cold = body_of("images", "cats/2.jpg");
    let r = get_with(&proxy.url("/images/cats/2.jpg"), &[("range", "bytes=5-9")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.bytes().as_ref(), &cold[5..10]);

    // Conditional: the stored ETag answers 304.
    let r = get(&proxy.url("/images/cats/3.jpg")).await;
    let etag = r.header("etag").unwrap().to_string();
    let r = get_with(
        &proxy.url("/images/cats/3.jpg"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 304);

    // One token for all of it: the SDK's cache.
    assert_eq!(token_requests("dir-main").await - before, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_token_near_its_expiry_is_fetched_again() {
    let a = azurite();
    let mut c = azure_config(&["images"]);
    // Tokens of 300 s: within the SDK's five-minute margin, so each use refreshes.
    with_app(&mut c, "images", "short-lived", &a.endpoint, &a.account);
    let proxy = Proxy::start(c, None).await;
    for key in ["cats/1.jpg", "cats/2.jpg", "cats/3.jpg"] {
        let r = get(&proxy.url(&format!("/images/{key}"))).await;
        assert_eq!(r.status, 200, "{key}");
    }
    assert_eq!(token_requests("short-lived").await, 3);
    proxy.stop().await;
}

#[tokio::test]
async fn a_federated_token_file_is_exchanged_for_the_apps_token() {
    let a = azurite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2ln").unwrap();
    let mut c = azure_config(&["images"]);
    with_app(&mut c, "images", "dir-federated", &a.endpoint, &a.account);
    if let Some(app) = &mut c.azure {
        app.client_secret = None;
        app.federated_token_file = Some(file);
    }
    let proxy = Proxy::start(c, None).await;
    let r = get(&proxy.url("/images/cats/3.jpg")).await;
    assert_eq!(r.status, 200);
    assert_eq!(token_requests("dir-federated").await, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn missing_denied_and_archived_blobs() {
    let a = azurite();
    let mut c = azure_config(&["images", "nothere", "shared"]);
    with_app(&mut c, "images", "dir-errors", &a.endpoint, &a.account);
    with_app(&mut c, "nothere", "dir-errors", &a.endpoint, &a.account);
    with_sas(&mut c, "shared", &a.sas_list_only, &a.endpoint);
    let proxy = Proxy::start(c, None).await;
    // No such blob, no such container, no read permission: one 404, the same body.
    let missing = get(&proxy.url("/images/cats/none.jpg")).await;
    let no_container = get(&proxy.url("/nothere/cats/1.jpg")).await;
    let denied = get(&proxy.url("/shared/dogs/1.jpg")).await;
    for r in [&missing, &no_container, &denied] {
        assert_eq!(r.status, 404);
        assert_eq!(r.bytes(), missing.bytes());
    }
    // An archived blob: 409 with what to do, twice (never remembered as missing).
    for _ in 0..2 {
        let r = get(&proxy.url("/images/cold/old.jpg")).await;
        assert_eq!(r.status, 409);
        let v: serde_json::Value = serde_json::from_slice(r.bytes()).unwrap();
        assert_eq!(v["error"], "archived");
        assert!(v["message"].as_str().unwrap().contains("restored"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_customers_sas_reads_and_is_never_handed_out() {
    let a = azurite();
    let mut c = azure_config(&["shared"]);
    with_sas(&mut c, "shared", &a.sas_read, &a.endpoint);
    let proxy = Proxy::start(c, None).await;
    let r = get(&proxy.url("/shared/dogs/1.jpg")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.bytes().as_ref(),
        body_of("shared", "dogs/1.jpg").as_slice()
    );
    let r = get(&proxy.url("/_/presign/shared/dogs/1.jpg")).await;
    assert_eq!(r.status, 403);
    assert!(!String::from_utf8_lossy(r.bytes()).contains("sig="));
    proxy.stop().await;
}

#[tokio::test]
async fn presigned_urls_are_user_delegation_sas_for_one_blob_that_end_with_exp() {
    let a = azurite();
    let mut c = azure_config(&["images"]);
    with_app(&mut c, "images", "dir-presign", &a.endpoint, &a.account);
    let proxy = Proxy::start(c, None).await;
    let r = get(&proxy.url("/_/presign/images/cats/2.jpg")).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(r.bytes()).unwrap();
    let url = v["url"].as_str().unwrap();
    for field in ["sr=b", "sp=r", "skoid=", "sig="] {
        assert!(url.contains(field), "{field} in {url}");
    }
    let expires = humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires <= std::time::SystemTime::now() + Duration::from_secs(3600));
    // Azurite checks the signature: the URL reads that blob, and only it.
    let direct = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&a.cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let got = direct.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        body_of("images", "cats/2.jpg").as_slice()
    );
    let other = url.replace("cats/2.jpg", "cats/3.jpg");
    assert_eq!(direct.get(&other).send().await.unwrap().status(), 403);
    proxy.stop().await;
}

/// `bucketfront check` on each Azure failure, printed (the closing note's transcripts).
#[tokio::test]
async fn check_explains_each_azure_failure() {
    let a = azurite();
    let no_role = FakeOrigin::start(vec![Behaviour::Raw {
        head: "HTTP/1.1 403 This request is not authorized to perform this operation using this permission.\r\n\
               x-ms-error-code: AuthorizationPermissionMismatch\r\nContent-Length: 0"
            .into(),
        body: Bytes::new(),
    }])
    .await;
    let firewall = FakeOrigin::start(vec![Behaviour::Raw {
        head: "HTTP/1.1 403 This request is not authorized to perform this operation.\r\n\
               x-ms-error-code: AuthorizationFailure\r\nContent-Length: 0"
            .into(),
        body: Bytes::new(),
    }])
    .await;
    let wrong_account = a.endpoint.replace("/devstoreaccount1", "/nosuchaccount");
    type Configure<'a> = Box<dyn Fn(&mut Config) + 'a>;
    // (case, its config, the blob, what `check` must say)
    let cases: Vec<(&str, Configure, &str, &str)> = vec![
        (
            "no consent",
            Box::new(|c| with_app(c, "images", "no-consent", &a.endpoint, &a.account)),
            "images/cats/1.jpg",
            "no consent",
        ),
        (
            "no role",
            Box::new(|c| with_app(c, "images", "dir-check", &no_role.endpoint, &a.account)),
            "images/cats/1.jpg",
            "no role",
        ),
        (
            "firewall",
            Box::new(|c| with_app(c, "images", "dir-check", &firewall.endpoint, &a.account)),
            "images/cats/1.jpg",
            "firewall",
        ),
        (
            "wrong account",
            Box::new(|c| with_app(c, "images", "dir-check", &wrong_account, "nosuchaccount")),
            "images/cats/1.jpg",
            "no account nosuchaccount",
        ),
        (
            "container missing",
            Box::new(|c| with_app(c, "nothere", "dir-check", &a.endpoint, &a.account)),
            "nothere/cats/1.jpg",
            "no container nothere",
        ),
        (
            "SAS expired",
            Box::new(|c| with_sas(c, "shared", &a.sas_expired, &a.endpoint)),
            "shared/dogs/1.jpg",
            "has expired",
        ),
        (
            "SAS without r",
            Box::new(|c| with_sas(c, "shared", &a.sas_list_only, &a.endpoint)),
            "shared/dogs/1.jpg",
            "does not grant read (sp=l)",
        ),
        (
            "archived",
            Box::new(|c| with_app(c, "images", "dir-check", &a.endpoint, &a.account)),
            "images/cold/old.jpg",
            "az storage blob set-tier",
        ),
        (
            "readable",
            Box::new(|c| with_app(c, "images", "dir-check", &a.endpoint, &a.account)),
            "images/cats/1.jpg",
            "object is readable",
        ),
    ];
    for (case, configure, path, want) in cases {
        let container = path.split('/').next().unwrap();
        let mut c = azure_config(&[container]);
        configure(&mut c);
        let url = format!("az://{path}");
        let report = bucketfront::onboard::check(&c, &url).await;
        let text = report.to_string();
        println!("$ bucketfront check {url}    # {case}\n{text}");
        assert_eq!(report.served(), case == "readable", "{case}: {text}");
        assert!(text.contains(want), "{case}: {text}");
    }
}
