//! Benchmarks of the hardening work, against a real `bucketfront` process in front of
//! the embedded store (in this process, on a runtime thread of its own):
//!
//! - `cold-keys`: 2,000 concurrent GETs of 2,000 distinct cold keys (the miss path's
//!   shared state under contention); time to answer them all and latency percentiles.
//!   `BUCKETFRONT_BIN=/path/to/other/build` runs the same load against another build,
//!   for a before/after in one sitting.
//! - `soak`: measures capacity, then runs mixed traffic (hits, misses, ranges, 404s,
//!   bad signatures, slow readers, abandoned downloads, idle sockets) at 70% of it for
//!   `SOAK_SECONDS` (default 600), sampling the proxy's RSS every 10 s. Capacity is
//!   measured with the hostile clients running; the generator is wrk2's model (a fixed
//!   set of keep-alive connections, a bounded queue filled at a constant rate).
//! - `broken-origin`: p50/p99 of one tenant's requests, quiet, then while another
//!   tenant's origin resets mid-body, stalls after headers, trickles at 1 KB/s, answers
//!   503 SlowDown and refuses connections.
//! - `attacks`: a polite client's latency while each attack of issue 12 runs in turn.
//!
//! `cargo bench --bench hostile -- cold-keys` (or `soak`, `broken-origin`, `attacks`).
//! Not run by CI.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bucketfront::Store;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use support::{BUCKET, SECRET, accepting, free_port, seed};

/// The proxy process, killed on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`), as bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            << 10
    }

    fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    fn hwm(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Starts the proxy (`BUCKETFRONT_BIN`, else this build's) with keys every build knows.
async fn start_proxy(dir: &Path, store: &str, extra: &str) -> Proxy {
    start_proxy_with(dir, store, extra, "").await
}

async fn start_proxy_with(dir: &Path, store: &str, extra: &str, tenants: &str) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nmax_connections = 5000\n{extra}\n{tenants}\n[[tenants]]\nname = \"bench\"\nbuckets = [\"{BUCKET}\"]\nsigning_keys = [{{ id = \"k1\", secret = \"{SECRET}\" }}]\n[[buckets]]\nname = \"{BUCKET}\"\nendpoint = \"{store}\"\npath_style = true\naccess_key = \"BENCHKEY\"\nsecret_key = \"bench-secret-key\"\n"
    );
    let path = dir.join(format!("proxy-{port}.toml"));
    std::fs::write(&path, config).unwrap();
    let bin = std::env::var("BUCKETFRONT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_bucketfront").to_string());
    let child = support::serve(bin, &path);
    // Owned from here, so that it is killed however this ends.
    let proxy = Proxy { child, port };
    accepting(port, "bucketfront").await;
    proxy
}

