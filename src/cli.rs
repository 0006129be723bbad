//! The command line (README.md): argument parsing and the small commands.
//! `serve` itself lives in `main.rs`, which owns the process (signals, sockets).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Tenants};
use crate::config::{Config, ProviderKind};
use crate::source::encode_path;
use crate::source::{ObjectRef, parse_source_url};

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
    pub fn load(&self) -> Result<Config, String> {
        Config::load(&Config::default_path(self.config.clone())).map_err(|e| e.to_string())
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
pub fn sign(config: &Config, args: &SignArgs, now: SystemTime) -> Result<String, String> {
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
    let query = auth::signed_query(secret, &obj.bucket, &obj.key, exp, Some(kid));
    Ok(match &args.url {
        Some(url) => format!(
            "{base}/_/fetch?url={}&{query}",
            encode_path(url).replace('/', "%2F")
        ),
        None => format!("{base}/{}/{}?{query}", obj.bucket, encode_path(&obj.key)),
    })
}
