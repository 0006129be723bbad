//! Load benchmark: bucketfront against nginx (`proxy_cache` on tmpfs) and Varnish
//! (`-s malloc`) in front of the same embedded store, with nginx sending the files from
//! tmpfs as the ceiling; all driven by the same `wrk`, alternating runs. Also measures
//! the miss path, a 1 GiB stream's peak RSS and coalescing of 200 cold requests.
//!
//! `cargo bench --bench load` (needs Debian's nginx-light, varnish and wrk; set
//! `BENCH_SECONDS` and `BENCH_ROUNDS` to change the run length). Prints a Markdown report
//! and writes it to `target/bench-results.md`. `cargo bench --bench load -- fleet` runs
//! only the fleet row: one instance vs three behind nginx (`packaging/nginx-fleet.conf`);
//! `-- disk` only the disk-tier row: hits from bucketfront's `[cache.disk]` against nginx
//! `proxy_cache` on the same disk, page cache warm and dropped (root, for
//! `/proc/sys/vm/drop_caches`), with `BUCKETFRONT_B=<binary>` another build beside them; `-- stream` only the 1 GiB stream against a direct GET;
//! `-- h2` only the TLS + HTTP/2 table (`h2load`, Debian's nghttp2-client): bucketfront's
//! rustls against nginx with OpenSSL; `-- variants` only the image variants: hits of a
//! 256 px WebP variant against hits of its original, and cold renders per second;
//! `BUCKETFRONT_B=<binary> ... -- ab` this build against another build of bucketfront
//! (before/after a change), hot hits over h1 and TLS + h2, alternating rounds.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bucketfront::store::Store;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use support::{BUCKET, SECRET, accepting, free_port, seed};

const SIZES: [(&str, usize); 4] = [
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
    ("16MiB", 16 << 20),
];
const CONNECTIONS: usize = 64;

/// A child process stopped on drop: SIGTERM first, so that a master process (nginx,
/// varnishd) takes its workers down with it; SIGKILL only if it has not exited after 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Six days ahead: within the default `max_signature_ttl` (7 days), which refuses later.
fn exp_far() -> u64 {
    bucketfront::auth::unix_secs(std::time::SystemTime::now()) + 6 * 24 * 3600
}

fn signed_path(key: &str) -> String {
    let sig = bucketfront::auth::sign(SECRET.as_bytes(), BUCKET, key, exp_far());
    format!("/{BUCKET}/{key}?exp={}&sig={sig}", exp_far())
}

fn start_bucketfront(dir: &Path, store: &str, name: &str) -> (Proc, u16) {
    start_bucketfront_with(dir, store, name, "1GiB")
}

fn start_bucketfront_with(dir: &Path, store: &str, name: &str, max_memory: &str) -> (Proc, u16) {
    start_bucketfront_cache(dir, store, name, max_memory, "")
}

/// bucketfront with `cache_extra` (TOML) appended to its `[cache]` section.
fn start_bucketfront_cache(
    dir: &Path,
    store: &str,
    name: &str,
    max_memory: &str,
    cache_extra: &str,
) -> (Proc, u16) {
    start_binary(this_build(), dir, store, name, max_memory, cache_extra, "")
}

/// This build of bucketfront.
fn this_build() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bucketfront"))
}

/// The bucketfront binary `bin` (this build, or another in the `ab` mode), with
/// `server_extra` appended to `[server]` and `cache_extra` to `[cache]`.
fn start_binary(
    bin: &Path,
    dir: &Path,
    store: &str,
    name: &str,
    max_memory: &str,
    cache_extra: &str,
    server_extra: &str,
) -> (Proc, u16) {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
max_connections = 10000
{server_extra}
[cache]
max_memory = "{max_memory}"
max_object_size = "16MiB"
{cache_extra}
[[tenants]]
name = "bench"
buckets = ["{BUCKET}"]
signing_keys = [{{ id = "k1", secret = "{SECRET}" }}]
[[buckets]]
name = "{BUCKET}"
endpoint = "{store}"
path_style = true
access_key = "BENCHKEY"
secret_key = "bench-secret-key"
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(bin)
        .args(["serve", "-c", path.to_str().unwrap()])
        .env("BUCKETFRONT_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .spawn()
        .expect("bucketfront binary");
    (Proc(child), port)
}

/// nginx's cache in front of the store's mirror on `mirror_port`, in `cache`: the `http`
/// block's part and the `location` that uses it.
fn nginx_caching(cache: &Path, mirror_port: u16) -> (String, &'static str) {
    let http = format!(
        "keepalive_requests 1000000;\n  proxy_cache_path {} levels=1:2 keys_zone=img:64m max_size=4g inactive=1h use_temp_path=off;\n  upstream store {{ server 127.0.0.1:{mirror_port}; keepalive 64; }}",
        cache.display()
    );
    let location = "location / {\n      proxy_pass http://store;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache img;\n      proxy_cache_valid 200 1h;\n      proxy_cache_lock on;\n      proxy_ignore_headers Cache-Control Expires Set-Cookie;\n    }";
    (http, location)
}

/// nginx's sending knobs tried for the hot-object table; the best per size is reported.
const NGINX_KNOBS: [&str; 5] = [
    "sendfile on; tcp_nopush on; tcp_nodelay on;",
    "sendfile on; tcp_nopush off; tcp_nodelay on;",
    "sendfile on; tcp_nopush on; tcp_nodelay off;",
    "sendfile off; output_buffers 2 256k; tcp_nodelay on;",
    "sendfile on; aio threads; tcp_nopush off; tcp_nodelay on;",
];

fn start_nginx(dir: &Path, mirror_port: u16, files: &Path, knobs: &str) -> (Proc, u16, u16) {
    let cache = Path::new("/dev/shm").join(format!(
        "bucketfront-bench-nginx-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("nginx")
    ));
    start_nginx_cache(dir, mirror_port, files, &cache, knobs)
}

/// nginx with its `proxy_cache` under `cache` (tmpfs, or a disk for the disk row), with
/// `knobs` (sendfile, tcp_nopush, …) in its `http` block.
fn start_nginx_cache(
    dir: &Path,
    mirror_port: u16,
    files: &Path,
    cache: &Path,
    knobs: &str,
) -> (Proc, u16, u16) {
    let (port, sendfile_port) = (free_port(), free_port());
    std::fs::create_dir_all(cache).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (caching, location) = nginx_caching(cache, mirror_port);
    let conf = format!(
        r#"
user root;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {knobs}
  {caching}
  server {{
    listen 127.0.0.1:{port};
    {location}
  }}
  server {{
    listen 127.0.0.1:{sendfile_port};
    root {files};
  }}
}}
"#,
        dir = dir.display(),
        files = files.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-c",
            path.to_str().unwrap(),
            "-p",
            dir.to_str().unwrap(),
            "-g",
            "daemon off;",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    (Proc(child), port, sendfile_port)
}

