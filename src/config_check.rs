//! Semantic validation of a parsed [`Config`]: the rules that serde cannot express
//! (a tenant that must sign but has no keys, a bucket claimed by two tenants, …).
//! Each failure names the key and says how to fix it.

use std::path::Path;

use crate::config::{Config, ConfigError, ProviderKind};
use crate::pattern::BucketPattern;
use crate::source::validate_bucket;

type Failure = (String, String);

fn fail<T>(key: impl Into<String>, reason: impl Into<String>) -> Result<T, Failure> {
    Err((key.into(), reason.into()))
}

pub(crate) fn validate(c: &Config) -> Result<(), Failure> {
    if let Some(disk) = &c.cache.disk {
        if disk.path.as_os_str().is_empty() {
            return fail("cache.disk.path", "must name a directory");
        }
        if disk.max_size.0 < c.cache.max_object_size.0 {
            return fail(
                "cache.disk.max_size",
                "must be at least cache.max_object_size (one object must fit)",
            );
        }
    }
    validate_variants(&c.variants)?;
    if c.server.max_connections == 0 {
        return fail("server.max_connections", "must be at least 1");
    }
    if c.server.max_connections_per_client == 0 {
        return fail("server.max_connections_per_client", "must be at least 1");
    }
    if http::HeaderValue::from_str(&c.server.cache_control).is_err() {
        return fail("server.cache_control", "is not a valid header value");
    }
    for (i, peer) in c.fleet.peers.iter().enumerate() {
        let ok = peer
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return fail(
                format!("fleet.peers[{i}]"),
                format!("{peer:?} is not an admin address like \"10.0.0.2:9090\""),
            );
        }
    }
    if c.origin.max_attempts == 0 {
        return fail("origin.max_attempts", "must be at least 1");
    }
    if c.cache.max_object_size.0 > c.cache.max_memory.0 {
        return fail("cache.max_object_size", "must not exceed cache.max_memory");
    }
    if c.presign.refresh_before.0 >= c.presign.expires_in.0 {
        return fail(
            "presign.refresh_before",
            "must be shorter than presign.expires_in",
        );
    }
    validate_tenants(c)?;
    validate_buckets(c)
}

fn validate_variants(v: &crate::config::Variants) -> Result<(), Failure> {
    if let Some(w) = v
        .widths
        .iter()
        .find(|w| !(1..=MAX_VARIANT_SIDE).contains(*w))
    {
        return fail(
            "variants.widths",
            format!("{w} is not a width from 1 to {MAX_VARIANT_SIDE}"),
        );
    }
    if v.max_source_pixels == 0 {
        return fail("variants.max_source_pixels", "must be at least 1");
    }
    if v.max_concurrent_renders == 0 {
        return fail("variants.max_concurrent_renders", "must be at least 1");
    }
    if v.render_timeout.0.is_zero() {
        return fail("variants.render_timeout", "must be longer than 0s");
    }
    Ok(())
}

/// The largest `w`/`h` a config may allow: 8192² RGBA is 256 MiB of pixels.
const MAX_VARIANT_SIDE: u32 = 8192;

