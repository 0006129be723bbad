//! The fleet row: one instance against three behind nginx (`-- fleet`).

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::{accepting, free_port, seed};

/// Objects of the fleet row: more than one instance's cache holds, fewer than three do.
pub(crate) const FLEET_KEYS: usize = 3000;

/// The fleet row: one instance, then three behind nginx with `packaging/nginx-fleet.conf`,
/// each with `max_memory = 64MiB`, under the same wrk run picking one of 3,000 64 KiB
/// objects at random per request (192 MiB in all: a third fits in one instance). Each
/// topology is started fresh, warmed by one run, then measured by another; origin GETs are
/// counted by the store during the measured run. `cargo bench --bench load -- fleet`.
pub(crate) async fn fleet(seconds: u64, rounds: usize) -> String {
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
                let child = server_command("nginx")
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
         wrk -t{} -c{CONNECTIONS} -d{seconds}s (after a warm-up run of the same length), {rounds} rounds, alternating. {}\n\n\
         | round | topology | req/s | MB/s | p50 ms | p99 ms | origin GETs | origin GETs per request |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
        threads_per_role(),
        placement(),
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
