//! The process's allocator: mimalloc (the binary and the memory tests declare it), told
//! to give freed pages back to the system 10 ms after they are freed, with every worker
//! thread collecting twice a second ([`collect_freed`]) so that the pages of a thread
//! that went idle are given back too.
//!
//! mimalloc's default (a second's delay, then a purge only when the thread that owns
//! the pages allocates again) left pages freed on a thread that went idle resident:
//! after a burst of large objects (fills abandoned by their clients, evictions) RSS
//! stayed ~80 MiB above what was live (docs/design.md, "Connection deadlines and the
//! memory bound"). Purging at once fixed that but gave every freed page back straight
//! away, to be faulted in again on the next allocation: page faults and TLB-shootdown
//! interrupts were ~10% of the samples of small hits over TLS + h2, 0.70-0.85× the
//! req/s of the 10 ms delay (BENCHMARKS.md, "Freed pages given back after 10 ms").

use libmimalloc_sys::mi_option_t;

/// `mi_option_purge_delay` of mimalloc 3's `mimalloc.h` (the Rust bindings leave it
/// out): how long freed pages wait before they are given back, in ms.
const PURGE_DELAY: mi_option_t = 15;
/// Long enough that pages freed and reused within one burst of requests stay mapped.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// How often each worker thread collects ([`collect_freed`]).
pub(crate) const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Sets the allocator's options and turns transparent huge pages off for the process;
/// call it first thing in `main`.
///
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and the kernel's
/// khugepaged, scanning every 10 s, refills a purged 2 MiB range into a whole huge page
/// when a single 4 KiB page of it is still in use: the pages given back after a burst
/// came back with nothing allocated, and the resident set crept up while idle. Without
/// huge pages, a burst of 128 cold objects peaked at 70 MiB instead of 111-113 and
/// settled at 34 MiB instead of 43, with 4 KiB hits as fast (BENCHMARKS.md, "Transparent
/// huge pages off").
pub fn return_freed_pages_soon() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; any
    // thread may call it at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    huge_pages_off();
}

/// Transparent huge pages off for this process (see [`return_freed_pages_soon`]).
fn huge_pages_off() {
    // SAFETY: PR_SET_THP_DISABLE sets one flag on this process; it touches no memory.
    // It fails only on kernels without it (before 3.15), which then keep huge pages.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Gives back what the calling thread freed more than [`PURGE_DELAY_MS`] ago (and the
/// empty pages it still holds). A thread that frees and then sleeps never reaches
/// mimalloc's own purge, which runs on its allocations.
pub(crate) fn collect_freed() {
    // SAFETY: mi_collect works on the calling thread's own heap (and the shared arenas,
    // under their own locks); `false`: no forced purge of pages freed just now.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

#[cfg(test)]
mod tests {
    /// The option index is the one mimalloc knows as the purge delay: its documented
    /// default (1000 ms in mimalloc 3) reads back.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads an integer from mimalloc's option table.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(default, 1000);
    }

    /// After the call, the process has transparent huge pages off.
    #[test]
    fn huge_pages_are_off_after_the_call() {
        super::huge_pages_off();
        // SAFETY: reads one flag of this process.
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(off, 1);
    }
}
