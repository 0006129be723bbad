//! Image variants (docs/variants.md): what a request asks for (`w`, `h`, `fit`, `q`,
//! `fmt`) and the format `fmt=auto` picks ([`params`]), the render itself ([`render`]),
//! and the bounded pool renders run on ([`pool`]). The cache stores and coalesces
//! variants like originals (`cache::variants`).

pub(crate) mod params;
pub(crate) mod pool;
pub(crate) mod render;
#[cfg(any(test, feature = "test-support"))]
pub mod samples;

pub(crate) use params::{Output, Variant};
