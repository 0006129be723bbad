//! What `POST /purge` (admin listener) and `bucketfront purge` drop: one object, every
//! object under a key prefix of a bucket, or everything of one tenant. The request body
//! is JSON: `{"bucket": B, "key": K}`, `{"bucket": B, "prefix": P}` or `{"tenant": T}`.

use serde::{Deserialize, Serialize};

/// A purge request, as sent on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A validated purge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Object { bucket: String, key: String },
    Prefix { bucket: String, prefix: String },
    Tenant(String),
}

impl TryFrom<PurgeRequest> for Selector {
    type Error = &'static str;
    fn try_from(r: PurgeRequest) -> Result<Selector, &'static str> {
        match (r.bucket, r.key, r.prefix, r.tenant) {
            (Some(bucket), Some(key), None, None) => Ok(Selector::Object { bucket, key }),
            (Some(bucket), None, Some(prefix), None) => Ok(Selector::Prefix { bucket, prefix }),
            (None, None, None, Some(tenant)) => Ok(Selector::Tenant(tenant)),
            _ => Err(
                "send one of {\"bucket\": B, \"key\": K}, {\"bucket\": B, \"prefix\": P} or {\"tenant\": T}",
            ),
        }
    }
}

impl Selector {
    /// Whether the object `bucket`/`key` is selected; `owner` is the name of the tenant
    /// owning `bucket`, if any.
    pub(crate) fn matches(&self, bucket: &str, key: &str, owner: Option<&str>) -> bool {
        match self {
            Selector::Object { bucket: b, key: k } => b == bucket && k == key,
            Selector::Prefix { bucket: b, prefix } => {
                b == bucket && key.starts_with(prefix.as_str())
            }
            Selector::Tenant(t) => owner == Some(t.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Selector, String> {
        let r: PurgeRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Selector::try_from(r).map_err(String::from)
    }

    #[test]
    fn requests_and_what_they_select() {
        let one = parse(r#"{"bucket": "b", "key": "cats/1.jpg"}"#).unwrap();
        assert!(one.matches("b", "cats/1.jpg", None));
        assert!(!one.matches("b", "cats/1.jpgx", None));
        assert!(!one.matches("c", "cats/1.jpg", None));
        let prefix = parse(r#"{"bucket": "b", "prefix": "cats/"}"#).unwrap();
        assert!(prefix.matches("b", "cats/2.jpg", None));
        assert!(!prefix.matches("b", "dogs/2.jpg", None));
        let tenant = parse(r#"{"tenant": "acme"}"#).unwrap();
        assert!(tenant.matches("x", "y", Some("acme")));
        assert!(!tenant.matches("x", "y", Some("other")));
        assert!(!tenant.matches("x", "y", None));
        for bad in [
            r#"{}"#,
            r#"{"bucket": "b"}"#,
            r#"{"key": "k"}"#,
            r#"{"bucket": "b", "key": "k", "prefix": "p"}"#,
            r#"{"tenant": "t", "bucket": "b", "key": "k"}"#,
            r#"{"bucket": "b", "key": "k", "extra": 1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
