//! The accept loop shared by every listener (public, admin, demo, the embedded store):
//! connection permits, eviction at the limit, an overflow pool that answers 503, and
//! graceful drain. One connection's life (protocol, deadlines) is in [`connection`]. The
//! public listener hands each connection to one of the per-core runtimes of [`workers`],
//! the one with the fewest open connections.
//!
//! The library never binds sockets or installs signal handlers: callers pass a bound
//! listener and a cancellation token, so tests run real servers on port 0.

mod admission;
mod connection;
#[cfg(feature = "test-support")]
pub(crate) use connection::http_builder;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::{Activity, Deadlines, EndReason};
use crate::metrics::ConnMetrics;
use admission::{Admission, Open, Room};
pub(crate) use workers::Workers;

/// The bounds of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one client (an address, an IPv6 /64) may hold.
    pub max_connections_per_client: usize,
    /// Peers that are many clients (balancers): no per-client limit.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub deadlines: Deadlines,
}

impl Limits {
    pub fn from_config(s: &crate::config::Server) -> Limits {
        Limits {
            max_connections: s.max_connections,
            max_connections_per_client: s.max_connections_per_client,
            trusted_proxies: s.trusted_proxies.clone(),
            deadlines: Deadlines {
                header_read_timeout: s.header_read_timeout.0,
                idle_timeout: s.idle_timeout.0,
                send_timeout: s.send_timeout.0,
                max_connection_age: s.max_connection_age.0,
                drain_timeout: s.drain_timeout.0,
            },
        }
    }

    /// The same deadlines with another connection limit, and none per client (the
    /// admin and demo listeners).
    pub fn with_max_connections(self, max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_client: max_connections,
            ..self
        }
    }
}

/// Open files the process needs for `max_connections` public connections: those, the
/// overflow pool, the admin and demo listeners (64 + 8 each), and room for origin
/// connections, the embedded store and files (the disk tier's reads and the responses
/// it sends from files are bounded within it).
pub fn fds_needed(max_connections: usize) -> u64 {
    (max_connections + overflow_connections(max_connections) + 2 * 72 + 512) as u64
}

/// How many connections beyond the limit are accepted just to be told 503.
fn overflow_connections(max: usize) -> usize {
    (max / 16).clamp(8, 1024)
}

/// One listening socket's settings: limits, TLS, and where its connection metrics go.
pub struct Listener {
    limits: Limits,
    tls: Option<TlsAcceptor>,
    metrics: ConnMetrics,
    /// Runtimes to serve connections on (the accept loop stays on the caller's); empty:
    /// the caller's.
    workers: Vec<tokio::runtime::Handle>,
}

impl Listener {
    pub fn new(limits: Limits) -> Listener {
        Listener {
            limits,
            tls: None,
            metrics: ConnMetrics::default(),
            workers: Vec::new(),
        }
    }

    /// Serves TLS (ALPN h2 and http/1.1); the handshake counts against the first
    /// request's `header_read_timeout`.
    pub fn tls(mut self, acceptor: Option<TlsAcceptor>) -> Listener {
        self.tls = acceptor;
        self
    }

    pub fn metrics(mut self, metrics: ConnMetrics) -> Listener {
        self.metrics = metrics;
        self
    }

    /// Serves connections on the worker runtimes (one per core) instead of the caller's.
    pub fn on(mut self, workers: &Workers) -> Listener {
        self.workers = workers.handles().to_vec();
        self
    }

