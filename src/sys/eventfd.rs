//! One eventfd wrapper for every doorbell: reactor wake-ups, the uring socket group's ring
//! notifications and the aio bdev's completions.

use super::owned;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A non-blocking eventfd: writers ring it, a sleeper on it wakes.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers and returns a new descriptor (or -1).
        let fd = unsafe { owned(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
        Ok(Self { fd })
    }

    /// Adds one to the counter. Never blocks: a saturated counter is already "rung".
    #[inline]
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Resets the counter to zero and returns what it was (0 when it was not rung).
    #[inline]
    pub fn drain(&self) -> u64 {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own fd.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n == 8 {
            value
        } else {
            0
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