fn signed(key: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3 * 24 * 3600;
    let sig = bucketfront::sign(SECRET.as_bytes(), BUCKET, key, exp);
    format!("/{BUCKET}/{key}?exp={exp}&sig={sig}")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn cold_keys(store: &Store, dir: &Path) -> String {
    const KEYS: usize = 2000;
    seed(store, "cold", KEYS, 4096).await;
    let proxy = start_proxy(dir, &store.endpoint, "").await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(KEYS)
        .build_http();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let (client, url) = (client.clone(), proxy.url(&signed(&format!("cold/{i}.png"))));
        tasks.spawn(async move {
            let t0 = Instant::now();
            // A connection the proxy cut (one client holding 2,000 at once meets the
            // per-client connection limit) counts as a failure, as a wrong status does.
            let ok = match client.get(url.parse().unwrap()).await {
                Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            (ok, t0.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (ok, ms) = r.unwrap();
        failed += usize::from(!ok);
        lat.push(ms);
    }
    let total = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    format!(
        "| {KEYS} concurrent cold keys | {:.2} s total | p50 {:.0} ms | p99 {:.0} ms | {failed} not 200 or cut | RSS after {} MiB |\n",
        total,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        proxy.rss() >> 20
    )
}

/// Hostile clients per second, whatever the rate of ordinary traffic: slow readers,
/// abandoned downloads, idle sockets (the `one` kinds 90, 94 and 98).
const HOSTILE_PER_SECOND: [(u32, u32); 3] = [(90, 20), (94, 50), (98, 20)];

/// Unexpected answers by request kind and status (0: no answer, or a broken body).
static UNEXPECTED: std::sync::Mutex<std::collections::BTreeMap<(&'static str, u16), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn expect(kind: &'static str, status: u16, want: u16) -> bool {
    if status != want {
        let mut map = UNEXPECTED.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((kind, status)).or_default() += 1;
    }
    status == want
}

/// An ordinary request of the mix (`kind` in 0..90): its name, path, `Range` and the
/// status it must get.
fn ordinary(kind: u32, n: u64) -> (&'static str, String, Option<&'static str>, u16) {
    match kind {
        0..60 => ("hit", signed(&format!("hot/{}.png", n % 100)), None, 200),
        60..70 => (
            "miss",
            signed(&format!("many/{}.png", n % 20_000)),
            None,
            200,
        ),
        70..80 => (
            "range",
            signed(&format!("hot/{}.png", n % 100)),
            Some("bytes=100-2000"),
            206,
        ),
        80..85 => ("404", signed(&format!("missing/{n}.png")), None, 404),
        _ => (
            "bad signature",
            format!("/{BUCKET}/hot/1.png?exp=1&sig=bad"),
            None,
            403,
        ),
    }
}

/// A hostile client of the mix (`kind` in 90..100), on a socket of its own.
async fn hostile(kind: u32, proxy_port: u16, n: u64) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", proxy_port)).await else {
        return;
    };
    match kind {
        90..94 => {
            // A slow reader: takes 64 KiB of a 1 MiB object, then stops reading.
            let head = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", signed("big/0.png"));
            let _ = s.write_all(head.as_bytes()).await;
            let mut buf = vec![0u8; 64 << 10];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        94..98 => {
            // An abandoned download: the head, then gone.
            let head = format!(
                "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
                signed(&format!("many/{}.png", n % 20_000))
            );
            let _ = s.write_all(head.as_bytes()).await;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
        }
        _ => {
            // An idle socket held for 15 s.
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    }
}

/// One request of the mix through a pooling client; whether the answer was expected.
async fn one(
    kind: u32,
    proxy_port: u16,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    n: u64,
) -> bool {
    if kind >= 90 {
        hostile(kind, proxy_port, n).await;
        return true;
    }
    let (name, path, range, want) = ordinary(kind, n);
    let mut req = http::Request::get(format!("http://127.0.0.1:{proxy_port}{path}"));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let status = match client
        .request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            r.into_body().collect().await.map(|_| status).unwrap_or(0)
        }
        Err(_) => 0,
    };
    expect(name, status, want)
}

/// One keep-alive connection of the soak's generator, reconnected when the proxy closes
/// it. A request that fails before any answer on a reused connection (the proxy closed
/// it as idle or old just then) is sent once more on a new one, as browsers do for GETs.
struct Conn {
    port: u16,
    send: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl Conn {
    async fn get(&mut self, path: &str, range: Option<&str>) -> u16 {
        for attempt in 0..2 {
            if self.send.as_ref().is_none_or(|s| s.is_closed()) {
                let Ok(tcp) = TcpStream::connect(("127.0.0.1", self.port)).await else {
                    return 0;
                };
                let _ = tcp.set_nodelay(true);
                let Ok((send, conn)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
                else {
                    return 0;
                };
                tokio::spawn(conn);
                self.send = Some(send);
            }
            let Some(send) = self.send.as_mut() else {
                return 0;
            };
            let mut req = http::Request::get(path).header("host", "127.0.0.1");
            if let Some(r) = range {
                req = req.header("range", r);
            }
            if send.ready().await.is_err() {
                self.send = None;
                continue;
            }
            match send.send_request(req.body(Empty::new()).unwrap()).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    return r.into_body().collect().await.map(|_| status).unwrap_or(0);
                }
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_incomplete_message()) => {
                    self.send = None;
                }
                Err(_) => {
                    self.send = None;
                    return 0;
                }
            }
        }
        0
    }
}

/// The soak's generator, the wrk2 model: a fixed set of keep-alive connections take
/// requests from one bounded queue; the queue is filled at a constant rate (open loop),
/// and a request that finds it full is counted as not sent. A stall therefore shows as
/// "not sent", never as thousands of new connections.
struct Generator {
    queue: tokio::sync::mpsc::Sender<(u32, u64)>,
    done: Arc<AtomicU64>,
    unexpected: Arc<AtomicU64>,
}

const CONNECTIONS: usize = 256;
const QUEUE: usize = 4000;

impl Generator {
    fn start(port: u16) -> Generator {
        let (queue, rx) = tokio::sync::mpsc::channel::<(u32, u64)>(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let done = Arc::new(AtomicU64::new(0));
        let unexpected = Arc::new(AtomicU64::new(0));
        for _ in 0..CONNECTIONS {
            let (rx, done, unexpected) = (rx.clone(), done.clone(), unexpected.clone());
            tokio::spawn(async move {
                let mut conn = Conn { port, send: None };
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some((kind, n)) = job else { return };
                    let (name, path, range, want) = ordinary(kind, n);
                    if !expect(name, conn.get(&path, range).await, want) {
                        unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Generator {
            queue,
            done,
            unexpected,
        }
    }
}

/// Hostile clients, `HOSTILE_PER_SECOND` of each kind, until `stop`.
fn spawn_hostile(port: u16, stop: CancellationToken, count: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 1u64 << 40;
        while !stop.is_cancelled() {
            tick.tick().await;
            for (kind, per_second) in HOSTILE_PER_SECOND {
                for _ in 0..per_second {
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(hostile(kind, port, n));
                }
            }
        }
    });
}

async fn soak(store: &Store, dir: &Path, seconds: u64) -> String {
    seed(store, "hot", 100, 64 << 10).await;
    seed(store, "many", 20_000, 16 << 10).await;
    seed(store, "big", 1, 1 << 20).await;
    let proxy = start_proxy(
        dir,
        &store.endpoint,
        "send_timeout = \"2s\"\nheader_read_timeout = \"5s\"\n[cache]\nmax_memory = \"128MiB\"\nfill_memory = \"32MiB\"",
    )
    .await;
    let port = proxy.port;
    let generator = Generator::start(port);
    // Capacity: the queue kept full for 10 s (closed loop over the same connections),
    // with the hostile clients running, so that 70% is 70% of what the whole mix leaves.
    let hostile_count = Arc::new(AtomicU64::new(0));
    let capacity_stop = CancellationToken::new();
    spawn_hostile(port, capacity_stop.clone(), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + Duration::from_secs(10);
    let before = generator.done.load(Ordering::Relaxed);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            generator.queue.send((fastrand::u32(0..90), n)),
        )
        .await;
    }
    let capacity = (generator.done.load(Ordering::Relaxed) - before) as f64 / 10.0;
    capacity_stop.cancel();
    // Let the capacity run's backlog drain before the soak starts counting.
    while generator.queue.capacity() < QUEUE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = (capacity * 0.7).max(10.0);
    let (done0, unexpected0) = (
        generator.done.load(Ordering::Relaxed),
        generator.unexpected.load(Ordering::Relaxed),
    );
    UNEXPECTED.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let soak_stop = CancellationToken::new();
    spawn_hostile(port, soak_stop.clone(), hostile_count.clone());
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut credit, mut skipped, mut sent) = (0.0, 0u64, 0u64);
    let mut next_sample = Duration::from_secs(10);
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        credit += rate / 100.0;
        while credit >= 1.0 {
            credit -= 1.0;
            n += 1;
            match generator.queue.try_send((fastrand::u32(0..90), n)) {
                Ok(()) => sent += 1,
                Err(_) => skipped += 1,
            }
        }
        if started.elapsed() >= next_sample {
            samples.push((started.elapsed().as_secs(), proxy.rss() >> 20));
            next_sample += Duration::from_secs(10);
        }
    }
    soak_stop.cancel();
    while generator.queue.capacity() < QUEUE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered = generator.done.load(Ordering::Relaxed) - done0;
    let unexpected = generator.unexpected.load(Ordering::Relaxed) - unexpected0;
    let after_warmup: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= 60)
        .map(|(_, r)| *r)
        .collect();
    let (lo, hi) = (
        after_warmup.iter().min().copied().unwrap_or(0),
        after_warmup.iter().max().copied().unwrap_or(0),
    );
    let mut out = format!(
        "capacity (ordinary mix, {CONNECTIONS} connections, hostile clients running): {capacity:.0} req/s; soak at {rate:.0} req/s for {seconds} s\n\
         ordinary requests sent: {sent}, answered: {answered}, unexpected answers: {unexpected}, not sent (queue of {QUEUE} full): {skipped}\n\
         hostile clients (slow readers 20/s, abandoned downloads 50/s, idle sockets 20/s): {}\n\
         RSS after 60 s warm-up: min {lo} MiB, max {hi} MiB (spread {:.1}%)\n\nRSS samples (s, MiB):",
        hostile_count.load(Ordering::Relaxed),
        if lo > 0 {
            (hi - lo) as f64 * 100.0 / lo as f64
        } else {
            0.0
        }
    );
    for (t, r) in samples {
        out.push_str(&format!(" {t}:{r}"));
    }
    out.push_str("\n\nunexpected answers by kind and status (0 = none or a broken body):");
    for ((kind, status), count) in UNEXPECTED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out.push_str(&format!(" {kind}/{status}: {count};"));
    }
    out.push('\n');
    out
}

