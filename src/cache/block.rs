//! Large buffers written once, front to back, and shared as [`Bytes`] views while they
//! are still being written (a fill's readers see each piece as soon as it is complete),
//! laid out so that copies out of them stay fast.

use std::alloc::Layout;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;

use crate::body::WHOLE_FRAME;

/// The largest block (and so the largest piece of a cache entry).
pub(crate) const MAX_BLOCK: usize = WHOLE_FRAME;

/// Blocks of at least this many bytes start [`SKEW`] bytes into a page-aligned
/// allocation. Smaller ones from [`SMALL_SKEW_FROM`] start [`SMALL_SKEW`] bytes in: glibc
/// copies them with `rep movsb` too, but half a page would be a large share of their
/// memory.
const SKEW_FROM: usize = 16 * 1024;
/// glibc's `rep movsb` threshold on this CPU (about 2.1 KiB, measured): smaller blocks are
/// copied another way and keep an allocation of their exact size.
const SMALL_SKEW_FROM: usize = 2048;
/// Where a block of [`SMALL_SKEW_FROM`]..[`SKEW_FROM`] bytes starts in its allocation.
/// mimalloc's size classes from 2 to 16 KiB are multiples of 512 bytes, so its blocks of
/// those sizes (ours and rustls's record buffers alike) lie on a 512-byte grid: a 4 KiB
/// body and the record it was copied into had the same offset in their pages, and h2
/// copies a DATA frame's first 247 bytes into its own buffer (to make a 256-byte write),
/// so the rest went 14 bytes past its source: the slow window again, on every response
/// (5.7% of a 4 KiB TLS + h2 hit's samples). 64 bytes off that grid, neither that shift
/// nor a whole-record copy lands in it; a copy that does (a header block of one length
/// in 32) is the exception, not the rule.
const SMALL_SKEW: usize = 64;
/// Where a large block's bytes start within their first page. Copies out of a block
/// (rustls copies each TLS record's plaintext into a buffer of its own, just after the
/// 5-byte record header, and h2's 9-byte frame header) are `memcpy`s of up to 16 KiB,
/// which glibc does with `rep movsb`; on AMD Zen that runs about 13× slower when the
/// destination lies 1-15 bytes past the source modulo 4 KiB (measured here: 3.4 against
/// 44 GB/s for 16 KiB). Page-aligned blocks put every record of a page-aligned buffer in
/// that window; half a page away, no small header shift reaches it.
const SKEW: usize = 2048;
const PAGE: usize = 4096;

/// One allocation that a single [`BlockWriter`] fills front to back while views of what
/// it has written already are shared with other threads.
struct Block {
    /// The allocation, made with `layout`.
    alloc: NonNull<u8>,
    layout: Layout,
    /// Where the bytes start in the allocation.
    skew: usize,
    /// How many bytes it holds from there.
    cap: usize,
}

impl Block {
    /// The first byte of the block.
    fn data(&self) -> *mut u8 {
        // SAFETY: `skew` lies inside the allocation (or is 0), as made in `Block::new`.
        unsafe { self.alloc.as_ptr().add(self.skew) }
    }

    /// A block of `cap` bytes (at most [`MAX_BLOCK`]).
    fn new(cap: usize) -> Block {
        let cap = cap.min(MAX_BLOCK);
        let (skew, align) = if cap >= SKEW_FROM {
            (SKEW, PAGE)
        } else if cap >= SMALL_SKEW_FROM {
            (SMALL_SKEW, SMALL_SKEW)
        } else {
            (0, 1)
        };
        // Cannot fail: a power-of-two alignment and at most `SKEW + MAX_BLOCK` bytes.
        let layout = Layout::from_size_align(skew + cap, align).unwrap_or(Layout::new::<u8>());
        let skew = skew.min(layout.size());
        let alloc = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout's size is not zero.
            let ptr = unsafe { std::alloc::alloc(layout) };
            NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        };
        Block {
            alloc,
            skew,
            cap: layout.size() - skew,
            layout,
        }
    }
}

// SAFETY: the bytes are written only through the one `BlockWriter`, and only at offsets
// no view covers yet (below); views only read. The memory is freed once, by the last
// `Arc` holder.
unsafe impl Send for Block {}
// SAFETY: as above: shared references only read bytes that no one writes any more.
unsafe impl Sync for Block {}

impl Drop for Block {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: `alloc` was allocated with `layout` in `Block::new` and not freed
            // since.
            unsafe { std::alloc::dealloc(self.alloc.as_ptr(), self.layout) };
        }
    }
}