fn validate_tenants(c: &Config) -> Result<(), Failure> {
    let mut claimed: Vec<(&BucketPattern, &str)> = Vec::new();
    for (i, t) in c.tenants.iter().enumerate() {
        let at = |k: &str| format!("tenants[{i}].{k}");
        if t.name.is_empty() || c.tenants.iter().filter(|o| o.name == t.name).count() > 1 {
            return fail(
                at("name"),
                format!("{:?} must be non-empty and unique", t.name),
            );
        }
        if t.cache_control
            .as_deref()
            .is_some_and(|cc| http::HeaderValue::from_str(cc).is_err())
        {
            return fail(at("cache_control"), "is not a valid header value");
        }
        if t.require_signature && t.signing_keys.is_empty() {
            return fail(
                at("signing_keys"),
                format!(
                    "tenant {:?} has require_signature = true but no signing_keys; add one or set require_signature = false",
                    t.name
                ),
            );
        }
        for (k, key) in t.signing_keys.iter().enumerate() {
            if key.id.is_empty() || t.signing_keys.iter().filter(|o| o.id == key.id).count() > 1 {
                return fail(
                    at(&format!("signing_keys[{k}].id")),
                    "must be non-empty and unique",
                );
            }
            if key.secret.expose().len() < 16 {
                return fail(
                    at(&format!("signing_keys[{k}].secret")),
                    "must be at least 16 bytes",
                );
            }
        }
        if let Some(role) = &t.assume_role
            && !role.role_arn.starts_with("arn:")
        {
            return fail(
                at("assume_role.role_arn"),
                "must be a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
            );
        }
        if let Some(owner) = &t.expected_owner
            && (owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()))
        {
            return fail(at("expected_owner"), "must be a 12-digit AWS account id");
        }
        if t.expected_owner.is_none()
            && let Some(glob) = t
                .buckets
                .iter()
                .find(|p| matches!(p, BucketPattern::Prefix(_)))
        {
            return fail(
                at("expected_owner"),
                format!(
                    "tenant {:?} claims the bucket glob \"{glob}\": set expected_owner to the 12-digit account that owns those buckets (S3 bucket names are global: anyone can create one that matches the glob, and it would be served as this tenant's)",
                    t.name
                ),
            );
        }
        for (b, pattern) in t.buckets.iter().enumerate() {
            if let BucketPattern::Exact(name) = pattern {
                // Either provider's rules: GCS names may hold '_'.
                validate_bucket(name, ProviderKind::Gcs)
                    .map_err(|e| (at(&format!("buckets[{b}]")), e.message))?;
            }
            if let Some((_, other)) = claimed.iter().find(|(q, _)| q.overlaps(pattern)) {
                return fail(
                    at(&format!("buckets[{b}]")),
                    format!(
                        "\"{pattern}\" overlaps a bucket of tenant {other:?}; one tenant per bucket"
                    ),
                );
            }
            claimed.push((pattern, &t.name));
        }
    }
    Ok(())
}

fn validate_buckets(c: &Config) -> Result<(), Failure> {
    for (i, b) in c.buckets.iter().enumerate() {
        let at = |k: &str| format!("buckets[{i}].{k}");
        validate_bucket(&b.name, b.provider).map_err(|e| (at("name"), e.message))?;
        if c.buckets.iter().filter(|o| o.name == b.name).count() > 1 {
            return fail(at("name"), format!("bucket {:?} is listed twice", b.name));
        }
        let owned = c
            .tenants
            .iter()
            .any(|t| t.buckets.iter().any(|p| p.matches(&b.name)));
        if !owned {
            return fail(
                at("name"),
                format!(
                    "bucket {:?} belongs to no tenant; add it to a tenant's buckets",
                    b.name
                ),
            );
        }
        if let Some(endpoint) = &b.endpoint {
            let ok = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                && endpoint
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.host().is_some());
            if !ok {
                return fail(
                    at("endpoint"),
                    format!("{endpoint:?} is not an http(s) URL"),
                );
            }
        }
        if b.access_key.is_some() != b.secret_key.is_some() {
            return fail(at("secret_key"), "access_key and secret_key go together");
        }
        if b.provider == ProviderKind::Gcs && c.gcs.is_none() && b.access_key.is_none() {
            return fail(
                at("provider"),
                "a GCS bucket needs a [gcs] section with the HMAC keys",
            );
        }
        validate_azure(c, b).map_err(|(k, why)| (at(&k), why))?;
        if b.request_payer && b.provider != ProviderKind::S3 {
            return fail(
                at("request_payer"),
                "request_payer is S3's Requester Pays; remove it from this bucket",
            );
        }
    }
    Ok(())
}

