//! Disk-tier hits against nginx `proxy_cache` on the same disk, page cache warm and
//! dropped (`-- disk`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::floor::{DiskSend, hit_head, start_disk_floor, write_disk_floor_files};
use crate::harness::*;
use crate::support::{BUCKET, accepting, seed};

/// Disk-tier hits: bucketfront with a 16 MiB memory tier and `[cache.disk]`, against
/// nginx `proxy_cache` on the same file system, both warmed with every key, then asked
/// for keys at random (far more bytes than the memory tier holds, so nearly every
/// bucketfront hit is a disk read: checked block by block, put in memory). With
/// `BUCKETFRONT_B`, that build runs beside them with the same settings (before/after).
/// The object sizes of the disk row: 200 KiB and 1 MiB, or `BENCH_DISK_SIZES` (KiB,
/// comma-separated), each with keys for about 80 MiB (in hundreds, at least 200).
fn disk_sizes() -> Vec<(String, usize, usize)> {
    let kib: Vec<usize> = match std::env::var("BENCH_DISK_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|k| k.trim().parse().ok())
            .collect(),
        Err(_) => vec![200, 1024],
    };
    kib.into_iter()
        .map(|k| {
            let name = if k % 1024 == 0 {
                format!("{}MiB", k / 1024)
            } else {
                format!("{k}KiB")
            };
            (name, k << 10, (80 * 1024 / k / 100 * 100).max(200))
        })
        .collect()
}

pub(crate) async fn disk(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let disk_cfg = format!(
        "[cache.disk]\npath = \"{}\"\nmax_size = \"8GiB\"\n",
        dir.path().join("bf-disk").display()
    );
    // `BENCH_DISK_B_FIRST=1`: the other build is started and warmed before this one, to
    // tell whether the first-listed instance's handicap in A/A runs (BENCHMARKS.md)
    // follows the order of start and warm-up or the place in the table.
    let b_first = std::env::var_os("BENCH_DISK_B_FIRST").is_some_and(|v| v == "1");
    let start_this =
        || start_bucketfront_cache(dir.path(), &store.endpoint, "disk", "16MiB", &disk_cfg);
    let this = (!b_first).then(start_this);
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
    let (_bf, bf_port) = this.unwrap_or_else(start_this);
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
        "## Disk-tier hits ({CONNECTIONS} connections, wrk -t{}, random keys, {seconds}s x {rounds} alternating rounds)\n\nbucketfront: `max_memory = \"16MiB\"` (a tenth of the keys at most), `[cache.disk]` on {}; nginx: `proxy_cache` on the same file system (sendfile on); four disk floors (bucketfront's runtime layout, `httparse`, per request: open, a 4 KiB header read, the body's CRC32C checked, no memory tier): one reads the body into a new buffer and sends it with one `writev` (bucketfront's memory path), one checks it through a small reused buffer and then `sendfile`s it (nginx's send, with the contract's check), one maps the file, checks the mapping and `writev`s from it, and (objects of more than one 256 KiB disk block) one reads, checks and `writev`s each block in turn, into a new buffer each (bucketfront's way with several blocks). \"dropped\": `/proc/sys/vm/drop_caches` before each run. {}{}\n",
        threads_per_role(),
        dir.path().display(),
        placement(),
        if b_first {
            " B was started and warmed before bucketfront (`BENCH_DISK_B_FIRST=1`)."
        } else {
            ""
        },
    );
    let _ = writeln!(
        report,
        "| size | keys | page cache | server | req/s | MB/s | p50 ms | p99 ms | bucketfront / this |\n|---|---:|---|---|---:|---:|---:|---:|---:|"
    );
    for (name, size, keys) in disk_sizes() {
        seed(&store, &format!("d{name}"), keys, size).await;
        let bf_paths: Vec<String> = (0..keys)
            .map(|i| signed_path(&format!("d{name}/{i}.png")))
            .collect();
        let nginx_paths: Vec<String> = (0..keys)
            .map(|i| format!("/{BUCKET}/d{name}/{i}.png"))
            .collect();
        let mut warm = vec![(bf_port, &bf_paths), (nginx_port, &nginx_paths)];
        warm.extend(other.iter().map(|(_, port, _)| (*port, &bf_paths)));
        if b_first {
            warm.reverse();
        }
        for (port, paths) in warm {
            for p in paths.iter() {
                ttfb(&format!("http://127.0.0.1:{port}{p}")).await;
            }
        }
        // bucketfront writes files in the background: let them land, then write every
        // dirty page back, so that neither server's measured round is the one the
        // kernel's writeback of the warm-up lands in (it was the noisiest row).
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(|| std::process::Command::new("sync").status())
            .await
            .unwrap()
            .expect("sync");
        // The disk floors: files of the same size on the same file system, each request
        // an open, a header read, the body checked and sent (no memory tier, no cache).
        let floor_root = dir.path().join("floor-files");
        write_disk_floor_files(&floor_root.join(format!("d{name}")), keys, size);
        let head = hit_head(&format!("http://127.0.0.1:{bf_port}{}", bf_paths[0]));
        let floors: Vec<(&str, Proc, u16)> = [
            ("disk floor: pread, check, writev", DiskSend::Read),
            ("disk floor: check, then sendfile", DiskSend::Sendfile),
            ("disk floor: map, check, writev", DiskSend::Map),
            (
                "disk floor: the same, a disk block at a time",
                DiskSend::Blocks,
            ),
        ]
        .into_iter()
        // An object of one block would make the block-at-a-time floor the pread floor again.
        .filter(|(_, how)| *how != DiskSend::Blocks || size > bucketfront::DISK_BLOCK as usize)
        .map(|(label, how)| {
            let (p, port) = start_disk_floor(how, &head, &floor_root);
            (label, p, port)
        })
        .collect();
        for (label, _, port) in &floors {
            accepting(*port, label).await;
        }
        // The floors answer the signed paths too (their parsers read what bucketfront's does).
        let bf_script = random_paths_script(dir.path(), "bf", &bf_paths);
        let mut targets = vec![
            ("bucketfront".to_string(), bf_script.clone(), bf_port),
            (
                "nginx proxy_cache".to_string(),
                random_paths_script(dir.path(), "nginx", &nginx_paths),
                nginx_port,
            ),
        ];
        for (label, _, port) in &floors {
            targets.push((label.to_string(), bf_script.clone(), *port));
        }
        if let Some((_, port, bin)) = &other {
            let name = format!("bucketfront B ({})", bin.display());
            targets.push((name, bf_script.clone(), *port));
        }
        // One unmeasured second each: file handles, the memory tier and nginx's
        // open-file cache reach their steady state before the first measured round.
        for (_, script, port) in &targets {
            let (url, script) = (format!("http://127.0.0.1:{port}/"), script.clone());
            tokio::task::spawn_blocking(move || wrk_with(&url, 1, Some(&script)))
                .await
                .unwrap();
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
