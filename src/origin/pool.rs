//! How many unused origin connections are kept, and for how long: the bounds both origin
//! clients (the S3 SDK's and Azure's) give their connection pools.

use std::time::Duration;

/// How long an origin connection may sit unused in the pool. Each keeps the read buffer
/// its last body grew (hyper's, up to 408 KiB: about 0.6 MiB of resident memory per
/// connection, measured in `tests/memory.rs`), so a burst of cold objects left the
/// process that much larger for up to the pool's default 90 s, or until the origin closed
/// them (BENCHMARKS.md, "Origin connections after a burst"). The pool looks for idle
/// connections once per this period, so one is closed 20-40 s after its last use.
/// Steady traffic reuses its connections long before this.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Unused connections kept per origin host, the rest closed as they come back: what a
/// burst leaves behind for [`IDLE_TIMEOUT`] is at most this many per host
/// (`tests/cache.rs`, `a_burst_leaves_at_most_32_idle_origin_connections`).
pub(super) const MAX_IDLE_PER_HOST: usize = 32;
