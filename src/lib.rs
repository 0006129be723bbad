//! bucketfront: a caching reverse proxy that serves images from customers' private
//! S3/GCS buckets to browsers, with the platform's cross-account credentials.
//!
//! A request goes through [`proxy::handle`] in a fixed phase order: route → source →
//! authorize → lookup/fetch → respond → log (docs/design.md, "Layers").
//!
//! The modules form layers, written down once in `src/layering.rs`, whose tests check
//! that at every depth a module uses only its own layer or those below it, and that no
//! two use each other (docs/design.md, "Module layout").
//!
//! Every module is private to the crate but four; the facade below re-exports what the
//! binary, the tests, the benches and the fuzz targets use, and `unreachable_pub` keeps
//! everything else `pub(crate)`.

mod activity;
mod admin;
mod allocator;
mod app;
mod auth;
mod body;
mod cache;
mod cache_status;
pub mod cli;
mod clock;
pub mod config;
mod config_check;
mod cors;
mod demo;
mod error;
mod logging;
mod metrics;
mod object;
pub mod onboard;
mod origin;
mod pattern;
mod peer;
mod presign;
mod proxy;
mod purge;
mod request;
mod s3;
mod sendfile;
mod server;
mod source;
mod store;
pub mod systemd;
mod tls;
mod variant;

// The facade: what the binary, the integration tests, the benches and the fuzz targets
// use. `cli` and `config` are public as a whole (the command line and the schema of
// `config.toml` are the product's contract), as are `onboard` and `systemd` (one
// command, one service manager, each a namespace of a few functions); from the rest
// only the items below leave the crate.

// The process: wiring, listeners, the embedded store, logs.
pub use allocator::return_freed_pages_soon;
pub use app::{App, Listeners, WiringError};
pub use demo::{Demo, thumbnail_query};
pub use logging::init as init_logging;
pub use server::{Limits, Listener, fds_needed};
pub use store::{Store, content_type_for, generate_keys};

// A request's way through: the handler, its parts, and the cache it reads.
pub use body::ProxyBody;
pub use cache::disk::{BLOCK as DISK_BLOCK, DiskTier};
pub use cache::entry::CacheKey;
pub use cache::lookup::Served;
pub use cache::pieces::Pieces;
pub use cache_status::CacheStatus;
pub use metrics::{Metrics, TierMetrics, resident_bytes};
pub use object::{ObjectMeta, StoredFields};
pub use peer::ClientKey;
pub use proxy::conditional::{RangeAsk, parse_range};
pub use proxy::route::route;
pub use proxy::{State, handle};
pub use request::ObjectRequest;

// Signed URLs, tenants, and the names of objects.
pub use auth::{
    SignatureParams, Tenant, Tenants, sign, signed_query, signed_variant_query, unix_secs, verify,
};
pub use pattern::{BucketPattern, MediaRange, OriginPattern};
pub use source::{ObjectRef, encode_path, parse_path, parse_source_url};

// Image variants; the fixtures only for this crate's tests and benches.
pub use variant::params::{Fit, Format, Output};
pub use variant::render::{Spec, render};
#[cfg(feature = "test-support")]
pub use variant::samples;
/// hyper's connection builder with the public listener's HTTP/1 and HTTP/2 settings: what
/// the load bench's hyper floor serves with, so that it measures bucketfront's stack.
#[cfg(feature = "test-support")]
pub fn http_builder() -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    server::http_builder()
}

/// The public listener's TLS acceptor for the PEM files `cert` and `key` (rustls, ALPN `h2`
/// then `http/1.1`), for the load bench's hyper floor.
#[cfg(feature = "test-support")]
pub fn tls_acceptor_for_files(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    tls::load(cert, key)
        .map(|key| tls::acceptor(tls::Resolver::new(key)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod layering;
