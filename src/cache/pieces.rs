//! An object's bytes held once: a list of pieces of about [`FRAME`] bytes that live in a
//! few large allocations. A fill publishes each piece to its readers as soon as it is
//! complete, and the cache entry is the same list, so an object being fetched and then
//! cached is never held twice.

use bytes::{Bytes, BytesMut};

use crate::body::FRAME;

/// The largest allocation a fill makes at once.
const MAX_BLOCK: usize = 1 << 20;
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

/// Copies an origin body, as it arrives, into blocks that double from [`FRAME`] to
/// [`MAX_BLOCK`] (never beyond the announced length) and cuts them into pieces.
pub(crate) struct PieceWriter {
    block: BytesMut,
    remaining: u64,
    next_block: usize,
    max_block: usize,
}

impl PieceWriter {
    /// For a body of exactly `len` bytes.
    pub(crate) fn new(len: u64) -> PieceWriter {
        PieceWriter {
            block: BytesMut::new(),
            remaining: len,
            next_block: FRAME,
            max_block: MAX_BLOCK,
        }
    }

    /// For a body of unknown length, whose last piece [`PieceWriter::finish`] returns.
    pub(crate) fn open_ended() -> PieceWriter {
        PieceWriter {
            max_block: OPEN_BLOCK,
            ..PieceWriter::new(u64::MAX)
        }
    }

    /// What was written since the last piece (a body of unknown length has ended).
    pub(crate) fn finish(mut self) -> Option<Bytes> {
        (!self.block.is_empty()).then(|| self.block.split().freeze())
    }

    /// Appends `chunk` and returns the pieces it completed. The last piece is returned
    /// when the announced length is reached.
    pub(crate) fn write(&mut self, mut chunk: &[u8]) -> Vec<Bytes> {
        let mut done = Vec::new();
        while !chunk.is_empty() {
            if self.block.capacity() == self.block.len() {
                // The block is full: what it holds is a (short) piece of its own.
                if !self.block.is_empty() {
                    done.push(self.block.split().freeze());
                }
                self.start_block();
            }
            let room = self.block.capacity() - self.block.len();
            let n = room.min(chunk.len());
            self.block.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            self.remaining = self.remaining.saturating_sub(n as u64);
            if self.block.len() >= FRAME || self.remaining == 0 {
                // `split` keeps the rest of the allocation for the next piece.
                done.push(self.block.split().freeze());
            }
        }
        done
    }

    fn start_block(&mut self) {
        let size = self
            .next_block
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX))
            .max(1);
        self.block = BytesMut::with_capacity(size);
        self.next_block = (self.next_block * 2).min(self.max_block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_cuts_frames_and_ranges_read_across_pieces() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PieceWriter::new(data.len() as u64);
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
    }

    #[test]
    fn a_small_body_is_one_piece_in_one_allocation_of_its_size() {
        let mut w = PieceWriter::new(10);
        assert!(w.write(b"01234").is_empty());
        let last = w.write(b"56789");
        assert_eq!(last, vec![Bytes::from_static(b"0123456789")]);
    }

    #[test]
    fn an_open_ended_body_ends_with_what_it_holds() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = PieceWriter::open_ended();
        let mut pieces = Vec::new();
        for chunk in data.chunks(10_000) {
            pieces.extend(w.write(chunk));
        }
        pieces.extend(w.finish());
        assert!(pieces.iter().all(|p| p.len() <= OPEN_BLOCK));
        let whole = Pieces::new(pieces);
        assert_eq!(whole.to_vec(), data);
        assert!(PieceWriter::open_ended().finish().is_none());
    }
}
