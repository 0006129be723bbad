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
//! `/proc/sys/vm/drop_caches`); `-- stream` only the 1 GiB stream against a direct GET.

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

use support::{BUCKET, SECRET, free_port, seed, wait_listening};

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
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
max_connections = 10000
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
    let child = Command::new(env!("CARGO_BIN_EXE_bucketfront"))
        .args(["serve", "-c", path.to_str().unwrap()])
        .env("BUCKETFRONT_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .spawn()
        .expect("bucketfront binary");
    (Proc(child), port)
}

fn start_nginx(dir: &Path, mirror_port: u16, files: &Path) -> (Proc, u16, u16) {
    let cache =
        Path::new("/dev/shm").join(format!("bucketfront-bench-nginx-{}", std::process::id()));
    start_nginx_cache(dir, mirror_port, files, &cache)
}

/// nginx with its `proxy_cache` under `cache` (tmpfs, or a disk for the disk row).
fn start_nginx_cache(dir: &Path, mirror_port: u16, files: &Path, cache: &Path) -> (Proc, u16, u16) {
    let (port, sendfile_port) = (free_port(), free_port());
    std::fs::create_dir_all(cache).unwrap();
    let conf = format!(
        r#"
user root;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  proxy_cache_path {cache} levels=1:2 keys_zone=img:64m max_size=4g inactive=1h use_temp_path=off;
  upstream store {{ server 127.0.0.1:{mirror_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://store;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache img;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
    }}
  }}
  server {{
    listen 127.0.0.1:{sendfile_port};
    root {files};
  }}
}}
"#,
        dir = dir.display(),
        cache = cache.display(),
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

fn start_varnish(dir: &Path, mirror_port: u16) -> (Proc, u16) {
    let port = free_port();
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
    let tools: &[&str] = if fleet_only || disk_only || stream_only_row {
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
    } else {
        rt.block_on(run(seconds, rounds))
    };
    println!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md");
    std::fs::write(&out, &report).unwrap();
    eprintln!("written to {}", out.display());
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
    let store = start_store(&stop).await;
    let mirror_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_port = mirror_listener.local_addr().unwrap().port();
    // nginx and Varnish cannot sign requests: they read the same objects unauthenticated.
    store
        .start_anonymous_mirror(mirror_listener, stop.clone())
        .unwrap();
    let files: PathBuf =
        Path::new("/dev/shm").join(format!("bucketfront-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(files.join(BUCKET)).unwrap();
    for (name, size) in SIZES {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(files.join(BUCKET).join(format!("{name}.png")), &body).unwrap();
        store
            .put(BUCKET, &format!("{name}.png"), body.into(), "image/png")
            .await
            .unwrap();
    }
    let (_bf, bf_port) = start_bucketfront(dir.path(), &store.endpoint, "hot");
    let (_nginx, nginx_port, sendfile_port) = start_nginx(dir.path(), mirror_port, &files);
    let (_varnish, varnish_port) = start_varnish(dir.path(), mirror_port);
    for p in [bf_port, nginx_port, sendfile_port, varnish_port] {
        wait_listening(p).await;
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
        "## Hot objects ({CONNECTIONS} connections, wrk -t2, {seconds}s x {rounds} alternating rounds)\n\nMachine: {} cores, {cpu}; bucketfront: tokio with 2 worker threads; nginx: 2 workers; Varnish: defaults, `-s malloc,2G`. Everything, wrk included, shares the same cores.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let _ = writeln!(
        report,
        "| size | server | req/s | MB/s | p50 ms | p99 ms | max ms | bucketfront / this |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for (name, _) in SIZES {
        let key = format!("{name}.png");
        let targets = [
            (
                "bucketfront",
                format!("http://127.0.0.1:{bf_port}{}", signed_path(&key)),
            ),
            (
                "nginx proxy_cache",
                format!("http://127.0.0.1:{nginx_port}/{BUCKET}/{key}"),
            ),
            (
                "Varnish",
                format!("http://127.0.0.1:{varnish_port}/{BUCKET}/{key}"),
            ),
            (
                "nginx sendfile (ceiling)",
                format!("http://127.0.0.1:{sendfile_port}/{BUCKET}/{key}"),
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
    let _ = std::fs::remove_dir_all(format!(
        "/dev/shm/bucketfront-bench-nginx-{}",
        std::process::id()
    ));
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
                wait_listening(port).await;
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
                    wait_listening(port).await;
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
                wait_listening(listen).await;
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

/// Drops the kernel's page cache (needs root); whether it could.
fn drop_page_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Disk-tier hits: bucketfront with a 16 MiB memory tier and `[cache.disk]`, against
/// nginx `proxy_cache` on the same file system, both warmed with every key, then asked
/// for keys at random (far more bytes than the memory tier holds, so nearly every
/// bucketfront hit is a disk read: file read whole, CRC32C checked, put in memory).
async fn disk(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    let mirror_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_port = mirror_listener.local_addr().unwrap().port();
    store
        .start_anonymous_mirror(mirror_listener, stop.clone())
        .unwrap();
    let disk_cfg = format!(
        "[cache.disk]\npath = \"{}\"\nmax_size = \"8GiB\"\n",
        dir.path().join("bf-disk").display()
    );
    let (_bf, bf_port) =
        start_bucketfront_cache(dir.path(), &store.endpoint, "disk", "16MiB", &disk_cfg);
    let files = dir.path().join("files");
    let (_nginx, nginx_port, _) = start_nginx_cache(
        dir.path(),
        mirror_port,
        &files,
        &dir.path().join("nginx-cache"),
    );
    for p in [bf_port, nginx_port] {
        wait_listening(p).await;
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
        for (port, paths) in [(bf_port, &bf_paths), (nginx_port, &nginx_paths)] {
            for p in paths.iter() {
                ttfb(&format!("http://127.0.0.1:{port}{p}")).await;
            }
        }
        // bucketfront writes files in the background: let them land before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let targets = [
            (
                "bucketfront",
                random_paths_script(dir.path(), "bf", &bf_paths),
                bf_port,
            ),
            (
                "nginx proxy_cache",
                random_paths_script(dir.path(), "nginx", &nginx_paths),
                nginx_port,
            ),
        ];
        for cache in ["warm", "dropped"] {
            let mut results: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
            let mut dropped = true;
            for round in 0..rounds {
                let order: Vec<usize> = if round % 2 == 0 {
                    vec![0, 1]
                } else {
                    vec![1, 0]
                };
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
    wait_listening(fresh_port).await;
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
