//! One disk-tier file: its format, writing it, and reading it back checked block by
//! block. Reads either wait for the disk (on the blocking pool) or take only what is in
//! memory already ([`Wait::No`]: path and pages cached, else [`ReadError::NotCached`]),
//! which an async worker may do; writes always wait.
//!
//! ```text
//! "BFDISK02" | header length u32 | block size u32 | body length u64 | reserved u32 | CRC32C u32
//! | header (JSON: key, metadata, when stored) | one CRC32C per body block, u32 each | body
//! ```
//!
//! Integers are little-endian. The prelude's CRC32C covers its first 28 bytes, the header
//! and the block table, so a wrong length, key or checksum is found before any of the body
//! is used. Each body block ([`BLOCK`] bytes, the last one shorter) has a CRC32C of its
//! own: a read hands a block on only once it has checked it, so a large object streams
//! from disk without ever passing on a wrong byte. Files of the first format (`BFDISK01`:
//! the header's and the whole body's CRC32C in the prelude) are read as one block, so
//! the upgrade keeps a warm cache warm.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use crc_fast::{CrcAlgorithm, Digest};
use serde::{Deserialize, Serialize};

use crate::cache::block::BlockWriter;
use crate::cache::entry::CacheKey;
use crate::cache::pieces::Pieces;
use crate::config::{Partition, ProviderKind};
use crate::object::{ObjectMeta, StoredFields};

const MAGIC_V1: &[u8; 8] = b"BFDISK01";
const MAGIC: &[u8; 8] = b"BFDISK02";
const PRELUDE: usize = 32;
/// What a read of a file reads first: its prelude, header and block table, nearly always
/// (a header is a key and a few headers; the table is 4 bytes per [`BLOCK`]).
const FIRST_READ: u64 = 4 << 10;
/// A header is a key and a few headers; anything longer is not a file of ours.
const MAX_HEADER: u32 = 64 << 10;
/// The most a one-block file holds besides its body: prelude, the largest header and
/// one checksum, rounded up to the 4 KiB the index weighs files in.
pub(super) const MAX_FILE_OVER_BODY: u64 =
    (PRELUDE as u64 + MAX_HEADER as u64 + 4).next_multiple_of(4096);
/// The body block each checksum covers, in files this version writes: the most a read
/// holds before it can hand bytes on, and the least it reads at once.
pub const BLOCK: u32 = 256 << 10;
/// Block sizes a file may declare (the first format's one block is the whole body).
const MIN_BLOCK: u64 = 4 << 10;
const MAX_BLOCKS: u64 = 1 << 20;

/// Why a file was not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
    /// A file of another format version (`BFDISKnn`), written by another (newer)
    /// bucketfront: never read as one of ours.
    #[error("format {0}, which this version does not read")]
    UnknownFormat(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A read that may not wait ([`Wait::No`]) would have: the path or the pages are
    /// not in memory, or the name is not a plain file. A waiting read tells what it is.
    #[error("not in memory")]
    NotCached,
    /// This kernel or file system cannot open or read without waiting (`openat2`'s
    /// `RESOLVE_CACHED` is Linux 5.12, `RWF_NOWAIT` reads need the file system's support).
    #[error("reads that do not wait are not supported here")]
    NoWaitUnsupported,
}

/// Whether a read may wait for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Yes: it runs on the blocking pool.
    Yes,
    /// No: it runs on an async worker, so it takes only what the kernel holds in memory
    /// (the path in the dentry cache, the pages in the page cache) and fails with
    /// [`ReadError::NotCached`] where it would have waited.
    No,
}

/// The part of a file that says what it holds.
#[derive(Serialize, Deserialize)]
pub(super) struct Header {
    provider: ProviderKind,
    /// S3's partition; absent for the commercial one (and in files written before).
    #[serde(default, skip_serializing_if = "is_aws")]
    partition: Partition,
    bucket: String,
    key: String,
    /// A variant's id; absent in files of objects (and in files written before variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    /// When the object's age was zero: its answer's arrival minus the age it arrived
    /// with (RFC 9111 §4.2.3), so that its age survives a restart.
    stored_ms: u64,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified_ms: Option<u64>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    /// `Expires` as the origin sent it (files written before it was kept raw have
    /// `expires_ms`, a valid date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    /// The origin's `Date` (absent in older files: then the arrival stands in for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date_ms: Option<u64>,
}

