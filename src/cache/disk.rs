//! The disk tier (`[cache.disk]`): complete objects as one file each, under the memory
//! tier. Every read is checked against the CRC32C written with the file, so a flipped
//! byte or a truncated file is a miss (the object is fetched again and rewritten), never
//! wrong bytes. Files outlive the process: at start a loader thread indexes what is
//! there, so a restart finds the cache warm.
//!
//! Layout: `<path>/objects/<2 hex>/<30 hex>`, named by SHA-256 of the cache key (the key
//! itself is in the file's header and compared on every read); `<path>/tmp/` holds files
//! being written, renamed into place once complete, so no half-written file ever carries
//! an object's name. File format (little-endian):
//!
//! ```text
//! "BFDISK01" | header length u32 | header CRC32C u32 | body length u64 | body CRC32C u32
//! | 4 bytes reserved | header (JSON: key, metadata, when stored) | body
//! ```
//!
//! The index (which keys have a file, and its size) is a byte-weighted LRU: inserting
//! past `max_size` evicts the least recently used, whose files are deleted after the next
//! write. Files are read, written and deleted on tokio's blocking pool, and indexed at start
//! by a thread of their own: once serving, the async workers never touch the disk (only
//! creating the directories at start runs on the caller). A failing disk (full, read-only, gone) turns the tier off for
//! [`RETRY_AFTER`] at a time, with a log line and `bucketfront_disk_up 0`; requests are
//! answered from memory and the origin meanwhile.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use super::pieces::Pieces;
use super::{CacheKey, kib, kib_permit};
use crate::config::{DiskConfig, ProviderKind};
use crate::metrics::TierMetrics;
use crate::object::ObjectMeta;

const MAGIC: &[u8; 8] = b"BFDISK01";
const PRELUDE: usize = 32;
/// A header is a key and a few headers; anything longer is not a file of ours.
const MAX_HEADER: u32 = 64 << 10;
/// Bytes of objects queued for writing at once; past it, new objects are not written
/// (counted in `bucketfront_disk_writes_skipped`).
const WRITE_BUDGET: u64 = 64 << 20;
/// How long a failing disk is left alone before the next write tries it again.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Pieces a file is read in: the memory tier's allocation size.
const READ_BLOCK: usize = 1 << 20;

/// An object read back from disk.
pub struct Loaded {
    pub meta: ObjectMeta,
    pub body: Pieces,
    /// When it was fetched or last revalidated, on the cache's wall clock.
    pub stored: SystemTime,
    /// The whole file's length (what the index weighs).
    file_len: u64,
}

/// Why a file was not used.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("fill_memory is in use")]
    NoBudget,
}

/// The part of a file that says what it holds.
#[derive(Serialize, Deserialize)]
struct Header {
    provider: ProviderKind,
    bucket: String,
    key: String,
    /// A variant's id; absent in files of objects (and in files written before variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    stored_ms: u64,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified_ms: Option<u64>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires_ms: Option<u64>,
}

impl Header {
    fn new(key: &CacheKey, meta: &ObjectMeta, stored: SystemTime) -> Header {
        // Exhaustive: a new metadata field does not compile until it is stored here.
        let ObjectMeta {
            content_type,
            size: _,
            etag,
            last_modified,
            content_encoding,
            content_disposition,
            content_language,
            cache_control,
            expires,
        } = meta.clone();
        Header {
            provider: key.provider,
            bucket: key.bucket.clone(),
            key: key.key.clone(),
            variant: key.variant.clone(),
            stored_ms: unix_ms(stored),
            content_type,
            etag,
            last_modified_ms: last_modified.map(unix_ms),
            content_encoding,
            content_disposition,
            content_language,
            cache_control,
            expires_ms: expires.map(unix_ms),
        }
    }

    fn key(&self) -> CacheKey {
        CacheKey {
            provider: self.provider,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            variant: self.variant.clone(),
        }
    }

