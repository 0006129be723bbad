//! bucketfront: a caching reverse proxy that serves images from customers' private
//! S3/GCS buckets to browsers, with the platform's cross-account credentials.
//!
//! A request goes through [`proxy::handle`] in a fixed phase order: route → source →
//! authorize → lookup/fetch → respond → log. The modules below are named after those
//! phases and the parts they use:
//!
//! - [`server`]: accept loop, connection limits, graceful drain; [`activity`] the deadline
//!   rules every connection lives by; [`body`] the response body type; [`app`] wires
//!   listeners; [`peer`] the client address for logs.
//! - [`proxy`]: the phases; [`source`] parses source URLs; [`auth`] tenants and signatures;
//!   [`cache`] the in-memory object cache and in-flight fills; [`origin`] the S3 clients;
//!   [`presign`] presigned URLs; [`cors`] CORS; [`error`] the error → status mapping;
//!   [`cache_status`] the `X-Cache` values.
//! - [`config`] and [`config_check`]: `config.toml`; [`cli`] and [`onboard`]: commands.
//! - [`logging`] the log writer thread.
//! - [`store`] the embedded S3-compatible store, [`demo`] the demo page, [`admin`] and
//!   [`metrics`] the admin listener.

pub mod activity;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cache_status;
pub mod cli;
pub mod config;
pub mod config_check;
pub mod cors;
pub mod demo;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod object;
pub mod onboard;
pub mod origin;
pub mod peer;
pub mod presign;
pub mod proxy;
pub mod server;
pub mod service;
pub mod source;
pub mod store;
pub mod tls;