impl Header {
    pub(super) fn new(key: &CacheKey, meta: &ObjectMeta, stored: SystemTime) -> Header {
        // Exhaustive: a new metadata field does not compile until it is stored here.
        let StoredFields {
            content_type,
            etag,
            last_modified,
            content_encoding,
            content_disposition,
            content_language,
            cache_control,
            expires,
            date,
        } = meta.fields.clone();
        Header {
            provider: key.provider,
            partition: key.partition,
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
            expires,
            expires_ms: None,
            date_ms: date.map(unix_ms),
        }
    }

    pub(super) fn key(&self) -> CacheKey {
        CacheKey {
            provider: self.provider,
            partition: self.partition,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            variant: self.variant.clone(),
        }
    }

    /// When the object's age was zero.
    pub(super) fn stored(&self) -> SystemTime {
        from_unix_ms(self.stored_ms)
    }

    pub(super) fn meta(&self, size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            fields: StoredFields {
                content_type: self.content_type.clone(),
                etag: self.etag.clone(),
                last_modified: self.last_modified_ms.map(from_unix_ms),
                content_encoding: self.content_encoding.clone(),
                content_disposition: self.content_disposition.clone(),
                content_language: self.content_language.clone(),
                cache_control: self.cache_control.clone(),
                expires: self.expires.clone().or_else(|| {
                    self.expires_ms
                        .map(|ms| httpdate::fmt_http_date(from_unix_ms(ms)))
                }),
                date: self.date_ms.map(from_unix_ms),
            },
        }
    }
}