    fn meta(self, size: u64) -> ObjectMeta {
        ObjectMeta {
            content_type: self.content_type,
            size,
            etag: self.etag,
            last_modified: self.last_modified_ms.map(from_unix_ms),
            content_encoding: self.content_encoding,
            content_disposition: self.content_disposition,
            content_language: self.content_language,
            cache_control: self.cache_control,
            expires: self.expires_ms.map(from_unix_ms),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The fixed-size start of a file.
struct Prelude {
    header_len: u32,
    header_crc: u32,
    body_len: u64,
    body_crc: u32,
}

impl Prelude {
    fn encode(&self) -> [u8; PRELUDE] {
        let mut b = [0u8; PRELUDE];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.header_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8; PRELUDE]) -> Result<Prelude, ReadError> {
        if &b[..8] != MAGIC {
            return Err(ReadError::Corrupt("not a bucketfront cache file"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&b[16..24]);
        let p = Prelude {
            header_len: u32_at(8),
            header_crc: u32_at(12),
            body_len: u64::from_le_bytes(len),
            body_crc: u32_at(24),
        };
        if p.header_len > MAX_HEADER {
            return Err(ReadError::Corrupt("header length out of range"));
        }
        Ok(p)
    }

    fn file_len(&self) -> u64 {
        PRELUDE as u64 + u64::from(self.header_len) + self.body_len
    }
}

/// Opens `path` and reads its prelude and header; checks the header's checksum and that
/// the file is exactly as long as they say (a truncated file is corrupt).
fn open_header(path: &Path) -> Result<Option<(File, Prelude, Header)>, ReadError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut prelude = [0u8; PRELUDE];
    read_exact_or_corrupt(&mut file, &mut prelude)?;
    let p = Prelude::decode(&prelude)?;
    let mut header = vec![0u8; p.header_len as usize];
    read_exact_or_corrupt(&mut file, &mut header)?;
    if crc32c::crc32c(&header) != p.header_crc {
        return Err(ReadError::Corrupt("header checksum mismatch"));
    }
    if file.metadata()?.len() != p.file_len() {
        return Err(ReadError::Corrupt("file length does not match its header"));
    }
    let h: Header =
        serde_json::from_slice(&header).map_err(|_| ReadError::Corrupt("unreadable header"))?;
    Ok(Some((file, p, h)))
}

fn read_exact_or_corrupt(file: &mut File, buf: &mut [u8]) -> Result<(), ReadError> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Corrupt("file shorter than its header says"),
        _ => ReadError::Io(e),
    })
}

/// 4 KiB blocks: what a file takes on disk, as `max_size` counts it.
fn on_disk(file_len: u64) -> u32 {
    u32::try_from(file_len.div_ceil(4096) * 4096).unwrap_or(u32::MAX)
}

/// Whether the tier may write now, and since when it has been failing.
#[derive(Default)]
struct Health {
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
}

pub struct DiskTier {
    root: PathBuf,
    /// Keys with a file, weighted by the file's blocks.
    index: moka::sync::Cache<CacheKey, u32>,
    /// Files of evicted keys, deleted by [`DiskTier::unlink_evicted`].
    unlink: Arc<Mutex<Vec<PathBuf>>>,
    /// `true` once the loader has indexed the files found at start; until then a key
    /// missing from the index may still have a file.
    loaded: watch::Sender<bool>,
    /// In KiB, like `fill_memory`.
    write_budget: Arc<Semaphore>,
    health: Mutex<Health>,
    tmp_seq: AtomicU64,
    metrics: TierMetrics,
}