/// An S3 peer that misbehaves in turn: resets mid-body, stalls after headers, trickles
/// 1 KB/s, answers 503 SlowDown, closes at once (the nearest to a refused connection
/// that keeps the port).
async fn broken_origin(stop: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let mut sock = tokio::select! {
                r = listener.accept() => r.unwrap().0,
                () = stop.cancelled() => return,
            };
            n += 1;
            let mode = n % 5;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let ok =
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1048576\r\n\r\n";
                match mode {
                    0 => {
                        let _ = sock.write_all(ok.as_bytes()).await;
                        let _ = sock.write_all(&[7u8; 10_000]).await;
                    }
                    1 => {
                        let _ = sock.write_all(ok.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    2 => {
                        let _ = sock.write_all(ok.as_bytes()).await;
                        for _ in 0..60 {
                            if sock.write_all(&[7u8; 1024]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    3 => {
                        let xml =
                            "<Error><Code>SlowDown</Code><Message>slow down</Message></Error>";
                        let r = format!(
                            "HTTP/1.1 503 Slow Down\r\nContent-Length: {}\r\n\r\n{xml}",
                            xml.len()
                        );
                        let _ = sock.write_all(r.as_bytes()).await;
                    }
                    _ => {}
                }
            });
        }
    });
    endpoint
}

