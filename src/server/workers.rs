//! One single-threaded tokio runtime per core for the public listener's connections, as
//! nginx's workers and pingora's no-steal runtime do: a connection, its requests and the
//! tasks they spawn (fills, h2 streams) stay on the thread that accepted it, with no
//! work-stealing queues or cross-thread wake-ups between them. Shared state (the cache,
//! origin clients, metrics) is the same `Arc`s as before; blocking work still goes to a
//! blocking pool (each runtime has its own, bounded).

use std::io;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// Blocking threads per worker runtime: disk-tier reads and writes and renders (which
/// have their own global bounds) wait for one of these rather than growing the pool.
/// More than a hung disk can hold (`READ_SLOTS` + `WRITE_SLOTS`, 36, all of them possibly
/// started from one worker), so that DNS lookups and renders still get threads.
const BLOCKING_THREADS: usize = 64;

/// The worker runtimes, each driven by a thread of its own until [`Workers`] is dropped;
/// tasks still on them then are dropped with them.
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// `n` runtimes (at least one).
    pub fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Workers {
            handles: Vec::new(),
            stop: stop.clone(),
        };
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = stop.clone();
            // Detached: joining at drop, from inside a runtime, would block its worker;
            // the thread ends by itself right after `stop`.
            std::thread::Builder::new()
                .name(format!("bucketfront-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        // Pages this thread freed are given back even once it is idle.
                        let mut collect = tokio::time::interval(crate::allocator::COLLECT_EVERY);
                        collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        loop {
                            tokio::select! {
                                () = stop.cancelled() => break,
                                _ = collect.tick() => crate::allocator::collect_freed(),
                            }
                        }
                    });
                    // A render or disk read still on the blocking pool finishes on its
                    // own; nothing waits for it.
                    runtime.shutdown_background();
                })?;
        }
        Ok(workers)
    }

    /// One per core the process may run on (its CPU affinity and cgroup quota).
    pub fn per_core() -> io::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_threads_and_end_with_them() {
        let workers = Workers::start(2).unwrap();
        let names: Vec<String> = workers
            .handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = tx.send(name.unwrap_or_default());
                });
                rx.recv().unwrap()
            })
            .collect();
        assert_eq!(names, ["bucketfront-worker-0", "bucketfront-worker-1"]);
        let handle = workers.handles()[0].clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        handle.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(workers);
        // The pending task is dropped with its runtime, and with it the sender.
        assert!(rx.recv().is_err());
    }
}
