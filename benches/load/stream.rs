//! The 1 GiB stream against a direct GET, with bucketfront's CPU per GiB and peak RSS (`-- stream`).

use bucketfront::Store;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::{BUCKET, accepting};

/// The bytes of the body at `url` and how long they took to arrive.
pub(crate) async fn stream(url: &str) -> (u64, f64) {
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
/// the ratio of their throughputs, and bucketfront's peak RSS. When split, the store (this
/// process) moves to the load generator's CPU first, for good, and the client runs beside
/// bucketfront ([`move_this_process_to_load_cpu`]).
pub(crate) async fn stream_row(store: &Store, dir: &Path) -> String {
    move_this_process_to_load_cpu();
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
    let (mut direct, mut proxied, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_direct in order {
            let url = if is_direct { &direct_url } else { &proxy_url };
            let cpu_before = cpu_seconds(fresh.0.id());
            let url = url.clone();
            let (bytes, secs) = on_server_cpu(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(stream(&url))
            })
            .await;
            assert_eq!(bytes, 1 << 30, "whole object");
            let mb_s = bytes as f64 / secs / 1e6;
            if is_direct {
                direct.push(mb_s);
            } else {
                proxied.push(mb_s);
                cpu.push(cpu_seconds(fresh.0.id()) - cpu_before);
            }
        }
    }
    let peak = proc_status(fresh.0.id(), "VmHWM:");
    let fmt = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let (md, mp) = (median(direct.clone()), median(proxied.clone()));
    // The CPU bucketfront spends per GiB passed through does not depend on how fast the
    // origin or the client is: the pass-through's own cost, beside the ratio.
    format!(
        "\n## 1 GiB object (streamed, not cached)\n\n{}\n\n| presigned GET straight to the store, MB/s | through bucketfront, MB/s | bucketfront / direct (medians) | bucketfront CPU s per GiB | bucketfront peak RSS |\n|---:|---:|---:|---:|---:|\n| {} | {} | **{:.2}** | {} | {:.1} MiB |\n",
        if split() {
            "The store (this process) on CPU 1; the client (a thread of it) and bucketfront on CPU 0, for both."
        } else {
            "The store, the client and bucketfront share the cores."
        },
        fmt(&direct, 0),
        fmt(&proxied, 0),
        mp / md,
        fmt(&cpu, 2),
        peak as f64 / (1 << 20) as f64
    )
}

/// Only the 1 GiB stream row (`cargo bench --bench load -- stream`).
pub(crate) async fn stream_only() -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = CancellationToken::new();
    let store = start_store(&stop).await;
    let report = stream_row(&store, dir.path()).await;
    stop.cancel();
    report
}