async fn latencies(proxy: &Proxy, seconds: u64) -> (f64, f64, usize) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let client = client.clone();
        let port = proxy.port;
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut n = w;
            while Instant::now() < until {
                let t0 = Instant::now();
                // 9 hits for 1 miss.
                let kind = if n % 10 == 0 { 60 } else { 0 };
                let ok = one(kind, port, &client, n).await;
                lat.push((t0.elapsed().as_secs_f64() * 1000.0, ok));
                n += 8;
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = workers.join_next().await {
        all.extend(r.unwrap());
    }
    let bad = all.iter().filter(|(_, ok)| !ok).count();
    let mut ms: Vec<f64> = all.into_iter().map(|(m, _)| m).collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99), bad)
}

async fn broken_origin_isolation(store: &Store, dir: &Path) -> String {
    seed(store, "hot", 100, 64 << 10).await;
    seed(store, "many", 20_000, 16 << 10).await;
    let stop = CancellationToken::new();
    let broken = broken_origin(stop.clone()).await;
    let slow_tenant = format!(
        "[origin]\nfirst_byte_timeout = \"2s\"\nmax_attempts = 1\nmax_concurrent_per_tenant = 32\n[[tenants]]\nname = \"slow\"\nbuckets = [\"slow-bucket\"]\nrequire_signature = false\n[[buckets]]\nname = \"slow-bucket\"\nendpoint = \"{broken}\"\npath_style = true\naccess_key = \"AKIDSLOW\"\nsecret_key = \"slow\""
    );
    let proxy = start_proxy_with(dir, &store.endpoint, "", &slow_tenant).await;
    let quiet = latencies(&proxy, 20).await;
    // The slow tenant's load: 100 requests/s of distinct keys against the broken origin.
    let port = proxy.port;
    let load_stop = CancellationToken::new();
    let token = load_stop.clone();
    tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u64;
        while !token.is_cancelled() {
            tick.tick().await;
            n += 1;
            let url = format!("http://127.0.0.1:{port}/slow-bucket/{n}.png");
            let client = client.clone();
            tokio::spawn(async move {
                if let Ok(r) = client.get(url.parse().unwrap()).await {
                    let _ = r.into_body().collect().await;
                }
            });
        }
    });
    let loaded = latencies(&proxy, 20).await;
    load_stop.cancel();
    stop.cancel();
    format!(
        "| quiet | p50 {:.1} ms | p99 {:.1} ms | {} failed |\n| other tenant's origin broken | p50 {:.1} ms | p99 {:.1} ms | {} failed |\np99 ratio: {:.2}\n",
        quiet.0,
        quiet.1,
        quiet.2,
        loaded.0,
        loaded.1,
        loaded.2,
        loaded.1 / quiet.1.max(0.001)
    )
}