/// Varnish thread-pool settings tried for the hot-object table; the best per size is
/// reported.
const VARNISH_PARAMS: [&[&str]; 2] = [
    &[],
    &[
        "-p",
        "thread_pools=2",
        "-p",
        "thread_pool_min=200",
        "-p",
        "thread_pool_max=2000",
    ],
];

fn start_varnish(dir: &Path, mirror_port: u16, params: &[&str]) -> (Proc, u16) {
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("varnishd")
        .args([
            "-F",
            "-a",
            &format!("127.0.0.1:{port}"),
            "-b",
            &format!("127.0.0.1:{mirror_port}"),
        ])
        .args([
            "-s",
            "malloc,2G",
            "-n",
            dir.join("varnish").to_str().unwrap(),
            "-p",
            "default_ttl=3600",
        ])
        .args(params)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("varnishd (apt-get install varnish)");
    (Proc(child), port)
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    mb_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn parse_duration_ms(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => f64::NAN,
    }
}

fn parse_size_mb(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "B" => v / 1e6,
        "KB" => v * 1024.0 / 1e6,
        "MB" => v * 1024.0 * 1024.0 / 1e6,
        "GB" => v * 1024.0 * 1024.0 * 1024.0 / 1e6,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, seconds: u64) -> Run {
    wrk_with(url, seconds, None)
}

/// `wrk`, with a Lua script when given (the fleet row picks a random key per request).
fn wrk_with(url: &str, seconds: u64, script: Option<&Path>) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd.arg(url).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["50%", v] => run.p50_ms = parse_duration_ms(v),
            ["99%", v] => run.p99_ms = parse_duration_ms(v),
            ["Latency", _avg, _stdev, max, ..] => run.max_ms = parse_duration_ms(max),
            ["Requests/sec:", v] => run.rps = v.parse().unwrap_or(f64::NAN),
            ["Transfer/sec:", v] => run.mb_s = parse_size_mb(v),
            _ => {}
        }
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("wrk reported errors for {url}:\n{text}");
    }
    run
}

fn mean(runs: &[Run]) -> Run {
    let n = runs.len() as f64;
    let sum = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / n;
    Run {
        rps: sum(|r| r.rps),
        mb_s: sum(|r| r.mb_s),
        p50_ms: sum(|r| r.p50_ms),
        p99_ms: sum(|r| r.p99_ms),
        max_ms: runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
    }
}

