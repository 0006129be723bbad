//! Customer onboarding: `bucketfront policy` prints exactly what a customer must paste
//! (bucket policy, IAM trust policy, GCS role binding, Azure role assignment), and `bucketfront check` walks
//! the real access path for one URL and explains each failure in plain words.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::auth::{Tenant, Tenants};
use crate::config::{Config, ProviderKind};
use crate::origin::{Fetched, GetRequest, OriginError, Origins};
use crate::source::{ObjectRef, parse_source_url};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Provider {
    S3,
    Gcs,
    Azure,
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
    /// The platform's Entra ID application (client) id, for Azure
    #[arg(long = "app-id")]
    pub app_id: Option<String>,
    /// The customer's Azure storage account holding the container
    #[arg(long)]
    pub account: Option<String>,
}

const PRINCIPAL_PLACEHOLDER: &str = "arn:aws:iam::PLATFORM_ACCOUNT_ID:role/bucketfront";

/// The text `bucketfront policy` prints: numbered steps, each JSON document on its own
/// lines between the steps so that it can be copied (and parsed) as is.
pub fn policy(args: &PolicyArgs) -> String {
    match args.provider {
        Provider::S3 => s3_policy(args),
        Provider::Gcs => gcs_policy(args),
        Provider::Azure => azure_policy(args),
    }
}

/// `Storage Blob Data Reader`, the built-in role that reads blobs and nothing else.
const BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";

fn azure_policy(args: &PolicyArgs) -> String {
    let container = &args.bucket;
    let account = args.account.as_deref().unwrap_or("CUSTOMER_ACCOUNT");
    let app = args.app_id.as_deref().unwrap_or("PLATFORM_APP_ID");
    let scope = format!(
        "/subscriptions/CUSTOMER_SUBSCRIPTION/resourceGroups/CUSTOMER_GROUP/providers/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/{container}"
    );
    let arm = json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "platformAppObjectId": {
                "type": "string",
                "metadata": { "description": "object id of the platform app's service principal in this directory (az ad sp show --id APP_ID --query id)" }
            }
        },
        "resources": [{
            "type": "Microsoft.Storage/storageAccounts/blobServices/containers/providers/roleAssignments",
            "apiVersion": "2022-04-01",
            "name": format!("[concat('{account}/default/{container}/Microsoft.Authorization/', guid(resourceGroup().id, '{account}', '{container}', '{app}'))]"),
            "properties": {
                "roleDefinitionId": format!("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{BLOB_DATA_READER}')]"),
                "principalId": "[parameters('platformAppObjectId')]",
                "principalType": "ServicePrincipal"
            }
        }]
    });
    format!(
        "# Step 1 (customer directory, an administrator): consent to the platform's app, which\n\
         # creates its service principal in the directory. Open, signed in as an admin:\n\
         https://login.microsoftonline.com/CUSTOMER_TENANT_ID/adminconsent?client_id={app}\n\
         # Step 2: give that service principal Storage Blob Data Reader on the container only.\n\
         az role assignment create --role \"Storage Blob Data Reader\" \\\n  --assignee {app} \\\n  --scope {scope}\n\
         # The same as an ARM template (deploy it in the storage account's resource group):\n{}\n\
         # Step 3: if the account's network rules deny public access, allow the platform's egress\n\
         # addresses (or a private endpoint); a firewall answers every read with AuthorizationFailure.\n\
         # Step 4: send the directory (tenant) id to the platform; it goes in config.toml as\n\
         #   [[buckets]] name = \"{container}\", provider = \"azure\", account = \"{account}\", directory = \"CUSTOMER_TENANT_ID\"\n\
         # Without the app: issue a container SAS with read (r) only and send it instead (sas = \"env:...\");\n\
         # it works until its expiry, and presigned URLs are then not offered for the container.\n\
         # Platform side, once: [azure] client_id = \"{app}\" with client_secret = \"env:...\" or federated_token_file.\n\
         # No CORS configuration is needed on the account: bucketfront writes the CORS headers.\n",
        pretty(&arm)
    )
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
        Err(e) if obj.provider == ProviderKind::Azure => {
            return report.fail("GetBlob", explain_azure(&e, config, &obj));
        }
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
        if obj.provider == ProviderKind::Azure {
            "GetBlob"
        } else {
            "GetObject"
        },
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
    let ct = o.meta.fields.content_type.as_deref().unwrap_or("(none)");
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

