//! What one client connection is doing, and the deadline rules that decide when it must
//! end. The connection's socket wrapper, its service and its response bodies record
//! their progress here; the connection task asks [`verdict`] on every tick.
//!
//! The rules (docs/design.md, "Connection deadlines"):
//! - no request head within `header_read_timeout` of accepting (TLS handshake and the
//!   h1/h2 sniffing included) → abort;
//! - a socket write pending, or a response body producing nothing while a response is in
//!   progress, for `send_timeout` without the client acknowledging a byte → abort (a
//!   reader that does not read; a slow but steady one is never cut);
//! - no request in progress for `idle_timeout` → close gracefully (h1 close, h2 GOAWAY);
//! - older than `max_connection_age` → close gracefully, then abort after `drain_timeout`.
//!
//! Everything is an atomic so that the hot path (one body frame) costs one relaxed store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Put in every request's extensions by the listener: who is asking, whether the
/// connection was admitted beyond `max_connections` (then the answer is `503`), and its
/// activity (which says, when a response is dropped unfinished, whether the server cut
/// the connection and why).
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub overflow: bool,
    pub activity: Arc<Activity>,
}

/// The deadlines of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connection_age: Duration,
    pub drain_timeout: Duration,
}

impl Deadlines {
    /// How often a connection checks its deadlines: often enough that each is met within
    /// a quarter of itself, never more than once per 10 ms or less than once per second.
    pub fn tick(&self) -> Duration {
        let shortest = self
            .header_read_timeout
            .min(self.idle_timeout)
            .min(self.send_timeout);
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A connection's progress, shared by its socket, its service and its bodies.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    requests: AtomicU64,
    /// Requests whose response body has not finished or been dropped.
    active: AtomicU64,
    /// Milliseconds since `epoch` when `active` last dropped to zero (or the start).
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` of the last body frame produced.
    progress_at: AtomicU64,
    /// Milliseconds since `epoch` + 1 when a socket write started to wait; 0 = not waiting.
    write_blocked_at: AtomicU64,
    /// Set when the connection was told to close (graceful), with the time in ms + 1.
    closing_at: AtomicU64,
    /// ms + 1 when the first byte of a new HTTP/1 request head arrived; 0 = none pending.
    head_started_at: AtomicU64,
    h2: AtomicBool,
    overflow: AtomicBool,
    /// Why the server cut the connection: an [`EndReason`]'s index + 1; 0 = it did not.
    cut: AtomicU8,
}

impl Activity {
    pub(crate) fn new(epoch: Instant) -> Activity {
        Activity {
            epoch,
            requests: AtomicU64::new(0),
            active: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            progress_at: AtomicU64::new(0),
            write_blocked_at: AtomicU64::new(0),
            closing_at: AtomicU64::new(0),
            head_started_at: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            cut: AtomicU8::new(0),
        }
    }

    /// The server is cutting the connection for `reason` (before its responses are
    /// dropped, so that they can say why).
    pub(crate) fn cut(&self, reason: EndReason) {
        let index = EndReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.cut.store(index as u8 + 1, Ordering::Relaxed);
    }

    /// Why the server cut the connection, if it did.
    pub(crate) fn cut_reason(&self) -> Option<EndReason> {
        match self.cut.load(Ordering::Relaxed) {
            0 => None,
            n => EndReason::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// A connection admitted beyond `max_connections`: it gets one answer (503), then
    /// is closed.
    pub(crate) fn mark_overflow(&self) {
        self.overflow.store(true, Ordering::Relaxed);
    }

    /// The client sent bytes; `first` is the start of the connection's first read. Bytes
    /// that arrive while no request is in progress start an HTTP/1 request head.
    pub(crate) fn bytes_read(&self, first: Option<&[u8]>) {
        if let Some(first) = first {
            // The h2 preface ("PRI * HTTP/2.0"): no HTTP/1 head rules for this one.
            if first.starts_with(b"PRI ") {
                self.h2.store(true, Ordering::Relaxed);
            }
        }
        if self.active.load(Ordering::Relaxed) == 0
            && self.head_started_at.load(Ordering::Relaxed) == 0
        {
            self.head_started_at
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// A request head arrived; returns true for the connection's first one.
    pub(crate) fn request_started(&self) -> bool {
        self.head_started_at.store(0, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.progress_at.store(self.now_ms(), Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// A response finished (sent whole, failed or dropped).
    pub(crate) fn request_ended(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A response body produced a frame (the client is taking bytes).
    pub(crate) fn body_progress(&self) {
        self.progress_at.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The client acknowledged more bytes of this connection (its kernel took them
    /// because it read): progress for both send rules, however the writes and frames
    /// above it look (a steady slow reader behind a large socket buffer).
    pub(crate) fn client_took_bytes(&self) {
        let now = self.now_ms();
        self.progress_at.store(now, Ordering::Relaxed);
        if self.write_blocked_at.load(Ordering::Relaxed) != 0 {
            self.write_blocked_at.store(now + 1, Ordering::Relaxed);
        }
    }

    /// A socket write could not proceed (`true`) or did (`false`).
    pub(crate) fn write_blocked(&self, blocked: bool) {
        if blocked {
            if self.write_blocked_at.load(Ordering::Relaxed) == 0 {
                self.write_blocked_at
                    .store(self.now_ms() + 1, Ordering::Relaxed);
            }
        } else if self.write_blocked_at.load(Ordering::Relaxed) != 0 {
            self.write_blocked_at.store(0, Ordering::Relaxed);
        }
    }

    /// Records that the connection was told to close gracefully at `now`.
    pub(crate) fn closing(&self, now: Instant) {
        let _ = self.closing_at.compare_exchange(
            0,
            self.ms(now) + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The connection's state at `now`, for [`verdict`].
    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        let at = self.ms(now);
        let since = |ms: u64| Duration::from_millis(at.saturating_sub(ms));
        let blocked = self.write_blocked_at.load(Ordering::Relaxed);
        let closing = self.closing_at.load(Ordering::Relaxed);
        let head = self.head_started_at.load(Ordering::Relaxed);
        let h1_head = !self.h2.load(Ordering::Relaxed) && head != 0;
        Snapshot {
            head_pending_for: h1_head.then(|| since(head - 1)),
            age: Duration::from_millis(at),
            requests: self.requests.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            idle_for: since(self.idle_since.load(Ordering::Relaxed)),
            stalled_for: since(self.progress_at.load(Ordering::Relaxed)),
            write_blocked_for: (blocked != 0).then(|| since(blocked - 1)),
            closing_for: (closing != 0).then(|| since(closing - 1)),
            overflow: self.overflow.load(Ordering::Relaxed),
        }
    }
}

/// A connection's state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    pub age: Duration,
    pub requests: u64,
    pub active: u64,
    pub idle_for: Duration,
    pub stalled_for: Duration,
    pub write_blocked_for: Option<Duration>,
    pub closing_for: Option<Duration>,
    /// How long an HTTP/1 request head after the first has been arriving.
    pub head_pending_for: Option<Duration>,
    pub overflow: bool,
}

/// Why a connection was ended by the server (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    FirstRequestTimeout,
    /// A later HTTP/1 request head did not arrive whole within `header_read_timeout`.
    HeaderTimeout,
    SendTimeout,
    Idle,
    MaxAge,
    Overflow,
    /// Closed while it had sent nothing, to admit a new connection at the limit.
    Evicted,
    /// A graceful close that the client did not complete in time.
    CloseTimeout,
    /// The client broke the protocol (an h2 flood the h2 library answered with GOAWAY).
    ProtocolError,
    /// The drain time after a shutdown ran out.
    DrainTimeout,
}

impl EndReason {
    pub const ALL: [EndReason; 10] = [
        EndReason::FirstRequestTimeout,
        EndReason::HeaderTimeout,
        EndReason::SendTimeout,
        EndReason::Idle,
        EndReason::MaxAge,
        EndReason::Overflow,
        EndReason::Evicted,
        EndReason::CloseTimeout,
        EndReason::ProtocolError,
        EndReason::DrainTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::FirstRequestTimeout => "first_request_timeout",
            EndReason::HeaderTimeout => "header_timeout",
            EndReason::SendTimeout => "send_timeout",
            EndReason::Idle => "idle",
            EndReason::MaxAge => "max_age",
            EndReason::Overflow => "overflow",
            EndReason::Evicted => "evicted",
            EndReason::CloseTimeout => "close_timeout",
            EndReason::ProtocolError => "protocol_error",
            EndReason::DrainTimeout => "drain_timeout",
        }
    }
}

/// What the connection task must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Finish the response in progress, then close (h1 `Connection: close`, h2 GOAWAY).
    Close(EndReason),
    /// Drop the connection now: its buffers and the bodies it holds are freed.
    Abort(EndReason),
}

/// The deadline rules, as a pure function of the connection's state.
pub(crate) fn verdict(s: &Snapshot, d: &Deadlines) -> Verdict {
    if s.requests == 0 && s.age >= d.header_read_timeout {
        return Verdict::Abort(EndReason::FirstRequestTimeout);
    }
    if s.active == 0
        && s.head_pending_for
            .is_some_and(|h| h >= d.header_read_timeout)
    {
        return Verdict::Abort(EndReason::HeaderTimeout);
    }
    if s.write_blocked_for.is_some_and(|w| w >= d.send_timeout) {
        return Verdict::Abort(EndReason::SendTimeout);
    }
    if s.active > 0 && s.stalled_for >= d.send_timeout {
        return Verdict::Abort(EndReason::SendTimeout);
    }
    if let Some(closing) = s.closing_for {
        // A graceful close ends by itself once the response in progress is sent; one
        // that does not (a client holding an idle h1 socket half-read, an h2 peer that
        // ignores GOAWAY) is cut after the drain time, or at once when nothing is active
        // and a request head has had its full time.
        let limit = if s.active > 0 {
            d.drain_timeout
        } else {
            d.header_read_timeout.min(d.drain_timeout)
        };
        if closing >= limit {
            return Verdict::Abort(EndReason::CloseTimeout);
        }
        return Verdict::Keep;
    }
    if s.overflow && s.requests > 0 {
        return Verdict::Close(EndReason::Overflow);
    }
    if s.age >= d.max_connection_age {
        return Verdict::Close(EndReason::MaxAge);
    }
    if s.active == 0 && s.requests > 0 && s.idle_for >= d.idle_timeout {
        return Verdict::Close(EndReason::Idle);
    }
    Verdict::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(30),
        max_connection_age: Duration::from_secs(3600),
        drain_timeout: Duration::from_secs(30),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn verdict_table() {
        let fresh = Snapshot::default();
        let serving = Snapshot {
            age: secs(40),
            requests: 1,
            active: 1,
            stalled_for: secs(1),
            ..fresh
        };
        let idle = Snapshot {
            age: secs(40),
            requests: 3,
            idle_for: secs(5),
            ..fresh
        };
        let cases = [
            (fresh, Verdict::Keep),
            (
                Snapshot {
                    age: secs(9),
                    ..fresh
                },
                Verdict::Keep,
            ),
            (
                Snapshot {
                    age: secs(10),
                    ..fresh
                },
                Verdict::Abort(EndReason::FirstRequestTimeout),
            ),
            (serving, Verdict::Keep),
            (
                Snapshot {
                    stalled_for: secs(30),
                    ..serving
                },
                Verdict::Abort(EndReason::SendTimeout),
            ),
            (
                Snapshot {
                    write_blocked_for: Some(secs(29)),
                    ..serving
                },
                Verdict::Keep,
            ),
            (
                Snapshot {
                    write_blocked_for: Some(secs(30)),
                    ..idle
                },
                Verdict::Abort(EndReason::SendTimeout),
            ),
            // A long download that keeps moving is never cut.
            (
                Snapshot {
                    age: secs(3000),
                    stalled_for: secs(2),
                    ..serving
                },
                Verdict::Keep,
            ),
            (idle, Verdict::Keep),
            (
                Snapshot {
                    head_pending_for: Some(secs(9)),
                    ..idle
                },
                Verdict::Keep,
            ),
            (
                Snapshot {
                    head_pending_for: Some(secs(10)),
                    ..idle
                },
                Verdict::Abort(EndReason::HeaderTimeout),
            ),
            (
                Snapshot {
                    idle_for: secs(60),
                    ..idle
                },
                Verdict::Close(EndReason::Idle),
            ),
            (
                Snapshot {
                    age: secs(3600),
                    ..serving
                },
                Verdict::Close(EndReason::MaxAge),
            ),
            (
                Snapshot {
                    overflow: true,
                    ..serving
                },
                Verdict::Close(EndReason::Overflow),
            ),
            // Once closing: kept while the response finishes, cut after the drain time.
            (
                Snapshot {
                    closing_for: Some(secs(29)),
                    age: secs(3600),
                    ..serving
                },
                Verdict::Keep,
            ),
            (
                Snapshot {
                    closing_for: Some(secs(30)),
                    ..serving
                },
                Verdict::Abort(EndReason::CloseTimeout),
            ),
            (
                Snapshot {
                    closing_for: Some(secs(10)),
                    idle_for: secs(70),
                    ..idle
                },
                Verdict::Abort(EndReason::CloseTimeout),
            ),
        ];
        for (snapshot, want) in cases {
            assert_eq!(verdict(&snapshot, &D), want, "{snapshot:?}");
        }
    }

    #[test]
    fn activity_records_requests_and_idleness() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert!(a.request_started());
        assert!(!a.request_started());
        a.request_ended();
        assert_eq!(a.snapshot(t0 + secs(100)).active, 1);
        a.request_ended();
        let s = a.snapshot(Instant::now() + secs(100));
        assert_eq!((s.requests, s.active), (2, 0));
        assert!(s.idle_for >= secs(100));
        a.write_blocked(true);
        assert!(a.snapshot(Instant::now()).write_blocked_for.is_some());
        a.write_blocked(false);
        assert_eq!(a.snapshot(Instant::now()).write_blocked_for, None);
    }

    #[test]
    fn tick_is_a_quarter_of_the_shortest_deadline_within_bounds() {
        assert_eq!(D.tick(), secs(1));
        let short = Deadlines {
            header_read_timeout: Duration::from_millis(200),
            ..D
        };
        assert_eq!(short.tick(), Duration::from_millis(50));
    }
}
