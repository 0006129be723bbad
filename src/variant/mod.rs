//! Image variants (docs/variants.md): what a request asks for (`w`, `h`, `fit`, `q`,
//! `fmt`) and the format `fmt=auto` picks ([`params`]), the render itself ([`render`]),
//! and the bounded pool renders run on ([`pool`]). The cache stores and coalesces
//! variants like originals (`cache::variants`).

pub mod params;
pub mod pool;
pub mod render;
#[cfg(any(test, feature = "test-support"))]
pub mod samples;

pub use params::{Fit, Format, FormatChoice, Output, Variant};
