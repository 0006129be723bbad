//! The process's allocator: mimalloc (the binary and the memory tests declare it), told
//! to give freed pages back to the system at once. By default it waits a second and
//! then purges only when the thread that owns the pages allocates again, so pages freed
//! on a worker or blocking thread that went idle stay resident: after a burst of large
//! objects (fills abandoned by their clients, evictions) RSS stayed ~80 MiB above what
//! was live (docs/design.md, "Connection deadlines and the memory bound").

use libmimalloc_sys::mi_option_t;

/// `mi_option_purge_delay` of mimalloc 3's `mimalloc.h` (the Rust bindings leave it
/// out): how long freed pages wait before they are given back, in ms.
const PURGE_DELAY: mi_option_t = 15;

/// Sets the allocator's options; call it first thing in `main`.
pub fn return_freed_pages_at_once() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; any
    // thread may call it at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
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
}
