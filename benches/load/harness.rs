//! The load bench's harness: the processes it runs (bucketfront, nginx, Varnish), the
//! drivers (`wrk`, `h2load`), what it reads from them, and the store they share.

use bucketfront::Store;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{BUCKET, SECRET, free_port};

pub(crate) const SIZES: [(&str, usize); 4] = [
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
    ("16MiB", 16 << 20),
];
pub(crate) const CONNECTIONS: usize = 64;

/// `BENCH_SPLIT=1`: every server on CPU 0 (one nginx worker, one bucketfront runtime, which
/// it derives from its affinity) and the load generator on CPU 1 with one thread, instead of
/// all of them sharing both cores. On two cores, a server's event loop otherwise waits for
/// a core the load generator holds, and so do all its connections: this tells that wait
/// apart from the server's own latency. Panics, saying so, when this process may not use
/// both of those CPUs. Decided once, on the first call (`main` makes it before starting
/// anything): the stream row later moves this process to one CPU.
pub(crate) fn split() -> bool {
    static SPLIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPLIT.get_or_init(|| {
        let on = std::env::var_os("BENCH_SPLIT").is_some_and(|v| v == "1");
        if on && !may_use(&[SERVER_CPU, LOAD_CPU]) {
            panic!(
                "BENCH_SPLIT=1 needs CPUs {SERVER_CPU} and {LOAD_CPU} (one for the servers, one for the load generator); this process may not use both"
            );
        }
        on
    })
}

/// The servers' CPU and the load generator's, when [`split`].
const SERVER_CPU: usize = 0;
const LOAD_CPU: usize = 1;

/// Whether this thread's affinity mask has every CPU of `cpus`.
fn may_use(cpus: &[usize]) -> bool {
    // SAFETY: a zeroed `cpu_set_t` is the empty set; the kernel fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    // SAFETY: CPU_ISSET only reads inside `set`, for CPUs below its capacity.
    rc == 0
        && cpus
            .iter()
            .all(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
}

/// `program` on `cpu` when [`split`] (through `taskset`), else as it is.
fn on_cpu(program: impl AsRef<std::ffi::OsStr>, cpu: usize) -> Command {
    if !split() {
        return Command::new(program);
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()]).arg(program);
    cmd
}

/// A server process (bucketfront, nginx, Varnish, a floor): on the servers' CPU when
/// [`split`].
pub(crate) fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    on_cpu(program, SERVER_CPU)
}

/// A load generator (`wrk`, `h2load`): on its own CPU when [`split`].
pub(crate) fn load_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    on_cpu(program, LOAD_CPU)
}

/// For the stream row when [`split`]: this process (the store, from now on) moves to the
/// load generator's CPU, every thread of it and so every thread it starts later (they
/// inherit it). The client then runs in a thread of its own on the servers' CPU
/// ([`on_server_cpu`]). In production neither the origin nor the client runs on
/// bucketfront's machine; a store sharing a core with the client measures how that core
/// is shared, not what the pass-through costs.
pub(crate) fn move_this_process_to_load_cpu() {
    if !split() {
        return;
    }
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let tid: libc::pid_t = task
            .expect("a thread")
            .file_name()
            .to_str()
            .and_then(|t| t.parse().ok())
            .expect("a thread id");
        pin(tid, LOAD_CPU);
    }
}

/// `f` run to its end on a thread of its own, on the servers' CPU when [`split`].
pub(crate) async fn on_server_cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let placed = move || {
        if split() {
            pin(0, SERVER_CPU); // 0: the calling thread
        }
        f()
    };
    let thread = std::thread::spawn(placed);
    tokio::task::spawn_blocking(move || thread.join().expect("the placed thread"))
        .await
        .unwrap()
}

/// Thread `tid` (0: the calling one) on `cpu` alone. A thread that has exited since it
/// was listed is left alone.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed `cpu_set_t` is the empty set, and CPU_SET only writes inside it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    let e = std::io::Error::last_os_error();
    assert!(
        rc == 0 || e.raw_os_error() == Some(libc::ESRCH),
        "pinning thread {tid} to CPU {cpu}: {e}"
    );
}

/// nginx's `worker_processes` and the load generator's `-t`: one per core the role has.
pub(crate) fn threads_per_role() -> usize {
    if split() { 1 } else { 2 }
}

