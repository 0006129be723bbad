//! `config.toml`: the schema of docs/config.md, its defaults and its validation.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file, the key
//! and the reason on one line. Secrets (`env:NAME`, `cred:NAME` or a literal) are
//! resolved while parsing, so a missing variable is reported with the key that needs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pattern::{BucketPattern, MediaRange, OriginPattern};

/// A config error: `file: key: reason`, printable on one line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub origin: Origin,
    pub cache: CacheConfig,
    pub presign: Presign,
    pub cors: CorsConfig,
    pub tenants: Vec<TenantConfig>,
    pub buckets: Buckets,
    pub embedded_store: EmbeddedStore,
    pub gcs: Option<Gcs>,
    pub azure: Option<Azure>,
    pub fleet: Fleet,
    pub variants: Variants,
}

/// `[variants]`: resized and re-encoded images (docs/variants.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Variants {
    /// The only values `w` and `h` may take (others 400); empty turns variants off.
    pub widths: Vec<u32>,
    /// Sources with more pixels are refused (422) before they are decoded.
    pub max_source_pixels: u64,
    /// Renders that run at once, each on a thread of the blocking pool.
    pub max_concurrent_renders: usize,
    /// A render (wait for a turn included) that takes longer answers 503.
    pub render_timeout: Dur,
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            widths: vec![64, 128, 256, 512, 1024, 2048],
            max_source_pixels: 50_000_000,
            max_concurrent_renders: 2,
            render_timeout: Dur::secs(10),
        }
    }
}

