//! Log output: JSON lines on stdout, written in batches by a thread of its own.
//!
//! A runtime worker never writes to stdout itself: when the pipe is full (journald
//! stalled, a `| tee` that stopped reading), a write would block the worker and with it
//! every request it serves. Lines are appended to one bounded buffer instead; when it is
//! full they are dropped and counted (`bucketfront_log_lines_dropped_total`), so a stuck
//! log reader costs at most [`BUFFER_BYTES`] of memory.
//!
//! The writer thread is woken once per batch, not once per line: the first line into an
//! empty buffer wakes it, it lets [`BATCH_WINDOW`] of lines gather and writes them with
//! one `write`. A queue with a wake-up per line (tracing-appender's) cost each response
//! about eight syscalls (futex wake-ups, the consumer's spinning `sched_yield`s, a
//! `write`) in BENCHMARKS.md's count; a batch costs the workers one futex wake-up per
//! window, whatever the request rate.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What lines may wait for the writer thread. An access-log line is 300-500 bytes, so
/// about 20,000 lines: a window's worth at any request rate one process serves.
pub(crate) const BUFFER_BYTES: usize = 8 << 20;

/// How long the writer thread lets lines gather after the first one of a batch: a line
/// reaches stdout at most this late (plus the write itself).
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Where [`emit`]'s lines go: the subscriber's own writer, so that both kinds of line
/// share one buffer, one budget and one order.
static OUTPUT: OnceLock<BatchWriter> = OnceLock::new();

/// Installs the JSON subscriber (filter from `BUCKETFRONT_LOG`). Keep the guard until the
/// process ends: dropping it writes what is still buffered.
pub fn init() -> LogGuard {
    let (writer, guard) = BatchWriter::start(std::io::stdout(), BUFFER_BYTES);
    let _ = OUTPUT.set(writer.clone());
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUCKETFRONT_LOG")
        // h2's warnings (a flood's GOAWAY) come one per attacking connection: an attacker
        // would choose the log's volume. They are counted instead
        // (`bucketfront_connections_ended_total{reason="protocol_error"}`).
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,aws_config::imds=error,h2=error")
        });
    subscriber()
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}

/// The subscriber's line format, which [`emit`]'s lines copy.
fn subscriber() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
> {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
}

/// Lines dropped because the buffer was full (0 before [`init`]).
pub(crate) fn dropped_lines() -> u64 {
    OUTPUT
        .get()
        .map_or(0, |w| w.batch.dropped.load(Ordering::Relaxed))
}

/// Writes one line in the shape the subscriber gives its own (`timestamp`, `level`,
/// the fields in order, `target`), built by `fields` straight into a reused buffer; no
/// line before [`init`]. For a line written once per request: the subscriber's JSON layer
/// (a visitor per field, a `serde_json::Map`, layers of `fmt::Write`) cost about a sixth
/// of a small cache hit's CPU (BENCHMARKS.md, "The access line written by hand"). The
/// caller checks that its target is enabled at `level` (`tracing::enabled!`), so the
/// filter still decides.
pub(crate) fn emit(level: tracing::Level, target: &str, fields: impl FnOnce(&mut JsonLine)) {
    let Some(out) = OUTPUT.get() else {
        return;
    };
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out of the cell for the while, so nothing here can find it borrowed.
    let buf = BUFFER.try_with(std::cell::Cell::take).unwrap_or_default();
    let mut buf = JsonLine::build(buf, level, target, fields);
    out.push(&buf);
    // A line with a very long key is not kept for every line after it.
    buf.shrink_to(LINE_KEPT);
    let _ = BUFFER.try_with(|cell| cell.set(buf));
}

/// What a worker thread's line buffer keeps between lines.
const LINE_KEPT: usize = 4 << 10;

/// A JSON log line being built: a flat object, strings escaped as `serde_json` escapes
/// them (as the subscriber does).
pub(crate) struct JsonLine(Vec<u8>);

