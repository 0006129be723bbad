//! One in-flight fill: a single upstream GET whose body is shared, as it arrives, by every
//! request for the same cold object.
//!
//! The fill task appends chunks to a [`watch`] channel's value; readers copy out chunks
//! by index and wait for the next change. The fill's end is explicit: `Complete` is set
//! only after exactly `Content-Length` bytes arrived (and the object was cached), so a
//! reader that reaches the end of the chunks without `Complete` and sees `Broken` (or
//! the task gone) fails its response instead of ending it cleanly. A short body can
//! therefore never be delivered as a whole one.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::{CacheStatus, Cached, Stamp};
use crate::error::Error;
use crate::object::ObjectMeta;

/// What the fill has learned so far about the response.
#[derive(Clone)]
pub enum Head {
    Pending,
    /// Headers arrived; the body follows in `chunks`. `MISS` (from the origin), `HIT`
    /// (from a disk file, block by block), or `BYPASS` for an object that will not be
    /// stored.
    Body(Arc<ObjectMeta>, CacheStatus, Stamp),
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

pub struct Progress {
    pub head: Head,
    pub chunks: Vec<Bytes>,
    pub end: End,
}

pub struct Fill {
    tx: watch::Sender<Progress>,
}

impl Fill {
    pub fn new() -> Arc<Fill> {
        let (tx, _) = watch::channel(Progress {
            head: Head::Pending,
            chunks: Vec::new(),
            end: End::Open,
        });
        Arc::new(Fill { tx })
    }

    pub fn set_head(&self, head: Head) {
        self.tx.send_modify(|p| p.head = head);
    }

    pub fn push(&self, chunk: Bytes) {
        self.tx.send_modify(|p| p.chunks.push(chunk));
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

    /// The pieces received so far (the whole object once `Complete`).
    pub fn pieces(&self) -> Vec<Bytes> {
        self.tx.borrow().chunks.clone()
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

    /// The whole body once the fill has ended, if it arrived complete.
    pub async fn whole(&self) -> Option<Vec<Bytes>> {
        let mut rx = self.tx.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                match p.end {
                    End::Complete => return Some(p.chunks.clone()),
                    End::Broken => return None,
                    End::Open => {}
                }
            }
            rx.changed().await.ok()?;
        }
    }

    /// The body bytes `[start, start + len)`, streamed as they arrive.
    pub fn reader(
        &self,
        start: u64,
        len: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let state = Reader {
            rx: self.tx.subscribe(),
            index: 0,
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
    index: usize,
    skip: u64,
    remaining: u64,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.remaining == 0 {
                return None;
            }
            {
                let p = self.rx.borrow_and_update();
                while self.index < p.chunks.len() {
                    let chunk = &p.chunks[self.index];
                    self.index += 1;
                    let len = chunk.len() as u64;
                    if self.skip >= len {
                        self.skip -= len;
                        continue;
                    }
                    let from = self.skip as usize;
                    let to = (self.skip + self.remaining).min(len) as usize;
                    self.skip = 0;
                    self.remaining -= (to - from) as u64;
                    return Some(Ok(chunk.slice(from..to)));
                }
                if p.end != End::Open {
                    // Chunks ran out before our range did: the body is short.
                    self.remaining = 0;
                    return Some(Err(broken()));
                }
            }
            if self.rx.changed().await.is_err() {
                self.remaining = 0;
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
        let whole = tokio::spawn(collect(fill.reader(0, 9)));
        let middle = tokio::spawn(collect(fill.reader(2, 5)));
        for c in ["abc", "def", "ghi"] {
            fill.push(Bytes::from_static(c.as_bytes()));
            tokio::task::yield_now().await;
        }
        fill.finish(End::Complete);
        assert_eq!(whole.await.unwrap().unwrap(), b"abcdefghi");
        assert_eq!(middle.await.unwrap().unwrap(), b"cdefg");
    }

    #[tokio::test]
    async fn a_short_body_is_an_error_not_an_end() {
        let fill = Fill::new();
        let r = tokio::spawn(collect(fill.reader(0, 10)));
        fill.push(Bytes::from_static(b"abc"));
        fill.finish(End::Broken);
        assert!(r.await.unwrap().is_err());
        // A late joiner of the broken fill fails too.
        assert!(collect(fill.reader(0, 10)).await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_fill_fails_its_readers() {
        let fill = Fill::new();
        let r = fill.reader(0, 10);
        fill.push(Bytes::from_static(b"abc"));
        drop(fill);
        assert!(collect(r).await.is_err());
    }
}