/// Time to the response head of one GET.
async fn ttfb(url: &str) -> Duration {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let t = started.elapsed();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.into_body().collect().await.unwrap();
    t
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list` run nothing here
    }
    let fleet_only = std::env::args().any(|a| a == "fleet");
    let disk_only = std::env::args().any(|a| a == "disk");
    let stream_only_row = std::env::args().any(|a| a == "stream");
    let h2_only = std::env::args().any(|a| a == "h2");
    let variants_only = std::env::args().any(|a| a == "variants");
    let ab_only = std::env::args().any(|a| a == "ab");
    let tools: &[&str] = if ab_only {
        &["wrk", "h2load"]
    } else if h2_only {
        &["nginx", "h2load"]
    } else if variants_only {
        &["wrk"]
    } else if fleet_only || disk_only || stream_only_row {
        &["nginx", "wrk"]
    } else {
        &["nginx", "varnishd", "wrk"]
    };
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("{tool} is missing: apt-get install nginx-light varnish wrk");
            std::process::exit(1);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = if fleet_only {
        rt.block_on(fleet(seconds, rounds))
    } else if disk_only {
        rt.block_on(disk(seconds, rounds))
    } else if stream_only_row {
        rt.block_on(stream_only())
    } else if h2_only {
        rt.block_on(h2(seconds, rounds))
    } else if variants_only {
        rt.block_on(variants(seconds, rounds))
    } else if ab_only {
        let Some(other) = std::env::var_os("BUCKETFRONT_B") else {
            eprintln!(
                "`-- ab` compares this build with BUCKETFRONT_B=/path/to/another/bucketfront"
            );
            std::process::exit(1);
        };
        rt.block_on(ab(PathBuf::from(other), seconds, rounds))
    } else {
        rt.block_on(run(seconds, rounds))
    };
    println!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md");
    std::fs::write(&out, &report).unwrap();
    eprintln!("written to {}", out.display());
}

/// The store and, on `mirror_port`, an unauthenticated mirror of it: nginx and Varnish
/// cannot sign requests, so they read the same objects there.
async fn start_store_and_mirror(stop: &CancellationToken) -> (Store, u16) {
    let store = start_store(stop).await;
    let mirror_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_port = mirror_listener.local_addr().unwrap().port();
    store
        .start_anonymous_mirror(mirror_listener, stop.clone())
        .unwrap();
    (store, mirror_port)
}

/// The embedded store, in this process, with [`BUCKET`] created.
async fn start_store(stop: &CancellationToken) -> Store {
    let store = Store::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        "BENCHKEY",
        "bench-secret-key",
        stop.clone(),
    )
    .unwrap();
    store
        .client()
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    store
}

async fn run(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let files: PathBuf =
        Path::new("/dev/shm").join(format!("bucketfront-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(files.join(BUCKET)).unwrap();
    for (name, size) in SIZES {
        let body = put_pattern(&store, &format!("{name}.png"), size).await;
        std::fs::write(files.join(BUCKET).join(format!("{name}.png")), &body).unwrap();
    }
    let (_bf, bf_port) = start_bucketfront(dir.path(), &store.endpoint, "hot");
    // Every peer in each of its configurations; per size, a short probe picks the best.
    let nginxes: Vec<(Proc, u16, u16, &str)> = NGINX_KNOBS
        .iter()
        .enumerate()
        .map(|(i, knobs)| {
            let (p, port, sendfile) = start_nginx(
                &dir.path().join(format!("nginx-{i}")),
                mirror_port,
                &files,
                knobs,
            );
            (p, port, sendfile, *knobs)
        })
        .collect();
    let varnishes: Vec<(Proc, u16, String)> = VARNISH_PARAMS
        .iter()
        .enumerate()
        .map(|(i, params)| {
            let (p, port) = start_varnish(
                &dir.path().join(format!("varnish-{i}")),
                mirror_port,
                params,
            );
            let label = if params.is_empty() {
                "defaults".to_string()
            } else {
                params
                    .iter()
                    .filter(|a| **a != "-p")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            (p, port, label)
        })
        .collect();
    accepting(bf_port, "bucketfront").await;
    for (_, port, sendfile, knobs) in &nginxes {
        accepting(*port, &format!("nginx `{knobs}` (proxy_cache)")).await;
        accepting(*sendfile, &format!("nginx `{knobs}` (sendfile)")).await;
    }
    for (_, port, label) in &varnishes {
        accepting(*port, &format!("Varnish ({label})")).await;
    }
    let mut report = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "## Hot objects ({CONNECTIONS} connections, wrk -t2, {seconds}s x {rounds} alternating rounds)\n\nMachine: {} cores, {cpu}; bucketfront: one current-thread tokio runtime per core; nginx: 2 workers, each of {} sets of sending knobs; Varnish: `-s malloc,2G`, {} thread-pool settings. Per size, a 2 s probe of each picks the best, which runs in the table (its knobs in brackets). Everything, wrk included, shares the same cores.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        NGINX_KNOBS.len(),
        VARNISH_PARAMS.len()
    );
    let _ = writeln!(
        report,
        "| size | server | req/s | MB/s | p50 ms | p99 ms | max ms | bucketfront / this |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for (name, _) in SIZES {
        let key = format!("{name}.png");
        let path = format!("/{BUCKET}/{key}");
        let url = |port: u16| format!("http://127.0.0.1:{port}{path}");
        let nginx = best_of(
            nginxes
                .iter()
                .map(|n| (url(n.1), n.3.to_string()))
                .collect(),
        )
        .await;
        let ceiling = best_of(
            nginxes
                .iter()
                .map(|n| (url(n.2), n.3.to_string()))
                .collect(),
        )
        .await;
        let varnish = best_of(varnishes.iter().map(|v| (url(v.1), v.2.clone())).collect()).await;
        let targets = [
            (
                "bucketfront".to_string(),
                format!("http://127.0.0.1:{bf_port}{}", signed_path(&key)),
            ),
            (format!("nginx proxy_cache (`{}`)", nginx.1), nginx.0),
            (format!("Varnish ({})", varnish.1), varnish.0),
            (
                format!("nginx sendfile, ceiling (`{}`)", ceiling.1),
                ceiling.0,
            ),
        ];
        for (_, url) in &targets {
            for _ in 0..2 {
                ttfb(url).await; // warm every cache
            }
        }
        let mut results: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            // Alternate the order so that no server always runs first (or last).
            let order: Vec<usize> = if round % 2 == 0 {
                (0..targets.len()).collect()
            } else {
                (0..targets.len()).rev().collect()
            };
            for i in order {
                let url = targets[i].1.clone();
                let r = tokio::task::spawn_blocking(move || wrk(&url, seconds))
                    .await
                    .unwrap();
                results[i].push(r);
            }
        }
        let means: Vec<Run> = results.iter().map(|r| mean(r)).collect();
        for (i, (server, _)) in targets.iter().enumerate() {
            let m = means[i];
            let ratio = if i == 0 {
                "1.00".to_string()
            } else {
                format!("{:.2}", means[0].rps / m.rps)
            };
            let _ = writeln!(
                report,
                "| {name} | {server} | {:.0} | {:.0} | {:.3} | {:.3} | {:.1} | {ratio} |",
                m.rps, m.mb_s, m.p50_ms, m.p99_ms, m.max_ms
            );
        }
    }

    // The miss path: bucketfront's time to first byte minus a direct GET from the store.
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for i in 0..200 {
        let key = format!("cold/{i}.png");
        store
            .put(BUCKET, &key, vec![1u8; 4096].into(), "image/png")
            .await
            .unwrap();
        // Alternate which goes first; both read the same file from the same store.
        // The baseline is a presigned GET to the same authenticated store, so that both
        // sides pay for the store's SigV4 verification.
        let presigning =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
        let presigned = store
            .client()
            .get_object()
            .bucket(BUCKET)
            .key(&key)
            .presigned(presigning)
            .await
            .unwrap();
        let (direct_url, proxy_url) = (
            presigned.uri().to_string(),
            format!("http://127.0.0.1:{bf_port}{}", signed_path(&key)),
        );
        let (d, p) = (ttfb(&direct_url), ttfb(&proxy_url));
        let (d, p) = if i % 2 == 0 {
            (d.await, p.await)
        } else {
            let p = p.await;
            (d.await, p)
        };
        direct.push(d.as_secs_f64() * 1000.0);
        proxied.push(p.as_secs_f64() * 1000.0);
    }
    let (md, mp) = (median(direct), median(proxied));
    let _ = writeln!(
        report,
        "\n## Miss path (200 distinct cold 4 KiB keys, a new client connection per request on both sides)\n\n| presigned GET straight to the store, median | through bucketfront (signed SDK GET upstream), median | overhead |\n|---:|---:|---:|\n| {md:.3} ms | {mp:.3} ms | {:.3} ms |",
        mp - md
    );

    // 200 concurrent requests for one cold key: upstream GETs counted at the store.
    let key = "coalesce/one.png";
    store
        .put(BUCKET, key, vec![2u8; 1 << 20].into(), "image/png")
        .await
        .unwrap();
    let before = store.stats.gets.load(Ordering::SeqCst);
    let url = Arc::new(format!("http://127.0.0.1:{bf_port}{}", signed_path(key)));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { ttfb(&url).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let gets = store.stats.gets.load(Ordering::SeqCst) - before;
    let _ = writeln!(
        report,
        "\n## Coalescing\n\n200 concurrent requests for one cold 1 MiB key: **{gets}** upstream GET(s)."
    );

    report.push_str(&stream_row(&store, dir.path()).await);
    let _ = std::fs::remove_dir_all(&files);
    for i in 0..NGINX_KNOBS.len() {
        let _ = std::fs::remove_dir_all(format!(
            "/dev/shm/bucketfront-bench-nginx-{}-nginx-{i}",
            std::process::id()
        ));
    }
    stop.cancel();
    report
}

/// Objects of the fleet row: more than one instance's cache holds, fewer than three do.
const FLEET_KEYS: usize = 3000;

/// The fleet row: one instance, then three behind nginx with `packaging/nginx-fleet.conf`,
/// each with `max_memory = 64MiB`, under the same wrk run picking one of 3,000 64 KiB
/// objects at random per request (192 MiB in all: a third fits in one instance). Each
/// topology is started fresh, warmed by one run, then measured by another; origin GETs are
/// counted by the store during the measured run. `cargo bench --bench load -- fleet`.
async fn fleet(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    seed(&store, "f", FLEET_KEYS, 64 << 10).await;
    // One signed path per key, picked at random per request.
    let paths: Vec<String> = (0..FLEET_KEYS)
        .map(|i| signed_path(&format!("f/{i}.png")))
        .collect();
    let script = random_paths_script(dir.path(), "keys", &paths);

    let mut rows: Vec<(&str, Run, u64)> = Vec::new();
    for round in 0..rounds {
        for topology in ["one instance", "three instances behind nginx"] {
            let mut procs = Vec::new();
            let port = if topology == "one instance" {
                let (p, port) =
                    start_bucketfront_with(dir.path(), &store.endpoint, "single", "64MiB");
                procs.push(p);
                accepting(port, "bucketfront").await;
                port
            } else {
                let shipped = std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/packaging/nginx-fleet.conf"
                ))
                .unwrap();
                let listen = free_port();
                let mut conf = shipped.replace("127.0.0.1:8000", &format!("127.0.0.1:{listen}"));
                for i in 0..3 {
                    let (p, port) = start_bucketfront_with(
                        dir.path(),
                        &store.endpoint,
                        &format!("fleet{round}-{i}"),
                        "64MiB",
                    );
                    procs.push(p);
                    accepting(port, "bucketfront").await;
                    conf = conf.replace(
                        &format!("127.0.0.1:{}", 8080 + 100 * i),
                        &format!("127.0.0.1:{port}"),
                    );
                }
                let d = dir.path().join(format!("nginx-fleet-{round}"));
                std::fs::create_dir_all(&d).unwrap();
                let dd = d.display();
                let full = format!(
                    "daemon off;\nworker_processes 1;\npid {dd}/nginx.pid;\nerror_log {dd}/error.log;\n\
                     events {{ worker_connections 4096; }}\nhttp {{\naccess_log off;\n\
                     client_body_temp_path {dd}/body;\nproxy_temp_path {dd}/proxy;\n\
                     fastcgi_temp_path {dd}/fastcgi;\nuwsgi_temp_path {dd}/uwsgi;\nscgi_temp_path {dd}/scgi;\n{conf}\n}}\n"
                );
                let path = d.join("nginx.conf");
                std::fs::write(&path, full).unwrap();
                let child = Command::new("nginx")
                    .args(["-p", &dd.to_string(), "-c", path.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nginx");
                procs.push(Proc(child));
                accepting(listen, "nginx (packaging/nginx-fleet.conf)").await;
                listen
            };
            let url = format!("http://127.0.0.1:{port}");
            let script = script.clone();
            let u = url.clone();
            // Warm-up run, then the measured one.
            tokio::task::spawn_blocking(move || wrk_with(&u, seconds, Some(&script)))
                .await
                .unwrap();
            let before = store.stats.gets.load(Ordering::SeqCst);
            let script = dir.path().join("keys.lua");
            let run = tokio::task::spawn_blocking(move || wrk_with(&url, seconds, Some(&script)))
                .await
                .unwrap();
            let gets = store.stats.gets.load(Ordering::SeqCst) - before;
            rows.push((topology, run, gets));
            // nginx first (it holds connections to the instances), then the instances.
            while let Some(p) = procs.pop() {
                drop(p);
            }
        }
    }
    stop.cancel();
    let mut out = format!(
        "### Fleet row: {FLEET_KEYS} objects of 64 KiB, random key per request, max_memory = 64MiB per instance\n\n\
         wrk -t2 -c{CONNECTIONS} -d{seconds}s (after a warm-up run of the same length), {rounds} rounds, alternating.\n\n\
         | round | topology | req/s | MB/s | p50 ms | p99 ms | origin GETs | origin GETs per request |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (i, (topology, run, gets)) in rows.iter().enumerate() {
        let requests = run.rps * seconds as f64;
        let _ = writeln!(
            out,
            "| {} | {topology} | {:.0} | {:.0} | {:.2} | {:.2} | {gets} | {:.3} |",
            i / 2 + 1,
            run.rps,
            run.mb_s,
            run.p50_ms,
            run.p99_ms,
            *gets as f64 / requests.max(1.0)
        );
    }
    let avg = |t: &str, f: &dyn Fn(&Run, u64) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == t)
            .map(|r| f(&r.1, r.2))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (one, three) = ("one instance", "three instances behind nginx");
    let rps = avg(three, &|r, _| r.rps) / avg(one, &|r, _| r.rps);
    let per_req = |t: &str| avg(t, &|r, g| g as f64 / (r.rps * seconds as f64).max(1.0));
    let _ = writeln!(
        out,
        "\nthree / one: req/s {rps:.2}, origin GETs per request {:.3} / {:.3}",
        per_req(three),
        per_req(one)
    );
    out
}

/// A wrk script that asks for one of `paths`, at random, per request.
fn random_paths_script(dir: &Path, name: &str, paths: &[String]) -> PathBuf {
    let script = dir.join(format!("{name}.lua"));
    let mut lua = String::from("local paths = {\n");
    for p in paths {
        let _ = writeln!(lua, "  \"{p}\",");
    }
    lua.push_str(
        "}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n",
    );
    std::fs::write(&script, lua).unwrap();
    script
}

/// GETs every path of `paths` from `base`, `concurrency` at a time; the time it took and
/// how many answers were `200` with `X-Cache: want`.
async fn get_all(
    base: &str,
    paths: &[String],
    concurrency: usize,
    want: &str,
) -> (Duration, usize) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in paths {
        let (client, gate, url, want) = (
            client.clone(),
            gate.clone(),
            format!("{base}{p}"),
            want.to_string(),
        );
        tasks.spawn(async move {
            let _turn = gate.acquire().await.unwrap();
            let r = client.get(url.parse().unwrap()).await.unwrap();
            let ok = r.status() == 200 && r.headers().get("x-cache").is_some_and(|v| v == &want);
            let _ = r.into_body().collect().await.unwrap();
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap());
    }
    (started.elapsed(), ok)
}

/// Image variants: a 256 px WebP variant's hits against its original's (same run,
/// alternating), and cold renders per second on this machine, from sources already in the
/// cache and from sources fetched for the render.
async fn variants(seconds: u64, rounds: usize) -> String {
    use bucketfront::variant::samples;
    const SOURCES: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    let photo = Bytes::from(samples::jpeg(&samples::picture(1600, 1200), 85, None, None));
    for i in 0..SOURCES {
        store
            .put(
                BUCKET,
                &format!("photos/{i}.jpg"),
                photo.clone().into(),
                "image/jpeg",
            )
            .await
            .unwrap();
    }
    let original = |i: usize| signed_path(&format!("photos/{i}.jpg"));
    let variant = |i: usize, q: &str| {
        let key = format!("photos/{i}.jpg");
        let query = bucketfront::auth::signed_variant_query(
            SECRET.as_bytes(),
            BUCKET,
            &key,
            exp_far(),
            None,
            Some(q),
        );
        format!("/{BUCKET}/{key}?{query}")
    };
    let originals: Vec<String> = (0..SOURCES).map(original).collect();
    let thumbs: Vec<String> = (0..SOURCES).map(|i| variant(i, "w=256&fmt=webp")).collect();
    let kinds = [
        "w=256&fmt=webp",
        "w=512&fmt=webp",
        "w=256&fmt=jpeg",
        "w=1024&fmt=webp",
    ];
    let others: Vec<String> = (0..SOURCES)
        .flat_map(|i| kinds[1..].iter().map(move |q| (i, *q)))
        .map(|(i, q)| variant(i, q))
        .collect();
    let mut out = format!(
        "\n## Variants ({SOURCES} sources: 1600×1200 JPEG q85, {} KB each; `[variants]` defaults: 2 renders at once)\n\n",
        photo.len() / 1000
    );

    // Cold renders, sources fetched for them: one instance, an empty cache.
    let (cold, cold_port) = start_bucketfront(dir.path(), &store.endpoint, "variants-cold");
    accepting(cold_port, "bucketfront (cold)").await;
    let base = format!("http://127.0.0.1:{cold_port}");
    let (took, ok) = get_all(&base, &thumbs, 16, "MISS").await;
    let fetched_rate = ok as f64 / took.as_secs_f64();
    drop(cold);

    // Cold renders, sources in the cache; then hits.
    let (bf, port) = start_bucketfront(dir.path(), &store.endpoint, "variants");
    accepting(port, "bucketfront").await;
    let base = format!("http://127.0.0.1:{port}");
    let (_, warm) = get_all(&base, &originals, 8, "MISS").await;
    assert_eq!(warm, SOURCES, "every original fetched");
    let rss_before = proc_status(bf.0.id(), "VmRSS");
    let (took, ok) = get_all(&base, &thumbs, 16, "MISS").await;
    let thumb_rate = ok as f64 / took.as_secs_f64();
    let (took_others, ok_others) = get_all(&base, &others, 16, "MISS").await;
    let others_rate = ok_others as f64 / took_others.as_secs_f64();
    let hwm = proc_status(bf.0.id(), "VmHWM");
    let _ = writeln!(
        out,
        "| cold renders | renders | per second (2 cores) |\n|---|---:|---:|\n\
         | 256 px WebP, source fetched from the store for the render | {SOURCES} | {fetched_rate:.1} |\n\
         | 256 px WebP, source in the cache | {ok} | {thumb_rate:.1} |\n\
         | 512 px WebP, 256 px JPEG, 1024 px WebP, sources in the cache | {ok_others} | {others_rate:.1} |\n\n\
         16 requests at a time. bucketfront's RSS before the renders {} MiB, peak (VmHWM) after them {} MiB.\n",
        rss_before >> 20,
        hwm >> 20,
    );

    // Hits: the variant against the original, alternating.
    let thumb_script = random_paths_script(dir.path(), "thumbs", &thumbs);
    let original_script = random_paths_script(dir.path(), "originals", &originals);
    let (mut thumb_runs, mut original_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_thumb in order {
            let script = if is_thumb {
                &thumb_script
            } else {
                &original_script
            };
            let run = wrk_with(&base, seconds, Some(script));
            if is_thumb {
                thumb_runs.push(run);
            } else {
                original_runs.push(run);
            }
        }
    }
    let (t, o) = (mean(&thumb_runs), mean(&original_runs));
    let _ = writeln!(
        out,
        "| hits ({CONNECTIONS} connections, wrk, {seconds}s x {rounds} alternating) | req/s | MB/s | p99 |\n|---|---:|---:|---:|\n\
         | original ({} KB JPEG) | {:.0} | {:.1} | {:.2} ms |\n\
         | 256 px WebP variant | {:.0} | {:.1} | {:.2} ms |\n\n\
         variant hits / original hits: {:.2} (req/s).\n",
        photo.len() / 1000,
        o.rps,
        o.mb_s,
        o.p99_ms,
        t.rps,
        t.mb_s,
        t.p99_ms,
        t.rps / o.rps,
    );

    // Hits while renders run: renders are on the blocking pool, so hits share the CPU
    // with them but never wait behind one.
    let storm: Vec<String> = (0..SOURCES)
        .flat_map(|i| {
            [
                "w=128&fmt=webp",
                "w=64&fmt=webp",
                "w=128&fmt=jpeg",
                "w=2048&fmt=webp",
            ]
            .into_iter()
            .map(move |q| (i, q))
        })
        .map(|(i, q)| variant(i, q))
        .collect();
    let storm_base = base.clone();
    let renders = tokio::spawn(async move { get_all(&storm_base, &storm, 16, "MISS").await });
    // wrk blocks its thread: not this runtime's only worker, which sends the renders.
    let (wrk_base, wrk_script) = (base.clone(), thumb_script.clone());
    let during =
        tokio::task::spawn_blocking(move || wrk_with(&wrk_base, seconds, Some(&wrk_script)))
            .await
            .unwrap();
    let (storm_took, storm_ok) = renders.await.unwrap();
    let _ = writeln!(
        out,
        "| 256 px WebP hits | req/s | p99 | max |\n|---|---:|---:|---:|\n\
         | alone (above) | {:.0} | {:.2} ms | {:.1} ms |\n\
         | while {storm_ok} cold renders run, 16 at a time ({:.1} s) | {:.0} | {:.2} ms | {:.1} ms |\n",
        t.rps,
        t.p99_ms,
        t.max_ms,
        storm_took.as_secs_f64(),
        during.rps,
        during.p99_ms,
        during.max_ms,
    );
    drop(bf);
    stop.cancel();
    out
}

/// Drops the kernel's page cache (needs root); whether it could.
fn drop_page_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Disk-tier hits: bucketfront with a 16 MiB memory tier and `[cache.disk]`, against
/// nginx `proxy_cache` on the same file system, both warmed with every key, then asked
/// for keys at random (far more bytes than the memory tier holds, so nearly every
/// bucketfront hit is a disk read: checked block by block, put in memory). With
/// `BUCKETFRONT_B`, that build runs beside them with the same settings (before/after).
async fn disk(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let disk_cfg = format!(
        "[cache.disk]\npath = \"{}\"\nmax_size = \"8GiB\"\n",
        dir.path().join("bf-disk").display()
    );
    let (_bf, bf_port) =
        start_bucketfront_cache(dir.path(), &store.endpoint, "disk", "16MiB", &disk_cfg);
    let other = std::env::var_os("BUCKETFRONT_B").map(|bin| {
        let cfg = disk_cfg.replace("bf-disk", "bf-disk-b");
        let bin = PathBuf::from(bin);
        let (proc, port) = start_binary(
            &bin,
            dir.path(),
            &store.endpoint,
            "disk-b",
            "16MiB",
            &cfg,
            "",
        );
        (proc, port, bin)
    });
    let files = dir.path().join("files");
    let (_nginx, nginx_port, _) = start_nginx_cache(
        dir.path(),
        mirror_port,
        &files,
        &dir.path().join("nginx-cache"),
        // The best knobs for 64 KiB and up in the hot-object runs.
        NGINX_KNOBS[1],
    );
    accepting(bf_port, "bucketfront").await;
    accepting(nginx_port, "nginx").await;
    if let Some((_, port, _)) = &other {
        accepting(*port, "bucketfront B").await;
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "## Disk-tier hits ({CONNECTIONS} connections, wrk -t2, random keys, {seconds}s x {rounds} alternating rounds)\n\nbucketfront: `max_memory = \"16MiB\"` (a tenth of the keys at most), `[cache.disk]` on {}; nginx: `proxy_cache` on the same file system (sendfile on). \"dropped\": `/proc/sys/vm/drop_caches` before each run.\n",
        dir.path().display()
    );
    let _ = writeln!(
        report,
        "| size | keys | page cache | server | req/s | MB/s | p50 ms | p99 ms | bucketfront / this |\n|---|---:|---|---|---:|---:|---:|---:|---:|"
    );
    for (name, size, keys) in [("200KiB", 200usize << 10, 400usize), ("1MiB", 1 << 20, 200)] {
        seed(&store, &format!("d{name}"), keys, size).await;
        let bf_paths: Vec<String> = (0..keys)
            .map(|i| signed_path(&format!("d{name}/{i}.png")))
            .collect();
        let nginx_paths: Vec<String> = (0..keys)
            .map(|i| format!("/{BUCKET}/d{name}/{i}.png"))
            .collect();
        let mut warm = vec![(bf_port, &bf_paths), (nginx_port, &nginx_paths)];
        warm.extend(other.iter().map(|(_, port, _)| (*port, &bf_paths)));
        for (port, paths) in warm {
            for p in paths.iter() {
                ttfb(&format!("http://127.0.0.1:{port}{p}")).await;
            }
        }
        // bucketfront writes files in the background: let them land before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut targets = vec![
            (
                "bucketfront".to_string(),
                random_paths_script(dir.path(), "bf", &bf_paths),
                bf_port,
            ),
            (
                "nginx proxy_cache".to_string(),
                random_paths_script(dir.path(), "nginx", &nginx_paths),
                nginx_port,
            ),
        ];
        if let Some((_, port, bin)) = &other {
            let name = format!("bucketfront B ({})", bin.display());
            targets.push((
                name,
                random_paths_script(dir.path(), "bf", &bf_paths),
                *port,
            ));
        }
        for cache in ["warm", "dropped"] {
            let mut results: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
            let mut dropped = true;
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..targets.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    if cache == "dropped" {
                        dropped &= drop_page_cache();
                    }
                    let (url, script) = (
                        format!("http://127.0.0.1:{}/", targets[i].2),
                        targets[i].1.clone(),
                    );
                    let r =
                        tokio::task::spawn_blocking(move || wrk_with(&url, seconds, Some(&script)))
                            .await
                            .unwrap();
                    results[i].push(r);
                }
            }
            if !dropped {
                let _ = writeln!(
                    report,
                    "| {name} | {keys} | dropped | (not permitted here: not root) | | | | | |"
                );
                continue;
            }
            let means: Vec<Run> = results.iter().map(|r| mean(r)).collect();
            for (i, (server, _, _)) in targets.iter().enumerate() {
                let m = means[i];
                let _ = writeln!(
                    report,
                    "| {name} | {keys} | {cache} | {server} | {:.0} | {:.0} | {:.3} | {:.3} | {:.2} |",
                    m.rps,
                    m.mb_s,
                    m.p50_ms,
                    m.p99_ms,
                    means[0].rps / m.rps
                );
            }
        }
    }
    report
}

