//! What the load and hostile benches share: the bucket and signing secret they use, free
//! loopback ports and waiting for a listener (the tests' own, `tests/common/net.rs`), and
//! seeding the embedded store.

#![allow(dead_code, unreachable_pub)] // a bench crate has no public surface

use bucketfront::Store;
use bytes::Bytes;

pub const BUCKET: &str = "bench-images";
pub const SECRET: &str = "bench-signing-secret-0123456789";

#[path = "../../tests/common/net.rs"]
mod net;
pub use net::{accepting, free_port};

/// Uploads `count` objects `{prefix}/{i}.png` of `size` bytes to [`BUCKET`], 64 at a time.
pub async fn seed(store: &Store, prefix: &str, count: usize, size: usize) {
    let body = Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (client, body) = (store.client(), body.clone());
        let key = format!("{prefix}/{i}.png");
        tasks.spawn(async move {
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .content_type("image/png")
                .body(body.into())
                .send()
                .await
                .unwrap();
        });
        if tasks.len() >= 64 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// `bin serve -c config` as the benches run it: warnings only in its log, no IMDS
/// lookups, stdout discarded.
pub fn serve(bin: impl AsRef<std::ffi::OsStr>, config: &std::path::Path) -> std::process::Child {
    serve_with(std::process::Command::new(bin), config)
}

/// [`serve`] with a command of the caller's (the load bench's, which may run it through
/// `taskset`).
pub fn serve_with(mut cmd: std::process::Command, config: &std::path::Path) -> std::process::Child {
    cmd.args(["serve", "-c", config.to_str().unwrap()])
        .env("BUCKETFRONT_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("bucketfront binary")
}
