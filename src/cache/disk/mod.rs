//! The disk tier (`[cache.disk]`): complete objects as one file each, under the memory
//! tier. Every read is checked against the CRC32C written with the file, block by block
//! ([`file`]), so a flipped byte or a truncated file is a miss (the object is fetched
//! again and rewritten), never wrong bytes; a large object streams from its file, a block
//! at a time. Files outlive the process: at start a loader thread indexes what is there,
//! so a restart finds the cache warm.
//!
//! Layout: `<path>/objects/<2 hex>/<30 hex>`, named by SHA-256 of the cache key (the key
//! itself is in the file's header and compared on every read); `<path>/tmp/` holds files
//! being written, renamed into place once complete, so no half-written file ever carries
//! an object's name. Writes run side by side, but one key's land in the order they were
//! offered, and none offered before a purge lands after it ([`landing`]).
//!
//! The index (which keys have a file, and its size) is a byte-weighted LRU: inserting
//! past `max_size` evicts the least recently used, whose files are deleted after the next
//! write. A read first tries the async worker it is on, taking only what the kernel
//! holds in memory (`openat2` with `RESOLVE_CACHED`, `preadv2` with `RWF_NOWAIT`): a warm
//! file is copied and checked there a block ([`BLOCK`]) per turn, without the two thread
//! wake-ups of a round trip through the blocking pool. From the first thing that would
//! wait for the disk (a cold path or page, a file to remove) the read goes to tokio's
//! blocking pool, as do writes and deletes; files are indexed at start by a thread of
//! their own. So the async workers never wait for the disk (only creating the
//! directories at start runs on the caller). A failing disk (full, read-only,
//! gone) turns writes off for [`RETRY_AFTER`] at a time, with a log line and
//! `bucketfront_disk_up 0`. A hung one (a stalled network volume, a dying drive) is
//! bounded too: at most [`READ_SLOTS`] reads at once, each block within [`READ_DEADLINE`],
//! else the read is given up (a miss, or the rest of the body from the origin) and reads
//! pause for [`RETRY_AFTER`]; at most [`WRITE_SLOTS`] writes at once, each within
//! [`WRITE_DEADLINE`], else writes pause. Requests are answered from memory and the
//! origin meanwhile, and the blocking threads a hung disk holds are bounded by the slots.

mod file;
mod health;
mod landing;
mod send;

use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::body::WHOLE_FRAME;
use crate::cache::budget::{kib, kib_permit};
use crate::cache::entry::CacheKey;
use crate::cache::pieces::Pieces;
use crate::config::{DiskConfig, Partition};
use crate::metrics::TierMetrics;
use crate::object::ObjectMeta;
use file::{Header, Opened, ReadError, Wait};
use health::{Health, lock};
use landing::{Landings, Ticket};

pub use file::BLOCK;
pub(crate) use health::RETRY_AFTER;
pub(crate) use send::FromFile;

/// Bytes of objects queued for writing at once; past it, new objects are not written
/// (counted in `bucketfront_disk_writes_skipped`).
const WRITE_BUDGET: u64 = 64 << 20;
/// A purge's selection of keys.
pub(crate) type Pick = Arc<dyn Fn(&CacheKey) -> bool + Send + Sync>;

/// How long a purge waits for its files to be removed before it answers (a hung disk
/// must not hang the admin request; the keys are gone from the index already).
const PURGE_WAIT: Duration = Duration::from_secs(10);

/// Disk reads in progress at once (each on a blocking thread); more wait, up to
/// [`READ_DEADLINE`], then are misses. A hung disk holds at most this many threads.
pub(crate) const READ_SLOTS: usize = 32;
/// How long a read may take to open a file or to bring its next block (a busy disk
/// takes milliseconds); past it the disk is taken to be hung.
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Responses sent from their file at once ([`FromFile`]), each holding the file open
/// until it is sent; more are read into memory the usual way. Within the room
/// `crate::server::fds_needed` leaves for files.
pub(crate) const FILE_SENDS: usize = 256;
/// Disk writes in progress at once (each on a blocking thread); more wait, holding their
/// share of the write budget. A hung disk holds at most this many threads with writes.
pub(crate) const WRITE_SLOTS: usize = 4;
/// How long a write of one file may take (objects are up to `max_object_size`, so this
/// is more generous than [`READ_DEADLINE`]); past it the disk is taken to be hung.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// An object read back from disk whole.
pub struct Loaded {
    pub meta: ObjectMeta,
    pub body: Pieces,
    /// When it was fetched or last revalidated, on the cache's wall clock.
    pub stored: SystemTime,
}

/// An object being read from disk: its header and first block are checked, the rest of
/// the body follows from [`Rest`].
pub struct Reading {
    pub meta: ObjectMeta,
    /// When it was fetched or last revalidated, on the cache's wall clock.
    pub stored: SystemTime,
    /// The body's first block, checked (the whole body when `rest` is `None`).
    pub first: Bytes,
    pub rest: Option<Rest>,
    /// The whole body's share of `fill_memory`, taken before its first block was read.
    pub budget: OwnedSemaphorePermit,
}

impl Reading {
    /// The rest of the body read too (for a copy that is revalidated or rendered, not
    /// streamed); `None` if a block of it is bad.
    pub async fn whole(self) -> Option<Loaded> {
        let mut pieces = vec![self.first];
        if let Some(rest) = self.rest {
            pieces.extend(rest.collect().await?);
        }
        Some(Loaded {
            meta: self.meta,
            body: Pieces::new(pieces),
            stored: self.stored,
        })
    }
}

/// How a streamed read ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A block failed its check, or did not come within [`READ_DEADLINE`]: the body's
    /// first `good` bytes were handed on, and no more will be.
    At { good: u64 },
    /// The reading thread died, after handing on an unknown number of bytes.
    Lost,
}

/// The blocks of a file after the first, still to be read.
pub struct Rest {
    opened: Opened,
    tier: Arc<DiskTier>,
    key: CacheKey,
    /// One of [`READ_SLOTS`], held until the file is read to its end.
    _slot: OwnedSemaphorePermit,
}

/// How far a streamed read got, shared by its thread and its watchdog.
struct Handed {
    /// Bytes of the body handed on so far.
    good: u64,
    /// The watchdog gave up: the thread hands nothing more on.
    abandoned: bool,
}

