//! The command line (README.md): argument parsing and the small commands.
//! `serve` itself lives in `main.rs`, which owns the process (signals, sockets).

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use crate::app::WiringError;
use crate::auth::{self, Tenants};
use crate::config::{Config, ProviderKind};
use crate::source::encode_path;
use crate::source::{ObjectRef, parse_source_url};
use crate::variant::{Variant, params::NAMES};

#[derive(Debug, Parser)]
#[command(
    name = "bucketfront",
    version,
    about = "A caching reverse proxy for images in private S3/GCS buckets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file (default: $BUCKETFRONT_CONFIG, else ./config.toml)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config, WiringError> {
        Ok(Config::load(&Config::default_path(self.config.clone()))?)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy
    Serve(ConfigArg),
    /// Validate the config and print a summary
    CheckConfig(ConfigArg),
    /// Print a signed proxy URL for one object
    Sign(SignArgs),
    /// Print the bucket policy / IAM trust policy / GCS binding a customer must set up
    Policy(crate::onboard::PolicyArgs),
    /// Try the real access path for one image URL and explain what fails
    Check(CheckArgs),
    /// Drop cached objects and presigned URLs on every instance ([fleet] peers)
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["bucket", "tenant"])))]
pub struct PurgeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Admin addresses to send it to (default: [fleet] peers, else this config's
    /// admin_listen)
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    #[arg(long, requires = "one_or_prefix")]
    pub bucket: Option<String>,
    /// One object of --bucket
    #[arg(long, group = "one_or_prefix")]
    pub key: Option<String>,
    /// Every object of --bucket whose key starts with this
    #[arg(long, group = "one_or_prefix")]
    pub prefix: Option<String>,
    /// Everything of one tenant
    #[arg(long, conflicts_with_all = ["bucket", "key", "prefix"])]
    pub tenant: Option<String>,
}

impl PurgeArgs {
    /// Where to send it: `--peers`, else `[fleet] peers`, else the config's admin listener.
    pub fn targets(&self, config: &Config) -> Vec<String> {
        if !self.peers.is_empty() {
            self.peers.clone()
        } else if !config.fleet.peers.is_empty() {
            config.fleet.peers.clone()
        } else {
            vec![config.server.admin_listen.to_string()]
        }
    }

