//! One in-flight fill: a single upstream GET whose body is shared, as it arrives, by every
//! request for the same cold object.
//!
//! The fill task appends chunks to a [`watch`] channel's value; readers copy out chunks
//! by index and wait for the next change. The fill's end is explicit: `Complete` is set
//! only after the whole body arrived (exactly `Content-Length` bytes, or a body of
//! unknown length that ended cleanly) and the object was cached, so a reader that
//! reaches the end of the chunks without `Complete` and sees `Broken` (or the task gone)
//! fails its response instead of ending it cleanly. A short body can therefore never be
//! delivered as a whole one.
//!
//! A fill keeps every chunk until it ends (they become the cache entry), except one
//! whose body turned out larger than it may keep (a body of unknown length past
//! `max_object_size` or `fill_memory`): that one *forgets*, dropping the chunks every
//! registered reader has read, and its task waits while the slowest reader is more
//! than a window behind ([`Fill::make_room`]). Every request that joins a fill takes a
//! [`Place`] at once, before the head is known, so nothing it has not read is forgotten;
//! one that comes after anything was forgotten gets no place and fetches for itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Notify, watch};

use crate::cache::entry::{Cached, Stamp};
use crate::cache_status::CacheStatus;
use crate::error::Error;
use crate::object::ObjectMeta;

/// The head of an answer whose body streams through the fill.
#[derive(Clone)]
pub struct Streamed {
    pub meta: Arc<ObjectMeta>,
    /// `MISS` (from the origin), `HIT` (from a disk file, block by block), or `BYPASS`
    /// for an object that will not be stored.
    pub status: CacheStatus,
    pub stamp: Stamp,
    /// The body's length; `None` when the origin did not say (known at its end).
    pub length: Option<u64>,
}

/// What the fill has learned so far about the response.
#[derive(Clone)]
pub enum Head {
    Pending,
    /// Headers arrived; the body follows in `chunks`.
    Body(Streamed),
    /// A complete object without a body download (revalidated or stale).
    Ready(Arc<Cached>, CacheStatus),
    Failed(Error),
    /// Too large to cache: every request streams from the origin itself.
    Bypass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Open,
    Complete,
    Broken,
}

pub(crate) struct Progress {
    pub head: Head,
    chunks: VecDeque<Bytes>,
    /// How many chunks were dropped from the front (a fill that forgets).
    forgotten: usize,
    /// Whether readers must report their moves (the fill's task may be waiting on them).
    forgetting: bool,
    pub end: End,
}

pub struct Fill {
    tx: watch::Sender<Progress>,
    readers: Arc<Readers>,
}

/// The readers of a fill, as a fill that forgets needs to know them.
#[derive(Default)]
struct Readers {
    /// Each registered reader's position: the index of the next chunk it reads.
    at: Mutex<Vec<Weak<AtomicUsize>>>,
    /// A reader moved on or went away.
    moved: Notify,
}

/// What a fill that forgets holds after forgetting what it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Bytes the slowest reader has not read.
    pub bytes: u64,
    pub readers: usize,
}

impl Fill {
    pub fn new() -> Arc<Fill> {
        let (tx, _) = watch::channel(Progress {
            head: Head::Pending,
            chunks: VecDeque::new(),
            forgotten: 0,
            forgetting: false,
            end: End::Open,
        });
        Arc::new(Fill {
            tx,
            readers: Arc::default(),
        })
    }

    pub fn set_head(&self, head: Head) {
        self.tx.send_modify(|p| p.head = head);
    }

    pub fn push(&self, chunk: Bytes) {
        self.tx.send_modify(|p| p.chunks.push_back(chunk));
    }

    pub fn finish(&self, end: End) {
        self.tx.send_modify(|p| p.end = end);
    }

    /// The fill's task is gone: a head still pending becomes a failure and a body still
    /// open becomes broken, so every reader ends with an error instead of waiting.
    pub fn abandon(&self) {
        self.tx.send_if_modified(|p| {
            let mut changed = false;
            if matches!(p.head, Head::Pending) {
                p.head = Head::Failed(abandoned());
                changed = true;
            }
            if p.end == End::Open {
                p.end = End::Broken;
                changed = true;
            }
            changed
        });
    }

    /// Whether the body broke (a reader can only fail).
    pub fn is_broken(&self) -> bool {
        self.tx.borrow().end == End::Broken
    }

    /// Whether the fill forgets its chunks (its body is not kept, and a new reader
    /// cannot start).
    pub fn forgets(&self) -> bool {
        self.tx.borrow().forgetting
    }

    /// The pieces received so far (the whole object once `Complete`, unless forgotten).
    pub fn pieces(&self) -> Vec<Bytes> {
        self.tx.borrow().chunks.iter().cloned().collect()
    }

