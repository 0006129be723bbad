//! foyer's hybrid cache as bucketfront's disk tier, on the workload of `benches/disk.rs`:
//! write N objects (write-on-insertion, a memory tier of 8 MiB so that reads go to disk),
//! close and open again (recovery), read them all back, flip one byte every 7 objects'
//! worth of device bytes, read again.
use std::time::Instant;

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode,
};

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Obj(#[serde(with = "serde_bytes")] Vec<u8>);

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmHWM")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn open(dir: &str, disk: usize) -> HybridCache<u64, Obj> {
    let device = FsDeviceBuilder::new(dir).with_capacity(disk).build().unwrap();
    HybridCacheBuilder::new()
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(8 << 20)
        .with_weighter(|_k: &u64, v: &Obj| v.0.len())
        .storage()
        .with_io_engine_config(PsyncIoEngineConfig::new())
        .with_engine_config(BlockEngineConfig::new(device).with_block_size(64 << 20).with_tombstone_log(true).with_submit_queue_size_threshold(usize::MAX / 4))
        .with_recover_mode(RecoverMode::Quiet)
        .build()
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(2000);
    let size: usize = std::env::args().nth(2).map(|a| a.parse().unwrap()).unwrap_or(200 << 10);
    let dir = "target/foyer-device";
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let disk = (n as usize * size * 2).max(1 << 30);
    let body = |i: u64| Obj((0..size).map(|j| ((j as u64 * 31 + i) % 251) as u8).collect());
    let c = open(dir, disk).await;
    let t = Instant::now();
    for i in 0..n {
        c.insert(i, body(i));
    }
    c.close().await.unwrap();
    let write = t.elapsed();
    drop(c);
    let t = Instant::now();
    let c = open(dir, disk).await;
    let recover = t.elapsed();
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..n {
        if let Ok(Some(e)) = c.get(&i).await {
            assert!(e.value().0 == body(i).0, "wrong bytes for {i}");
            hits += 1;
        }
    }
    let read = t.elapsed();
    println!(
        "foyer: {n} x {size} B: write {:.0} MB/s, reopen {:?}, read {hits}/{n} hits {:.0} MB/s ({:.0} us/object), VmHWM {} MiB",
        (n as f64 * size as f64) / write.as_secs_f64() / 1e6,
        recover,
        (hits as f64 * size as f64) / read.as_secs_f64() / 1e6,
        read.as_secs_f64() * 1e6 / n as f64,
        rss_kib() / 1024
    );
    c.close().await.unwrap();
    drop(c);
    // Corruption: flip one byte in the middle of every device file and read again.
    let mut flipped = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        let len = std::fs::metadata(&p).unwrap().len();
        if len < 1 << 20 { continue; }
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        for off in (4096..len).step_by(size * 7 + 12345) {
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, off).unwrap();
            b[0] ^= 0x40;
            file.write_all_at(&b, off).unwrap();
            flipped += 1;
        }
    }
    let c = open(dir, disk).await;
    let (mut ok, mut wrong, mut miss) = (0, 0, 0);
    for i in 0..n {
        match c.get(&i).await {
            Ok(Some(e)) if e.value().0 == body(i).0 => ok += 1,
            Ok(Some(_)) => wrong += 1,
            _ => miss += 1,
        }
    }
    println!("foyer after {flipped} flipped bytes: {ok} intact, {miss} misses, {wrong} WRONG BYTES");
}
