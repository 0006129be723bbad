//! Loopback ports and listeners, and the one way to wait for what another task or
//! process does: shared by the tests (`tests/common`) and the benches (`benches/support`,
//! which include this file by path).
#![allow(unreachable_pub)] // included by test and bench crates: no public surface

use std::time::Duration;

/// A loopback port the OS picked (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on loopback `port`; panics, naming `what`,
/// after 10 s.
pub async fn accepting(port: u16, what: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{what} listening on port {port}"),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
}

/// Polls `probe` until it gives a value, and returns it; panics, naming `what`, once
/// `within` has passed. How tests wait for what another task or process does, instead of
/// fixed sleeps (on a paused clock the waits advance it).
pub async fn eventually_some<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually_some`] for a condition.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(within, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}
