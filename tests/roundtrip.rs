//! Properties over generated inputs: a URL signed for (bucket, key, exp) verifies, and
//! only for that triple; a key written into a proxy path comes back as the same key.

use bucketfront::BucketPattern;
use bucketfront::config::{Config, Secret, SigningKey, TenantConfig};
use bucketfront::{self as auth, SignatureParams, Tenants};
use proptest::prelude::*;

const SECRET: &str = "roundtrip-signing-secret";
const NOW: u64 = 1_800_000_000;

fn tenants() -> Tenants {
    let config = Config {
        tenants: vec![TenantConfig {
            name: "t".into(),
            buckets: vec![BucketPattern::parse("b-*").unwrap()],
            signing_keys: vec![SigningKey {
                id: "k1".into(),
                secret: Secret::new(SECRET),
            }],
            expected_owner: Some("111122223333".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    Tenants::from_config(&config.validated().unwrap())
}

fn params(exp: u64, sig: String) -> SignatureParams {
    SignatureParams {
        exp: Some(exp.to_string()),
        sig: Some(sig),
        kid: None,
        variant: None,
    }
}

proptest! {
    #[test]
    fn sign_then_verify(suffix in "[a-z0-9-]{1,20}", key in "\\PC{1,80}", ahead in 1u64..(7 * 24 * 3600), other in "\\PC{1,80}") {
        let tenants = tenants();
        let bucket = format!("b-{suffix}");
        let tenant = tenants.for_bucket(&bucket).unwrap();
        let exp = NOW + ahead;
        let sig = auth::sign(SECRET.as_bytes(), &bucket, &key, exp);
        prop_assert!(auth::verify(tenant, &bucket, &key, &params(exp, sig.clone()), NOW).is_ok());
        if other != key {
            prop_assert!(auth::verify(tenant, &bucket, &other, &params(exp, sig.clone()), NOW).is_err());
        }
        prop_assert!(auth::verify(tenant, &bucket, &key, &params(exp + 1, sig), NOW).is_err());
    }

    #[test]
    fn key_to_path_to_key(key in "[^\u{0}]{1,100}") {
        let path = format!("/b-1/{}", bucketfront::encode_path(&key));
        let parsed = bucketfront::parse_path(&path);
        // Keys with '.'/'..' segments or empty segments may be refused, never changed.
        if let Ok((bucket, back)) = parsed {
            prop_assert_eq!(bucket, "b-1");
            prop_assert_eq!(back, key);
        }
    }
}
