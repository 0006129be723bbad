//! bucketfront: a caching reverse proxy that serves images from customers' private
//! S3/GCS buckets to browsers, with the platform's cross-account credentials.
//!
//! A request goes through [`proxy::handle`] in a fixed phase order: route → source →
//! authorize → lookup/fetch → respond → log (docs/design.md, "Layers").
//!
//! The modules form layers; a module uses modules of its own layer or below, never
//! above, and no two use each other (`src/layering.rs` checks both):
//!
//! 1. Leaf types and settings: `pattern` (config patterns), `object` (object metadata),
//!    `cache_status` (`X-Cache`), `error` (error → status), `activity` (connection
//!    deadline rules), `peer` (client address), [`body`] (the response body), `s3` (S3
//!    client settings), [`logging`], [`metrics`], [`config`] (the schema), `tls`.
//! 2. Pure logic: [`source`] (source URLs), [`auth`] (tenants, signatures), `cors`,
//!    `config_check` (validation, `Config::load`), [`purge`] (what a purge selects).
//! 3. I/O: [`cache`] (memory tier, fills, variants), [`variant`] (variant parameters,
//!    renders and their bounded pool), `origin` (S3/GCS clients), `presign`,
//!    [`server`] (the accept loop and connections of every listener), [`store`] (the
//!    embedded S3-compatible store).
//! 4. Request path: [`proxy`] (the phases), `admin`, [`demo`].
//! 5. Wiring and commands: [`app`], [`systemd`] (notify, watchdog, signals), [`cli`], [`onboard`].
//!
//! Public modules are what the binary, the tests and the benches use; the rest is
//! private to the crate.

mod activity;
mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
mod cache_status;
pub mod cli;
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
mod peer;
mod presign;
pub mod proxy;
pub mod purge;
mod s3;
pub mod server;
pub mod source;
pub mod store;
pub mod systemd;
mod tls;
pub mod variant;

#[cfg(test)]
mod layering;