    /// From now on the fill forgets what every reader has read.
    pub fn forget(&self) {
        self.tx.send_modify(|p| p.forgetting = true);
    }

    /// Drops the chunks every registered reader has read.
    fn forget_read(&self) -> Held {
        let mut at = self.readers.at.lock().unwrap_or_else(|e| e.into_inner());
        at.retain(|w| w.strong_count() > 0);
        let slowest = at
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| p.load(Ordering::Acquire))
            .min();
        let mut held = 0;
        self.tx.send_if_modified(|p| {
            let upto = slowest.unwrap_or(p.forgotten + p.chunks.len());
            let n = upto.saturating_sub(p.forgotten).min(p.chunks.len());
            p.chunks.drain(..n);
            p.forgotten += n;
            held = p.chunks.iter().map(|c| c.len() as u64).sum();
            false
        });
        Held {
            bytes: held,
            readers: at.len(),
        }
    }

    /// For a fill that forgets: drops what every reader has read and waits while the
    /// slowest one has more than `window` bytes left to read. `false` once no reader is
    /// left (nobody to stream to).
    pub async fn make_room(&self, window: u64) -> bool {
        loop {
            let moved = self.readers.moved.notified();
            let held = self.forget_read();
            if held.readers == 0 {
                return false;
            }
            if held.bytes <= window {
                return true;
            }
            moved.await;
        }
    }

    /// Waits for the response head. A fill whose task died counts as a failure.
    pub async fn head(&self) -> Head {
        let mut rx = self.tx.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if !matches!(p.head, Head::Pending) {
                    return p.head.clone();
                }
            }
            if rx.changed().await.is_err() {
                return Head::Failed(abandoned());
            }
        }
    }

    /// The whole body once the fill has ended, if it arrived complete and was kept.
    pub async fn whole(&self) -> Option<Vec<Bytes>> {
        let mut rx = self.tx.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.forgetting {
                    return None;
                }
                match p.end {
                    End::Complete => return Some(p.chunks.iter().cloned().collect()),
                    End::Broken => return None,
                    End::Open => {}
                }
            }
            rx.changed().await.ok()?;
        }
    }

    /// A place among this fill's readers, taken when a request joins it (before its
    /// head is known), so that a fill that forgets never drops bytes a joined request
    /// has not read. `None` if the fill has already forgotten its first bytes: the
    /// request must fetch for itself.
    pub fn place(self: &Arc<Self>) -> Option<Place> {
        let at = Arc::new(AtomicUsize::new(0));
        // Under the lock `forget_read` takes: nothing is forgotten from under a place.
        let mut readers = self.readers.at.lock().unwrap_or_else(|e| e.into_inner());
        if self.tx.borrow().forgotten > 0 {
            return None;
        }
        readers.push(Arc::downgrade(&at));
        Some(Place {
            fill: self.clone(),
            seat: Seat {
                at,
                readers: self.readers.clone(),
            },
        })
    }
}

/// One request's place in a fill: its position among the readers, which the fill does
/// not forget past. Dropping it (a `HEAD`, a `304`, an error) lets the fill go on.
pub struct Place {
    fill: Arc<Fill>,
    seat: Seat,
}

/// A registered position: the index of the next chunk its holder reads.
struct Seat {
    at: Arc<AtomicUsize>,
    readers: Arc<Readers>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        // A fill waiting on its slowest reader may go on without this one.
        self.readers.moved.notify_one();
    }
}

impl Place {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// The body bytes `[start, start + len)` (with `len` `None`: from `start` to the
    /// body's end, whenever that comes), streamed as they arrive. The reader holds its
    /// seat, not the fill: a fill whose task is gone fails it.
    pub fn reader(
        self,
        start: u64,
        len: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let state = Reader {
            rx: self.fill.tx.subscribe(),
            seat: self.seat,
            skip: start,
            remaining: len,
        };
        futures_util::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })
    }
}