/// One attack of `attacks`, run until `stop`: `n` tasks, each repeating its misbehaviour
/// on a new connection whenever the proxy closes the old one.
fn attack(kind: &'static str, port: u16, stop: &CancellationToken) {
    // Each run of the script ends by itself within its 5 s window.
    let python = move |name: &'static str, stop: CancellationToken| async move {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h2_attacks.py");
        while !stop.is_cancelled() {
            let args = [
                script.to_string(),
                name.to_string(),
                port.to_string(),
                signed("hot/1.png"),
                "5".to_string(),
            ];
            let ran = tokio::task::spawn_blocking(move || {
                Command::new("python3")
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            })
            .await;
            if !matches!(ran, Ok(Ok(_))) {
                return;
            }
        }
    };
    let (tasks, every) = match kind {
        "silent sockets" => (4000, Duration::ZERO),
        "slow request heads" => (1000, Duration::ZERO),
        "clients that never read (cold 4 MiB)" => (100, Duration::ZERO),
        "abandoned downloads" => (50, Duration::from_secs(1)),
        _ => (4, Duration::ZERO),
    };
    for t in 0..tasks {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = t as u64;
            while !stop.is_cancelled() {
                n += tasks as u64;
                let one = async {
                    if let Some(name) = kind.strip_prefix("h2 ") {
                        python(name, stop.clone()).await;
                        return;
                    }
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    };
                    let big = format!(
                        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
                        signed(&format!("big/{}.png", n % 100))
                    );
                    let mut buf = vec![0u8; 4096];
                    match kind {
                        "silent sockets" => {
                            let _ = s.read(&mut buf).await;
                        }
                        "slow request heads" => {
                            let _ = s.write_all(b"GET /x HTTP/1.1\r\n").await;
                            while s.write_all(b"X").await.is_ok() {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                        "clients that never read (cold 4 MiB)" => {
                            let _ = s.write_all(big.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(15)).await;
                        }
                        _ => {
                            let _ = s.write_all(big.as_bytes()).await;
                            let _ = s.read(&mut buf).await;
                            tokio::time::sleep(every).await;
                        }
                    }
                };
                tokio::select! {
                    () = one => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

/// A polite client's hits (one at a time, keep-alive) for `seconds`: p50, p99, max in ms
/// and the failures.
async fn control(port: u16, seconds: u64) -> (f64, f64, f64, usize) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(seconds);
    let (mut ms, mut failed, mut n) = (Vec::new(), 0, 0u64);
    while Instant::now() < until {
        n += 1;
        let t0 = Instant::now();
        if !one(0, port, &client, n).await {
            failed += 1;
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ms.sort_by(f64::total_cmp);
    let max = ms.last().copied().unwrap_or(0.0);
    (percentile(&ms, 0.5), percentile(&ms, 0.99), max, failed)
}

/// The `[cache]` of the proxies the attacks run against (and of the twin).
const ATTACKED_CACHE: &str = "[cache]\nmax_memory = \"64MiB\"\nfill_memory = \"32MiB\"";

/// The control client's latency on `proxy` while `kind` attacks the proxy on
/// `target_port`, and `proxy`'s VmHWM in MiB then; afterwards waits for the deadlines to
/// clear what the attack left before the next one.
async fn under_attack(
    kind: &'static str,
    target_port: u16,
    proxy: &Proxy,
) -> ((f64, f64, f64, usize), u64) {
    let stop = CancellationToken::new();
    attack(kind, target_port, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = control(proxy.port, 10).await;
    stop.cancel();
    let hwm = proxy.hwm() >> 20;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (r, hwm)
}

/// Each attack of issue 12 in turn against one proxy; a polite client's latency meanwhile.
async fn attacks(store: &Store, dir: &Path) -> String {
    seed(store, "hot", 100, 64 << 10).await;
    seed(store, "big", 100, 4 << 20).await;
    let proxy = start_proxy(dir, &store.endpoint, ATTACKED_CACHE).await;
    let quiet = control(proxy.port, 10).await;
    let mut out = String::from(
        "| attack (while it runs) | control p50 ms | p99 ms | max ms | failed | p99 / quiet p99 | proxy VmHWM MiB |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let row = |name: &str, (r, hwm): ((f64, f64, f64, usize), u64)| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {hwm} |\n",
            r.0,
            r.1,
            r.2,
            r.3,
            r.1 / quiet.1.max(0.001)
        )
    };
    out.push_str(&row("none (quiet)", (quiet, proxy.hwm() >> 20)));
    // `ATTACKS=rapid,ping` runs only the attacks whose names contain one of those words.
    let only = std::env::var("ATTACKS").unwrap_or_default();
    let chosen = |kind: &str| only.is_empty() || only.split(',').any(|w| kind.contains(w));
    for kind in [
        "silent sockets",
        "slow request heads",
        "clients that never read (cold 4 MiB)",
        "abandoned downloads",
        "h2 rapid_reset",
        "h2 ping_flood",
        "h2 settings_flood",
        "h2 continuation_flood",
        "h2 too_many_streams",
    ]
    .into_iter()
    .filter(|k| chosen(k))
    {
        let label = match kind {
            "silent sockets" => "4,000 silent sockets (reopened when closed)",
            "slow request heads" => "1,000 request heads sent a byte per 500 ms",
            "clients that never read (cold 4 MiB)" => {
                "100 clients that never read, cold 4 MiB objects"
            }
            "abandoned downloads" => "50 downloads/s abandoned after 4 KiB",
            other => other,
        };
        out.push_str(&row(label, under_attack(kind, proxy.port, &proxy).await));
        if kind == "h2 rapid_reset" {
            // The same flood on a second proxy process, same store, same CPUs: what the
            // control loses to the machine (two cores shared with the attacker's
            // processes and the flood's server-side work) rather than to sharing a
            // process, and a worker, with the attacker.
            let twin = start_proxy(dir, &store.endpoint, ATTACKED_CACHE).await;
            out.push_str(&row(
                "h2 rapid_reset on a twin proxy process (the machine's share)",
                under_attack(kind, twin.port, &proxy).await,
            ));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let mode = ["soak", "broken-origin", "attacks"]
        .into_iter()
        .find(|m| args.iter().any(|a| a == m))
        .unwrap_or("cold-keys");
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    // Two threads: a one-thread generator is itself the bottleneck at ~10k req/s of
    // 64 KiB answers, and its stalls show up as pile-ups of open requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The store gets a runtime of its own, so that a busy load generator never delays
    // the origin's answers (a stall there would show up as the proxy's).
    let store_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let store = store_rt.block_on(async {
        Store::start(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            "BENCHKEY",
            "bench-secret-key",
            stop.clone(),
        )
        .unwrap()
    });
    let report = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        store
            .client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let report = match mode {
            "soak" => soak(&store, dir.path(), seconds).await,
            "broken-origin" => broken_origin_isolation(&store, dir.path()).await,
            "attacks" => attacks(&store, dir.path()).await,
            _ => cold_keys(&store, dir.path()).await,
        };
        stop.cancel();
        report
    });
    println!("{report}");
}