fn is_aws(p: &Partition) -> bool {
    *p == Partition::Aws
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Where a file's parts are, from its prelude.
struct Layout {
    header_len: u32,
    /// Bytes per body block (the whole body, at least 1, for the first format).
    block: u64,
    body_len: u64,
    /// CRC32C of the first format's header (the new format's CRC covers the table too,
    /// so it is checked after the table is read).
    v1_header_crc: Option<u32>,
    prelude_crc: u32,
    /// The first format's one body CRC (its "table").
    v1_body_crc: Option<u32>,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(v)
}

impl Layout {
    fn decode(b: &[u8; PRELUDE]) -> Result<Layout, ReadError> {
        let layout = if &b[..8] == MAGIC {
            let block = u64::from(u32_at(b, 12));
            Layout {
                header_len: u32_at(b, 8),
                block,
                body_len: u64_at(b, 16),
                v1_header_crc: None,
                prelude_crc: u32_at(b, 28),
                v1_body_crc: None,
            }
        } else if &b[..8] == MAGIC_V1 {
            let body_len = u64_at(b, 16);
            Layout {
                header_len: u32_at(b, 8),
                block: body_len.max(1),
                body_len,
                v1_header_crc: Some(u32_at(b, 12)),
                prelude_crc: 0,
                v1_body_crc: Some(u32_at(b, 24)),
            }
        } else {
            let version = &b[..8];
            if version.starts_with(b"BFDISK") && version[6..].iter().all(u8::is_ascii_digit) {
                return Err(ReadError::UnknownFormat(
                    String::from_utf8_lossy(version).into_owned(),
                ));
            }
            return Err(ReadError::Corrupt("not a bucketfront cache file"));
        };
        if layout.header_len > MAX_HEADER {
            return Err(ReadError::Corrupt("header length out of range"));
        }
        if layout.v1_body_crc.is_none()
            && (layout.block < MIN_BLOCK || layout.blocks() > MAX_BLOCKS)
        {
            return Err(ReadError::Corrupt("block size out of range"));
        }
        Ok(layout)
    }

    fn blocks(&self) -> u64 {
        self.body_len.div_ceil(self.block)
    }

    /// Bytes of the block table (none in the first format).
    fn table_len(&self) -> u64 {
        if self.v1_body_crc.is_some() {
            0
        } else {
            self.blocks() * 4
        }
    }

    fn table_at(&self) -> u64 {
        PRELUDE as u64 + u64::from(self.header_len)
    }

    fn body_at(&self) -> u64 {
        self.table_at() + self.table_len()
    }

    fn file_len(&self) -> u64 {
        self.body_at() + self.body_len
    }

    /// Where block `index` starts in the body, and its length (the last may be shorter).
    fn block_span(&self, index: u64) -> (u64, u64) {
        let start = (index * self.block).min(self.body_len);
        (start, self.block.min(self.body_len - start))
    }
}

/// A file opened for reading: prelude, header and block table read and checked; the
/// body is read block by block with [`Opened::next_block`].
pub(super) struct Opened {
    file: File,
    pub header: Header,
    layout: Layout,
    crcs: Vec<u32>,
    /// The next block [`Opened::next_block`] reads.
    next: u64,
    /// Reads name their offset, so that one that did not happen can be tried again;
    /// `false` only for a test's pipe, read in order.
    seekable: bool,
}

impl Opened {
    pub(super) fn body_len(&self) -> u64 {
        self.layout.body_len
    }

    /// The whole file's length (what the index weighs).
    pub(super) fn file_len(&self) -> u64 {
        self.layout.file_len()
    }

    /// Where in the body the next block starts.
    pub(super) fn position(&self) -> u64 {
        (self.next * self.layout.block).min(self.layout.body_len)
    }

    /// Whether every block has been read.
    pub(super) fn done(&self) -> bool {
        self.next >= self.layout.blocks()
    }

    /// The next block of the body, checked against its CRC32C; `None` after the last.
    /// Only a block read whole moves on to the next, so one that was not
    /// ([`ReadError::NotCached`]) can be read again, waiting.
    pub(super) fn next_block(&mut self, wait: Wait) -> Option<Result<Bytes, ReadError>> {
        if self.done() {
            return None;
        }
        let (start, n) = self.layout.block_span(self.next);
        let crc = self.crcs[self.next as usize];
        let at = self.seekable.then(|| self.layout.body_at() + start);
        let block = read_block(&self.file, at, n, crc, wait);
        if block.is_ok() {
            self.next += 1;
        }
        Some(block)
    }
}

impl Opened {
    /// This file as one to send from (`crate::sendfile`), when each of its blocks can be
    /// checked in one turn: at most [`BLOCK`] bytes (the first format's one block is the
    /// whole body).
    pub(super) fn into_send(self) -> Option<(Header, ToSend)> {
        let small = self.layout.v1_body_crc.is_none() && self.layout.block <= u64::from(BLOCK);
        if !small || !self.seekable {
            return None;
        }
        let send = ToSend {
            file: Arc::new(self.file),
            layout: self.layout,
            crcs: self.crcs,
        };
        Some((self.header, send))
    }
}

/// A file whose body goes to the socket from the file itself: each block is read into
/// a scratch buffer and checked against its CRC32C before any of its bytes are sent.
pub(super) struct ToSend {
    pub file: Arc<File>,
    layout: Layout,
    crcs: Vec<u32>,
}

impl ToSend {
    pub(super) fn body_len(&self) -> u64 {
        self.layout.body_len
    }

    pub(super) fn blocks(&self) -> u64 {
        self.layout.blocks()
    }

    /// Where the body's byte `at` is in the file.
    pub(super) fn file_offset(&self, at: u64) -> u64 {
        self.layout.body_at() + at
    }

    /// Reads block `index` into `scratch` (its old bytes dropped) and checks it.
    pub(super) fn check(
        &self,
        index: u64,
        wait: Wait,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let crc = usize::try_from(index)
            .ok()
            .and_then(|i| self.crcs.get(i))
            .ok_or(ReadError::Corrupt("block past the body's end"))?;
        let (start, len) = self.layout.block_span(index);
        let len = usize::try_from(len).map_err(|_| ReadError::Corrupt("block too large"))?;
        scratch.clear();
        scratch.reserve(len);
        let at = self.file_offset(start);
        read_into(&self.file, Some(at), len, scratch, wait)?;
        verify(scratch, *crc)
    }
}

/// Reads `n` bytes at `at` and checks them against `crc`.
fn read_block(
    file: &File,
    at: Option<u64>,
    n: u64,
    crc: u32,
    wait: Wait,
) -> Result<Bytes, ReadError> {
    let len = usize::try_from(n).map_err(|_| ReadError::Corrupt("block too large"))?;
    // A block, not a `Vec`: it goes to sockets (and TLS record copies) from there.
    let mut block = BlockWriter::new(len);
    read_into(file, at, len, &mut block, wait)?;
    let bytes = block.view(0, block.len());
    verify(&bytes, crc)?;
    Ok(bytes)
}

/// Whether a block's `bytes` are what its checksum `crc` says.
fn verify(bytes: &[u8], crc: u32) -> Result<(), ReadError> {
    if crc32c(&[bytes]) != crc {
        return Err(ReadError::Corrupt("body checksum mismatch"));
    }
    Ok(())
}

/// Opens `path` and reads its prelude, header and block table, checked; `None` when
/// there is no such file. A file whose length is not what its prelude says is corrupt
/// (truncated, or written over).
pub(super) fn open(path: &Path, wait: Wait) -> Result<Option<Opened>, ReadError> {
    open_checking(path, true, wait, true)
}

/// [`open`] without the length check, for a test that feeds a file through a pipe (whose
/// length is 0) to make its reads block the way a hung disk's do.
#[cfg(test)]
pub(super) fn open_pipe(path: &Path) -> Result<Option<Opened>, ReadError> {
    open_checking(path, false, Wait::Yes, false)
}

fn open_checking(
    path: &Path,
    check_length: bool,
    wait: Wait,
    seekable: bool,
) -> Result<Option<Opened>, ReadError> {
    let Some((file, meta)) = open_file(path, wait)? else {
        return Ok(None);
    };
    let at = |offset: u64| seekable.then_some(offset);
    // One read for the prelude, the header and the block table, which nearly always fit
    // in its [`FIRST_READ`] bytes: two syscalls fewer per disk hit. (A pipe has no
    // length to go by: its prelude is read alone.)
    let first_len = if seekable {
        meta.len().min(FIRST_READ)
    } else {
        PRELUDE as u64
    };
    let first = read_exactly(&file, at(0), first_len, wait)?;
    let prelude: &[u8; PRELUDE] = (first.get(..PRELUDE))
        .and_then(|p| p.try_into().ok())
        .ok_or(ReadError::Corrupt("file shorter than its header says"))?;
    let layout = Layout::decode(prelude)?;
    // Before anything is allocated from the prelude's lengths.
    if check_length && meta.len() != layout.file_len() {
        return Err(ReadError::Corrupt("file length does not match its header"));
    }
    // A part the first read holds is taken from it; a longer header or table is read.
    let part = |start: u64, len: u64| -> Result<Cow<'_, [u8]>, ReadError> {
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(start + len).ok());
        match range.and_then(|(start, end)| first.get(start..end)) {
            Some(held) => Ok(Cow::Borrowed(held)),
            None => read_exactly(&file, at(start), len, wait).map(Cow::Owned),
        }
    };
    let header = part(PRELUDE as u64, u64::from(layout.header_len))?;
    let table = part(layout.table_at(), layout.table_len())?;
    let crcs = match (layout.v1_header_crc, layout.v1_body_crc) {
        (Some(header_crc), Some(body_crc)) => {
            if crc32c(&[&header]) != header_crc {
                return Err(ReadError::Corrupt("header checksum mismatch"));
            }
            vec![body_crc]
        }
        _ => {
            if crc32c(&[&prelude[..28], &header, &table]) != layout.prelude_crc {
                return Err(ReadError::Corrupt("header checksum mismatch"));
            }
            table.chunks_exact(4).map(|c| u32_at(c, 0)).collect()
        }
    };
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| ReadError::Corrupt("unreadable header"))?;
    Ok(Some(Opened {
        file,
        header,
        layout,
        crcs,
        next: 0,
        seekable,
    }))
}