impl JsonLine {
    /// The whole line, newline included, in `buf` (cleared first).
    fn build(
        mut buf: Vec<u8>,
        level: tracing::Level,
        target: &str,
        fields: impl FnOnce(&mut JsonLine),
    ) -> Vec<u8> {
        buf.clear();
        let mut line = JsonLine(buf);
        line.begin(level);
        fields(&mut line);
        line.end(target);
        line.0
    }

    fn begin(&mut self, level: tracing::Level) {
        let now = std::time::SystemTime::now();
        let _ = write!(
            self.0,
            "{{\"timestamp\":\"{}\"",
            humantime::format_rfc3339_micros(now)
        );
        self.str("level", level.as_str());
    }

    fn end(&mut self, target: &str) {
        self.str("target", target);
        self.0.extend_from_slice(b"}\n");
    }

    /// `key` is one of the caller's names: written as it is, never escaped.
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, value);
        self
    }

    pub(crate) fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.0, &value);
        self
    }

    /// A string field from `value`'s `Display`, formatted on the stack when it is short
    /// (an address, a request id).
    pub(crate) fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let mut stack = [0u8; 64];
        let mut room = std::io::Cursor::new(&mut stack[..]);
        if write!(room, "{value}").is_ok() {
            let used = room.position() as usize;
            if let Ok(s) = std::str::from_utf8(&stack[..used]) {
                return self.str(key, s);
            }
        }
        self.str(key, &value.to_string())
    }
}

/// The lines waiting for the writer thread.
struct Batch {
    lines: Mutex<Vec<u8>>,
    /// Rung when a line goes into an empty buffer, and at the end.
    ready: Condvar,
    budget: usize,
    dropped: AtomicU64,
    closing: AtomicBool,
}

impl Batch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock left whole lines or none: keep logging.
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The subscriber's writer: appends each formatted line to the batch (the fmt layer
/// hands over one whole line per `write`).
#[derive(Clone)]
pub(crate) struct BatchWriter {
    batch: Arc<Batch>,
}

