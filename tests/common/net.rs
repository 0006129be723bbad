//! Loopback ports and listeners: shared by the tests (`tests/common`) and the benches
//! (`benches/support`, which include this file by path).

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
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on port {port}");
}
