//! I/O buffers shared by the network and storage sides, below both.
//!
//! `IoBuf` is an owned, 4 KiB-aligned byte buffer (usable with O_DIRECT and io_uring fixed
//! buffers) whose memory comes from a per-reactor cache of freed buffers, so steady-state I/O
//! allocates nothing.
//!
//! A buffer may be handed between threads (it is `Send`); it returns to the cache of whichever
//! thread drops it. `len` is the logical length; the capacity is a whole number of 4 KiB pages.
//! Data-path copies of payload bytes go through `copy_bytes` / `copy_raw`, which keep glibc's
//! memcpy off its `rep movsb` path when source and destination are not co-aligned (see there).
//!
//! Every reactor counts where its buffers came from (its cache, or a fresh allocation), per
//! size class, in counters only it writes and anyone may read ([`alloc_counts`]; the
//! `iobuf_get_stats` RPC reports them). A thread's counts outlive it: they are folded into a
//! process-wide total when it exits.
//!
//! The owned pieces of outgoing data live here too ([`Chunk`], [`SharedBytes`], from
//! `buf/chunk.rs`), so storage and the codec build them without importing the socket layer.

mod chunk;
pub use chunk::{Chunk, SharedBytes, INLINE_CAP};

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub const BUF_ALIGN: usize = 4096;
/// Freed buffers kept per size class and thread before memory goes back to the allocator.
const CACHE_PER_CLASS: usize = 256;
/// Size classes cached: 4 KiB << 0..=CLASSES-1 (4 KiB .. 1 MiB).
const CLASSES: usize = 9;

/// Largest piece `copy_bytes` hands to one memcpy when it splits a copy. On this project's
/// machines glibc copies 2 KiB with its vector loop and 4 KiB with `rep movsb` (measured:
/// 2 KiB pieces ran at full speed at every alignment where 4 KiB copies did not); glibc's
/// threshold depends on the CPU, so other machines may differ.
const COPY_PIECE: usize = 2048;

/// Whether a copy of `len` bytes from `src` to `dst` should be split into `COPY_PIECE`s.
///
/// glibc copies 4 KiB and more with `rep movsb`, which on some CPUs (measured on this
/// project's AMD EPYC machines) is 10-15x slower when `dst - src` is not a multiple of 64:
/// a cache-hot 4 KiB copy took 1.7-2.0 µs instead of 0.12 µs, a 128 KiB one 55-70 µs instead
/// of 4 µs. Payload copies on the data path (a received PDU's data into its buffer, a
/// malloc bdev's blocks) are misaligned that way whenever a PDU header precedes the data in
/// the stream. Pieces below the threshold run the vector loop at full speed whatever the
/// alignment; co-aligned copies keep the single call (where `rep movsb` is the fastest).
fn split_copy(dst: *const u8, src: *const u8, len: usize) -> bool {
    len > COPY_PIECE && !(dst as usize).wrapping_sub(src as usize).is_multiple_of(64)
}