impl Rest {
    /// Reads the remaining blocks on the blocking pool, handing each to `each` as soon as
    /// it is checked, except the last, which is returned (so that the caller can store
    /// the object before its readers have every byte). A bad block ends the read (the
    /// file is removed), and so does a block that does not come within
    /// [`READ_DEADLINE`] (reads then pause: the disk is taken to be hung).
    pub async fn stream(
        mut self,
        mut each: impl FnMut(Bytes) + Send + 'static,
    ) -> Result<Bytes, Cut> {
        // Blocks the page cache holds are read here, on the worker, one per turn; from
        // the first that is not (or is bad), on the blocking pool, which reads it again.
        while self.tier.reads_from_memory.load(Ordering::Relaxed) {
            match self.opened.next_block(Wait::No) {
                Some(Ok(last)) if self.opened.done() => return Ok(last),
                Some(Ok(block)) => each(block),
                _ => break,
            }
            tokio::task::yield_now().await;
        }
        let (tier, key) = (self.tier.clone(), self.key.clone());
        let start = self.opened.position();
        let handed = Arc::new(Mutex::new(Handed {
            good: start,
            abandoned: false,
        }));
        let shared = handed.clone();
        let mut read = tokio::task::spawn_blocking(move || {
            let Rest {
                mut opened,
                tier,
                key,
                _slot,
            } = self;
            let mut last = Bytes::new();
            loop {
                let good = opened.position();
                let Some(block) = opened.next_block(Wait::Yes) else {
                    return Ok(last);
                };
                match block {
                    Ok(b) if opened.done() => last = b,
                    Ok(b) => {
                        // Under the lock, so that nothing is handed on once the
                        // watchdog has said where the body was cut.
                        let mut h = lock(&shared);
                        if h.abandoned {
                            return Err(Cut::Lost);
                        }
                        each(b);
                        h.good = opened.position();
                    }
                    Err(e) => {
                        tier.unusable(&key, &e);
                        return Err(Cut::At { good });
                    }
                }
            }
        });
        // The watchdog: a deadline that passes without a block handed on ends the read.
        let mut seen = start;
        loop {
            match tokio::time::timeout(READ_DEADLINE, &mut read).await {
                Ok(joined) => return joined.unwrap_or(Err(Cut::Lost)),
                Err(_) => {
                    let mut h = lock(&handed);
                    if h.good == seen {
                        h.abandoned = true;
                        tier.read_stalled(&key);
                        return Err(Cut::At { good: h.good });
                    }
                    seen = h.good;
                }
            }
        }
    }

