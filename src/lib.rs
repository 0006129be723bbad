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
//! Public modules are what the binary, the tests and the benches use; the rest is
//! private to the crate.

mod activity;
mod admin;
pub mod allocator;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
mod cache_status;
pub mod cli;
mod clock;
pub mod config;
mod config_check;
mod cors;
pub mod demo;
mod error;
pub mod logging;
pub mod metrics;
pub mod object;
pub mod onboard;
mod origin;
pub mod pattern;
pub mod peer;
mod presign;
pub mod proxy;
mod purge;
pub mod request;
mod s3;
pub mod server;
pub mod source;
pub mod store;
pub mod systemd;
mod tls;
pub mod variant;

#[cfg(test)]
mod layering;