/// What an Azure failure means, in the words of the customer's and the platform's side.
fn explain_azure(e: &OriginError, config: &Config, obj: &ObjectRef) -> String {
    let bucket = config.bucket(&obj.bucket);
    let account = bucket.and_then(|b| b.account.as_deref()).unwrap_or("?");
    let container = &obj.bucket;
    let sas = bucket.and_then(|b| b.sas.as_ref());
    let app = config
        .azure
        .as_ref()
        .map_or("PLATFORM_APP_ID", |a| a.client_id.as_str());
    let directory = bucket.and_then(|b| b.directory.as_deref()).unwrap_or("?");
    match e {
        OriginError::Credentials(d) if d.contains("AADSTS700016") || d.contains("AADSTS65001") => {
            format!(
                "no consent: the platform's app {app} is not known in directory {directory} ({}). An administrator of that directory must consent to it: https://login.microsoftonline.com/{directory}/adminconsent?client_id={app}",
                d.find("AADSTS")
                    .map_or("", |at| d[at..].split('.').next().unwrap_or(""))
                    .trim()
            )
        }
        OriginError::Credentials(d)
            if d.contains("AADSTS7000215") || d.contains("AADSTS7000222") =>
        {
            format!(
                "the platform app's client secret is wrong or expired ([azure] client_secret): create a new one for app {app} ({d})"
            )
        }
        OriginError::Credentials(d) if d.contains("AADSTS90002") => {
            format!("there is no Entra directory {directory}: check the bucket's directory ({d})")
        }
        OriginError::Credentials(d) => format!("no token for directory {directory} ({d})"),
        OriginError::AccessDenied(_) if sas.is_some_and(|s| sas_expired(s.expose())) => format!(
            "the SAS for container {container} has expired (se={}): ask the customer for a new one",
            sas_field(sas.map_or("", |s| s.expose()), "se").unwrap_or_default()
        ),
        OriginError::AccessDenied(d) if d.contains("AuthorizationPermissionMismatch") => {
            match sas {
                Some(s) => format!(
                    "the SAS for container {container} does not grant read (sp={}): it needs r",
                    sas_field(s.expose(), "sp").unwrap_or_default()
                ),
                None => format!(
                    "no role: the platform's app {app} has no Storage Blob Data Reader on container {container} of account {account}. The customer runs the `az role assignment create` that `bucketfront policy --provider azure` prints"
                ),
            }
        }
        OriginError::AccessDenied(d) if d.contains("AuthorizationFailure") => format!(
            "refused by storage account {account} itself ({d}): its firewall or private endpoint does not let the platform's addresses in (the customer allows them under Networking), or the {} is not valid for it",
            if sas.is_some() { "SAS" } else { "token" }
        ),
        OriginError::AccessDenied(d) => format!("access denied by account {account} ({d})"),
        OriginError::NoSuchBucket => format!(
            "there is no container {container} in storage account {account} (or no account {account} at this endpoint)"
        ),
        OriginError::NoSuchKey => format!("container {container} has no blob named {:?}", obj.key),
        OriginError::Unreachable(d) if d.contains("dns") => format!(
            "no storage account named {account}: its host does not resolve ({d}); check the bucket's account"
        ),
        OriginError::Archived(_) => format!(
            "the blob is in the Archive tier: rehydrate it before the proxy can serve it, e.g. `az storage blob set-tier --account-name {account} --container-name {container} --name {:?} --tier Hot --rehydrate-priority High` (Standard priority takes up to 15 hours; High, under an hour for most blobs)",
            obj.key
        ),
        other => other.to_string(),
    }
}

/// A field of a SAS query string.
fn sas_field(sas: &str, name: &str) -> Option<String> {
    sas.trim_start_matches('?').split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Whether a SAS's `se` is in the past.
fn sas_expired(sas: &str) -> bool {
    sas_field(sas, "se")
        .and_then(|se| humantime::parse_rfc3339_weak(se.trim_end_matches('Z')).ok())
        .is_some_and(|se| se < std::time::SystemTime::now())
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
            app_id: None,
            account: None,
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
            app_id: None,
            account: None,
        };
        let text = policy(&args);
        assert!(text.contains("--permissions=storage.objects.get"));
        assert!(text.contains("add-iam-policy-binding gs://acme-gcs"));
        assert!(text.contains("serviceAccount:bf@p.iam.gserviceaccount.com"));
    }

    #[test]
    fn azure_policy_assigns_the_reader_role_on_the_container_and_gives_the_consent_url() {
        let args = PolicyArgs {
            provider: Provider::Azure,
            bucket: "images".into(),
            principal: None,
            service_account: None,
            external_id: None,
            app_id: Some("11111111-2222-3333-4444-555555555555".into()),
            account: Some("acmestorage".into()),
        };
        let text = policy(&args);
        assert!(text.contains("adminconsent?client_id=11111111-2222-3333-4444-555555555555"));
        assert!(text.contains("az role assignment create --role \"Storage Blob Data Reader\""));
        assert!(
            text.contains("storageAccounts/acmestorage/blobServices/default/containers/images")
        );
        let arm = &json_blocks(&text)[0];
        let assignment = &arm["resources"][0];
        assert_eq!(
            assignment["type"],
            "Microsoft.Storage/storageAccounts/blobServices/containers/providers/roleAssignments"
        );
        assert!(
            assignment["properties"]["roleDefinitionId"]
                .as_str()
                .unwrap()
                .contains(BLOB_DATA_READER)
        );
        assert!(assignment["name"].as_str().unwrap().starts_with("[concat("));
    }

    /// The failures only a real Azure gives (Azurite resolves every account and checks no
    /// client secret), in plain words.
    #[test]
    fn azure_failures_azurite_cannot_make_are_explained() {
        let mut config = Config::default();
        config.buckets.push(crate::config::Bucket {
            name: "images".into(),
            provider: ProviderKind::Azure,
            account: Some("acmestorage".into()),
            directory: Some("dir-1".into()),
            ..Default::default()
        });
        let obj = parse_source_url("az://images/cats/1.jpg").unwrap();
        let said = |e: OriginError| explain_azure(&e, &config, &obj);
        let dns = said(OriginError::Unreachable(
            "https://acmestorage.blob.core.windows.net (dns error: failed to lookup address information)".into(),
        ));
        assert!(
            dns.contains("no storage account named acmestorage"),
            "{dns}"
        );
        let secret = said(OriginError::Credentials(
            "Entra ID token: AADSTS7000215: Invalid client secret provided.".into(),
        ));
        assert!(
            secret.contains("client secret is wrong or expired"),
            "{secret}"
        );
        let tenant = said(OriginError::Credentials(
            "Entra ID token: AADSTS90002: Tenant 'dir-1' not found.".into(),
        ));
        assert!(tenant.contains("no Entra directory dir-1"), "{tenant}");
        let consent = said(OriginError::Credentials(
            "Entra ID token: AADSTS65001: The user or administrator has not consented.".into(),
        ));
        assert!(
            consent.contains("adminconsent?client_id=") && consent.contains("AADSTS65001"),
            "{consent}"
        );
    }
}
