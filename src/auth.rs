//! Tenancy and signed URLs (README.md, "Signed URLs"): which tenant owns a bucket, and
//! whether a request carries a valid signature for it. Pure logic, no I/O; runs in the
//! authorize phase, before any cache lookup or upstream call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{self, Config};
use crate::error::Error;
use crate::pattern::BucketPattern;

/// A signing key, its HMAC state keyed once: verification starts from it instead of
/// hashing the key again on every request.
#[derive(Debug)]
struct Key {
    id: String,
    secret: Vec<u8>,
    keyed: hmac::Key,
}

impl Key {
    fn new(id: &str, secret: &[u8]) -> Key {
        Key {
            id: id.to_string(),
            secret: secret.to_vec(),
            keyed: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

/// One tenant as the request path needs it.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub require_signature: bool,
    /// Several keys allow rotation.
    keys: Vec<Key>,
    pub config: config::TenantConfig,
}

impl Tenant {
    /// The first key's id and secret: what `bucketfront sign` uses by default.
    pub fn signing_key(&self, id: Option<&str>) -> Option<(&str, &[u8])> {
        self.keys
            .iter()
            .find(|k| id.is_none_or(|id| id == k.id))
            .map(|k| (k.id.as_str(), k.secret.as_slice()))
    }
}

/// Bucket → tenant resolution, built once per config.
#[derive(Debug, Default)]
pub struct Tenants {
    exact: HashMap<String, Arc<Tenant>>,
    prefixes: Vec<(String, Arc<Tenant>)>,
    all: Vec<Arc<Tenant>>,
}

impl Tenants {
    pub fn from_config(config: &Config) -> Tenants {
        let mut t = Tenants::default();
        for tc in &config.tenants {
            let tenant = Arc::new(Tenant {
                name: tc.name.clone(),
                require_signature: tc.require_signature,
                keys: tc
                    .signing_keys
                    .iter()
                    .map(|k| Key::new(&k.id, k.secret.expose().as_bytes()))
                    .collect(),
                config: tc.clone(),
            });
            for pattern in &tc.buckets {
                match pattern {
                    BucketPattern::Exact(name) => {
                        t.exact.insert(name.clone(), tenant.clone());
                    }
                    BucketPattern::Prefix(prefix) => {
                        t.prefixes.push((prefix.clone(), tenant.clone()))
                    }
                }
            }
            t.all.push(tenant);
        }
        t
    }

    /// The tenant owning `bucket`; config validation guarantees at most one.
    pub fn for_bucket(&self, bucket: &str) -> Option<&Arc<Tenant>> {
        self.exact.get(bucket).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| bucket.starts_with(prefix.as_str()))
                .map(|(_, t)| t)
        })
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.all.iter().find(|t| t.name == name)
    }

    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.all
    }
}

/// The `exp`, `sig` and `kid` query parameters of a signed request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    pub exp: Option<String>,
    pub sig: Option<String>,
    pub kid: Option<String>,
    /// A variant's parameters as signed: `fit=cover&fmt=webp&w=256` (sorted by name).
    pub variant: Option<String>,
}

/// The string that is signed: `v1\nbucket\nkey\nexp`, and `\nvariant` for a variant.
fn string_to_sign(bucket: &str, key: &str, exp: u64, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("v1\n{bucket}\n{key}\n{exp}\n{v}"),
        None => format!("v1\n{bucket}\n{key}\n{exp}"),
    }
}

/// `base64url_nopad(HMAC-SHA256(secret, "v1\n" + bucket + "\n" + key + "\n" + exp))`.
pub fn sign(secret: &[u8], bucket: &str, key: &str, exp: u64) -> String {
    sign_variant(secret, bucket, key, exp, None)
}

/// [`sign`] for a variant: `variant` is its parameters sorted by name, `name=value`
/// joined by `&` (the fifth line of the signed string).
pub(crate) fn sign_variant(
    secret: &[u8],
    bucket: &str,
    key: &str,
    exp: u64,
    variant: Option<&str>,
) -> String {
    let mac = hmac::Key::new(hmac::HMAC_SHA256, secret);
    URL_SAFE_NO_PAD.encode(hmac::sign(
        &mac,
        string_to_sign(bucket, key, exp, variant).as_bytes(),
    ))
}