impl DiskTier {
    /// Opens (creating) the directory and starts indexing the files in it. An unusable
    /// directory is logged and counted; the tier then retries every [`RETRY_AFTER`].
    pub fn open(cfg: &DiskConfig, metrics: TierMetrics) -> Arc<DiskTier> {
        let unlink = Arc::new(Mutex::new(Vec::new()));
        let evicted = unlink.clone();
        let objects = cfg.path.join("objects");
        let index = moka::sync::Cache::builder()
            .max_capacity(cfg.max_size.0)
            .weigher(|_k: &CacheKey, blocks: &u32| *blocks)
            .eviction_listener(move |k: Arc<CacheKey>, _, cause| {
                // Replaced: the same path holds the new file. Explicit: the purge deletes.
                // Any thread may run moka's housekeeping, so the file is only noted here
                // and deleted by the next write or maintenance, on the blocking pool.
                if cause.was_evicted()
                    && let Ok(mut paths) = evicted.lock()
                {
                    paths.push(object_path(&objects, &k));
                }
            })
            // As the memory tier: the object just written is always kept.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let (loaded, _) = watch::channel(false);
        let tier = Arc::new(DiskTier {
            root: cfg.path.clone(),
            index,
            unlink,
            loaded,
            write_budget: Arc::new(Semaphore::new(kib(WRITE_BUDGET) as usize)),
            health: Mutex::new(Health::default()),
            tmp_seq: AtomicU64::new(0),
            metrics,
        });
        match tier.prepare() {
            Ok(()) => {
                tier.metrics.disk_up.set(1);
                let loader = tier.clone();
                let spawned = std::thread::Builder::new()
                    .name("disk-loader".into())
                    .spawn(move || loader.load_index());
                if spawned.is_err() {
                    tier.loaded.send_replace(true);
                }
            }
            Err(e) => {
                tier.failed("open", &e);
                tier.loaded.send_replace(true);
            }
        }
        tier
    }

    fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Creates the directories and removes what an ended process left half-written
    /// (temporary files are named `<pid>.<n>`; a live process's are left alone).
    fn prepare(&self) -> io::Result<()> {
        fs::create_dir_all(self.objects())?;
        let tmp = self.tmp();
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)?.flatten() {
            let name = entry.file_name();
            let writer = name
                .to_str()
                .and_then(|n| n.split('.').next()?.parse::<u32>().ok());
            let alive = writer.is_some_and(|pid| {
                pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
            });
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Indexes every file under `objects/` (headers only); removes files that are not
    /// whole or not ours. Runs on a thread of its own at start.
    fn load_index(&self) {
        let started = Instant::now();
        let mut found = 0u64;
        let dirs = fs::read_dir(self.objects()).into_iter().flatten().flatten();
        for dir in dirs {
            for file in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let path = file.path();
                match open_header(&path) {
                    Ok(Some((_, prelude, header))) => {
                        let key = header.key();
                        if object_path(&self.objects(), &key) == path {
                            self.index.insert(key, on_disk(prelude.file_len()));
                            found += 1;
                            continue;
                        }
                        let _ = fs::remove_file(&path);
                    }
                    Ok(None) => {}
                    Err(ReadError::Io(e)) => {
                        tracing::warn!(path = %path.display(), error = %e, "disk tier: cannot read a cache file");
                    }
                    Err(_) => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        self.index.run_pending_tasks();
        tracing::info!(
            path = %self.root.display(),
            objects = found,
            bytes = self.index.weighted_size(),
            ms = started.elapsed().as_millis() as u64,
            "disk tier loaded"
        );
        self.loaded.send_replace(true);
    }

    /// Waits until the files found at start are indexed.
    pub async fn indexed(&self) {
        let mut loaded = self.loaded.subscribe();
        let _ = loaded.wait_for(|done| *done).await;
    }

    /// `key`'s object from disk, checked; `None` when there is none, when its file is
    /// corrupt (then removed) or when `budget` (`fill_memory`) has no room for it.
    pub async fn read(self: &Arc<Self>, key: &CacheKey, budget: &Arc<Semaphore>) -> Option<Loaded> {
        if *self.loaded.borrow() && !self.index.contains_key(key) {
            return None;
        }
        let (tier, key, budget) = (self.clone(), key.clone(), budget.clone());
        let read = tokio::task::spawn_blocking(move || {
            let path = object_path(&tier.objects(), &key);
            let result = read_object(&path, &key, &budget);
            match &result {
                Ok(Some(loaded)) => {
                    // `get` marks the file recently used (`contains_key` would not).
                    if tier.index.get(&key).is_none() {
                        tier.index.insert(key.clone(), on_disk(loaded.file_len));
                    }
                }
                Ok(None) => tier.index.invalidate(&key),
                Err(ReadError::Corrupt(why)) => {
                    tracing::warn!(bucket = %key.bucket, key = %key.key, reason = why, "disk tier: corrupt file removed; fetching from the origin");
                    tier.metrics.disk_corrupt.inc();
                    tier.index.invalidate(&key);
                    let _ = fs::remove_file(&path);
                }
                Err(ReadError::Io(e)) => {
                    tracing::warn!(bucket = %key.bucket, key = %key.key, error = %e, "disk tier: read failed; fetching from the origin");
                    tier.metrics.disk_read_errors.inc();
                }
                Err(ReadError::NoBudget) => {}
            }
            result.ok().flatten()
        });
        read.await.ok().flatten()
    }

    /// Queues `meta` and `body` to be written as `key`'s file, unless the write budget
    /// is full or the disk is failing (then the object stays in memory only).
    pub fn offer(
        self: &Arc<Self>,
        key: &CacheKey,
        meta: &ObjectMeta,
        body: &Pieces,
        stored: SystemTime,
    ) {
        if !self.may_write() {
            self.metrics.disk_writes_skipped.inc();
            return;
        }
        let Ok(permit) = kib_permit(&self.write_budget, body.len()) else {
            self.metrics.disk_writes_skipped.inc();
            return;
        };
        let header = Header::new(key, meta, stored);
        let (tier, key, body) = (self.clone(), key.clone(), body.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match tier.write(&key, &header, &body) {
                Ok(len) => {
                    tier.index.insert(key, on_disk(len));
                    tier.unlink_evicted();
                    tier.metrics.disk_writes.inc();
                    tier.recovered();
                }
                Err(e) => tier.failed("write", &e),
            }
        });
    }

    /// Writes the file under `tmp/`, then renames it into place.
    fn write(&self, key: &CacheKey, header: &Header, body: &Pieces) -> io::Result<u64> {
        let header = serde_json::to_vec(header)?;
        let pieces = body.range(0, body.len());
        let body_crc = pieces
            .iter()
            .fold(0, |crc, p| crc32c::crc32c_append(crc, p));
        let prelude = Prelude {
            header_len: u32::try_from(header.len()).map_err(io::Error::other)?,
            header_crc: crc32c::crc32c(&header),
            body_len: body.len(),
            body_crc,
        };
        let target = object_path(&self.objects(), key);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp().join(format!("{}.{seq}", std::process::id()));
        let written = (|| {
            fs::create_dir_all(self.tmp())?;
            let mut file = File::create(&tmp)?;
            file.write_all(&prelude.encode())?;
            file.write_all(&header)?;
            for p in &pieces {
                file.write_all(p)?;
            }
            drop(file);
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::rename(&tmp, &target)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(prelude.file_len())
    }

    fn may_write(&self) -> bool {
        let Ok(mut h) = self.health.lock() else {
            return false;
        };
        match h.retry_at {
            Some(at) if Instant::now() < at => false,
            Some(_) => {
                // One write tries the disk again; the others wait for its outcome.
                h.retry_at = Some(Instant::now() + RETRY_AFTER);
                true
            }
            None => true,
        }
    }

    fn failed(&self, op: &'static str, e: &io::Error) {
        self.metrics.disk_write_errors.inc();
        self.metrics.disk_up.set(0);
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        h.retry_at = Some(Instant::now() + RETRY_AFTER);
        if h.failing_since.is_none() {
            h.failing_since = Some(Instant::now());
            tracing::warn!(path = %self.root.display(), op, error = %e, retry_in_s = RETRY_AFTER.as_secs(), "disk tier failing; caching in memory only");
        }
    }

    fn recovered(&self) {
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        if let Some(since) = h.failing_since.take() {
            tracing::info!(path = %self.root.display(), failed_for_s = since.elapsed().as_secs(), "disk tier writable again");
        }
        h.retry_at = None;
        self.metrics.disk_up.set(1);
    }

    /// Removes the files of the keys `selected` picks (after the loader is done, so no
    /// file found at start escapes); returns their keys.
    pub async fn purge(self: &Arc<Self>, selected: impl Fn(&CacheKey) -> bool) -> Vec<CacheKey> {
        self.indexed().await;
        let keys: Vec<CacheKey> = self
            .index
            .iter()
            .filter(|(k, _)| selected(k))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in &keys {
            self.index.invalidate(k);
        }
        let paths: Vec<PathBuf> = keys
            .iter()
            .map(|k| object_path(&self.objects(), k))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = fs::remove_file(p);
            }
        })
        .await;
        keys
    }

    /// Waits for the writes queued so far to end (at shutdown: what was fetched before
    /// SIGTERM is on disk for the next start).
    pub async fn flush(&self) {
        let all = kib(WRITE_BUDGET) as u32;
        drop(self.write_budget.acquire_many(all).await);
    }

    /// Runs the index's pending evictions and deletes the evicted files (blocking).
    fn unlink_evicted(&self) {
        self.index.run_pending_tasks();
        let paths = match self.unlink.lock() {
            Ok(mut paths) => std::mem::take(&mut *paths),
            Err(_) => return,
        };
        for p in paths {
            let _ = fs::remove_file(p);
        }
    }

    /// Runs pending evictions (deleting their files) and updates the gauges.
    pub async fn maintain(self: &Arc<Self>) {
        let tier = self.clone();
        let _ = tokio::task::spawn_blocking(move || tier.unlink_evicted()).await;
        self.metrics
            .disk_bytes
            .set(self.index.weighted_size() as i64);
        self.metrics
            .disk_entries
            .set(self.index.entry_count() as i64);
    }

    /// Where `key`'s file is (tests and benches corrupt it there).
    pub fn path_of(&self, key: &CacheKey) -> PathBuf {
        object_path(&self.objects(), key)
    }
}

/// `objects/<2 hex>/<30 hex>` of SHA-256 over the key's parts.
fn object_path(objects: &Path, key: &CacheKey) -> PathBuf {
    // A variant's id is hashed after the object's parts, so objects keep the paths
    // they had before variants existed.
    let parts = [key.provider.as_str(), &key.bucket, &key.key];
    let hex = super::digest_hex(parts.into_iter().chain(key.variant.as_deref()), 16);
    objects.join(&hex[..2]).join(&hex[2..])
}

/// Reads and checks the whole file for `key` (blocking).
fn read_object(
    path: &Path,
    key: &CacheKey,
    budget: &Arc<Semaphore>,
) -> Result<Option<Loaded>, ReadError> {
    let Some((mut file, prelude, header)) = open_header(path)? else {
        return Ok(None);
    };
    if header.key() != *key {
        // Another key with the same name prefix (2^-128): not ours to serve.
        return Ok(None);
    }
    let _permit = kib_permit(budget, prelude.body_len).map_err(|()| ReadError::NoBudget)?;
    let mut pieces = Vec::new();
    let mut crc = 0;
    let mut left = prelude.body_len;
    while left > 0 {
        let n = READ_BLOCK.min(usize::try_from(left).unwrap_or(READ_BLOCK));
        // Not zeroed first: `take` + `read_to_end` fill exactly the capacity.
        let mut block = Vec::with_capacity(n);
        (&mut file).take(n as u64).read_to_end(&mut block)?;
        if block.len() != n {
            return Err(ReadError::Corrupt("file shorter than its header says"));
        }
        crc = crc32c::crc32c_append(crc, &block);
        pieces.push(Bytes::from(block));
        left -= n as u64;
    }
    if crc != prelude.body_crc {
        return Err(ReadError::Corrupt("body checksum mismatch"));
    }
    let stored = from_unix_ms(header.stored_ms);
    Ok(Some(Loaded {
        meta: header.meta(prelude.body_len),
        body: Pieces::new(pieces),
        stored,
        file_len: prelude.file_len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> CacheKey {
        CacheKey::test(k)
    }

    /// Writes `body` as `k`'s file and waits for it.
    async fn write(t: &Arc<DiskTier>, k: &str, body: &[u8], stored: SystemTime) {
        let pieces = Pieces::new(vec![Bytes::copy_from_slice(body)]);
        t.offer(&key(k), &meta(), &pieces, stored);
        t.flush().await;
    }

    fn tier(dir: &Path, max: u64) -> Arc<DiskTier> {
        let cfg = DiskConfig {
            path: dir.to_path_buf(),
            max_size: crate::config::Size(max),
        };
        DiskTier::open(&cfg, TierMetrics::default())
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            content_type: Some("image/png".into()),
            etag: Some("\"e\"".into()),
            content_encoding: Some("gzip".into()),
            cache_control: Some("max-age=60".into()),
            ..ObjectMeta::default()
        }
    }

    fn budget() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(1 << 20))
    }

    #[tokio::test]
    async fn objects_survive_a_new_tier_on_the_same_path_and_corruption_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let t = tier(dir.path(), 1 << 30);
        let stored = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        write(&t, "a", &body, stored).await;
        drop(t);

        let t = tier(dir.path(), 1 << 30);
        let got = t
            .read(&key("a"), &budget())
            .await
            .expect("found after reopen");
        let bytes: Vec<u8> = got.body.range(0, got.body.len()).concat();
        assert_eq!(bytes, body);
        assert_eq!(got.meta.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(got.meta.size, body.len() as u64);
        assert_eq!(got.stored, stored);
        assert!(t.read(&key("b"), &budget()).await.is_none());

        // A flipped byte in the body: a miss, and the file is gone.
        let path = t.path_of(&key("a"));
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - 1000;
        raw[at] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(t.read(&key("a"), &budget()).await.is_none());
        assert!(!path.exists());
        assert_eq!(t.metrics.disk_corrupt.get(), 1);

        // A truncated file: a miss too.
        write(&t, "a", &body, stored).await;
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(raw.len() as u64 / 2).unwrap();
        assert!(t.read(&key("a"), &budget()).await.is_none());
        assert_eq!(t.metrics.disk_corrupt.get(), 2);
    }

    #[tokio::test]
    async fn max_size_evicts_the_least_recently_used_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 10 * 8192);
        let body = Pieces::new(vec![Bytes::from(vec![7u8; 5000])]);
        for i in 0..30 {
            t.offer(&key(&i.to_string()), &meta(), &body, SystemTime::now());
            t.flush().await;
        }
        t.maintain().await;
        assert!(t.index.weighted_size() <= 10 * 8192);
        let files: usize = fs::read_dir(t.objects())
            .unwrap()
            .flatten()
            .map(|d| fs::read_dir(d.path()).unwrap().count())
            .sum();
        assert_eq!(files as u64, t.index.entry_count());
        assert!(files <= 10, "{files} files");
        assert!(t.read(&key("29"), &budget()).await.is_some());
        assert!(t.read(&key("0"), &budget()).await.is_none());
    }

    #[tokio::test]
    async fn an_unwritable_path_turns_the_tier_off_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"not a directory").unwrap();
        let t = tier(&blocker, 1 << 20);
        assert_eq!(t.metrics.disk_up.get(), 0);
        t.offer(&key("a"), &meta(), &Pieces::default(), SystemTime::now());
        t.flush().await;
        assert!(t.read(&key("a"), &budget()).await.is_none());
        assert_eq!(t.metrics.disk_writes_skipped.get(), 1);
    }

    #[tokio::test]
    async fn purge_removes_the_selected_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        let body = Pieces::new(vec![Bytes::from_static(b"x")]);
        for k in ["cats/1", "cats/2", "dogs/1"] {
            t.offer(&key(k), &meta(), &body, SystemTime::now());
        }
        t.flush().await;
        assert_eq!(t.purge(|k| k.key.starts_with("cats/")).await.len(), 2);
        assert!(!t.path_of(&key("cats/1")).exists());
        assert!(t.path_of(&key("dogs/1")).exists());
        assert!(t.read(&key("cats/2"), &budget()).await.is_none());
    }
}