/// The bytes of the body at `url` and how long they took to arrive.
async fn stream(url: &str) -> (u64, f64) {
    let started = Instant::now();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        total += frame
            .unwrap()
            .into_data()
            .map(|d| d.len() as u64)
            .unwrap_or(0);
    }
    (total, started.elapsed().as_secs_f64())
}

/// A 1 GiB object streamed (too large to cache) through a fresh bucketfront, against a
/// presigned GET of the same object straight from the store, alternating, three each:
/// the ratio of their throughputs, and bucketfront's peak RSS.
async fn stream_row(store: &Store, dir: &Path) -> String {
    let big = dir.join("big.png");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        let chunk = vec![3u8; 1 << 20];
        for _ in 0..1024 {
            f.write_all(&chunk).unwrap();
        }
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&big)
        .await
        .unwrap();
    store
        .put(BUCKET, "big.png", body, "image/png")
        .await
        .unwrap();
    let _ = std::fs::remove_file(&big);
    let (fresh, fresh_port) = start_bucketfront(dir, &store.endpoint, "stream");
    accepting(fresh_port, "bucketfront").await;
    let presigning =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap();
    let direct_url = store
        .client()
        .get_object()
        .bucket(BUCKET)
        .key("big.png")
        .presigned(presigning)
        .await
        .unwrap()
        .uri()
        .to_string();
    let proxy_url = format!("http://127.0.0.1:{fresh_port}{}", signed_path("big.png"));
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_direct in order {
            let url = if is_direct { &direct_url } else { &proxy_url };
            let (bytes, secs) = stream(url).await;
            assert_eq!(bytes, 1 << 30, "whole object");
            let mb_s = bytes as f64 / secs / 1e6;
            if is_direct {
                direct.push(mb_s);
            } else {
                proxied.push(mb_s);
            }
        }
    }
    let peak = proc_status(fresh.0.id(), "VmHWM:");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let (md, mp) = (median(direct.clone()), median(proxied.clone()));
    format!(
        "\n## 1 GiB object (streamed, not cached)\n\n| presigned GET straight to the store, MB/s | through bucketfront, MB/s | bucketfront / direct (medians) | bucketfront peak RSS |\n|---:|---:|---:|---:|\n| {} | {} | **{:.2}** | {:.1} MiB |\n",
        fmt(&direct),
        fmt(&proxied),
        mp / md,
        peak as f64 / (1 << 20) as f64
    )
}