/// The query of a signed URL: `exp=…&sig=…`, and `&kid=…` when given.
pub fn signed_query(secret: &[u8], bucket: &str, key: &str, exp: u64, kid: Option<&str>) -> String {
    signed_variant_query(secret, bucket, key, exp, kid, None)
}

/// The query of a signed variant URL: the variant's parameters (`w=256&fmt=auto`, in any
/// order) followed by `exp`, `sig` and `kid`.
pub fn signed_variant_query(
    secret: &[u8],
    bucket: &str,
    key: &str,
    exp: u64,
    kid: Option<&str>,
    variant: Option<&str>,
) -> String {
    let signed = variant.map(canonical_variant);
    let sig = sign_variant(secret, bucket, key, exp, signed.as_deref());
    let mut q = match variant {
        Some(v) => format!("{v}&exp={exp}&sig={sig}"),
        None => format!("exp={exp}&sig={sig}"),
    };
    if let Some(kid) = kid {
        q.push_str("&kid=");
        q.push_str(&crate::source::encode_path(kid));
    }
    q
}

/// `w=256&fmt=auto` → `fmt=auto&w=256`: the parameters sorted by name.
fn canonical_variant(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|p| p.split_once('=').map_or(*p, |(k, _)| k));
    pairs.join("&")
}

/// Whole seconds since the UNIX epoch (0 before it): the unit of `exp`.
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The reasons a signature is refused; all answer the same 403, the log tells which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoTenant,
    Missing,
    Malformed,
    Expired,
    /// `exp` further ahead than the tenant's `max_signature_ttl`.
    TooFarAhead,
    UnknownKey,
    Mismatch,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoTenant => "bucket_of_no_tenant",
            Refusal::Missing => "signature_missing",
            Refusal::Malformed => "signature_malformed",
            Refusal::Expired => "signature_expired",
            Refusal::TooFarAhead => "signature_exp_too_far_ahead",
            Refusal::UnknownKey => "signature_unknown_key",
            Refusal::Mismatch => "signature_mismatch",
        }
    }

    /// One message for every refusal, so that the answer does not tell whether the
    /// bucket has a tenant (the log line has the reason).
    pub fn into_error(self) -> Error {
        Error::forbidden(
            "this URL needs a valid, unexpired signature (exp, sig) from the platform that \
             issued it, and a bucket this proxy serves",
        )
        .with_detail(self.as_str())
    }
}

/// What a request's signature says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed `exp` (parsed strictly, in the future, within `max_signature_ttl`);
    /// `None` for a tenant that does not require signatures.
    pub expires: Option<SystemTime>,
}

impl Verified {
    /// Whether [`verify`] would still accept the request at `now` (UNIX seconds), its
    /// keys unchanged: the time is the one input of the check that moves on its own.
    pub fn holds_at(&self, tenant: &Tenant, now: u64) -> bool {
        self.expires
            .is_none_or(|exp| in_window(tenant, unix_secs(exp), now).is_ok())
    }
}

/// `exp` is in the future, and no further ahead than the tenant allows.
fn in_window(tenant: &Tenant, exp_secs: u64, now: u64) -> Result<(), Refusal> {
    if exp_secs <= now {
        return Err(Refusal::Expired);
    }
    if exp_secs - now > tenant.config.max_signature_ttl.0.as_secs() {
        return Err(Refusal::TooFarAhead);
    }
    Ok(())
}