    pub fn request(&self) -> crate::purge::PurgeRequest {
        crate::purge::PurgeRequest {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            prefix: self.prefix.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

/// `bucketfront purge`: sends the request to every target, one line per answer
/// (`peer: status body`); fails if any target did not answer 200.
pub async fn purge(config: &Config, args: &PurgeArgs) -> Result<String, WiringError> {
    let body = serde_json::to_string(&args.request())
        .map_err(|e| WiringError::Refused(format!("the purge request: {e}")))?;
    let mut out = String::new();
    let mut failed = 0;
    for peer in args.targets(config) {
        let answer = tokio::time::timeout(Duration::from_secs(30), post_purge(&peer, &body)).await;
        let line = match answer {
            Ok(Ok((200, text))) => text,
            Ok(Ok((status, text))) => {
                failed += 1;
                format!("{status} {text}")
            }
            Ok(Err(e)) => {
                failed += 1;
                format!("failed: {e}")
            }
            Err(_) => {
                failed += 1;
                "failed: no answer within 30 s".into()
            }
        };
        out.push_str(&format!("{peer}: {}\n", line.trim()));
    }
    if failed > 0 {
        Err(WiringError::Refused(format!(
            "{out}{failed} instance(s) did not purge"
        )))
    } else {
        Ok(out)
    }
}

async fn post_purge(peer: &str, body: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(peer)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post("/purge")
        .header(http::header::HOST, peer)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Tenant whose signing key is used
    #[arg(long)]
    pub tenant: String,
    /// Source URL of the object (s3://, https://B.s3.REGION.amazonaws.com/K, gs://, …)
    #[arg(long, conflicts_with_all = ["bucket", "key"])]
    pub url: Option<String>,
    #[arg(long, requires = "key")]
    pub bucket: Option<String>,
    #[arg(long, requires = "bucket")]
    pub key: Option<String>,
    /// How long the URL stays valid
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Key id to sign with (default: the tenant's first key)
    #[arg(long)]
    pub kid: Option<String>,
    /// Public base URL of the proxy (default: http://[server] listen)
    #[arg(long)]
    pub base: Option<String>,
    /// A variant to sign, as its query: "w=256&fmt=auto" (docs/variants.md)
    #[arg(long)]
    pub variant: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image URL to try (any source URL form)
    pub url: String,
}

/// `check-config`: a summary of listeners, tenants and buckets.
pub fn check_config(config: &Config) -> String {
    let mut out = String::new();
    let s = &config.server;
    out.push_str(&format!(
        "config OK\nlisteners: public {} ({}), admin {}\n",
        s.listen,
        if s.tls.is_some() { "https" } else { "http" },
        s.admin_listen
    ));
    if config.embedded_store.enabled {
        let e = &config.embedded_store;
        out.push_str(&format!(
            "embedded store: {} (seeded from {}), demo page {}\n",
            e.listen,
            e.root.display(),
            e.demo_listen
        ));
    }
    out.push_str(&format!("tenants: {}\n", config.tenants.len()));
    for t in &config.tenants {
        out.push_str(&format!(
            "  {}: buckets [{}], {}, {} signing key(s){}\n",
            t.name,
            t.buckets
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if t.require_signature {
                "signed URLs required"
            } else {
                "unsigned URLs allowed"
            },
            t.signing_keys.len(),
            t.assume_role
                .as_ref()
                .map(|r| format!(", assumes {}", r.role_arn))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "buckets with settings: {}\n",
        config.buckets.len()
    ));
    for b in &config.buckets {
        out.push_str(&format!(
            "  {} ({}{}{})\n",
            b.name,
            b.provider.as_str(),
            b.region
                .as_ref()
                .map(|r| format!(", region {r}"))
                .unwrap_or_default(),
            b.endpoint
                .as_ref()
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// `sign`: a signed proxy URL for one object.
pub fn sign(config: &Config, args: &SignArgs, now: SystemTime) -> Result<String, WiringError> {
    sign_url(config, args, now).map_err(WiringError::Refused)
}

fn sign_url(config: &Config, args: &SignArgs, now: SystemTime) -> Result<String, String> {
    let tenants = Tenants::from_config(config);
    let tenant = tenants
        .by_name(&args.tenant)
        .ok_or_else(|| format!("no tenant named {:?} in the config", args.tenant))?;
    let obj = match (&args.url, &args.bucket, &args.key) {
        (Some(url), _, _) => parse_source_url(url).map_err(|e| e.message)?,
        (None, Some(b), Some(k)) => {
            let provider = config
                .bucket(b)
                .map(|b| b.provider)
                .unwrap_or(ProviderKind::S3);
            ObjectRef::new(provider, b, k).map_err(|e| e.message)?
        }
        _ => return Err("give --url, or --bucket and --key".into()),
    };
    let owner = tenants.for_bucket(&obj.bucket).map(|t| t.name.as_str());
    if owner != Some(tenant.name.as_str()) {
        return Err(format!(
            "bucket {:?} does not belong to tenant {:?}",
            obj.bucket, tenant.name
        ));
    }
    let (kid, secret) = tenant.signing_key(args.kid.as_deref()).ok_or_else(|| {
        format!(
            "tenant {:?} has no signing key {:?}",
            tenant.name,
            args.kid.as_deref().unwrap_or("")
        )
    })?;
    let exp = now
        .checked_add(args.ttl)
        .map(auth::unix_secs)
        .ok_or("--ttl is out of range")?;
    let base = args.base.clone().unwrap_or_else(|| {
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", config.server.listen)
    });
    let base = base.trim_end_matches('/');
    if let Some(v) = &args.variant {
        let params =
            crate::proxy::route::parse_query(v).map_err(|e| format!("--variant: {}", e.message))?;
        let parsed = Variant::parse(&params).map_err(|e| format!("--variant: {}", e.message))?;
        let variant =
            parsed.ok_or("--variant: give w, h, fit, q or fmt, e.g. \"w=256&fmt=auto\"")?;
        if params.iter().any(|(k, _)| !NAMES.contains(&k.as_str())) {
            return Err("--variant: only w, h, fit, q and fmt belong there".into());
        }
        variant
            .check_sizes(&config.variants.widths)
            .map_err(|e| format!("--variant: {}", e.message))?;
    }
    let query = auth::signed_variant_query(
        secret,
        &obj.bucket,
        &obj.key,
        exp,
        Some(kid),
        args.variant.as_deref(),
    );
    Ok(match &args.url {
        Some(url) => format!(
            "{base}/_/fetch?url={}&{query}",
            encode_path(url).replace('/', "%2F")
        ),
        None => format!("{base}/{}/{}?{query}", obj.bucket, encode_path(&obj.key)),
    })
}
