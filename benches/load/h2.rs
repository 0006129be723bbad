//! TLS + HTTP/2 hot objects with `h2load`, against nginx with OpenSSL and the hyper floor
//! (`-- h2`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use tokio_util::sync::CancellationToken;

use crate::floor::{hit_head, start_floor};
use crate::harness::*;
use crate::support::{BUCKET, accepting, free_port};

/// TLS + HTTP/2, the path browsers take: bucketfront (rustls) against nginx (OpenSSL,
/// `proxy_cache` on tmpfs, `http2`), hot objects of 4 KiB, 200 KiB and 1 MiB, `h2load`
/// with 10 connections × 10 streams, alternating rounds.
pub(crate) async fn h2(seconds: u64, rounds: usize) -> String {
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
worker_processes {workers};
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
        workers = threads_per_role(),
    );
    let conf_path = dir.path().join("nginx-h2.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Proc(
        server_command("nginx")
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
    // hyper and rustls with nothing to do per request (benches/load/floor.rs), answering
    // with the head of a bucketfront hit.
    put_pattern(&store, "h2/4KiB.png", 4 << 10).await;
    let head = hit_head(&format!(
        "https://127.0.0.1:{bf_port}{}",
        signed_path("h2/4KiB.png")
    ));
    let (_floor, floor_port) = start_floor("hyper", &head, Some((&cert_pem, &key_pem)));
    accepting(floor_port, "the hyper floor (TLS)").await;
    let ktls = Path::new("/proc/net/tls_stat").exists();
    let mut report = format!(
        "## TLS + HTTP/2 hot objects (h2load -c10 -m10 -t{}, {seconds}s x {rounds} alternating rounds)\n\n{}\n\nbucketfront: rustls (aws-lc-rs), ALPN h2; nginx 1.22: OpenSSL 3, `listen ... ssl http2`, TLS 1.3, `proxy_cache` on tmpfs; hyper floor: hyper and rustls as bucketfront sets them up, with nothing to do per request (`-- floor`). kTLS: {}.\n\n| size | server | req/s | p99 ms | bucketfront / this |\n|---|---|---:|---:|---:|\n",
        threads_per_role(),
        placement(),
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
            (
                "hyper floor",
                format!("https://127.0.0.1:{floor_port}{}", signed_path(&key)),
            ),
        ];
        let log = dir.path().join("h2load.log");
        for (_, url) in &targets {
            h2load(url, 1, &log); // warm: fetch into both caches (the floor has none)
        }
        let mut runs: Vec<Vec<H2Run>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
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
