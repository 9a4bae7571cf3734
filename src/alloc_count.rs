//! A counting global allocator for the zero-allocation checks of the tests and pollux-perf.
//!
//! Install it in a binary or test crate with
//! `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc;`. Every allocation
//! and reallocation is forwarded unchanged to the system allocator and counted twice over:
//! per thread ([`thread_allocs`], always), and in one process-wide total for the threads
//! that opted in with [`set_tracked`] ([`tracked_allocs`]), for code that counts on a
//! reactor it reaches only by message. [`set_trace`] prints a backtrace of each counted
//! allocation (on tracked threads, or on every thread) to find the one that slipped in;
//! the allocations the trace itself makes are not counted. Deallocations are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The system allocator, counting.
pub struct CountingAlloc;

/// Which allocations [`set_trace`] prints a backtrace of: none (`Off`), those on threads
/// that called `set_tracked(true)` (`Tracked`), or those on every thread (`All`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Off,
    Tracked,
    All,
}

static TRACKED_ALLOCS: AtomicU64 = AtomicU64::new(0);
static TRACE: AtomicU8 = AtomicU8::new(Trace::Off as u8);

thread_local! {
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static TRACKED: Cell<bool> = const { Cell::new(false) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Allocations made so far on the calling thread.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.with(Cell::get)
}

/// Whether the calling thread's allocations add to [`tracked_allocs`].
pub fn set_tracked(on: bool) {
    TRACKED.with(|t| t.set(on));
}

/// Allocations made so far on tracked threads while they were tracked.
pub fn tracked_allocs() -> u64 {
    TRACKED_ALLOCS.load(Ordering::Relaxed)
}

/// Prints a backtrace of each counted allocation in `scope` from now on.
pub fn set_trace(scope: Trace) {
    TRACE.store(scope as u8, Ordering::Relaxed);
}

fn count(size: usize) {
    // Thread-locals may be gone while a thread exits: then nothing is counted.
    if IN_TRACE.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    let tracked = TRACKED.try_with(Cell::get).unwrap_or(false);
    if tracked {
        TRACKED_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    let trace = TRACE.load(Ordering::Relaxed);
    if trace == Trace::All as u8 || (trace == Trace::Tracked as u8 && tracked) {
        IN_TRACE.with(|t| t.set(true));
        eprintln!(
            "allocation of {size} bytes:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        IN_TRACE.with(|t| t.set(false));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator, whose contract is the
// caller's; counting touches only atomics and const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