/// Checks a request's signature for `(bucket, key)` against the tenant's keys.
/// `now` is UNIX seconds, passed in so that tests control the clock.
pub fn verify(
    tenant: &Tenant,
    bucket: &str,
    key: &str,
    params: &SignatureParams,
    now: u64,
) -> Result<Verified, Refusal> {
    if !tenant.require_signature {
        return Ok(Verified { expires: None });
    }
    let (Some(exp), Some(sig)) = (&params.exp, &params.sig) else {
        return Err(Refusal::Missing);
    };
    // Canonical decimal only: one `exp` value has one spelling, so a signature cannot
    // be replayed with `0`-padded or `+`-prefixed variants.
    let canonical = exp.len() <= 12
        && exp.bytes().all(|b| b.is_ascii_digit())
        && !(exp.len() > 1 && exp.starts_with('0'));
    let exp_secs: u64 = match exp.parse() {
        Ok(v) if canonical => v,
        _ => return Err(Refusal::Malformed),
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig.as_bytes()) else {
        return Err(Refusal::Malformed);
    };
    in_window(tenant, exp_secs, now)?;
    let message = string_to_sign(bucket, key, exp_secs, params.variant.as_deref());
    if let Some(kid) = &params.kid
        && !tenant.keys.iter().any(|k| &k.id == kid)
    {
        return Err(Refusal::UnknownKey);
    }
    // `hmac::verify` compares in constant time; every candidate key is tried so the time
    // taken does not depend on which one (if any) matched.
    let mut ok = false;
    for k in tenant
        .keys
        .iter()
        .filter(|k| params.kid.as_ref().is_none_or(|kid| kid == &k.id))
    {
        ok |= hmac::verify(&k.keyed, message.as_bytes(), &sig).is_ok();
    }
    if !ok {
        return Err(Refusal::Mismatch);
    }
    Ok(Verified {
        expires: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(exp_secs)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::verify`], its expiry checked apart (`signed_requests_carry_their_expiry`).
    fn verify(
        tenant: &Tenant,
        bucket: &str,
        key: &str,
        params: &SignatureParams,
        now: u64,
    ) -> Result<(), Refusal> {
        super::verify(tenant, bucket, key, params, now).map(|_| ())
    }

    #[test]
    fn signed_requests_carry_their_expiry() {
        let t = tenant(&[("k1", "secret-one")]);
        let good = sign(b"secret-one", "b", "k", 2_000);
        let v = super::verify(&t, "b", "k", &params("2000", &good, None), 1_000).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000);
        assert_eq!(v.expires, Some(at));
        let mut open = tenant(&[]);
        open.require_signature = false;
        let v = super::verify(&open, "b", "k", &params("2000", &good, None), 1_000).unwrap();
        assert_eq!(v.expires, None, "an exp nobody checked says nothing");
    }

    /// A check remembered for later holds exactly while `verify` would still say yes.
    #[test]
    fn a_verified_signature_holds_only_within_its_window() {
        let mut t = tenant(&[("k1", "secret-one")]);
        t.config.max_signature_ttl = crate::config::Dur::secs(1_500);
        let good = sign(b"secret-one", "b", "k", 2_000);
        let v = super::verify(&t, "b", "k", &params("2000", &good, None), 1_000).unwrap();
        // A clock set back puts `exp` too far ahead; one moved on, past it.
        for now in [0, 499, 500, 1_000, 1_999, 2_000, 2_001] {
            let again = verify(&t, "b", "k", &params("2000", &good, None), now);
            assert_eq!(v.holds_at(&t, now), again.is_ok(), "at {now}");
        }
        assert!(!v.holds_at(&t, 499) && v.holds_at(&t, 500));
        assert!(v.holds_at(&t, 1_999) && !v.holds_at(&t, 2_000));
        let mut open = tenant(&[]);
        open.require_signature = false;
        let v = super::verify(&open, "b", "k", &SignatureParams::default(), 1_000).unwrap();
        assert!(v.holds_at(&open, u64::MAX));
    }

    fn tenant(keys: &[(&str, &str)]) -> Tenant {
        Tenant {
            name: "acme".into(),
            require_signature: true,
            keys: keys
                .iter()
                .map(|(k, s)| Key::new(k, s.as_bytes()))
                .collect(),
            config: config::TenantConfig {
                name: "acme".into(),
                buckets: vec![],
                require_signature: true,
                signing_keys: vec![],
                assume_role: None,
                expected_owner: None,
                cache_control: None,
                max_signature_ttl: crate::config::Dur::secs(7 * 24 * 3600),
            },
        }
    }

    fn params(exp: &str, sig: &str, kid: Option<&str>) -> SignatureParams {
        SignatureParams {
            exp: Some(exp.into()),
            sig: Some(sig.into()),
            kid: kid.map(String::from),
            variant: None,
        }
    }

    /// The fixed test vector published in the README (Python and JavaScript recipes).
    #[test]
    fn readme_test_vector() {
        let sig = sign(b"demo-secret", "acme-images", "cats/1.jpg", 1_900_000_000);
        assert_eq!(sig, "Bny-6dO5Wnq2XA9HKfn8xoSlHPLX8fz-yO46WPnoVDM");
    }

    #[test]
    fn a_variant_is_signed_on_a_fifth_line() {
        let t = tenant(&[("k1", "secret-one")]);
        let with = |variant: Option<&str>, sig: &str| SignatureParams {
            variant: variant.map(String::from),
            ..params("2000", sig, None)
        };
        let thumb = sign_variant(b"secret-one", "b", "k", 2_000, Some("fmt=auto&w=256"));
        let plain = sign(b"secret-one", "b", "k", 2_000);
        assert_ne!(thumb, plain);
        assert_eq!(
            verify(&t, "b", "k", &with(Some("fmt=auto&w=256"), &thumb), 1_000),
            Ok(())
        );
        // Another size, or the original, with the thumbnail's signature: refused.
        for (variant, sig) in [
            (Some("fmt=auto&w=2048"), &thumb),
            (None, &thumb),
            (Some("fmt=auto&w=256"), &plain),
        ] {
            assert_eq!(
                verify(&t, "b", "k", &with(variant, sig), 1_000),
                Err(Refusal::Mismatch),
                "{variant:?}"
            );
        }
        // The query builder sorts the signed line, whatever order the URL has.
        let q = signed_variant_query(b"secret-one", "b", "k", 2_000, None, Some("w=256&fmt=auto"));
        assert_eq!(q, format!("w=256&fmt=auto&exp=2000&sig={thumb}"));
    }

    #[test]
    fn verify_table() {
        let t = tenant(&[("k1", "secret-one"), ("k2", "secret-two")]);
        let now = 1_000;
        let good1 = sign(b"secret-one", "b", "k", 2_000);
        let good2 = sign(b"secret-two", "b", "k", 2_000);
        let other = sign(b"other-tenant", "b", "k", 2_000);
        let expired = sign(b"secret-one", "b", "k", 999);
        let cases: Vec<(SignatureParams, Result<(), Refusal>)> = vec![
            (params("2000", &good1, None), Ok(())),
            (params("2000", &good2, None), Ok(())),
            (params("2000", &good1, Some("k1")), Ok(())),
            (params("2000", &good1, Some("k2")), Err(Refusal::Mismatch)),
            (params("2000", &good1, Some("k9")), Err(Refusal::UnknownKey)),
            (params("2000", &other, None), Err(Refusal::Mismatch)),
            (params("2001", &good1, None), Err(Refusal::Mismatch)),
            (params("999", &expired, None), Err(Refusal::Expired)),
            (params("1000", &good1, None), Err(Refusal::Expired)),
            (params("abc", &good1, None), Err(Refusal::Malformed)),
            (params("+2000", &good1, None), Err(Refusal::Malformed)),
            (params("02000", &good1, None), Err(Refusal::Malformed)),
            // Further ahead than max_signature_ttl (7 days here), however well signed.
            (
                params("605801", &sign(b"secret-one", "b", "k", 605_801), None),
                Err(Refusal::TooFarAhead),
            ),
            (
                params("605800", &sign(b"secret-one", "b", "k", 605_800), None),
                Ok(()),
            ),
            (params("2000", "not base64!", None), Err(Refusal::Malformed)),
            (params("2000", "", None), Err(Refusal::Mismatch)),
            (SignatureParams::default(), Err(Refusal::Missing)),
        ];
        for (i, (p, want)) in cases.into_iter().enumerate() {
            assert_eq!(verify(&t, "b", "k", &p, now), want, "case {i}: {p:?}");
        }
        // The signature binds bucket and key.
        assert_eq!(
            verify(&t, "b2", "k", &params("2000", &good1, None), now),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify(&t, "b", "k2", &params("2000", &good1, None), now),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn unsigned_tenant_accepts_anything() {
        let mut t = tenant(&[]);
        t.require_signature = false;
        assert_eq!(verify(&t, "b", "k", &SignatureParams::default(), 5), Ok(()));
    }
}