/// An Azure container needs its account and one way in: the platform's app in the
/// customer's directory, or the customer's SAS. The Azure keys mean nothing elsewhere.
fn validate_azure(c: &Config, b: &crate::config::Bucket) -> Result<(), Failure> {
    if b.provider != ProviderKind::Azure {
        for (key, set) in [
            ("account", b.account.is_some()),
            ("directory", b.directory.is_some()),
            ("sas", b.sas.is_some()),
        ] {
            if set {
                return fail(
                    key,
                    "only an Azure container (provider = \"azure\") has this key",
                );
            }
        }
        return Ok(());
    }
    let Some(account) = &b.account else {
        return fail(
            "account",
            "an Azure container needs the storage account that holds it",
        );
    };
    let account_ok = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
    if !account_ok {
        return fail(
            "account",
            format!(
                "{account:?} is not a storage account name (3 to 24 lowercase letters and digits)"
            ),
        );
    }
    if b.access_key.is_some() || b.region.is_some() || b.path_style {
        return fail(
            "provider",
            "an Azure container takes account, directory or sas, and endpoint; not S3's keys, region or path_style",
        );
    }
    match (&b.sas, &b.directory) {
        (Some(_), Some(_)) => fail(
            "sas",
            "set either sas (the customer's container SAS) or directory (the platform's app in the customer's directory), not both",
        ),
        (Some(sas), None) => {
            let q = sas.expose().trim_start_matches('?');
            if !q.split('&').any(|p| p.starts_with("sig=")) {
                return fail("sas", "this is not a SAS query string (it has no sig=)");
            }
            Ok(())
        }
        (None, Some(directory)) => {
            let Some(azure) = &c.azure else {
                return fail(
                    "directory",
                    "reading a container in the customer's directory needs an [azure] section with the platform app's client_id and client_secret or federated_token_file",
                );
            };
            if azure.client_secret.is_none() == azure.federated_token_file.is_none() {
                return Err((
                    "directory".into(),
                    "[azure] needs exactly one of client_secret and federated_token_file".into(),
                ));
            }
            if !azure.authority.starts_with("https://") {
                return Err((
                    "directory".into(),
                    "[azure] authority must be an https:// URL".into(),
                ));
            }
            if directory.is_empty()
                || !directory
                    .bytes()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'.')
            {
                return fail(
                    "directory",
                    format!("{directory:?} is not an Entra tenant id (a GUID) or domain"),
                );
            }
            Ok(())
        }
        (None, None) => fail(
            "directory",
            "an Azure container needs directory (the customer's Entra tenant id, for the platform's app) or sas (a container SAS the customer issued)",
        ),
    }
}

