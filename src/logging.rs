//! Log output: JSON lines on stdout, written by a thread of its own.
//!
//! A runtime worker never writes to stdout itself: when the pipe is full (journald
//! stalled, a `| tee` that stopped reading), a write would block the worker and with it
//! every request it serves. Lines go into a bounded queue instead; when the queue is
//! full they are dropped and counted (`bucketfront_log_lines_dropped_total`), so a stuck
//! log reader costs at most [`QUEUE_LINES`] lines of memory.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for the writer thread. An access-log line is 300-500 bytes, so a full
/// queue holds about 8 MiB.
pub const QUEUE_LINES: usize = 16_384;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the JSON subscriber (filter from `BUCKETFRONT_LOG`). Keep the guard until the
/// process ends: dropping it flushes the queue.
pub fn init() -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("bucketfront-log")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUCKETFRONT_LOG")
        // h2's warnings (a flood's GOAWAY) come one per attacking connection: an attacker
        // would choose the log's volume. They are counted instead
        // (`bucketfront_connections_ended_total{reason="protocol_error"}`).
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,aws_config::imds=error,h2=error")
        });
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}

/// Lines dropped because the queue was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
