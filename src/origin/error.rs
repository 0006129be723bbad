//! [`OriginError`]: why an origin call did not produce an object, and [`classify`], the
//! only place that reads S3 error codes and statuses from the SDK's errors.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::credentials::error_chain;
use crate::error::{Error, Kind, Side};

/// Why an origin call did not produce an object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    #[error("NoSuchKey")]
    NoSuchKey,
    #[error("NoSuchBucket")]
    NoSuchBucket,
    #[error("AccessDenied: {0}")]
    AccessDenied(String),
    /// The object is in an archive storage class (S3 Glacier Flexible Retrieval or Deep
    /// Archive) or tier (Azure Archive): it must be restored before it can be read.
    #[error("archived ({0}): restore it first")]
    Archived(String),
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    #[error("origin too slow: {0}")]
    Timeout(String),
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin answered {status} {code}")]
    Status { status: u16, code: String },
    /// S3's answer for a request signed for another region (301 PermanentRedirect, 400
    /// AuthorizationHeaderMalformed), with the bucket's region when S3 said it.
    #[error("the bucket is in another region ({0:?})")]
    WrongRegion(Option<String>),
    #[error("no usable credentials: {0}")]
    Credentials(String),
    #[error("body broken: {0}")]
    Body(String),
    /// An answer no S3 sends (a part where the whole object was asked for).
    #[error("origin broke the protocol: {0}")]
    Protocol(String),
    /// Every origin slot of the tenant stayed taken for `first_byte_timeout`.
    #[error("tenant {0} is at max_concurrent_per_tenant")]
    Busy(String),
}

impl OriginError {
    pub fn as_str(&self) -> &'static str {
        match self {
            OriginError::NoSuchKey => "no_such_key",
            OriginError::NoSuchBucket => "no_such_bucket",
            OriginError::AccessDenied(_) => "access_denied",
            OriginError::Archived(_) => "archived",
            OriginError::RangeNotSatisfiable => "range_not_satisfiable",
            OriginError::Timeout(_) => "timeout",
            OriginError::Unreachable(_) => "unreachable",
            OriginError::Status { .. } => "error_status",
            OriginError::WrongRegion(_) => "wrong_region",
            OriginError::Credentials(_) => "credentials",
            OriginError::Body(_) => "body",
            OriginError::Busy(_) => "busy",
            OriginError::Protocol(_) => "protocol",
        }
    }

    /// Whether the answer means "this object is not there": remembered for `negative_ttl`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OriginError::NoSuchKey | OriginError::NoSuchBucket)
    }

    /// Whether a stale copy may be served instead (the origin is failing, not answering).
    pub fn allows_stale(&self) -> bool {
        matches!(
            self,
            OriginError::Timeout(_)
                | OriginError::Unreachable(_)
                | OriginError::Status { .. }
                | OriginError::Body(_)
                | OriginError::Busy(_)
                | OriginError::Protocol(_)
        )
    }

    /// The client-facing error. Denied, missing bucket and missing key are one 404.
    pub fn into_error(self) -> Error {
        let detail = self.to_string();
        let e = match self {
            OriginError::NoSuchKey | OriginError::NoSuchBucket | OriginError::AccessDenied(_) => {
                Error::not_found()
            }
            OriginError::Archived(class) => Error::new(
                Kind::Archived,
                Side::Origin,
                format!(
                    "the object is archived ({class}): it must be restored in its bucket before it can be served"
                ),
            ),
            OriginError::RangeNotSatisfiable => Error::new(
                Kind::RangeNotSatisfiable,
                Side::Client,
                "the requested range is not satisfiable",
            ),
            OriginError::Timeout(_) => Error::new(
                Kind::GatewayTimeout,
                Side::Origin,
                "the origin did not answer in time",
            ),
            OriginError::Busy(_) => Error::new(
                Kind::Overloaded,
                Side::Internal,
                "too many requests are waiting on this bucket's origin; retry shortly",
            ),
            _ => Error::bad_gateway(),
        };
        e.with_detail(detail)
    }
}

