//! What the load and hostile benches share: the bucket and signing secret they use, free
//! loopback ports, waiting for a listener, and seeding the embedded store.

#![allow(dead_code)]

use std::time::Duration;

use bucketfront::store::Store;
use bytes::Bytes;

pub const BUCKET: &str = "bench-images";
pub const SECRET: &str = "bench-signing-secret-0123456789";

/// A loopback port the OS picked (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on loopback `port`; panics after 10 s.
pub async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

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
