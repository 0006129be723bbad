//! Image variants: hits of a 256 px WebP variant against hits of its original, and cold
//! renders per second (`-- variants`).

use bytes::Bytes;
use std::fmt::Write as _;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::{BUCKET, SECRET, accepting};

/// Image variants: a 256 px WebP variant's hits against its original's (same run,
/// alternating), and cold renders per second on this machine, from sources already in the
/// cache and from sources fetched for the render.
pub(crate) async fn variants(seconds: u64, rounds: usize) -> String {
    use bucketfront::samples;
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
        let query = bucketfront::signed_variant_query(
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
