//! Load benchmark: bucketfront against nginx (`proxy_cache` on tmpfs) and Varnish
//! (`-s malloc`) in front of the same embedded store, with nginx sending the files from
//! tmpfs as the ceiling; all driven by the same `wrk`, alternating runs. Also measures
//! the miss path, a 1 GiB stream's peak RSS and CPU per GiB and coalescing of 200 cold requests.
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
//! (before/after a change), hot hits over h1 and TLS + h2, alternating rounds; `-- floor`
//! hits at the hot table's four sizes (or those of `BENCH_FLOOR_SIZES`, `1MiB,16MiB`)
//! against stand-ins that do nothing per request (hyper alone, `httparse` with one
//! `writev`, and that with `sendfile` from a memfd), to show what the HTTP stack leaves
//! for the rest and, at the large sizes, what the send alone costs.
//! `BENCH_SPLIT=1` with any of them puts every server on CPU 0 and the load generator on
//! CPU 1 (`taskset`), one thread or worker each, instead of sharing both cores; for the
//! stream, the store (this process) goes to CPU 1 and the client beside bucketfront. The
//! hot table then shows how busy each of the two cores was, so that a row the load
//! generator held (its core full, the server's not) is told from one the server held.
//! `BENCH_CLIENT=sink` replaces `wrk` in the hot table, the floor, the ab mode and the
//! probes that pick each peer's knobs with a client of this binary that drops bodies in
//! the kernel without copying them (`load/sink.rs`): at 1 MiB and 16 MiB, where `wrk`'s
//! core is the bottleneck, the table then measures the servers.

#[path = "load/ab.rs"]
mod ab;
#[path = "load/disk.rs"]
mod disk;
#[path = "load/fleet.rs"]
mod fleet;
#[path = "load/floor.rs"]
mod floor;
#[path = "load/h2.rs"]
mod h2;
#[path = "load/harness.rs"]
mod harness;
#[path = "load/hot.rs"]
mod hot;
#[path = "load/sink.rs"]
mod sink;
#[path = "load/stream.rs"]
mod stream;
mod support;
#[path = "load/variants.rs"]
mod variants;

use std::path::{Path, PathBuf};
use std::process::Command;

use ab::ab;
use disk::disk;
use fleet::fleet;
use floor::floor;
use h2::h2;
use hot::run;
use stream::stream_only;
use variants::variants;

/// As bucketfront's binary: the floor servers (`-- floor`) run in children of this one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Ok(kind) = std::env::var(floor::FLOOR_ENV) {
        return floor::serve_floor(&kind);
    }
    if let Ok(spec) = std::env::var(sink::SINK_ENV) {
        return sink::drive(&spec);
    }
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
    let floor_only = std::env::args().any(|a| a == "floor");
    let tools: &[&str] = if ab_only {
        &["wrk", "h2load"]
    } else if h2_only {
        &["nginx", "h2load", "curl"]
    } else if variants_only {
        &["wrk"]
    } else if floor_only {
        &["nginx", "wrk", "curl"]
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
    // `BENCH_SPLIT=1`'s precondition, checked before anything is started or created.
    harness::split();
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
    } else if floor_only {
        rt.block_on(floor(seconds, rounds))
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
