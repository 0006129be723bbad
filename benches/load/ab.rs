//! This build against another build of bucketfront, hot hits over h1 and TLS + h2
//! (`BUCKETFRONT_B=... -- ab`).

use std::fmt::Write as _;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::accepting;

/// Before/after: this build (A) against `other` (B) on the same store and objects, hot
/// hits over plain HTTP/1.1 (`wrk`, 64 connections) and over TLS + h2 (`h2load`, 10
/// connections × 10 streams). Each build runs as two processes, started A B B A, and each
/// round measures all four (in alternating order): two identical builds measured as two
/// single processes differed by a steady 10% at 4 KiB here, whatever the order of the runs.
/// Each row gives the per-round ratios, so that a difference smaller than the noise shows
/// as such.
pub(crate) async fn ab(other: PathBuf, seconds: u64, rounds: usize) -> String {
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
        "## {} (A) against {} (B)\n\n{seconds}s × {rounds} rounds, two processes of each build (started A B B A), all four measured in each round in alternating order. h1: {client} -c{CONNECTIONS}; h2: TLS + h2, h2load -c10 -m10 -t{threads}. {}\n\n| size | protocol | A req/s | B req/s | A p99 ms | B p99 ms | A / B (per round) | A / B |\n|---|---|---:|---:|---:|---:|---|---:|\n",
        this.display(),
        other.display(),
        placement(),
        threads = threads_per_role(),
        client = client_label(),
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
                            let r = load(&url, seconds);
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