/// The one writer of a [`Block`]: it appends at `len` and hands out views of `[0, len)`.
/// Everything below `len` is initialized and never written again; everything above it
/// is seen by no view. That split is what makes the sharing sound.
pub(crate) struct BlockWriter {
    block: Arc<Block>,
    len: usize,
}

impl BlockWriter {
    pub(crate) fn new(cap: usize) -> BlockWriter {
        BlockWriter {
            block: Arc::new(Block::new(cap)),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn room(&self) -> usize {
        self.block.cap - self.len
    }

    /// Copies as much of `src` as fits; returns how much that was.
    pub(crate) fn append(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.room());
        // SAFETY: `[len, len + n)` lies inside the allocation (`n <= cap - len`), `src`
        // is another allocation, and no view covers these bytes: views end at or below
        // `len`, and only this writer (not `Clone`, one per block) writes.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.block.data().add(self.len), n);
        }
        self.len += n;
        n
    }

    /// The bytes not written yet, for a read straight into the block.
    pub(crate) fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `[len, cap)` lies inside the allocation, and no view covers it (views
        // end at or below `len`); this writer is its only user while borrowed mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.block.data().add(self.len).cast::<MaybeUninit<u8>>(),
                self.room(),
            )
        }
    }

    /// Marks the first `n` bytes of [`BlockWriter::spare_mut`] written.
    ///
    /// # Safety
    /// Those `n` bytes (at most [`BlockWriter::room`]) must have been initialized.
    pub(crate) unsafe fn assume_written(&mut self, n: usize) {
        debug_assert!(n <= self.room());
        self.len += n.min(self.room());
    }

    /// The written bytes `[start, end)`, shared without a copy.
    pub(crate) fn view(&self, start: usize, end: usize) -> Bytes {
        assert!(
            start <= end && end <= self.len,
            "a view covers written bytes only"
        );
        Bytes::from_owner(View {
            block: self.block.clone(),
            start,
            len: end - start,
        })
    }
}

/// Written bytes of a [`Block`], kept alive by the view.
struct View {
    block: Arc<Block>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `BlockWriter::view` made this view of bytes it had written (so they
        // are initialized), inside the allocation, which the `Arc` keeps alive; they are
        // never written again. An empty view of a zero-capacity block reads nothing.
        unsafe { std::slice::from_raw_parts(self.block.data().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_off_the_allocators_grid_and_small_ones_are_exact() {
        for cap in [SKEW_FROM, 200 * 1024, MAX_BLOCK] {
            let mut w = BlockWriter::new(cap);
            assert_eq!(w.room(), cap);
            let data: Vec<u8> = (0..cap).map(|i| (i % 251) as u8).collect();
            assert_eq!(w.append(&data), cap);
            let view = w.view(0, cap);
            assert_eq!(view.as_ptr() as usize % PAGE, SKEW, "{cap}");
            assert_eq!(&view[..], &data[..]);
        }
        for cap in [SMALL_SKEW_FROM, 4096, SKEW_FROM - 1] {
            let mut w = BlockWriter::new(cap);
            assert_eq!(w.room(), cap);
            assert_eq!(w.append(&vec![7u8; cap]), cap);
            let view = w.view(0, cap);
            // The block just written, not another one: its allocation on the 64-byte
            // grid, and the view's bytes one skew past it.
            assert_eq!(w.block.alloc.as_ptr() as usize % SMALL_SKEW, 0, "{cap}");
            assert_eq!(
                view.as_ptr() as usize - w.block.alloc.as_ptr() as usize,
                SMALL_SKEW
            );
            assert!(view.iter().all(|b| *b == 7));
        }
        let mut w = BlockWriter::new(100);
        assert_eq!(w.room(), 100);
        assert_eq!(w.append(&[9u8; 150]), 100);
        assert_eq!(&w.view(90, 100)[..], &[9u8; 10]);
        assert_eq!(BlockWriter::new(MAX_BLOCK + 1).room(), MAX_BLOCK);
    }

    #[test]
    fn a_read_into_the_spare_room_is_seen_by_later_views_only() {
        let mut w = BlockWriter::new(SKEW_FROM);
        w.append(b"head");
        let before = w.view(0, 4);
        let spare = w.spare_mut();
        assert_eq!(spare.len(), SKEW_FROM - 4);
        for (i, b) in spare[..6].iter_mut().enumerate() {
            b.write(b'a' + i as u8);
        }
        // SAFETY: the six bytes were written just above.
        unsafe { w.assume_written(6) };
        assert_eq!(w.len(), 10);
        assert_eq!(&before[..], b"head");
        assert_eq!(&w.view(0, 10)[..], b"headabcdef");
    }
}