    /// Every remaining block; `None` if one is bad (the file is then removed).
    async fn collect(self) -> Option<Vec<Bytes>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let last = self
            .stream(move |block| {
                let _ = tx.send(block);
            })
            .await
            .ok()?;
        let mut blocks: Vec<Bytes> = rx.try_iter().collect();
        blocks.push(last);
        Some(blocks)
    }
}
/// 4 KiB blocks: what a file takes on disk, as `max_size` counts it.
fn on_disk(file_len: u64) -> u32 {
    u32::try_from(file_len.div_ceil(4096) * 4096).unwrap_or(u32::MAX)
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
    /// Purges made while the loader runs: the files they select that it finds later are
    /// removed, not indexed. Emptied, under this lock, when `loaded` turns `true`.
    purged_while_loading: Mutex<Vec<Pick>>,
    /// In KiB, like `fill_memory`.
    write_budget: Arc<Semaphore>,
    /// [`READ_SLOTS`] reads at once.
    read_slots: Arc<Semaphore>,
    /// [`FILE_SENDS`].
    file_sends: Arc<Semaphore>,
    /// [`WRITE_SLOTS`] writes at once.
    write_slots: Arc<Semaphore>,
    /// Keeps each key's writes landing in the order they were offered.
    landings: Arc<Landings>,
    writes: Health,
    reads: Health,
    /// Whether reads are first tried on the async worker, from memory ([`Wait::No`]);
    /// turned off for good where the kernel or file system cannot.
    reads_from_memory: AtomicBool,
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
            purged_while_loading: Mutex::new(Vec::new()),
            write_budget: Arc::new(Semaphore::new(kib(WRITE_BUDGET) as usize)),
            read_slots: Arc::new(Semaphore::new(READ_SLOTS)),
            file_sends: Arc::new(Semaphore::new(FILE_SENDS)),
            write_slots: Arc::new(Semaphore::new(WRITE_SLOTS)),
            landings: Arc::default(),
            writes: Health::default(),
            reads: Health::default(),
            reads_from_memory: AtomicBool::new(true),
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
                    tier.finish_loading();
                }
            }
            Err(e) => {
                tier.failed("open", &e);
                tier.finish_loading();
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
        // Files of a format this version cannot read (a newer version's, after a
        // downgrade): removed, never misread; said once, below.
        let mut unknown: Option<(u64, String)> = None;
        let dirs = fs::read_dir(self.objects()).into_iter().flatten().flatten();
        for dir in dirs {
            for file in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let path = file.path();
                match file::open(&path, Wait::Yes) {
                    Ok(Some(opened)) => {
                        let key = opened.header.key();
                        // Checked and indexed under the lock, so that a purge either
                        // finds the key in the index or is here to be checked.
                        let purges = lock(&self.purged_while_loading);
                        let purged = purges.iter().any(|pick| pick(&key));
                        if !purged && object_path(&self.objects(), &key) == path {
                            self.index.insert(key, on_disk(opened.file_len()));
                            found += 1;
                            continue;
                        }
                        drop(purges);
                        let _ = fs::remove_file(&path);
                    }
                    Ok(None) => {}
                    Err(ReadError::Io(e)) => {
                        tracing::warn!(path = %path.display(), error = %e, "disk tier: cannot read a cache file");
                    }
                    Err(ReadError::UnknownFormat(version)) => {
                        let n = unknown.as_ref().map_or(0, |(n, _)| *n);
                        unknown = Some((n + 1, version));
                        let _ = fs::remove_file(&path);
                    }
                    Err(ReadError::Corrupt(_)) => {
                        let _ = fs::remove_file(&path);
                    }
                    // Only reads that may not wait fail so.
                    Err(ReadError::NotCached | ReadError::NoWaitUnsupported) => {}
                }
            }
        }
        if let Some((files, format)) = unknown {
            tracing::warn!(path = %self.root.display(), files, format, reads = "BFDISK01, BFDISK02", "disk tier: files of a format this version cannot read (written by a newer bucketfront) were removed; those objects start again from the origin");
        }
        self.index.run_pending_tasks();
        tracing::info!(
            path = %self.root.display(),
            objects = found,
            bytes = self.index.weighted_size(),
            ms = started.elapsed().as_millis() as u64,
            "disk tier loaded"
        );
        self.finish_loading();
    }

    /// Every file found at start is indexed (or there was nothing to index).
    fn finish_loading(&self) {
        let mut purges = lock(&self.purged_while_loading);
        self.loaded.send_replace(true);
        purges.clear();
    }

    /// Waits until the files found at start are indexed.
    pub async fn indexed(&self) {
        let mut loaded = self.loaded.subscribe();
        let _ = loaded.wait_for(|done| *done).await;
    }

    /// `key`'s object from disk: header and first block read and checked, from memory
    /// on this worker if the kernel has them, else on the blocking pool. `None` when
    /// there is no file, when it is corrupt (then removed), when `budget`
    /// (`fill_memory`) has no room for its body, or when the disk does not answer in
    /// time (no slot within [`READ_DEADLINE`], or no first block: then reads pause).
    pub async fn read(
        self: &Arc<Self>,
        key: &CacheKey,
        budget: &Arc<Semaphore>,
    ) -> Option<Reading> {
        if !self.index.contains_key(key) {
            // Not indexed: no file, unless the loader has not reached it yet (and no purge
            // made meanwhile selects it).
            if *self.loaded.borrow() {
                return None;
            }
            let purges = lock(&self.purged_while_loading);
            if *self.loaded.borrow() || purges.iter().any(|pick| pick(key)) {
                return None;
            }
        }
        let mut slot = match self.read_slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // All taken, by streamed reads that end within a few turns when their files
            // are warm: wait for one here rather than go to the blocking pool (which
            // would wait for one too, then cost two thread wake-ups).
            Err(_) if self.may_read_from_memory() => Some(self.read_slot().await?),
            Err(_) => None,
        };
        if slot.is_some()
            && let Ok(reading) = self.read_from_memory(key, budget, u64::MAX, &mut slot)
        {
            return reading;
        }
        if !self.reads.may_try() {
            return None;
        }
        // The slot waited for above, unless the try on the worker took it with it.
        let slot = match slot {
            Some(slot) => slot,
            None => self.read_slot().await?,
        };
        let (tier, owned_key, budget) = (self.clone(), key.clone(), budget.clone());
        let read = tokio::task::spawn_blocking(move || {
            let key = owned_key;
            let path = object_path(&tier.objects(), &key);
            let opened = match file::open(&path, Wait::Yes) {
                Ok(Some(opened)) => opened,
                Ok(None) => {
                    tier.index.invalidate(&key);
                    return None;
                }
                Err(e) => {
                    tier.unusable(&key, &e);
                    return None;
                }
            };
            if !tier.holds(&key, &opened) {
                return None;
            }
            match tier
                .clone()
                .first_block(opened, &key, &budget, &mut Some(slot), Wait::Yes)
            {
                Ok(reading) => reading,
                Err(e) => {
                    tier.unusable(&key, &e);
                    None
                }
            }
        });
        match tokio::time::timeout(READ_DEADLINE, read).await {
            Ok(joined) => {
                self.read_answered();
                joined.ok().flatten()
            }
            Err(_) => {
                // The thread stays blocked in the kernel; it holds its slot, nothing else.
                self.read_stalled(key);
                None
            }
        }
    }

    /// One of the [`READ_SLOTS`], waited for up to [`READ_DEADLINE`]; `None` past it.
    async fn read_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.read_slots.clone().acquire_owned();
        tokio::time::timeout(READ_DEADLINE, slot).await.ok()?.ok()
    }

    /// `key`'s object, read and checked on the calling worker, when that takes no wait
    /// and no more than one read: its file is indexed, the kernel holds it in memory, and
    /// its body is one block. `None` otherwise (not there, not in memory, larger, no
    /// `budget`, or bad), and [`DiskTier::read`] then does what it does.
    pub fn read_now(self: &Arc<Self>, key: &CacheKey, budget: &Arc<Semaphore>) -> Option<Reading> {
        // The index weighs whole files: one longer than a block and the largest header
        // is not opened only to be passed on.
        let weight = self.index.get(key)?;
        if u64::from(weight) > u64::from(BLOCK) + file::MAX_FILE_OVER_BODY {
            return None;
        }
        let mut slot = Some(self.read_slots.clone().try_acquire_owned().ok()?);
        self.read_from_memory(key, budget, u64::from(BLOCK), &mut slot)
            .ok()
            .flatten()
    }

    /// `key`'s object as one to send from its file, when its body's length is in `sizes`
    /// (at most [`WHOLE_FRAME`]) and its file is indexed and opened without waiting.
    /// `None` otherwise: the usual read then does what it does.
    pub(crate) fn sendable(
        self: &Arc<Self>,
        key: &CacheKey,
        sizes: &RangeInclusive<u64>,
    ) -> Option<FromFile> {
        // The index weighs whole files, a little more than their bodies: one whose body
        // is outside `sizes` is not opened only to be passed on (the usual read opens it).
        let weight = u64::from(self.index.get(key)?);
        if weight < *sizes.start()
            || weight > sizes.end().saturating_add(file::MAX_FILE_OVER_BODY)
            || !self.may_read_from_memory()
        {
            return None;
        }
        let opened = file::open(&object_path(&self.objects(), key), Wait::No)
            .ok()
            .flatten()?;
        let fits = sizes.contains(&opened.body_len()) && opened.body_len() <= WHOLE_FRAME as u64;
        // The index's `get` above marked the file recently used already: only whether it
        // is `key`'s is left to check (not `holds`, which would look it up again).
        if !fits || opened.header.key() != *key {
            return None;
        }
        let slot = self.file_sends.clone().try_acquire_owned().ok()?;
        let (header, send) = opened.into_send()?;
        Some(FromFile::new(&header, send, slot))
    }

    /// Whether `from`, `key`'s object, is in memory and good, every block checked on this
    /// worker ([`FromFile::check`]). A bad file is removed (the next read is a miss).
    pub(crate) async fn check_sendable(&self, key: &CacheKey, from: &FromFile) -> bool {
        match from.check().await {
            Ok(()) => true,
            Err(e) => {
                self.unusable(key, &e);
                false
            }
        }
    }

    /// Whether reads are tried on the async worker first: tests of what needs that skip
    /// where the kernel or file system cannot, and this says so when they do.
    #[cfg(test)]
    pub(crate) fn reads_without_waiting(&self) -> bool {
        let can = self.reads_from_memory.load(Ordering::Relaxed);
        if !can {
            eprintln!(
                "skipped: {} cannot be read without waiting",
                self.root.display()
            );
        }
        can
    }

    /// `key`'s object read whole and checked (for the benches; the cache streams a
    /// large one instead).
    pub async fn load(self: &Arc<Self>, key: &CacheKey, budget: &Arc<Semaphore>) -> Option<Loaded> {
        self.read(key, budget).await?.whole().await
    }

    /// `key`'s header and first block read on the calling async worker, from memory
    /// ([`Wait::No`]): a warm file is served without a round trip through the blocking
    /// pool (two thread wake-ups per hit). A body of more than one block takes `slot`,
    /// to hold until the file is read to its end; a read that fails leaves it, for the
    /// waiting read. `Ok(None)`: the file is there but the budget has no room. An error
    /// for whatever cannot be done without waiting (path or pages not in memory, the
    /// disk failing, a file to remove): the caller then reads the usual way. One block
    /// is at most [`BLOCK`] bytes to copy and check, some tens of µs. A body longer than
    /// `largest` is not read (`NotCached`).
    fn read_from_memory(
        self: &Arc<Self>,
        key: &CacheKey,
        budget: &Arc<Semaphore>,
        largest: u64,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Option<Reading>, ReadError> {
        if !self.may_read_from_memory() {
            return Err(ReadError::NotCached);
        }
        let path = object_path(&self.objects(), key);
        let read = file::open(&path, Wait::No).and_then(|opened| match opened {
            Some(opened) if opened.body_len() <= largest && self.holds(key, &opened) => self
                .clone()
                .first_block(opened, key, budget, slot, Wait::No),
            // No file (removed since it was indexed), or another key's: the waiting read
            // sorts the index out.
            _ => Err(ReadError::NotCached),
        });
        if let Err(ReadError::NoWaitUnsupported) = read
            && self.reads_from_memory.swap(false, Ordering::Relaxed)
        {
            tracing::info!(path = %self.root.display(), "disk tier: this kernel or file system cannot read without waiting; every read goes through the blocking pool");
        }
        read
    }

    /// Whether reads are tried on the async worker now: the kernel can, and reads are
    /// not paused.
    fn may_read_from_memory(&self) -> bool {
        self.reads_from_memory.load(Ordering::Relaxed) && !self.reads.is_failing()
    }

    /// Whether `opened` is `key`'s file (and not another key's with the same name
    /// prefix, 2^-128); if so the index marks it recently used.
    fn holds(&self, key: &CacheKey, opened: &Opened) -> bool {
        if opened.header.key() != *key {
            return false;
        }
        // `get` marks the file recently used (`contains_key` would not).
        if self.index.get(key).is_none() {
            self.index.insert(key.clone(), on_disk(opened.file_len()));
        }
        true
    }

    /// Takes the body's share of `budget` (`Ok(None)` when it has no room), then reads
    /// and checks `opened`'s first block; a body of more than one block takes `slot` too,
    /// until it is read to its end. A read stuck on a hung disk keeps its share until
    /// the disk answers.
    fn first_block(
        self: Arc<Self>,
        mut opened: Opened,
        key: &CacheKey,
        budget: &Arc<Semaphore>,
        slot: &mut Option<OwnedSemaphorePermit>,
        wait: Wait,
    ) -> Result<Option<Reading>, ReadError> {
        let Ok(budget) = kib_permit(budget, opened.body_len()) else {
            return Ok(None);
        };
        let first = opened.next_block(wait).transpose()?.unwrap_or_default();
        let meta = opened.header.meta(opened.body_len());
        let stored = opened.header.stored();
        let rest = if opened.done() {
            None
        } else {
            // Every caller brings a slot; without one, the usual read.
            let Some(slot) = slot.take() else {
                return Err(ReadError::NotCached);
            };
            Some(Rest {
                opened,
                tier: self,
                key: key.clone(),
                _slot: slot,
            })
        };
        Ok(Some(Reading {
            meta,
            stored,
            first,
            rest,
            budget,
        }))
    }

    /// A read that took longer than [`READ_DEADLINE`]: the disk is taken to be hung, and
    /// reads pause for [`RETRY_AFTER`] (memory and the origin answer meanwhile).
    fn read_stalled(&self, key: &CacheKey) {
        self.metrics.disk_read_errors.inc();
        if self.reads.failed() {
            tracing::warn!(path = %self.root.display(), bucket = %key.bucket, key = %key.key, deadline_ms = READ_DEADLINE.as_millis() as u64, retry_in_s = RETRY_AFTER.as_secs(), "disk tier: a read did not finish in time; reads paused, answering from memory and the origin");
        }
        self.show_health();
    }

    /// A read that finished in time (found or not).
    fn read_answered(&self) {
        if let Some(failed_for) = self.reads.recovered() {
            tracing::info!(path = %self.root.display(), failed_for_s = failed_for.as_secs(), "disk tier readable again");
            self.show_health();
        }
    }

    /// `bucketfront_disk_up`: 1 while both reads and writes work.
    fn show_health(&self) {
        let up = !self.reads.is_failing() && !self.writes.is_failing();
        self.metrics.disk_up.set(i64::from(up));
    }

    /// A file that could not be used: a corrupt one is removed (the object is fetched
    /// again and rewritten); a read error is only counted.
    fn unusable(&self, key: &CacheKey, e: &ReadError) {
        match e {
            ReadError::Corrupt(why) => {
                tracing::warn!(bucket = %key.bucket, key = %key.key, reason = why, "disk tier: corrupt file removed; fetching from the origin");
                self.metrics.disk_corrupt.inc();
                self.index.invalidate(key);
                let _ = fs::remove_file(object_path(&self.objects(), key));
            }
            ReadError::UnknownFormat(version) => {
                tracing::warn!(bucket = %key.bucket, key = %key.key, format = %version, "disk tier: a file of a format this version cannot read removed; fetching from the origin");
                self.index.invalidate(key);
                let _ = fs::remove_file(object_path(&self.objects(), key));
            }
            ReadError::Io(e) => {
                tracing::warn!(bucket = %key.bucket, key = %key.key, error = %e, "disk tier: read failed; fetching from the origin");
                self.metrics.disk_read_errors.inc();
            }
            // Only reads that may not wait fail so, and they are retried with waiting.
            ReadError::NotCached | ReadError::NoWaitUnsupported => {}
        }
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
        // Taken now, so that the order of offering is the order of landing.
        let ticket = self.landings.ticket(key);
        let (tier, body) = (self.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(slot) = tier.write_slots.clone().acquire_owned().await else {
                return;
            };
            let writer = tier.clone();
            let written = tokio::task::spawn_blocking(move || {
                // Both held until the file is written, however long a hung disk takes.
                let (_permit, _slot) = (permit, slot);
                match writer.write(&ticket, &header, &body) {
                    Ok(landed) => {
                        if landed.is_some() {
                            writer.unlink_evicted();
                            writer.metrics.disk_writes.inc();
                        }
                        writer.recovered();
                    }
                    Err(e) => writer.failed("write", &e),
                }
            });
            if tokio::time::timeout(WRITE_DEADLINE, written).await.is_err() {
                let stalled = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("a write took longer than {} s", WRITE_DEADLINE.as_secs()),
                );
                tier.failed("write", &stalled);
            }
        });
    }

    /// Writes the file under `tmp/`, then, if no newer write of its key or purge came
    /// meanwhile, renames it into place and indexes it: `Some(its length)`.
    fn write(&self, ticket: &Ticket, header: &Header, body: &Pieces) -> io::Result<Option<u64>> {
        let key = ticket.key();
        let target = object_path(&self.objects(), key);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp().join(format!("{}.{seq}", std::process::id()));
        let written = (|| {
            fs::create_dir_all(self.tmp())?;
            let len = file::write(&tmp, header, body)?;
            ticket.land(|| {
                if let Some(dir) = target.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::rename(&tmp, &target)?;
                self.index.insert(key.clone(), on_disk(len));
                Ok(len)
            })
        })();
        if !matches!(written, Ok(Some(_))) {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    fn may_write(&self) -> bool {
        self.writes.may_try()
    }

    /// A write (or the directory at start) failed: writes pause for [`RETRY_AFTER`].
    fn failed(&self, op: &'static str, e: &io::Error) {
        self.metrics.disk_write_errors.inc();
        if self.writes.failed() {
            tracing::warn!(path = %self.root.display(), op, error = %e, retry_in_s = RETRY_AFTER.as_secs(), "disk tier failing; caching in memory only");
        }
        self.show_health();
    }

    fn recovered(&self) {
        if let Some(failed_for) = self.writes.recovered() {
            tracing::info!(path = %self.root.display(), failed_for_s = failed_for.as_secs(), "disk tier writable again");
        }
        self.show_health();
    }

    /// Removes the files of the keys `selected` picks; returns their keys. While the
    /// loader still indexes the files found at start, the selection is kept and applied
    /// to what it finds, so no purge waits for it. The removals are waited for at most
    /// [`PURGE_WAIT`] (the keys leave the index at once).
    pub async fn purge(self: &Arc<Self>, selected: Pick) -> Vec<CacheKey> {
        {
            let mut purges = lock(&self.purged_while_loading);
            if !*self.loaded.borrow() {
                purges.push(selected.clone());
            }
        }
        // First, so that a write it selects that lands after the index is read below
        // is removed by it, and a write landing later does not land.
        let in_flight = self.landings.supersede(&*selected);
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
        let tier = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = fs::remove_file(p);
            }
            for (key, turn) in in_flight {
                // After a landing under way: it indexed the key and renamed its file.
                let _landed = lock(&turn);
                tier.index.invalidate(&key);
                let _ = fs::remove_file(tier.path_of(&key));
            }
        });
        if tokio::time::timeout(PURGE_WAIT, removed).await.is_err() {
            tracing::warn!(path = %self.root.display(), files = keys.len(), "disk tier: a purge's files are not removed yet (the disk is not answering); they are out of the index already");
        }
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
    // A variant's id and a partition other than the commercial one are hashed after the
    // object's parts, so objects keep the paths they had before variants and partitions.
    let parts = [key.provider.as_str(), &key.bucket, &key.key];
    let partition = (key.partition != Partition::Aws).then(|| key.partition.as_str());
    let hex = crate::cache::entry::digest_hex(
        parts
            .into_iter()
            .chain(key.variant.as_deref())
            .chain(partition),
        16,
    );
    objects.join(&hex[..2]).join(&hex[2..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::StoredFields;

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
            fields: StoredFields {
                content_type: Some("image/png".into()),
                etag: Some("\"e\"".into()),
                content_encoding: Some("gzip".into()),
                cache_control: Some("max-age=60".into()),
                ..StoredFields::default()
            },
            ..ObjectMeta::default()
        }
    }

    fn budget() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(1 << 20))
    }

    async fn load(t: &Arc<DiskTier>, k: &str) -> Option<Loaded> {
        t.load(&key(k), &budget()).await
    }

    /// A warm file is read on the async worker, header, first block and the rest: it
    /// all arrives while the runtime's only blocking thread is busy; and so does a read
    /// that had to wait for a read slot.
    #[test]
    fn a_file_in_memory_is_read_without_a_blocking_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let t = tier(dir.path(), 1 << 30);
            t.indexed().await;
            let body: Vec<u8> = (0..BLOCK + 7).map(|i| (i % 251) as u8).collect();
            write(&t, "a", &body, SystemTime::now()).await;
            assert!(load(&t, "a").await.is_some());
            if !t.reads_without_waiting() {
                return;
            }
            let (release, busy) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || {
                let _ = busy.recv();
            });
            // Were it waiting for the blocking pool, it would wait for `release`.
            let reading =
                tokio::time::timeout(Duration::from_secs(60), t.read(&key("a"), &budget()))
                    .await
                    .expect("read without the blocking pool")
                    .expect("found");
            assert_eq!(reading.first, body[..BLOCK as usize]);
            let whole = tokio::time::timeout(Duration::from_secs(60), reading.whole())
                .await
                .expect("the rest without the blocking pool")
                .expect("read");
            assert_eq!(whole.body.to_vec(), body);
            // Every read slot taken (as by streamed reads still under way): a read waits
            // for one, then reads on the worker all the same.
            let all = t.read_slots.clone().acquire_many_owned(READ_SLOTS as u32);
            let all = all.await.unwrap();
            let waiting = tokio::spawn({
                let t = t.clone();
                async move { t.read(&key("a"), &budget()).await.map(|r| r.first) }
            });
            tokio::task::yield_now().await;
            drop(all);
            let first = tokio::time::timeout(Duration::from_secs(60), waiting)
                .await
                .expect("read after a slot freed, without the blocking pool")
                .unwrap()
                .expect("found");
            assert_eq!(first, body[..BLOCK as usize]);
            drop(release);
            blocker.await.unwrap();
        });
    }

    /// `read_now` gives a warm one-block object whole, and nothing for an object of more
    /// blocks, one not on disk, or one whose budget has no room: those go through `read`.
    #[tokio::test]
    async fn read_now_gives_only_a_warm_object_of_one_block() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        t.indexed().await;
        let small: Vec<u8> = (0..BLOCK).map(|i| (i % 241) as u8).collect();
        let large: Vec<u8> = (0..BLOCK + 1).map(|i| (i % 239) as u8).collect();
        write(&t, "small", &small, SystemTime::now()).await;
        write(&t, "large", &large, SystemTime::now()).await;
        // Warm: read once the usual way.
        assert!(load(&t, "small").await.is_some());
        assert!(load(&t, "large").await.is_some());
        if !t.reads_without_waiting() {
            return;
        }
        let got = t
            .read_now(&key("small"), &budget())
            .expect("warm, one block");
        assert!(got.rest.is_none());
        assert_eq!(got.first, small);
        assert_eq!(got.meta.size, small.len() as u64);
        assert!(t.read_now(&key("large"), &budget()).is_none());
        assert!(t.read_now(&key("absent"), &budget()).is_none());
        let full = Arc::new(Semaphore::new(0));
        assert!(t.read_now(&key("small"), &full).is_none());
        // The usual read still serves what `read_now` declines.
        let whole = load(&t, "large").await.expect("read");
        assert_eq!(whole.body.to_vec(), large);
    }

    /// A file is sent as it is only when warm, of a body length the caller asks for, and
    /// of one frame at most (a stand-in covers no more: a longer body would be cut).
    #[tokio::test]
    async fn sendable_gives_a_warm_object_of_the_sizes_asked_and_never_past_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        t.indexed().await;
        let one = vec![3u8; BLOCK as usize];
        let over = vec![4u8; WHOLE_FRAME + 1];
        write(&t, "one", &one, SystemTime::now()).await;
        write(&t, "over", &over, SystemTime::now()).await;
        assert!(load(&t, "one").await.is_some());
        assert!(load(&t, "over").await.is_some());
        if !t.reads_without_waiting() {
            return;
        }
        let any = 0..=u64::MAX;
        let from = t.sendable(&key("one"), &any).expect("warm, one frame");
        assert_eq!(from.meta.size, one.len() as u64);
        drop(from);
        let below = 0..=u64::from(BLOCK) - 1;
        assert!(
            t.sendable(&key("one"), &below).is_none(),
            "not a size asked"
        );
        assert!(t.sendable(&key("over"), &any).is_none(), "past one frame");
        assert!(t.sendable(&key("absent"), &any).is_none());
    }

    /// After a downgrade, files a newer version wrote (another format) are removed at
    /// start, never read as objects; files of this format stay.
    #[tokio::test]
    async fn files_of_a_format_this_version_cannot_read_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        t.indexed().await;
        let stored = SystemTime::now();
        write(&t, "newer", b"written by a newer version", stored).await;
        write(&t, "ours", b"written by this version", stored).await;
        let newer = t.path_of(&key("newer"));
        drop(t);
        let mut raw = fs::read(&newer).unwrap();
        raw[..8].copy_from_slice(b"BFDISK03");
        fs::write(&newer, &raw).unwrap();
        let t = tier(dir.path(), 1 << 30);
        t.indexed().await;
        assert!(!newer.exists(), "removed");
        assert!(load(&t, "newer").await.is_none());
        assert_eq!(
            load(&t, "ours").await.unwrap().body.to_vec(),
            b"written by this version"
        );
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
        let got = load(&t, "a").await.expect("found after reopen");
        let bytes: Vec<u8> = got.body.range(0, got.body.len()).concat();
        assert_eq!(bytes, body);
        assert_eq!(got.meta.fields.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(got.meta.size, body.len() as u64);
        assert_eq!(got.stored, stored);
        assert!(load(&t, "b").await.is_none());

        // A flipped byte in the body: a miss, and the file is gone.
        let path = t.path_of(&key("a"));
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - 1000;
        raw[at] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(load(&t, "a").await.is_none());
        assert!(!path.exists());
        assert_eq!(t.metrics.disk_corrupt.get(), 1);

        // A truncated file: a miss too.
        write(&t, "a", &body, stored).await;
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(raw.len() as u64 / 2).unwrap();
        assert!(load(&t, "a").await.is_none());
        assert_eq!(t.metrics.disk_corrupt.get(), 2);
    }

    /// A large object streams block by block; a bad block ends the stream after the
    /// good ones, says where, and removes the file.
    #[tokio::test]
    async fn a_large_object_streams_and_a_bad_block_cuts_it_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let block = BLOCK as usize;
        let body: Vec<u8> = (0..3 * block + 10).map(|i| (i % 249) as u8).collect();
        let t = tier(dir.path(), 1 << 30);
        let stored = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        write(&t, "big", &body, stored).await;

        let streamed = |t: Arc<DiskTier>| async move {
            let reading = t.read(&key("big"), &budget()).await.expect("on disk");
            assert_eq!(reading.first.len(), block);
            let (tx, rx) = std::sync::mpsc::channel();
            let end = reading
                .rest
                .expect("more blocks")
                .stream(move |b| tx.send(b).unwrap())
                .await;
            let handed: Vec<u8> = rx.try_iter().flat_map(|b| b.to_vec()).collect();
            (reading.first, handed, end)
        };
        let (first, handed, end) = streamed(t.clone()).await;
        let last = end.expect("every block good");
        assert_eq!([&first[..], &handed, &last].concat(), body);
        assert_eq!(last.len(), 10, "the last block is returned, not handed on");

        let path = t.path_of(&key("big"));
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - 10 - block + 7;
        raw[at] ^= 4;
        fs::write(&path, &raw).unwrap();
        let (first, handed, end) = streamed(t.clone()).await;
        assert_eq!(
            end,
            Err(Cut::At {
                good: 2 * block as u64
            })
        );
        assert_eq!([&first[..], &handed].concat(), body[..2 * block]);
        assert!(!path.exists());
        assert_eq!(t.metrics.disk_corrupt.get(), 1);
    }

    /// A named pipe in place of a file: opening it for reading blocks until someone
    /// opens it for writing, as a read from a hung disk blocks.
    fn mkfifo(path: &Path) {
        let _ = fs::remove_file(path);
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success());
    }

    /// A read whose file does not open (the disk hangs) is given up after
    /// [`READ_DEADLINE`] and counted; reads then pause, taking no slot, while the hung
    /// one keeps only its own.
    #[tokio::test]
    async fn a_read_that_hangs_is_given_up_and_reads_pause() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        write(&t, "a", b"some bytes", SystemTime::now()).await;
        let path = t.path_of(&key("a"));
        mkfifo(&path);
        assert!(t.read(&key("a"), &budget()).await.is_none());
        assert_eq!(t.metrics.disk_read_errors.get(), 1);
        assert_eq!(t.metrics.disk_up.get(), 0);
        assert_eq!(t.read_slots.available_permits(), READ_SLOTS - 1);
        assert!(t.read(&key("a"), &budget()).await.is_none());
        assert_eq!(t.read_slots.available_permits(), READ_SLOTS - 1, "paused");
        assert_eq!(t.metrics.disk_read_errors.get(), 1);
        // The disk answers at last (an empty file: corrupt), and the thread ends.
        // Non-blocking: with no reader left, this open fails instead of waiting for one.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
    }

    /// The disk answers, when dropped (also when a test fails, so that the runtime's
    /// blocking threads end): every pipe is opened by a reader, which wakes a writer
    /// blocked on it (or lets one that opens now write at once), then removed, so that
    /// a write not yet started makes a plain file; the readers close last.
    struct Unblocked(Vec<PathBuf>);

    impl Drop for Unblocked {
        fn drop(&mut self) {
            use std::os::unix::fs::OpenOptionsExt;
            let _readers: Vec<fs::File> = self
                .0
                .iter()
                .filter_map(|p| {
                    let reader = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(p);
                    let _ = fs::remove_file(p);
                    reader.ok()
                })
                .collect();
        }
    }

    /// Writes to a hung disk (here each next temporary file a named pipe nobody reads:
    /// creating it blocks, as a write to a stalled volume does) hold at most
    /// [`WRITE_SLOTS`] blocking threads, so the rest of the process still gets one; after
    /// [`WRITE_DEADLINE`] writes pause and new objects stay in memory only.
    #[test]
    fn writes_to_a_hung_disk_hold_at_most_their_slots() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(WRITE_SLOTS + 1)
            .start_paused(true)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let t = tier(dir.path(), 1 << 30);
            let offers = 3 * WRITE_SLOTS;
            let pipes: Vec<PathBuf> = (0..offers)
                .map(|seq| t.tmp().join(format!("{}.{seq}", std::process::id())))
                .collect();
            pipes.iter().for_each(|p| mkfifo(p));
            let pipes = Unblocked(pipes);
            let pieces = Pieces::new(vec![Bytes::from_static(b"some bytes")]);
            for i in 0..offers {
                t.offer(&key(&format!("k{i}")), &meta(), &pieces, SystemTime::now());
            }
            // Until as many writes have started as may run at once (each takes its
            // temporary file's number first, then blocks on the pipe).
            while t.tmp_seq.load(Ordering::Relaxed) < WRITE_SLOTS as u64 {
                tokio::task::yield_now().await;
            }
            // Waited for on this thread, with the clock paused: only a free blocking
            // thread can answer (60 s is a bound for a call that takes microseconds).
            let (tx, rx) = std::sync::mpsc::channel();
            drop(tokio::task::spawn_blocking(move || tx.send(())));
            assert!(
                rx.recv_timeout(Duration::from_secs(60)).is_ok(),
                "a blocking thread is left for the rest of the process"
            );
            tokio::time::advance(WRITE_DEADLINE + Duration::from_secs(1)).await;
            while t.metrics.disk_up.get() != 0 {
                tokio::task::yield_now().await;
            }
            assert!(t.metrics.disk_write_errors.get() >= 1);
            t.offer(&key("later"), &meta(), &pieces, SystemTime::now());
            assert_eq!(t.metrics.disk_writes_skipped.get(), 1, "writes paused");
            drop(pipes);
            t.flush().await;
        });
    }

    /// A block that does not come (the rest of a file behind a pipe that stops giving,
    /// as a hung disk does) cuts the streamed read where the handed-on bytes end; when
    /// the disk answers again, the reading thread hands nothing more on.
    #[tokio::test]
    async fn a_block_that_does_not_come_cuts_the_stream_and_nothing_follows() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        let block = BLOCK as usize;
        let body: Vec<u8> = (0..3 * block + 10).map(|i| (i % 247) as u8).collect();
        write(&t, "big", &body, SystemTime::now()).await;
        let raw = fs::read(t.path_of(&key("big"))).unwrap();
        let pipe = dir.path().join("pipe");
        mkfifo(&pipe);
        // The file up to the end of its second block, then nothing until `go`.
        let until = raw.len() - body.len() + 2 * block;
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn({
            let pipe = pipe.clone();
            move || {
                let mut w = fs::OpenOptions::new().write(true).open(&pipe).unwrap();
                w.write_all(&raw[..until]).unwrap();
                let _ = wait.recv();
                // The reader takes one block more and closes: the end is refused.
                let _ = w.write_all(&raw[until..]);
            }
        });
        let mut opened = tokio::task::spawn_blocking(move || file::open_pipe(&pipe))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let first = opened.next_block(Wait::Yes).unwrap().unwrap();
        assert_eq!(first[..], body[..block]);
        let rest = Rest {
            opened,
            tier: t.clone(),
            key: key("big"),
            _slot: t.read_slots.clone().try_acquire_owned().unwrap(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let end = rest.stream(move |b| tx.send(b).unwrap()).await;
        assert_eq!(
            end,
            Err(Cut::At {
                good: 2 * block as u64
            })
        );
        assert_eq!(t.metrics.disk_read_errors.get(), 1);
        go.send(()).unwrap();
        // `rx` ends when the thread has ended (and dropped its sender).
        let handed: Vec<Bytes> = tokio::task::spawn_blocking(move || rx.iter().collect())
            .await
            .unwrap();
        assert_eq!(
            handed.len(),
            1,
            "the second block, and nothing after the cut"
        );
        assert_eq!(handed[0][..], body[block..2 * block]);
        writer.join().unwrap();
    }

    /// A purge made while the start-up index is still loading (here the loader is held
    /// up by a named pipe, as by a hung disk) answers without waiting for it, and still
    /// removes every file it selects, whether the loader had reached it or not.
    #[tokio::test]
    async fn a_purge_while_the_index_loads_waits_for_nothing_and_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        let names: Vec<String> = (0..10)
            .flat_map(|i| [format!("cats/{i}"), format!("dogs/{i}")])
            .collect();
        for k in &names {
            write(&t, k, k.as_bytes(), SystemTime::now()).await;
        }
        drop(t);
        let pipe = dir.path().join("objects").join("00").join("pipe");
        fs::create_dir_all(pipe.parent().unwrap()).unwrap();
        mkfifo(&pipe);

        let t = tier(dir.path(), 1 << 30);
        let cats: Pick = Arc::new(|k| k.key.starts_with("cats/"));
        t.purge(cats).await;
        assert!(!*t.loaded.borrow(), "the loader cannot pass the pipe yet");
        assert!(load(&t, "cats/3").await.is_none(), "purged, indexed or not");
        assert!(
            load(&t, "dogs/3").await.is_some(),
            "on disk, indexed or not"
        );
        // The pipe gives an empty file (corrupt, removed); the loader goes on.
        let writer = std::thread::spawn(move || {
            drop(fs::OpenOptions::new().write(true).open(&pipe));
        });
        t.indexed().await;
        writer.join().unwrap();
        for k in &names {
            let on_disk = t.path_of(&key(k)).exists();
            assert_eq!(on_disk, k.starts_with("dogs/"), "{k}");
        }
        t.index.run_pending_tasks();
        assert_eq!(t.index.entry_count(), 10);
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
        assert!(load(&t, "29").await.is_some());
        assert!(load(&t, "0").await.is_none());
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
        assert!(load(&t, "a").await.is_none());
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
        let cats: Pick = Arc::new(|k| k.key.starts_with("cats/"));
        assert_eq!(t.purge(cats).await.len(), 2);
        assert!(!t.path_of(&key("cats/1")).exists());
        assert!(t.path_of(&key("dogs/1")).exists());
        assert!(t.read(&key("cats/2"), &budget()).await.is_none());
    }

    /// Offers `old`, whose write hangs on its temporary file (a named pipe nobody reads
    /// yet), and waits until it has started; returns the pipe.
    async fn offer_a_write_that_hangs(t: &Arc<DiskTier>, k: &str, old: &'static [u8]) -> Unblocked {
        t.indexed().await;
        let seq = t.tmp_seq.load(Ordering::Relaxed);
        let pipe = t.tmp().join(format!("{}.{seq}", std::process::id()));
        fs::create_dir_all(t.tmp()).unwrap();
        mkfifo(&pipe);
        let pipe = Unblocked(vec![pipe]);
        t.offer(
            &key(k),
            &meta(),
            &Pieces::new(vec![Bytes::from_static(old)]),
            SystemTime::now(),
        );
        while t.tmp_seq.load(Ordering::Relaxed) == seq {
            tokio::task::yield_now().await;
        }
        pipe
    }

    /// Lets the hung write go on: its pipe is read to the end.
    fn drain(pipe: &Unblocked) -> std::thread::JoinHandle<Vec<u8>> {
        let pipe = pipe.0[0].clone();
        std::thread::spawn(move || fs::read(pipe).unwrap())
    }

    /// Two writes of one key (a fill, then its rewrite after a `304`) where the older
    /// finishes last: the newer one's file is what stays, and what a restart finds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_newest_write_of_a_key_stays_though_an_older_one_finishes_last() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        let pipe = offer_a_write_that_hangs(&t, "k", b"older").await;
        let newer = Pieces::new(vec![Bytes::from_static(b"newer bytes")]);
        t.offer(&key("k"), &meta(), &newer, SystemTime::now());
        while !t.index.contains_key(&key("k")) {
            tokio::task::yield_now().await;
        }
        let drained = drain(&pipe);
        t.flush().await;
        assert!(
            !drained.join().unwrap().is_empty(),
            "the older write went on"
        );
        let path = t.path_of(&key("k"));
        assert!(
            fs::metadata(&path).unwrap().is_file(),
            "the older write's file did not replace it"
        );
        assert_eq!(load(&t, "k").await.unwrap().body.to_vec(), b"newer bytes");
        assert_eq!(t.metrics.disk_writes.get(), 1, "one write landed");
        assert_eq!(
            fs::read_dir(t.tmp()).unwrap().count(),
            0,
            "the older one's file is gone"
        );
        drop(t);
        let restarted = tier(dir.path(), 1 << 30);
        restarted.indexed().await;
        assert_eq!(
            load(&restarted, "k").await.unwrap().body.to_vec(),
            b"newer bytes"
        );
    }

    /// A purge while an object's first write is still under way (not yet indexed): the
    /// write does not land, so the purged object does not come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_a_purge_overtook_does_not_bring_the_object_back() {
        let dir = tempfile::tempdir().unwrap();
        let t = tier(dir.path(), 1 << 30);
        let pipe = offer_a_write_that_hangs(&t, "cats/1", b"purged").await;
        let cats: Pick = Arc::new(|k| k.key.starts_with("cats/"));
        t.purge(cats).await;
        let drained = drain(&pipe);
        t.flush().await;
        assert!(!drained.join().unwrap().is_empty(), "the write went on");
        assert!(!t.path_of(&key("cats/1")).exists());
        assert!(load(&t, "cats/1").await.is_none());
        t.offer(
            &key("cats/1"),
            &meta(),
            &Pieces::new(vec![Bytes::from_static(b"again")]),
            SystemTime::now(),
        );
        t.flush().await;
        assert_eq!(
            load(&t, "cats/1").await.unwrap().body.to_vec(),
            b"again",
            "a write offered after the purge lands"
        );
    }
}
