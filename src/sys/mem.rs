//! Anonymous memory mappings (the malloc bdev's region).

use std::io;
use std::ptr::NonNull;

/// An anonymous, private, read-write mapping, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an address range owned by this value; it offers no access to the
// bytes through `&self` (only the base pointer), so moving or sharing it between threads
// cannot by itself race. Users of the pointer answer for their own accesses.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) bytes: page-aligned, zero-filled by the kernel on first touch, so a
    /// large mapping costs no RSS until written. Transparent huge pages are requested where
    /// the kernel offers them (advice only; failure changes nothing).
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: an anonymous private mapping of a non-zero size at an address the kernel
        // picks; the result is checked before use and unmapped exactly once in `drop`.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // Random 4 KiB I/O over a large region otherwise misses the TLB on almost every
        // access; THP needs no reservation (unlike hugetlbfs).
        // SAFETY: advice on the mapping just created, within its length.
        unsafe {
            libc::madvise(raw, len, libc::MADV_HUGEPAGE);
        }
        Ok(Self { ptr, len })
    }

    /// The base address; the mapping stays at it, `len()` bytes long, until dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with exactly this length, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