/// `dst.copy_from_slice(src)` (same lengths, or it panics) at full speed for payload
/// sizes whatever the two buffers' alignment (see `split_copy`).
#[inline]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    if split_copy(dst.as_ptr(), src.as_ptr(), src.len()) {
        for (d, s) in dst.chunks_mut(COPY_PIECE).zip(src.chunks(COPY_PIECE)) {
            d.copy_from_slice(s);
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// `std::ptr::copy_nonoverlapping(src, dst, len)`, split like `copy_bytes`, for memory that
/// may not be borrowed as a slice (a bdev's shared region).
///
/// # Safety
/// As for `std::ptr::copy_nonoverlapping`: `src` valid for reads and `dst` for writes of
/// `len` bytes, and the two ranges do not overlap.
#[inline]
pub unsafe fn copy_raw(src: *const u8, dst: *mut u8, len: usize) {
    if !split_copy(dst, src, len) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let mut at = 0;
    while at < len {
        let n = COPY_PIECE.min(len - at);
        // SAFETY: `at + n <= len`, so both pieces lie inside the caller's ranges.
        unsafe { std::ptr::copy_nonoverlapping(src.add(at), dst.add(at), n) };
        at += n;
    }
}

pub struct IoBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: IoBuf exclusively owns its allocation, like a Vec<u8>.
unsafe impl Send for IoBuf {}
// SAFETY: shared references only give `&[u8]` access.
unsafe impl Sync for IoBuf {}

/// Where one thread's buffers came from, per size class (index `CLASSES`: buffers of no
/// class, above 1 MiB). Written only by the owning thread, read by anyone.
#[derive(Default)]
struct SourceCounts {
    from_cache: [AtomicU64; CLASSES + 1],
    fresh: [AtomicU64; CLASSES + 1],
}

impl SourceCounts {
    fn add_from(&self, other: &SourceCounts) {
        for (mine, theirs) in [
            (&self.from_cache, &other.from_cache),
            (&self.fresh, &other.fresh),
        ] {
            for (m, t) in mine.iter().zip(theirs) {
                m.fetch_add(t.load(Relaxed), Relaxed);
            }
        }
    }
}

/// Counts one buffer handed out: the owning thread is the only writer, so no atomic
/// read-modify-write (and no shared cache line) is needed on the data path.
fn count_one(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

/// The counts of every live thread that has handed out a buffer.
static LIVE_COUNTS: Mutex<Vec<Arc<SourceCounts>>> = Mutex::new(Vec::new());
/// The counts of threads that have exited.
static EXITED_COUNTS: std::sync::LazyLock<SourceCounts> =
    std::sync::LazyLock::new(SourceCounts::default);

fn live_counts() -> std::sync::MutexGuard<'static, Vec<Arc<SourceCounts>>> {
    LIVE_COUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// One thread's freed buffers per size class, and its counts.
struct ThreadCache {
    free: [Vec<NonNull<u8>>; CLASSES],
    counts: Arc<SourceCounts>,
}

impl ThreadCache {
    fn new() -> Self {
        let counts = Arc::new(SourceCounts::default());
        live_counts().push(counts.clone());
        Self {
            free: Default::default(),
            counts,
        }
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        live_counts().retain(|c| !Arc::ptr_eq(c, &self.counts));
        EXITED_COUNTS.add_from(&self.counts);
        for (class, bufs) in self.free.iter_mut().enumerate() {
            let layout = Layout::from_size_align(BUF_ALIGN << class, BUF_ALIGN).expect("layout");
            for ptr in bufs.drain(..) {
                // SAFETY: every cached pointer was allocated with its class's layout and
                // is owned by the cache alone.
                unsafe { dealloc(ptr.as_ptr(), layout) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache::new());
}

/// Buffers handed out so far by every thread, live or exited, for one size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCount {
    /// Capacity of the class's buffers; `None` for buffers of no class (above 1 MiB).
    pub capacity: Option<usize>,
    /// Handed out from a thread's cache of freed buffers.
    pub from_cache: u64,
    /// Allocated fresh (the cache was empty, or the size has no class).
    pub fresh: u64,
}

/// Where every buffer handed out so far came from, one entry per size class (smallest first,
/// then the unclassed sizes).
pub fn alloc_counts() -> Vec<ClassCount> {
    let total = SourceCounts::default();
    total.add_from(&EXITED_COUNTS);
    for c in live_counts().iter() {
        total.add_from(c);
    }
    (0..=CLASSES)
        .map(|i| ClassCount {
            capacity: (i < CLASSES).then_some(BUF_ALIGN << i),
            from_cache: total.from_cache[i].load(Relaxed),
            fresh: total.fresh[i].load(Relaxed),
        })
        .collect()
}

fn class_of(cap: usize) -> Option<usize> {
    let pages = cap / BUF_ALIGN;
    if pages.is_power_of_two() && pages.trailing_zeros() < CLASSES as u32 {
        Some(pages.trailing_zeros() as usize)
    } else {
        None
    }
}

impl IoBuf {
    /// A zero-filled buffer of `len` bytes (capacity rounded up to a power-of-two number of
    /// pages for sizes up to 1 MiB, so freed buffers are reusable).
    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::uninit_len(len);
        b.as_mut_slice().fill(0);
        b
    }

    /// A buffer of `len` bytes whose contents are unspecified (but initialised memory: it
    /// holds old data from a previous user or zeroes).
    pub fn with_len(len: usize) -> Self {
        Self::uninit_len(len)
    }

    fn uninit_len(len: usize) -> Self {
        let pages = len.div_ceil(BUF_ALIGN).max(1);
        let cap = if pages <= 1 << (CLASSES - 1) {
            pages.next_power_of_two() * BUF_ALIGN
        } else {
            pages * BUF_ALIGN
        };
        let class = class_of(cap);
        let cached = CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let hit = class.and_then(|k| c.free[k].pop());
            let slot = class.unwrap_or(CLASSES);
            match hit {
                Some(_) => count_one(&c.counts.from_cache[slot]),
                None => count_one(&c.counts.fresh[slot]),
            }
            hit
        });
        if let Some(ptr) = cached {
            return Self { ptr, len, cap };
        }
        let layout = Layout::from_size_align(cap, BUF_ALIGN).expect("buffer layout");
        // SAFETY: layout has a non-zero size. Fresh memory is zeroed below so every byte
        // of the buffer is initialised from the start.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: ptr is valid for cap bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, cap) };
        Self { ptr, len, cap }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Changes the logical length within the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "IoBuf length {len} beyond capacity {}",
            self.cap
        );
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid and initialised for cap >= len bytes and we own it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(class) = class_of(self.cap) {
            let kept = CACHE
                .try_with(|c| {
                    let mut c = c.borrow_mut();
                    if c.free[class].len() < CACHE_PER_CLASS {
                        c.free[class].push(self.ptr);
                        true
                    } else {
                        false
                    }
                })
                .unwrap_or(false);
            if kept {
                return;
            }
        }
        let layout = Layout::from_size_align(self.cap, BUF_ALIGN).expect("buffer layout");
        // SAFETY: ptr was allocated with exactly this layout and is not used after this.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_reused() {
        let mut a = IoBuf::zeroed(5000);
        assert_eq!(a.len(), 5000);
        assert_eq!(a.capacity(), 8192);
        assert_eq!(a.as_ptr() as usize % BUF_ALIGN, 0);
        assert!(a.iter().all(|&b| b == 0));
        a[0] = 7;
        let p = a.as_ptr();
        drop(a);
        let b = IoBuf::with_len(8000);
        assert_eq!(b.as_ptr(), p, "a freed buffer of the same class is reused");
        let c = IoBuf::zeroed(3 << 20);
        assert_eq!(c.capacity(), 3 << 20);
    }

    /// A fresh allocation and a cache hit are both counted, in their class, on a thread of
    /// their own; the counts stay after the thread exits.
    #[test]
    fn allocations_are_counted_by_source_and_outlive_their_thread() {
        let class_16k = |v: &[ClassCount]| *v.iter().find(|c| c.capacity == Some(16384)).unwrap();
        let before = class_16k(&alloc_counts());
        std::thread::spawn(|| {
            let a = IoBuf::with_len(16384);
            drop(a);
            let _b = IoBuf::with_len(12000);
        })
        .join()
        .unwrap();
        let after = class_16k(&alloc_counts());
        // Other tests allocate concurrently: at least ours are there.
        assert!(after.fresh > before.fresh, "{before:?} -> {after:?}");
        assert!(
            after.from_cache > before.from_cache,
            "{before:?} -> {after:?}"
        );
        let unclassed = alloc_counts().last().copied().unwrap();
        assert_eq!(unclassed.capacity, None);
    }

    /// Every length around the piece size, at every relative alignment mod 64 that matters
    /// (co-aligned, 8, 24, 40): the split copies move exactly the bytes of a plain copy.
    #[test]
    fn split_copies_match_plain_copies() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [0, 1, 2047, 2048, 2049, 4096, 4120, 6 * 1024 + 5, 16 * 1024] {
            for (so, dof) in [(0, 0), (0, 8), (24, 0), (5, 45), (64, 128)] {
                let mut plain = vec![0u8; 20_000];
                plain[dof..dof + len].copy_from_slice(&src[so..so + len]);
                let mut split = vec![0u8; 20_000];
                copy_bytes(&mut split[dof..dof + len], &src[so..so + len]);
                assert_eq!(split, plain, "copy_bytes len {len} src+{so} dst+{dof}");
                let mut raw = vec![0u8; 20_000];
                // SAFETY: two distinct vectors, both ranges in bounds.
                unsafe { copy_raw(src[so..].as_ptr(), raw[dof..].as_mut_ptr(), len) };
                assert_eq!(raw, plain, "copy_raw len {len} src+{so} dst+{dof}");
            }
        }
    }

    #[test]
    #[should_panic]
    fn copy_bytes_of_different_lengths_panics_like_copy_from_slice() {
        copy_bytes(&mut [0u8; 5000], &[1u8; 4999]);
    }
}
