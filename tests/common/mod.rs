//! Test harness: a real embedded store and a real proxy on loopback ports the OS picks,
//! a small HTTP client, and origins that misbehave on purpose. Everything started here
//! stops when the harness is dropped or `stop`ped.
// Each test binary uses its own subset, and a test crate has no public surface: its
// helpers are `pub` for the test files beside them.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bucketfront::app::{App, Listeners};
use bucketfront::config::{self, Config, Dur, Secret, SigningKey};
use bucketfront::pattern::{BucketPattern, OriginPattern};
use bucketfront::proxy::State;
use bucketfront::store::Store;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod azure;
mod net;
// Each test binary uses its own subset of the harness.
#[allow(unused_imports)]
pub use net::{accepting, eventually, eventually_some, free_port};

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

/// A response with its whole body (or the error that broke the body).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn bytes(&self) -> &Bytes {
        self.body.as_ref().expect("body arrived whole")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.bytes()).expect("JSON body")
    }
}

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{e:?}"));
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs `body` (JSON) to `url`; the status and the JSON answer.
pub async fn post_json(url: &str, body: &str) -> (u16, serde_json::Value) {
    let req = Request::post(url)
        .body(http_body_util::Full::new(Bytes::copy_from_slice(
            body.as_bytes(),
        )))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let r = client.request(req).await.unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

pub async fn get(url: &str) -> Resp {
    request(Method::GET, url, &[]).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    request(Method::GET, url, headers).await
}

/// A signed query string for `sig-*` buckets with the first test key.
pub fn signed_query(bucket: &str, key: &str, exp: u64) -> String {
    bucketfront::auth::signed_query(SIGNING_SECRET.as_bytes(), bucket, key, exp, None)
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

/// The value of one series (`name{labels}`) on the proxy's `/metrics`.
pub async fn metric(proxy: &Proxy, series: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", proxy.admin)).await;
    let text = String::from_utf8_lossy(text.bytes()).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics"))
}

pub fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// Deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761 + seed as u64) >> 7) as u8)
        .collect()
}

/// How a [`FakeOrigin`] answers one request.
#[derive(Clone)]
pub enum Behaviour {
    /// `200` with the whole body.
    Full(Bytes),
    /// `200` announcing `len` bytes, sending `cut` of them, then closing.
    Cut { body: Bytes, cut: usize },
    /// A status with an S3 XML error body.
    Status(u16),
    /// Accepts and never answers.
    Stall,
    /// Exactly this response head (status line and headers, without the blank line),
    /// then `body`: for answers no S3 gives.
    Raw { head: String, body: Bytes },
    /// As `Raw`, then the connection is closed (a body delimited by the close, or one
    /// cut short).
    Closing { head: String, body: Bytes },
    /// `200` with `body` once `gate` is notified (an origin as slow as the test wants).
    Gated {
        gate: Arc<tokio::sync::Notify>,
        body: Bytes,
    },
    /// Like S3 for a Requester Pays bucket: `body` for a request that says
    /// `x-amz-request-payer: requester`, 403 AccessDenied for one that does not.
    RequesterPays(Bytes),
    /// Like S3 for a bucket in `region`: requests signed for another region get 301
    /// PermanentRedirect (with `x-amz-bucket-region` when `hint`, else 400
    /// AuthorizationHeaderMalformed without it); HeadBucket always names the region.
    Region {
        region: &'static str,
        body: Bytes,
        hint: bool,
    },
}

/// A deliberately misbehaving S3 origin: a real TCP peer that speaks just enough HTTP.
/// Each request takes the next behaviour from the script (the last one repeats).
pub struct FakeOrigin {
    pub endpoint: String,
    pub requests: Arc<AtomicU64>,
    /// Every request head received, in order.
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl FakeOrigin {
    /// The listening address (of `endpoint`).
    pub fn addr(&self) -> SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("endpoint is http://ip:port")
    }

    pub async fn start(script: Vec<Behaviour>) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (count, token, seen) = (requests.clone(), stop.clone(), heads.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let mut sock = tokio::select! {
                    r = listener.accept() => r.unwrap().0,
                    () = token.cancelled() => return,
                };
                let (count, script, token, seen) =
                    (count.clone(), script.clone(), token.clone(), seen.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve_fake(&mut sock, &count, &script, &seen) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        FakeOrigin {
            endpoint,
            requests,
            heads,
            stop,
        }
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_fake(
    sock: &mut tokio::net::TcpStream,
    count: &AtomicU64,
    script: &[Behaviour],
    seen: &std::sync::Mutex<Vec<String>>,
) {
    loop {
        // Read one request head (GET has no body).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match sock.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let n = count.fetch_add(1, Ordering::SeqCst) as usize;
        let behaviour = script[n.min(script.len() - 1)].clone();
        let head = String::from_utf8_lossy(&head).to_string();
        seen.lock().unwrap().push(head.clone());
        let ok = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len}\r\nETag: \"fake-etag\"\r\nLast-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\nx-amz-request-id: LEAKME\r\n\r\n"
            )
        };
        match behaviour {
            Behaviour::Full(body) => {
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Cut { body, cut } => {
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body[..cut]).await;
                let _ = sock.flush().await;
                return;
            }
            Behaviour::Status(status) => {
                let xml = "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>secret upstream text</Message></Error>";
                let head = format!(
                    "HTTP/1.1 {status} Oops\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: LEAKME\r\n\r\n",
                    xml.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(xml.as_bytes()).await;
            }
            Behaviour::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Behaviour::Gated { gate, body } => {
                gate.notified().await;
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Raw { head, body } => {
                let _ = sock.write_all(format!("{head}\r\n\r\n").as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Closing { head, body } => {
                let _ = sock.write_all(format!("{head}\r\n\r\n").as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
                return;
            }
            Behaviour::RequesterPays(body) => {
                if head
                    .to_ascii_lowercase()
                    .contains("x-amz-request-payer: requester")
                {
                    let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                } else {
                    let xml =
                        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                    let head = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                }
            }
            Behaviour::Region { region, body, hint } => {
                let signed_right = head.contains(&format!("/{region}/s3/aws4_request"));
                let response = if head.starts_with("HEAD ") {
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\nContent-Length: 0\r\n\r\n"
                    )
                } else if signed_right {
                    let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    continue;
                } else if hint {
                    let xml = "<Error><Code>PermanentRedirect</Code><Message>wrong endpoint</Message></Error>";
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                } else {
                    let xml = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>wrong region</Message></Error>";
                    format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                };
                let _ = sock.write_all(response.as_bytes()).await;
            }
        }
    }
}

/// A config whose tenant `t1` reads bucket `test-fake` from `endpoint` (a [`FakeOrigin`])
/// with static keys, first byte within 1 s.
pub fn fake_config(endpoint: &str) -> Config {
    let mut c = base();
    c.origin.first_byte_timeout = Dur::secs(1);
    c.tenants = vec![tenant("t1", &["test-fake"], &[])];
    c.buckets = vec![bucket(
        "test-fake",
        endpoint,
        Some(("AKIDFAKE", "fake-secret")),
    )];
    c
}

/// An HTTP/1 keep-alive connection that has had one `GET path` answered 200 (idle since).
pub async fn answered_keep_alive(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    answered_keep_alive_from(addr, path, [127, 0, 0, 1]).await
}

/// A connection with a response in progress that it does not read (a `GET path` of an
/// object larger than the socket buffers; only the status line read): busy in the
/// server's eyes, never closed to make room.
pub async fn busy_connection(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s
}

/// A TCP connection to `addr` from loopback address `from` (another client than the
/// tests' usual 127.0.0.1, as the server tells clients apart).
pub async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("a loopback source address");
    socket.connect(addr).await.unwrap()
}

/// As [`answered_keep_alive`], from loopback address `from`.
pub async fn answered_keep_alive_from(
    addr: SocketAddr,
    path: &str,
    from: [u8; 4],
) -> tokio::net::TcpStream {
    let mut s = connect_from(addr, from).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s
}

/// Waits until connecting to `addr` is refused (its listener closed); panics after
/// `within`.
pub async fn refused_within(addr: SocketAddr, within: Duration) {
    eventually(
        within,
        &format!("{addr} refuses connections"),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
}

/// Resident set size of this process.
pub fn rss() -> u64 {
    bucketfront::metrics::resident_bytes().unwrap_or(0)
}

/// `bucketfront serve -c PATH`, without a notify socket or IMDS lookups and with its
/// output discarded; callers add their environment and pipes.
pub fn serve(path: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bucketfront"));
    command
        .args(["serve", "-c", path.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// Sends `sig` (`-TERM`, `-HUP`…) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// A child process that is killed and reaped when dropped, so that a failing assertion
/// leaves nothing running behind the test.
pub struct Reaped(Option<std::process::Child>);

impl Reaped {
    pub fn new(child: std::process::Child) -> Reaped {
        Reaped(Some(child))
    }

    /// Hands the child over (to wait for its output); the caller owns it from here.
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("a child not yet taken")
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("a child not yet taken")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a child not yet taken")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