/// Opens `path` for reading; `None` when there is no such file. The file's metadata
/// comes with it (one `statx` serves every check made on it).
fn open_file(path: &Path, wait: Wait) -> Result<Option<(File, fs::Metadata)>, ReadError> {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    let file = match wait {
        Wait::Yes => match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        },
        // Non-blocking, so that a FIFO put in the cache's place (the tests' hung disk)
        // does not wait for a writer; on a plain file the flag does nothing.
        Wait::No => match rustix::fs::openat2(
            CWD,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::CACHED,
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::AGAIN) => return Err(ReadError::NotCached),
            Err(Errno::NOSYS | Errno::INVAL) => return Err(ReadError::NoWaitUnsupported),
            Err(e) => return Err(ReadError::Io(e.into())),
        },
    };
    let meta = file.metadata()?;
    // Not a file of ours, or one removed since: closing the last reference to a removed
    // file frees its blocks, which may wait for the disk, so that close is left to the
    // blocking pool. (A removal between this check and the close is still closed here:
    // a window of one read.)
    if wait == Wait::No && (!meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) == 0) {
        tokio::task::spawn_blocking(move || drop(file));
        return Err(ReadError::NotCached);
    }
    Ok(Some((file, meta)))
}

/// `n` bytes from offset `at` (from the file's position if `None`: a pipe). Not zeroed
/// first: the kernel fills exactly the capacity (a 256 KiB `memset` per block is what
/// that saves). Without waiting, only a read the page cache answers whole counts; a short
/// one is [`ReadError::NotCached`] (part of it is not in memory, or the file is shorter:
/// a waiting read tells which).
fn read_exactly(file: &File, at: Option<u64>, n: u64, wait: Wait) -> Result<Vec<u8>, ReadError> {
    let len = usize::try_from(n).map_err(|_| ReadError::Corrupt("block too large"))?;
    let mut buf = Vec::with_capacity(len);
    read_into(file, at, len, &mut buf, wait)?;
    Ok(buf)
}

