//! Disk-tier hits answered from their file (`crate::sendfile`): for a plain HTTP/1
//! client, an object the lookup picks (one block, from 128 KiB; anything up to one frame,
//! [`crate::body::WHOLE_FRAME`], would do) goes from the page cache to the socket with
//! `sendfile`, and is neither copied into memory nor kept in the memory tier (reading it
//! there was the copy that held disk hits to 0.8× nginx; BENCHMARKS.md).
//! The contract's check holds: every block is read into a scratch buffer the worker
//! reuses and checked against its CRC32C, one block per turn, before the answer is
//! chosen, so a bad block is a miss like any bad file, never a cut transfer. Only what
//! the kernel holds in memory is read so; anything else takes the usual way (the
//! blocking pool, then the memory tier), as do larger objects, which stream block by
//! block and can take the rest of a bad file from the origin.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;

use super::file::{Header, ReadError, ToSend, Wait};
use crate::object::ObjectMeta;
use crate::sendfile::Spans;

thread_local! {
    /// The block a worker checks (at most [`super::BLOCK`] bytes), kept for the next.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An object on disk whose file and header were read without waiting, to be sent from
/// the file once [`FromFile::check`] has passed.
pub struct FromFile {
    pub(crate) meta: Arc<ObjectMeta>,
    /// When it was fetched or last revalidated, on the cache's wall clock.
    pub(crate) stored: SystemTime,
    send: ToSend,
    /// One of the tier's [`super::FILE_SENDS`], held until the body is sent.
    slot: OwnedSemaphorePermit,
}

impl FromFile {
    pub(super) fn new(header: &Header, send: ToSend, slot: OwnedSemaphorePermit) -> FromFile {
        FromFile {
            meta: Arc::new(header.meta(send.body_len())),
            stored: header.stored(),
            send,
            slot,
        }
    }

    /// Reads every block on this worker, one per turn, and checks it; an error for the
    /// first that is not in memory ([`ReadError::NotCached`]) or not good.
    pub(super) async fn check(&self) -> Result<(), ReadError> {
        for index in 0..self.send.blocks() {
            if index > 0 {
                tokio::task::yield_now().await;
            }
            SCRATCH.with_borrow_mut(|s| self.send.check(index, Wait::No, s))?;
        }
        Ok(())
    }

    /// The body's `len` bytes from `start`: one stand-in, queued on `spans` when hyper
    /// first asks for the body (so after every response before it on the connection).
    pub(crate) fn body(
        self,
        spans: Spans,
        start: u64,
        len: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let file: Arc<File> = self.send.file.clone();
        let at = self.send.file_offset(start);
        let (len, slot) = (usize::try_from(len).unwrap_or(usize::MAX), self.slot);
        futures_util::stream::once(async move { Ok(spans.stand_in(file, at, len, slot)) })
    }
}