/// `[fleet]`: the instances that share this config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// Admin addresses (`host:port`) of every instance, for `bucketfront purge`.
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: Option<Tls>,
    pub header_read_timeout: Dur,
    pub max_connections: usize,
    /// Connections one client (a peer address, an IPv6 /64; not a trusted proxy) holds.
    pub max_connections_per_client: usize,
    pub cache_control: String,
    pub allowed_content_types: Vec<MediaRange>,
    pub drain_timeout: Dur,
    pub idle_timeout: Dur,
    pub send_timeout: Dur,
    pub max_connection_age: Dur,
    /// Peers whose `X-Forwarded-For` is believed for the client address in logs.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            header_read_timeout: Dur::secs(10),
            max_connections: 10_000,
            max_connections_per_client: 256,
            cache_control: "private, max-age=3600".into(),
            allowed_content_types: vec![MediaRange::parse("image/*").expect("a valid range")],
            drain_timeout: Dur::secs(30),
            idle_timeout: Dur::secs(60),
            send_timeout: Dur::secs(30),
            max_connection_age: Dur::secs(3600),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Server {
    /// The settings fixed at start (sockets, limits and deadlines of the listeners), by
    /// name, each with whether it differs in `other`. The destructuring is exhaustive: a
    /// new `[server]` key does not compile until it is put on one side or the other.
    pub fn restart_only_changes(&self, other: &Server) -> Vec<&'static str> {
        let Server {
            listen,
            admin_listen,
            tls,
            header_read_timeout,
            max_connections,
            max_connections_per_client,
            drain_timeout,
            idle_timeout,
            send_timeout,
            max_connection_age,
            // Reloadable: read per request.
            cache_control: _,
            allowed_content_types: _,
            trusted_proxies: _,
        } = self;
        [
            ("server.listen", *listen != other.listen),
            ("server.admin_listen", *admin_listen != other.admin_listen),
            ("server.tls (on/off)", tls.is_some() != other.tls.is_some()),
            (
                "server.header_read_timeout",
                *header_read_timeout != other.header_read_timeout,
            ),
            (
                "server.max_connections",
                *max_connections != other.max_connections,
            ),
            (
                "server.max_connections_per_client",
                *max_connections_per_client != other.max_connections_per_client,
            ),
            (
                "server.drain_timeout",
                *drain_timeout != other.drain_timeout,
            ),
            ("server.idle_timeout", *idle_timeout != other.idle_timeout),
            ("server.send_timeout", *send_timeout != other.send_timeout),
            (
                "server.max_connection_age",
                *max_connection_age != other.max_connection_age,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Origin {
    pub connect_timeout: Dur,
    pub first_byte_timeout: Dur,
    pub max_attempts: u32,
    /// Origin requests one tenant may have in flight; more wait (up to
    /// `first_byte_timeout`), then 503.
    pub max_concurrent_per_tenant: usize,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            connect_timeout: Dur::secs(2),
            first_byte_timeout: Dur::secs(10),
            max_attempts: 3,
            max_concurrent_per_tenant: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub max_memory: Size,
    pub max_object_size: Size,
    pub ttl: Dur,
    pub negative_ttl: Dur,
    pub stale_if_error: Dur,
    /// After an entry's lifetime, its old copy is served at once for this long while one
    /// background revalidation runs.
    pub stale_while_revalidate: Dur,
    /// Bytes of objects being fetched into the cache at once; a cold object that does
    /// not fit streams through uncached (`BYPASS`).
    pub fill_memory: Size,
    /// The disk tier under the memory tier; off when absent.
    pub disk: Option<DiskConfig>,
}

/// `[cache.disk]`: complete objects kept as files, found again after a restart.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// A directory of its own (created if missing); bucketfront owns what is under it.
    pub path: std::path::PathBuf,
    /// Bytes the files may take (each counted in whole 4 KiB blocks); the least
    /// recently used go first.
    pub max_size: Size,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_memory: Size(512 << 20),
            max_object_size: Size(16 << 20),
            ttl: Dur::secs(3600),
            negative_ttl: Dur::secs(30),
            stale_if_error: Dur::secs(3600),
            stale_while_revalidate: Dur::secs(60),
            fill_memory: Size(256 << 20),
            disk: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Presign {
    pub expires_in: Dur,
    pub refresh_before: Dur,
}

impl Default for Presign {
    fn default() -> Self {
        Presign {
            expires_in: Dur::secs(24 * 3600),
            refresh_before: Dur::secs(3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<OriginPattern>,
    pub max_age: Dur,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            max_age: Dur::secs(3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    pub buckets: Vec<BucketPattern>,
    /// Secure by default: a tenant must opt out of signed URLs explicitly.
    #[serde(default = "yes")]
    pub require_signature: bool,
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    pub assume_role: Option<AssumeRole>,
    pub expected_owner: Option<String>,
    /// Overrides `[server] cache_control` for this tenant's objects.
    pub cache_control: Option<String>,
    /// An `exp` further ahead than this is refused (403).
    #[serde(default = "week")]
    pub max_signature_ttl: Dur,
}

/// The defaults a file gets for the optional keys; `name` and `buckets` are empty (a
/// config built in code names them).
impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            name: String::new(),
            buckets: Vec::new(),
            require_signature: yes(),
            signing_keys: Vec::new(),
            assume_role: None,
            expected_owner: None,
            cache_control: None,
            max_signature_ttl: week(),
        }
    }
}

fn week() -> Dur {
    Dur::secs(7 * 24 * 3600)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub id: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    S3,
    Gcs,
    Azure,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::S3 => "s3",
            ProviderKind::Gcs => "gcs",
            ProviderKind::Azure => "azure",
        }
    }
}

/// An AWS partition: part of an S3 object's identity (the same bucket name in two
/// partitions is two buckets of two owners).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Partition {
    /// `aws`: the commercial regions, `.amazonaws.com`.
    #[default]
    #[serde(rename = "aws")]
    Aws,
    /// `aws-cn`: `cn-north-1`, `cn-northwest-1`, `.amazonaws.com.cn`.
    #[serde(rename = "aws-cn")]
    AwsCn,
    /// `aws-us-gov`: GovCloud, `us-gov-west-1`, `us-gov-east-1`.
    #[serde(rename = "aws-us-gov")]
    AwsUsGov,
}

impl Partition {
    /// The partition a region belongs to.
    pub fn of_region(region: &str) -> Partition {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub name: String,
    #[serde(default)]
    pub provider: ProviderKind,
    /// An S3 Requester Pays bucket: requests carry `x-amz-request-payer: requester`, and
    /// the platform pays for them.
    #[serde(default)]
    pub request_payer: bool,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// Static keys for an S3-compatible store (MinIO, R2, the embedded store); without
    /// them the bucket is read with the tenant's identity.
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    /// Azure: the storage account holding the container (`name`).
    pub account: Option<String>,
    /// Azure: the customer's Entra ID tenant (directory) id, where the platform's app
    /// (`[azure]`) obtains its token for the role the customer granted.
    pub directory: Option<String>,
    /// Azure: a container SAS the customer issued (read permission), instead of a token.
    pub sas: Option<Secret>,
}

impl Bucket {
    /// Azure: the account's blob endpoint (the configured one, else Azure's public one).
    pub fn azure_endpoint(&self) -> Option<String> {
        let account = self.account.as_deref()?;
        Some(match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{account}.blob.core.windows.net"),
        })
    }
}

/// The platform's own Entra ID application, which reads Azure containers in the
/// customers' directories (`[[buckets]] directory`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Azure {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// A federated token (workload identity, as `AZURE_FEDERATED_TOKEN_FILE`), read
    /// again for each token request.
    pub federated_token_file: Option<PathBuf>,
    /// Entra ID's login host (sovereign clouds; a stand-in in tests).
    #[serde(default = "azure_authority")]
    pub authority: String,
}