/// Only the 1 GiB stream row (`cargo bench --bench load -- stream`).
async fn stream_only() -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    let report = stream_row(&store, dir.path()).await;
    stop.cancel();
    report
}

/// The candidate (URL, label) that answers the most requests in a 2 s `wrk` probe (after
/// warming it).
async fn best_of(candidates: Vec<(String, String)>) -> (String, String) {
    let mut best: Option<(f64, String, String)> = None;
    for (url, label) in candidates {
        for _ in 0..2 {
            ttfb(&url).await;
        }
        let probe = url.clone();
        let run = tokio::task::spawn_blocking(move || wrk(&probe, 2))
            .await
            .unwrap();
        if best.as_ref().is_none_or(|(rps, _, _)| run.rps > *rps) {
            best = Some((run.rps, url, label));
        }
    }
    let (_, url, label) = best.expect("at least one candidate");
    (url, label)
}

/// One `h2load` run: requests per second and the 99th percentile of request times.
struct H2Run {
    rps: f64,
    p99_ms: f64,
}

fn h2load(url: &str, seconds: u64, log: &Path) -> H2Run {
    let out = Command::new("h2load")
        .args([
            "-c10",
            "-m10",
            "-t2",
            &format!("-D{seconds}"),
            "--warm-up-time=1",
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .output()
        .expect("h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|f| f.trim().strip_suffix(" req/s"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    if !text.contains("0 failed, 0 errored") {
        eprintln!("h2load reported failures for {url}:\n{text}");
    }
    // Per request: start (µs since the epoch), status, duration (µs).
    let times: Vec<f64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    let mut sorted = times;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99_ms = sorted
        .get(sorted.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(f64::NAN);
    H2Run { rps, p99_ms }
}

/// TLS + HTTP/2, the path browsers take: bucketfront (rustls) against nginx (OpenSSL,
/// `proxy_cache` on tmpfs, `http2`), hot objects of 4 KiB, 200 KiB and 1 MiB, `h2load`
/// with 10 connections × 10 streams, alternating rounds.
async fn h2(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let (tls, cert_pem, key_pem) = tls_config(dir.path());
    let (_bf, bf_port) = start_binary(
        this_build(),
        dir.path(),
        &store.endpoint,
        "h2",
        "1GiB",
        "",
        &tls,
    );
    let nginx_port = free_port();
    let cache = Path::new("/dev/shm").join(format!("bucketfront-bench-h2-{}", std::process::id()));
    std::fs::create_dir_all(&cache).unwrap();
    let (caching, location) = nginx_caching(&cache, mirror_port);
    let conf = format!(
        r#"
user root;
worker_processes 2;
pid {dir}/nginx-h2.pid;
error_log {dir}/nginx-h2-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on; tcp_nopush off; tcp_nodelay on;
  {caching}
  server {{
    listen 127.0.0.1:{nginx_port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    {location}
  }}
}}
"#,
        dir = dir.path().display(),
        cert = cert_pem.display(),
        key = key_pem.display(),
    );
    let conf_path = dir.path().join("nginx-h2.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Proc(
        Command::new("nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.path().to_str().unwrap(),
            ])
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    accepting(bf_port, "bucketfront (TLS)").await;
    accepting(nginx_port, "nginx (TLS, h2)").await;
    let ktls = Path::new("/proc/net/tls_stat").exists();
    let mut report = format!(
        "## TLS + HTTP/2 hot objects (h2load -c10 -m10 -t2, {seconds}s x {rounds} alternating rounds)\n\nbucketfront: rustls (aws-lc-rs), ALPN h2; nginx 1.22: OpenSSL 3, `listen ... ssl http2`, TLS 1.3, `proxy_cache` on tmpfs. kTLS: {}.\n\n| size | server | req/s | p99 ms | bucketfront / this |\n|---|---|---:|---:|---:|\n",
        if ktls {
            "the kernel offers it (not enabled in nginx here)"
        } else {
            "not offered by this kernel (no /proc/net/tls_stat), so not tried"
        }
    );
    for (name, size) in [
        ("4KiB", 4usize << 10),
        ("200KiB", 200 << 10),
        ("1MiB", 1 << 20),
    ] {
        let key = format!("h2/{name}.png");
        put_pattern(&store, &key, size).await;
        let targets = [
            (
                "bucketfront",
                format!("https://127.0.0.1:{bf_port}{}", signed_path(&key)),
            ),
            (
                "nginx proxy_cache",
                format!("https://127.0.0.1:{nginx_port}/{BUCKET}/{key}"),
            ),
        ];
        let log = dir.path().join("h2load.log");
        for (_, url) in &targets {
            h2load(url, 1, &log); // warm: fetch into both caches
        }
        let mut runs: Vec<Vec<H2Run>> = vec![Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (url, log) = (targets[i].1.clone(), log.clone());
                let run = tokio::task::spawn_blocking(move || h2load(&url, seconds, &log))
                    .await
                    .unwrap();
                runs[i].push(run);
            }
        }
        let mean = |r: &[H2Run]| {
            let n = r.len() as f64;
            (
                r.iter().map(|x| x.rps).sum::<f64>() / n,
                r.iter().map(|x| x.p99_ms).sum::<f64>() / n,
            )
        };
        let bf = mean(&runs[0]);
        for (i, (server, _)) in targets.iter().enumerate() {
            let (rps, p99) = mean(&runs[i]);
            let _ = writeln!(
                report,
                "| {name} | {server} | {rps:.0} | {p99:.2} | {:.2} |",
                bf.0 / rps
            );
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    stop.cancel();
    report
}

/// Stores `size` bytes of a fixed pattern under `key` in [`BUCKET`].
async fn put_pattern(store: &Store, key: &str, size: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    store
        .put(BUCKET, key, body.clone().into(), "image/png")
        .await
        .unwrap();
    body
}

/// A self-signed certificate for 127.0.0.1 in `dir`: the `[server] tls` line, and the
/// certificate's and key's files.
fn tls_config(dir: &Path) -> (String, PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let line = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert_pem.display(),
        key_pem.display()
    );
    (line, cert_pem, key_pem)
}

/// Before/after: this build (A) against `other` (B) on the same store and objects, hot
/// hits over plain HTTP/1.1 (`wrk`, 64 connections) and over TLS + h2 (`h2load`, 10
/// connections × 10 streams). Each build runs as two processes, started A B B A, and each
/// round measures all four (in alternating order): two identical builds measured as two
/// single processes differed by a steady 10% at 4 KiB here, whatever the order of the runs.
/// Each row gives the per-round ratios, so that a difference smaller than the noise shows
/// as such.
async fn ab(other: PathBuf, seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    let (tls, _, _) = tls_config(dir.path());
    // BUCKETFRONT_A: another A than this build (an A/A run measures the harness's bias).
    let this = std::env::var_os("BUCKETFRONT_A")
        .map(PathBuf::from)
        .unwrap_or_else(|| this_build().to_path_buf());
    // (is A, protocol, process, port), in the order started.
    let mut instances = Vec::new();
    for (protocol, server_extra) in [("h1", ""), ("TLS + h2", tls.as_str())] {
        for (i, is_a) in [true, false, false, true].into_iter().enumerate() {
            let bin = if is_a { &this } else { &other };
            let name = format!("{}-{i}", if protocol == "h1" { "h1" } else { "h2" });
            let home = dir.path().join(&name);
            std::fs::create_dir_all(&home).unwrap();
            let (p, port) =
                start_binary(bin, &home, &store.endpoint, &name, "1GiB", "", server_extra);
            instances.push((is_a, protocol, p, port));
        }
    }
    for (_, protocol, _, port) in &instances {
        accepting(*port, protocol).await;
    }
    let mut report = format!(
        "## {} (A) against {} (B)\n\n{seconds}s × {rounds} rounds, two processes of each build (started A B B A), all four measured in each round in alternating order. h1: wrk -t2 -c{CONNECTIONS}; h2: TLS + h2, h2load -c10 -m10 -t2.\n\n| size | protocol | A req/s | B req/s | A p99 ms | B p99 ms | A / B (per round) | A / B |\n|---|---|---:|---:|---:|---:|---|---:|\n",
        this.display(),
        other.display()
    );
    let log = dir.path().join("h2load.log");
    for (name, size) in [
        ("4KiB", 4usize << 10),
        ("64KiB", 64 << 10),
        ("200KiB", 200 << 10),
        ("1MiB", 1 << 20),
    ] {
        let key = format!("ab/{name}.png");
        put_pattern(&store, &key, size).await;
        for protocol in ["h1", "TLS + h2"] {
            let h1 = protocol == "h1";
            let targets: Vec<(bool, String)> = instances
                .iter()
                .filter(|i| i.1 == protocol)
                .map(|(is_a, _, _, port)| {
                    let scheme = if h1 { "http" } else { "https" };
                    let url = format!("{scheme}://127.0.0.1:{port}{}", signed_path(&key));
                    (*is_a, url)
                })
                .collect();
            for (_, url) in &targets {
                match h1 {
                    true => drop(ttfb(url).await),
                    false => drop(h2load(url, 1, &log)),
                }
            }
            // Per round: (A's req/s, B's req/s, A's p99, B's p99), each the mean of its two.
            let mut per_round: Vec<[f64; 4]> = Vec::new();
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..targets.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                let mut sums = [0.0; 4];
                for i in order {
                    let (is_a, url) = targets[i].clone();
                    let log = log.clone();
                    let (rps, p99) = tokio::task::spawn_blocking(move || {
                        if h1 {
                            let r = wrk(&url, seconds);
                            (r.rps, r.p99_ms)
                        } else {
                            let r = h2load(&url, seconds, &log);
                            (r.rps, r.p99_ms)
                        }
                    })
                    .await
                    .unwrap();
                    let side = usize::from(!is_a);
                    sums[side] += rps / 2.0;
                    sums[side + 2] += p99 / 2.0;
                }
                per_round.push(sums);
            }
            let avg = |f: usize| per_round.iter().map(|r| r[f]).sum::<f64>() / rounds as f64;
            let ratios: Vec<String> = per_round
                .iter()
                .map(|r| format!("{:.2}", r[0] / r[1]))
                .collect();
            let _ = writeln!(
                report,
                "| {name} | {protocol} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
                avg(0),
                avg(1),
                avg(2),
                avg(3),
                ratios.join(" / "),
                avg(0) / avg(1)
            );
        }
    }
    stop.cancel();
    report
}
