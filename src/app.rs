//! Wiring: builds the shared state from a config, runs the public and admin listeners
//! until shutdown, then drains; and swaps in a new config on reload. Used by `serve`, the
//! tests and the benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::origin::{Embedded, Origins};
use crate::proxy::{self, State};
use crate::server::{Limits, Listener, Workers};
use crate::tls;

/// The certificate named by `[server] tls`, read and checked; `None` without TLS.
fn certificate(config: &Config) -> Result<Option<rustls::sign::CertifiedKey>, WiringError> {
    config
        .server
        .tls
        .as_ref()
        .map(|t| tls::load(&t.cert, &t.key).map_err(|e| WiringError::Certificate(e.to_string())))
        .transpose()
}

/// The request state for `config`: its tenants, CORS and origin clients, around the
/// cache and metrics that outlive reloads.
async fn state_for(
    config: Config,
    embedded: &Embedded,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    clock: Arc<Clock>,
) -> State {
    let origins = Arc::new(Origins::new(&config, embedded.clone(), metrics.clone()).await);
    State::new(Arc::new(config), cache, origins, metrics, clock)
}

/// Why a command, starting the service, or a reload failed: the one error of the wiring
/// code, printed as one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A reload that changes settings only a restart can apply.
    #[error("these settings need a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    #[error("the TLS certificate: {0}")]
    Certificate(String),
    /// A runtime, socket, limit or store the process could not set up: what, and why.
    #[error("{what}: {why}")]
    Start { what: String, why: String },
    /// What the command was asked, or found, does not allow it (the message says why).
    #[error("{0}")]
    Refused(String),
}

impl WiringError {
    /// A `map_err` for setting up `what`.
    pub fn starting<E: std::fmt::Display>(
        what: impl Into<String>,
    ) -> impl FnOnce(E) -> WiringError {
        let what = what.into();
        move |e| WiringError::Start {
            what,
            why: e.to_string(),
        }
    }
}

pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

pub struct App {
    /// The config in force; each request takes a snapshot, so a reload never changes the
    /// rules under a request that has started.
    state: ArcSwap<State>,
    pub admin: Arc<Admin>,
    embedded: Embedded,
    tls: Option<Arc<tls::Resolver>>,
}

impl App {
    /// Builds caches, origin clients and tenants for `config`. `embedded` wires the
    /// in-process store's keys to the buckets whose endpoint is that store.
    pub async fn build(config: Config, embedded: Embedded) -> Result<Arc<App>, WiringError> {
        let tls = certificate(&config)?.map(tls::Resolver::new);
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(Clock::default());
        let cache = Cache::new(&config.cache, metrics.clone(), clock.clone());
        let state = state_for(config, &embedded, cache.clone(), metrics.clone(), clock).await;
        let admin = Arc::new(Admin {
            metrics,
            cache,
            ready: Arc::new(AtomicBool::new(false)),
        });
        Ok(Arc::new(App {
            state: ArcSwap::from_pointee(state),
            admin,
            embedded,
            tls,
        }))
    }

    /// The state requests are answered with right now.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Validates `config` whole (certificates included) and swaps it in. Changes that
    /// need a restart are refused by name; the object cache survives.
    pub async fn reload(&self, config: Config) -> Result<(), WiringError> {
        let current = self.state();
        let old = &current.config;
        let mut refused = old.server.restart_only_changes(&config.server);
        if old.cache != config.cache {
            refused.push("cache");
        }
        if old.embedded_store != config.embedded_store {
            refused.push("embedded_store");
        }
        if !refused.is_empty() {
            return Err(WiringError::NeedsRestart(refused));
        }
        let certificate = certificate(&config)?;
        let state = state_for(
            config,
            &self.embedded,
            current.cache.clone(),
            current.metrics.clone(),
            current.clock.clone(),
        )
        .await;
        if let (Some(resolver), Some(certificate)) = (&self.tls, certificate) {
            resolver.replace(certificate);
        }
        self.state.store(Arc::new(state));
        current.metrics.reloads.inc();
        Ok(())
    }

    /// Serves until `shutdown` is cancelled, then drains the public listener for
    /// `drain_timeout` (the admin listener answers `/readyz` 503 meanwhile).
    pub async fn run(self: Arc<Self>, listeners: Listeners, shutdown: CancellationToken) {
        let state = self.state();
        let limits = Limits::from_config(&state.config.server);
        let app = self.clone();
        // Without its worker runtimes the listener still serves, on this runtime.
        let workers = Workers::per_core()
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start worker runtimes"))
            .ok();
        let mut public = Listener::new(limits.clone())
            .tls(self.tls.clone().map(tls::acceptor))
            .metrics(state.metrics.conn.clone());
        if let Some(workers) = &workers {
            public = public.on(workers);
        }
        let public = tokio::spawn(public.serve(
            listeners.public,
            shutdown.clone(),
            move |req: Request<Incoming>| {
                let state = app.state();
                async move {
                    let (parts, _body) = req.into_parts();
                    proxy::handle(state, parts).await
                }
            },
        ));
        let admin_stop = CancellationToken::new();
        let admin = self.admin.clone();
        let app = self.clone();
        let admin_task = tokio::spawn(Listener::new(limits.with_max_connections(64)).serve(
            listeners.admin,
            admin_stop.clone(),
            move |req: Request<Incoming>| {
                let (admin, state) = (admin.clone(), app.state());
                async move { admin.handle(req, state).await }
            },
        ));
        let cache = state.cache.clone();
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
        state.cache.flush().await;
        admin_stop.cancel();
        let _ = admin_task.await;
        drop(workers);
        tracing::info!("stopped");
    }
}
