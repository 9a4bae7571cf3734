//! I/O buffers shared by the network and storage sides: `IoBuf` is an owned, 4 KiB-aligned
//! byte buffer (usable with O_DIRECT and io_uring fixed buffers) whose memory comes from a
//! per-reactor cache of freed buffers, so steady-state I/O allocates nothing. A buffer may be
//! handed between threads (it is `Send`); it returns to the cache of whichever thread drops
//! it. `len` is the logical length; the capacity is a whole number of 4 KiB pages.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

pub const BUF_ALIGN: usize = 4096;
/// Freed buffers kept per size class and thread before memory goes back to the allocator.
const CACHE_PER_CLASS: usize = 256;
/// Size classes cached: 4 KiB << 0..=CLASSES-1 (4 KiB .. 1 MiB).
const CLASSES: usize = 9;

pub struct IoBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: IoBuf exclusively owns its allocation, like a Vec<u8>.
unsafe impl Send for IoBuf {}
// SAFETY: shared references only give `&[u8]` access.
unsafe impl Sync for IoBuf {}

thread_local! {
    static CACHE: RefCell<[Vec<NonNull<u8>>; CLASSES]> = RefCell::new(Default::default());
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
        if let Some(class) = class_of(cap) {
            if let Some(ptr) = CACHE.with(|c| c.borrow_mut()[class].pop()) {
                return Self { ptr, len, cap };
            }
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
                    if c[class].len() < CACHE_PER_CLASS {
                        c[class].push(self.ptr);
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
}