/// Turns an SDK error into an [`OriginError`]; `Ok(())` means the origin said 304.
pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Result<(), OriginError> {
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let region = se
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(String::from);
            match (status, code.as_str()) {
                (304, _) => Ok(()),
                // A success the SDK could not read (a field it takes once sent twice,
                // a malformed date): the origin is not speaking S3.
                (200..=299, _) => Err(OriginError::Protocol(format!(
                    "its {status} answer could not be read: {}",
                    error_chain(&e)
                ))),
                (301, _) | (400, "AuthorizationHeaderMalformed") | (_, "PermanentRedirect") => {
                    Err(OriginError::WrongRegion(region))
                }
                (404, "NoSuchBucket") => Err(OriginError::NoSuchBucket),
                (404, _) => Err(OriginError::NoSuchKey),
                (403, "InvalidObjectState") => Err(OriginError::Archived(archived_class(se.err()))),
                (403, _) => Err(OriginError::AccessDenied(denied(
                    &code,
                    se.err().message().unwrap_or(""),
                ))),
                (416, _) => Err(OriginError::RangeNotSatisfiable),
                _ => Err(OriginError::Status { status, code }),
            }
        }
        SdkError::TimeoutError(_) => Err(OriginError::Timeout(error_chain(&e))),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            Err(OriginError::Timeout(error_chain(&e)))
        }
        SdkError::ConstructionFailure(_) => Err(OriginError::Credentials(error_chain(&e))),
        SdkError::DispatchFailure(d) if d.is_user() || d.is_other() => {
            if caused_by_credentials(&e) {
                Err(OriginError::Credentials(error_chain(&e)))
            } else {
                Err(OriginError::Unreachable(error_chain(&e)))
            }
        }
        // An answer the SDK could not read (duplicate headers, a malformed date): the
        // origin is not speaking S3.
        SdkError::ResponseError(_) => Err(OriginError::Protocol(error_chain(&e))),
        _ => Err(OriginError::Unreachable(error_chain(&e))),
    }
}

/// The storage class an `InvalidObjectState` names (S3 sends it in the error body).
fn archived_class(e: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_s3::operation::get_object::GetObjectError;
    match e.downcast_ref::<GetObjectError>() {
        Some(GetObjectError::InvalidObjectState(s)) => s
            .storage_class()
            .map_or("an archive storage class".into(), |c| {
                c.as_str().to_string()
            }),
        _ => "an archive storage class".into(),
    }
}

/// An access denial as the log says it, naming what S3's message points at: a KMS key
/// the platform may not decrypt with (and its ARN).
fn denied(code: &str, message: &str) -> String {
    match kms_key(message) {
        Some(arn) => format!(
            "{code} {message} (SSE-KMS: the key's policy must allow kms:Decrypt to the platform's identity; key {arn})"
        ),
        None if message.to_ascii_lowercase().contains("kms") => format!(
            "{code} {message} (SSE-KMS: the key's policy must allow kms:Decrypt to the platform's identity)"
        ),
        None => format!("{code} {message}"),
    }
}

/// The KMS key ARN a message names, if any (it may name the caller's ARN first).
pub(crate) fn kms_key(message: &str) -> Option<&str> {
    message.match_indices("arn:aws").find_map(|(start, _)| {
        let arn = &message[start..];
        let end = arn
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .unwrap_or(arn.len());
        let arn = arn[..end].trim_end_matches('.');
        arn.contains(":kms:").then_some(arn)
    })
}

/// Whether a credentials provider's error is among the causes of `e` (an AssumeRole
/// refused, no identity found): decided on the error's type, not its text.
fn caused_by_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_denials_name_the_key() {
        let msg = "User: arn:aws:sts::111122223333:assumed-role/bf/x is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab because no resource-based policy allows the kms:Decrypt action";
        assert_eq!(
            kms_key(msg),
            Some("arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        );
        let said = denied("AccessDenied", msg);
        assert!(
            said.contains("kms:Decrypt") && said.contains("key arn:aws:kms:"),
            "{said}"
        );
        assert_eq!(kms_key("Access Denied"), None);
        assert_eq!(
            denied("AccessDenied", "Access Denied"),
            "AccessDenied Access Denied"
        );
    }
}
