//! Table tests for source-URL and path parsing.

use super::*;

const S3: ProviderKind = ProviderKind::S3;
const GCS: ProviderKind = ProviderKind::Gcs;

fn ok(provider: ProviderKind, bucket: &str, region: Option<&str>, key: &str) -> Option<ObjectRef> {
    Some(ObjectRef {
        provider,
        bucket: bucket.into(),
        region: region.map(String::from),
        partition: None,
        account: None,
        key: key.into(),
    })
}

/// Each AWS partition is part of an object's identity: named by the host's domain or
/// the region in it.
#[test]
fn partitions_are_named_by_the_url() {
    let cases = [
        ("https://b-1.s3.eu-west-1.amazonaws.com/k", Partition::Aws),
        ("https://b-1.s3.amazonaws.com/k", Partition::Aws),
        (
            "https://b-1.s3.cn-north-1.amazonaws.com.cn/k",
            Partition::AwsCn,
        ),
        (
            "https://s3.cn-northwest-1.amazonaws.com.cn/b-1/k",
            Partition::AwsCn,
        ),
        (
            "https://b-1.s3.us-gov-west-1.amazonaws.com/k",
            Partition::AwsUsGov,
        ),
        (
            "https://s3-us-gov-east-1.amazonaws.com/b-1/k",
            Partition::AwsUsGov,
        ),
    ];
    for (url, want) in cases {
        assert_eq!(
            parse_source_url(url).unwrap().partition,
            Some(want),
            "{url}"
        );
    }
    assert_eq!(
        parse_source_url("s3://b-1/k").unwrap().partition,
        None,
        "not named"
    );
}

