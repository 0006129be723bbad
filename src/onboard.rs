//! Customer onboarding: `bucketfront policy` prints exactly what a customer must paste
//! (bucket policy, IAM trust policy, GCS role binding), and `bucketfront check` walks
//! the real access path for one URL and explains each failure in plain words.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::auth::{Tenant, Tenants};
use crate::config::Config;
use crate::origin::{Fetched, GetRequest, OriginError, Origins};
use crate::source::{ObjectRef, parse_source_url};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Provider {
    S3,
    Gcs,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[arg(long, value_enum)]
    pub provider: Provider,
    #[arg(long)]
    pub bucket: String,
    /// The proxy's AWS principal (role or user ARN)
    #[arg(long)]
    pub principal: Option<String>,
    /// The proxy's GCS service account e-mail
    #[arg(long = "service-account")]
    pub service_account: Option<String>,
    /// External ID for a cross-account role (prints the trust policy too)
    #[arg(long = "external-id")]
    pub external_id: Option<String>,
}

const PRINCIPAL_PLACEHOLDER: &str = "arn:aws:iam::PLATFORM_ACCOUNT_ID:role/bucketfront";

/// The text `bucketfront policy` prints: numbered steps, each JSON document on its own
/// lines between the steps so that it can be copied (and parsed) as is.
pub fn policy(args: &PolicyArgs) -> String {
    match args.provider {
        Provider::S3 => s3_policy(args),
        Provider::Gcs => gcs_policy(args),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn s3_policy(args: &PolicyArgs) -> String {
    let b = &args.bucket;
    let principal = args.principal.as_deref().unwrap_or(PRINCIPAL_PLACEHOLDER);
    let read = json!({
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": format!("arn:aws:s3:::{b}/*"),
    });
    let mut out = String::new();
    if let Some(external_id) = &args.external_id {
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "AWS": principal },
                "Action": "sts:AssumeRole",
                "Condition": { "StringEquals": { "sts:ExternalId": external_id } }
            }]
        });
        let permissions = json!({ "Version": "2012-10-17", "Statement": [read] });
        out.push_str(&format!(
            "# Step 1 (customer account): create an IAM role with this trust policy.\n\
             # The external ID stops other customers of the platform from using this role (confused deputy).\n{}\n\
             # Step 2: attach this permissions policy to the role.\n{}\n\
             # If the bucket uses SSE-KMS, also allow kms:Decrypt on its key for this role.\n\
             # Step 3: send the role ARN to the platform; it goes in config.toml as\n\
             #   assume_role = {{ role_arn = \"arn:aws:iam::CUSTOMER_ACCOUNT_ID:role/NAME\", external_id = \"{external_id}\" }}\n",
            pretty(&trust),
            pretty(&permissions)
        ));
    } else {
        let mut stmt = read.clone();
        stmt["Sid"] = json!("BucketfrontRead");
        stmt["Principal"] = json!({ "AWS": principal });
        let bucket_policy = json!({ "Version": "2012-10-17", "Statement": [stmt] });
        out.push_str(&format!(
            "# Step 1 (customer account): add this statement to the bucket policy of {b}.\n{}\n\
             # Optional: also allow s3:ListBucket on arn:aws:s3:::{b}. Then a missing key answers 404\n\
             # instead of 403, which makes `bucketfront check` clearer; it also lets the platform\n\
             # learn which keys exist. bucketfront answers 404 to browsers either way.\n\
             # If the bucket uses SSE-KMS, the key policy must allow kms:Decrypt for the principal.\n",
            pretty(&bucket_policy)
        ));
    }
    let own = json!({
        "Version": "2012-10-17",
        "Statement": [
            if args.external_id.is_some() {
                json!({ "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::CUSTOMER_ACCOUNT_ID:role/NAME" })
            } else {
                json!({ "Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{b}/*") })
            }
        ]
    });
    out.push_str(&format!(
        "# Platform account: the proxy's own identity ({principal}) needs this IAM policy.\n{}\n\
         # No CORS configuration is needed on the bucket: bucketfront writes the CORS headers.\n",
        pretty(&own)
    ));
    out
}

fn gcs_policy(args: &PolicyArgs) -> String {
    let b = &args.bucket;
    let sa = args
        .service_account
        .as_deref()
        .unwrap_or("bucketfront@PLATFORM_PROJECT.iam.gserviceaccount.com");
    format!(
        "# Step 1 (customer project): a role that can read objects and nothing else.\n\
         gcloud iam roles create bucketfrontReader --project=CUSTOMER_PROJECT \\\n  --title=\"bucketfront reader\" --permissions=storage.objects.get\n\
         # Step 2: grant it to the platform's service account on the bucket.\n\
         gcloud storage buckets add-iam-policy-binding gs://{b} \\\n  --member=serviceAccount:{sa} \\\n  --role=projects/CUSTOMER_PROJECT/roles/bucketfrontReader\n\
         # Step 3 (platform project, once): HMAC keys for the service account; put them in\n\
         # config.toml as [gcs] access_key = \"env:GCS_HMAC_ACCESS\", secret_key = \"env:GCS_HMAC_SECRET\".\n\
         gcloud storage hmac create {sa}\n\
         # No CORS configuration is needed on the bucket: bucketfront writes the CORS headers.\n"
    )
}

/// What `bucketfront check` found: one line per step, in order; a failed step ends the
/// check, so the last line says what to fix.
#[derive(Debug, Default)]
pub struct Report {
    steps: Vec<(bool, String)>,
}

impl Report {
    fn pass(&mut self, step: &str, text: impl std::fmt::Display) {
        self.steps.push((true, format!("{step}: {text}")));
    }

    fn fail(mut self, step: &str, text: impl std::fmt::Display) -> Report {
        self.steps.push((false, format!("{step}: {text}")));
        self
    }

    /// Whether every step passed: the proxy would serve this image.
    pub fn served(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|(ok, _)| *ok)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (ok, line) in &self.steps {
            writeln!(f, "{}{line}", if *ok { "ok   " } else { "FAIL " })?;
        }
        Ok(())
    }
}

/// `bucketfront check URL`: probes with `GET Range: bytes=0-0` using exactly the
/// credentials the proxy would use.
pub async fn check(config: &Config, url: &str) -> Report {
    let mut report = Report::default();
    let obj = match parse_source_url(url) {
        Ok(o) => o,
        Err(e) => return report.fail("url", e.message),
    };
    report.pass(
        "url",
        format!(
            "provider {}, bucket {}, key {}",
            obj.provider.as_str(),
            obj.bucket,
            obj.key
        ),
    );
    let tenants = Tenants::from_config(config);
    let Some(tenant) = tenants.for_bucket(&obj.bucket).cloned() else {
        return report.fail(
            "tenant",
            format!(
                "bucket {} belongs to no tenant; add it to a [[tenants]] buckets list",
                obj.bucket
            ),
        );
    };
    report.pass("tenant", &tenant.name);
    let origins =
        Arc::new(Origins::new(config, None, Arc::new(crate::metrics::Metrics::new())).await);
    if let Some(role) = tenant
        .config
        .assume_role
        .as_ref()
        .filter(|r| r.external_id.is_some())
    {
        // AWS's guidance for vendors: the role must refuse callers without the right
        // external ID, or any other customer of the platform could make us read this
        // bucket. A role with the StringEquals condition refuses a missing and a wrong ID
        // alike; one without it accepts both. A random wrong ID is probed (moto only
        // evaluates the condition when an ID is sent).
        let mut sts = aws_sdk_sts::config::Builder::from(origins.sdk_config());
        if origins.sdk_config().region().is_none() {
            sts = sts.region(aws_config::Region::new("us-east-1"));
        }
        let unsafe_call = aws_sdk_sts::Client::from_conf(sts.build())
            .assume_role()
            .role_arn(&role.role_arn)
            .role_session_name("bucketfront-check")
            .external_id(format!("bucketfront-probe-{:016x}", fastrand::u64(..)))
            .send()
            .await;
        if unsafe_call.is_ok() {
            return report.fail(
                "role",
                format!(
                    "{} can be assumed WITHOUT the right external ID; add the condition \
                     \"StringEquals\": {{\"sts:ExternalId\": \"...\"}} to its trust policy (`bucketfront policy` prints it)",
                    role.role_arn
                ),
            );
        }
        report.pass(
            "role",
            "assuming it without the right external ID is refused, as it must be",
        );
    }
    let req = GetRequest {
        range: Some("bytes=0-0".into()),
        ..GetRequest::default()
    };
    let o = match origins.get(&tenant, &obj, &req).await {
        Ok(Fetched::Object(o)) => o,
        Ok(Fetched::NotModified(_)) => return report.fail("GetObject", "unexpected 304"),
        Err(OriginError::AccessDenied(_)) if requester_pays(config, &tenant, &obj, &req).await => {
            return report.fail(
                "GetObject",
                format!(
                    "Requester Pays bucket: set request_payer = true in the [[buckets]] entry of {} (the platform then pays for each request; without it S3 answers AccessDenied)",
                    obj.bucket
                ),
            );
        }
        Err(e) => {
            return report.fail(
                "GetObject",
                explain(&e, &obj.bucket, &obj.key, &tenant.name),
            );
        }
    };
    report.pass(
        "GetObject",
        format!("object is readable ({} bytes)", o.meta.size),
    );
    if let Some(region) = origins.discovered_region(&obj.bucket) {
        report.pass(
            "region",
            format!(
                "the bucket is in {region} (S3 said so); set region = \"{region}\" in its [[buckets]] entry to save a round trip"
            ),
        );
    }
    let ct = o.meta.content_type.as_deref().unwrap_or("(none)");
    if o.meta
        .content_type_allowed(&config.server.allowed_content_types)
    {
        report.pass("content type", ct);
        report
    } else {
        report.fail(
            "content type",
            format!("{ct} is not in server.allowed_content_types; browsers would get 415"),
        )
    }
}

/// Whether an access denial is a Requester Pays bucket's: the same GET, with the
/// platform agreeing to pay, is answered (a probe of one byte, run by `check` only).
async fn requester_pays(
    config: &Config,
    tenant: &Tenant,
    obj: &ObjectRef,
    req: &GetRequest,
) -> bool {
    if config.bucket(&obj.bucket).is_some_and(|b| b.request_payer) {
        return false;
    }
    let mut paying = config.clone();
    match paying.buckets.iter_mut().find(|b| b.name == obj.bucket) {
        Some(b) => b.request_payer = true,
        None => paying.buckets.push(crate::config::Bucket {
            name: obj.bucket.clone(),
            request_payer: true,
            ..Default::default()
        }),
    }
    let origins = Origins::new(&paying, None, Arc::new(crate::metrics::Metrics::new())).await;
    matches!(origins.get(tenant, obj, req).await, Ok(Fetched::Object(_)))
}

fn explain(e: &OriginError, bucket: &str, key: &str, tenant: &str) -> String {
    match e {
        OriginError::Archived(class) => format!(
            "the object is archived ({class}): restore it before the proxy can serve it, e.g. \
             `aws s3api restore-object --bucket {bucket} --key {key} --restore-request Days=7` (hours for \
             Glacier Flexible Retrieval, up to 48 h for Deep Archive), or copy it to a class read \
             directly (Standard, Glacier Instant Retrieval, Intelligent-Tiering's instant tiers)"
        ),
        OriginError::AccessDenied(detail)
            if crate::origin::kms_key(detail).is_some() || detail.contains("kms") =>
        {
            format!(
                "access denied by KMS ({detail}). The object is encrypted with SSE-KMS and the key's policy \
             does not allow kms:Decrypt to the identity tenant {tenant} uses: the customer adds it to the \
             key policy{}",
                crate::origin::kms_key(detail).map_or(String::new(), |k| format!(" of {k}"))
            )
        }
        OriginError::NoSuchKey => {
            "the bucket exists but has no such key (check the key's spelling and case)".into()
        }
        OriginError::NoSuchBucket => format!("there is no bucket named {bucket}"),
        OriginError::AccessDenied(detail) => format!(
            "access denied ({detail}). The bucket policy of {bucket} does not grant s3:GetObject to the identity \
             tenant {tenant} uses, or the proxy's own IAM policy lacks it, or the object is encrypted with an \
             SSE-KMS key whose policy does not allow kms:Decrypt, or the bucket is Requester Pays. Without \
             s3:ListBucket a missing key also answers AccessDenied. `bucketfront policy` prints what to paste."
        ),
        OriginError::Credentials(detail) => format!(
            "no usable credentials ({detail}). Set AWS credentials for the proxy (environment, profile, IMDS), \
             or check the tenant's assume_role: the role's trust policy must allow the proxy with this external ID"
        ),
        OriginError::Timeout(d) => format!("the origin did not answer in time ({d})"),
        OriginError::Unreachable(d) => format!("the origin could not be reached ({d})"),
        OriginError::WrongRegion(Some(region)) => {
            format!(
                "the bucket is in region {region}: set region = \"{region}\" in its [[buckets]] entry"
            )
        }
        OriginError::WrongRegion(None) => {
            "the bucket is in another region, and S3 did not say which".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_blocks(text: &str) -> Vec<serde_json::Value> {
        let mut blocks = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if line.starts_with('{') || !current.is_empty() {
                current.push_str(line);
                current.push('\n');
                if line == "}" {
                    blocks.push(serde_json::from_str(&current).expect("valid JSON"));
                    current.clear();
                }
            }
        }
        blocks
    }

    #[test]
    fn s3_policies_are_valid_json() {
        let args = PolicyArgs {
            provider: Provider::S3,
            bucket: "acme-images".into(),
            principal: Some("arn:aws:iam::111122223333:role/bf".into()),
            service_account: None,
            external_id: None,
        };
        let blocks = json_blocks(&policy(&args));
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0]["Statement"][0]["Resource"],
            "arn:aws:s3:::acme-images/*"
        );
        assert_eq!(
            blocks[0]["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:role/bf"
        );
        let with_role = PolicyArgs {
            external_id: Some("ext-123".into()),
            ..args
        };
        let blocks = json_blocks(&policy(&with_role));
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[0]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "ext-123"
        );
        assert_eq!(blocks[1]["Statement"][0]["Action"], "s3:GetObject");
    }

    #[test]
    fn gcs_policy_names_the_permission_and_binding() {
        let args = PolicyArgs {
            provider: Provider::Gcs,
            bucket: "acme-gcs".into(),
            principal: None,
            service_account: Some("bf@p.iam.gserviceaccount.com".into()),
            external_id: None,
        };
        let text = policy(&args);
        assert!(text.contains("--permissions=storage.objects.get"));
        assert!(text.contains("add-iam-policy-binding gs://acme-gcs"));
        assert!(text.contains("serviceAccount:bf@p.iam.gserviceaccount.com"));
    }
}