struct Reader {
    rx: watch::Receiver<Progress>,
    seat: Seat,
    skip: u64,
    /// `None`: up to the body's end.
    remaining: Option<u64>,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.remaining == Some(0) {
                return None;
            }
            {
                let p = self.rx.borrow_and_update();
                let at = &self.seat.at;
                let mut index = at.load(Ordering::Relaxed);
                while index < p.forgotten + p.chunks.len() {
                    // The fill never forgets past a place.
                    let chunk = &p.chunks[index - p.forgotten];
                    index += 1;
                    at.store(index, Ordering::Release);
                    if p.forgetting {
                        self.seat.readers.moved.notify_one();
                    }
                    let len = chunk.len() as u64;
                    if self.skip >= len {
                        self.skip -= len;
                        continue;
                    }
                    let from = self.skip as usize;
                    let to = self.remaining.map_or(len, |r| (self.skip + r).min(len)) as usize;
                    self.skip = 0;
                    if let Some(r) = &mut self.remaining {
                        *r -= (to - from) as u64;
                    }
                    return Some(Ok(chunk.slice(from..to)));
                }
                match p.end {
                    End::Open => {}
                    // A body of unknown length that ended whole.
                    End::Complete if self.remaining.is_none() => return None,
                    // Chunks ran out before our range did: the body is short.
                    End::Complete | End::Broken => {
                        self.remaining = Some(0);
                        return Some(Err(broken()));
                    }
                }
            }
            if self.rx.changed().await.is_err() {
                self.remaining = Some(0);
                return Some(Err(broken()));
            }
        }
    }
}

fn abandoned() -> Error {
    Error::new(
        crate::error::Kind::BadGateway,
        crate::error::Side::Internal,
        "the origin fetch was abandoned; try again",
    )
}

fn broken() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the origin body ended early",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(
        s: impl Stream<Item = Result<Bytes, std::io::Error>>,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_see_chunks_as_they_arrive_and_ranges() {
        let fill = Fill::new();
        let whole = tokio::spawn(collect(fill.place().unwrap().reader(0, Some(9))));
        let middle = tokio::spawn(collect(fill.place().unwrap().reader(2, Some(5))));
        let unsized_ = tokio::spawn(collect(fill.place().unwrap().reader(0, None)));
        for c in ["abc", "def", "ghi"] {
            fill.push(Bytes::from_static(c.as_bytes()));
            tokio::task::yield_now().await;
        }
        fill.finish(End::Complete);
        assert_eq!(whole.await.unwrap().unwrap(), b"abcdefghi");
        assert_eq!(middle.await.unwrap().unwrap(), b"cdefg");
        assert_eq!(unsized_.await.unwrap().unwrap(), b"abcdefghi");
    }

    #[tokio::test]
    async fn a_short_body_is_an_error_not_an_end() {
        let fill = Fill::new();
        let r = tokio::spawn(collect(fill.place().unwrap().reader(0, Some(10))));
        let open = tokio::spawn(collect(fill.place().unwrap().reader(0, None)));
        fill.push(Bytes::from_static(b"abc"));
        fill.finish(End::Broken);
        assert!(r.await.unwrap().is_err());
        assert!(
            open.await.unwrap().is_err(),
            "a body of unknown length that broke"
        );
        // A late joiner of the broken fill fails too.
        assert!(
            collect(fill.place().unwrap().reader(0, Some(10)))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_dropped_fill_fails_its_readers() {
        let fill = Fill::new();
        let r = fill.place().unwrap().reader(0, Some(10));
        fill.push(Bytes::from_static(b"abc"));
        drop(fill);
        assert!(collect(r).await.is_err());
    }

    /// A fill that forgets holds what its slowest reader has not read, waits while that
    /// is more than the window, and lets no reader start once its first bytes are gone.
    #[tokio::test]
    async fn a_forgetting_fill_holds_only_what_its_slowest_reader_has_not_read() {
        use futures_util::StreamExt;
        let fill = Fill::new();
        let mut fast = Box::pin(fill.place().unwrap().reader(0, None));
        let mut slow = Box::pin(fill.place().unwrap().reader(0, None));
        let idle = fill.place().unwrap();
        fill.forget();
        for c in [b"aaaa", b"bbbb", b"cccc"] {
            fill.push(Bytes::from_static(c));
        }
        for _ in 0..3 {
            fast.next().await.unwrap().unwrap();
        }
        assert_eq!(slow.next().await.unwrap().unwrap(), &b"aaaa"[..]);
        // A place taken but not read from (a request still building its answer) pins
        // the fill; once dropped, only the readers count.
        let room = tokio::spawn({
            let fill = fill.clone();
            async move { fill.make_room(8).await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished(), "waits for the idle place");
        drop(idle);
        assert!(room.await.unwrap());
        // 8 bytes unread by the slow reader: more than a 4-byte window.
        let room = tokio::spawn({
            let fill = fill.clone();
            async move { fill.make_room(4).await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished(), "waits for the slow reader");
        assert!(fill.place().is_none(), "a newcomer cannot start");
        assert_eq!(slow.next().await.unwrap().unwrap(), &b"bbbb"[..]);
        assert!(room.await.unwrap());
        assert_eq!(fill.pieces(), vec![Bytes::from_static(b"cccc")]);
        drop((fast, slow));
        assert!(!fill.make_room(4).await, "no reader left");
        assert!(
            fill.whole().await.is_none(),
            "a forgotten body is never whole"
        );
    }
}