/// How the report states where the processes ran.
pub(crate) fn placement() -> &'static str {
    if split() {
        "Split (`BENCH_SPLIT=1`): every server on CPU 0 (nginx with one worker, bucketfront with one runtime), the load generator on CPU 1 with one thread."
    } else {
        "Everything, the load generator included, shares the same cores."
    }
}

/// A child process stopped on drop: SIGTERM first, so that a master process (nginx,
/// varnishd) takes its workers down with it; SIGKILL only if it has not exited after 5 s.
pub(crate) struct Proc(pub(crate) Child);

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
pub(crate) fn exp_far() -> u64 {
    bucketfront::unix_secs(std::time::SystemTime::now()) + 6 * 24 * 3600
}

pub(crate) fn signed_path(key: &str) -> String {
    let sig = bucketfront::sign(SECRET.as_bytes(), BUCKET, key, exp_far());
    format!("/{BUCKET}/{key}?exp={}&sig={sig}", exp_far())
}

pub(crate) fn start_bucketfront(dir: &Path, store: &str, name: &str) -> (Proc, u16) {
    start_bucketfront_with(dir, store, name, "1GiB")
}

pub(crate) fn start_bucketfront_with(
    dir: &Path,
    store: &str,
    name: &str,
    max_memory: &str,
) -> (Proc, u16) {
    start_bucketfront_cache(dir, store, name, max_memory, "")
}

/// bucketfront with `cache_extra` (TOML) appended to its `[cache]` section.
pub(crate) fn start_bucketfront_cache(
    dir: &Path,
    store: &str,
    name: &str,
    max_memory: &str,
    cache_extra: &str,
) -> (Proc, u16) {
    start_binary(this_build(), dir, store, name, max_memory, cache_extra, "")
}

/// This build of bucketfront.
pub(crate) fn this_build() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bucketfront"))
}

/// The bucketfront binary `bin` (this build, or another in the `ab` mode), with
/// `server_extra` appended to `[server]` and `cache_extra` to `[cache]`.
pub(crate) fn start_binary(
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
    let child = crate::support::serve_with(server_command(bin), &path);
    (Proc(child), port)
}

/// nginx's cache in front of the store's mirror on `mirror_port`, in `cache`: the `http`
/// block's part and the `location` that uses it.
pub(crate) fn nginx_caching(cache: &Path, mirror_port: u16) -> (String, &'static str) {
    let http = format!(
        "keepalive_requests 1000000;\n  proxy_cache_path {} levels=1:2 keys_zone=img:64m max_size=4g inactive=1h use_temp_path=off;\n  upstream store {{ server 127.0.0.1:{mirror_port}; keepalive 64; }}",
        cache.display()
    );
    let location = "location / {\n      proxy_pass http://store;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache img;\n      proxy_cache_valid 200 1h;\n      proxy_cache_lock on;\n      proxy_ignore_headers Cache-Control Expires Set-Cookie;\n    }";
    (http, location)
}

/// nginx's sending knobs tried for the hot-object table; the best per size is reported.
pub(crate) const NGINX_KNOBS: [&str; 5] = [
    "sendfile on; tcp_nopush on; tcp_nodelay on;",
    "sendfile on; tcp_nopush off; tcp_nodelay on;",
    "sendfile on; tcp_nopush on; tcp_nodelay off;",
    "sendfile off; output_buffers 2 256k; tcp_nodelay on;",
    "sendfile on; aio threads; tcp_nopush off; tcp_nodelay on;",
];

pub(crate) fn start_nginx(
    dir: &Path,
    mirror_port: u16,
    files: &Path,
    knobs: &str,
) -> (Proc, u16, u16) {
    start_nginx_cache(dir, mirror_port, files, &nginx_cache(dir), knobs)
}

/// One nginx per set of [`NGINX_KNOBS`], each in `dir/nginx-<i>`: (process, `proxy_cache`
/// port, sendfile port, knobs). Their caches are on tmpfs: [`remove_nginx_caches`].
pub(crate) fn start_nginxes(
    dir: &Path,
    mirror_port: u16,
    files: &Path,
) -> Vec<(Proc, u16, u16, &'static str)> {
    NGINX_KNOBS
        .iter()
        .enumerate()
        .map(|(i, knobs)| {
            let (p, port, sendfile) = start_nginx(&nginx_dir(dir, i), mirror_port, files, knobs);
            (p, port, sendfile, *knobs)
        })
        .collect()
}

