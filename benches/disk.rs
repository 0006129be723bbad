//! The disk tier on its own, with the workload `benches/foyer-eval` runs against foyer's
//! hybrid cache (BENCHMARKS.md, "Disk tier: which engine"): write N objects, open the
//! directory again (a restart), read every object back checked, flip one byte in every
//! 7th object's file and read again. `cargo bench --bench disk -- [N] [SIZE]`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bucketfront::CacheKey;
use bucketfront::DiskTier;
use bucketfront::Pieces;
use bucketfront::TierMetrics;
use bucketfront::config::{DiskConfig, ProviderKind, Size};
use bucketfront::{ObjectMeta, StoredFields};
use bytes::Bytes;
use tokio::sync::Semaphore;

fn vm_hwm_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn key(i: u64) -> CacheKey {
    CacheKey {
        provider: ProviderKind::S3,
        partition: Default::default(),
        bucket: "bench-images".into(),
        key: format!("objects/{i}.jpg"),
        variant: None,
    }
}

fn body(i: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((j as u64 * 31 + i) % 251) as u8)
        .collect()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list` run nothing here
    }
    // `cargo bench` passes `--bench`; the numbers are the arguments that parse.
    let nums: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let n = nums.first().copied().unwrap_or(2000);
    let size = nums.get(1).copied().unwrap_or(200 << 10) as usize;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = DiskConfig {
        path: dir.path().to_path_buf(),
        max_size: Size((n * size as u64 * 2).max(1 << 30)),
    };
    let meta = ObjectMeta {
        fields: StoredFields {
            content_type: Some("image/jpeg".into()),
            etag: Some("\"0123456789abcdef\"".into()),
            ..StoredFields::default()
        },
        ..ObjectMeta::default()
    };
    let budget = Arc::new(Semaphore::new(1 << 20));

    let tier = DiskTier::open(&cfg, TierMetrics::default());
    // offer() skips objects once 64 MiB are queued; the bench wants them all, so it
    // waits for the queue to drain after every 48 MiB.
    let batch = ((48 << 20) / size as u64).max(1);
    // Bodies are made inside the timed loop, as foyer-eval makes them.
    let t = Instant::now();
    for i in 0..n {
        let pieces = Pieces::new(vec![Bytes::from(body(i, size))]);
        tier.offer(&key(i), &meta, &pieces, SystemTime::now());
        if i % batch == batch - 1 {
            tier.flush().await;
        }
    }
    tier.flush().await;
    let write = t.elapsed();
    drop(tier);

    let t = Instant::now();
    let tier = DiskTier::open(&cfg, TierMetrics::default());
    // Until its thread has indexed every file (a read before that opens the file anyway).
    tier.indexed().await;
    let reopen = t.elapsed();
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..n {
        if let Some(got) = tier.load(&key(i), &budget).await {
            assert!(got.body.range(0, got.body.len()).concat() == body(i, size));
            hits += 1;
        }
    }
    let read = t.elapsed();
    let mb =
        |count: u64, d: std::time::Duration| count as f64 * size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "bucketfront disk tier: {n} x {size} B: write {:.0} MB/s, reopen {reopen:?}, read {hits}/{n} hits {:.0} MB/s ({:.0} us/object), VmHWM {} MiB",
        mb(n, write),
        mb(hits, read),
        read.as_secs_f64() * 1e6 / n as f64,
        vm_hwm_mib()
    );

    let mut flipped = 0;
    for i in (0..n).step_by(7) {
        let path = tier.path_of(&key(i));
        let mut raw = std::fs::read(&path).unwrap();
        let at = raw.len() - size / 2;
        raw[at] ^= 0x40;
        std::fs::write(&path, raw).unwrap();
        flipped += 1;
    }
    let (mut ok, mut wrong, mut miss) = (0, 0, 0);
    for i in 0..n {
        match tier.load(&key(i), &budget).await {
            Some(got) if got.body.range(0, got.body.len()).concat() == body(i, size) => ok += 1,
            Some(_) => wrong += 1,
            None => miss += 1,
        }
    }
    println!(
        "bucketfront disk tier after {flipped} flipped bytes: {ok} intact, {miss} misses, {wrong} WRONG BYTES"
    );
}
