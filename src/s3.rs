//! The S3 client settings every S3 client of this crate shares: the origin clients and
//! the embedded store's own client (seeding, tests).

use aws_sdk_s3::config::{Builder, RequestChecksumCalculation, ResponseChecksumValidation};

/// Checksums only where an operation requires them: non-AWS stores (MinIO, R2, the
/// embedded store) reject the SDK's default checksum headers, and GCS sends whole-object
/// checksums on ranges; bytes travel over TLS anyway.
pub(crate) fn compatible(b: Builder) -> Builder {
    b.request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
}
