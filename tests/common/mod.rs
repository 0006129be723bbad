//! Test harness: a real embedded store and a real proxy on loopback ports the OS picks,
//! and the configs they run with (here); the HTTP client (`client.rs`), origins that
//! misbehave on purpose (`origin.rs`), the binary as a child process (`process.rs`),
//! waiting (`net.rs`) and Azurite (`azure.rs`). Everything started here stops when the
//! harness is dropped or `stop`ped.
// Each test binary uses its own subset, and a test crate has no public surface: its
// helpers are `pub` for the test files beside them.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bucketfront::State;
use bucketfront::Store;
use bucketfront::config::{self, Config, Dur, Secret, SigningKey};
use bucketfront::{App, Listeners};
use bucketfront::{BucketPattern, OriginPattern};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod azure;
mod client;
mod net;
mod origin;
mod process;
// Each test binary uses its own subset of the harness.
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use net::{accepting, eventually, eventually_some, free_port};
#[allow(unused_imports)]
pub use origin::*;
#[allow(unused_imports)]
pub use process::*;

pub const ALLOWED_ORIGIN: &str = "http://app.test:3000";
pub const SIGNING_SECRET: &str = "test-signing-secret-0123456789";

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub state: Arc<State>,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts the proxy with `config`, validated as a config file would be.
    pub async fn start(config: Config, embedded: Option<&Store>) -> Proxy {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Proxy::start_at(config, embedded, any, any).await
    }

    /// As [`Proxy::start`], on given addresses (an instance coming back where it was).
    pub async fn start_at(
        config: Config,
        embedded: Option<&Store>,
        public: SocketAddr,
        admin: SocketAddr,
    ) -> Proxy {
        let config = config.validated().expect("test config is valid");
        let public = TcpListener::bind(public).await.unwrap();
        let admin = TcpListener::bind(admin).await.unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let app = App::build(config, embedded.map(Store::access))
            .await
            .expect("app builds");
        let state = app.state();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            app.clone()
                .run(Listeners { public, admin }, shutdown.clone()),
        );
        Proxy {
            addr,
            admin: admin_addr,
            state,
            app,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until every request this proxy took has ended (its in-flight gauge at 0),
    /// panicking with `what` after `within`. A request ends as its response body is
    /// dropped, which may come after the client saw the end or the connection close.
    pub async fn all_requests_ended(&self, within: Duration, what: &str) {
        eventually(within, what, || async {
            self.state.metrics.in_flight.get() == 0
        })
        .await;
    }

    /// Stops accepting, drains, and waits for the server to end.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// As [`Proxy::stop`], leaving the (stopped) value in place.
    pub async fn halt(&mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("proxy stops within its drain timeout")
            .unwrap();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// An embedded store on a free port, plus a proxy config pointing at it.
pub struct Env {
    pub store: Store,
    pub proxy: Proxy,
    store_stop: CancellationToken,
}

/// A bucket of test configs: read from `endpoint`, path style (the embedded store and
/// the fake origin), with the store's keys when `keys` is given.
pub fn bucket(name: &str, endpoint: &str, keys: Option<(&str, &str)>) -> config::Bucket {
    config::Bucket {
        name: name.into(),
        endpoint: Some(endpoint.into()),
        path_style: true,
        access_key: keys.map(|(a, _)| Secret::new(a)),
        secret_key: keys.map(|(_, s)| Secret::new(s)),
        ..Default::default()
    }
}

/// The account every test tenant with a bucket glob names as its buckets' owner (a glob
/// needs one; the test stores do not check it).
pub const TEST_OWNER: &str = "111122223333";

/// A tenant of test configs owning `buckets` (patterns); signed when it has keys.
pub fn tenant(name: &str, buckets: &[&str], keys: &[(&str, &str)]) -> config::TenantConfig {
    config::TenantConfig {
        expected_owner: buckets
            .iter()
            .any(|b| b.contains('*'))
            .then(|| TEST_OWNER.to_string()),
        name: name.into(),
        buckets: buckets
            .iter()
            .map(|b| BucketPattern::parse(b).expect("a valid pattern"))
            .collect(),
        require_signature: !keys.is_empty(),
        signing_keys: keys
            .iter()
            .map(|(id, secret)| SigningKey {
                id: id.to_string(),
                secret: Secret::new(*secret),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn origin_pattern(s: &str) -> OriginPattern {
    OriginPattern::parse(s).expect("a valid origin pattern")
}

/// Listeners on loopback ports the OS picks, short deadlines, one origin attempt.
fn base() -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.header_read_timeout = Dur::secs(1);
    c.server.drain_timeout = Dur::secs(10);
    // Every test client is 127.0.0.1: one client to the per-client limit, which has
    // tests of its own (tests/hostile.rs).
    c.server.max_connections_per_client = c.server.max_connections;
    c.origin.connect_timeout = Dur::secs(1);
    c.origin.first_byte_timeout = Dur::secs(2);
    c.origin.max_attempts = 1;
    // Expiry tests see the revalidation in the foreground; stale-while-revalidate has a
    // test of its own.
    c.cache.stale_while_revalidate = Dur::secs(0);
    c
}

/// The config used by most tests: tenant `t1` owns `test-*` (unsigned) and tenant
/// `signed` owns `sig-*` (signed); both read the embedded store at `endpoint`.
pub fn config(endpoint: &str) -> Config {
    let mut c = base();
    c.cors.allowed_origins = vec![
        origin_pattern(ALLOWED_ORIGIN),
        origin_pattern("https://*.example.com"),
    ];
    c.cors.max_age = Dur::secs(600);
    c.tenants = vec![
        tenant("t1", &["test-*"], &[]),
        tenant(
            "signed",
            &["sig-*"],
            &[("k1", SIGNING_SECRET), ("k2", "second-signing-secret-xyz")],
        ),
    ];
    c.buckets = ["test-images", "test-other", "test-nobucket", "sig-images"]
        .iter()
        .map(|name| bucket(name, endpoint, None))
        .collect();
    c
}

impl Env {
    /// Store with buckets `test-images`, `test-other`, `sig-images`; proxy with `config()`.
    pub async fn start() -> Env {
        Env::with(|_, _| {}).await
    }

    /// As [`Env::start`], with `edit` applied to `config()` (given the store's endpoint).
    pub async fn with(edit: impl FnOnce(&mut Config, &str)) -> Env {
        Env::start_with(|endpoint| {
            let mut c = config(endpoint);
            edit(&mut c, endpoint);
            c
        })
        .await
    }

    pub async fn start_with(make_config: impl FnOnce(&str) -> Config) -> Env {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_stop = CancellationToken::new();
        let store = Store::start(
            listener,
            "TESTACCESSKEY",
            "test-secret-key",
            store_stop.clone(),
        )
        .unwrap();
        for b in ["test-images", "test-other", "sig-images"] {
            store
                .client()
                .create_bucket()
                .bucket(b)
                .send()
                .await
                .unwrap();
        }
        let proxy = Proxy::start(make_config(&store.endpoint), Some(&store)).await;
        Env {
            store,
            proxy,
            store_stop,
        }
    }

    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<Bytes>, content_type: &str) {
        let body = aws_sdk_s3::primitives::ByteStream::from(body.into());
        self.store
            .put(bucket, key, body, content_type)
            .await
            .unwrap();
    }

    /// Stops the proxy (SIGTERM's path: drain, flush the disk tier) and then starts a new
    /// one with the same config, on new ports: never two on one disk path at once.
    pub async fn restart_proxy(&mut self) {
        let config = Config::clone(&self.proxy.state.config);
        self.proxy.halt().await;
        self.proxy = Proxy::start(config, Some(&self.store)).await;
    }

    /// Stops the store (the origin goes away; the proxy keeps running).
    pub fn stop_store(&self) {
        self.store_stop.cancel();
    }

    pub fn gets(&self) -> u64 {
        self.store.stats.gets.load(Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.proxy.stop().await;
        self.store_stop.cancel();
    }
}

/// A signed query string for `sig-*` buckets with the first test key.
pub fn signed_query(bucket: &str, key: &str, exp: u64) -> String {
    bucketfront::signed_query(SIGNING_SECRET.as_bytes(), bucket, key, exp, None)
}

/// `[cache.disk]` at `dir`, room for 1 GiB.
pub fn with_disk(dir: &std::path::Path) -> impl FnOnce(&mut bucketfront::config::Config, &str) {
    let path = dir.to_path_buf();
    move |c, _| {
        c.cache.disk = Some(bucketfront::config::DiskConfig {
            path,
            max_size: bucketfront::config::Size(1 << 30),
        })
    }
}

pub fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// A config whose tenant `t1` reads bucket `test-fake` from `endpoint` (a [`FakeOrigin`])
/// with static keys, first byte within 1 s.
pub fn fake_config(endpoint: &str) -> Config {
    let mut c = base();
    c.origin.first_byte_timeout = Dur::secs(1);
    c.tenants = vec![tenant("t1", &["test-fake"], &[])];
    *c.buckets = vec![bucket(
        "test-fake",
        endpoint,
        Some(("AKIDFAKE", "fake-secret")),
    )];
    c
}
