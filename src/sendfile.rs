//! Bodies that a plain HTTP/1 connection sends straight from a file with `sendfile(2)`:
//! the disk tier's hits, whose bytes then never pass through user memory on the way out
//! (BENCHMARKS.md, "Disk-tier hits sent from their file").
//!
//! hyper writes only bytes it holds, so such a body hands it *stand-ins*: views of
//! [`FILLER`], a static run of zeros that is never sent, each of the length of a part of
//! the file (a [`Span`]) that the body has checked against its CRC32C and queued on the
//! connection's [`Spans`] in the same order. hyper keeps counting, framing and bounding
//! the response as for any other body; when it writes, the connection's socket wrapper
//! finds a stand-in among the buffers by its address and sends the span it stands for
//! instead. This holds because hyper's HTTP/1 writer queues body buffers as they are (it
//! copies them only for a connection that cannot write vectored, which a TCP socket can);
//! a stand-in without its span, or of another length, fails the connection rather than
//! send a zero. TLS and h2 connections have no `Spans`: their disk hits are read into
//! memory as before.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::WHOLE_FRAME;

/// What a stand-in is a view of: never sent, never written, so it costs no memory.
static FILLER: [u8; WHOLE_FRAME] = [0; WHOLE_FRAME];

/// A part of a file, checked and due to be sent.
pub(crate) struct Span {
    file: Arc<File>,
    /// Where the part starts in the file.
    at: u64,
    len: usize,
    /// What bounds the files open for sending, held until the part is sent (or the
    /// connection is dropped): a client that reads slowly holds one file, not more.
    _slot: OwnedSemaphorePermit,
}

impl Drop for Span {
    fn drop(&mut self) {
        // Closing the last handle of a file the disk tier removed meanwhile frees its
        // blocks, which may wait for the disk: that close goes to the blocking pool.
        let removed = || {
            let meta = self.file.metadata();
            meta.is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0)
        };
        if Arc::strong_count(&self.file) == 1
            && removed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let file = self.file.clone();
            runtime.spawn_blocking(move || drop(file));
        }
    }
}

/// One connection's spans, in the order their stand-ins were handed to hyper.
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<VecDeque<Span>>>);

impl Spans {
    /// Queues `len` bytes of `file` from `at` (at most [`WHOLE_FRAME`]), holding `slot`
    /// until they are sent, and returns their stand-in for hyper.
    pub(crate) fn stand_in(
        &self,
        file: Arc<File>,
        at: u64,
        len: usize,
        slot: OwnedSemaphorePermit,
    ) -> Bytes {
        let len = len.min(WHOLE_FRAME);
        self.lock().push_back(Span {
            file,
            at,
            len,
            _slot: slot,
        });
        Bytes::from_static(&FILLER[..len])
    }

    /// What the stand-in `slice`, the first buffer of a write, stands for: the file, and
    /// where its bytes start in it (the rest of the span due next; `slice.len()` bytes).
    /// An error when it is not a stand-in, or does not match that span.
    pub(crate) fn resolve(&self, slice: &[u8]) -> std::io::Result<(Arc<File>, u64)> {
        let spans = self.lock();
        match (offset_in_filler(slice), spans.front()) {
            // hyper passes what is left of a buffer whole: a stand-in `into` bytes in is
            // the rest of the span due next.
            (Some(into), Some(span)) if into + slice.len() == span.len => {
                Ok((span.file.clone(), span.at + into as u64))
            }
            _ => Err(std::io::Error::other(
                "a file body's stand-in does not match the span due next",
            )),
        }
    }

    /// `n` bytes of the front span were sent, up to `into + n` of it; it is done at its end.
    pub(crate) fn sent(&self, slice: &[u8], n: usize) {
        if n == slice.len() {
            self.lock().pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where `slice` starts in [`FILLER`], if it lies in it.
fn offset_in_filler(slice: &[u8]) -> Option<usize> {
    let base = FILLER.as_ptr() as usize;
    let at = (slice.as_ptr() as usize).checked_sub(base)?;
    (!slice.is_empty() && at + slice.len() <= FILLER.len()).then_some(at)
}

/// Whether `slice` is (part of) a stand-in.
pub(crate) fn is_stand_in(slice: &[u8]) -> bool {
    offset_in_filler(slice).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_resolve_to_their_spans_in_order_and_nothing_else_does() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let slot = || slots.clone().try_acquire_owned().unwrap();
        let spans = Spans::default();
        let a = spans.stand_in(file.clone(), 4096, 100, slot());
        let b = spans.stand_in(file.clone(), 10_000, 50, slot());
        assert_eq!(slots.available_permits(), 0);
        assert_eq!((a.len(), b.len()), (100, 50));
        // Bytes of their own, even zeros, are not stand-ins.
        assert!(!is_stand_in(&[0u8; 100]));
        assert!(spans.resolve(&[0u8; 100]).is_err());
        assert!(!is_stand_in(b"HTTP/1.1 200 OK\r\n"));
        // A partial write: the rest of `a` resolves 40 bytes further in.
        let (_, at) = spans.resolve(&a).unwrap();
        assert_eq!(at, 4096);
        spans.sent(&a, 40);
        let (_, at) = spans.resolve(&a[40..]).unwrap();
        assert_eq!(at, 4136);
        // `b` is not due yet: out of order is refused.
        assert!(spans.resolve(&b).is_err());
        spans.sent(&a[40..], 60);
        let (_, at) = spans.resolve(&b).unwrap();
        assert_eq!(at, 10_000);
        spans.sent(&b, 50);
        assert_eq!(slots.available_permits(), 2, "sent: their slots are free");
        // Nothing due: a stand-in now is refused, never sent as zeros.
        assert!(spans.resolve(&b).is_err());
    }
}
