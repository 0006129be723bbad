//! An object's bytes held once, in a few large allocations. A fill publishes pieces of
//! about [`FRAME`] bytes to its readers as soon as each is complete; the cache entry is
//! views of the same allocations, a whole block each (up to [`MAX_BLOCK`]), so an object
//! being fetched and then cached is never held twice, and a hit is written to its
//! socket in large writes.

use bytes::Bytes;

use super::block::{BlockWriter, MAX_BLOCK};
use crate::body::FRAME;

/// The largest allocation for a body of unknown length (its size is known only at its
/// end, so what a block holds beyond the bytes received is not in any budget).
const OPEN_BLOCK: usize = 4 * FRAME;

/// A complete object's bytes.
#[derive(Debug, Clone, Default)]
pub struct Pieces {
    pieces: Vec<Bytes>,
    /// `ends[i]` is the offset just past `pieces[i]`.
    ends: Vec<u64>,
}

impl Pieces {
    pub fn new(pieces: Vec<Bytes>) -> Pieces {
        let mut end = 0;
        let ends = pieces
            .iter()
            .map(|p| {
                end += p.len() as u64;
                end
            })
            .collect();
        Pieces { pieces, ends }
    }

    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All the bytes in one buffer (a copy: for a decoder that needs them contiguous).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() as usize);
        for p in &self.pieces {
            out.extend_from_slice(p);
        }
        out
    }

    /// The bytes `[start, start + len)` as views of the pieces (no copy).
    pub fn range(&self, start: u64, len: u64) -> Vec<Bytes> {
        let end = start.saturating_add(len).min(self.len());
        let first = self.ends.partition_point(|&e| e <= start);
        let mut out = Vec::new();
        for (i, piece) in self.pieces.iter().enumerate().skip(first) {
            let piece_start = self.ends[i] - piece.len() as u64;
            if piece_start >= end {
                break;
            }
            let from = start.saturating_sub(piece_start) as usize;
            let to = (end - piece_start).min(piece.len() as u64) as usize;
            out.push(piece.slice(from..to));
        }
        out
    }
}

/// Copies an origin body, as it arrives, into blocks of [`MAX_BLOCK`] (never beyond the
/// announced length, which the fill's budget counts already; blocks of a body of
/// unknown length double from [`FRAME`] to [`OPEN_BLOCK`]), and hands out views of them, none
/// a copy: pieces of about [`FRAME`] bytes as soon as they are complete (for the fill's
/// readers, so that a miss streams), and, when asked to keep them, the whole blocks (for
/// the cache entry, so that a hit goes to the socket in few large writes).
pub(crate) struct PieceWriter {
    block: Option<BlockWriter>,
    /// Where the next piece starts in `block`.
    piece_start: usize,
    remaining: u64,
    next_block: usize,
    max_block: usize,
    /// Views of the blocks filled before `block`; `None`: not kept.
    blocks: Option<Vec<Bytes>>,
}

impl PieceWriter {
    /// For a body of exactly `len` bytes; `keep`: its whole blocks are kept for
    /// [`PieceWriter::whole`].
    pub(crate) fn new(len: u64, keep: bool) -> PieceWriter {
        PieceWriter {
            block: None,
            piece_start: 0,
            remaining: len,
            next_block: MAX_BLOCK,
            max_block: MAX_BLOCK,
            blocks: keep.then(Vec::new),
        }
    }

    /// For a body of unknown length, whose last piece [`PieceWriter::finish`] returns.
    pub(crate) fn open_ended(keep: bool) -> PieceWriter {
        PieceWriter {
            next_block: FRAME,
            max_block: OPEN_BLOCK,
            ..PieceWriter::new(u64::MAX, keep)
        }
    }

    /// Whole blocks are no longer kept (the body will not be cached): the memory of the
    /// blocks is then held only by the pieces the readers still hold.
    pub(crate) fn stop_keeping(&mut self) {
        self.blocks = None;
    }

