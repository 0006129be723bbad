//! The accept loop shared by every listener (public, admin, demo): connection permits,
//! HTTP/1.1 and h2c on one port, a real header-read timeout, and graceful drain.
//!
//! The library never binds sockets or installs signal handlers: callers pass a bound
//! listener and a cancellation token, so tests run real servers on port 0.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Limits {
    pub fn from_config(s: &crate::config::Server) -> Limits {
        Limits {
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout.0,
            drain_timeout: s.drain_timeout.0,
        }
    }
}

/// Marks a request that arrived on a connection beyond `max_connections`: the handler
/// must answer `503 overloaded` without doing any work.
#[derive(Debug, Clone, Copy)]
pub struct Overloaded;

/// How many connections beyond the limit are accepted just to be told 503.
fn overflow_connections(max: usize) -> usize {
    (max / 16).clamp(8, 1024)
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then stops accepting
/// and gives open connections `drain_timeout` to finish their responses.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    serve_tls(listener, None, limits, metrics, shutdown, handler).await
}

/// [`serve`], with TLS when `tls` is given (ALPN picks h2 or HTTP/1.1). The handshake
/// runs in the connection's task and must finish within `header_read_timeout`.
pub async fn serve_tls<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(overflow_connections(limits.max_connections)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout silently does nothing.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    loop {
        // The permit is taken before accept(). At max_connections, a small overflow pool
        // still accepts, to answer 503 at once; beyond it, connections wait in the backlog.
        let (permit, overloaded) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => (p, false), Err(_) => break },
            p = overflow.clone().acquire_owned() => match p { Ok(p) => (p, true), Err(_) => break },
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let handler = handler.clone();
            async move {
                if !overloaded {
                    return Ok::<_, Infallible>(handler(req).await);
                }
                // The handler answers 503 through the normal path (JSON, CORS, log line);
                // the connection is closed after it.
                req.extensions_mut().insert(Overloaded);
                let mut resp = handler(req).await;
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                Ok(resp)
            }
        });
        let (watcher, builder, tls) = (graceful.watcher(), builder.clone(), tls.clone());
        let metrics = metrics.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            if let Some(m) = &metrics {
                m.connections.inc();
            }
            let result = match tls {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection(TokioIo::new(tls_stream), service)
                                .into_owned();
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            if let Some(m) = &metrics {
                m.connections.dec();
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(drain_timeout = ?limits.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
}