/// A buffer a read fills in place, up to its capacity.
trait Fill {
    fn filled(&self) -> usize;
    fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>];
    /// # Safety
    /// The first `n` bytes of [`Fill::spare_mut`] must have been initialized.
    unsafe fn assume_filled(&mut self, n: usize);
}

impl Fill for Vec<u8> {
    fn filled(&self) -> usize {
        self.len()
    }
    fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        self.spare_capacity_mut()
    }
    unsafe fn assume_filled(&mut self, n: usize) {
        // SAFETY: the caller initialized these bytes of the spare capacity.
        unsafe { self.set_len(self.len() + n) }
    }
}

impl Fill for BlockWriter {
    fn filled(&self) -> usize {
        self.len()
    }
    fn spare_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        BlockWriter::spare_mut(self)
    }
    unsafe fn assume_filled(&mut self, n: usize) {
        // SAFETY: the caller initialized these bytes of the spare room.
        unsafe { self.assume_written(n) }
    }
}

/// Reads `buf` up to `len` bytes (within its capacity) from offset `at` (see
/// [`read_exactly`]).
fn read_into(
    file: &File,
    at: Option<u64>,
    len: usize,
    buf: &mut impl Fill,
    wait: Wait,
) -> Result<(), ReadError> {
    if wait == Wait::No && at.is_none() {
        // A short read of a pipe takes its bytes away: the waiting read could not redo it.
        return Err(ReadError::NotCached);
    }
    while buf.filled() < len {
        let offset = at.map(|a| a + buf.filled() as u64);
        match (read_into_spare(file, buf, len, offset, wait)?, wait) {
            (0, _) if buf.spare_mut().is_empty() => {
                return Err(ReadError::Corrupt("block too large"));
            }
            (0, Wait::Yes) => return Err(ReadError::Corrupt("file shorter than its header says")),
            (_, Wait::No) if buf.filled() < len => return Err(ReadError::NotCached),
            _ => {}
        }
    }
    Ok(())
}

/// One `preadv2` into `buf`'s spare capacity, up to `len` bytes filled, at `offset` (or
/// the file's position), with `RWF_NOWAIT` unless it may wait; marks what was read filled
/// and returns how much that was (0 at the end of the file).
fn read_into_spare(
    file: &File,
    buf: &mut impl Fill,
    len: usize,
    offset: Option<u64>,
    wait: Wait,
) -> Result<usize, ReadError> {
    use std::os::fd::AsRawFd;
    let offset = match offset {
        Some(at) => i64::try_from(at).map_err(|_| ReadError::Corrupt("offset out of range"))?,
        None => -1,
    };
    let flags = match wait {
        Wait::Yes => 0,
        Wait::No => libc::RWF_NOWAIT,
    };
    let want = len.saturating_sub(buf.filled());
    let spare = buf.spare_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len().min(want),
    };
    loop {
        // SAFETY: `iov` covers `buf`'s spare capacity, memory `buf` owns and nothing
        // else refers to while the kernel writes into it; the kernel writes at most
        // `iov_len` bytes, and only the count it returns is marked initialized below.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
        if let Ok(n) = usize::try_from(n) {
            // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
            unsafe { buf.assume_filled(n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if wait == Wait::No => ReadError::NotCached,
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) if wait == Wait::No => {
                ReadError::NoWaitUnsupported
            }
            _ => ReadError::Io(e),
        });
    }
}

/// The CRC32C of each [`BLOCK`] of `body` (the pieces do not follow block boundaries).
fn block_crcs(body: &Pieces) -> Vec<u32> {
    let block = BLOCK as usize;
    let mut crcs = Vec::with_capacity(body.len().div_ceil(u64::from(BLOCK)) as usize);
    let (mut crc, mut filled) = (Digest::new(CrcAlgorithm::Crc32Iscsi), 0usize);
    for piece in body.range(0, body.len()) {
        let mut rest: &[u8] = &piece;
        while !rest.is_empty() {
            let n = (block - filled).min(rest.len());
            crc.update(&rest[..n]);
            filled += n;
            rest = &rest[n..];
            if filled == block {
                crcs.push(crc.finalize_reset() as u32);
                filled = 0;
            }
        }
    }
    if filled > 0 {
        crcs.push(crc.finalize() as u32);
    }
    crcs
}