    /// What was written since the last piece (a body of unknown length has ended).
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        self.cut_piece()
    }

    /// Everything written, as views of whole blocks (empty when not kept).
    pub(crate) fn whole(&self) -> Vec<Bytes> {
        let Some(blocks) = &self.blocks else {
            return Vec::new();
        };
        let mut all = blocks.clone();
        all.extend(self.block.as_ref().map(|b| b.view(0, b.len())));
        all
    }

    /// Appends `chunk` and returns the pieces it completed. The last piece is returned
    /// when the announced length is reached.
    pub(crate) fn write(&mut self, mut chunk: &[u8]) -> Vec<Bytes> {
        let mut done = Vec::new();
        while !chunk.is_empty() {
            if self.block.as_ref().is_none_or(|b| b.room() == 0) {
                // The block is full: what it holds is a (short) piece of its own.
                done.extend(self.cut_piece());
                self.start_block();
            }
            let Some(block) = self.block.as_mut() else {
                break;
            };
            let n = block.append(chunk);
            chunk = &chunk[n..];
            self.remaining = self.remaining.saturating_sub(n as u64);
            if block.len() - self.piece_start >= FRAME || self.remaining == 0 {
                done.extend(self.cut_piece());
            }
        }
        done
    }

    /// What the block holds beyond the last piece, as a piece.
    fn cut_piece(&mut self) -> Option<Bytes> {
        let block = self.block.as_ref()?;
        let (start, end) = (self.piece_start, block.len());
        self.piece_start = end;
        (end > start).then(|| block.view(start, end))
    }

    fn start_block(&mut self) {
        let size = self
            .next_block
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX))
            .max(1);
        let full = self.block.replace(BlockWriter::new(size));
        if let (Some(full), Some(blocks)) = (full, self.blocks.as_mut()) {
            blocks.push(full.view(0, full.len()));
        }
        self.piece_start = 0;
        self.next_block = (self.next_block * 2).min(self.max_block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_cuts_frames_and_ranges_read_across_pieces() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PieceWriter::new(data.len() as u64, true);
        let mut pieces = Vec::new();
        for chunk in data.chunks(7_000) {
            pieces.extend(w.write(chunk));
        }
        assert!(pieces.iter().all(|p| p.len() <= FRAME + 7_000));
        let whole = Pieces::new(pieces);
        assert_eq!(whole.len(), data.len() as u64);
        for (start, len) in [
            (0, 300_000),
            (0, 1),
            (65_535, 2),
            (70_000, 100_000),
            (299_999, 1),
            (299_999, 50),
        ] {
            let got: Vec<u8> = whole
                .range(start, len)
                .iter()
                .flat_map(|b| b.to_vec())
                .collect();
            let end = (start + len).min(300_000) as usize;
            assert_eq!(got, data[start as usize..end], "{start}+{len}");
        }
        assert!(whole.range(300_000, 10).is_empty());
        // The whole block: one, of the announced length, where its pieces are: no byte
        // held twice.
        let blocks = w.whole();
        let sizes: Vec<usize> = blocks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [300_000]);
        assert_eq!(Pieces::new(blocks.clone()).to_vec(), data);
        let piece_ptrs: Vec<*const u8> =
            whole.range(0, 300_000).iter().map(|p| p.as_ptr()).collect();
        for b in &blocks {
            assert!(
                piece_ptrs.contains(&b.as_ptr()),
                "a block starts where a piece does"
            );
        }
    }

    #[test]
    fn blocks_of_a_known_length_are_as_large_as_allowed() {
        let len = 2 * MAX_BLOCK + 5;
        let mut w = PieceWriter::new(len as u64, true);
        let pieces: Vec<Bytes> = vec![3u8; len]
            .chunks(50_000)
            .flat_map(|c| w.write(c))
            .collect();
        assert!(pieces.iter().all(|p| p.len() <= FRAME + 50_000));
        let sizes: Vec<usize> = w.whole().iter().map(Bytes::len).collect();
        assert_eq!(sizes, [MAX_BLOCK, MAX_BLOCK, 5]);
    }

    #[test]
    fn pieces_read_on_another_thread_while_the_block_is_written() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(p) = rx.recv() {
                got.extend_from_slice(&p);
            }
            got
        });
        let mut w = PieceWriter::new(data.len() as u64, false);
        for chunk in data.chunks(9_000) {
            for p in w.write(chunk) {
                tx.send(p).unwrap();
            }
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), data);
        assert!(w.whole().is_empty(), "blocks not kept");
    }

    #[test]
    fn a_writer_that_stops_keeping_holds_no_block() {
        let mut w = PieceWriter::open_ended(true);
        let pieces = w.write(&[7u8; 600_000]);
        w.stop_keeping();
        assert!(w.whole().is_empty());
        drop(w);
        // The pieces keep their memory alive on their own.
        assert!(pieces.iter().all(|p| p.iter().all(|&b| b == 7)));
    }

    #[test]
    fn a_small_body_is_one_piece_in_one_allocation_of_its_size() {
        let mut w = PieceWriter::new(10, true);
        assert!(w.write(b"01234").is_empty());
        let last = w.write(b"56789");
        assert_eq!(last, vec![Bytes::from_static(b"0123456789")]);
    }

    #[test]
    fn an_open_ended_body_ends_with_what_it_holds() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = PieceWriter::open_ended(true);
        let mut pieces = Vec::new();
        for chunk in data.chunks(10_000) {
            pieces.extend(w.write(chunk));
        }
        pieces.extend(w.finish());
        assert!(pieces.iter().all(|p| p.len() <= OPEN_BLOCK));
        let whole = Pieces::new(pieces);
        assert_eq!(whole.to_vec(), data);
        assert!(PieceWriter::open_ended(true).finish().is_none());
        // The cache entry: whole blocks, the same bytes.
        assert!(w.whole().iter().all(|b| b.len() <= OPEN_BLOCK));
        assert_eq!(Pieces::new(w.whole()).to_vec(), data);
    }
}