fn azure_authority() -> String {
    "https://login.microsoftonline.com".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedStore {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub root: PathBuf,
    pub demo_listen: SocketAddr,
    /// Keys the store accepts; generated at start-up when absent.
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        EmbeddedStore {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            root: PathBuf::from("demo/bucket"),
            demo_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            access_key: None,
            secret_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gcs {
    pub access_key: Secret,
    pub secret_key: Secret,
    #[serde(default = "gcs_endpoint")]
    pub endpoint: String,
}

fn gcs_endpoint() -> String {
    "https://storage.googleapis.com".into()
}

/// A duration written as `"250ms"`, `"30s"`, `"24h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"30s\" or \"24h\" ({e})"
            ))
        })
    }
}

/// A size written as `"512MiB"`, `"16MiB"`, `"4096"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|e| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"512MiB\" ({e})"))
            })
    }
}

/// A secret value, resolved while parsing from `env:NAME`, `cred:NAME` or a literal.
/// Its `Debug` never prints the value, so configs can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn resolve(spec: &str) -> Result<Secret, String> {
        if let Some(name) = spec.strip_prefix("env:") {
            return std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"));
        }
        if let Some(name) = spec.strip_prefix("cred:") {
            if name.contains('/') || name.is_empty() {
                return Err(format!(
                    "credential name {name:?} must be a plain file name"
                ));
            }
            let dir = std::env::var("CREDENTIALS_DIRECTORY").map_err(|_| {
                format!("cred:{name} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)")
            })?;
            let path = Path::new(&dir).join(name);
            return std::fs::read_to_string(&path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read credential {}: {e}", path.display()));
        }
        Ok(Secret(spec.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::resolve(&s).map_err(serde::de::Error::custom)
    }
}

/// The `[[buckets]]` entries, found by name through an index built on the first lookup:
/// a request looks its bucket up several times, and a platform configures one entry per
/// customer bucket (1,000 entries searched in order added 3-6 µs to a 4 KiB hit,
/// BENCHMARKS.md). Read as a `Vec`; any change through it drops the index.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    list: Vec<Bucket>,
    /// Name → the first entry of that name (what a search in order finds).
    index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl Buckets {
    /// The entry named `name`, if any.
    pub fn named(&self, name: &str) -> Option<&Bucket> {
        let index = self.index.get_or_init(|| {
            let mut index = std::collections::HashMap::with_capacity(self.list.len());
            for (i, b) in self.list.iter().enumerate() {
                index.entry(b.name.clone()).or_insert(i);
            }
            index
        });
        index.get(name).map(|&i| &self.list[i])
    }
}

impl From<Vec<Bucket>> for Buckets {
    fn from(list: Vec<Bucket>) -> Self {
        Buckets {
            list,
            index: std::sync::OnceLock::new(),
        }
    }
}

impl FromIterator<Bucket> for Buckets {
    fn from_iter<I: IntoIterator<Item = Bucket>>(iter: I) -> Self {
        Buckets::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Buckets {
    type Item = &'a Bucket;
    type IntoIter = std::slice::Iter<'a, Bucket>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl std::ops::Deref for Buckets {
    type Target = Vec<Bucket>;

    fn deref(&self) -> &Vec<Bucket> {
        &self.list
    }
}

impl std::ops::DerefMut for Buckets {
    fn deref_mut(&mut self) -> &mut Vec<Bucket> {
        // The caller may add, remove or rename entries.
        self.index = std::sync::OnceLock::new();
        &mut self.list
    }
}

impl<'de> Deserialize<'de> for Buckets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Bucket>::deserialize(d).map(Buckets::from)
    }
}

impl Config {
    /// The per-bucket settings for `bucket`, if any.
    pub fn bucket(&self, bucket: &str) -> Option<&Bucket> {
        self.buckets.named(bucket)
    }

    /// Whether `bucket` is named exactly by the config (a `[[buckets]]` entry, or a
    /// tenant's exact name), not only matched by a glob.
    pub fn names_exactly(&self, bucket: &str) -> bool {
        self.bucket(bucket).is_some()
            || self.tenants.iter().any(|t| {
                t.buckets
                    .iter()
                    .any(|p| matches!(p, BucketPattern::Exact(name) if name == bucket))
            })
    }

    /// The AWS partition `bucket` is read in: its region's (or its endpoint's, for an
    /// `.amazonaws.com.cn` one), else the commercial one.
    pub fn partition(&self, bucket: &str) -> Partition {
        let b = self.bucket(bucket);
        if b.and_then(|b| b.endpoint.as_deref())
            .is_some_and(|e| e.trim_end_matches('/').ends_with(".amazonaws.com.cn"))
        {
            return Partition::AwsCn;
        }
        b.and_then(|b| b.region.as_deref())
            .map_or(Partition::Aws, Partition::of_region)
    }

    /// The config file to use: `-c`, else `$BUCKETFRONT_CONFIG`, else `./config.toml`.
    pub fn default_path(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("BUCKETFRONT_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config.toml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str, region: &str) -> Bucket {
        Bucket {
            name: name.into(),
            region: Some(region.into()),
            ..Default::default()
        }
    }

    fn region<'a>(c: &'a Config, name: &str) -> Option<&'a str> {
        c.bucket(name).and_then(|b| b.region.as_deref())
    }

    #[test]
    fn buckets_are_found_by_name_and_changes_are_seen() {
        let mut c = Config::default();
        assert!(c.bucket("a").is_none());
        c.buckets.push(bucket("a", "eu-west-1"));
        c.buckets.push(bucket("b", "us-east-1"));
        // A second entry of a name: the first wins, as a search in order finds it.
        c.buckets.push(bucket("a", "ap-south-1"));
        assert_eq!(region(&c, "a"), Some("eu-west-1"));
        assert_eq!(region(&c, "b"), Some("us-east-1"));
        assert!(c.bucket("c").is_none());
        // Changes after a lookup built the index.
        c.buckets.push(bucket("c", "sa-east-1"));
        assert_eq!(region(&c, "c"), Some("sa-east-1"));
        c.buckets[1].name = "renamed".into();
        assert!(c.bucket("b").is_none());
        assert_eq!(region(&c, "renamed"), Some("us-east-1"));
        c.buckets.remove(0);
        assert_eq!(region(&c, "a"), Some("ap-south-1"));
        // A copy finds the same.
        let copy = c.clone();
        assert_eq!(region(&copy, "a"), Some("ap-south-1"));
        assert_eq!(region(&copy, "c"), Some("sa-east-1"));
    }

    #[test]
    fn buckets_from_a_file_are_indexed() {
        let text = (0..100)
            .map(|i| format!("[[buckets]]\nname = \"b{i}\"\nregion = \"eu-west-1\"\n"))
            .collect::<String>();
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c.buckets.len(), 100);
        assert_eq!(c.bucket("b99").map(|b| b.name.as_str()), Some("b99"));
        assert!(c.bucket("b100").is_none());
    }
}
