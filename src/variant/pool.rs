//! The render pool. Renders are CPU work of tens of milliseconds: they run on threads of
//! tokio's blocking pool, never on an async worker, at most `max_concurrent_renders` at
//! once. A render first takes a [`Ticket`] (one of four per render slot) before its
//! source is fetched, so the sources held in memory for renders are bounded too; up to
//! [`MAX_WAITING`] more requests wait for a ticket, holding nothing; past that, 503.
//! Everything, waiting included, ends at `render_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config;
use prometheus_client::metrics::gauge::Gauge;

/// Requests that may wait for a ticket (each one a task and its request, nothing more).
pub(crate) const MAX_WAITING: usize = 1024;

/// Sources held (being fetched, waiting for a slot, rendering) per render slot.
const TICKETS_PER_SLOT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("too many images are waiting to be resized; retry shortly")]
    Busy,
    #[error("resizing took longer than variants.render_timeout; retry shortly")]
    TimedOut,
    #[error("the image could not be resized")]
    Panicked,
}

pub struct RenderPool {
    tickets: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// `bucketfront_variant_renders_waiting`: follows `waiting`.
    waiting_gauge: Gauge,
    timeout: Duration,
    pub max_source_pixels: u64,
}

impl RenderPool {
    /// A pool for `cfg`, reporting its queue in `waiting_gauge`.
    pub fn new(cfg: &config::Variants, waiting_gauge: Gauge) -> Arc<RenderPool> {
        let slots = cfg.max_concurrent_renders.max(1);
        Arc::new(RenderPool {
            tickets: Arc::new(Semaphore::new(slots * TICKETS_PER_SLOT)),
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            waiting_gauge,
            timeout: cfg.render_timeout.0,
            max_source_pixels: cfg.max_source_pixels,
        })
    }

    /// A ticket to fetch a source and render it, within `render_timeout` from now.
    pub async fn admit(self: &Arc<Self>) -> Result<Ticket, PoolError> {
        let deadline = Instant::now() + self.timeout;
        let queued = Waiting::enter(&self.waiting, &self.waiting_gauge);
        if queued.position >= MAX_WAITING {
            return Err(PoolError::Busy);
        }
        let held = tokio::time::timeout_at(deadline, self.tickets.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::TimedOut)?
            .map_err(|_| PoolError::Busy)?;
        Ok(Ticket {
            _held: held,
            pool: self.clone(),
            deadline,
        })
    }
}

/// Counts a request in the queue (and in its gauge) until it leaves it.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    gauge: &'a Gauge,
    position: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, gauge: &'a Gauge) -> Waiting<'a> {
        let position = count.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Waiting {
            count,
            gauge,
            position,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// The right to hold one source and render it.
pub struct Ticket {
    _held: OwnedSemaphorePermit,
    pool: Arc<RenderPool>,
    deadline: Instant,
}

impl Ticket {
    /// Runs `job` on the blocking pool once a render slot is free, unless the deadline has
    /// passed by then (a source that took all of `render_timeout` to arrive is not
    /// rendered for an answer that is already a 503). A job still running at the deadline
    /// keeps its slot until it ends (a thread cannot be stopped), so the bound on
    /// concurrent renders holds even then.
    pub async fn render<T: Send + 'static>(
        self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let slot = tokio::time::timeout_at(self.deadline, self.pool.slots.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::TimedOut)?
            .map_err(|_| PoolError::Busy)?;
        if Instant::now() >= self.deadline {
            return Err(PoolError::TimedOut);
        }
        let handle = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            job()
        });
        match tokio::time::timeout_at(self.deadline, handle).await {
            Err(_) => Err(PoolError::TimedOut),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, Variants};

    fn pool(slots: usize, timeout: Duration) -> Arc<RenderPool> {
        RenderPool::new(
            &Variants {
                max_concurrent_renders: slots,
                render_timeout: Dur(timeout),
                ..Variants::default()
            },
            Gauge::default(),
        )
    }

    #[tokio::test]
    async fn renders_run_at_most_slots_at_once() {
        let pool = pool(2, Duration::from_secs(60));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (pool, running, peak, gate) =
                (pool.clone(), running.clone(), peak.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let ticket = pool.admit().await.unwrap();
                ticket
                    .render(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        // Each job waits for one release: they end one by one.
                        let _ = gate.lock().unwrap().recv();
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            }));
        }
        for _ in 0..6 {
            release.send(()).unwrap();
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test]
    async fn a_panicking_render_is_an_error_not_a_crash() {
        let pool = pool(1, Duration::from_secs(60));
        let r = pool
            .admit()
            .await
            .unwrap()
            .render(|| -> u32 { panic!("bad image") })
            .await;
        assert_eq!(r.err(), Some(PoolError::Panicked));
        // The slot came back.
        let ok = pool.admit().await.unwrap().render(|| 7).await;
        assert_eq!(ok, Ok(7));
    }

    #[tokio::test]
    async fn waiting_ends_at_the_render_timeout() {
        let pool = pool(1, Duration::from_millis(100));
        // Every ticket taken and held: the next request waits, then times out.
        let held: Vec<Ticket> =
            futures_util::future::join_all((0..TICKETS_PER_SLOT).map(|_| pool.admit()))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit().await.err() }
        });
        // The waiting request is counted in the gauge while it waits, and only then.
        for _ in 0..10_000 {
            if pool.waiting_gauge.get() != 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.waiting_gauge.get(), 1);
        assert_eq!(waiting.await.unwrap(), Some(PoolError::TimedOut));
        assert_eq!(pool.waiting_gauge.get(), 0);
        drop(held);
        assert!(pool.admit().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_past_its_deadline_renders_nothing() {
        let pool = pool(1, Duration::from_secs(1));
        let ticket = pool.admit().await.unwrap();
        // Its source took longer than render_timeout to arrive.
        tokio::time::advance(Duration::from_secs(2)).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let job = {
            let ran = ran.clone();
            move || ran.store(true, Ordering::SeqCst)
        };
        assert_eq!(ticket.render(job).await.err(), Some(PoolError::TimedOut));
        // A job that had started would hold the slot until it ended: once the slot is
        // back, whatever ran has run.
        let _slot = pool.slots.acquire().await.unwrap();
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(pool.tickets.available_permits(), TICKETS_PER_SLOT);
    }
}