/// Removes the `proxy_cache` directories [`start_nginxes`] made on tmpfs for `dir`.
pub(crate) fn remove_nginx_caches(dir: &Path) {
    for i in 0..NGINX_KNOBS.len() {
        let _ = std::fs::remove_dir_all(nginx_cache(&nginx_dir(dir, i)));
    }
}

/// The directory of [`start_nginxes`]'s `i`th nginx.
fn nginx_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("nginx-{i}"))
}

/// Where [`start_nginx`] keeps the `proxy_cache` of the nginx in `dir`: on tmpfs, named
/// after this process and `dir`.
fn nginx_cache(dir: &Path) -> PathBuf {
    Path::new("/dev/shm").join(format!(
        "bucketfront-bench-nginx-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("nginx")
    ))
}

/// nginx with its `proxy_cache` under `cache` (tmpfs, or a disk for the disk row), with
/// `knobs` (sendfile, tcp_nopush, …) in its `http` block.
pub(crate) fn start_nginx_cache(
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
worker_processes {workers};
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
        workers = threads_per_role(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = server_command("nginx")
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
pub(crate) const VARNISH_PARAMS: [&[&str]; 2] = [
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

pub(crate) fn start_varnish(dir: &Path, mirror_port: u16, params: &[&str]) -> (Proc, u16) {
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let child = server_command("varnishd")
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
pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) mb_s: f64,
    /// When [`split`], how busy the servers' CPU and the load generator's were during the
    /// run (0 to 1); NaN otherwise. A load core near 1 with the server's below it means
    /// the row measured the load generator, not the server.
    pub(crate) server_busy: f64,
    pub(crate) load_busy: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn parse_duration_ms(s: &str) -> f64 {
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

pub(crate) fn parse_size_mb(s: &str) -> f64 {
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

/// A run against one URL from the load generator this run uses: `wrk`, or the sink
/// client with `BENCH_CLIENT=sink` (`crate::sink`).
pub(crate) fn load(url: &str, seconds: u64) -> Run {
    if crate::sink::chosen() {
        crate::sink::sink(url, seconds)
    } else {
        wrk_with(url, seconds, None)
    }
}

/// How a report names the load generator of [`load`] and its threads.
pub(crate) fn client_label() -> String {
    let name = if crate::sink::chosen() {
        "the sink client (bodies dropped unread)"
    } else {
        "wrk"
    };
    format!("{name} -t{}", threads_per_role())
}

/// `f`'s result and, when [`split`], how busy the servers' CPU and the load generator's
/// were while it ran (in a [`Run`] whose other fields are left at zero).
pub(crate) fn measured<T>(f: impl FnOnce() -> T) -> (T, Run) {
    let before = split().then(cores_busy);
    let out = f();
    let (server_busy, load_busy) = match (before, split().then(cores_busy)) {
        (Some(a), Some(b)) => (
            a[SERVER_CPU].busy_since(&b[SERVER_CPU]),
            a[LOAD_CPU].busy_since(&b[LOAD_CPU]),
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let run = Run {
        server_busy,
        load_busy,
        ..Run::default()
    };
    (out, run)
}

/// `wrk`, with a Lua script when given (the fleet row picks a random key per request).
pub(crate) fn wrk_with(url: &str, seconds: u64, script: Option<&Path>) -> Run {
    let mut cmd = load_command("wrk");
    cmd.args([
        &format!("-t{}", threads_per_role()),
        &format!("-c{CONNECTIONS}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(url);
    let (out, mut run) = measured(|| cmd.output().expect("wrk (apt-get install wrk)"));
    let text = String::from_utf8_lossy(&out.stdout);
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

pub(crate) fn mean(runs: &[Run]) -> Run {
    let n = runs.len() as f64;
    let sum = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / n;
    Run {
        rps: sum(|r| r.rps),
        mb_s: sum(|r| r.mb_s),
        p50_ms: sum(|r| r.p50_ms),
        p99_ms: sum(|r| r.p99_ms),
        max_ms: runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        server_busy: sum(|r| r.server_busy),
        load_busy: sum(|r| r.load_busy),
    }
}

/// One CPU's time counters from `/proc/stat`, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CoreTicks {
    busy: u64,
    all: u64,
}

impl CoreTicks {
    /// The share of the time from `self` to `later` this CPU spent running something.
    fn busy_since(&self, later: &CoreTicks) -> f64 {
        let all = later.all.saturating_sub(self.all);
        later.busy.saturating_sub(self.busy) as f64 / all.max(1) as f64
    }
}

/// The time counters of CPUs 0 and 1 (`cpu0`, `cpu1` in `/proc/stat`). Busy is user, nice,
/// system, irq and softirq time: the loopback's receive path runs in softirq on the
/// sender's CPU, so it counts where it is spent. Time the hypervisor took (steal) counts
/// in neither, so a noisy neighbour does not look like work.
fn cores_busy() -> [CoreTicks; 2] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut cores = [CoreTicks::default(); 2];
    for (i, core) in cores.iter_mut().enumerate() {
        let name = format!("cpu{i}");
        let Some(line) = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&name))
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let t: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if let [user, nice, system, idle, iowait, irq, softirq, _steal] = t[..] {
            core.busy = user + nice + system + irq + softirq;
            core.all = core.busy + idle + iowait;
        }
    }
    cores
}

/// Time to the response head of one GET.
pub(crate) async fn ttfb(url: &str) -> Duration {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let t = started.elapsed();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.into_body().collect().await.unwrap();
    t
}

pub(crate) fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The CPU time (user + system) process `pid` has used, in seconds: `/proc/<pid>/stat`
/// counts it in USER_HZ ticks, which Linux fixes at 100 per second for user space.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces), from `state` on.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let field = |n: usize| {
        after_name
            .split_whitespace()
            .nth(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (field(11) + field(12)) as f64 / 100.0
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The store and, on `mirror_port`, an unauthenticated mirror of it: nginx and Varnish
/// cannot sign requests, so they read the same objects there.
pub(crate) async fn start_store_and_mirror(stop: &CancellationToken) -> (Store, u16) {
    let store = start_store(stop).await;
    let mirror_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror_port = mirror_listener.local_addr().unwrap().port();
    store
        .start_anonymous_mirror(mirror_listener, stop.clone())
        .unwrap();
    (store, mirror_port)
}

/// The embedded store, in this process, with [`BUCKET`] created.
pub(crate) async fn start_store(stop: &CancellationToken) -> Store {
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

/// Each of `sizes` as `{name}.png`, put in the store and written under
/// `/dev/shm/bucketfront-bench-{tag}-<pid>/` + [`BUCKET`] (what nginx's sendfile server
/// reads): returns that directory.
pub(crate) async fn seed_with_files(store: &Store, sizes: &[(&str, usize)], tag: &str) -> PathBuf {
    let files =
        Path::new("/dev/shm").join(format!("bucketfront-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(files.join(BUCKET)).unwrap();
    for (name, size) in sizes {
        let body = put_pattern(store, &format!("{name}.png"), *size).await;
        std::fs::write(files.join(BUCKET).join(format!("{name}.png")), &body).unwrap();
    }
    files
}

/// A wrk script that asks for one of `paths`, at random, per request.
pub(crate) fn random_paths_script(dir: &Path, name: &str, paths: &[String]) -> PathBuf {
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
pub(crate) async fn get_all(
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

/// Drops the kernel's page cache (needs root); whether it could.
pub(crate) fn drop_page_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// The candidate (URL, label) that answers the most requests in a 2 s probe of [`load`] (after
/// warming it).
pub(crate) async fn best_of(candidates: Vec<(String, String)>) -> (String, String) {
    let mut best: Option<(f64, String, String)> = None;
    for (url, label) in candidates {
        for _ in 0..2 {
            ttfb(&url).await;
        }
        let probe = url.clone();
        let run = tokio::task::spawn_blocking(move || load(&probe, 2))
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
pub(crate) struct H2Run {
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
}

pub(crate) fn h2load(url: &str, seconds: u64, log: &Path) -> H2Run {
    // h2load appends to its log file: without this, each p99 was taken over every earlier
    // run in the same file too (other servers and sizes included).
    match std::fs::remove_file(log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{}: {e}", log.display()),
        _ => {}
    }
    let out = load_command("h2load")
        .args([
            "-c10",
            "-m10",
            &format!("-t{}", threads_per_role()),
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

/// Stores `size` bytes of a fixed pattern under `key` in [`BUCKET`].
pub(crate) async fn put_pattern(store: &Store, key: &str, size: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    store
        .put(BUCKET, key, body.clone().into(), "image/png")
        .await
        .unwrap();
    body
}

/// A self-signed certificate for 127.0.0.1 in `dir`: the `[server] tls` line, and the
/// certificate's and key's files.
pub(crate) fn tls_config(dir: &Path) -> (String, PathBuf, PathBuf) {
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