#[test]
fn source_url_table() {
    let long_key = "k".repeat(1024);
    let too_long = format!("https://b-1.s3.amazonaws.com/{}", "k".repeat(1025));
    let max_key = format!("https://b-1.s3.amazonaws.com/{long_key}");
    let long_bucket = format!("s3://{}/k", "b".repeat(64));
    #[rustfmt::skip]
    let cases: Vec<(&str, Option<ObjectRef>)> = vec![
        // The forms of docs/http.md, "Routes".
        ("https://acme-images.s3.eu-west-1.amazonaws.com/cats/1.jpg", ok(S3, "acme-images", Some("eu-west-1"), "cats/1.jpg")),
        ("https://acme-images.s3.amazonaws.com/cats/1.jpg", ok(S3, "acme-images", None, "cats/1.jpg")),
        ("https://acme-images.s3-eu-west-1.amazonaws.com/cats/1.jpg", ok(S3, "acme-images", Some("eu-west-1"), "cats/1.jpg")),
        ("https://s3.eu-west-1.amazonaws.com/acme-images/cats/1.jpg", ok(S3, "acme-images", Some("eu-west-1"), "cats/1.jpg")),
        ("https://s3-eu-west-1.amazonaws.com/acme-images/cats/1.jpg", ok(S3, "acme-images", Some("eu-west-1"), "cats/1.jpg")),
        ("https://s3.amazonaws.com/acme-images/cats/1.jpg", ok(S3, "acme-images", None, "cats/1.jpg")),
        ("https://acme-images.s3.dualstack.us-east-2.amazonaws.com/a.png", ok(S3, "acme-images", Some("us-east-2"), "a.png")),
        ("https://s3.dualstack.us-east-2.amazonaws.com/acme-images/a.png", ok(S3, "acme-images", Some("us-east-2"), "a.png")),
        ("https://acme-images.s3.cn-north-1.amazonaws.com.cn/a.png", ok(S3, "acme-images", Some("cn-north-1"), "a.png")),
        ("https://acme-images.s3.us-gov-west-1.amazonaws.com/a.png", ok(S3, "acme-images", Some("us-gov-west-1"), "a.png")),
        ("s3://acme-images/cats/1.jpg", ok(S3, "acme-images", None, "cats/1.jpg")),
        ("https://storage.googleapis.com/acme_gcs/cats/1.jpg", ok(GCS, "acme_gcs", None, "cats/1.jpg")),
        ("https://acme-gcs.storage.googleapis.com/cats/1.jpg", ok(GCS, "acme-gcs", None, "cats/1.jpg")),
        ("gs://acme-gcs/cats/1.jpg", ok(GCS, "acme-gcs", None, "cats/1.jpg")),
        ("http://acme-images.s3.amazonaws.com/cats/1.jpg", ok(S3, "acme-images", None, "cats/1.jpg")),
        ("HTTPS://ACME-IMAGES.S3.EU-WEST-1.AMAZONAWS.COM/Cats/1.JPG", ok(S3, "acme-images", Some("eu-west-1"), "Cats/1.JPG")),
        // Dotted bucket names, in the host and in the path.
        ("https://my.dotted.bucket.s3.eu-west-1.amazonaws.com/k", ok(S3, "my.dotted.bucket", Some("eu-west-1"), "k")),
        ("https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k", ok(S3, "my.dotted.bucket", Some("eu-west-1"), "k")),
        ("https://logs.s3.backup.s3.eu-west-1.amazonaws.com/k", ok(S3, "logs.s3.backup", Some("eu-west-1"), "k")),
        // Percent-encoding: decoded exactly once, `+` literal.
        ("https://b-1.s3.amazonaws.com/a%20b.jpg", ok(S3, "b-1", None, "a b.jpg")),
        ("https://b-1.s3.amazonaws.com/a+b.jpg", ok(S3, "b-1", None, "a+b.jpg")),
        ("https://b-1.s3.amazonaws.com/a%2Bb.jpg", ok(S3, "b-1", None, "a+b.jpg")),
        ("https://b-1.s3.amazonaws.com/a%2Fb.jpg", ok(S3, "b-1", None, "a/b.jpg")),
        ("https://b-1.s3.amazonaws.com/a%252Fb.jpg", ok(S3, "b-1", None, "a%2Fb.jpg")),
        ("https://b-1.s3.amazonaws.com/caf%C3%A9/%E7%8C%AB.png", ok(S3, "b-1", None, "café/猫.png")),
        ("https://b-1.s3.amazonaws.com/café.png", ok(S3, "b-1", None, "café.png")),
        ("s3://b-1/a%20b.jpg", ok(S3, "b-1", None, "a%20b.jpg")),
        // Dot segments stay, byte-exact, part of the key.
        ("https://b-1.s3.amazonaws.com/a/../b.jpg", ok(S3, "b-1", None, "a/../b.jpg")),
        ("https://b-1.s3.amazonaws.com/./b.jpg", ok(S3, "b-1", None, "./b.jpg")),
        ("https://s3.amazonaws.com/b-1/../other/k", ok(S3, "b-1", None, "../other/k")),
        ("https://b-1.s3.amazonaws.com//double//slash", ok(S3, "b-1", None, "/double//slash")),
        // Query and fragment never name the object.
        ("https://b-1.s3.amazonaws.com/k.jpg?X-Amz-Signature=abc&x=1", ok(S3, "b-1", None, "k.jpg")),
        ("https://b-1.s3.amazonaws.com/k.jpg#frag", ok(S3, "b-1", None, "k.jpg")),
        ("https://b-1.s3.amazonaws.com/k%3F.jpg", ok(S3, "b-1", None, "k?.jpg")),
        (max_key.as_str(), ok(S3, "b-1", None, &long_key)),
        // Refused: userinfo, ports, IP literals, foreign hosts, schemes.
        ("https://user:pw@b-1.s3.amazonaws.com/k", None),
        ("https://b-1.s3.amazonaws.com@evil.example/k", None),
        ("https://b-1.s3.amazonaws.com:443/k", None),
        ("https://127.0.0.1/b-1/k", None),
        ("https://[::1]/b-1/k", None),
        ("https://169.254.169.254/latest/meta-data", None),
        ("https://evil.example.com/b-1/k", None),
        ("https://b-1.s3.amazonaws.com.evil.example/k", None),
        ("https://amazonaws.com/b-1/k", None),
        ("https://b-1.s3-website-us-east-1.amazonaws.com/k", None),
        ("https://b-1.s3-accelerate.amazonaws.com/k", None),
        ("https://b-1.ec2.amazonaws.com/k", None),
        ("ftp://b-1/k", None),
        ("file:///etc/passwd", None),
        ("b-1/k", None),
        ("", None),
        // Refused: bucket names.
        ("s3://ab/k", None),
        ("s3://Upper-Case/k", None),
        ("s3://under_score/k", None),
        ("s3://-leading/k", None),
        ("s3://trailing-/k", None),
        ("s3://.leading/k", None),
        ("s3://double..dot/k", None),
        ("s3://192.168.1.1/k", None),
        ("https://s3.amazonaws.com/bad_bucket/k", None),
        (long_bucket.as_str(), None),
        // Refused: empty or oversized keys, malformed escapes.
        ("https://b-1.s3.amazonaws.com/", None),
        ("https://b-1.s3.amazonaws.com", None),
        ("https://s3.amazonaws.com/b-1/", None),
        ("https://s3.amazonaws.com/b-1", None),
        ("s3://b-1/", None),
        (too_long.as_str(), None),
        ("https://b-1.s3.amazonaws.com/bad%zzescape", None),
        ("https://b-1.s3.amazonaws.com/bad%C3", None),
        ("https://b-1.s3.amazonaws.com/trailing%2", None),
    ];
    assert!(cases.len() >= 40);
    for (url, want) in cases {
        let got = parse_source_url(url);
        match (&got, &want) {
            // The partition has a test of its own.
            (Ok(g), Some(w)) => assert_eq!(
                &ObjectRef {
                    partition: None,
                    account: None,
                    ..g.clone()
                },
                w,
                "{url}"
            ),
            (Err(e), None) => assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{url}"),
            _ => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn path_form() {
    assert_eq!(
        parse_path("/b-1/cats/1.jpg").unwrap(),
        ("b-1".into(), "cats/1.jpg".into())
    );
    assert_eq!(
        parse_path("/b-1/a+b%20c.jpg").unwrap(),
        ("b-1".into(), "a+b c.jpg".into())
    );
    assert_eq!(
        parse_path("/b-1/a%252F").unwrap(),
        ("b-1".into(), "a%2F".into())
    );
    assert_eq!(parse_path("/b-1/").unwrap(), ("b-1".into(), "".into()));
    assert!(parse_path("/b-1").is_err());
    assert!(parse_path("/b-1/%ff").is_err());
}

#[test]
fn gcs_bucket_rules() {
    assert!(validate_bucket("with_underscore", GCS).is_ok());
    assert!(validate_bucket("with_underscore", S3).is_err());
    assert!(validate_bucket(&format!("{}.{}", "a".repeat(60), "b".repeat(60)), GCS).is_ok());
    assert!(validate_bucket(&"a".repeat(64), GCS).is_err());
}

/// Azure Blob: the account is named by the host (and checked against the config by the
/// source phase), the container and blob by the path; `az://` names the container only.
#[test]
fn azure_urls() {
    let o = parse_source_url("https://acmestorage.blob.core.windows.net/images/cats/a%20b.jpg")
        .unwrap();
    assert_eq!(o.provider, ProviderKind::Azure);
    assert_eq!(o.account.as_deref(), Some("acmestorage"));
    assert_eq!(
        (o.bucket.as_str(), o.key.as_str()),
        ("images", "cats/a b.jpg")
    );
    let o = parse_source_url("az://images/cats/a%20b.jpg").unwrap();
    assert_eq!((o.provider, o.account), (ProviderKind::Azure, None));
    assert_eq!(o.key, "cats/a%20b.jpg", "az:// keys are literal");
    for bad in [
        "https://acmestorage.blob.core.windows.net/images",
        "https://acmestorage.blob.core.windows.net/images/",
        "https://Acme_Storage.blob.core.windows.net/images/k",
        "https://ab.blob.core.windows.net/images/k",
        "https://acme.storage.blob.core.windows.net/images/k",
        "https://acmestorage.blob.core.windows.net/im--ages/k",
        "https://acmestorage.blob.core.windows.net/Images/k",
        "https://acmestorage.blob.core.windows.net:8443/images/k",
        "az://-images/k",
        "az://images/",
    ] {
        assert!(parse_source_url(bad).is_err(), "{bad}");
    }
}