/// Ends the writer thread when dropped, after it wrote everything buffered.
pub struct LogGuard {
    batch: Arc<Batch>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// A writer whose lines go to `sink` from a thread of its own, holding at most
    /// `budget` bytes of lines not yet written.
    fn start<W: Write + Send + 'static>(mut sink: W, budget: usize) -> (BatchWriter, LogGuard) {
        let batch = Arc::new(Batch {
            lines: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            budget,
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let shared = batch.clone();
        let thread = std::thread::Builder::new()
            .name("bucketfront-log".into())
            .spawn(move || {
                let mut out = Vec::new();
                loop {
                    let mut lines = shared.lock();
                    while lines.is_empty() && !shared.closing.load(Ordering::Acquire) {
                        lines = shared
                            .ready
                            .wait(lines)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    if lines.is_empty() {
                        return;
                    }
                    if !shared.closing.load(Ordering::Acquire) {
                        drop(lines);
                        std::thread::sleep(BATCH_WINDOW);
                        lines = shared.lock();
                    }
                    std::mem::swap(&mut *lines, &mut out);
                    drop(lines);
                    // A failed write (stdout closed) loses this batch; nothing else can
                    // be done with it, and the workers must not notice.
                    let _ = sink.write_all(&out).and_then(|()| sink.flush());
                    out.clear();
                    // A burst's buffer is not kept for the quiet that follows.
                    out.shrink_to(64 << 10);
                }
            })
            .ok();
        if thread.is_none() {
            // No thread, no output: every line counts as dropped rather than piling up.
            batch.closing.store(true, Ordering::Release);
        }
        let guard = LogGuard {
            batch: batch.clone(),
            thread,
        };
        (BatchWriter { batch }, guard)
    }
}

impl BatchWriter {
    /// Appends one whole line, or counts it as dropped when the buffer is full.
    fn push(&self, line: &[u8]) {
        let b = &self.batch;
        let mut lines = b.lock();
        if b.closing.load(Ordering::Acquire) || lines.len() + line.len() > b.budget {
            drop(lines);
            b.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = lines.is_empty();
        lines.extend_from_slice(line);
        drop(lines);
        if was_empty {
            b.ready.notify_one();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.batch.closing.store(true, Ordering::Release);
        // Taken under the lock so that the thread is either about to check `closing`
        // or already waiting when the bell rings.
        drop(self.batch.lock());
        self.batch.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, and hold shut (a stalled log reader).
    #[derive(Clone, Default)]
    struct Sink {
        got: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Everything after the timestamp, which differs between two lines.
    fn after_timestamp(line: &str) -> &str {
        let at = line.find(",\"level\"").expect("a level");
        &line[at..]
    }

    #[test]
    fn built_lines_are_the_subscribers_lines() {
        let (client, method) = ("2001:db8::ff00:42:8329", http::Method::GET);
        // Quotes, backslashes, control characters and non-ASCII, as a key may hold.
        let key = "a \"b\"\\c\n\t\u{1}/é/🦀.png";
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = subscriber().with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "bucketfront::access",
                request_id = "00000000000000ff",
                client,
                method = %method,
                key,
                status = 200u16,
                bytes = u64::MAX,
                detail = "",
            );
        });
        let theirs = String::from_utf8(sink.got.lock().unwrap().clone()).unwrap();
        let ours = JsonLine::build(
            Vec::new(),
            tracing::Level::INFO,
            "bucketfront::access",
            |l| {
                l.display("request_id", format_args!("{:016x}", 255))
                    .display("client", client.parse::<std::net::IpAddr>().unwrap())
                    .display("method", &method)
                    .str("key", key)
                    .u64("status", 200)
                    .u64("bytes", u64::MAX)
                    .str("detail", "");
            },
        );
        let ours = String::from_utf8(ours).unwrap();
        assert_eq!(after_timestamp(&ours), after_timestamp(&theirs));
        assert!(ours.ends_with("}\n"), "{ours}");
        // Both parse, with timestamps of the same shape.
        let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
        assert_eq!(ours["key"], key);
        let stamp = |v: &serde_json::Value| v["timestamp"].as_str().unwrap().len();
        assert_eq!(stamp(&ours), stamp(&theirs));
        assert_eq!(stamp(&ours), "2026-12-06T02:28:58.560844Z".len());
    }

    #[test]
    fn a_long_display_value_is_written_whole() {
        let long = "x".repeat(200);
        let line = JsonLine::build(Vec::new(), tracing::Level::INFO, "t", |l| {
            l.display("v", &long);
        });
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(line["v"], long.as_str());
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes_and_all_are_written_at_the_end() {
        let sink = Sink::default();
        let (mut w, guard) = BatchWriter::start(sink.clone(), 1 << 20);
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let got = String::from_utf8(sink.got.lock().unwrap().clone()).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(got, want);
        // 1,000 lines written in a few batches, not one write each.
        assert!(sink.writes.load(Ordering::Relaxed) < 100);
        assert_eq!(w.batch.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stalled_reader_costs_the_budget_and_the_rest_is_counted() {
        let sink = Sink::default();
        let stalled = sink.gate.lock().unwrap();
        let (mut w, guard) = BatchWriter::start(sink.clone(), 1000);
        let line = [b'x'; 99];
        // The thread may take one batch before it blocks on the stalled sink: it holds at
        // most the budget, and everything after the buffer filled again is dropped.
        for _ in 0..100 {
            w.write_all(&line).unwrap();
        }
        let buffered = w.batch.lock().len();
        assert!(buffered <= 1000, "{buffered} bytes held");
        let dropped = w.batch.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 80, "{dropped} dropped");
        drop(stalled);
        drop(guard);
        let written = sink.got.lock().unwrap().len() as u64;
        assert_eq!(written + dropped * 99, 100 * 99);
        // After the end, lines are counted, not kept.
        w.write_all(&line).unwrap();
        assert_eq!(w.batch.dropped.load(Ordering::Relaxed), dropped + 1);
    }
}
