//! Wiring: builds the shared state from a config and runs the public and admin
//! listeners until shutdown, then drains. Used by `serve`, the tests and the benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::origin::{Embedded, Origins};
use crate::proxy::{self, State};
use crate::server::{self, Limits};

pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

pub struct App {
    pub state: Arc<State>,
    pub admin: Arc<Admin>,
}

impl App {
    /// Builds caches, origin clients and tenants for `config`. `embedded` wires the
    /// in-process store's keys to the buckets whose endpoint is that store.
    pub async fn build(config: Config, embedded: Embedded) -> App {
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::new(
            &config.cache,
            &config.server.allowed_content_types,
            metrics.clone(),
        );
        let origins = Arc::new(Origins::new(&config, embedded).await);
        let state = Arc::new(State::new(
            Arc::new(config),
            cache.clone(),
            origins,
            metrics.clone(),
        ));
        let admin = Arc::new(Admin {
            metrics,
            cache,
            ready: Arc::new(AtomicBool::new(false)),
        });
        App { state, admin }
    }

    /// Serves until `shutdown` is cancelled, then drains the public listener for
    /// `drain_timeout` (the admin listener answers `/readyz` 503 meanwhile).
    pub async fn run(self, listeners: Listeners, shutdown: CancellationToken) {
        let limits = Limits::from_config(&self.state.config.server);
        let state = self.state.clone();
        let public = tokio::spawn(server::serve(
            listeners.public,
            limits,
            Some(state.metrics.clone()),
            shutdown.clone(),
            move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let (parts, _body) = req.into_parts();
                    proxy::handle(state, parts).await
                }
            },
        ));
        let admin_stop = CancellationToken::new();
        let admin = self.admin.clone();
        let admin_task = tokio::spawn(server::serve(
            listeners.admin,
            Limits {
                max_connections: 64,
                ..limits
            },
            None,
            admin_stop.clone(),
            move |req: Request<Incoming>| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
        ));
        let cache = self.state.cache.clone();
        let maintenance_stop = admin_stop.clone();
        tokio::spawn(async move {
            // moka evicts lazily during calls; run it on a timer so that the byte bound
            // and the gauges hold when traffic stops.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => cache.maintain().await,
                    () = maintenance_stop.cancelled() => return,
                }
            }
        });
        self.admin.ready.store(true, Ordering::SeqCst);
        shutdown.cancelled().await;
        self.admin.ready.store(false, Ordering::SeqCst);
        tracing::info!("draining");
        let _ = public.await;
        admin_stop.cancel();
        let _ = admin_task.await;
        tracing::info!("stopped");
    }
}