    /// Serves `listener` with `handler` until `shutdown` is cancelled, then stops
    /// accepting, asks every connection to close after its current response, and gives
    /// them `drain_timeout` before dropping the rest.
    pub async fn serve<F, Fut, B>(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        handler: F,
    ) where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits = self.limits;
        let gate = Gate {
            admission: Admission::new(
                limits.max_connections_per_client,
                limits.trusted_proxies.clone(),
            ),
            shared: Arc::new(connection::Shared::new(
                limits.deadlines,
                self.tls,
                self.metrics,
                shutdown.clone(),
            )),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            overflow: Arc::new(Semaphore::new(overflow_connections(limits.max_connections))),
            tasks: TaskTracker::new(),
            workers: (self.workers.into_iter())
                .map(|h| (h, Gauge::default()))
                .collect(),
        };
        // Each connection is served by a task on the worker runtime with the fewest open
        // connections (or on this runtime without workers).
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning, and say once
                        // per occurrence what to raise.
                        tracing::warn!(error = %e, "accept failed (raise LimitNOFILE or lower max_connections)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some((permit, is_overflow)) = gate.admit(peer.ip()).await else {
                drop(stream);
                continue;
            };
            let activity = Arc::new(Activity::new(std::time::Instant::now()));
            // Overflow connections hold no permit that eviction could free.
            let admitted = (!is_overflow).then(|| {
                let client = gate.admission.client_of(peer.ip());
                gate.admission.admit(client, peer.ip(), activity.clone())
            });
            if is_overflow {
                gate.shared.metrics.ended(EndReason::Overflow);
            }
            let conn = connection::Connection {
                shared: gate.shared.clone(),
                peer,
                overflow: is_overflow,
                activity,
                admitted,
            };
            let handler = handler.clone();
            let Some((runtime, open)) = gate.workers.iter().min_by_key(|w| w.1.get()) else {
                gate.tasks.spawn(async move {
                    conn.run(stream, handler).await;
                    drop(permit);
                });
                continue;
            };
            // The socket moves to the worker's reactor: deregistered here, registered there.
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let open = Open::inc(open);
            runtime.spawn(gate.tasks.track_future(async move {
                let _open = open;
                match TcpStream::from_std(stream) {
                    Ok(stream) => conn.run(stream, handler).await,
                    Err(e) => tracing::warn!(error = %e, "a worker cannot take a connection"),
                }
                drop(permit);
            }));
        }
        drop(listener);
        gate.tasks.close();
        if tokio::time::timeout(limits.deadlines.drain_timeout, gate.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(drain_timeout = ?limits.deadlines.drain_timeout, "drain timeout reached; closing remaining connections");
            gate.shared.hard_stop.cancel();
            gate.tasks.wait().await;
        }
    }
}

/// What the connections of one listener share.
struct Gate {
    shared: Arc<connection::Shared>,
    /// One per connection up to `max_connections`.
    permits: Arc<Semaphore>,
    /// Connections beyond the limit, accepted just to be told 503.
    overflow: Arc<Semaphore>,
    admission: Arc<Admission>,
    tasks: TaskTracker,
    /// The runtimes connections are served on (none: the accept loop's), with the
    /// connections each has open.
    workers: Vec<(tokio::runtime::Handle, Gauge)>,
}

impl Gate {
    /// A permit for a new connection from `ip`, and whether it is an overflow one (told
    /// 503). A client at `max_connections_per_client` closes one of its own idle
    /// connections first. At `max_connections`, a connection that has sent nothing, else
    /// the longest-idle one of the heaviest client, makes room; when every connection is
    /// busy (or the client's are), a small pool answers 503; beyond it, `None`.
    async fn admit(&self, ip: std::net::IpAddr) -> Option<(OwnedSemaphorePermit, bool)> {
        let overflow = || {
            self.overflow
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| (p, true))
        };
        let now = std::time::Instant::now();
        let own = match self
            .admission
            .client_room(self.admission.client_of(ip), now)
        {
            Room::None => return overflow(),
            room => room,
        };
        let room = match self.permits.clone().try_acquire_owned() {
            Ok(p) => return Some((p, false)),
            // One of the client's own connections is closing: its permit is this one's.
            Err(_) if own == Room::Made => Room::Made,
            Err(_) => self.admission.make_room(now),
        };
        if room == Room::None {
            return overflow();
        }
        // The closed connection's task gives its permit back as soon as it runs.
        let permit = self.permits.clone().acquire_owned();
        match tokio::time::timeout(Duration::from_secs(1), permit).await {
            Ok(Ok(p)) => Some((p, false)),
            _ => overflow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One GET on a keep-alive connection; the response body.
    async fn get(conn: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return body.to_string();
                }
            }
        }
    }

    /// Each connection is served on the worker with the fewest open connections: the
    /// first on worker 0, a second opened while the first stays open on worker 1.
    #[tokio::test]
    async fn connections_go_to_the_worker_with_the_fewest_open() {
        let workers = Workers::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits = Limits::from_config(&crate::config::Server::default());
        let serving = tokio::spawn(Listener::new(limits).on(&workers).serve(
            listener,
            stop.clone(),
            |_req| async {
                let thread = std::thread::current().name().unwrap_or("").to_string();
                Response::new(http_body_util::Full::new(Bytes::from(thread)))
            },
        ));
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut first).await, "bucketfront-worker-0");
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut second).await, "bucketfront-worker-1");
        assert_eq!(get(&mut first).await, "bucketfront-worker-0");
        drop((first, second));
        stop.cancel();
        serving.await.unwrap();
    }
}
