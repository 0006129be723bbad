//! Hot objects at each size against nginx, Varnish and the sendfile ceiling; the miss
//! path, coalescing and the 1 GiB stream (the default run).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::stream::stream_row;
use crate::support::{BUCKET, accepting};

pub(crate) async fn run(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let files = seed_with_files(&store, &SIZES, "files").await;
    let (_bf, bf_port) = start_bucketfront(dir.path(), &store.endpoint, "hot");
    // Every peer in each of its configurations; per size, a short probe picks the best.
    let nginxes = start_nginxes(dir.path(), mirror_port, &files);
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
        "## Hot objects ({CONNECTIONS} connections, {client}, {seconds}s x {rounds} alternating rounds)\n\nMachine: {} cores, {cpu}; bucketfront: one current-thread tokio runtime per core; nginx: {threads} worker(s), each of {} sets of sending knobs; Varnish: `-s malloc,2G`, {} thread-pool settings. Per size, a 2 s probe of each picks the best, which runs in the table (its knobs in brackets). {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        NGINX_KNOBS.len(),
        VARNISH_PARAMS.len(),
        placement(),
        threads = threads_per_role(),
        client = client_label(),
    );
    // Split, each server has a core and the load generator another: how busy each was
    // tells a row that measured the server from one that measured the load generator, and
    // the server's CPU time per response compares the servers even when it was the
    // bottleneck.
    let (cores_head, cores_rule) = if split() {
        (
            " server core busy | load core busy | server CPU µs per response |",
            "---:|---:|---:|",
        )
    } else {
        ("", "")
    };
    let _ = writeln!(
        report,
        "| size | server | req/s | MB/s | p50 ms | p99 ms | max ms | bucketfront / this |{cores_head}\n|---|---|---:|---:|---:|---:|---:|---:|{cores_rule}"
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
                let r = tokio::task::spawn_blocking(move || load(&url, seconds))
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
            let cores = if split() {
                format!(
                    " {:.0}% | {:.0}% | {:.1} |",
                    m.server_busy * 100.0,
                    m.load_busy * 100.0,
                    m.server_busy / m.rps * 1e6
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                report,
                "| {name} | {server} | {:.0} | {:.0} | {:.3} | {:.3} | {:.1} | {ratio} |{cores}",
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
    remove_nginx_caches(dir.path());
    stop.cancel();
    report
}