/// Reading a config is parsing plus the checks above; it lives here, above the modules
/// the checks use, so that `config` (the schema) imports none of them.
impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        Config::parse(&text, path)
    }

    /// Validates a config built in code, as [`Config::parse`] validates a file's.
    pub fn validated(self) -> Result<Config, ConfigError> {
        validate(&self)
            .map_err(|(key, reason)| ConfigError::new(Path::new("(in code)"), key, reason))?;
        Ok(self)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut reason = inner.message().replace('\n', " ");
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                reason = format!("{reason} (line {line})");
            }
            let key = if key == "." {
                "(top level)".to_string()
            } else {
                key
            };
            ConfigError::new(path, key, reason)
        })?;
        validate(&config).map_err(|(key, reason)| ConfigError::new(path, key, reason))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    const TENANT: &str =
        "[[tenants]]\nname = \"a\"\nbuckets = [\"a-img\"]\nrequire_signature = false\n";

    #[test]
    fn variants_have_the_contract_defaults_and_checked_limits() {
        let ok = parse(TENANT).unwrap();
        assert_eq!(ok.variants.widths, vec![64, 128, 256, 512, 1024, 2048]);
        assert_eq!(ok.variants.max_concurrent_renders, 2);
        let set = parse(&format!(
            "[variants]\nwidths = [100, 200]\nmax_source_pixels = 1000\n\
             max_concurrent_renders = 4\nrender_timeout = \"2s\"\n{TENANT}"
        ))
        .unwrap();
        assert_eq!(set.variants.widths, vec![100, 200]);
        assert_eq!(set.variants.render_timeout.0.as_secs(), 2);
        for (text, key) in [
            ("widths = [0]", "variants.widths"),
            ("widths = [9000]", "variants.widths"),
            ("max_source_pixels = 0", "variants.max_source_pixels"),
            (
                "max_concurrent_renders = 0",
                "variants.max_concurrent_renders",
            ),
            ("render_timeout = \"0s\"", "variants.render_timeout"),
            ("quality = 3", "quality"),
        ] {
            let err = parse(&format!("[variants]\n{text}\n{TENANT}")).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_disk_tier_needs_a_path_and_room_for_one_object() {
        let ok = parse(&format!(
            "[cache.disk]\npath = \"/var/cache/b\"\nmax_size = \"10GiB\"\n{TENANT}"
        ))
        .unwrap();
        let disk = ok.cache.disk.unwrap();
        assert_eq!(disk.max_size.0, 10 << 30);
        for (text, key) in [
            ("[cache.disk]\npath = \"/var/cache/b\"\n", "max_size"),
            (
                "[cache.disk]\npath = \"\"\nmax_size = \"1GiB\"\n",
                "cache.disk.path",
            ),
            (
                "[cache.disk]\npath = \"/b\"\nmax_size = \"1MiB\"\n",
                "cache.disk.max_size",
            ),
        ] {
            let err = parse(&format!("{text}{TENANT}")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn short_file_is_valid() {
        let c = parse(TENANT).unwrap();
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.cache.max_memory.0, 512 << 20);
        assert_eq!(c.presign.expires_in.0.as_secs(), 86_400);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let cases = [
            (
                "[server]\nlisten = \"nope\"\n",
                "test.toml: server.listen: ",
            ),
            ("[server]\nbogus = 1\n", "unknown field `bogus`"),
            (
                "[cache]\nttl = \"soon\"\n",
                "test.toml: cache.ttl: \"soon\" is not a duration",
            ),
            ("[cache]\nmax_memory = \"lots\"\n", "cache.max_memory"),
            (
                "[[tenants]]\nname = \"a\"\nbuckets = [\"a-img\"]\n",
                "tenants[0].signing_keys: tenant \"a\" has require_signature",
            ),
            (
                "[[tenants]]\nname=\"a\"\nbuckets=[\"x\"]\nsigning_keys=[{id=\"k\",secret=\"env:BF_TEST_UNSET_VAR\"}]\n",
                "BF_TEST_UNSET_VAR is not set",
            ),
            (
                "[[tenants]]\nname=\"a\"\nbuckets=[\"acme-*\"]\nexpected_owner=\"111122223333\"\nrequire_signature=false\n[[tenants]]\nname=\"b\"\nbuckets=[\"acme-raw-*\"]\nexpected_owner=\"111122223333\"\nrequire_signature=false\n",
                "tenants[1].buckets[0]: \"acme-raw-*\" overlaps a bucket of tenant \"a\"",
            ),
            // A glob in S3's global namespace needs its owner named.
            (
                "[[tenants]]\nname=\"a\"\nbuckets=[\"acme-img\", \"acme-raw-*\"]\nrequire_signature=false\n",
                "tenants[0].expected_owner: tenant \"a\" claims the bucket glob \"acme-raw-*\"",
            ),
            (
                &format!("{TENANT}[[buckets]]\nname = \"other-b\"\n"),
                "belongs to no tenant",
            ),
            (
                &format!("{TENANT}[[buckets]]\nname = \"a-img\"\nprovider = \"ftp\"\n"),
                "buckets[0].provider",
            ),
            (
                &format!(
                    "{TENANT}[gcs]\naccess_key = \"k\"\nsecret_key = \"s\"\n[[buckets]]\nname = \"a-img\"\nprovider = \"gcs\"\nrequest_payer = true\n"
                ),
                "buckets[0].request_payer: request_payer is S3's Requester Pays",
            ),
            (
                "[cors]\nallowed_origins = [\"example.com\"]\n",
                "cors.allowed_origins[0]",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn secrets_from_env_and_credentials_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme-key"), "0123456789abcdef-from-file\n").unwrap();
        // SAFETY: tests in this module are the only readers of these two variables.
        unsafe {
            std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
            std::env::set_var("BF_TEST_KEY", "0123456789abcdef-from-env");
        }
        let c = parse(
            "[[tenants]]\nname=\"a\"\nbuckets=[\"a-img\"]\nsigning_keys=[{id=\"k1\",secret=\"cred:acme-key\"},{id=\"k2\",secret=\"env:BF_TEST_KEY\"}]\n",
        )
        .unwrap();
        assert_eq!(
            c.tenants[0].signing_keys[0].secret.expose(),
            "0123456789abcdef-from-file"
        );
        assert_eq!(
            c.tenants[0].signing_keys[1].secret.expose(),
            "0123456789abcdef-from-env"
        );
        assert!(!format!("{c:?}").contains("from-env"));
    }
}