/// The CRC32C (Castagnoli) of `parts` one after the other. From crc-fast rather than the
/// crc32c crate: it folds with VPCLMULQDQ where the CPU has it, 89.9 against 22.2 GiB/s
/// on a 256 KiB block on this project's machine (`cargo bench --bench micro --
/// checksum`), where the check on every disk read was 8.7% of a disk hit's samples; and
/// the AWS SDK's checksums already build it.
fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut digest = Digest::new(CrcAlgorithm::Crc32Iscsi);
    for part in parts {
        digest.update(part);
    }
    digest.finalize() as u32
}

/// Writes a complete file for `header` and `body` at `path` (a temporary name: the
/// tier renames it into place); returns its length.
pub(super) fn write(path: &Path, header: &Header, body: &Pieces) -> io::Result<u64> {
    let header = serde_json::to_vec(header)?;
    let header_len = u32::try_from(header.len()).map_err(io::Error::other)?;
    let table: Vec<u8> = block_crcs(body)
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    let mut prelude = [0u8; PRELUDE];
    prelude[..8].copy_from_slice(MAGIC);
    prelude[8..12].copy_from_slice(&header_len.to_le_bytes());
    prelude[12..16].copy_from_slice(&BLOCK.to_le_bytes());
    prelude[16..24].copy_from_slice(&body.len().to_le_bytes());
    let crc = crc32c(&[&prelude[..28], &header, &table]);
    prelude[28..32].copy_from_slice(&crc.to_le_bytes());

    let mut file = io::BufWriter::with_capacity(64 << 10, File::create(path)?);
    file.write_all(&prelude)?;
    file.write_all(&header)?;
    file.write_all(&table)?;
    for piece in body.range(0, body.len()) {
        file.write_all(&piece)?;
    }
    file.flush()?;
    Ok((PRELUDE + header.len() + table.len()) as u64 + body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let meta = ObjectMeta {
            fields: StoredFields {
                content_type: Some("image/png".into()),
                etag: Some("\"e\"".into()),
                ..StoredFields::default()
            },
            ..ObjectMeta::default()
        };
        Header::new(&CacheKey::test("k"), &meta, SystemTime::UNIX_EPOCH)
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads every block of `path`; the bytes, or the first error.
    fn read_all(path: &Path) -> Result<Vec<u8>, ReadError> {
        read_all_waiting(path, Wait::Yes)
    }

    fn read_all_waiting(path: &Path, wait: Wait) -> Result<Vec<u8>, ReadError> {
        let mut opened = open(path, wait)?.expect("file exists");
        let mut out = Vec::new();
        while let Some(block) = opened.next_block(wait) {
            out.extend_from_slice(&block?);
        }
        Ok(out)
    }

    /// A header longer than the first read (a long key) is read on its own, and its
    /// table after it; a file shorter than a prelude is corrupt, waiting or not.
    #[test]
    fn headers_longer_than_the_first_read_and_short_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let meta = ObjectMeta::default();
        let long = Header::new(
            &CacheKey::test(&"k".repeat(5000)),
            &meta,
            SystemTime::UNIX_EPOCH,
        );
        let data = body(2 * BLOCK as usize + 5);
        write(&path, &long, &Pieces::new(vec![Bytes::from(data.clone())])).unwrap();
        let opened = open(&path, Wait::Yes).unwrap().unwrap();
        assert!(opened.layout.table_at() > FIRST_READ);
        assert_eq!(opened.header.key(), long.key());
        assert_eq!(read_all(&path).unwrap(), data);
        assert_eq!(read_all_waiting(&path, Wait::No).unwrap(), data);
        std::fs::write(&path, &MAGIC[..]).unwrap();
        for wait in [Wait::Yes, Wait::No] {
            assert!(matches!(open(&path, wait), Err(ReadError::Corrupt(_))));
        }
    }

    /// CRC-32C's published check value: files written before the switch of crate (and
    /// by any other CRC32C) still check, whether the bytes come in one part or several.
    #[test]
    fn checksums_are_crc32c_in_one_part_or_several() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"", b"56789"]), 0xE306_9283);
        let pieces = Pieces::new(vec![
            Bytes::from_static(b"1234"),
            Bytes::from_static(b"56789"),
        ]);
        assert_eq!(block_crcs(&pieces), [0xE306_9283]);
    }

    #[test]
    fn bodies_of_every_length_round_trip_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let block = BLOCK as usize;
        for len in [0, 1, 4095, block - 1, block, block + 1, 3 * block + 17] {
            let data = body(len);
            // Pieces that straddle block boundaries, as a fill cuts them.
            let pieces: Vec<Bytes> = data.chunks(70_001).map(Bytes::copy_from_slice).collect();
            let written = write(&path, &header(), &Pieces::new(pieces)).unwrap();
            assert_eq!(written, std::fs::metadata(&path).unwrap().len());
            let opened = open(&path, Wait::Yes).unwrap().unwrap();
            assert_eq!(opened.body_len(), len as u64);
            assert_eq!(opened.layout.blocks(), len.div_ceil(block) as u64, "{len}");
            assert_eq!(read_all(&path).unwrap(), data, "{len}");
            // Just written, so in the page cache: read the same without waiting.
            assert_eq!(read_all_waiting(&path, Wait::No).unwrap(), data, "{len}");
        }
    }

    /// Without waiting, a flipped byte is found all the same, in the block that holds it.
    #[test]
    fn a_read_that_does_not_wait_checks_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = body(2 * BLOCK as usize + 5);
        write(&path, &header(), &Pieces::new(vec![Bytes::from(data)])).unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let at = raw.len() - 3;
        raw[at] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        let mut opened = open(&path, Wait::No).unwrap().unwrap();
        opened.next_block(Wait::No).unwrap().unwrap();
        opened.next_block(Wait::No).unwrap().unwrap();
        assert!(matches!(
            opened.next_block(Wait::No),
            Some(Err(ReadError::Corrupt(_)))
        ));
    }

    /// A file whose pages are not in memory is not read without waiting (where the page
    /// cache can be emptied: not on tmpfs, whose pages are the file).
    #[test]
    fn what_is_not_in_memory_is_not_read_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = body(BLOCK as usize + 5);
        write(
            &path,
            &header(),
            &Pieces::new(vec![Bytes::from(data.clone())]),
        )
        .unwrap();
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        if rustix::fs::statfs(&path).unwrap().f_type as i64 == TMPFS_MAGIC {
            eprintln!("skipped: {} is on tmpfs", dir.path().display());
            return;
        }
        // Written back, then dropped from the page cache (clean pages go at once).
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(matches!(open(&path, Wait::No), Err(ReadError::NotCached)));
        assert_eq!(read_all(&path).unwrap(), data, "waiting reads it");
        // A block not read for want of memory is read again, waiting, and the rest follow.
        let mut opened = open(&path, Wait::No).unwrap().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(matches!(
            opened.next_block(Wait::No),
            Some(Err(ReadError::NotCached))
        ));
        let mut again = opened.next_block(Wait::Yes).unwrap().unwrap().to_vec();
        again.extend_from_slice(&opened.next_block(Wait::Yes).unwrap().unwrap());
        assert!(opened.next_block(Wait::Yes).is_none());
        assert_eq!(again, data);
        assert_eq!(
            read_all_waiting(&path, Wait::No).unwrap(),
            data,
            "now cached"
        );
    }

    /// Something other than a plain file in a file's place (a FIFO, which a blocking
    /// open would wait on for a writer) is not opened without waiting, and not waited on.
    #[tokio::test]
    async fn a_fifo_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(open(&path, Wait::No), Err(ReadError::NotCached)));
    }

    /// A flipped byte anywhere is found: in the prelude, header or table when the file is
    /// opened; in the body by the block that holds it, and not before.
    #[test]
    fn a_flipped_byte_is_found_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = body(3 * BLOCK as usize + 100);
        write(&path, &header(), &Pieces::new(vec![Bytes::from(data)])).unwrap();
        let good = std::fs::read(&path).unwrap();
        let body_at = good.len() - (3 * BLOCK as usize + 100);
        for at in [0, 9, 13, 17, 29, 40, body_at - 3] {
            let mut raw = good.clone();
            raw[at] ^= 0x10;
            std::fs::write(&path, &raw).unwrap();
            assert!(open(&path, Wait::Yes).is_err(), "byte {at} of the head");
        }
        let mut raw = good.clone();
        raw[body_at + 2 * BLOCK as usize + 5] ^= 0x10;
        std::fs::write(&path, &raw).unwrap();
        let mut opened = open(&path, Wait::Yes).unwrap().unwrap();
        assert!(opened.next_block(Wait::Yes).unwrap().is_ok());
        assert!(opened.next_block(Wait::Yes).unwrap().is_ok());
        assert_eq!(opened.position(), 2 * u64::from(BLOCK));
        assert!(matches!(
            opened.next_block(Wait::Yes),
            Some(Err(ReadError::Corrupt(_)))
        ));
    }

    #[test]
    fn a_truncated_or_extended_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(
            &path,
            &header(),
            &Pieces::new(vec![Bytes::from(body(5000))]),
        )
        .unwrap();
        let good = std::fs::read(&path).unwrap();
        for raw in [&good[..good.len() - 1], &[&good[..], b"x"].concat()[..]] {
            std::fs::write(&path, raw).unwrap();
            assert!(matches!(open(&path, Wait::Yes), Err(ReadError::Corrupt(_))));
        }
    }

    /// A file of the first format (one CRC over the whole body) still reads, as one block.
    /// Headers written before `Expires` was kept as sent and `Date` was kept at all: the
    /// date reads back as an HTTP date, and the arrival stands in for `Date`.
    #[test]
    fn headers_of_earlier_versions_read() {
        let old = r#"{"provider":"s3","bucket":"b","key":"k","stored_ms":1700000000000,
            "content_type":"image/png","etag":"\"e\"","last_modified_ms":null,
            "content_encoding":null,"content_disposition":null,"content_language":null,
            "cache_control":"max-age=60","expires_ms":1700000090000}"#;
        let header: Header = serde_json::from_str(old).unwrap();
        let meta = header.meta(10);
        assert_eq!(
            meta.fields.expires.as_deref(),
            Some("Tue, 14 Nov 2023 22:14:50 GMT")
        );
        assert_eq!(meta.fields.date, None);
        assert_eq!(meta.fields.cache_control.as_deref(), Some("max-age=60"));
        let directives = meta.directives(header.stored());
        assert_eq!(directives.max_age, Some(Duration::from_secs(60)));
        // What this version writes reads back the same.
        let now = ObjectMeta {
            size: meta.size,
            fields: StoredFields {
                expires: Some("0".into()),
                date: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                ..meta.fields
            },
        };
        let written =
            serde_json::to_string(&Header::new(&CacheKey::test("k"), &now, header.stored()))
                .unwrap();
        let read: Header = serde_json::from_str(&written).unwrap();
        assert_eq!(read.meta(10), now);
    }

    /// A file of a format this version does not know (a newer one's) is never read as
    /// ours, and says which format it is.
    #[test]
    fn files_of_an_unknown_format_are_named_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(
            &path,
            &header(),
            &Pieces::new(vec![Bytes::from(body(1000))]),
        )
        .unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        raw[..8].copy_from_slice(b"BFDISK09");
        std::fs::write(&path, &raw).unwrap();
        match open(&path, Wait::Yes) {
            Err(ReadError::UnknownFormat(v)) => assert_eq!(v, "BFDISK09"),
            other => panic!("{:?}", other.map(|o| o.is_some())),
        }
        raw[..8].copy_from_slice(b"GARBAGE!");
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(open(&path, Wait::Yes), Err(ReadError::Corrupt(_))));
    }

    #[test]
    fn first_format_files_read_as_one_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = body(600_000);
        let header_json = serde_json::to_vec(&header()).unwrap();
        let mut raw = Vec::new();
        raw.extend_from_slice(MAGIC_V1);
        raw.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
        raw.extend_from_slice(&crc32c(&[&header_json]).to_le_bytes());
        raw.extend_from_slice(&(data.len() as u64).to_le_bytes());
        raw.extend_from_slice(&crc32c(&[&data]).to_le_bytes());
        raw.extend_from_slice(&[0; 4]);
        raw.extend_from_slice(&header_json);
        raw.extend_from_slice(&data);
        std::fs::write(&path, &raw).unwrap();
        let opened = open(&path, Wait::Yes).unwrap().unwrap();
        assert_eq!(opened.layout.blocks(), 1);
        assert_eq!(opened.file_len(), raw.len() as u64);
        assert_eq!(read_all(&path).unwrap(), data);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(read_all(&path).is_err());
    }
}
